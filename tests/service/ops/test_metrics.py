"""/metrics: the figures move with real requests; several processes merge; deploy files name real metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.ops import metrics

ROOT = Path(__file__).resolve().parents[3]


def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(base + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_move_after_requests(default_server: str) -> None:
    tag = uuid.uuid4().hex[:8]
    responses = [f"Answer {i} ({tag}): the {w} is a fine thing to mention here." for i, w in enumerate("abcdefgh")]
    responses += ["Same text.", "Same text."]  # decided by the identical rule
    body = {"groups": [{"prompt": "Say something.", "responses": responses, "quality": [1.0] * len(responses)}]}
    before = scrape(default_server)

    first = httpx.post(default_server + "/v1/rewards", json=body, timeout=60, headers={"X-Request-ID": f"m-{tag}"})
    assert first.status_code == 200, first.text
    assert first.headers["x-request-id"] == f"m-{tag}"
    second = httpx.post(default_server + "/v1/rewards", json=body, timeout=60)
    assert second.status_code == 200
    # The server made up an id for the request that sent none.
    assert re.fullmatch(r"[0-9a-f]{32}", second.headers["x-request-id"])
    bad = httpx.post(default_server + "/v1/rewards", json={"groups": []}, timeout=60)
    assert bad.status_code == 422

    after = scrape(default_server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"route": "/v1/rewards", "method": "POST"}
    assert delta("darling_http_requests_total", status="200", **route) == 2
    assert delta("darling_http_requests_total", status="422", **route) == 1
    assert delta("darling_http_request_duration_seconds_count", **route) == 3
    assert delta("darling_http_request_duration_seconds_sum", **route) > 0

    judged = first.json()["groups"][0]["judgements"]
    assert judged["model"] > 0
    model = {"model": "classifier"}
    assert delta("darling_batches_total", **model) >= 1
    assert delta("darling_batch_rows_sum", **model) == judged["model"]
    real = delta("darling_batch_tokens_total", kind="real", **model)
    padded = delta("darling_batch_tokens_total", kind="padded", **model)
    assert 0 < real <= padded
    assert delta("darling_forward_seconds_count", **model) == delta("darling_batches_total", **model)
    assert delta("darling_queue_wait_seconds_count", **model) == delta("darling_batches_total", **model)
    assert delta("darling_batch_padding_share_count", **model) == delta("darling_batches_total", **model)
    assert ("darling_queue_depth", frozenset(model.items())) in after

    # Judgements by rule and cache lookups by tier add up to what the two responses reported.
    groups = [first.json()["groups"][0], second.json()["groups"][0]]
    assert groups[0]["decided_by"]["identical"] >= 1
    for rule in ("identical", "short_text", "classifier"):
        assert delta("darling_judgements_total", rule=rule) == sum(g["decided_by"][rule] for g in groups)
    for source, field in (("model", "model"), ("cache", "cached")):
        assert delta("darling_classifier_judgements_total", source=source) == sum(
            g["judgements"][field] for g in groups
        )
    # The second request was answered from the in-process cache.
    assert groups[1]["judgements"]["model"] == 0 and groups[1]["cache"]["memory"]["hits"] > 0
    for result, field in (("hit", "hits"), ("miss", "misses")):
        expected = sum(g["cache"]["memory"][field] for g in groups)
        assert delta("darling_cache_lookups_total", tier="memory", result=result) == expected
    assert delta("darling_groups_scored_total", quality_source="client") == 2
    assert delta("darling_rollouts_scored_total") == 2 * len(responses)

    info = [k for k in after if k[0] == "darling_model_info"]
    assert any(dict(labels)["role"] == "classifier" and dict(labels)["device"] == "cpu" for _, labels in info)
    fingerprint = httpx.get(default_server + "/readyz").json()["models"]["classifier_fingerprint"]
    assert any(dict(labels)["fingerprint"] == fingerprint for _, labels in info)
    assert value(after, "darling_ready") == 1


_CHILD = """
import sys
from service.ops import metrics
metrics.HTTP_REQUESTS.labels("/v1/rewards", "POST", "200").inc(int(sys.argv[1]))
metrics.FORWARD_LATENCY.labels("classifier").observe(0.01 * int(sys.argv[1]))
"""


def test_several_processes_merge(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR: each worker writes its own file and /metrics (render) sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (2, 5):
        subprocess.run([sys.executable, "-c", _CHILD, str(n)], env=env, check=True, cwd=ROOT, timeout=60)
    assert len(list(tmp_path.glob("*.db"))) >= 2
    render = "from service.ops import metrics; import sys; sys.stdout.write(metrics.render().decode())"
    text = subprocess.run(
        [sys.executable, "-c", render], env=env, check=True, cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert value(samples, "darling_http_requests_total", route="/v1/rewards", method="POST", status="200") == 7
    assert value(samples, "darling_forward_seconds_count", model="classifier") == 2


def _exposed_names() -> set[str]:
    suffixes = {
        "counter": ["_total", "_created"],
        "gauge": [""],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
    }
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_dashboard_alerts_and_autoscaler_use_real_metrics() -> None:
    exposed = _exposed_names()
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "darling-reward.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    texts = [
        *exprs,
        (ROOT / "deploy" / "base" / "hpa.yaml").read_text(),
        (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(),
        (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text(),
    ]
    used = {m for t in texts for m in re.findall(r"\bdarling_[a-z_]+", t)}
    assert used, "the deploy files reference no metric"
    unknown = used - exposed
    assert not unknown, f"deploy files name metrics the service does not expose: {sorted(unknown)}"
    # Every figure the operations issue asks for has a panel.
    wanted = {
        "darling_http_requests",
        "darling_http_request_duration_seconds",
        "darling_queue_depth",
        "darling_queue_wait_seconds",
        "darling_batch_rows",
        "darling_batch_tokens",
        "darling_batch_padding_share",
        "darling_forward_seconds",
        "darling_judgements",
        "darling_cache_lookups",
        "darling_group_assembly_wait_seconds",
        "darling_group_assembly_timeouts",
        "darling_model_info",
        "darling_run_distinct",
        "darling_run_collapsed_share",
        "darling_run_utility",
    }
    assert wanted <= {f.name for f in metrics.REGISTRY.collect()}
    missing = {f for f in wanted if not any(re.search(rf"\b{f}(_total|_bucket|_sum|_count)?\b", e) for e in exprs)}
    assert not missing, sorted(missing)
