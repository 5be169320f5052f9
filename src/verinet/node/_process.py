"""What runs inside a model worker process: checked models loaded from the node's store, and
the loop that answers the node's requests in order (`verinet.node.worker` is the node's side).

A worker holds no keys, no job database and no chain: a model that traps or runs out of
memory ends this process only.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import select
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from verinet.errors import MalformedEvidence
from verinet.hub.files import get_file
from verinet.hub.publish import load_manifest
from verinet.hub.store import DiskStore
from verinet.node import _channel
from verinet.node._channel import Hashed
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.session import start_watchdog
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

WORKER_SPIN = 0.001
"""Seconds a worker watches its socket after answering a `lone` call (see
`verinet.node.worker.NODE_SPIN`)."""
OUT_OF_MEMORY = 3
"""A worker's exit status when a request does not fit its memory cap."""


class TracedRun(NamedTuple):
    """What an optimistic run commits to, and the links a dispute is played over."""

    outputs: dict[str, Array]
    ops: int
    final: Hash32
    root: Hash32
    links: list[Hash32]
    step_hashes: list[Hash32]  # H_1 .. H_N


class Models:
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

    def run(self, manifest_cid: str, feeds: Mapping[str, Array]) -> dict[str, Array]:
        return self.get(manifest_cid).run_validated(feeds)

    def direct(self, manifest_cid: str, inputs: Mapping[str, Array]) -> Hashed:
        """Validate `inputs` against the manifest, run, and hash both sides: the work of a
        direct call, done here rather than on the node's event loop."""
        executor = self.get(manifest_cid)
        feeds = executor.validate(inputs)
        outputs = executor.run_validated(feeds)
        return Hashed(executor.input_hash(feeds), executor.output_hash(outputs), outputs)

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


def serve(conn: multiprocessing.connection.Connection, store_root: str, timeout: float,
           memory_limit: int | None) -> None:  # fmt: skip
    """A worker's life: cap the address space, then answer requests in order until the node
    goes. It never outlives a fault of its own: whatever escapes ends it at once (a normal
    exit prints a traceback and joins threads, which can fail and hang out of memory)."""
    try:
        _answer_requests(conn, store_root, timeout, memory_limit)
    except BaseException:
        os._exit(1)


def _answer_requests(conn: multiprocessing.connection.Connection, store_root: str,
                     timeout: float, memory_limit: int | None) -> None:  # fmt: skip
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle
    start_watchdog()  # before the cap: a thread started near it may never start
    if memory_limit is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    models = Models(store_root, timeout)
    reader = _channel.FrameReader(conn.fileno())
    ready = select.poll()
    ready.register(reader.fd, select.POLLIN)
    while True:
        try:
            frame = reader.next(None)
        except (EOFError, OSError):
            os._exit(0)  # the node is gone
        except MemoryError:
            # A request over the cap cannot even be read; what was read of it cannot be
            # skipped. Exit now (a traceback's printing could itself fail and hang here).
            os._exit(OUT_OF_MEMORY)
        assert frame is not None
        retire = False
        try:
            method, args = _channel.parse_request(*frame)
            reply = _channel.answer(getattr(models, method)(*args))
        except MemoryError:
            # Answer, then go: a heap that ran out (onnxruntime's arena, a thread that could
            # not start) may fail the next request in ways that are not this one's fault.
            reply, retire = _channel.failure(MemoryError(), retire=True), True
        except Exception as exc:  # every failure goes back to the node, typed
            reply = _channel.failure(exc)
        try:
            # Each answer goes at once, never held back for the next: a later request of
            # the batch may crash this worker, and must not take earlier answers with it.
            _channel.send(reader.fd, reply)
        except OSError:
            os._exit(0)
        if retire:
            os._exit(OUT_OF_MEMORY)
        if frame[0] & _channel.AWAKE and not reader.parsed:
            until = time.monotonic() + WORKER_SPIN
            while time.monotonic() < until and not ready.poll(0):
                os.sched_yield()  # a process that needs this CPU gets it
