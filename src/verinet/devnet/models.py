"""Sample models, built in code from a seed: what the devnet publishes and the tests run.

Each builder returns an `onnx.ModelProto` (opset 21, IR 10) whose weights come from a seeded
generator, so the same call gives the same bytes and the same CID on every machine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET: Final = 21
IR_VERSION: Final = 10


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="verinet"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _weight(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], fan_in: int
) -> onnx.TensorProto:
    # Divide in float64 and cast once: numpy 2 would otherwise keep float64 weights.
    values = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    return numpy_helper.from_array(values, name)


def mlp(
    dims: tuple[int, ...] = (16, 32, 4), *, seed: int = 0, batch: str | int = "batch"
) -> onnx.ModelProto:
    """x[batch, dims[0]] → (MatMul, Add, Relu)* → y[batch, dims[-1]] (no Relu on the last)."""
    rng = np.random.default_rng(seed)
    nodes, weights, value = [], [], "x"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
        weights += [
            _weight(rng, f"w{i}", (fan_in, fan_out), fan_in),
            _weight(rng, f"b{i}", (fan_out,), 1),
        ]
        nodes += [
            helper.make_node("MatMul", [value, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"], name=f"add{i}"),
        ]
        value = f"z{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [value], [f"h{i}"], name=f"relu{i}"))
            value = f"h{i}"
    nodes.append(helper.make_node("Identity", [value], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dims[-1]])],
        weights,
    )
    return _model(graph)


def cnn(
    *, seed: int = 0, channels: tuple[int, int] = (8, 16), classes: int = 10, size: int = 32
) -> onnx.ModelProto:
    """image[batch, 3, size, size] → Conv-Relu-MaxPool twice → GlobalAveragePool → Gemm → logits."""
    rng = np.random.default_rng(seed)
    c1, c2 = channels
    weights = [
        _weight(rng, "conv1.w", (c1, 3, 3, 3), 27),
        _weight(rng, "conv1.b", (c1,), 1),
        _weight(rng, "conv2.w", (c2, c1, 3, 3), 9 * c1),
        _weight(rng, "conv2.b", (c2,), 1),
        _weight(rng, "fc.w", (classes, c2), c2),
        _weight(rng, "fc.b", (classes,), 1),
    ]
    # strides written out (ONNX's default is 1): ezkl refuses a Conv without them.
    conv: dict[str, Any] = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    pool: dict[str, Any] = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["image", "conv1.w", "conv1.b"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", **pool),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", **pool),
        helper.make_node("GlobalAveragePool", ["p2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        weights,
    )
    return _model(graph)


def attention(*, seed: int = 0, dim: int = 32, heads: int = 4) -> onnx.ModelProto:
    """One pre-norm self-attention block: x[batch, seq, dim] → x + Attn(LayerNorm(x))."""
    rng = np.random.default_rng(seed)
    head = dim // heads
    weights = [
        numpy_helper.from_array(np.ones(dim, np.float32), "ln.scale"),
        numpy_helper.from_array(np.zeros(dim, np.float32), "ln.bias"),
        *(_weight(rng, f"w{n}", (dim, dim), dim) for n in "qkvo"),
        numpy_helper.from_array(np.array([0, 0, heads, head], np.int64), "split_heads"),
        numpy_helper.from_array(np.array([0, 0, dim], np.int64), "merge_heads"),
        numpy_helper.from_array(np.array(np.sqrt(head), np.float32), "scale"),
    ]
    nodes = [
        helper.make_node(
            "LayerNormalization", ["x", "ln.scale", "ln.bias"], ["n"], name="ln", axis=-1
        ),
    ]
    for n in "qkv":
        nodes += [
            helper.make_node("MatMul", ["n", f"w{n}"], [f"{n}0"], name=f"proj_{n}"),
            helper.make_node("Reshape", [f"{n}0", "split_heads"], [f"{n}1"], name=f"split_{n}"),
        ]
    nodes += [
        helper.make_node("Transpose", ["q1"], ["q"], name="q_heads", perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k1"], ["kt"], name="k_heads", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v1"], ["v"], name="v_heads", perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
        helper.make_node("Div", ["scores", "scale"], ["scaled"], name="scale_scores"),
        helper.make_node("Softmax", ["scaled"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["ctx"], name="context"),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], name="merge_t", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merge_heads"], ["ctx_m"], name="merge"),
        helper.make_node("MatMul", ["ctx_m", "wo"], ["o"], name="proj_o"),
        helper.make_node("Add", ["x", "o"], ["y"], name="residual"),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", dim])],
        weights,
    )
    return _model(graph)


SAMPLES: Final[dict[str, Callable[[], onnx.ModelProto]]] = {
    "mlp-tiny": mlp,
    "cnn-small": cnn,
    "attention-block": attention,
}
"""The devnet's sample models by name."""
