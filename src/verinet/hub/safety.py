"""Safe loading of untrusted ONNX model files, before any onnxruntime session exists.

Threat model: a model file is attacker-controlled input. Anyone can publish a model, and a node
fetches it from peers it does not trust. Loading it must not

- crash the node (malformed protobuf, messages nested past the parser's recursion limit);
- exhaust memory (a small file whose dims, sparse dense shape or constant shape arguments make
  the runtime allocate terabytes: ``ConstantOfShape([2**20, 2**20])``, ``Expand``, ``Tile``...);
- load native code (a custom-op domain needs a shared library; Verinet never loads one);
- read local files (an external-data tensor names a path, e.g. ``/etc/passwd``, the runtime opens);
- run ops whose outputs honest nodes cannot agree on (random ops), or whose values are not plain
  tensors (sequences, maps, optionals), which the protocol cannot hash and compare.

`check_model` refuses such files with a typed `UnsafeModel` whose message says what was found,
where (names cut to 80 characters), and what to do. Checking is bounded by the file: the wire
scan (`verinet.hub._wire`) caps what parsing builds, and data propagation runs only on short
vectors (`infer`); tested at peak memory <= 4 x file size + 256 MiB and time <= 8 s + 0.25 s
per MiB (``tests/hub/test_hostile_models.py``). Checks run cheapest first; nothing is parsed
before the size check. Static checks cannot see every allocation (a shape computed at run
time from an input is only known then): the executor stops runs at a deadline, and a memory
cap belongs to the process that runs models (the node's worker, with an address-space limit).
This module never imports onnxruntime.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import onnx
import onnx.defs
from onnx import GraphProto, ModelProto, NodeProto, SparseTensorProto, TensorProto
from onnx.numpy_helper import to_array

from verinet.errors import (
    CustomDomain,
    DisallowedOperator,
    ExternalData,
    GraphTooDeep,
    MalformedModel,
    ModelCidMismatch,
    ModelTooLarge,
    TensorTooLarge,
    UnsupportedSignature,
)
from verinet.hub import cid as cids
from verinet.hub._wire import scan_model
from verinet.hub.files import file_cid

_PROTOBUF_MAX = (1 << 31) - 1  # protobuf cannot serialize more (the checker and inference must)


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_bytes: int = 1 << 30  # whole file
    max_tensor_elements: int = 1 << 28  # any initializer / Constant / constant-produced shape
    max_total_initializer_bytes: int = 1 << 30
    max_nodes: int = 100_000  # all nodes, subgraphs included
    max_graph_depth: int = 8  # nesting of If/Loop/Scan bodies; the main graph is depth 1
    # What parsing can cost, counted on the wire before parsing (verinet.hub._wire):
    max_entries: int = 1 << 22  # messages + strings + varint numbers in the whole file
    max_messages: int = 1 << 18  # messages alone: each parses to a few hundred bytes
    max_rank: int = 64  # dims of any tensor or shape (numpy's own limit)
    max_name_bytes: int = 4096  # any name: node, value, tensor, attribute, op, domain, dim

    def __post_init__(self) -> None:
        # A model over 2 GiB needs external data, refused anyway; allowing one would only make
        # the checker and shape inference fail, silently skipping the checks they carry.
        if not 0 < self.max_file_bytes <= _PROTOBUF_MAX:
            raise ValueError(f"max_file_bytes must be in 1..{_PROTOBUF_MAX}")


DEFAULT_LIMITS = Limits()

ALLOWED_DOMAINS: frozenset[str] = frozenset({"", "ai.onnx", "ai.onnx.ml"})
_MAX_OPSET = {"": onnx.defs.onnx_opset_version(), "ai.onnx.ml": onnx.defs.onnx_ml_opset_version()}
NONDETERMINISTIC_OPS: frozenset[str] = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
    | {"Multinomial", "Bernoulli"}
)


def _non_tensor(schema: onnx.defs.OpSchema) -> bool:
    # Refused if some formal input/output admits no tensor type at all (Sequence*, Optional*,
    # ZipMap, ...). If, Loop and Identity also take sequences but need not: the checker and the
    # signature check keep them on tensors.
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    return any(
        not any(t.startswith("tensor(") for t in allowed.get(f.type_str, [f.type_str]))
        for f in [*schema.inputs, *schema.outputs]
    )


_SCHEMAS = [s for s in onnx.defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx.ml")]
NON_TENSOR_OPS: frozenset[str] = frozenset(s.name for s in _SCHEMAS if _non_tensor(s))
ALLOWED_OPS: frozenset[tuple[str, str]] = frozenset(
    (s.domain, s.name) for s in _SCHEMAS if s.name not in NONDETERMINISTIC_OPS | NON_TENSOR_OPS
)

_BITS_TABLE = """2 UINT2 INT2 | 4 UINT4 INT4 FLOAT4E2M1 | 6 FLOAT6E2M3 FLOAT6E3M2 | 8 UINT8 INT8
    BOOL FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ FLOAT8E8M0 | 16 UINT16 INT16 FLOAT16
    BFLOAT16 | 32 FLOAT INT32 UINT32 | 64 INT64 UINT64 DOUBLE COMPLEX64 | 128 COMPLEX128"""
_BITS = {  # bits per element of every fixed-width data type (STRING is not one)
    TensorProto.DataType.Value(name): int(bits)
    for bits, *names in (group.split() for group in _BITS_TABLE.split("|"))
    for name in names
}
_AnyTensor = TensorProto | SparseTensorProto
_Graphs = list[tuple[GraphProto, str]]


def check_model(
    data: bytes, *, expected_cid: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> ModelProto:
    """Parse and check an untrusted model file; return the proto or raise `UnsafeModel`."""
    if len(data) > limits.max_file_bytes:
        raise ModelTooLarge(
            f"model file is {len(data)} bytes, over the limit of {limits.max_file_bytes}; "
            "quantize or shrink the model, or raise Limits.max_file_bytes"
        )
    if expected_cid is not None:
        actual, expected = file_cid(data), cids.normalize(expected_cid)
        if actual != expected:
            raise ModelCidMismatch(
                f"model bytes hash to {actual}, not the expected {expected}: the file was altered "
                "or is the wrong file; fetch it again from another peer"
            )
    # Count before parsing: a parse builds an object per entry, whatever the entry's size.
    scan_model(
        data,
        max_entries=limits.max_entries,
        max_messages=limits.max_messages,
        max_nodes=limits.max_nodes,
        max_rank=limits.max_rank,
        max_name_bytes=limits.max_name_bytes,
    )
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # DecodeError, RecursionError, ...: all mean "not a model"
        raise MalformedModel(
            f"not a parsable ONNX model ({type(exc).__name__}: {_clip(str(exc))}); re-export "
            "with onnx.save"
        ) from None
    check_model_proto(model, limits=limits)
    return model


def check_model_proto(model: ModelProto, *, limits: Limits = DEFAULT_LIMITS) -> None:
    """Structural checks on a parsed model (everything `check_model` does after parsing)."""
    if len(model.graph.node) == 0:
        raise MalformedModel("the model has no graph or an empty graph (0 nodes); re-export it")
    graphs = _graphs(model, limits)
    _check_domains(model, graphs)
    consts = _check_ops(graphs, limits)
    _check_tensors([t for graph, where in graphs for t in _tensors(graph, where)], limits)
    _check_constants(graphs, consts, limits)
    _check_signature(model.graph)
    # Not full_check: its strict shape inference refuses models onnxruntime runs (partly
    # inferable shapes); the lenient inference below is the part we need. The checker runs
    # first because shape-inference functions assume nodes that match their schemas.
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise MalformedModel(
            f"onnx.checker refused the model: {_clip(str(exc))}; fix the exporter's output and "
            "re-export"
        ) from None
    _check_inferred_shapes(model, limits)


def _cut(value: object) -> str:
    """A name from the file, at most 80 characters in a message: the file chooses its length."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= 80:
        return text
    return f"{text[:80]}…({len(text.encode('utf-8', 'replace'))} bytes)"


