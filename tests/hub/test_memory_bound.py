"""`verinet.hub.safety.memory_bound` is a proof, not a guess: for hostile models built to make
onnxruntime allocate more than their values (column buffers, every element type, symbols that
an empty input leaves free), the bound is at least what a real run grows the process by.

A run is measured in a fresh process: peak RSS (``VmHWM``) is reset through
``/proc/self/clear_refs`` once the session and the inputs exist, so the growth is the run's own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx.numpy_helper import from_array

from verinet.hub.manifest import ELEMENT_TYPES
from verinet.hub.safety import memory_bound

MiB = 1 << 20
U8, F, I32 = TensorProto.UINT8, TensorProto.FLOAT, TensorProto.INT32

_MEASURE = textwrap.dedent("""
    import sys
    import numpy as np
    from verinet.runtime.executor import OnnxExecutor

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    executor = OnnxExecutor(open(sys.argv[1], "rb").read(), timeout=None)
    feeds = dict(np.load(sys.argv[2]))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS := current RSS
    before = status("VmRSS")
    executor.run_validated(feeds)
    print(status("VmHWM") - before)
""")


def measured_growth(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tmp: Path) -> int:
    """Bytes one run of `model` on `feeds` grows a fresh process's peak RSS by."""
    (tmp / "model.onnx").write_bytes(model.SerializeToString())
    np.savez(tmp / "feeds.npz", **feeds)  # type: ignore[arg-type]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp / "model.onnx"), str(tmp / "feeds.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout)


def model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    output: onnx.ValueInfoProto,
    inits: list[TensorProto] | None = None,
) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", inputs, [output], inits or [])
    built = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    built.ir_version = 10
    return built


def vi(name: str, elem: int, shape: list[int | str] | None) -> onnx.ValueInfoProto:
    return h.make_tensor_value_info(name, elem, shape)


# --- element types --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", sorted(set(ELEMENT_TYPES) - {"string"}))
def test_a_symbol_is_sized_by_its_input_dtype(dtype: str) -> None:
    """A request of `budget` bytes of `dtype` has budget / itemsize elements: the Cast to
    float64 holds 8 bytes for each, and the bound must cover it for every element type."""
    elem = ELEMENT_TYPES[dtype]
    cast = model(
        [h.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE)],
        [vi("x", elem, ["n"])],
        vi("y", TensorProto.DOUBLE, ["n"]),
    )
    budget = 16 * MiB
    elements = budget // np.dtype(dtype).itemsize
    bound = memory_bound(cast, [("x", dtype, ("n",))], budget)
    assert bound is not None
    assert bound >= budget + 8 * elements


def test_a_uint8_request_is_measured_under_its_bound(tmp_path: Path) -> None:
    """The finding: a legal 16 MiB uint8 request, bounded as if it were int64 elements."""
    nodes = [
        h.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
        h.make_node("Cast", ["f"], ["y"], to=TensorProto.DOUBLE),
    ]
    cast = model(nodes, [vi("x", U8, ["n"])], vi("y", TensorProto.DOUBLE, ["n"]))
    budget = 4 * MiB
    bound = memory_bound(cast, [("x", "uint8", ("n",))], budget)
    feeds = {"x": np.ones(budget, np.uint8)}
    growth = measured_growth(cast, feeds, tmp_path)
    assert growth > 30 * MiB  # 4 Mi float32 + 4 Mi float64 elements: the run is that large
    assert bound is not None and bound >= growth


def test_a_symbol_an_empty_input_leaves_free_has_no_bound() -> None:
    """x of shape (n, m) with m = 0 holds no bytes whatever n is, so n is not bounded by the
    budget: the column sum [n] could be 2**40 elements."""
    reduce = model(
        [h.make_node("ReduceSum", ["x"], ["y"], keepdims=0, axes=[1])],
        [vi("x", F, ["n", "m"])],
        vi("y", F, ["n"]),
    )
    reduce.opset_import[0].version = 11
    assert memory_bound(reduce, [("x", "float32", ("n", "m"))], MiB) is None
    zero = model(
        [h.make_node("ReduceSum", ["x"], ["y"], keepdims=0, axes=[1])],
        [vi("x", F, ["n", 0])],
        vi("y", F, ["n"]),
    )
    zero.opset_import[0].version = 11
    assert memory_bound(zero, [("x", "float32", ("n", 0))], MiB) is None


def test_the_manifest_shapes_rule_not_the_graphs() -> None:
    """The graph names its dims as it likes; the manifest's symbols are what requests obey."""
    relu = model([h.make_node("Relu", ["x"], ["y"])], [vi("x", F, ["batch"])], vi("y", F, [None]))
    bound = memory_bound(relu, [("x", "float32", ("n",))], 4 * MiB)
    assert bound is not None and bound >= 8 * MiB
    assert memory_bound(relu, [("z", "float32", ("n",))], 4 * MiB) is None  # not its input


# --- column buffers -------------------------------------------------------------------------


def test_conv_transpose_column_buffer_is_counted(tmp_path: Path) -> None:
    """The finding: a tiny ConvTranspose whose column buffer (C_out x kernel x input pixels,
    float32) is 64 MiB, while its weights, input and output are under 100 KB."""
    weight = from_array(np.full((1, 1, 64, 64), 0.5, np.float32), "w")
    conv = model(
        [h.make_node("ConvTranspose", ["x", "w"], ["y"])],
        [vi("x", F, [1, 1, 64, 64])],
        vi("y", F, [1, 1, 127, 127]),
        [weight],
    )
    bound = memory_bound(conv, [("x", "float32", (1, 1, 64, 64))], MiB)
    growth = measured_growth(conv, {"x": np.ones((1, 1, 64, 64), np.float32)}, tmp_path)
    assert growth > 60 * MiB
    assert bound is not None and bound >= growth


def test_conv_integer_column_buffer_is_counted(tmp_path: Path) -> None:
    """ConvInteger builds a uint8 column buffer of C x kernel x output pixels (16 MiB here)."""
    weight = from_array(np.ones((1, 64, 8, 8), np.uint8), "w")
    conv = model(
        [h.make_node("ConvInteger", ["x", "w"], ["y"], pads=[4, 4, 3, 3])],
        [vi("x", U8, [1, 64, 64, 64])],
        vi("y", I32, [1, 1, 64, 64]),
        [weight],
    )
    bound = memory_bound(conv, [("x", "uint8", (1, 64, 64, 64))], MiB)
    growth = measured_growth(conv, {"x": np.ones((1, 64, 64, 64), np.uint8)}, tmp_path)
    assert growth > 12 * MiB
    assert bound is not None and bound >= growth
