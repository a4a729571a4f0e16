"""Shared fixtures: a real Redis, a real server on a loopback port, the embedded default engine."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from models.data import noveltybench_pairs
from service.app import create_app
from service.settings import Settings
from service.tools.loopback import serve_in_thread

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Two cores are shared by everything on this machine: one torch thread per test process keeps runs steady.
os.environ.setdefault("OMP_NUM_THREADS", "1")

PAIRS = noveltybench_pairs()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis: REDIS_URL (scripts/test.sh sets or starts one) or the machine's default."""
    import redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError as exc:  # pragma: no cover - scripts/test.sh guarantees one
        pytest.fail(f"no Redis at {url}: {exc}; run the tests through `make test`")
    return url


def drop_namespace(redis_url: str, ns: str) -> None:
    """Delete every key a test wrote under its Redis namespace (tests share one Redis)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{ns}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A fresh namespace on the shared Redis, emptied after the test."""
    ns = f"test-{uuid.uuid4().hex[:12]}"
    yield ns
    drop_namespace(redis_url, ns)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(app: FastAPI, ready_path: str = "/readyz", timeout: float = 120.0) -> AbstractContextManager[str]:
    """Run `app` under uvicorn on a loopback port in a thread; yield its base URL once ready.

    The same runner the benchmark uses, so tests exercise the code that measures the service.
    """
    return serve_in_thread(app, ready_path, timeout)


@asynccontextmanager
async def asgi_client(app: FastAPI, timeout: float = 120.0) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client speaking ASGI to `app`, with its lifespan run and its models ready."""
    async with app.router.lifespan_context(app):
        engine = app.state.engine
        await asyncio.wait_for(engine.ready.wait(), timeout)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as client:
            yield client


@pytest.fixture(scope="session")
def default_settings() -> Settings:
    # A short group deadline: requests to the group-assembly routes that nobody completes (the fuzzer's)
    # answer 408 after a second instead of holding a test for DARLING_GROUP_TIMEOUT_S.
    return Settings(port=0, group_timeout_s=1.0)


@pytest.fixture(scope="session")
def default_server(default_settings: Settings) -> Iterator[str]:
    """The embedded default (MiniLM, verifier, in-memory cache) on a loopback port, shared by the session."""
    with serve(create_app(default_settings)) as base:
        yield base
