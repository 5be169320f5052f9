"""A model's tensor signature, read from the ONNX graph and checked against its manifest."""

from __future__ import annotations

import onnx
from pydantic import ValidationError

from verinet.errors import UnsupportedSignature
from verinet.hub.manifest import DTYPE_NAMES, Dim, ModelManifest, TensorSpec


def _spec(value: onnx.ValueInfoProto, position: int) -> TensorSpec:
    if not value.type.HasField("tensor_type"):
        raise UnsupportedSignature(
            f"graph value {value.name!r} is not a tensor ({value.type.WhichOneof('value')}); "
            "Verinet models take and return tensors only (skl2onnx: options={'zipmap': False})"
        )
    tensor = value.type.tensor_type
    dtype = DTYPE_NAMES.get(tensor.elem_type)
    if dtype is None:
        raise UnsupportedSignature(
            f"graph value {value.name!r} has element type "
            f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}, which Verinet cannot carry"
        )
    if not tensor.HasField("shape"):
        raise UnsupportedSignature(f"graph value {value.name!r} declares no shape; give its rank")
    dims: list[Dim] = []
    for axis, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.dim_param and dim.dim_param.isascii() and dim.dim_param.isidentifier():
            dims.append(dim.dim_param)
        else:
            # An anonymous dynamic dimension: give it a name unique to this value and axis.
            dims.append(f"d{position}_{axis}")
    try:
        return TensorSpec(name=value.name, dtype=dtype, shape=tuple(dims))
    except ValidationError as exc:
        raise UnsupportedSignature(
            f"graph value {value.name[:64]!r} cannot be declared in a manifest: "
            f"{exc.errors()[0]['msg']}; rename it or its dimensions (ASCII identifiers)"
        ) from None


def graph_signature(
    model: onnx.ModelProto,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of the main graph. Graph inputs that also have an initializer are
    weights with a default, not request inputs, and are left out: Verinet never lets a request
    override a model's weights."""
    weights = {init.name for init in model.graph.initializer}
    feeds = [value for value in model.graph.input if value.name not in weights]
    inputs = tuple(_spec(value, i) for i, value in enumerate(feeds))
    outputs = tuple(_spec(value, len(feeds) + i) for i, value in enumerate(model.graph.output))
    return inputs, outputs


def _compatible(declared: TensorSpec, actual: TensorSpec) -> str | None:
    if declared.name != actual.name:
        return f"name {declared.name!r} != graph's {actual.name!r}"
    if declared.dtype != actual.dtype:
        return f"{declared.name!r}: dtype {declared.dtype} != graph's {actual.dtype}"
    if len(declared.shape) != len(actual.shape):
        return f"{declared.name!r}: rank {len(declared.shape)} != graph's {len(actual.shape)}"
    for axis, (mine, theirs) in enumerate(zip(declared.shape, actual.shape, strict=True)):
        # The manifest may fix a dimension the graph leaves open, never the reverse.
        if isinstance(theirs, int) and mine != theirs:
            return f"{declared.name!r} axis {axis}: {mine} != graph's fixed {theirs}"
    return None


def check_signature(model: onnx.ModelProto, manifest: ModelManifest) -> None:
    """Refuse a manifest whose inputs/outputs disagree with the graph (names in order, dtypes,
    ranks, and every dimension the graph fixes)."""
    inputs, outputs = graph_signature(model)
    for kind, declared, actual in (
        ("inputs", manifest.inputs, inputs),
        ("outputs", manifest.outputs, outputs),
    ):
        if len(declared) != len(actual):
            raise UnsupportedSignature(
                f"the manifest declares {len(declared)} {kind}, the graph has {len(actual)}: "
                f"{[spec.name for spec in actual]}"
            )
        for mine, theirs in zip(declared, actual, strict=True):
            problem = _compatible(mine, theirs)
            if problem:
                raise UnsupportedSignature(f"manifest {kind} disagree with the graph: {problem}")
    if "optimistic" in manifest.modes:
        reason = untraceable_reason(model)
        if reason:
            raise UnsupportedSignature(
                f"optimistic mode needs a model whose ops replay alone exactly; {reason} and "
                "onnxruntime computes float16 ops in float32 without rounding between them. "
                "Drop 'optimistic' from modes or use float32"
            )


_HALF = frozenset({onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16})


def untraceable_reason(model: onnx.ModelProto) -> str | None:
    """Why a traced run of `model` could not be replayed op by op, or None if it can.

    onnxruntime's CPU provider has no float16 kernels for most ops: it wraps them in Casts to
    float32 (even under ``disable_all``) and drops the Cast pair between two such ops, so the
    second op reads an unrounded float32 value while the trace records the rounded float16 one.
    Re-executing that op alone then gives other bits, and an honest node would lose a dispute.
    Measured on onnxruntime 1.31 (``y = (x * x) * x`` in float16). Such models may use signed
    and quorum modes, not optimistic.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, ValueError):
        inferred = model
    graph = inferred.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type in _HALF:
            return f"value {value.name!r} is float16"
    for init in graph.initializer:
        if init.data_type in _HALF:
            return f"weight {init.name!r} is float16"
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i in _HALF:
                return f"op {node.name or node.op_type!r} casts to float16"
    return None