def _name(value: object) -> str:
    """`_cut`, quoted."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= 80:
        return repr(text)
    return f"{text[:80]!r}…({len(text.encode('utf-8', 'replace'))} bytes)"


def _clip(text: str, most: int = 400) -> str:
    """An error text that may quote the file (the checker's, the parser's), cut short."""
    return text if len(text) <= most else f"{text[:most]}…({len(text)} characters)"


def _node_at(node: NodeProto, where: str) -> str:
    domain, op = _cut(node.domain or "ai.onnx"), _cut(node.op_type)
    return f"{domain}::{op} node {_name(node.name)} in {where}"


def _prod(dims: Iterable[int]) -> int:
    """Product of dims, saturating past 2**64: many big dims would make a huge, slow int."""
    values = list(dims)
    if 0 in values:
        return 0
    product = 1
    for d in values:
        product *= d
        if product > 1 << 64:
            break
    return product


def _short(dims: Iterable[object]) -> str:
    values = list(dims)
    return str(values[:8])[:-1] + ", ...]" if len(values) > 8 else str(values)


def _graphs(model: ModelProto, limits: Limits) -> _Graphs:
    # An explicit stack: the attacker chooses the nesting, so no Python recursion over it.
    stack = [(model.graph, 1, "main graph")]
    for i, info in enumerate(model.training_info):
        at = f"training_info[{i}]"
        stack += [(info.initialization, 1, f"{at} initialization"), (info.algorithm, 1, at)]
    found: _Graphs = []
    nodes = 0
    while stack:
        graph, depth, where = stack.pop()
        if depth > limits.max_graph_depth:
            raise GraphTooDeep(
                f"subgraph {where} is nested {depth} deep, over the limit of "
                f"{limits.max_graph_depth}; flatten nested If/Loop/Scan bodies"
            )
        found.append((graph, where))
        nodes += len(graph.node)
        if nodes > limits.max_nodes:
            raise ModelTooLarge(
                f"the model has more than {limits.max_nodes} nodes ({nodes} counted so far, "
                "subgraphs included); simplify it (e.g. onnxsim) or raise Limits.max_nodes"
            )
        for node in graph.node:
            for attr in node.attribute:
                # g/graphs whatever attr.type claims: the checker and inference read them too.
                subs = [attr.g] if attr.HasField("g") else []
                subs += attr.graphs
                if subs:  # the text only when needed: most attributes hold no graph
                    at = f"{where} > {_cut(node.op_type)} {_name(node.name)}.{_cut(attr.name)}"
                    stack += [(sub, depth + 1, at) for sub in subs]
    return found


def _check_domains(model: ModelProto, graphs: _Graphs) -> None:
    if model.functions:
        names = ", ".join(f"{_name(f.domain)}::{_name(f.name)}" for f in model.functions[:8])
        raise CustomDomain(
            f"the model defines {len(model.functions)} local function(s) ({names}); inline "
            "them before publishing: onnx.inliner.inline_local_functions(model)"
        )
    found = [(o.domain, "opset_import") for o in model.opset_import]
    found += [(n.domain, _node_at(n, where)) for graph, where in graphs for n in graph.node]
    for domain, where in found:
        if domain not in ALLOWED_DOMAINS:
            raise CustomDomain(
                f"{where} uses custom domain {_name(domain)}, which needs a custom-op library "
                "Verinet never loads; re-export with standard ONNX ops only (for com.microsoft: "
                "save the model before onnxruntime graph optimizations)"
            )
    for opset in model.opset_import:
        known = _MAX_OPSET["" if opset.domain == "ai.onnx" else opset.domain]
        if opset.version > known:
            raise DisallowedOperator(
                f"opset_import {opset.domain or 'ai.onnx'} version {opset.version} is newer than "
                f"this onnx knows; re-export with opset <= {known}"
            )


def _check_ops(graphs: _Graphs, limits: Limits) -> dict[str, TensorProto]:
    """Refuse ops outside `ALLOWED_OPS`; return every constant tensor by value name."""
    consts: dict[str, TensorProto] = {}
    for graph, where in graphs:
        consts.update((t.name, t) for t in graph.initializer)
        for node in graph.node:
            op, domain = node.op_type, "" if node.domain == "ai.onnx" else node.domain
            if not isinstance(op, str) or not onnx.defs.has(op, domain):  # bytes: bad UTF-8
                raise DisallowedOperator(
                    f"{_node_at(node, where)}: {_name(op)} is not a standard op of domain "
                    f"{_name(domain or 'ai.onnx')}; re-export with standard ONNX ops"
                )
            if op in NONDETERMINISTIC_OPS:
                raise DisallowedOperator(
                    f"{_node_at(node, where)} is nondeterministic: honest nodes would disagree "
                    "on its output; feed randomness as an input or bake it into a constant"
                )
            if (domain, op) not in ALLOWED_OPS:
                raise DisallowedOperator(
                    f"{_node_at(node, where)} works on sequences/maps/optionals, not plain "
                    "tensors, which Verinet cannot carry; rewrite with tensor ops (skl2onnx "
                    "classifiers: convert with options={'zipmap': False})"
                )
            if op != "Constant":
                continue
            value = [a.t for a in node.attribute if a.name == "value" and a.HasField("t")]
            if value and node.output:
                consts[node.output[0]] = value[0]
            # value_ints / value_floats / value_strings become tensors too; tensors are checked
            # with the others (_check_tensors).
            count = sum(len(a.ints) + len(a.floats) + len(a.strings) for a in node.attribute)
            if count > limits.max_tensor_elements:
                raise TensorTooLarge(
                    f"{_node_at(node, where)} holds a list of {count} values, over the limit of "
                    f"{limits.max_tensor_elements}; shrink it or raise Limits.max_tensor_elements"
                )
    return consts


def _tensors(graph: GraphProto, where: str) -> list[tuple[_AnyTensor, str, bool]]:
    """(tensor, where, is_initializer) for every tensor stored in `graph` (not its subgraphs)."""
    found: list[tuple[_AnyTensor, str, bool]] = []
    found += [(t, f"initializer {_name(t.name)} of {where}", True) for t in graph.initializer]
    for s in graph.sparse_initializer:
        found.append((s, f"sparse initializer {_name(s.values.name)} of {where}", True))
    for node in graph.node:
        for attr in node.attribute:
            tensors: list[_AnyTensor] = [attr.t] if attr.HasField("t") else []
            tensors += [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
            tensors += [*attr.tensors, *attr.sparse_tensors]
            at = f"attribute {_name(attr.name)} of {_node_at(node, where)}" if tensors else ""
            found += [(t, at, False) for t in tensors]
    return found


def _check_tensors(tensors: list[tuple[_AnyTensor, str, bool]], limits: Limits) -> None:
    total = 0
    for tensor, where, is_initializer in tensors:
        if isinstance(tensor, SparseTensorProto):
            for part, role in ((tensor.values, "values"), (tensor.indices, "indices")):
                _check_external(part, f"{role} of {where}")
                _stored_bytes(part, f"{role} of {where}")
            # onnxruntime densifies sparse initializers: the dense shape is what it allocates.
            count = _elements(tensor, where)
            nbytes = -(-count * _BITS.get(tensor.values.data_type, 8) // 8)
        else:
            _check_external(tensor, where)
            nbytes, count = _stored_bytes(tensor, where), _elements(tensor, where)
        if count > limits.max_tensor_elements:
            raise TensorTooLarge(
                f"{where} has {count} elements, over the limit of "
                f"{limits.max_tensor_elements}; shrink it or raise Limits.max_tensor_elements"
            )
        total += nbytes if is_initializer else 0
        if total > limits.max_total_initializer_bytes:
            raise ModelTooLarge(
                f"initializers hold more than {limits.max_total_initializer_bytes} bytes "
                f"({total} counted at {where}); quantize the weights or raise the limit"
            )


def _check_external(t: TensorProto, where: str) -> None:
    if t.data_location == TensorProto.EXTERNAL or len(t.external_data) > 0:
        location = [e.value for e in t.external_data if e.key == "location"] or ["?"]
        raise ExternalData(
            f"{where} keeps its data in an external file (location {_name(location[0])}); embed "
            "weights in the file: onnx.save(model, path, save_as_external_data=False)"
        )


def _elements(t: _AnyTensor, where: str) -> int:
    if len(t.dims) > DEFAULT_LIMITS.max_rank:  # also for parsed models the wire scan never saw
        raise TensorTooLarge(f"{where} has rank {len(t.dims)}; the file is forged")
    if any(d < 0 for d in t.dims):
        raise MalformedModel(f"{where} has negative dims {_short(t.dims)}; re-export it")
    return _prod(t.dims)  # Python ints: no int64 overflow, whatever the dims


def _stored_bytes(t: TensorProto, where: str) -> int:
    """Bytes the tensor's dims promise, after checking the data really holds that many."""
    count, bits = _elements(t, where), _BITS.get(t.data_type)
    nbytes = -(-count * bits // 8) if bits else sum(len(s) for s in t.string_data)
    if t.data_type == TensorProto.STRING:
        found, expected, unit = len(t.string_data), count, "strings"
    elif bits is None:
        raise MalformedModel(f"{where} has unknown data_type {t.data_type}; re-export it")
    elif t.raw_data or count == 0:
        found, expected, unit = len(t.raw_data), nbytes, "bytes"
    else:  # typed fields: 2- and 4-bit types are packed; complex types take two entries each
        field = onnx.helper.tensor_dtype_to_field(t.data_type)
        found, unit = len(getattr(t, field)), f"{field} entries"
        complex_ = t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128)
        expected = nbytes if bits in (2, 4) else count * (2 if complex_ else 1)
    if found != expected:
        raise MalformedModel(
            f"{where} declares dims {_short(t.dims)} = {count} elements but stores {found} "
            f"{unit} (expected {expected}); the file is corrupt or forged, re-export it"
        )
    return nbytes


