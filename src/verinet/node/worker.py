"""Running models for the node, isolated from it.

With ``isolation="process"`` (the default) every run happens in a worker process whose address
space is capped (``RLIMIT_AS``): a request that makes onnxruntime ask for a huge allocation (a
shape computed from an input) fails as `ExecutionFailed` in the worker instead of taking the
node down, and a worker that dies is replaced. ``"thread"`` runs models in the node's own
process (tests, the benchmark's comparison). Tensors cross the process boundary in their
canonical encoding.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Mapping
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal

from verinet.errors import ExecutionFailed
from verinet.hub.files import get_file
from verinet.hub.publish import load_manifest
from verinet.hub.store import DiskStore
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import Array
from verinet.runtime.wire import decode_group, encode_group, group_to_json
from verinet.types import Cid

MiB = 1024 * 1024


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

    def run(self, manifest_cid: str, payload: bytes) -> bytes:
        return encode_group(self.get(manifest_cid).run(decode_group(payload)))

    def trace_step(self, manifest_cid: str, payload: bytes, index: int) -> dict[str, Any]:
        trace = self.get(manifest_cid).run_traced(decode_group(payload))
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


_worker: _Models | None = None  # the one per worker process


def _init(store_root: str, timeout: float, memory_limit: int | None) -> None:
    """Worker start: cap the address space, remember where models live, and go when the
    node goes."""
    global _worker
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent.sentinel,), name="exit-with-node", daemon=True
        ).start()
    if memory_limit is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    _worker = _Models(store_root, timeout)


def _exit_with(node_sentinel: int) -> None:
    # A pool worker waits on its call queue forever, so a node killed outright (SIGKILL, the
    # OOM killer) would leave it running with its models loaded. The sentinel is readable once
    # the node is gone.
    multiprocessing.connection.wait([node_sentinel])
    os._exit(0)


def _call(method: str, *args: Any) -> Any:
    assert _worker is not None, "worker not initialised"
    return getattr(_worker, method)(*args)


class ModelPool:
    """Runs published models by manifest CID, in capped worker processes or in threads."""

    def __init__(
        self,
        store_root: Path,
        *,
        isolation: Literal["process", "thread"] = "process",
        workers: int = 1,
        memory_limit_mb: int | None = 4096,
        timeout: float = 60.0,
    ) -> None:
        self._args = (str(store_root), timeout, memory_limit_mb * MiB if memory_limit_mb else None)
        self._isolation = isolation
        self._workers = workers
        self._pool: cf.Executor | None = None
        self._pool_lock = threading.Lock()
        self._local = _Models(str(store_root), timeout) if isolation == "thread" else None

    def _executor_pool(self) -> cf.Executor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = cf.ProcessPoolExecutor(
                    self._workers,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_init,
                    initargs=self._args,
                )
            return self._pool

    def warm(self, manifest_cid: str) -> None:
        """Start the workers and load the model in one (so the first job is not slow)."""
        self._submit("load", manifest_cid)

    def run_validated(self, manifest_cid: str, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """The model's outputs for inputs `validate_inputs` accepted (raises `ExecutionFailed`).
        A worker process checks them again: it trusts nothing across the boundary."""
        if self._local is not None:
            return self._local.get(manifest_cid).run_validated(inputs)
        return decode_group(self._submit("run", manifest_cid, encode_group(inputs)))

    def trace_step(
        self, manifest_cid: str, inputs: Mapping[str, Array], index: int
    ) -> dict[str, Any]:
        """Op `index` of a traced run on `inputs`, with its Merkle proof (JSON-ready)."""
        result: dict[str, Any] = self._submit(
            "trace_step", manifest_cid, encode_group(inputs), index
        )
        return result

    def _submit(self, method: str, *args: Any) -> Any:
        if self._local is not None:
            return getattr(self._local, method)(*args)
        pool = self._executor_pool()
        try:
            return pool.submit(_call, method, *args).result()
        except BrokenProcessPool:
            with self._pool_lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise ExecutionFailed(
                "the model's worker process died (memory cap "
                f"{(self._args[2] or 0) // MiB} MiB or a crash); it has been restarted"
            ) from None
        except MemoryError:
            raise ExecutionFailed(
                f"the run needed more memory than the worker's cap of "
                f"{(self._args[2] or 0) // MiB} MiB"
            ) from None

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
