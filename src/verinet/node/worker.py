"""Running models for the node: always in capped worker processes, never in the process that
holds the node's keys, its job database and its chain loop.

A model file is untrusted input for a native runtime. The hub's static checks
(`verinet.hub.safety`) refuse every allocation and construct they can see, but they cannot
prove that onnxruntime will not trap (int32/int64 ``Div`` or ``Mod`` of INT_MIN by -1 raises
SIGFPE and ends the process), that a shape computed at run time stays small, or that a
kernel has no bug. So every run happens in a worker process: its address space is capped
(``RLIMIT_AS``), a run that overruns its deadline is stopped, and a worker that dies (a
signal, the cap) fails only the request it was running (`ExecutionFailed`, naming the
signal); the calls queued behind it go to a fresh worker and the node keeps serving.
``isolation="thread"`` runs models in the node's own threads, for tests that need no
isolation.

Isolation must not cost the throughput of a plain FastAPI + onnxruntime server, so the
channel is cheap:

- A worker is a process forked from a fork server that has already imported onnxruntime and
  the runtime, with every warmed model loaded before its first call, and one duplex pipe to
  the node: a pickled ``(method, args)`` goes down, a pickled ``(ok, value)`` comes back.
- Coroutines pipeline their calls: the event loop writes a request and goes on serving HTTP;
  it reads answers from the pipe (``add_reader``) in the order they were sent. A busy worker
  never waits for the node's loop between two requests, and a busy loop never waits for the
  worker. Bytes in flight are bounded so that a write never blocks.
- Waking a sleeping process on another CPU costs tens of µs on a virtual machine, each way.
  A worker therefore watches its pipe for `WORKER_SPIN` after each answer, and a call alone
  on its worker, for a model that answered fast last time, waits `NODE_SPIN` on the pipe
  itself before it yields to the loop, as a run on the loop would have.
- Threads (the chain loop, disputes) take a worker whole once its pipeline drains.

A worker sees its node go by the pipe closing, so a node killed outright (SIGKILL, the OOM
killer) takes its workers with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from verinet.errors import ExecutionFailed, ExecutionTimeout
from verinet.node import _channel
from verinet.node._channel import Hashed
from verinet.node._process import Models, TracedRun
from verinet.node._workers import (
    GRACE,
    PIPELINE_BYTES,
    Frame,
    _Call,
    _resolve,
    _running_loop,
    _unread,
    _Worker,
)
from verinet.node.config import Isolation
from verinet.runtime.tensors import Array
from verinet.verification.optimistic import (
    Judgement,
)

MiB = 1024 * 1024
ON_LOOP_BYTES = 64 * 1024
"""``isolation="thread"``: larger inputs run in a thread, smaller ones on the event loop."""
NODE_SPIN = (0.0005, 0.002)
LOOK_EVERY = 8
"""For a `lone` call (the node serves one request at a time: one client), the worker stays
awake for `WORKER_SPIN` seconds after answering, and the loop waits on the socket for the
answer: 1.5 times the last lone call's round trip, within `NODE_SPIN`'s bounds (seconds).
Waking a sleeping process costs tens of µs on a 2-vCPU virtual machine, twice a call: more
than a small model's run. Under concurrency nobody spins: calls pipeline instead, and a
spinning process would take a CPU the others need. One lone call in `LOOK_EVERY` does not
spin on the loop, so that requests that came meanwhile get served and show the caller it
is no longer alone."""
CHECK_EVERY = 1.0
"""Seconds between checks of a busy worker's oldest call against the deadline."""


_DIED, _LATE = "died", "late"
"""A worker's non-answers (an answer is a frame)."""