def _check_constants(graphs: _Graphs, consts: dict[str, TensorProto], limits: Limits) -> None:
    """Checks that read constant values (their stored sizes are verified by now)."""
    # ONNX names are single-assignment across scopes, but the checker does not enforce it: a
    # subgraph initializer could shadow an outer value of the same name. A value counts as a
    # known constant only if the whole model defines its name exactly once.
    defined = Counter(
        name
        for graph, _ in graphs
        for name in (
            *(t.name for t in graph.initializer),
            *(v.name for v in graph.input),
            *(out for node in graph.node for out in node.output),
        )
    )
    consts = {name: t for name, t in consts.items() if defined[name] == 1}
    for graph, where in graphs:
        for node in graph.node:
            if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
                # Dropout is identity at inference, unless training_mode is on: then random.
                mode = consts.get(node.input[2])
                if mode is None or _prod(mode.dims) != 1 or bool(to_array(mode).item()):
                    raise DisallowedOperator(
                        f"{_node_at(node, where)} has a training_mode input that is not a "
                        "constant False, so it drops values at random; export in eval mode"
                    )
            # The classic bomb, caught here without relying on shape inference to see it.
            shape = consts.get(node.input[0]) if node.input else None
            if (
                node.op_type != "ConstantOfShape"
                or shape is None
                or shape.data_type != TensorProto.INT64
            ):
                continue
            dims = [int(d) for d in to_array(shape).reshape(-1).tolist()]
            count = 0 if any(d < 0 for d in dims) else _prod(dims)  # negative: a run-time error
            if count > limits.max_tensor_elements:
                raise TensorTooLarge(
                    f"{_node_at(node, where)} fills a constant shape {_short(dims)} = {count} "
                    f"elements, over the limit of {limits.max_tensor_elements}: a memory bomb"
                )


