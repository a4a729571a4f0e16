"""The one settings class. Every field reads from the environment as DARLING_<NAME>."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DARLING_", env_file=None, extra="ignore")

    # Network
    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    grpc_port: int | None = Field(None, ge=0, le=65535, description="gRPC port; unset = no gRPC server.")

    # Equivalence classifier
    classifier: Literal["embedding", "cross-encoder"] = Field(
        "embedding", description="`embedding` (packaged MiniLM, the default) or `cross-encoder`."
    )
    classifier_path: str | None = Field(
        None, description="Local folder or hub id of the classifier; unset = the packaged MiniLM."
    )
    classifier_preset: str | None = Field(
        None,
        description="Cross-encoder input preset: darling-modernbert, darling-math, noveltybench-deberta, pair. "
        "Unset = the preset stored in the model folder, else `pair`.",
    )
    classifier_tokenizer: str | None = Field(None, description="Tokenizer location if not beside the weights.")
    classifier_quantize: Literal["none", "int8"] = Field(
        "none",
        description="`int8`: dynamic int8 quantization of a cross-encoder's Linear layers (CPU only): faster, "
        "judgements close to fp32 (`darling-reward bench --int8` reports speed-up and agreement).",
    )
    classifier_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Override the classifier's default threshold."
    )
    embedding_head: str = Field(
        "default",
        description="Head of the `embedding` classifier: `default` (the packaged learned head over MiniLM), "
        "`none` (plain cosine at 0.837), or a folder written by `darling-reward classifier train --head`.",
    )

    # Quality
    quality_model_path: str | None = Field(None, description="Sequence-classification reward model; unset = none.")
    quality_max_tokens: int = Field(4096, gt=0, description="Reward-model input limit (keeps the last tokens).")
    verifier: bool = Field(True, description="Enable the math-verify verifier for groups that send a reference.")

    # Runtime
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bf16/fp16 on GPU, fp32 on CPU."
    )
    cpu_threads: int | None = Field(None, gt=0, description="Torch intra-op threads; unset = all cores.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model folder. Off: safer.")
    warmup: bool = Field(True, description="Run one batch through each model before reporting ready.")

    # Request limits
    max_rollouts_per_request: int = Field(4096, gt=0, description="Rollouts in one request, all groups together.")
    max_rollouts_per_group: int = Field(512, gt=0, description="Rollouts in one group.")
    max_chars_per_rollout: int = Field(64_000, gt=0, description="Characters in one rollout or prompt.")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest accepted request body.")

    # Batching
    max_batch_tokens: int = Field(16_384, gt=0, description="Padded tokens (longest row x rows) in one forward.")
    max_batch_rows: int = Field(64, gt=0, description="Rows in one forward.")
    max_wait_ms: float = Field(2.0, ge=0, description="How long a partial batch waits for company.")
    max_queue_depth: int = Field(100_000, gt=0, description="Items queued per model before 503.")

    # Cache
    memory_cache_bytes: int = Field(64 * 1024 * 1024, ge=0, description="In-process LRU bound; 0 = off.")
    redis_url: str | None = Field(None, description="redis://host:port/db; unset = no Redis tier.")
    redis_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="TTL of Redis cache entries.")
    redis_namespace: str = Field("darling", description="Prefix of every Redis key.")
    redis_timeout_s: float = Field(0.25, gt=0, description="Socket timeout for Redis operations.")
    redis_connect_timeout_s: float = Field(0.25, gt=0, description="Timeout for opening a Redis connection.")
    redis_max_connections: int = Field(64, gt=0, description="Size of the Redis connection pool.")
    redis_retry_s: float = Field(
        1.0, gt=0, description="After a Redis failure, skip the Redis tier this long before one probe call."
    )
    redis_retry_max_s: float = Field(
        30.0, gt=0, description="Cap of the Redis back-off, which doubles with every failed probe."
    )
    cache_prefetch_max_keys: int = Field(
        20_000, gt=0, description="Most keys one request reads from Redis up front (the rest, per planner round)."
    )

    # Group assembly (POST /v1/rollouts, POST /v1/openrlhf)
    group_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long a rollouts call waits for the rest of its group before a 408 naming the missing "
        "indices. Keep it below the trainer's HTTP timeout (OpenRLHF: 180 s).",
    )
    group_ttl_s: int = Field(
        3600, gt=0, description="How long a partial group, and a finished group's result, are kept (for retries)."
    )
    group_max_open: int = Field(
        100_000, gt=0, description="Partial groups one replica holds in memory (no Redis) before 503."
    )
    group_lease_s: float = Field(
        5.0,
        gt=0,
        description="How long a replica's claim to score a complete group lasts; renewed while it scores, so a "
        "group whose scoring replica died is taken over by another within about this long.",
    )
    openrlhf_group_size: int = Field(
        8, gt=0, description="n for POST /v1/openrlhf: rollouts of one prompt are assembled into groups of n."
    )

    # Per-run diversity figures (options.run; GET /v1/runs/{run}/stats, darling_run_* metrics)
    run_stats_max_runs: int = Field(
        32,
        gt=0,
        description="Runs tracked at once (and run labels on /metrics); the least recently active run is dropped.",
    )
    run_stats_window: int = Field(256, gt=0, description="Groups of a run that its rolling figures cover.")
    run_stats_max_steps: int = Field(
        200, gt=0, description="Steps of a run kept for per-step figures; the least recently updated is dropped."
    )

    # Security and operations
    api_keys: SecretStr | None = Field(None, description="Comma-separated bearer keys; unset = no auth.")
    api_keys_file: str | None = Field(None, description="File with one bearer key per line.")
    log_level: str = Field("info", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="`json`: one object per line; `text`: plain.")
    access_log: bool = Field(True, description="One log line per request (method, path, status, duration, id).")
    auth_health: bool = Field(False, description="Require an API key on /healthz and /readyz too.")
    auth_metrics: bool = Field(False, description="Require an API key on /metrics too.")
    max_inflight_requests: int = Field(
        256, gt=0, description="Requests handled at once by one replica; more get 429 with Retry-After."
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish before they are cut."
    )

    @cached_property
    def keys(self) -> list[str]:
        found: list[str] = []
        if self.api_keys is not None:
            found += [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]
        if self.api_keys_file:
            with open(self.api_keys_file) as f:
                found += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        return found
