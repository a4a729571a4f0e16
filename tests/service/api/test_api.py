"""HTTP tests of POST /v1/rewards through the running embedded default."""

from __future__ import annotations

import math

import httpx
import pytest

from models.reward import group_rewards

SPACE_FACTS = [
    "The Sun is a star that makes up most of the mass of the solar system.",
    "Most of the solar system's mass is in the Sun, which is a star.",
    "Jupiter has dozens of moons, and the largest, Ganymede, is bigger than Mercury.",
    "A day on Venus is longer than its year because it spins very slowly.",
    "Venus rotates so slowly that one Venusian day lasts longer than a Venusian year.",
    "Neutron stars are so dense that a teaspoon of one would weigh billions of tons.",
]


def post(base: str, body: object) -> httpx.Response:
    return httpx.post(base + "/v1/rewards", json=body, timeout=60)


def test_health_and_ready(default_server: str) -> None:
    assert httpx.get(default_server + "/healthz").json()["status"] == "alive"
    ready = httpx.get(default_server + "/readyz").json()
    assert ready["status"] == "ready"
    assert ready["models"]["classifier"] == "embedding:all-MiniLM-L6-v2+head"


def test_group_of_paraphrases_and_distinct_ideas(default_server: str) -> None:
    quality = [1.0, 0.5, 0.8, 0.9, 0.7, 0.6]
    r = post(
        default_server,
        {
            "groups": [
                {
                    "group_id": "g1",
                    "prompt": "Tell me a fact about space.",
                    "responses": SPACE_FACTS,
                    "quality": quality,
                }
            ]
        },
    )
    assert r.status_code == 200, r.text
    g = r.json()["groups"][0]
    c = g["classes"]
    assert c[0] == c[1] and c[3] == c[4]
    assert len({c[0], c[2], c[3], c[5]}) == 4
    assert g["group_id"] == "g1" and g["n_classes"] == 4 and g["algorithm"] == "all_pairs"
    # SPEC sections 4 and 5, exactly, for the classes returned.
    expected = group_rewards(c, quality)
    for i, roll in enumerate(g["rollouts"]):
        assert roll["class_id"] == c[i]
        size = c.count(c[i])
        assert math.isclose(roll["diversity"], max((6 - size) / 5, 0.1))
        assert math.isclose(roll["reward"], quality[i] * roll["diversity"])
        assert math.isclose(roll["advantage"], expected.advantages[i])
    assert math.isclose(sum(x["advantage"] for x in g["rollouts"]), 0.0, abs_tol=1e-12)
    assert g["decided_by"]["classifier"] == g["judgements"]["made"]
    assert g["judgements"]["made"] + g["judgements"]["skipped"] == 15


def test_verifier_quality(default_server: str) -> None:
    body = {
        "groups": [
            {
                "prompt": "What is 6*7?",
                "reference": "42",
                "responses": ["6*7 = \\boxed{42}", "The answer is 42.", "I think it is 48."],
            }
        ]
    }
    g = post(default_server, body).json()["groups"][0]
    assert [x["quality"] for x in g["rollouts"]] == [1.0, 1.0, 0.0]
    assert g["quality_source"] == "verifier"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"groups": []}, 422, "groups"),
        ({"groups": [{"prompt": "p", "responses": [], "quality": []}]}, 422, "groups[0].responses"),
        ({"groups": [{"prompt": "p", "responses": ["a", 3], "quality": [1, 1]}]}, 422, "groups[0].responses[1]"),
        ({"groups": [{"prompt": "p", "responses": ["a", "b"], "quality": [1.0]}]}, 422, "groups[0]"),
        ({"groups": [{"prompt": "p", "responses": ["a"], "quality": ["NaN"]}]}, 422, "groups[0].quality"),
        (
            {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"partition": "x"}},
            422,
            "options.partition",
        ),
        (
            {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"combine": "max"}},
            422,
            "options.combine",
        ),
        (
            {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"threshold": 2}},
            422,
            "options.threshold",
        ),
        ({"groups": [{"prompt": "p", "responses": ["a"]}]}, 422, "groups[0].quality"),
        ({"groups": [{"prompt": "p", "responses": ["a" * 70_000], "quality": [1]}]}, 413, "groups[0].responses[0]"),
    ],
)
def test_bad_input_names_the_field(default_server: str, body: object, status: int, field: str) -> None:
    r = post(default_server, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert any(f.startswith(field) for f in err["fields"]), err
    assert err["detail"]


def test_invalid_json_is_422(default_server: str) -> None:
    r = httpx.post(default_server + "/v1/rewards", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_single_rollout_group(default_server: str) -> None:
    g = post(default_server, {"groups": [{"prompt": "p", "responses": ["only one"], "quality": [0.4]}]}).json()[
        "groups"
    ][0]
    assert g["rollouts"][0]["diversity"] == 1.0 and g["rollouts"][0]["reward"] == 0.4
    assert g["rollouts"][0]["advantage"] == 0.0 and g["notes"]