def _check_signature(graph: GraphProto) -> None:
    initializers = {t.name for t in graph.initializer}
    values = [("input", v) for v in graph.input if v.name not in initializers]
    for kind, value in [*values, *(("output", v) for v in graph.output)]:
        type_ = value.type.WhichOneof("value")
        if type_ != "tensor_type":
            raise UnsupportedSignature(
                f"graph {kind} {_name(value.name)} is of type {type_ or 'undefined'}, not a "
                "tensor; "
                "Verinet carries tensors only (skl2onnx classifiers: convert with "
                "options={'zipmap': False})"
            )
        elem = value.type.tensor_type.elem_type
        if elem not in _BITS and elem != TensorProto.STRING:
            raise UnsupportedSignature(
                f"graph {kind} {_name(value.name)} has unknown element type {elem}; declare its "
                "dtype"
            )


def _for_inference(model: ModelProto, limits: Limits) -> ModelProto:
    """A copy fit for shape inference. Declared value_info and output shapes win over inferred
    ones (a bomb would declare itself [1]), so they go; weight data says nothing about shapes
    and only costs memory, so big initializers keep their dims only (shape arguments are small)."""
    slim = ModelProto(ir_version=model.ir_version, opset_import=model.opset_import)
    for name in ("node", "input", "output", "sparse_initializer"):
        getattr(slim.graph, name).extend(getattr(model.graph, name))
    for t in model.graph.initializer:
        if _prod(t.dims) <= 64:
            slim.graph.initializer.append(t)
        else:
            slim.graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    for graph, _ in _graphs(slim, limits):
        graph.ClearField("value_info")
        for out in graph.output:
            if out.type.HasField("tensor_type"):
                out.type.tensor_type.ClearField("shape")
    return slim


