"""Running models for the node: in its own process when that is provably safe, in capped
worker processes otherwise.

A model file is untrusted input. The hub's static checks (`verinet.hub.safety`) refuse every
allocation they can see, but a shape computed at run time from an input is only known then;
that is what a worker process is for: its address space is capped (``RLIMIT_AS``), so a run
that makes onnxruntime ask for a huge allocation fails as `ExecutionFailed` in the worker
instead of taking the node down, and a worker that dies or overruns its deadline is replaced.

Isolation costs a round trip between processes on every run: ~65 µs on a 2-vCPU virtual
machine (waking a process on the other CPU is an inter-processor interrupt each way), ten
times a small model's run. So ``isolation="auto"`` (the default) decides per model, when it
is warmed: a model whose memory `verinet.hub.safety.memory_bound` proves to be at most
``inline_memory_mb`` runs in the node's process (a cap would have nothing to catch), any
other in a worker. ``"process"`` sends every model to workers, ``"thread"`` none (tests).

In the node's process, an async caller (`arun_validated`) runs a small request of a model
that has been fast so far right on the event loop, as a plain FastAPI + onnxruntime server
does; anything else goes to a thread. The deadline (`verinet.runtime.session`) stops an
overrunning run either way.

Each worker is a process of its own with one duplex pipe to the node and one request in flight
at a time. The pipe is the whole protocol: a pickled ``(method, args)`` goes down, a pickled
``(ok, value)`` comes back, ~3x cheaper per call than a ``ProcessPoolExecutor`` (its queues,
feeder and result threads), and an asyncio caller waits on the pipe itself: no thread hop.
A worker sees its node go by the pipe closing, so a node killed outright (SIGKILL, the OOM
killer) takes its workers with it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from verinet.errors import ExecutionFailed, ExecutionTimeout, MalformedEvidence
from verinet.hub.files import get_file
from verinet.hub.publish import load_manifest
from verinet.hub.safety import check_model, memory_bound
from verinet.hub.store import DiskStore
from verinet.node.config import Isolation
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import Array
from verinet.runtime.wire import group_to_json
from verinet.types import Cid, Hash32
from verinet.verification.optimistic import (
    Check,
    Evidence,
    Judgement,
    judge_step,
    links,
    step_evidence,
)

MiB = 1024 * 1024
GRACE = 5.0
"""Seconds past the execution timeout the node waits for a worker before it kills it (the
worker stops an overrunning run itself; this covers one that hangs outside onnxruntime)."""
ON_LOOP_BYTES = 64 * 1024
ON_LOOP_SECONDS = 0.001
"""An in-process run goes on the event loop when its inputs are at most this size and the
model's last such run took less than this; otherwise to a thread."""
INLINE_SEND = 256 * 1024
"""Requests up to this size are written to the pipe from the event loop; larger ones from a
thread, so a big input never stalls the loop while the worker drains the pipe."""
_PICKLE = pickle.HIGHEST_PROTOCOL


class TracedRun(NamedTuple):
    """What an optimistic run commits to, and the links a dispute is played over."""

    outputs: dict[str, Array]
    ops: int
    final: Hash32
    root: Hash32
    links: list[Hash32]
    step_hashes: list[Hash32]  # H_1 .. H_N


