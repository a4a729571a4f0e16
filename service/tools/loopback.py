"""Runs an ASGI app under uvicorn on a loopback port in a thread: the benchmark's and the tests' server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


def loopback_socket() -> socket.socket:
    """A socket bound to a free loopback port, for uvicorn's `Server.run(sockets=[...])`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve_in_thread(app: Any, ready_path: str, timeout_s: float = 600.0) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread; yields the base URL once `ready_path` answers 200."""
    import httpx
    import uvicorn

    sock = loopback_socket()
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        # Keep-alive longer than any wait in the run: a server closing an idle pooled connection just as the
        # client reuses it reads as a dropped request (httpx ReadError) under a long one-pair-per-request queue.
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=3600,
            backlog=4096,
        )
    )
    # The server takes the socket already bound: a port found free and bound later may meanwhile be another
    # server's, whose /readyz would then answer for this one.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"bench-server-{port}")
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if httpx.get(base + ready_path, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"bench server on {base} did not become ready")
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
