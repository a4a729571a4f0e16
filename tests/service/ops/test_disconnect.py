"""A client that hangs up mid-request takes its queued model work with it: real uvicorn on loopback, a real
TCP client that closes its socket, a tiny BERT cross-encoder whose batcher holds partial batches for 5 s."""

from __future__ import annotations

import json
import socket
import time

import pytest

from service.app import create_app
from service.settings import Settings
from service.tools.bench.models import build_model
from tests.conftest import serve
from tests.service.engine.test_batching import text


def test_a_disconnected_client_cancels_its_queued_work(tmp_path_factory: pytest.TempPathFactory) -> None:
    model = build_model("bert-tiny", str(tmp_path_factory.mktemp("bert-tiny")))
    settings = Settings(
        classifier="cross-encoder",
        classifier_path=model,
        verifier=False,
        cpu_threads=1,
        max_wait_ms=5000,  # the request's first round sits in the queue, waiting for company
        memory_cache_bytes=0,
        warmup=False,
    )
    app = create_app(settings)
    with serve(app) as base:
        batcher = app.state.engine.batchers[0]
        body = json.dumps(
            {"groups": [{"prompt": "p", "responses": [text(12, 2 * i) for i in range(4)], "quality": [1.0] * 4}]}
        ).encode()
        host, port = base.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)))
        head = (
            "POST /v1/rewards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        deadline = time.monotonic() + 4
        while batcher.depth == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.depth == 3  # the first planner round: 3 pairs, queued
        sock.close()  # the client hangs up long before the batch's 5 s wait is over
        while batcher.depth and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.depth == 0
        assert batcher.stats.cancelled == 3
        assert batcher.stats.batches == 0  # no forward was spent on an answer nobody would read
