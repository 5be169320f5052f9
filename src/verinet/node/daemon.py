"""The node daemon: the HTTP API and the chain loop in one asyncio program.

The loop polls market events, moves every active job one step, and claims earnings; a job
that can move (its input arrived, its reveal went through) wakes it at once instead of at the
next poll. Blocking work (chain calls, model runs, SQLite) runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator

import structlog
import uvicorn

from verinet.errors import TransientError, VerinetError
from verinet.node.api import node_app
from verinet.node.service import Node

SYNC_MODELS_EVERY = 5.0
"""Seconds between re-reading which models this node is registered to serve."""
TICK_EVERY = 0.5
"""Seconds after which jobs move even when no block came (deadlines pass on chain time)."""


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    """structlog to stderr, as JSON lines or for a console."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon's owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class NodeDaemon:
    """Serve `node`'s API and drive its jobs until `stop` is set."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.url: str | None = None
        self._ticked = self._synced = 0.0

    async def run(
        self,
        stop: asyncio.Event,
        *,
        ready: Callable[[str], None] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """Serve until `stop` is set; `sock` is a socket already bound for the API (else
        the settings' host and port are bound here)."""
        node = self.node
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def on_change() -> None:
            loop.call_soon_threadsafe(wake.set)

        node.on_change = on_change
        # A chain that pushes its blocks ends the wait at once; any other is polled.
        block = asyncio.Event()

        def on_block(_number: int) -> None:
            loop.call_soon_threadsafe(block.set)

        await asyncio.to_thread(node.sync_models)
        sock = sock or bind_socket(node.settings.host, node.settings.port)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        server = _Server(
            uvicorn.Config(
                node_app(node),
                log_config=None,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        unsubscribe = node.chain.subscribe_blocks(on_block)
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError(f"node API on {self.url} stopped during startup")
                await asyncio.sleep(0.01)
            node.log.info("node up", url=self.url, models=sorted(node.models))
            if ready is not None:
                ready(self.url)
            cycle = 0
            woken = True
            while not stop.is_set():
                wake.clear()
                block.clear()
                await asyncio.to_thread(self._cycle, cycle, woken)
                cycle += 1
                waits = [asyncio.ensure_future(e.wait()) for e in (stop, wake, block)]
                await asyncio.wait(
                    waits,
                    timeout=node.settings.chain.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken = wake.is_set()
                for task in waits:
                    task.cancel()
        finally:
            if unsubscribe is not None:
                unsubscribe()
            server.should_exit = True
            with contextlib.suppress(Exception):
                await serving
            sock.close()
            await asyncio.to_thread(node.close)

    def _cycle(self, cycle: int, woken: bool) -> None:
        """Read new events; move the jobs when something may have changed: a new block, a
        wake-up from the API or a step, or `TICK_EVERY` seconds (chain time moves on without
        blocks, and deadlines with it). A cycle with none of these costs one call."""
        node = self.node
        try:
            now = time.monotonic()
            if now - self._synced >= SYNC_MODELS_EVERY:
                self._synced = now
                if cycle:
                    node.sync_models()
            events_before = node.db.cursor()
            node.poll()
            moved = node.db.cursor() != events_before
            if moved or woken or now - self._ticked >= TICK_EVERY:
                self._ticked = now
                node.tick()
        except TransientError as exc:
            node.log.warning("chain unavailable; retrying", error=str(exc))
        except VerinetError as exc:
            node.log.error("cycle failed", error=str(exc), kind=type(exc).__name__)


PARENT_POLL_S = 1.0
"""How often a node started with ``exit_with_parent`` looks for its parent."""


def run_until_signalled(
    node: Node, *, ready: Callable[[str], None] | None = None, exit_with_parent: bool = False
) -> None:
    """Run the daemon in this process until SIGINT or SIGTERM, or with `exit_with_parent`
    until the process that started it is gone (a devnet killed outright, whose nodes would
    otherwise serve on, unowned)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def orphaned() -> None:
            if await watch_parent(stop, os.getppid(), PARENT_POLL_S):
                node.log.warning("the process that started this node exited; stopping")

        watcher = asyncio.ensure_future(orphaned()) if exit_with_parent else None
        try:
            await NodeDaemon(node).run(stop, ready=ready)
        finally:
            if watcher is not None:
                watcher.cancel()

    asyncio.run(main())


async def watch_parent(stop: asyncio.Event, parent: int, interval: float) -> bool:
    """Set `stop` once this process's parent is no longer `parent` (it exited, and this
    process was handed to another), looking every `interval` seconds; return whether it
    did, when `stop` is set either way."""
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    return False
