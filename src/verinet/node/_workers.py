"""The node's handle on one model worker process, and the calls in flight on it
(`verinet.node.worker.ModelPool` hands them out)."""

from __future__ import annotations

import asyncio
import contextlib
import select
import signal
import threading
from collections import deque
from typing import Any

from verinet.node import _channel
from verinet.node._process import OUT_OF_MEMORY, serve

GRACE = 5.0
"""Seconds past the execution timeout the node waits for a worker before it kills it (the
worker stops an overrunning run itself; this covers one that hangs outside onnxruntime)."""
PIPELINE_DEPTH = 64
PIPELINE_BYTES = 96 * 1024
"""At most this many calls, and bytes of requests, in flight on one worker's socket: its
buffer holds them all, so the event loop's write never waits for a busy worker. A request
larger than this goes alone, written from a thread."""

Frame = tuple[int, memoryview]


class _Call:
    """One request pipelined onto a worker, and the future its coroutine awaits."""

    __slots__ = ("abandoned", "future", "request")

    def __init__(self, future: asyncio.Future[Frame], request: bytes) -> None:
        self.future = future
        self.request = request
        self.abandoned = False  # its caller was cancelled; the answer is read and dropped


_REAPING = threading.Lock()
"""Held to start, poll or join a worker process. `Process.start` polls every child the
process has; two threads polling one forkserver child at once can both see its exit, and
the one that reads second records status 255, losing the signal that ended it."""


class _Worker:
    """One worker process and the node's end of its socket pair.

    Coroutines pipeline calls onto it (``inflight``, answered in order, read by the event
    loop ``loop``); a thread takes it whole (``taken``) once nothing is in flight, and
    ``claimed`` stops new pipelined calls meanwhile so that the thread gets it soon."""

    def __init__(self, context: Any, args: tuple[str, float, int | None], index: int) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=serve, args=(child, *args), name=f"verinet-model-worker-{index}", daemon=True
        )
        with _REAPING:
            self.process.start()
        child.close()  # the worker holds the only other end: its EOF is the node's exit
        self.fd = self.conn.fileno()
        self.reader = _channel.FrameReader(self.fd)
        self.ready = select.poll()
        self.ready.register(self.fd, select.POLLIN)
        self.inflight: deque[_Call] = deque()
        self.queued = 0  # request bytes in flight
        self.outbox: list[bytes] = []  # requests in flight not yet written
        self.head_since = 0.0  # when the oldest call in flight reached the worker's turn
        self.loop: asyncio.AbstractEventLoop | None = None  # whose reader reads the answers
        self.timer: asyncio.TimerHandle | None = None  # the overrun check while busy
        self.taken = False
        self.claimed = False

    def accepts(self, loop: asyncio.AbstractEventLoop, size: int) -> bool:
        """Whether a call of `size` bytes from `loop` may be pipelined onto this worker now."""
        if self.taken or self.claimed:
            return False
        if not self.inflight:
            return True
        return (
            self.loop is loop
            and len(self.inflight) < PIPELINE_DEPTH
            and self.queued + size <= PIPELINE_BYTES
        )

    def death(self) -> str:
        """Why the process ended, once it has (for the caller's error)."""
        with _REAPING:
            self.process.join(GRACE)
            code = self.process.exitcode
        if code == OUT_OF_MEMORY:
            return "out of memory reading the request"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def kill(self) -> None:
        with _REAPING:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(GRACE)
        self.conn.close()

    def stop(self) -> None:
        self.conn.close()  # EOF: the worker exits by itself
        with _REAPING:
            self.process.join(GRACE)
            alive = self.process.is_alive()
        if alive:
            self.kill()


def _unread(worker: _Worker) -> asyncio.AbstractEventLoop | None:
    """Stop `worker`'s loop reading its socket, from any thread; the loop it had."""
    loop, worker.loop = worker.loop, None
    if worker.timer is not None:
        worker.timer.cancel()
        worker.timer = None
    if loop is not None and not loop.is_closed():
        if _running_loop() is loop:
            loop.remove_reader(worker.fd)
        else:
            loop.call_soon_threadsafe(loop.remove_reader, worker.fd)
    return loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(call: _Call, outcome: Frame | BaseException) -> None:
    """Settle `call` with an answer or an error, from any thread."""
    future = call.future
    loop = future.get_loop()
    if future.done() or loop.is_closed():
        return
    if _running_loop() is loop:
        _settle(future, outcome)
    else:
        loop.call_soon_threadsafe(_settle, future, outcome)


def _settle(future: asyncio.Future[Frame], outcome: Frame | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
