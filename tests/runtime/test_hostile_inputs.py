"""Requests and dispute inputs crafted to break hashing or make honest nodes disagree."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from verinet.devnet.models import mlp
from verinet.errors import (
    ConfigError,
    DtypeMismatch,
    InputTooLarge,
    InvalidInput,
    UnexpectedInput,
    UnsupportedSignature,
)
from verinet.hub.manifest import ExecutionProfile, InputPolicy
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import group_hash, tensor_hash


def _model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, **graph: object) -> bytes:
    model = helper.make_model(
        helper.make_graph(nodes, "m", inputs, outputs, **graph),  # type: ignore[arg-type]
        opset_imports=[helper.make_opsetid("", 21)],
    )
    model.ir_version = 10
    return model.SerializeToString()


def _identity(dtype: int) -> OnnxExecutor:
    return OnnxExecutor(
        _model(
            [helper.make_node("Identity", ["x"], ["y"])],
            [helper.make_tensor_value_info("x", dtype, [4])],
            [helper.make_tensor_value_info("y", dtype, [4])],
        )
    )


def test_big_endian_input_computes_what_its_hash_says() -> None:
    executor = OnnxExecutor(mlp().SerializeToString())
    little = np.random.default_rng(0).standard_normal((2, 16)).astype("<f4")
    big = little.astype(">f4")
    assert executor.input_hash({"x": big}) == executor.input_hash({"x": little})
    assert executor.output_hash(executor.run({"x": big})) == executor.output_hash(
        executor.run({"x": little})
    )


def test_string_inputs_must_be_str() -> None:
    executor = _identity(TensorProto.STRING)
    text = np.array(["a", "bb", "", "é"])
    assert list(executor.run({"x": text})["y"]) == ["a", "bb", "", "é"]
    assert executor.run({"x": text.astype(object)})["y"].tolist() == ["a", "bb", "", "é"]
    # Byte strings would be read by onnxruntime as NUL-terminated C strings past each item.
    with pytest.raises(DtypeMismatch, match="dtype=object"):
        executor.run({"x": np.array([b"A", b"B", b"C", b"D"])})
    with pytest.raises(DtypeMismatch, match="holds a int"):
        executor.run({"x": np.array(["a", 1, "b", "c"], dtype=object)})
    with pytest.raises(InvalidInput, match="lone surrogate"):
        executor.run({"x": np.array(["a", "\ud800", "b", "c"], dtype=object)})
    with pytest.raises(TypeError):
        tensor_hash(np.array([1, "1"], dtype=object))


def test_string_size_counts_the_text_not_the_pointers() -> None:
    executor = OnnxExecutor(
        _model(
            [helper.make_node("Identity", ["x"], ["y"])],
            [helper.make_tensor_value_info("x", TensorProto.STRING, [1])],
            [helper.make_tensor_value_info("y", TensorProto.STRING, [1])],
        ),
        input_policy=InputPolicy(max_bytes=1024),
    )
    with pytest.raises(InputTooLarge):
        executor.run({"x": np.array(["x" * 4096], dtype=object)})


def test_one_truth_value_one_encoding() -> None:
    executor = _identity(TensorProto.BOOL)
    odd = np.array([2, 0, 1, 255], np.uint8).view(np.bool_)
    plain = np.array([True, False, True, True])
    assert tensor_hash(odd) == tensor_hash(plain)
    assert executor.run({"x": odd})["y"].view(np.uint8).tolist() == [1, 0, 1, 1]
    scalar = OnnxExecutor(
        _model(
            [helper.make_node("Not", ["x"], ["y"])],
            [helper.make_tensor_value_info("x", TensorProto.BOOL, [])],
            [helper.make_tensor_value_info("y", TensorProto.BOOL, [])],
        )
    )
    assert scalar.run({"x": np.array(True)})["y"].item() is False


def test_tracing_needs_the_disable_all_profile() -> None:
    executor = OnnxExecutor(
        mlp().SerializeToString(), profile=ExecutionProfile(graph_optimization="basic")
    )
    with pytest.raises(UnsupportedSignature, match="disable_all"):
        executor.run_traced({"x": np.zeros((1, 16), np.float32)})


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("inf"), float("nan"), 1e12])
def test_run_deadline_must_be_sane(timeout: float) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        OnnxExecutor(mlp().SerializeToString(), timeout=timeout)


def test_one_step_refuses_what_the_op_does_not_read() -> None:
    executor = OnnxExecutor(mlp().SerializeToString())
    trace = executor.run_traced({"x": np.ones((1, 16), np.float32)})
    inputs = trace.step_inputs(1)
    with pytest.raises(UnexpectedInput, match="does not read"):
        executor.execute_op(1, {**inputs, "w1": np.zeros(1, np.float32)})
    with pytest.raises(InvalidInput, match="numpy array"):
        executor.execute_op(1, {"x": [[1.0] * 16]})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match="numpy array"):
        executor.execute_op(1, {"x": np.ones((1, 16), np.complex64)})


def test_one_step_with_a_sparse_weight() -> None:
    dense = np.zeros((4, 3), np.float32)
    dense[1, 2], dense[3, 0] = 2.0, -1.0
    values = numpy_helper.from_array(np.array([2.0, -1.0], np.float32), "w")
    indices = numpy_helper.from_array(np.array([5, 9], np.int64), "w_idx")
    sparse = helper.make_sparse_tensor(values, indices, [4, 3])
    executor = OnnxExecutor(
        _model(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
            sparse_initializer=[sparse],
        )
    )
    x = np.array([[1, 2, 3, 4]], np.float32)
    trace = executor.run_traced({"x": x})
    np.testing.assert_array_equal(trace.outputs["y"], x @ dense)
    redone = executor.execute_op(1, trace.step_inputs(1))
    assert group_hash(list(redone.items())) == trace.op_hashes[0]


@pytest.mark.parametrize(
    "dims",
    [[-5], ["d" * 70]],
    ids=["negative", "long-symbol"],
)
def test_graph_dims_a_manifest_cannot_declare_are_typed_refusals(dims: list[object]) -> None:
    data = _model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],  # type: ignore[arg-type]
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],  # type: ignore[arg-type]
    )
    with pytest.raises(UnsupportedSignature):
        OnnxExecutor(data)


def test_a_non_ascii_dim_name_becomes_an_anonymous_dim() -> None:
    data = _model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["é"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["é"])],
    )
    executor = OnnxExecutor(data)
    assert executor.inputs[0].shape == ("d0_0",)
    assert executor.run({"x": np.ones(3, np.float32)})["y"].shape == (3,)