MAX_PROPAGATED = 4096
"""Data propagation runs only when every value of rank 0 or 1 has at most this many elements."""


def infer(model: ModelProto, *, strict: bool) -> ModelProto:
    """Shape inference, with data propagation (constant folding of shape arguments) only where
    it is cheap. Inference computes dims as integers and never materializes tensors, so a
    [2**20, 2**20] ConstantOfShape costs nothing; but ONNX's data propagation keeps the values
    of every rank-1 tensor it can follow as a shape of that many dims (~200 bytes each): an
    Expand to [2**22] and an Add cost 670 MiB, 2**27 would cost 21 GiB. So a first pass without
    it finds every rank-0/1 value's size, and the second pass propagates only if all are known
    and at most `MAX_PROPAGATED`."""
    plain = onnx.shape_inference.infer_shapes(
        model, check_type=False, strict_mode=strict, data_prop=False
    )
    for graph, _ in _graphs(plain, DEFAULT_LIMITS):
        sized = [list(t.dims) for t in graph.initializer]
        for value in [*graph.input, *graph.value_info, *graph.output]:
            tensor = value.type.tensor_type
            if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
                return plain  # rank unknown: could be a long vector
            sized.append([d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim])
        for dims in sized:
            if len(dims) <= 1 and (-1 in dims or _prod(dims) > MAX_PROPAGATED):
                return plain
        produced = {o for node in graph.node for o in node.output}
        typed = {v.name for v in [*graph.input, *graph.value_info, *graph.output]}
        if produced - typed:
            return plain  # a value inference could not type at all
    return onnx.shape_inference.infer_shapes(
        model, check_type=False, strict_mode=strict, data_prop=True
    )


