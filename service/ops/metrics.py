"""The one Prometheus registry of the service and the helpers that feed it.

Every metric lives on `REGISTRY` (not prometheus_client's global one) so that importing a library that registers
its own collectors cannot change what /metrics shows. Other modules import the metric objects from here.

Several worker processes: set PROMETHEUS_MULTIPROC_DIR to an empty, writable folder before the process starts.
prometheus_client then keeps every value in a memory-mapped file per process, and /metrics merges the files of
all processes (gauges sum over live processes). The supported deployment is one worker per pod (one copy of the
models per GPU), where the directory is not needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from darling_client.schemas import GroupReward

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# ---- HTTP --------------------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "darling_http_requests",
    "HTTP requests, by route template, method and status code (or cancelled, client_gone, error: no response).",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "darling_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_INFLIGHT = Gauge(
    "darling_http_requests_in_flight",
    "Requests being handled now (health and metrics excluded).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
HTTP_REJECTED = Counter(
    "darling_http_rejected",
    "Requests refused before any work: unauthorized, body_too_large, too_many_requests, draining.",
    ["reason"],
    registry=REGISTRY,
)

# ---- gRPC (service/grpc/servicer.py) -----------------------------------------------------------------------
GRPC_REQUESTS = Counter(
    "darling_grpc_requests",
    "gRPC calls answered, by method (Score, ScoreStream, ...) and status code name (OK, INVALID_ARGUMENT, ...).",
    ["method", "code"],
    registry=REGISTRY,
)
GRPC_LATENCY = Histogram(
    "darling_grpc_request_duration_seconds",
    "Time from a gRPC call's arrival to its last message.",
    ["method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

# ---- batching ----------------------------------------------------------------------------------------------
QUEUE_DEPTH = Gauge(
    "darling_queue_depth",
    "Items waiting in a model's batch queue. The autoscaler's signal.",
    ["model"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "darling_queue_wait_seconds",
    "How long the oldest item of a batch waited in the queue before its forward started.",
    ["model"],
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)
BATCHES = Counter("darling_batches", "Model forwards run.", ["model"], registry=REGISTRY)
BATCH_ROWS = Histogram(
    "darling_batch_rows",
    "Rows in one forward.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
BATCH_TOKENS = Counter(
    "darling_batch_tokens",
    "Tokens sent through the models: kind=real (the inputs) or padded (longest row x rows).",
    ["model", "kind"],
    registry=REGISTRY,
)
BATCH_PADDING = Histogram(
    "darling_batch_padding_share",
    "Share of a forward's padded tokens that are padding.",
    ["model"],
    buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
    registry=REGISTRY,
)
FORWARD_LATENCY = Histogram(
    "darling_forward_seconds",
    "Duration of one model forward (tokenised inputs to scores).",
    ["model"],
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)

# ---- scoring -----------------------------------------------------------------------------------------------
JUDGEMENTS = Counter(
    "darling_judgements",
    "Pair judgements by the rule that decided them ([spec](spec.md) section 2): identical, short_text, classifier.",
    ["rule"],
    registry=REGISTRY,
)
CLASSIFIER_JUDGEMENTS = Counter(
    "darling_classifier_judgements",
    "Classifier judgements by where the answer came from: model (a forward) or cache.",
    ["source"],
    registry=REGISTRY,
)
PAIRS_SKIPPED = Counter(
    "darling_pairs_skipped", "Pairs never judged because the partition could not change.", registry=REGISTRY
)
GROUPS_SCORED = Counter("darling_groups_scored", "Rollout groups scored.", ["quality_source"], registry=REGISTRY)
ROLLOUTS_SCORED = Counter("darling_rollouts_scored", "Rollouts scored.", registry=REGISTRY)

# ---- caches ------------------------------------------------------------------------------------------------
CACHE_LOOKUPS = Counter(
    "darling_cache_lookups",
    "Cache lookups by tier (memory, redis) and result (hit, miss, error).",
    ["tier", "result"],
    registry=REGISTRY,
)
# Fed by service/cache/redis_tier.py as things happen; absent from /metrics until a Redis tier is configured and used.
REDIS_UP = Gauge(
    "darling_cache_redis_up",
    "1 while the Redis cache tier answers, 0 during an outage (requests then run uncached).",
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
REDIS_OUTAGES = Counter(
    "darling_cache_redis_outages", "Redis outages; each logs one warning when it begins.", registry=REGISTRY
)
REDIS_ROUND_TRIPS = Counter(
    "darling_cache_redis_round_trips",
    "Successful calls to Redis by kind (read, write, ping); each is one round trip.",
    ["kind"],
    registry=REGISTRY,
)
REDIS_SKIPPED = Counter(
    "darling_cache_redis_skipped",
    "Redis calls not attempted because the circuit breaker was open after a failure.",
    registry=REGISTRY,
)

# ---- group assembly (service/assembly/ imports these) -----------------------------------------------------
GROUP_ASSEMBLY_WAIT = Histogram(
    "darling_group_assembly_wait_seconds",
    "Time from a group's first rollout to the group being complete and scored.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GROUP_ASSEMBLY_TIMEOUTS = Counter(
    "darling_group_assembly_timeouts",
    "Groups given up because their rollouts did not all arrive in time.",
    registry=REGISTRY,
)
GROUPS_ASSEMBLING = Gauge(
    "darling_groups_assembling",
    "Groups waiting for more rollouts.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

# ---- per-run diversity (service/ops/runs.py feeds these) -------------------------------------------------
# One series per tracked run and metric; at most DARLING_RUN_STATS_MAX_RUNS runs (default 32) carry a label, and
# a run's series are removed when it is dropped, so the cardinality stays bounded. Gauges cover the run's last
# DARLING_RUN_STATS_WINDOW groups.
RUN_GROUPS = Counter("darling_run_groups", "Groups scored under a run label.", ["run"], registry=REGISTRY)
RUN_COLLAPSED_GROUPS = Counter(
    "darling_run_collapsed_groups", "Groups of a run with n > 1 and a single class.", ["run"], registry=REGISTRY
)
_RUN_GAUGES = {
    "distinct": "Mean number of classes per group.",
    "collapsed_share": "Share of groups with n > 1 and a single class.",
    "diversity": "Mean rollout diversity (after the floor).",
    "quality": "Mean rollout quality.",
    "utility": "Mean NoveltyBench utility (patience 0.8, ratings 1..10).",
    "effective_classes": "Mean exp(entropy of the class sizes).",
}
RUN_FIGURES = {
    name: Gauge(
        f"darling_run_{name}",
        f"{text} Over the run's last DARLING_RUN_STATS_WINDOW groups.",
        ["run"],
        multiprocess_mode="livemostrecent",
        registry=REGISTRY,
    )
    for name, text in _RUN_GAUGES.items()
}
RUN_STEP = Gauge(
    "darling_run_step",
    "The step most recently sent with the run.",
    ["run"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
RUNS_TRACKED = Gauge(
    "darling_runs_tracked", "Runs with figures kept now.", multiprocess_mode="livesum", registry=REGISTRY
)
RUNS_EVICTED = Counter(
    "darling_runs_evicted",
    "Runs dropped (with their series) to stay within DARLING_RUN_STATS_MAX_RUNS.",
    registry=REGISTRY,
)

# ---- models ------------------------------------------------------------------------------------------------
MODEL_INFO = Gauge(
    "darling_model_info",
    "Always 1: the models this process serves, with their ids, fingerprints and device.",
    ["role", "model", "fingerprint", "device"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
READY = Gauge(
    "darling_ready",
    "1 when the models are loaded and the service is not draining.",
    multiprocess_mode="livemin",
    registry=REGISTRY,
)


# ---- feeding -----------------------------------------------------------------------------------------------
class _Batcher(Protocol):
    name: str

    @property
    def depth(self) -> int: ...


class BatchMetrics:
    """The batchers' observer; also reads their queue depths when /metrics is scraped."""

    def __init__(self, batchers: Callable[[], Iterable[_Batcher]] = list) -> None:
        self._batchers = batchers

    def __call__(self, name: str, rows: int, real: int, padded: int, forward_s: float, queue_wait_s: float) -> None:
        BATCHES.labels(name).inc()
        BATCH_ROWS.labels(name).observe(rows)
        BATCH_TOKENS.labels(name, "real").inc(real)
        BATCH_TOKENS.labels(name, "padded").inc(padded)
        BATCH_PADDING.labels(name).observe(1.0 - real / padded if padded else 0.0)
        FORWARD_LATENCY.labels(name).observe(forward_s)
        QUEUE_WAIT.labels(name).observe(max(0.0, queue_wait_s))
        self.refresh()

    def refresh(self) -> None:
        for b in self._batchers():
            QUEUE_DEPTH.labels(b.name).set(b.depth)


