"""Where the node runs models: worker processes (real forkserver processes on pipes), and
the memory bound of a model's graph."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from verinet.devnet.samples import SampleModel, sample_models
from verinet.errors import ExecutionFailed, InvalidInput
from verinet.hub.publish import draft_manifest, store_model
from verinet.hub.safety import memory_bound
from verinet.hub.store import DiskStore
from verinet.node._channel import Hashed
from verinet.node.worker import ModelPool
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import group_hash
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
    before = {w.process.pid for w in pool._workers}
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
    assert {w.process.pid for w in pool._workers}.isdisjoint(before)


def test_a_worker_over_its_memory_cap_fails_the_run_not_the_node(
    stored: tuple[Path, Cid], mlp: SampleModel
) -> None:
    root, cid = stored
    # A worker starts at ~280 MiB of address space (onnxruntime and numpy mapped).
    pool = ModelPool(root, isolation="process", memory_limit_mb=400, timeout=30)
    try:
        pool.warm(cid)
        (first,) = (w.process.pid for w in pool._workers)
        (name, example), *_ = mlp.example.items()
        huge = {name: np.ones((500 * MiB // (4 * example.shape[1]), example.shape[1]), "f4")}
        started = time.monotonic()
        with pytest.raises(ExecutionFailed, match="memory"):
            pool.run_validated(cid, huge)  # ~500 MiB of input alone, over the 400 MiB cap
        # at once, not at the deadline: a worker that cannot read a request exits
        assert time.monotonic() - started < 20
        got = pool.run_validated(cid, mlp.example)
        assert got.keys() == _expected(mlp, mlp.example).keys()
        # A worker whose memory ran out does not serve again, whether it died reading the
        # request or answered MemoryError: what is left of its heap is not to be trusted.
        assert first not in {w.process.pid for w in pool._workers}
    finally:
        pool.close()


def test_close_turns_away_new_calls(pool: ModelPool, stored: tuple[Path, Cid]) -> None:
    workers = [w.process for w in pool._workers]
    pool.close()
    for process in workers:
        process.join(5)
        assert not process.is_alive()
    with pytest.raises(ExecutionFailed, match="shutting down"):
        pool.run_validated(stored[1], {})


# -- native crashes: a model that traps fails its request, not the node ------------------------


def _divider(op: str, dtype: int) -> bytes:
    """``y = a op b`` elementwise: a model every static check passes, which onnxruntime runs
    into SIGFPE for INT_MIN op -1 (it checks only division by zero)."""
    a, b = (helper.make_tensor_value_info(n, dtype, ["n"]) for n in ("a", "b"))
    y = helper.make_tensor_value_info("y", dtype, ["n"])
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "trap", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


TRAPS = [
    (op, dtype, np_type)
    for op in ("Div", "Mod")
    for dtype, np_type in ((TensorProto.INT32, np.int32), (TensorProto.INT64, np.int64))
]


@pytest.mark.parametrize(("op", "dtype", "np_type"), TRAPS)
def test_a_model_that_traps_fails_only_its_request(
    tmp_path: Path, op: str, dtype: int, np_type: type[np.integer]
) -> None:
    model = _divider(op, dtype)
    manifest = draft_manifest(model, name=f"trap-{op.lower()}", fee=1, license="MIT")
    store = DiskStore(tmp_path / "blobs")
    cid = store_model(store, model, manifest)
    pool = ModelPool(tmp_path / "blobs", isolation="process", workers=1)
    lowest = np.iinfo(np_type).min
    fine = {"a": np.array([7, -9], np_type), "b": np.array([2, 4], np_type)}
    trap = {"a": np.array([lowest], np_type), "b": np.array([-1], np_type)}
    want = OnnxExecutor(model, manifest).run(fine)["y"]
    try:
        pool.warm(cid)
        (first,) = (w.process.pid for w in pool._workers)
        with pytest.raises(ExecutionFailed, match="SIGFPE"):
            pool.run_validated(cid, trap)
        assert np.array_equal(pool.run_validated(cid, fine)["y"], want)

        async def crowd() -> list[dict[str, np.ndarray] | BaseException]:
            # Calls pipelined on one worker around a trapping one: only that one fails.
            calls = [fine] * 5 + [trap] + [fine] * 5
            runs = (pool.arun_validated(cid, feeds) for feeds in calls)
            return await asyncio.gather(*runs, return_exceptions=True)

        answers = asyncio.run(crowd())
        failed = [i for i, a in enumerate(answers) if isinstance(a, BaseException)]
        assert failed == [5], answers
        assert isinstance(answers[5], ExecutionFailed) and "SIGFPE" in str(answers[5])
        for i, answer in enumerate(answers):
            if i != 5:
                assert not isinstance(answer, BaseException)
                assert np.array_equal(answer["y"], want)
        assert first not in {w.process.pid for w in pool._workers}
    finally:
        pool.close()


def test_a_direct_call_is_validated_run_and_hashed_in_the_worker(
    pool: ModelPool, stored: tuple[Path, Cid], mlp: SampleModel
) -> None:
    cid = stored[1]
    feeds = _inputs(mlp, 1.5)
    want = _expected(mlp, feeds)

    async def calls() -> list[Hashed]:
        # lone calls keep the worker awake between them; the answers are the same
        return [await pool.adirect(cid, feeds, lone=lone) for lone in (False, True, True)]

    for run in asyncio.run(calls()):
        assert all(np.array_equal(run.outputs[k], want[k]) for k in want)
        assert run.input_hash == group_hash(feeds)
        assert run.output_hash == group_hash([(s.name, want[s.name]) for s in mlp.manifest.outputs])
    (name, example), *_ = mlp.example.items()
    wrong = {name: example.astype(np.float64)}
    with pytest.raises(InvalidInput):  # checked against the manifest in the worker
        asyncio.run(pool.adirect(cid, wrong))
    got = asyncio.run(pool.adirect(cid, feeds))  # the same worker serves on
    assert got.input_hash == group_hash(feeds)