def _check_inferred_shapes(model: ModelProto, limits: Limits) -> None:
    try:
        inferred = infer(_for_inference(model, limits), strict=False)
    except Exception:  # inference gives up on some valid models: the checks above still hold
        return
    for graph, where in _graphs(inferred, limits):
        producers = {out: node for node in graph.node for out in node.output}
        for value in [*graph.value_info, *graph.output]:
            dims = value.type.tensor_type.shape.dim
            # Known dims only: a symbolic dim is no excuse for a [2**20, 2**20, N] bomb.
            known = [d.dim_value for d in dims if d.HasField("dim_value")]
            count = 0 if any(d < 0 for d in known) else _prod(known)
            if count <= limits.max_tensor_elements:
                continue
            node = producers.get(value.name)
            by = _node_at(node, where) if node else f"the inputs of {where}"
            raise TensorTooLarge(
                f"value {_name(value.name)} produced by {by} has shape "
                f"{_short(d.dim_value or _name(d.dim_param) for d in dims)}: at least {count} "
                "elements, "
                f"over the limit of {limits.max_tensor_elements}; constant shape arguments "
                "this large are a memory bomb, refused"
            )


def memory_bound(
    model: ModelProto,
    inputs: Iterable[tuple[str, str, tuple[int | str, ...]]],
    max_input_bytes: int,
) -> int | None:
    """An upper bound on the bytes one run of `model` can hold, or None: see
    `verinet.hub._memory.memory_bound`, which says what is counted and with which constants."""
    from verinet.hub import _memory  # imported here: it builds on this module's helpers

    return _memory.memory_bound(model, inputs, max_input_bytes)
