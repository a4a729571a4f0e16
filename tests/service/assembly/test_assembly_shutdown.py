"""Draining covers group assembly on both transports (issue 14, issue 18 item 3): at shutdown a waiting call
gets its rewards if its group completes within the grace period (here: on another replica, through the real
Redis) or a retryable 503 / UNAVAILABLE with Retry-After; never a 500 or a hang, and what it stored stays in
Redis for its retry."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
import redis
import uvicorn
from darling_client.proto import reward_pb2, reward_pb2_grpc
from darling_client.protoconv import RETRY_AFTER_KEY, to_proto
from fastapi import FastAPI

from service.app import create_app
from service.server import DrainingServer
from service.settings import Settings
from service.tools.loopback import loopback_socket
from tests.conftest import asgi_client
from tests.service.assembly.test_assembly_defects import direct, rollout, until

GRACE_S = 4.0


def settings(redis_url: str, ns: str, **extra: Any) -> Settings:
    return Settings(
        port=0, redis_url=redis_url, redis_namespace=ns, group_timeout_s=60.0, shutdown_grace_s=GRACE_S, **extra
    )


@contextlib.contextmanager
def draining_server(app: FastAPI) -> Iterator[tuple[str, DrainingServer]]:
    """The production server class (SIGTERM drains) on a loopback port in a thread."""
    sock = loopback_socket()  # bound here: a port found free may be another server's by the time it is bound
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=round(GRACE_S)
    )
    server = DrainingServer(config, app)
    # uvicorn installs signal handlers only in the main thread; the test calls handle_exit itself.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                break
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not become ready"
        time.sleep(0.1)
    try:
        yield base, server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def stored(redis_url: str, ns: str, gid: str) -> dict[bytes, bytes]:
    held: dict[bytes, bytes] = redis.Redis.from_url(redis_url).hgetall(f"{ns}:group:{gid}")
    return held


async def test_http_waiters_get_rewards_or_a_retryable_503_at_sigterm(redis_url: str, ns: str) -> None:
    app = create_app(settings(redis_url, ns))
    other = create_app(settings(redis_url, ns))
    done, left = f"done-{uuid.uuid4().hex[:8]}", f"left-{uuid.uuid4().hex[:8]}"
    with draining_server(app) as (base, server):
        async with asgi_client(other) as replica, httpx.AsyncClient(base_url=base, timeout=60) as c:
            want = await direct(replica)
            completes = asyncio.create_task(c.post("/v1/rollouts", json={"rollouts": [rollout(done, 0)]}))
            stays = asyncio.create_task(c.post("/v1/rollouts", json={"rollouts": [rollout(left, 0)]}))
            await until(
                lambda: getattr(app.state, "assembler", None) is not None and app.state.assembler.waiting_groups == 2
            )
            term = time.monotonic()
            server.handle_exit(signal.SIGTERM, None)
            await asyncio.sleep(0.5)
            # The other replica completes one group during the grace period: its caller here gets the rewards.
            finish = await replica.post("/v1/rollouts", json={"rollouts": [rollout(done, 1)]})
            assert finish.status_code == 200, finish.text
            got = await completes
            assert got.status_code == 200, got.text
            assert got.json()["groups"][0]["rewards"] == want
            # The other group never completes here: a retryable 503 before the grace period ends.
            refused = await stays
            assert time.monotonic() - term < GRACE_S
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
            assert refused.json()["error"] == "not_ready" and "shutting down" in refused.json()["detail"]
            # Nothing accepted is lost: the rollout is in Redis, and its retry on the other replica is served.
            assert b"i:0" in stored(redis_url, ns, left)
            retried, last = await asyncio.gather(
                replica.post("/v1/rollouts", json={"rollouts": [rollout(left, 0)]}),
                replica.post("/v1/rollouts", json={"rollouts": [rollout(left, 1)]}),
            )
            assert retried.status_code == 200 and last.status_code == 200
            assert retried.json()["groups"][0]["rewards"] == want


async def test_grpc_waiters_get_rewards_or_unavailable_at_shutdown(redis_url: str, ns: str) -> None:
    """The app's lifespan ends (as after SIGTERM): gRPC's in-flight SubmitRollouts keep their assembler for
    gRPC's grace period (it used to be closed first, by a router lifespan nested inside the app's)."""
    app = create_app(settings(redis_url, ns, grpc_port=0))
    other = create_app(settings(redis_url, ns))
    done, left = f"gdone-{uuid.uuid4().hex[:8]}", f"gleft-{uuid.uuid4().hex[:8]}"
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    exited = False
    try:
        await asyncio.wait_for(app.state.engine.ready.wait(), 120)
        async with asgi_client(other) as replica, grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as ch:
            want = await direct(replica)
            stub = reward_pb2_grpc.RewardServiceStub(ch)

            def call(gid: str) -> Any:
                msg = to_proto({"rollouts": [rollout(gid, 0)]}, reward_pb2.RolloutsRequest())
                return asyncio.ensure_future(stub.SubmitRollouts(msg, timeout=60))

            completes, stays = call(done), call(left)
            await until(
                lambda: getattr(app.state, "assembler", None) is not None and app.state.assembler.waiting_groups == 2
            )
            began = time.monotonic()
            stopping = asyncio.create_task(lifespan.__aexit__(None, None, None))
            exited = True
            await asyncio.sleep(0.5)
            finish = await replica.post("/v1/rollouts", json={"rollouts": [rollout(done, 1)]})
            assert finish.status_code == 200, finish.text
            reply = await completes
            assert list(reply.groups[0].rewards) == pytest.approx(want)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stays
            assert time.monotonic() - began < GRACE_S
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
            trailers = dict(info.value.trailing_metadata() or ())
            assert trailers[RETRY_AFTER_KEY] == "1" and "shutting down" in (info.value.details() or "")
            await asyncio.wait_for(stopping, 30)
            assert b"i:0" in stored(redis_url, ns, left)
    finally:
        if not exited:
            await lifespan.__aexit__(None, None, None)
