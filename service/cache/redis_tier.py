"""The Redis tier of the judgement cache: shared by every replica, and never a reason for a request to fail.

Every call is one round trip: reads are one pipelined MGET (chunked inside the pipeline), writes one pipeline
of SET ... EX. Values carry a magic, a format version and a checksum bound to their key, so a foreign,
truncated or misplaced value reads as a miss.

When Redis is down or slow, calls fail fast (socket and connect timeouts, one overall deadline) and the tier
opens a circuit breaker: for a short, growing back-off every call is skipped at once, so a dead Redis does not
add a timeout to every request. After the back-off one call goes through as a probe; its success closes the
breaker. An outage logs one warning when it starts and one line when it ends; counters live in `stats`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from service.ops import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAGIC = b"DR"
FORMAT_VERSION = 1
_HEADER = _MAGIC + bytes([FORMAT_VERSION])
_VALUE = struct.Struct("<d")
_CHECK_BYTES = 4
ENCODED_SIZE = len(_HEADER) + _VALUE.size + _CHECK_BYTES
# Keys per MGET inside one pipeline: keeps each reply small without adding round trips.
MGET_CHUNK = 1000


def _check(key: str, body: bytes) -> bytes:
    return hashlib.blake2b(key.encode() + body, digest_size=_CHECK_BYTES).digest()


def encode_value(key: str, value: float) -> bytes:
    body = _HEADER + _VALUE.pack(value)
    return body + _check(key, body)


def decode_value(key: str, raw: object) -> float | None:
    """The float stored under `key`, or None for anything we did not write there."""
    if not isinstance(raw, bytes) or len(raw) != ENCODED_SIZE or not raw.startswith(_HEADER):
        return None
    body, check = raw[:-_CHECK_BYTES], raw[-_CHECK_BYTES:]
    if _check(key, body) != check:
        return None
    (value,) = _VALUE.unpack_from(body, len(_HEADER))
    return value if math.isfinite(value) else None


def redact_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class RedisTierStats:
    """Running totals, read by the metrics endpoint and the benchmark."""

    round_trips: int = 0  # successful calls; each is one request/response exchange with Redis
    keys_read: int = 0
    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # values under our keys that failed to decode (counted as misses too)
    keys_written: int = 0
    errors: int = 0  # failed calls (timeouts, refused connections, server errors)
    skipped: int = 0  # calls not attempted because the breaker was open
    outages: int = 0
    up: bool = True


class RedisTier:
    """A `RemoteTier` over redis.asyncio with a connection pool, timeouts, TTL, a key namespace and a breaker."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "darling",
        ttl_s: int = 7 * 24 * 3600,
        timeout_s: float = 0.25,
        connect_timeout_s: float | None = None,
        max_connections: int = 64,
        retry_s: float = 1.0,
        retry_max_s: float = 30.0,
        connection_class: type[aioredis.Connection] | None = None,
    ) -> None:
        self.url = redact_url(url)
        self.namespace = namespace
        self.ttl_s = ttl_s
        connect = connect_timeout_s if connect_timeout_s is not None else timeout_s
        # One overall bound per call, on top of the socket timeouts, so a call never outlives them.
        self._deadline_s = connect + timeout_s
        self._retry_s = retry_s
        self._retry_max_s = retry_max_s
        extra: dict[str, Any] = {} if connection_class is None else {"connection_class": connection_class}
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            **extra,
            max_connections=max_connections,
            timeout=timeout_s,  # waiting for a free pooled connection
            socket_timeout=timeout_s,
            socket_connect_timeout=connect,
            # One immediate retry on a broken connection only: after a Redis restart every pooled socket is
            # stale and the first use of each fails. Timeouts are not retried: that would double the wait.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        self.stats = RedisTierStats()
        self._down_since: float | None = None
        self._backoff_s = retry_s
        self._retry_at = 0.0
        self._probing = False
        metrics.REDIS_UP.set(1)  # until a call says otherwise (the engine pings at start-up)

    @classmethod
    def from_settings(cls, settings: Any) -> RedisTier:
        return cls(
            settings.redis_url,
            namespace=settings.redis_namespace,
            ttl_s=settings.redis_ttl_s,
            timeout_s=settings.redis_timeout_s,
            connect_timeout_s=settings.redis_connect_timeout_s,
            max_connections=settings.redis_max_connections,
            retry_s=settings.redis_retry_s,
            retry_max_s=settings.redis_retry_max_s,
        )

    def name(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    # ---- the RemoteTier protocol ------------------------------------------------------------------------

    async def get_many(self, keys: list[str]) -> dict[str, float]:
        if not keys:
            return {}
        names = [self.name(k) for k in keys]

        async def read() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                for i in range(0, len(names), MGET_CHUNK):
                    pipe.mget(names[i : i + MGET_CHUNK])
                replies: list[list[Any]] = await pipe.execute()
            return [raw for chunk in replies for raw in chunk]

        raws = await self._call("read", read)
        if raws is None:
            return {}
        found: dict[str, float] = {}
        for key, raw in zip(keys, raws, strict=True):
            if raw is None:
                continue
            value = decode_value(key, raw)
            if value is None:
                self.stats.corrupt += 1
            else:
                found[key] = value
        self.stats.keys_read += len(keys)
        self.stats.hits += len(found)
        self.stats.misses += len(keys) - len(found)
        return found

    async def put_many(self, items: dict[str, float]) -> None:
        if not items:
            return

        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(self.name(key), encode_value(key, value), ex=self.ttl_s)
                await pipe.execute()

        if await self._call("write", write, default=False) is not False:
            self.stats.keys_written += len(items)

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers; a failure starts an outage (logged once) like any other call."""
        return bool(await self._call("ping", self._client.ping, default=False))

    # ---- the breaker --------------------------------------------------------------------------------

    async def _call(self, kind: str, fn: Callable[[], Awaitable[T]], default: Any = None) -> Any:
        probe = False
        if self._down_since is not None:
            if self._probing or time.monotonic() < self._retry_at:
                self.stats.skipped += 1
                metrics.REDIS_SKIPPED.inc()
                return default
            self._probing = probe = True
        try:
            async with asyncio.timeout(self._deadline_s):
                result = await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Any failure, a bug in a reply's handling included, is a cache miss: the cache is optional.
            self.stats.errors += 1
            metrics.record_cache_error("redis")
            self._failed(exc, probe)
            return default
        finally:
            if probe:
                self._probing = False
        self.stats.round_trips += 1
        metrics.REDIS_ROUND_TRIPS.labels(kind).inc()
        if probe:
            self._recovered()
        return result

    def _failed(self, exc: BaseException, probe: bool) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._backoff_s = self._retry_s
            self.stats.outages += 1
            self.stats.up = False
            metrics.REDIS_OUTAGES.inc()
            metrics.REDIS_UP.set(0)
            log.warning(
                "Redis cache at %s is unavailable (%s: %s); serving from memory and the models, "
                "retrying in the background",
                self.url,
                type(exc).__name__,
                exc or "timed out",
            )
        elif probe:
            self._backoff_s = min(self._backoff_s * 2, self._retry_max_s)
        else:
            return  # a call that was in flight when the outage began: the breaker already knows
        self._retry_at = now + self._backoff_s

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        log.info(
            "Redis cache at %s is back after %.1fs (%d failed calls in all so far)",
            self.url,
            time.monotonic() - self._down_since,
            self.stats.errors,
        )
        self._down_since = None
        self._backoff_s = self._retry_s
        self.stats.up = True
        metrics.REDIS_UP.set(1)
