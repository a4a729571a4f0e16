"""Per-group NoveltyBench metrics and per-run figures over real HTTP: a GRPO-style loop that collapses and
then diversifies shows `distinct` rising on GET /v1/runs/{run}/stats and on /metrics."""

from __future__ import annotations

import math

import httpx
import pytest
from darling_client import RewardClient
from darling_client.errors import InvalidRequest, NotFound

from models.novelty import effective_classes, utility
from tests.service.ops.test_metrics import scrape, value

COLLAPSED = ["The answer is yes.", "The answer is yes.", "The answer is yes.", "The answer is yes."]
# One word each and no word in common: the short-text rule tells them apart without a model.
DIVERSE = ["red", "blue", "green", "yellow"]


def _group(step: int, responses: list[str]) -> dict[str, object]:
    return {"prompt": f"Say something ({step}).", "responses": responses, "quality": [1.0, 0.95, 0.55, 0.05]}


def test_group_metrics_in_the_response(default_server: str) -> None:
    body = {"groups": [_group(0, ["red", "Red", "blue", "red"]), _group(1, COLLAPSED)]}
    r = httpx.post(default_server + "/v1/rewards", json=body, timeout=60)
    assert r.status_code == 200, r.text
    mixed, collapsed = r.json()["groups"]
    assert mixed["classes"] == [0, 0, 1, 0]
    assert mixed["distinct"] == mixed["n_classes"] == 2
    # Default cuts: 1.0 -> 10, 0.95 -> 10, 0.55 -> 6, 0.05 -> 1; rollout 2 (rated 6) opens class 1.
    assert mixed["ratings"] == [10, 10, 6, 1]
    assert math.isclose(mixed["utility"], (10 + 0.64 * 6) * 0.2 / (1 - 0.8**4))
    assert math.isclose(mixed["effective_classes"], effective_classes([0, 0, 1, 0]))
    assert collapsed["distinct"] == 1 and math.isclose(collapsed["effective_classes"], 1.0)
    assert math.isclose(collapsed["utility"], 10 * 0.2 / (1 - 0.8**4))


def test_rating_cuts_and_given_ratings(default_server: str) -> None:
    groups = [
        {"prompt": "p", "responses": DIVERSE, "quality": [-2.0, 0.0, 3.0, 9.0]},
        {"prompt": "p", "responses": DIVERSE, "quality": [1.0] * 4, "ratings": [2, 4, 6, 8]},
    ]
    r = httpx.post(default_server + "/v1/rewards", json={"groups": groups, "options": {"rating_cuts": [0, 5]}})
    assert r.status_code == 200, r.text
    cut, given = r.json()["groups"]
    assert cut["ratings"] == [1, 1, 2, 3]
    assert given["ratings"] == [2, 4, 6, 8]
    assert math.isclose(given["utility"], utility([0, 1, 2, 3], [2, 4, 6, 8]))


