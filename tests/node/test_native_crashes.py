"""Models that every static check admits and that onnxruntime still runs into a native crash.

Each case is a small model made only of ops `check_model` allows, with one request that kills
the process running it (measured with onnxruntime 1.31.1 on x86-64) and one ordinary request.
The worker pool must turn the crash into `ExecutionFailed` naming the signal, replace the
worker, and answer the next request right. The int32/int64 elementwise ``Div``/``Mod`` of
INT_MIN by -1 is in ``test_worker.py``; these are its neighbours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from verinet.errors import ExecutionFailed
from verinet.hub.publish import draft_manifest, store_model
from verinet.hub.safety import check_model
from verinet.hub.store import DiskStore
from verinet.node.worker import ModelPool
from verinet.runtime.executor import OnnxExecutor
from verinet.types import Cid

Feeds = dict[str, np.ndarray]
_INT = {np.int32: TensorProto.INT32, np.int64: TensorProto.INT64}


def _model(
    nodes: list[onnx.NodeProto],
    inputs: Sequence[tuple[str, Any, Sequence[Any]]],
    outputs: Sequence[tuple[str, Any, Sequence[Any]]],
    opset: int = 21,
) -> bytes:
    graph = helper.make_graph(
        nodes,
        "crash",
        [helper.make_tensor_value_info(*spec) for spec in inputs],
        [helper.make_tensor_value_info(*spec) for spec in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return bytes(model.SerializeToString())


def _broadcast_divider(op: str, np_type: type[np.integer], scalar: str) -> bytes:
    """``y = a op b`` where one side is a scalar: the broadcasting kernels, not the
    same-shape one `test_worker.py` covers."""
    dtype = _INT[np_type]
    shape = {name: [] if name == scalar else ["n"] for name in ("a", "b")}
    return _model(
        [helper.make_node(op, ["a", "b"], ["y"])],
        [("a", dtype, shape["a"]), ("b", dtype, shape["b"])],
        [("y", dtype, ["n"])],
    )


def _stft(length_type: type[np.integer]) -> bytes:
    """STFT with its frame length from the request: a length of 0 divides by zero."""
    return _model(
        [helper.make_node("STFT", ["signal", "step", "", "length"], ["y"])],
        [
            ("signal", TensorProto.FLOAT, [1, 16, 1]),
            ("step", _INT[length_type], []),
            ("length", _INT[length_type], []),
        ],
        [("y", TensorProto.FLOAT, ["batch", "frames", "bins", 2])],
    )


def _stft_window() -> bytes:
    """STFT with the window from the request and no frame length: an empty window is a
    frame length of 0."""
    return _model(
        [helper.make_node("STFT", ["signal", "step", "window"], ["y"])],
        [
            ("signal", TensorProto.FLOAT, [1, 16, 1]),
            ("step", TensorProto.INT64, []),
            ("window", TensorProto.FLOAT, ["w"]),
        ],
        [("y", TensorProto.FLOAT, ["batch", "frames", "bins", 2])],
        opset=17,
    )


def _attention(q_heads: int, kv_heads: int) -> bytes:
    """``If(go)``: attention on 3-D inputs with the given head counts, else attention with two
    heads each. The request picks the branch, so the same model serves a fine request."""
    out = ("y", TensorProto.FLOAT, [1, 3, 8])

    def branch(name: str, q: int, kv: int) -> onnx.GraphProto:
        node = helper.make_node(
            "Attention", ["q", "q", "q"], [name], q_num_heads=q, kv_num_heads=kv
        )
        return helper.make_graph([node], name, [], [helper.make_tensor_value_info(name, *out[1:])])

    node = helper.make_node(
        "If",
        ["go"],
        ["y"],
        then_branch=branch("chosen", q_heads, kv_heads),
        else_branch=branch("plain", 2, 2),
    )
    return _model(
        [node],
        [("go", TensorProto.BOOL, []), ("q", TensorProto.FLOAT, [1, 3, 8])],
        [out],
        opset=23,
    )


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    trap: Feeds
    fine: Feeds
    signal: str = "SIGFPE"


def _i(values: object, np_type: type[np.integer]) -> np.ndarray:
    return np.array(values, np_type)


def _divisions() -> list[Case]:
    cases = []
    for op in ("Div", "Mod"):
        for np_type in (np.int32, np.int64):
            low = np.iinfo(np_type).min
            name = f"{op.lower()}-{np_type.__name__}"
            cases.append(
                Case(
                    f"{name}-scalar-divisor",
                    partial(_broadcast_divider, op, np_type, "b"),
                    {"a": _i([low, 3], np_type), "b": _i(-1, np_type)},
                    {"a": _i([low, 7, -9], np_type), "b": _i(2, np_type)},
                )
            )
            cases.append(
                Case(
                    f"{name}-scalar-dividend",
                    partial(_broadcast_divider, op, np_type, "a"),
                    {"a": _i(low, np_type), "b": _i([2, -1], np_type)},
                    {"a": _i(low, np_type), "b": _i([2, 3, -7], np_type)},
                )
            )
    return cases


_SIGNAL = np.sin(np.arange(16, dtype=np.float32)).reshape(1, 16, 1)
_Q = np.linspace(-1, 1, 24, dtype=np.float32).reshape(1, 3, 8)

CASES = [
    *_divisions(),
    *(
        Case(
            f"stft-frame-length-0-{t.__name__}",
            partial(_stft, t),
            {"signal": _SIGNAL, "step": _i(2, t), "length": _i(0, t)},
            {"signal": _SIGNAL, "step": _i(2, t), "length": _i(4, t)},
        )
        for t in (np.int32, np.int64)
    ),
    Case(
        "stft-empty-window",
        _stft_window,
        {"signal": _SIGNAL, "step": _i(2, np.int64), "window": np.ones(0, np.float32)},
        {"signal": _SIGNAL, "step": _i(2, np.int64), "window": np.hanning(4).astype("f4")},
    ),
    Case(
        "attention-3d-zero-query-heads",
        partial(_attention, 0, 2),
        {"go": np.array(True), "q": _Q},
        {"go": np.array(False), "q": _Q},
    ),
]


@dataclass(frozen=True)
class Stored:
    root: Path
    cids: dict[str, Cid]
    expected: dict[str, Feeds]


def _store(store: DiskStore, name: str, model: bytes) -> Cid:
    check_model(model)  # admitted: only such models count
    return store_model(store, model, draft_manifest(model, name=name, fee=1, license="MIT"))


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    root = tmp_path_factory.mktemp("crashes") / "blobs"
    store = DiskStore(root)
    cids, expected = {}, {}
    for case in CASES:
        model = case.build()
        cids[case.name] = _store(store, case.name, model)
        expected[case.name] = OnnxExecutor(model).run(case.fine)  # safe in-process
    return Stored(root, cids, expected)


@pytest.fixture(scope="module")
def pool(stored: Stored) -> Iterator[ModelPool]:
    pool = ModelPool(stored.root, isolation="process", workers=1)
    try:
        for cid in stored.cids.values():
            pool.warm(cid)  # every replacement worker loads them all again
        yield pool
    finally:
        pool.close()


def _same(got: Feeds, want: Feeds) -> bool:
    return got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_crashing_request_fails_alone(pool: ModelPool, stored: Stored, case: Case) -> None:
    cid, want = stored.cids[case.name], stored.expected[case.name]
    assert _same(pool.run_validated(cid, case.fine), want)
    before = {w.process.pid for w in pool._workers}
    with pytest.raises(ExecutionFailed, match=case.signal):
        pool.run_validated(cid, case.trap)
    assert _same(pool.run_validated(cid, case.fine), want)
    assert before.isdisjoint(w.process.pid for w in pool._workers)  # the dead one replaced


def test_crashes_among_pipelined_calls_fail_only_themselves(
    pool: ModelPool, stored: Stored
) -> None:
    calls = [(case, feeds) for case in CASES for feeds in (case.fine, case.trap, case.fine)]

    async def crowd() -> list[Feeds | BaseException]:
        runs = (pool.arun_validated(stored.cids[case.name], feeds) for case, feeds in calls)
        return await asyncio.gather(*runs, return_exceptions=True)

    for (case, feeds), answer in zip(calls, asyncio.run(crowd()), strict=True):
        if feeds is case.trap:
            assert isinstance(answer, ExecutionFailed) and case.signal in str(answer), case.name
        else:
            assert not isinstance(answer, BaseException), (case.name, answer)
            assert _same(answer, stored.expected[case.name]), case.name


# -- a model whose session cannot even be created ----------------------------------------
# Attention on 3-D inputs with kv_num_heads=0 raises SIGFPE while onnxruntime builds the
# session, in whichever If branch it sits, so loading the model kills its worker.


@pytest.fixture()
def poisoned(tmp_path: Path) -> tuple[Path, Cid, Cid]:
    store = DiskStore(tmp_path / "blobs")
    bad = _store(store, "load-crash", _attention(2, 0))  # never opened in this process
    good = _store(store, "plain", _attention(1, 1))
    return tmp_path / "blobs", bad, good


_PLAIN = {"go": np.array(False), "q": _Q}


def test_a_model_that_crashes_loading_fails_its_request_alone(
    poisoned: tuple[Path, Cid, Cid],
) -> None:
    root, bad, good = poisoned
    pool = ModelPool(root, isolation="process", workers=1)
    try:
        pool.warm(good)
        want = pool.run_validated(good, _PLAIN)
        with pytest.raises(ExecutionFailed, match="SIGFPE"):
            pool.run_validated(bad, _PLAIN)  # loaded on first use, in the worker
        assert _same(pool.run_validated(good, _PLAIN), want)
    finally:
        pool.close()


def test_warming_a_model_that_crashes_loading_leaves_the_pool_serving(
    poisoned: tuple[Path, Cid, Cid],
) -> None:
    root, bad, good = poisoned
    pool = ModelPool(root, isolation="process", workers=1)
    try:
        pool.warm(good)
        want = pool.run_validated(good, _PLAIN)
        with pytest.raises(ExecutionFailed, match="SIGFPE"):
            pool.warm(bad)
        assert _same(pool.run_validated(good, _PLAIN), want)
    finally:
        pool.close()
