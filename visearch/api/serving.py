"""Serving an ASGI app: in the foreground (every ``visearch`` server) or on a free
loopback port from a thread (tests and benchmarks need the real HTTP server
beside their own code).

Every server goes through :func:`server_config`: no ``server`` banner and a
deadline for each request's line and headers (:func:`visearch.api.guard.guarded_protocol`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from streams.broker import free_port
from streams.errors import VisearchError
from streams.settings import Settings
from visearch.api.guard import guarded_protocol


class ServeError(VisearchError, RuntimeError):
    """The server did not start listening in time."""


def server_config(
    app: Any, host: str, port: int, settings: Settings | None = None
) -> uvicorn.Config:
    """uvicorn's configuration for every visearch HTTP server."""
    timeout_s = (settings or Settings()).http_header_timeout_s
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=guarded_protocol(timeout_s),
        server_header=False,
    )


def serve(app: Any, host: str, port: int, settings: Settings) -> None:
    """Serve ``app`` in the foreground until stopped (SIGINT / SIGTERM)."""
    uvicorn.Server(server_config(app, host, port, settings)).run()


@contextmanager
def serve_in_thread(
    app: Any, start_timeout_s: float = 30.0, settings: Settings | None = None
) -> Iterator[str]:
    """Serve ``app`` over HTTP until the block ends; yields its base URL."""
    server = uvicorn.Server(server_config(app, "127.0.0.1", free_port(), settings))
    thread = threading.Thread(target=server.run, name="http-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise ServeError("the HTTP server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)
