"""`darling-reward serve --grpc-port`: one process serves HTTP and gRPC, and SIGTERM stops both cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import httpx
from darling_client.proto import reward_pb2, reward_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.grpc.server import SERVICE_NAME
from tests.conftest import free_port


def _serving(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2
        )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_serve_runs_grpc_beside_http_and_stops_on_sigterm() -> None:
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DARLING_WARMUP": "false", "DARLING_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(http_port), "--grpc-port", str(grpc_port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            deadline = time.monotonic() + 180
            while not _serving(channel):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else "server exited"
                assert time.monotonic() < deadline, "gRPC never reported SERVING"
                time.sleep(0.25)
            assert httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=5).status_code == 200
            group = reward_pb2.RolloutGroup(
                prompt="p", responses=["one idea", "another idea"], quality=reward_pb2.DoubleList(values=[1, 1])
            )
            reply = reward_pb2_grpc.RewardServiceStub(channel).Score(
                reward_pb2.ScoreRequest(groups=[group]), timeout=60
            )
            assert len(reply.groups) == 1 and len(reply.groups[0].rollouts) == 2
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal it caught once shutdown is done, so a clean stop exits by SIGTERM.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        output = proc.stdout.read() if proc.stdout else ""
        assert "Traceback" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