class _Models:
    """Checked models by manifest CID, loaded from a store on first use."""

    def __init__(self, store_root: str, timeout: float) -> None:
        self.store = DiskStore(store_root)
        self.timeout = timeout
        self.executors: dict[str, OnnxExecutor] = {}
        self.lock = threading.Lock()

    def get(self, manifest_cid: str) -> OnnxExecutor:
        with self.lock:
            executor = self.executors.get(manifest_cid)
            if executor is None:
                manifest = load_manifest(self.store, Cid(manifest_cid))
                model = get_file(self.store, manifest.model)
                executor = OnnxExecutor(model, manifest, timeout=self.timeout)
                self.executors[manifest_cid] = executor
            return executor

    def load(self, manifest_cid: str) -> None:
        self.get(manifest_cid)

    def memory_bound(self, manifest_cid: str) -> int | None:
        """`verinet.hub.safety.memory_bound` of a stored model under its manifest's policy."""
        manifest = load_manifest(self.store, Cid(manifest_cid))
        model = check_model(get_file(self.store, manifest.model))
        specs = [(spec.name, spec.dtype, spec.shape) for spec in manifest.inputs]
        return memory_bound(model, specs, manifest.input_policy.max_bytes)

    def run(self, manifest_cid: str, feeds: Mapping[str, Array]) -> dict[str, Array]:
        return self.get(manifest_cid).run_validated(feeds)

    def trace_step(
        self, manifest_cid: str, inputs: Mapping[str, Array], index: int
    ) -> dict[str, Any]:
        trace = self.get(manifest_cid).run_traced(inputs)
        if not 1 <= index <= trace.ops:
            raise IndexError(f"step {index} is outside 1..{trace.ops}")
        step = trace.step(index)
        return {
            "index": index,
            "ops": trace.ops,
            "op_type": step.op_type,
            "node_name": step.node_name,
            "inputs": list(step.inputs),
            "outputs": group_to_json(step.outputs),
            "op_hash": "0x" + step.op_hash.hex(),
            "link_before": "0x" + trace.links[index - 1].hex(),
            "link": "0x" + trace.links[index].hex(),
            "final": "0x" + trace.final.hex(),
            "root": "0x" + trace.root.hex(),
            "proof": ["0x" + s.hex() for s in step.proof.siblings],
        }

    def traced(self, manifest_cid: str, inputs: Mapping[str, Array]) -> TracedRun:
        """A traced run's outputs and its commitment (optimistic jobs)."""
        trace = self.get(manifest_cid).run_traced(inputs)
        return TracedRun(
            dict(trace.outputs), trace.ops, trace.final, trace.root, links(trace),
            list(trace.op_hashes),
        )  # fmt: skip

    def evidence(self, manifest_cid: str, inputs: Mapping[str, Array], step: int) -> bytes:
        """The JSON `Evidence` for step `step` of a traced run (a dispute's defender)."""
        return step_evidence(self.get(manifest_cid).run_traced(inputs), step).to_json()

    def judge(self, manifest_cid: str, evidence: bytes, terms: dict[str, Any]) -> Judgement:
        """A juror's `judge_step` on a defender's evidence (untrusted: it runs here, in a
        capped worker when the model is not run inline)."""
        executor = self.get(manifest_cid)
        try:
            parsed = Evidence.from_json(evidence)
        except MalformedEvidence as exc:
            return Judgement(False, Check.CLAIM, f"the evidence is malformed: {exc}")
        return judge_step(
            executor.model, executor.profile, evidence=parsed, timeout=self.timeout, **terms
        )


def _serve(conn: multiprocessing.connection.Connection, store_root: str, timeout: float,
           memory_limit: int | None) -> None:  # fmt: skip
    """A worker's life: cap the address space, then answer requests until the node goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle
    if memory_limit is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    models = _Models(store_root, timeout)
    while True:
        try:
            method, args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)  # the node is gone
        try:
            reply = pickle.dumps((True, getattr(models, method)(*args)), _PICKLE)
        except MemoryError:
            reply = pickle.dumps((False, MemoryError()), _PICKLE)
        except Exception as exc:  # every failure goes back to the node, typed
            try:
                reply = pickle.dumps((False, exc), _PICKLE)
            except Exception:  # one that does not pickle
                reply = pickle.dumps((False, ExecutionFailed(f"{type(exc).__name__}: {exc}")))
        try:
            conn.send_bytes(reply)
        except OSError:
            os._exit(0)


class _Worker:
    """One worker process and the node's end of its pipe."""

    def __init__(self, context: Any, args: tuple[str, float, int | None], index: int) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_serve, args=(child, *args), name=f"verinet-model-worker-{index}", daemon=True
        )
        self.process.start()
        child.close()  # the worker holds the only other end: its EOF is the node's exit

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(GRACE)
        self.conn.close()

    def stop(self) -> None:
        self.conn.close()  # EOF: the worker exits by itself
        self.process.join(GRACE)
        if self.process.is_alive():
            self.kill()


_DIED, _LATE = "died", "late"
"""A worker's non-answers (an answer is bytes)."""


def _unpack(raw: bytes) -> Any:
    ok, value = pickle.loads(raw)
    if ok:
        return value
    raise value