class ModelPool:
    """Runs published models by manifest CID, in capped worker processes (or, for tests, in
    threads of the node's process: ``isolation="thread"``).

    Thread-safe, and usable from an event loop without blocking it (`arun_validated`).
    At most `workers` processes, started on demand. Coroutines pipeline their calls onto the
    least busy worker (up to `PIPELINE_DEPTH` calls and `PIPELINE_BYTES` bytes each, so a
    write never waits for the worker); threads take a worker whole, once its pipeline drains.
    """

    def __init__(
        self,
        store_root: Path,
        *,
        isolation: Isolation = "process",
        workers: int = 1,
        memory_limit_mb: int | None = 4096,
        timeout: float = 60.0,
    ) -> None:
        self._args = (str(store_root), timeout, memory_limit_mb * MiB if memory_limit_mb else None)
        self._deadline = timeout + GRACE
        self._size = workers
        self._local = Models(str(store_root), timeout) if isolation == "thread" else None
        self._context = multiprocessing.get_context("forkserver")
        # The fork server imports onnxruntime and the runtime once; each worker forks from it
        # ready to load models, instead of importing them anew each start.
        self._context.set_forkserver_preload(["verinet.node._process"])
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a worker was released or drained
        self._workers: list[_Worker] = []
        self._pending: deque[_Call] = deque()  # calls from coroutines waiting for a worker
        self._pending_loop: asyncio.AbstractEventLoop | None = None
        self._starting = 0
        self._started = 0
        self._lone_calls = 0  # lone calls in a row
        self._lone_rtt = 0.0  # the last lone call's round trip, seconds
        self._loaded: list[str] = []  # what every new worker loads before its first call
        self._closed = False

    # -- the public calls ----------------------------------------------------------------

    def warm(self, manifest_cid: str) -> None:
        """Start the workers and load the model in each, so no request pays for loading.
        Call it from a thread, not from an event loop that also runs `arun_validated`."""
        if self._local is not None:
            self._local.load(manifest_cid)
            return
        with self._lock:
            added = manifest_cid not in self._loaded
            if added:
                self._loaded.append(manifest_cid)
            existing = list(self._workers)
        load = _channel.call_request("load", manifest_cid)
        try:
            for worker in existing:  # started before this model was known
                if self._take(worker) is worker:
                    self._finish(worker, self._exchange(worker, load))
            while True:
                with self._lock:
                    if self._closed or len(self._workers) + self._starting >= self._size:
                        return
                    self._starting += 1
                self._release(self._start())
        except BaseException:
            if added:  # else every worker started from now on would fail to load it
                with self._lock, contextlib.suppress(ValueError):
                    self._loaded.remove(manifest_cid)
            raise

    def run_validated(self, manifest_cid: str, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """The model's outputs for inputs `validate_inputs` accepted against its manifest
        (raises `ExecutionFailed`)."""
        if self._local is not None:
            return self._local.run(manifest_cid, feeds)
        return self._submit(_channel.run_request(manifest_cid, feeds))  # type: ignore[no-any-return]

    async def arun_validated(
        self, manifest_cid: str, feeds: Mapping[str, Array]
    ) -> dict[str, Array]:
        """`run_validated` for an event loop: the call is pipelined onto a worker and the
        loop reads the answer from the socket; it never blocks on a worker that is busy."""
        if self._local is not None:
            if sum(a.nbytes for a in feeds.values()) > ON_LOOP_BYTES:
                return await asyncio.to_thread(self._local.run, manifest_cid, feeds)
            return self._local.run(manifest_cid, feeds)
        return await self._acall(_channel.run_request(manifest_cid, feeds))  # type: ignore[no-any-return]

    async def adirect(
        self, manifest_cid: str, inputs: Mapping[str, Array], *, lone: bool = False
    ) -> Hashed:
        """A direct call's whole work in the worker: validate `inputs` against the manifest
        (`InvalidInput`), run, and hash inputs and outputs. `lone`: the caller knows that no
        other request is being served (see `NODE_SPIN`)."""
        if self._local is not None:
            if sum(a.nbytes for a in inputs.values()) > ON_LOOP_BYTES:
                return await asyncio.to_thread(self._local.direct, manifest_cid, inputs)
            return self._local.direct(manifest_cid, inputs)
        request = _channel.run_request(manifest_cid, inputs, direct=True, awake=lone)
        return await self._acall(request, lone=lone)  # type: ignore[no-any-return]

    async def _acall(self, request: bytes, *, lone: bool = False) -> Any:
        """One call from a coroutine: pipelined, or alone from a thread if it is big."""
        if len(request) > PIPELINE_BYTES:  # too big to pipeline: a thread sends it alone
            return await asyncio.to_thread(self._submit, request)
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future(), request)
        with self._lock:
            if self._closed:
                raise ExecutionFailed("the node is shutting down")
            self._pending.append(call)
            self._pending_loop = loop
            self._pump(loop)
            sent = [w for w in self._workers if w.inflight and w.inflight[0] is call]
        self._lone_calls = self._lone_calls + 1 if lone else 0
        started = time.monotonic()
        if sent and self._lone_calls % LOOK_EVERY:
            low, high = NODE_SPIN
            self._spin(sent[0], call, started + min(high, max(low, 1.5 * self._lone_rtt)))
        try:
            frame = await call.future
        except asyncio.CancelledError:
            call.abandoned = True
            with self._lock, contextlib.suppress(ValueError):
                self._pending.remove(call)
            raise
        if lone:
            self._lone_rtt = time.monotonic() - started
        return self._result(frame)

    def trace_step(
        self, manifest_cid: str, inputs: Mapping[str, Array], index: int
    ) -> dict[str, Any]:
        """Op `index` of a traced run on `inputs`, with its Merkle proof (JSON-ready)."""
        if self._local is not None:
            return self._local.trace_step(manifest_cid, inputs, index)
        return self._call("trace_step", manifest_cid, dict(inputs), index)  # type: ignore[no-any-return]

    def traced(self, manifest_cid: str, inputs: Mapping[str, Array]) -> TracedRun:
        """Run validated inputs traced: outputs, op count, h_N, Merkle root and links."""
        if self._local is not None:
            return self._local.traced(manifest_cid, inputs)
        return self._call("traced", manifest_cid, dict(inputs))  # type: ignore[no-any-return]

    def evidence(self, manifest_cid: str, inputs: Mapping[str, Array], step: int) -> bytes:
        """A defender's evidence for `step` of its traced run, as JSON."""
        if self._local is not None:
            return self._local.evidence(manifest_cid, inputs, step)
        return self._call("evidence", manifest_cid, dict(inputs), step)  # type: ignore[no-any-return]

    def judge(self, manifest_cid: str, evidence: bytes, terms: dict[str, Any]) -> Judgement:
        """`judge_step` of untrusted evidence, where the model runs."""
        if self._local is not None:
            return self._local.judge(manifest_cid, evidence, terms)
        return self._call("judge", manifest_cid, evidence, terms)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the idle workers now and the busy ones when their calls return; callers
        still waiting get `ExecutionFailed`."""
        with self._lock:
            self._closed = True
            calls, self._pending = list(self._pending), deque()
            idle = [w for w in self._workers if not w.taken]
            for worker in idle:
                self._workers.remove(worker)
                _unread(worker)
                calls.extend(worker.inflight)
                worker.inflight.clear()
            self._changed.notify_all()
        for call in calls:
            _resolve(call, ExecutionFailed("the node is shutting down"))
        for worker in idle:
            worker.stop()

    # -- threads: a worker taken whole -----------------------------------------------------

    def _call(self, method: str, *args: Any) -> Any:
        return self._submit(_channel.call_request(method, *args))

    def _submit(self, request: bytes) -> Any:
        worker = self._take()
        assert worker is not None  # only a named worker can be gone
        try:
            outcome = self._exchange(worker, request)
        except BaseException:
            self._discard(worker)
            raise
        return self._finish(worker, outcome)

    def _take(self, only: _Worker | None = None) -> _Worker | None:
        """A worker this thread holds alone: an idle one, a new one, or the least busy one
        once its pipeline drains. With `only`, that worker, or None if it is gone."""
        with self._lock:
            while True:
                if self._closed:
                    raise ExecutionFailed("the node is shutting down")
                self._drop_orphans()
                if only is not None and only not in self._workers:
                    return None
                free = [w for w in ([only] if only else self._workers) if not w.taken]
                idle = [w for w in free if not w.inflight]
                if idle:
                    worker = idle[0]
                    worker.taken, worker.claimed = True, False
                    _unread(worker)  # this thread reads its answers now
                    return worker
                if only is None and len(self._workers) + self._starting < self._size:
                    self._starting += 1
                    break
                if free and not any(w.claimed for w in free):
                    # No new pipelined calls for the least busy one: its reader wakes this
                    # thread once its pipeline drains.
                    min(free, key=lambda w: len(w.inflight)).claimed = True
                self._changed.wait()
        return self._start()

    def _exchange(self, worker: _Worker, request: bytes) -> Frame | str:
        try:
            _channel.send(worker.fd, request)
            frame = worker.reader.next(time.monotonic() + self._deadline)
        except (EOFError, OSError):
            return _DIED
        return _LATE if frame is None else frame

    def _finish(self, worker: _Worker, outcome: Frame | str) -> Any:
        if isinstance(outcome, str):
            self._discard(worker)
            raise self._failure(outcome, worker)
        if outcome[0] & _channel.RETIRE:
            self._discard(worker)
        else:
            self._release(worker)
        return self._result(outcome)

    def _result(self, frame: Frame) -> Any:
        try:
            return _channel.result(*frame)
        except MemoryError:
            raise ExecutionFailed(
                f"the run needed more memory than the worker's cap of {self._cap_mb} MiB"
            ) from None

    def _failure(self, outcome: str, worker: _Worker) -> ExecutionFailed:
        if outcome == _LATE:
            return ExecutionTimeout(
                f"the model's worker did not answer within {self._deadline:g} s; it was "
                "stopped and will be replaced"
            )
        return ExecutionFailed(
            f"the model's worker process died running this request ({worker.death()}: a "
            f"native crash in the model, or its memory cap of {self._cap_mb} MiB); it will "
            "be replaced"
        )

    @property
    def _cap_mb(self) -> int:
        return (self._args[2] or 0) // MiB

    # -- coroutines: calls pipelined onto workers --------------------------------------------

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send pending calls to workers that accept them (under the lock); start a worker
        when none does and the pool has room."""
        self._drop_orphans()
        while self._pending:
            call = self._pending[0]
            if call.abandoned:
                self._pending.popleft()
                continue
            size = len(call.request)
            open_ = [w for w in self._workers if w.accepts(loop, size)]
            if not open_:
                if len(self._workers) + self._starting < self._size:
                    self._starting += 1
                    loop.run_in_executor(None, self._start_for, loop)
                return
            self._pending.popleft()
            self._send(min(open_, key=lambda w: len(w.inflight)), call, loop)

    def _send(self, worker: _Worker, call: _Call, loop: asyncio.AbstractEventLoop) -> None:
        if worker.loop is not loop:
            _unread(worker)
            worker.loop = loop
            loop.add_reader(worker.fd, self._on_readable, worker)
        if not worker.inflight:
            worker.head_since = time.monotonic()
            if worker.timer is None:
                worker.timer = loop.call_later(CHECK_EVERY, self._check, worker)
        worker.inflight.append(call)
        worker.queued += len(call.request)
        worker.outbox.append(call.request)
        if len(worker.inflight) == 1:
            self._flush(worker)  # an idle worker: now
        elif len(worker.outbox) == 1:
            # A busy one: with the calls the loop sends before it next polls, in one write
            # (each write that wakes the worker costs tens of µs; this is one wake a burst).
            loop.call_soon(self._flush_locked, worker)

    def _flush(self, worker: _Worker) -> None:
        """Write `worker`'s waiting requests (under the lock); never blocks: PIPELINE_BYTES
        fit the socket's buffer."""
        if not worker.outbox or worker not in self._workers:
            return
        data = b"".join(worker.outbox)
        worker.outbox.clear()
        try:
            _channel.send(worker.fd, data)
        except OSError:
            if worker.loop is not None:
                worker.loop.call_soon(self._lost, worker, _DIED)

    def _flush_locked(self, worker: _Worker) -> None:
        with self._lock:
            self._flush(worker)

    def _on_readable(self, worker: _Worker) -> None:
        """Answers are ready on `worker`'s socket: hand each to its call, in order."""
        done: list[tuple[_Call, Frame]] = []
        with self._lock:
            if worker.taken or worker.loop is not _running_loop():
                return  # a thread reads it now, or a reader being removed
            try:
                alive = worker.reader.fill()
            except OSError:
                alive = False
            retired = False
            for frame in worker.reader.frames():
                if not worker.inflight:
                    alive = False  # an answer nobody asked for: the channel is broken
                    break
                call = worker.inflight.popleft()
                worker.queued -= len(call.request)
                worker.head_since = time.monotonic()
                done.append((call, frame))
                if frame[0] & _channel.RETIRE:
                    retired = True  # it answered and exits: the calls behind go elsewhere
                    break
            if alive and not retired:
                if not worker.inflight and (worker.claimed or self._closed):
                    self._changed.notify_all()  # a thread waits for it, or close() does
                elif self._pending and (loop := self._pending_loop) and loop is worker.loop:
                    self._pump(loop)
                elif not worker.inflight:
                    self._wake()  # the waiting calls are another loop's: it may have it now
        for call, frame in done:
            _resolve(call, frame)
        if retired:
            self._lost(worker, None)
        elif not alive:
            self._lost(worker, _DIED)

    def _spin(self, worker: _Worker, call: _Call, until: float) -> None:
        """Wait until `until` (`time.monotonic`) on `worker`'s socket for `call`'s answer, on
        the loop (a lone client's call: the loop has nothing else to do)."""
        while not call.future.done() and time.monotonic() < until:
            if worker.ready.poll(0):
                self._on_readable(worker)

    def _check(self, worker: _Worker) -> None:
        """While `worker` is busy, once a `CHECK_EVERY`: a call past its deadline (the worker
        hangs outside onnxruntime's own deadline) loses the worker."""
        worker.timer = None
        if worker not in self._workers or not worker.inflight or worker.loop is None:
            return
        if time.monotonic() - worker.head_since > self._deadline:
            self._lost(worker, _LATE)
            return
        worker.timer = worker.loop.call_later(CHECK_EVERY, self._check, worker)

    def _lost(self, worker: _Worker, outcome: str | None) -> None:
        """`worker` died or overran: fail the call it was running (unless `outcome` is None:
        it retired after its last answer), kill it, and send the calls queued behind it to
        other workers."""
        with self._lock:
            if worker not in self._workers:
                return
            self._workers.remove(worker)
            calls, worker.inflight = list(worker.inflight), deque()
            loop = _unread(worker)
            failed = calls[:1] if outcome is not None else []
            self._pending.extendleft(reversed(calls[len(failed) :]))
            self._changed.notify_all()
        worker.kill()
        if failed and outcome is not None:
            _resolve(failed[0], self._failure(outcome, worker))
        if loop is not None and not loop.is_closed():
            with self._lock:
                self._pump(loop)

    def _start_for(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a worker for the pending calls of `loop` (in an executor thread)."""
        try:
            worker = self._start()
        except ExecutionFailed as exc:
            with self._lock:
                pending, self._pending = list(self._pending), deque()
            for call in pending:
                _resolve(call, exc)
            return
        self._release(worker)

    # -- the workers' lives ----------------------------------------------------------------

    def _start(self) -> _Worker:
        """A new worker, taken by the caller, with every warmed model loaded (the caller
        counted it in ``_starting``); raises `ExecutionFailed` if it cannot start."""
        worker = None
        try:
            with self._lock:
                self._started += 1
                index, models = self._started, list(self._loaded)
            worker = _Worker(self._context, self._args, index)
            for manifest_cid in models:
                outcome = self._exchange(worker, _channel.call_request("load", manifest_cid))
                if isinstance(outcome, str):
                    raise self._failure(outcome, worker)
                _channel.result(*outcome)
        except BaseException as exc:
            if worker is not None:
                worker.kill()
            with self._lock:
                self._starting -= 1
                self._changed.notify_all()
                self._wake()  # calls that waited on this start: another one, or their failure
            if isinstance(exc, ExecutionFailed):
                raise
            raise ExecutionFailed(f"could not start a model worker: {exc!r}") from exc
        with self._lock:
            self._starting -= 1
            if not self._closed:
                worker.taken = True
                self._workers.append(worker)
                return worker
        worker.stop()
        raise ExecutionFailed("the node is shutting down")

    def _release(self, worker: _Worker) -> None:
        """A thread is done with `worker`: to a waiting thread, else to pending calls."""
        with self._lock:
            worker.taken = worker.claimed = False
            if not self._closed:
                self._changed.notify_all()
                self._wake()
                return
            self._workers.remove(worker)
        worker.stop()

    def _wake(self) -> None:
        """Have the loop of the calls waiting for a worker send them (under the lock): a
        worker is free, or the pool has room for one."""
        loop = self._pending_loop
        if self._pending and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._pump_locked, loop)

    def _pump_locked(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._pump(loop)

    def _discard(self, worker: _Worker) -> None:
        """Drop a worker whose state is unknown (dead, late, or cut off mid-call)."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            self._changed.notify_all()
            self._wake()
        worker.kill()

    def _drop_orphans(self) -> None:
        """Kill the workers (under the lock) whose calls in flight are read by an event loop
        since closed: nobody will take their answers, so they would never drain. Calls of
        a live loop among them are sent again."""
        for worker in [w for w in self._workers if w.inflight and w.loop and w.loop.is_closed()]:
            self._workers.remove(worker)
            live = [c for c in worker.inflight if not c.future.get_loop().is_closed()]
            worker.inflight.clear()
            _unread(worker)
            worker.kill()  # SIGKILL: its join is short
            self._pending.extendleft(reversed(live))
            self._wake()
