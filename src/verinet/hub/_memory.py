"""`memory_bound`: an upper bound on the memory one run of a checked model can hold, or None.

The node runs a model in its own process only when this bound is small (`verinet.node.worker`),
so an under-estimate is a crash and an over-estimate only costs a worker round trip: every
constant below errs high, and an op whose scratch is not modelled here makes the bound None.

What onnxruntime holds during a run (CPU provider, graph optimization ``disable_all``):

- every value of the graph, as if none were ever freed (shapes from ONNX shape inference, with
  each request symbol at the most the request budget allows);
- each node's scratch (``_scratch``): the column buffer of the im2col convolutions, the packed
  copies of a matrix product's operands, index tables and transposed copies of reductions and
  normalizations, the intermediates of ops onnxruntime expands into their function body;
- `RUN_OVERHEAD` for what does not scale with the model (per-thread GEMM packing buffers, the
  arena's bookkeeping), and one `PAGE` per buffer for allocator rounding.

Ops with scratch that depends on data or on attributes not modelled here (recurrent ops,
Einsum, attention, NonMaxSuppression, SVMs, tree ensembles, subgraphs...) give None: the model
then runs in a capped worker process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from onnx import ModelProto, NodeProto

from verinet.hub.manifest import ELEMENT_TYPES
from verinet.hub.safety import (
    _BITS,
    DEFAULT_LIMITS,
    _for_inference,
    _graphs,
    _prod,
    _stored_bytes,
    infer,
)

MiB = 1 << 20
RUN_OVERHEAD = 8 * MiB
"""Per-run memory that does not scale with the model: per-thread packing buffers of the GEMM
kernels, the arena's region headers, first-run initialization. Measured at 0.13 MiB for a
one-op model on onnxruntime 1.31 (``tests/hub/test_memory_bound.py``)."""
PAGE = 4096
"""Added per value and per scratch buffer: a fresh allocation touches whole pages, and the
arena rounds each request up."""
COPY_BYTES = 16
"""Bytes per input and output element for ops whose kernels build copies or index tables the
size of their operands: a transposed copy of an 8-byte element type plus an int64 index per
element (reductions, softmax on an inner axis, TopK's heaps, normalization statistics)."""
STRING_REQUEST_BYTES = 4
"""The least a string element costs against a request's byte budget (its u32 length)."""


def _ops(names: str) -> frozenset[str]:
    return frozenset(names.split())


# Kernels that write their outputs and allocate nothing else of any size.
_NO_SCRATCH = _ops(
    "Abs Acos Acosh Add And Asin Asinh Atan Atanh BitCast BitShift BitwiseAnd BitwiseNot "
    "BitwiseOr BitwiseXor Cast Ceil Clip Concat Constant ConstantOfShape Cos Cosh Div Dropout "
    "Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Greater Identity "
    "IsInf IsNaN Less Log Mod Mul Neg Not OneHot Or Pow Range Reciprocal Relu Reshape "
    "ReverseSequence Round Scatter ScatterElements ScatterND Shape Sigmoid Sign Sin Sinh Size "
    "Slice Split Sqrt Squeeze Sub Tan Tanh Tile Transpose Trilu Unsqueeze Where Xor "
    "QuantizeLinear DequantizeLinear"
)
# Kernels whose scratch is at most COPY_BYTES per element of their inputs and outputs.
_COPIES = _ops(
    "ArgMax ArgMin AveragePool BatchNormalization BlackmanWindow Celu Col2Im CumProd CumSum "
    "DepthToSpace Det DynamicQuantizeLinear Elu Gelu GlobalAveragePool GlobalLpPool "
    "GlobalMaxPool GreaterOrEqual HammingWindow HannWindow HardSigmoid Hardmax "
    "InstanceNormalization LayerNormalization LeakyRelu LessOrEqual LogSoftmax LpNormalization "
    "LpPool Max MaxPool MaxUnpool Mean MeanVarianceNormalization MelWeightMatrix Min PRelu Pad "
    "RMSNormalization ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean "
    "ReduceMin ReduceProd ReduceSum ReduceSumSquare Resize RotaryEmbedding Selu Shrink Softmax "
    "Softplus Softsign SpaceToDepth Sum TensorScatter ThresholdedRelu TopK Upsample "
    "ArrayFeatureExtractor Binarizer FeatureVectorizer Imputer LinearClassifier "
    "LinearRegressor Normalizer OneHotEncoder Scaler"
)
# Ops onnxruntime 1.31 has no CPU kernel for, run as their function body: the number of
# intermediate values that body creates, each at most the size of the largest operand.
_EXPANDED = {"CastLike": 1, "HardSwish": 2, "Mish": 3, "Swish": 5, "SwiGLU": 6}

_Shape = tuple[list[int], int]  # dims, bits per element
_Scratch = Callable[[NodeProto, list[_Shape | None], list[_Shape | None]], int | None]


def _nbytes(shape: _Shape | None) -> int:
    return 0 if shape is None else (_prod(shape[0]) * shape[1] + 7) // 8


def _elements(shapes: Iterable[_Shape | None]) -> int:
    return sum(_prod(s[0]) for s in shapes if s is not None)


def _im2col(x: _Shape, w: _Shape, y: _Shape, group: int, per_pixel: int) -> int:
    """Column buffer of an im2col convolution: (C_in / group x kernel) rows by the output
    image's pixels, `per_pixel` bytes each, one image and group at a time (the same buffer is
    reused) but counted for every image and group, to err high."""
    kernel_dim = _prod(w[0][1:])  # C_in / group x kernel, as the weight is laid out
    pixels = _prod(y[0][2:])
    images = y[0][0] if y[0] else 1
    return kernel_dim * pixels * per_pixel * max(images, 1) * max(group, 1)


def _attr(node: NodeProto, name: str, default: int) -> int:
    found = [a.i for a in node.attribute if a.name == name]
    return found[0] if found else default


def _conv(node: NodeProto, ins: list[_Shape | None], outs: list[_Shape | None]) -> int | None:
    x, w, y = ins[0] if ins else None, ins[1] if len(ins) > 1 else None, outs[0] if outs else None
    if x is None or w is None or y is None or len(y[0]) < 3:
        return None
    group = _attr(node, "group", 1)
    if node.op_type == "Conv":
        # MLAS expands to (kernel_dim x pixels) floats and may add a filter-count x pixels
        # accumulator; both counted.
        columns = _im2col(x, w, y, group, (x[1] + 7) // 8)
        return columns + _nbytes(y) * max(group, 1)
    if node.op_type == "ConvInteger":
        return _im2col(x, w, y, group, 1)
    if node.op_type == "QLinearConv":
        # uint8 columns, an int32 accumulator per output element, and NHWC copies of the input
        # and the output (the quantized kernels work channels-last).
        return _im2col(x, w, y, group, 1) + 4 * _prod(y[0]) + _nbytes(x) + _nbytes(y)
    # ConvTranspose: a GEMM writes (C_out / group x kernel) rows by the INPUT image's pixels,
    # then col2im folds them into the output: a small input with a large kernel makes a huge
    # buffer. The weight is also kept transposed (packed when the session starts).
    c_out_per_group = w[0][1] if len(w[0]) > 1 else 1
    kernel = _prod(w[0][2:])
    pixels = _prod(x[0][2:])
    images = max(x[0][0] if x[0] else 1, 1)
    return 4 * c_out_per_group * kernel * pixels * images * max(group, 1) + _nbytes(w)


def _matmul(node: NodeProto, ins: list[_Shape | None], outs: list[_Shape | None]) -> int:
    # A packed copy of each operand at most (constant weights are packed once, at session
    # start; other operands per call), and for the integer products an int32 accumulator.
    packed = sum(_nbytes(s) for s in ins[:2])
    if node.op_type in ("MatMulInteger", "QLinearMatMul"):
        return 2 * packed + 4 * _elements(outs)
    return packed


def _lrn(node: NodeProto, ins: list[_Shape | None], outs: list[_Shape | None]) -> int | None:
    # A padded square of (C + size - 1) channels per image: `size` is an attribute the model
    # chooses, so it scales the buffer past the operand.
    x = ins[0] if ins else None
    if x is None or len(x[0]) < 2:
        return None
    size = _attr(node, "size", 1)
    per_channel = _prod(x[0]) // max(x[0][1], 1)
    return 8 * (x[0][1] + max(size, 1)) * per_channel + COPY_BYTES * _elements(ins + outs)


_FORMULAS: dict[str, _Scratch] = {
    "Conv": _conv,
    "ConvInteger": _conv,
    "QLinearConv": _conv,
    "ConvTranspose": _conv,
    "MatMul": _matmul,
    "Gemm": _matmul,
    "MatMulInteger": _matmul,
    "QLinearMatMul": _matmul,
    "LRN": _lrn,
}


def _scratch(node: NodeProto, ins: list[_Shape | None], outs: list[_Shape | None]) -> int | None:
    """Bytes a node's kernel allocates besides its outputs, or None if not modelled."""
    op = node.op_type
    if op in _NO_SCRATCH:
        return 0
    if op in _COPIES:
        return COPY_BYTES * _elements(ins + outs)
    if op in _EXPANDED:
        largest = max((_nbytes(s) for s in ins + outs), default=0)
        return _EXPANDED[op] * 2 * largest  # 2: an intermediate may widen to 8-byte elements
    formula = _FORMULAS.get(op)
    return formula(node, ins, outs) if formula else None


def _symbol_bounds(
    inputs: Sequence[tuple[str, str, tuple[int | str, ...]]], max_input_bytes: int
) -> dict[str, int]:
    """The largest value each request symbol can take within `max_input_bytes`.

    A symbol is bounded by an input only if every other dim of that input is a known positive
    size: in ``(n, m)`` either may be 0, leaving the other free with no bytes sent, so such a
    symbol gets no bound here (and a value it sizes makes `memory_bound` None)."""
    sizes: dict[str, int] = {}
    for _, dtype, shape in inputs:
        code = ELEMENT_TYPES.get(dtype)
        bits = _BITS.get(code) if code is not None else None
        per_element = STRING_REQUEST_BYTES if dtype == "string" else max((bits or 8) // 8, 1)
        for symbol in {d for d in shape if isinstance(d, str)}:
            others = [d for d in shape if d != symbol]
            if not all(isinstance(d, int) and d > 0 for d in others):
                continue
            most = max_input_bytes // (per_element * _prod(int(d) for d in others))
            sizes[symbol] = min(sizes.get(symbol, most), most)
    return sizes


def memory_bound(
    model: ModelProto,
    inputs: Iterable[tuple[str, str, tuple[int | str, ...]]],
    max_input_bytes: int,
) -> int | None:
    """An upper bound on the bytes one run of `model` can hold, proven from its graph alone,
    or None when none can be.

    `inputs` are the request tensors as (name, dtype, shape) from the manifest (numpy dtype
    names, symbolic dims included), and `max_input_bytes` the most a request may send (the
    manifest's input policy). The manifest's shapes replace the graph's declared input shapes
    (the manifest may fix what the graph leaves open, and requests are checked against it).
    Shape inference (with constant folding of shape arguments) must then give every value a
    shape of known dims or bounded symbols; a dim it cannot pin (``NonZero``, a shape read
    from an input, a loop body) means no bound. See the module docstring for what is counted.
    """
    specs = list(inputs)
    sizes = _symbol_bounds(specs, max_input_bytes)
    try:
        graphs = _graphs(model, DEFAULT_LIMITS)
        if len(graphs) != 1:
            return None  # control flow: a loop's trip count is data
        slim = _for_inference(model, DEFAULT_LIMITS)
        weights = {t.name for t in model.graph.initializer}
        by_name = {name: shape for name, _, shape in specs}
        feeds = [v for v in slim.graph.input if v.name not in weights]
        if sorted(v.name for v in feeds) != sorted(by_name):
            return None  # the manifest does not describe this graph's inputs
        for value in feeds:
            declared = value.type.tensor_type.shape
            declared.ClearField("dim")
            for size in by_name[value.name]:
                if isinstance(size, int):
                    declared.dim.add(dim_value=size)
                else:
                    declared.dim.add(dim_param=size)
        inferred = infer(slim, strict=True)
    except Exception:  # a model inference cannot follow has no static bound
        return None
    graph = inferred.graph
    types = {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}
    shapes: dict[str, _Shape] = {
        t.name: (list(t.dims), _BITS.get(t.data_type, 64)) for t in model.graph.initializer
    }
    total = RUN_OVERHEAD + sum(
        _stored_bytes(t, "the main graph") + PAGE for t in model.graph.initializer
    )
    names = [v.name for v in graph.input] + [o for node in graph.node for o in node.output if o]
    for name in dict.fromkeys(names):
        value_type = types.get(name)
        if value_type is None or not value_type.HasField("tensor_type"):
            return None
        tensor = value_type.tensor_type
        bits = _BITS.get(tensor.elem_type)
        if bits is None or not tensor.HasField("shape"):
            return None  # strings live on the heap at sizes the graph does not say
        dims: list[int] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value >= 0:
                dims.append(dim.dim_value)
            elif dim.HasField("dim_param") and dim.dim_param in sizes:
                dims.append(sizes[dim.dim_param])
            else:
                return None
        shapes[name] = (dims, bits)
        total += _nbytes(shapes[name]) + PAGE
    for node in graph.node:
        if node.domain not in ("", "ai.onnx", "ai.onnx.ml"):
            return None
        ins = [shapes.get(i) if i else None for i in node.input]
        outs = [shapes.get(o) if o else None for o in node.output]
        extra = _scratch(node, ins, outs)
        if extra is None:
            return None
        total += extra + (PAGE if extra else 0)
    return total