def test_grpo_loop_shows_distinct_rising(default_server: str) -> None:
    run = "r1"
    with RewardClient(default_server) as client:
        with pytest.raises(NotFound, match="no figures for run 'r1'"):
            client.run_stats(run)
        for step in range(3):  # collapsed: every group one class
            client.score([_group(step, COLLAPSED), _group(step, COLLAPSED)], run=run, step=step)
        early = client.run_stats(run)
        metrics_early = scrape(default_server)
        for step in range(3, 6):  # diverse: every group four classes
            client.score([_group(step, DIVERSE), _group(step, DIVERSE)], run=run, step=step)
        late = client.run_stats(run)
    metrics_late = scrape(default_server)

    assert (early.groups_seen, early.last_step) == (6, 2)
    assert early.window.distinct == 1.0 and early.window.collapsed_share == 1.0
    assert math.isclose(early.window.diversity, 0.1)  # the floor
    assert [s.step for s in early.steps] == [0, 1, 2]

    assert (late.groups_seen, late.last_step, late.window.groups) == (12, 5, 12)
    assert [s.step for s in late.steps] == [0, 1, 2, 3, 4, 5]
    assert [s.distinct for s in late.steps] == [1, 1, 1, 4, 4, 4]
    assert [s.collapsed_share for s in late.steps] == [1, 1, 1, 0, 0, 0]
    assert all(math.isclose(s.effective_classes, 4.0) for s in late.steps[3:])
    assert math.isclose(late.window.distinct, 2.5) and math.isclose(late.window.collapsed_share, 0.5)
    assert late.window.utility > early.window.utility
    assert math.isclose(late.window.quality, (1.0 + 0.95 + 0.55 + 0.05) / 4)

    assert value(metrics_early, "darling_run_distinct", run=run) == 1.0
    assert value(metrics_late, "darling_run_distinct", run=run) == 2.5
    assert value(metrics_late, "darling_run_collapsed_share", run=run) == 0.5
    assert value(metrics_late, "darling_run_groups_total", run=run) == 12
    assert value(metrics_late, "darling_run_collapsed_groups_total", run=run) == 6
    assert value(metrics_late, "darling_run_step", run=run) == 5
    # The JSON route and the gauges agree.
    assert math.isclose(value(metrics_late, "darling_run_utility", run=run), late.window.utility)


def _runs_on_metrics(base: str) -> dict[str, float]:
    return {dict(labels)["run"]: v for (name, labels), v in scrape(base).items() if name == "darling_run_groups_total"}


def test_groups_without_run_are_not_tracked(default_server: str) -> None:
    before = _runs_on_metrics(default_server)
    r = httpx.post(default_server + "/v1/rewards", json={"groups": [_group(0, DIVERSE)], "options": {"step": 3}})
    assert r.status_code == 200
    assert _runs_on_metrics(default_server) == before


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"run": ""}, "options.run"),
        ({"run": "has space"}, "options.run"),
        ({"run": "a/b"}, "options.run"),
        ({"run": "x" * 129}, "options.run"),
        ({"run": 7}, "options.run"),
        ({"step": -1}, "options.step"),
        ({"step": "first"}, "options.step"),
        ({"rating_cuts": [0.5, 0.2]}, "options.rating_cuts"),
        ({"rating_cuts": [0.1] * 10}, "options.rating_cuts"),
        ({"rating_cuts": "0.1,0.2"}, "options.rating_cuts"),
    ],
)
def test_bad_run_step_and_cuts_are_422(default_server: str, options: dict[str, object], field: str) -> None:
    r = httpx.post(default_server + "/v1/rewards", json={"groups": [_group(0, DIVERSE)], "options": options})
    assert r.status_code == 422, r.text
    assert r.json()["fields"] == [field]
    assert field in r.json()["detail"]


@pytest.mark.parametrize("ratings", [[1, 2, 3], [0, 1, 1, 1], [1, 1, 1, 11]])
def test_bad_ratings_are_422(default_server: str, ratings: list[int]) -> None:
    group = {**_group(0, DIVERSE), "ratings": ratings}
    r = httpx.post(default_server + "/v1/rewards", json={"groups": [group]})
    assert r.status_code == 422, r.text
    assert r.json()["fields"][0].startswith("groups[0]")


def test_stats_route_errors(default_server: str) -> None:
    r = httpx.get(default_server + "/v1/runs/never-sent/stats")
    assert r.status_code == 404
    assert r.json()["fields"] == ["run"] and "DARLING_RUN_STATS_MAX_RUNS" in r.json()["detail"]
    bad = httpx.get(default_server + "/v1/runs/bad%20label/stats")
    assert bad.status_code == 422 and bad.json()["fields"] == ["run"]


def test_client_checks_the_label_before_sending(default_server: str) -> None:
    with RewardClient(default_server) as client:
        with pytest.raises(ValueError, match="run"):
            client.score([_group(0, DIVERSE)], run="no spaces please")
        with pytest.raises(InvalidRequest) as err:
            client.run_stats("no spaces please")
    assert err.value.status == 422 and err.value.fields == ["run"]
