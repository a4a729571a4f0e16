"""Per-run figures stay bounded: runs beyond DARLING_RUN_STATS_MAX_RUNS drop the least recently active one, and
its series leave /metrics; each run keeps its last DARLING_RUN_STATS_WINDOW groups and
DARLING_RUN_STATS_MAX_STEPS steps."""

from __future__ import annotations

import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.settings import Settings
from tests.conftest import asgi_client

DIVERSE = ["red", "blue", "green"]
COLLAPSED = ["same", "same", "same"]


async def _score(c: httpx.AsyncClient, run: str, responses: list[str], step: int | None = None) -> None:
    options: dict[str, object] = {"run": run, **({} if step is None else {"step": step})}
    body = {"groups": [{"prompt": "p", "responses": responses, "quality": [0.5] * 3}], "options": options}
    r = await c.post("/v1/rewards", json=body)
    assert r.status_code == 200, r.text


async def _series(c: httpx.AsyncClient) -> set[tuple[str, str]]:
    """(metric sample name, run) of every darling_run_* sample on /metrics."""
    text = (await c.get("/metrics")).text
    return {
        (s.name, s.labels["run"])
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("darling_run_") and "run" in s.labels
    }


async def test_runs_are_bounded_and_evicted_with_their_series() -> None:
    tag = uuid.uuid4().hex[:6]
    a, b, c3, d = (f"{tag}-{x}" for x in "abcd")
    app = create_app(Settings(port=0, run_stats_max_runs=2, run_stats_window=3, run_stats_max_steps=2))
    async with asgi_client(app) as c:
        await _score(c, a, DIVERSE, step=0)
        await _score(c, b, DIVERSE)
        assert {run for _, run in await _series(c)} >= {a, b}
        await _score(c, c3, COLLAPSED)  # a third run: `a`, least recently active, goes
        gone = await c.get(f"/v1/runs/{a}/stats")
        assert gone.status_code == 404 and gone.json()["fields"] == ["run"]
        runs_now = {run for _, run in await _series(c)}
        assert a not in runs_now and {b, c3} <= runs_now
        assert ("darling_run_step", a) not in await _series(c)

        await _score(c, b, DIVERSE)  # b is active again, so the next new run drops c3, not b
        await _score(c, d, DIVERSE)
        assert (await c.get(f"/v1/runs/{c3}/stats")).status_code == 404
        assert (await c.get(f"/v1/runs/{b}/stats")).status_code == 200
        assert app.state.engine.runs.runs == [b, d]

        metrics = (await c.get("/metrics")).text
        assert "darling_runs_tracked 2.0" in metrics


async def test_window_and_steps_are_bounded() -> None:
    run = f"w-{uuid.uuid4().hex[:6]}"
    app = create_app(Settings(port=0, run_stats_max_runs=2, run_stats_window=3, run_stats_max_steps=2))
    async with asgi_client(app) as c:
        for step, responses in enumerate([COLLAPSED, COLLAPSED, DIVERSE, DIVERSE, DIVERSE]):
            await _score(c, run, responses, step=step)
        await _score(c, run, COLLAPSED, step=4)  # a second group of step 4
        stats = (await c.get(f"/v1/runs/{run}/stats")).json()
    assert stats["groups_seen"] == 6 and stats["last_step"] == 4
    # The window is the last three groups: diverse, diverse, collapsed.
    assert stats["window"]["groups"] == 3
    assert abs(stats["window"]["distinct"] - (3 + 3 + 1) / 3) < 1e-12
    assert abs(stats["window"]["collapsed_share"] - 1 / 3) < 1e-12
    # Two steps kept, the most recently updated ones, in ascending order.
    assert [(s["step"], s["groups"], s["distinct"]) for s in stats["steps"]] == [(3, 1, 3.0), (4, 2, 2.0)]