class ModelPool:
    """Runs published models by manifest CID, in capped worker processes or in threads.

    Thread-safe, and usable from an event loop without blocking it (`arun_validated`).
    At most `workers` processes, started on demand; a caller that finds none idle waits its
    turn (first come, first served, threads and coroutines alike).
    """

    def __init__(
        self,
        store_root: Path,
        *,
        isolation: Isolation = "auto",
        workers: int = 1,
        memory_limit_mb: int | None = 4096,
        inline_memory_mb: int = 256,
        timeout: float = 60.0,
    ) -> None:
        self._args = (str(store_root), timeout, memory_limit_mb * MiB if memory_limit_mb else None)
        self._deadline = timeout + GRACE
        self._size = workers
        self._isolation = isolation
        self._inline_limit = inline_memory_mb * MiB
        self._local = _Models(str(store_root), timeout)
        self._inline: dict[str, bool] = {}  # by manifest CID, decided when warmed
        self._fast: dict[str, bool] = {}  # whether its last small run beat ON_LOOP_SECONDS
        self._context = multiprocessing.get_context("forkserver")
        # The fork server imports onnxruntime and the runtime once; each worker forks from it
        # ready to load models, instead of importing them anew each start.
        self._context.set_forkserver_preload([__name__])
        self._lock = threading.Lock()
        self._warm_lock = threading.Lock()
        self._idle: deque[_Worker] = deque()
        self._waiters: deque[_Waiter] = deque()
        self._count = 0  # started and not discarded, idle or busy
        self._started = 0
        self._loaded: list[str] = []  # what every new worker loads before its first call
        self._closed = False

    # -- the public calls ----------------------------------------------------------------

    def warm(self, manifest_cid: str) -> None:
        """Start the workers and load the model in each, so no request pays for loading.
        Call it from a thread, not from an event loop that also runs `arun_validated`."""
        if self._runs_inline(manifest_cid, decide=True):
            self._local.load(manifest_cid)
            return
        with self._lock:
            if manifest_cid not in self._loaded:
                self._loaded.append(manifest_cid)
        load = pickle.dumps(("load", (manifest_cid,)), _PICKLE)
        with self._warm_lock:  # the only caller that holds more than one worker at a time
            held: list[_Worker] = []
            try:
                for _ in range(self._size):
                    worker = self._acquire()
                    outcome = self._exchange(worker, load)
                    if isinstance(outcome, str):
                        self._discard(worker)
                        raise self._failure(outcome)
                    held.append(worker)
                    _unpack(outcome)
            finally:
                for worker in held:
                    self._release(worker)

    def run_validated(self, manifest_cid: str, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """The model's outputs for inputs `validate_inputs` accepted against its manifest
        (raises `ExecutionFailed`)."""
        if self._runs_inline(manifest_cid):
            return self._local.run(manifest_cid, feeds)
        return self._submit("run", (manifest_cid, dict(feeds)))  # type: ignore[no-any-return]

    async def arun_validated(
        self, manifest_cid: str, feeds: Mapping[str, Array]
    ) -> dict[str, Array]:
        """`run_validated` for an event loop: the loop waits on the worker's pipe and never
        blocks on it."""
        if self._runs_inline(manifest_cid):
            if sum(a.nbytes for a in feeds.values()) > ON_LOOP_BYTES:
                return await asyncio.to_thread(self._local.run, manifest_cid, feeds)
            started = time.perf_counter()
            if self._fast.get(manifest_cid, False):
                outputs = self._local.run(manifest_cid, feeds)
            else:  # until a run shows the model is fast, keep it off the loop
                outputs = await asyncio.to_thread(self._local.run, manifest_cid, feeds)
            self._fast[manifest_cid] = time.perf_counter() - started < ON_LOOP_SECONDS
            return outputs
        request = pickle.dumps(("run", (manifest_cid, dict(feeds))), _PICKLE)
        worker = self._acquire_nowait() or await self._acquire_async()
        loop = asyncio.get_running_loop()
        try:
            if len(request) > INLINE_SEND:
                await asyncio.to_thread(worker.conn.send_bytes, request)
            else:
                worker.conn.send_bytes(request)
            readable: asyncio.Future[bool] = loop.create_future()
            fd = worker.conn.fileno()
            loop.add_reader(fd, _settle, readable, True)
            timer = loop.call_later(self._deadline, _settle, readable, False)
            try:
                answered = await readable
            finally:
                loop.remove_reader(fd)
                timer.cancel()
            outcome: bytes | str = worker.conn.recv_bytes() if answered else _LATE
        except (EOFError, OSError):
            outcome = _DIED
        except BaseException:
            self._discard(worker)  # cancelled mid-call: the pipe may hold half a conversation
            raise
        return self._finish(worker, outcome)  # type: ignore[no-any-return]

    def trace_step(
        self, manifest_cid: str, inputs: Mapping[str, Array], index: int
    ) -> dict[str, Any]:
        """Op `index` of a traced run on `inputs`, with its Merkle proof (JSON-ready)."""
        if self._runs_inline(manifest_cid):
            return self._local.trace_step(manifest_cid, inputs, index)
        step: dict[str, Any] = self._submit("trace_step", (manifest_cid, dict(inputs), index))
        return step

    def traced(self, manifest_cid: str, inputs: Mapping[str, Array]) -> TracedRun:
        """Run validated inputs traced: outputs, op count, h_N, Merkle root and links."""
        if self._runs_inline(manifest_cid):
            return self._local.traced(manifest_cid, inputs)
        return self._submit("traced", (manifest_cid, dict(inputs)))  # type: ignore[no-any-return]

    def evidence(self, manifest_cid: str, inputs: Mapping[str, Array], step: int) -> bytes:
        """A defender's evidence for `step` of its traced run, as JSON."""
        if self._runs_inline(manifest_cid):
            return self._local.evidence(manifest_cid, inputs, step)
        return self._submit("evidence", (manifest_cid, dict(inputs), step))  # type: ignore[no-any-return]

    def judge(self, manifest_cid: str, evidence: bytes, terms: dict[str, Any]) -> Judgement:
        """`judge_step` of untrusted evidence, where the model runs."""
        if self._runs_inline(manifest_cid):
            return self._local.judge(manifest_cid, evidence, terms)
        return self._submit("judge", (manifest_cid, evidence, terms))  # type: ignore[no-any-return]

    def runs_inline(self, manifest_cid: str) -> bool:
        """Whether the model runs in the node's own process (decided when it was warmed)."""
        return self._runs_inline(manifest_cid)

    def _runs_inline(self, manifest_cid: str, *, decide: bool = False) -> bool:
        if self._isolation != "auto":
            return self._isolation == "thread"
        inline = self._inline.get(manifest_cid)
        if inline is None:
            if not decide:
                return False  # not warmed: the safe side
            bound = self._local.memory_bound(manifest_cid)
            inline = bound is not None and bound <= self._inline_limit
            self._inline[manifest_cid] = inline
        return inline

    def close(self) -> None:
        """Stop the idle workers now and the busy ones when their call returns; callers
        still waiting get `ExecutionFailed`."""
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
            waiters, self._waiters = list(self._waiters), deque()
        for waiter in waiters:
            waiter.give(ExecutionFailed("the node is shutting down"))
        for worker in idle:
            worker.stop()

    # -- one call on one worker ----------------------------------------------------------

    def _submit(self, method: str, args: tuple[Any, ...]) -> Any:
        worker = self._acquire()
        try:
            outcome = self._exchange(worker, pickle.dumps((method, args), _PICKLE))
        except BaseException:
            self._discard(worker)
            raise
        return self._finish(worker, outcome)

    def _call(self, worker: _Worker, method: str, args: tuple[Any, ...]) -> Any:
        """A call on a worker the caller holds and keeps (it is discarded if it fails)."""
        outcome = self._exchange(worker, pickle.dumps((method, args), _PICKLE))
        if isinstance(outcome, str):
            raise self._failure(outcome)
        return _unpack(outcome)

    def _exchange(self, worker: _Worker, request: bytes) -> bytes | str:
        try:
            worker.conn.send_bytes(request)
            if not worker.conn.poll(self._deadline):
                return _LATE
            answer: bytes = worker.conn.recv_bytes()
            return answer
        except (EOFError, OSError):
            return _DIED

    def _finish(self, worker: _Worker, outcome: bytes | str) -> Any:
        if isinstance(outcome, str):
            self._discard(worker)
            raise self._failure(outcome)
        self._release(worker)
        try:
            return _unpack(outcome)
        except MemoryError:
            raise ExecutionFailed(
                f"the run needed more memory than the worker's cap of {self._cap_mb} MiB"
            ) from None

    def _failure(self, outcome: str) -> ExecutionFailed:
        if outcome == _LATE:
            return ExecutionTimeout(
                f"the model's worker did not answer within {self._deadline:g} s; it was "
                "stopped and will be replaced"
            )
        return ExecutionFailed(
            f"the model's worker process died (memory cap {self._cap_mb} MiB or a crash); "
            "it will be replaced"
        )

    @property
    def _cap_mb(self) -> int:
        return (self._args[2] or 0) // MiB

    # -- handing workers out -------------------------------------------------------------

    def _acquire_nowait(self) -> _Worker | None:
        with self._lock:
            return self._idle.popleft() if self._idle else None

    def _reserve(self, waiter: _Waiter) -> _Worker | bool:
        """An idle worker; True when the caller should start one; False once `waiter` is
        queued."""
        with self._lock:
            if self._closed:
                raise ExecutionFailed("the node is shutting down")
            if self._idle:
                return self._idle.popleft()
            if self._count < self._size:
                self._count += 1
                return True
            self._waiters.append(waiter)
            return False

    def _acquire(self) -> _Worker:
        waiter = _Waiter(None, self._release)
        got = self._reserve(waiter)
        if got is True:
            return self._start()
        if got is False:
            return waiter.wait()
        return got

    async def _acquire_async(self) -> _Worker:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop, self._release)
        got = self._reserve(waiter)
        if got is True:
            starting = loop.run_in_executor(None, self._start)
            try:
                return await asyncio.shield(starting)
            except asyncio.CancelledError:
                starting.add_done_callback(self._release_started)
                raise
        if got is False:
            return await waiter.wait_async()
        return got

    def _release_started(self, starting: asyncio.Future[_Worker]) -> None:
        if not starting.cancelled() and starting.exception() is None:
            self._release(starting.result())

    def _start(self) -> _Worker:
        """A new worker, with every warmed model loaded (the caller has counted it)."""
        try:
            with self._lock:
                self._started += 1
                index, models = self._started, list(self._loaded)
            worker = _Worker(self._context, self._args, index)
            try:
                for manifest_cid in models:
                    self._call(worker, "load", (manifest_cid,))
            except BaseException:
                worker.kill()
                raise
            return worker
        except BaseException as exc:
            self._uncount(exc)
            raise

    def _uncount(self, failure: BaseException | None) -> None:
        """One worker fewer. If callers are waiting, the first of them gets a fresh one;
        after a failed start with none left, they all get its error."""
        with self._lock:
            self._count -= 1
            if not self._waiters:
                return
            if failure is None and not self._closed:
                self._count += 1
                waiter = self._waiters.popleft()
            elif self._count == 0:
                waiters, self._waiters = list(self._waiters), deque()
                error = _start_error(failure)
                for waiting in waiters:
                    waiting.give(error)
                return
            else:
                return
        threading.Thread(
            target=self._start_for, args=(waiter,), name="verinet-model-worker-start", daemon=True
        ).start()

    def _start_for(self, waiter: _Waiter) -> None:
        try:
            worker = self._start()
        except BaseException as exc:  # handed to the waiter
            waiter.give(_start_error(exc))
            return
        if not waiter.give(worker):
            self._release(worker)

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            while self._waiters:
                if self._waiters.popleft().give(worker):
                    return
            if not self._closed:
                self._idle.append(worker)
                return
        worker.stop()

    def _discard(self, worker: _Worker) -> None:
        """Drop a worker whose state is unknown (dead, late, or cut off mid-call)."""
        worker.kill()
        self._uncount(None)


