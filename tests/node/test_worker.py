"""Where the node runs models: the memory bound that lets a model run in the node's process,
and the worker processes (real forkserver processes on pipes) for every other model."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from verinet.devnet.samples import SampleModel, sample_models
from verinet.errors import ExecutionFailed
from verinet.hub.publish import store_model
from verinet.hub.safety import memory_bound
from verinet.hub.store import DiskStore
from verinet.node.worker import ModelPool
from verinet.runtime.executor import OnnxExecutor
from verinet.types import Cid

MiB = 1 << 20


@pytest.fixture(scope="module")
def mlp() -> SampleModel:
    return next(s for s in sample_models() if s.name == "mlp")


@pytest.fixture()
def stored(tmp_path: Path, mlp: SampleModel) -> tuple[Path, Cid]:
    store = DiskStore(tmp_path / "blobs")
    return tmp_path / "blobs", store_model(store, mlp.model_bytes, mlp.manifest)


@pytest.fixture()
def pool(stored: tuple[Path, Cid]) -> Iterator[ModelPool]:
    pool = ModelPool(stored[0], isolation="process", workers=2)
    pool.warm(stored[1])
    yield pool
    pool.close()


def _inputs(mlp: SampleModel, scale: float) -> dict[str, np.ndarray]:
    return {name: (array * scale).astype(array.dtype) for name, array in mlp.example.items()}


def _expected(mlp: SampleModel, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return OnnxExecutor(mlp.model_bytes, mlp.manifest).run(feeds)


def _specs(mlp: SampleModel) -> list[tuple[str, str, tuple[int | str, ...]]]:
    return [(s.name, s.dtype, s.shape) for s in mlp.manifest.inputs]


def test_memory_bound_follows_the_input_budget(mlp: SampleModel) -> None:
    model = onnx.load_from_string(mlp.model_bytes)
    small = memory_bound(model, _specs(mlp), 1 * MiB)
    large = memory_bound(model, _specs(mlp), 16 * MiB)
    weights = sum(t.ByteSize() for t in model.graph.initializer) // 2
    assert small is not None and large is not None
    assert weights < small < large  # the batch symbol scales every activation
    assert large >= 16 * MiB  # the input alone may be that large


def test_memory_bound_refuses_shapes_known_only_at_run_time() -> None:
    def model(node: onnx.NodeProto, *inputs: onnx.ValueInfoProto) -> onnx.ModelProto:
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph([node], "g", list(inputs), [out])
        built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        built.ir_version = 10
        return built

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    expand = model(helper.make_node("Expand", ["x", "shape"], ["y"]), x, shape)
    specs = [("x", "float32", ("n",)), ("shape", "int64", (2,))]
    assert memory_bound(expand, specs, MiB) is None  # [2**20, 2**20] from 16 request bytes
    nonzero = model(helper.make_node("NonZero", ["x"], ["y"]), x)
    assert memory_bound(nonzero, [("x", "float32", ("n",))], MiB) is None


def test_auto_isolation_runs_a_bounded_model_in_the_node(
    stored: tuple[Path, Cid], mlp: SampleModel
) -> None:
    root, cid = stored
    inline = ModelPool(root, isolation="auto")
    capped = ModelPool(root, isolation="auto", inline_memory_mb=1)  # below the mlp's bound
    try:
        inline.warm(cid)
        capped.warm(cid)
        assert inline.runs_inline(cid) and not capped.runs_inline(cid)
        feeds = _inputs(mlp, 1.0)
        want = _expected(mlp, feeds)
        for pool in (inline, capped):
            got = pool.run_validated(cid, feeds)
            assert all(np.array_equal(got[k], want[k]) for k in want)
            got = asyncio.run(pool.arun_validated(cid, feeds))
            assert all(np.array_equal(got[k], want[k]) for k in want)
    finally:
        inline.close()
        capped.close()


def test_workers_answer_threads_and_coroutines_at_once(
    pool: ModelPool, stored: tuple[Path, Cid], mlp: SampleModel
) -> None:
    cid = stored[1]
    cases = [_inputs(mlp, 1 + i / 10) for i in range(12)]
    expected = [_expected(mlp, feeds) for feeds in cases]
    from_threads: dict[int, dict[str, np.ndarray]] = {}

    def in_thread(i: int) -> None:
        from_threads[i] = pool.run_validated(cid, cases[i])

    async def on_loop() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(pool.arun_validated(cid, feeds) for feeds in cases))

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    from_loop = asyncio.run(on_loop())  # 12 coroutines and 12 threads share 2 workers
    for thread in threads:
        thread.join()
    for i, want in enumerate(expected):
        for got in (from_threads[i], from_loop[i]):
            assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_dead_worker_fails_one_call_and_is_replaced(
    pool: ModelPool, stored: tuple[Path, Cid], mlp: SampleModel
) -> None:
    cid, feeds = stored[1], _inputs(mlp, 1.0)
    before = {w.process.pid for w in pool._idle}
    assert len(before) == 2
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExecutionFailed, match="died"):
        pool.run_validated(cid, feeds)
    with pytest.raises(ExecutionFailed, match="died"):
        asyncio.run(pool.arun_validated(cid, feeds))
    want = _expected(mlp, feeds)
    got = pool.run_validated(cid, feeds)  # a fresh worker, the model loaded again
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert {w.process.pid for w in pool._idle}.isdisjoint(before)


def test_a_worker_over_its_memory_cap_fails_the_run_not_the_node(
    stored: tuple[Path, Cid], mlp: SampleModel
) -> None:
    root, cid = stored
    pool = ModelPool(root, isolation="process", memory_limit_mb=300)
    try:
        pool.warm(cid)
        (name, example), *_ = mlp.example.items()
        huge = {name: np.ones((400 * MiB // (4 * example.shape[1]), example.shape[1]), "f4")}
        with pytest.raises(ExecutionFailed):
            pool.run_validated(cid, huge)  # ~400 MiB of input alone, over the 300 MiB cap
        got = pool.run_validated(cid, mlp.example)
        assert got.keys() == _expected(mlp, mlp.example).keys()
    finally:
        pool.close()


def test_close_turns_away_new_calls(pool: ModelPool, stored: tuple[Path, Cid]) -> None:
    workers = [w.process for w in pool._idle]
    pool.close()
    for process in workers:
        process.join(5)
        assert not process.is_alive()
    with pytest.raises(ExecutionFailed, match="shutting down"):
        pool.run_validated(stored[1], {})
