"""Run an ASGI app with uvicorn on loopback in a background thread (tests and local nodes)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

START_DEADLINE = 10.0
"""Seconds to wait for the server to accept connections before giving up."""
STOP_DEADLINE = 10.0
"""Seconds to wait for a graceful stop before forcing one (and again after forcing)."""


@contextlib.contextmanager
def serve(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` on `host`:`port` (0: a free port) and yield its base URL.

    The socket is bound here, before uvicorn starts, so the port is known and held from the
    start: nothing else can take it between choosing and binding. The server stops when the
    block exits; a request handler that never finishes is cancelled after the grace period.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    failure: list[BaseException] = []
    thread: threading.Thread | None = None
    # log_config=None: do not reconfigure the process's logging, which belongs to the embedder.
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=int(STOP_DEADLINE / 2),
    )
    server = uvicorn.Server(config)

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # uvicorn calls sys.exit when the app's startup fails
            failure.append(exc)

    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound_port: int = sock.getsockname()[1]
        thread = threading.Thread(target=run, name=f"uvicorn:{bound_port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_DEADLINE
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"server on port {bound_port} failed to start: {failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on port {bound_port} not up after {START_DEADLINE} s")
            # Waiting on the thread (not a bare sleep) returns at once if startup crashes.
            thread.join(0.005)
        url_host = f"[{host}]" if family == socket.AF_INET6 else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        if thread is not None:
            thread.join(STOP_DEADLINE)
            if thread.is_alive():
                server.force_exit = True
                thread.join(STOP_DEADLINE)
        sock.close()  # uvicorn closes it on a clean stop; this covers a failed start