def record_group(g: GroupReward) -> None:
    """Judgements by rule and cache lookups by tier, from the counts a scored group carries."""
    GROUPS_SCORED.labels(g.quality_source).inc()
    ROLLOUTS_SCORED.inc(g.n)
    for rule, count in g.decided_by.model_dump().items():
        if count:
            JUDGEMENTS.labels(rule).inc(count)
    if g.judgements.model:
        CLASSIFIER_JUDGEMENTS.labels("model").inc(g.judgements.model)
    if g.judgements.cached:
        CLASSIFIER_JUDGEMENTS.labels("cache").inc(g.judgements.cached)
    if g.judgements.skipped:
        PAIRS_SKIPPED.inc(g.judgements.skipped)
    for tier, counts in g.cache.model_dump().items():
        if counts["hits"]:
            CACHE_LOOKUPS.labels(tier, "hit").inc(counts["hits"])
        if counts["misses"]:
            CACHE_LOOKUPS.labels(tier, "miss").inc(counts["misses"])


def record_cache_error(tier: str, n: int = 1) -> None:
    """A cache tier failed (timeout, connection refused); the request went on without it."""
    CACHE_LOOKUPS.labels(tier, "error").inc(n)


def record_models(models: dict[str, object]) -> None:
    """`models` maps a role (classifier, verifier, reward_model) to its backend."""
    for role, backend in models.items():
        if backend is None:
            continue
        MODEL_INFO.labels(
            role,
            str(getattr(backend, "id", type(backend).__name__)),
            str(getattr(backend, "fingerprint", "")),
            str(getattr(backend, "device", "cpu")),
        ).set(1)


def render() -> bytes:
    """The exposition text: this process's registry, or every worker's files in multi-process mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition. Queue depths are read at scrape time so that the autoscaler sees them now."""
    refresh: BatchMetrics | None = getattr(request.app.state, "batch_metrics", None)
    if refresh is not None:
        refresh.refresh()
    engine = getattr(request.app.state, "engine", None)
    ready = engine is not None and engine.ready.is_set() and not getattr(request.app.state, "draining", False)
    READY.set(1 if ready else 0)
    return Response(render(), media_type=CONTENT_TYPE_LATEST)