class _Waiter:
    """A caller waiting for a worker: a thread (``loop`` None) or a coroutine on ``loop``."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None, release: Callable[[_Worker], None]
    ) -> None:
        self.loop = loop
        self.release = release
        self.event = threading.Event()
        self.future: asyncio.Future[_Worker] | None = loop.create_future() if loop else None
        self.handed: _Worker | BaseException | None = None

    def give(self, item: _Worker | BaseException) -> bool:
        """Hand a worker (or an error) over; False if the waiter has gone (cancelled)."""
        if self.future is None:
            self.handed = item
            self.event.set()
            return True
        if self.future.done():
            return False
        assert self.loop is not None
        try:
            if _running_loop() is self.loop:  # a release on the waiter's own loop
                self.loop.call_soon(self._deliver, item)
            else:
                self.loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # the loop is closed
            return False
        self.handed = item
        return True

    def _deliver(self, item: _Worker | BaseException) -> None:
        assert self.future is not None
        if self.future.done():  # cancelled in between: the worker goes back
            if isinstance(item, _Worker):
                self.release(item)
            return
        if isinstance(item, BaseException):
            self.future.set_exception(item)
        else:
            self.future.set_result(item)

    def wait(self) -> _Worker:
        self.event.wait()
        if isinstance(self.handed, BaseException):
            raise self.handed
        assert self.handed is not None
        return self.handed

    async def wait_async(self) -> _Worker:
        assert self.future is not None
        try:
            return await self.future
        except asyncio.CancelledError:
            if self.future.done() and not self.future.cancelled():
                self.release(self.future.result())
            raise


def _start_error(failure: BaseException | None) -> ExecutionFailed:
    if isinstance(failure, ExecutionFailed):
        return failure
    return ExecutionFailed(f"could not start a model worker: {failure!r}")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
