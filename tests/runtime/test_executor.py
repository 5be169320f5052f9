"""The executor: pinned sessions, input validation with typed errors, hashing of results."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from verinet.devnet.models import attention, cnn, mlp
from verinet.errors import (
    ConfigError,
    DtypeMismatch,
    ExecutionFailed,
    ExecutionTimeout,
    InputTooLarge,
    InvalidInput,
    MissingInput,
    ModelCidMismatch,
    NonFiniteInput,
    ShapeMismatch,
    UnexpectedInput,
    UnsupportedSignature,
)
from verinet.hub.files import file_cid
from verinet.hub.manifest import ExecutionProfile, InputPolicy, TensorSpec
from verinet.hub.publish import draft_manifest
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import group_hash

RNG = np.random.default_rng(7)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def mlp_bytes() -> bytes:
    return mlp().SerializeToString()


@pytest.fixture(scope="module")
def executor(mlp_bytes: bytes) -> OnnxExecutor:
    return OnnxExecutor(mlp_bytes)


def test_signature_read_from_graph(executor: OnnxExecutor) -> None:
    assert executor.inputs == (TensorSpec(name="x", dtype="float32", shape=("batch", 16)),)
    assert executor.outputs == (TensorSpec(name="y", dtype="float32", shape=("batch", 4)),)


def test_runs_and_matches_numpy(executor: OnnxExecutor) -> None:
    model = mlp()
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    x = _x(3, 16)
    hidden = np.maximum(x @ weights["w0"] + weights["b0"], 0)
    expected = hidden @ weights["w1"] + weights["b1"]
    (y,) = executor.run({"x": x}).values()
    assert y.shape == (3, 4)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_output_hash_is_stable_and_sensitive(executor: OnnxExecutor) -> None:
    x = _x(2, 16)
    first = executor.output_hash(executor.run({"x": x}))
    assert executor.output_hash(executor.run({"x": x.copy()})) == first
    nudged = x.copy()
    nudged[0, 0] += np.float32(0.5)
    outputs = executor.run({"x": nudged})
    assert executor.output_hash(outputs) != first
    # One flipped bit in one output element changes the hash.
    outputs["y"].view(np.uint32)[1, 3] ^= 1
    assert executor.output_hash(outputs) != executor.output_hash(executor.run({"x": nudged}))
    assert executor.input_hash({"x": x}) == group_hash([("x", x)])


@pytest.mark.parametrize(
    ("inputs", "error", "fragment"),
    [
        ({}, MissingInput, "missing input(s) ['x']"),
        ({"x": _x(1, 16), "z": _x(1)}, UnexpectedInput, "['z']"),
        ({"x": [[0.0] * 16]}, InvalidInput, "pass a numpy array"),
        ({"x": _x(1, 16).astype(np.float64)}, DtypeMismatch, "has dtype float64"),
        ({"x": np.zeros((1, 16), np.int64)}, DtypeMismatch, "astype('float32')"),
        ({"x": _x(16)}, ShapeMismatch, "rank 1"),
        ({"x": _x(1, 15)}, ShapeMismatch, "axis 1 is 15"),
        ({"x": np.full((1, 16), np.nan, np.float32)}, NonFiniteInput, "16 NaN/Inf"),
        ({"x": np.array([[0] * 15 + [np.inf]], np.float32)}, NonFiniteInput, "index (0, 15)"),
        ({"x": np.zeros(((1 << 18) + 1, 16), np.float32)}, InputTooLarge, "split the batch"),
    ],
    ids=[
        "missing",
        "unexpected",
        "not-an-array",
        "float64",
        "int64",
        "rank",
        "dim",
        "nan",
        "inf",
        "too-large",
    ],
)
def test_bad_inputs_are_refused_with_typed_errors(
    executor: OnnxExecutor, inputs: dict[str, object], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as caught:
        executor.run(inputs)
    assert isinstance(caught.value, InvalidInput)
    assert fragment in str(caught.value)


def test_nonfinite_allowed_when_the_policy_says_so(mlp_bytes: bytes) -> None:
    lenient = OnnxExecutor(mlp_bytes, input_policy=InputPolicy(allow_nonfinite=True))
    (y,) = lenient.run({"x": np.full((1, 16), np.nan, np.float32)}).values()
    assert np.isnan(y).all()


def test_symbolic_dims_must_agree_across_inputs() -> None:
    a = onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, ["n", 2])
    b = onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, ["n", 2])
    out = onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, ["n", 2])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["a", "b"], ["c"])], "add", [a, b], [out]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)])
    model.ir_version = 10
    executor = OnnxExecutor(model.SerializeToString())
    with pytest.raises(ShapeMismatch, match="dimensions with one name must agree"):
        executor.run({"a": _x(3, 2), "b": _x(4, 2)})
    assert executor.run({"a": _x(3, 2), "b": _x(3, 2)})["c"].shape == (3, 2)


def test_weights_with_defaults_are_not_request_inputs() -> None:
    # An initializer that is also a graph input could be overridden by a caller: Verinet never
    # lets a request replace a model's weights.
    model = mlp()
    w0 = next(t for t in model.graph.initializer if t.name == "w0")
    model.graph.input.append(
        onnx.helper.make_tensor_value_info("w0", onnx.TensorProto.FLOAT, list(w0.dims))
    )
    executor = OnnxExecutor(model.SerializeToString())
    assert [spec.name for spec in executor.inputs] == ["x"]
    with pytest.raises(UnexpectedInput, match="w0"):
        executor.run({"x": _x(1, 16), "w0": np.zeros(tuple(w0.dims), np.float32)})


def test_runtime_failure_is_execution_failed() -> None:
    # Reshape to a fixed element count fails at run time for other batch sizes.
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])
    shape = onnx.numpy_helper.from_array(np.array([2, 4], np.int64), "shape")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Reshape", ["x", "shape"], ["y"])], "r", [x], [y], [shape]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)])
    model.ir_version = 10
    executor = OnnxExecutor(model.SerializeToString())
    assert executor.run({"x": _x(2, 4)})["y"].shape == (2, 4)
    with pytest.raises(ExecutionFailed, match="failed on this input"):
        executor.run({"x": _x(3, 4)})


def test_ir_version_newer_than_onnxruntime_is_refused_clearly() -> None:
    model = mlp()
    model.ir_version = 14
    with pytest.raises(UnsupportedSignature, match="ir_version = 13"):
        OnnxExecutor(model.SerializeToString())


def test_profile_pins_onnxruntime_version(mlp_bytes: bytes) -> None:
    with pytest.raises(ConfigError, match="requires onnxruntime>=9"):
        OnnxExecutor(mlp_bytes, profile=ExecutionProfile(onnxruntime=">=9"))


def test_manifest_binds_the_file(mlp_bytes: bytes) -> None:
    manifest = draft_manifest(mlp_bytes, name="mlp", fee=1, license="MIT")
    assert manifest.model == file_cid(mlp_bytes)
    assert OnnxExecutor(mlp_bytes, manifest).model_cid == manifest.model
    other = mlp(seed=1).SerializeToString()
    with pytest.raises(ModelCidMismatch):
        OnnxExecutor(other, manifest)


def test_manifest_signature_must_match_the_graph(mlp_bytes: bytes) -> None:
    manifest = draft_manifest(mlp_bytes, name="mlp", fee=1, license="MIT")
    wrong = manifest.model_copy(
        update={"inputs": (TensorSpec(name="x", dtype="float32", shape=("batch", 8)),)}
    )
    with pytest.raises(UnsupportedSignature, match="axis 1: 8 != graph's fixed 16"):
        OnnxExecutor(mlp_bytes, wrong)
    # A manifest may fix a dimension the graph leaves open.
    fixed = manifest.model_copy(
        update={"inputs": (TensorSpec(name="x", dtype="float32", shape=(2, 16)),)}
    )
    with pytest.raises(ShapeMismatch):
        OnnxExecutor(mlp_bytes, fixed).run({"x": _x(3, 16)})


@pytest.mark.parametrize("build", [cnn, attention], ids=["cnn", "attention"])
def test_sample_models_run(build: object) -> None:
    model = build()  # type: ignore[operator]
    executor = OnnxExecutor(model.SerializeToString())
    feeds = {
        spec.name: _x(*[2 if isinstance(d, str) else d for d in spec.shape])
        for spec in executor.inputs
    }
    outputs = executor.run(feeds)
    assert all(np.isfinite(v).all() for v in outputs.values())


def _endless_loop() -> onnx.ModelProto:
    h = onnx.helper
    body = h.make_graph(
        [
            h.make_node("Identity", ["cond_in"], ["cond_out"]),
            h.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            h.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            h.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
            h.make_tensor_value_info("v_in", onnx.TensorProto.FLOAT, [1]),
        ],
        [
            h.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
            h.make_tensor_value_info("v_out", onnx.TensorProto.FLOAT, [1]),
        ],
    )
    graph = h.make_graph(
        [h.make_node("Loop", ["", "go", "x"], ["y"], body=body)],
        "forever",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        [
            onnx.numpy_helper.from_array(np.array(True), "go"),
            onnx.numpy_helper.from_array(np.array([1], np.float32), "one"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def test_a_run_that_never_ends_is_stopped_at_its_deadline() -> None:
    # Static checks cannot tell a Loop that never ends; the watchdog stops it.
    executor = OnnxExecutor(_endless_loop().SerializeToString(), timeout=0.2)
    with pytest.raises(ExecutionTimeout, match=r"0\.2 s limit"):
        executor.run({"x": np.zeros(1, np.float32)})
    with pytest.raises(ExecutionTimeout):
        executor.run_traced({"x": np.zeros(1, np.float32)})
    # The executor stays usable: a finished run's deadline never fires on a later one.
    fast = OnnxExecutor(mlp().SerializeToString(), timeout=5.0)
    for _ in range(50):
        fast.run({"x": _x(1, 16)})
