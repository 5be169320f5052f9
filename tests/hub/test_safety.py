"""`verinet.hub.safety`: a corpus of hostile model files, each refused with its exact error.

Every model is built here with `onnx.helper` (or as raw protobuf bytes where onnx would not
write it); no binary fixture is committed.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import ModelProto, TensorProto
from onnx import helper as h
from onnx.numpy_helper import from_array

from verinet.errors import (
    CustomDomain,
    DisallowedOperator,
    ExternalData,
    GraphTooDeep,
    MalformedModel,
    ModelCidMismatch,
    ModelTooLarge,
    TensorTooLarge,
    UnsafeModel,
    UnsupportedSignature,
)
from verinet.hub.files import file_cid
from verinet.hub.safety import (
    ALLOWED_DOMAINS,
    ALLOWED_OPS,
    DEFAULT_LIMITS,
    NON_TENSOR_OPS,
    NONDETERMINISTIC_OPS,
    Limits,
    check_model,
    check_model_proto,
)

F = TensorProto.FLOAT
I64 = TensorProto.INT64
BIG = 2**40  # elements: 4 TiB of float32 if anything ever allocated it
BIG_SHAPE = np.array([2**20, 2**20], dtype=np.int64)


def vi(name: str, shape: list[int | str] | None = None, elem: int = F) -> onnx.ValueInfoProto:
    return h.make_tensor_value_info(name, elem, [1] if shape is None else shape)


def make(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto] | None = None,
    outputs: list[onnx.ValueInfoProto] | None = None,
    inits: list[TensorProto] | None = None,
    opsets: list[onnx.OperatorSetIdProto] | None = None,
) -> ModelProto:
    graph = h.make_graph(
        nodes, "g", [vi("x")] if inputs is None else inputs, outputs or [vi("y")], inits or []
    )
    return h.make_model(graph, opset_imports=opsets or [h.make_opsetid("", 17)])


def mlp(hidden: int = 8, inputs: int = 4) -> ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        from_array(rng.standard_normal((inputs, hidden)).astype(np.float32), "w1"),
        from_array(np.zeros(hidden, np.float32), "b1"),
        from_array(rng.standard_normal((hidden, 2)).astype(np.float32), "w2"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
        h.make_node("Add", ["h1", "b1"], ["h2"], name="add1"),
        h.make_node("Relu", ["h2"], ["h3"], name="relu1"),
        h.make_node("MatMul", ["h3", "w2"], ["y"], name="mm2"),
    ]
    return make(nodes, [vi("x", [1, inputs])], [vi("y", [1, 2])], inits)


def nested_if(graphs: int) -> ModelProto:
    """A valid model whose If bodies nest so that `graphs` graphs are stacked (main included)."""
    body = h.make_graph([h.make_node("Identity", ["x"], [f"y{graphs}"])], "leaf", [], [])
    body.output.append(vi(f"y{graphs}"))
    for depth in range(graphs - 1, 0, -1):
        node = h.make_node(
            "If", ["c"], [f"y{depth}"], name=f"if{depth}", then_branch=body, else_branch=body
        )
        body = h.make_graph([node], f"level{depth}", [], [vi(f"y{depth}")])
    body.node[0].output[0] = "y"
    del body.output[:]
    return make(list(body.node), [vi("x"), vi("c", [], TensorProto.BOOL)], [vi("y")])


# --- raw protobuf, for nesting onnx would not serialize -------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def raw_nested_if(levels: int) -> bytes:
    """ModelProto bytes with `levels` If nodes nested through then_branch (3 messages a level)."""
    graph = _field(1, _field(4, b"Relu") + _field(1, b"x") + _field(2, b"y"))  # GraphProto.node
    for _ in range(levels):
        attr = _field(1, b"then_branch") + _int(20, onnx.AttributeProto.GRAPH) + _field(6, graph)
        graph = _field(1, _field(1, b"c") + _field(2, b"y") + _field(4, b"If") + _field(5, attr))
    opset = _field(1, b"") + _int(2, 17)
    return _int(1, 8) + _field(7, graph) + _field(8, opset)


# --- the corpus ------------------------------------------------------------------------------


def single(
    op: str, inputs: list[str], inits: list[TensorProto] | None = None, **attrs: Any
) -> ModelProto:
    return make([h.make_node(op, inputs, ["y"], name=f"{op.lower()}_node", **attrs)], inits=inits)


def set_external_data(tensor: TensorProto, location: str) -> None:
    """What onnx.save(..., save_as_external_data=True) writes: a path, and no data in the file."""
    for name in ("raw_data", "float_data", "int64_data"):
        tensor.ClearField(name)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "128")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def external_initializer() -> ModelProto:
    model = mlp()
    set_external_data(model.graph.initializer[0], "/etc/passwd")
    return model


def external_in_subgraph() -> ModelProto:
    value = h.make_tensor("v", F, [1], [0.0])
    set_external_data(value, "../../etc/passwd")
    branch = h.make_graph(
        [h.make_node("Constant", [], ["k"], name="leak", value=value)], "then", [], [vi("k")]
    )
    other = h.make_graph([h.make_node("Identity", ["x"], ["z"])], "else", [], [vi("z")])
    node = h.make_node("If", ["c"], ["y"], name="cond", then_branch=branch, else_branch=other)
    return make([node], [vi("x"), vi("c", [], TensorProto.BOOL)])


def lying_dims() -> ModelProto:
    liar = TensorProto(name="w", data_type=F, dims=[BIG], raw_data=b"\0\0\0\0")
    return single("Add", ["x", "w"], [liar])


def lying_typed_field() -> ModelProto:
    liar = TensorProto(name="w", data_type=F, dims=[4], float_data=[1.0, 2.0, 3.0])
    return single("Add", ["x", "w"], [liar])


def cos_initializer() -> ModelProto:
    return make(
        [h.make_node("ConstantOfShape", ["s"], ["y"], name="bomb")],
        [],
        [vi("y", [2**20, 2**20])],
        [from_array(BIG_SHAPE, "s")],
    )


def cos_constant() -> ModelProto:
    nodes = [
        h.make_node("Constant", [], ["s"], name="shape", value=from_array(BIG_SHAPE, "v")),
        h.make_node("ConstantOfShape", ["s"], ["y"], name="bomb"),
    ]
    return make(nodes, [], [vi("y", ["a", "b"])])


def via_inference(op: str, arg: np.ndarray, shape: list[int | str]) -> ModelProto:
    node = h.make_node(op, ["x", "k"], ["y"], name="bomb")
    return make([node], [vi("x", shape)], [vi("y", ["a", "b"])], [from_array(arg, "k")])


def declared_small() -> ModelProto:
    """An Expand bomb whose intermediate value declares itself [1]: declared shapes win over
    inferred ones in onnx, so inference must not see them."""
    nodes = [
        h.make_node("Expand", ["x", "k"], ["t"], name="bomb"),
        h.make_node("ReduceSum", ["t"], ["y"], keepdims=0),
    ]
    model = make(nodes, [vi("x", [1])], [vi("y", [])], [from_array(BIG_SHAPE, "k")])
    model.graph.value_info.append(vi("t", [1]))
    return model


def bad_utf8_op() -> bytes:
    data: bytes = single("Relu", ["x"]).SerializeToString()
    return data.replace(b"Relu", b"R\xffl\xfe")


def shape_chain() -> ModelProto:
    """Shape -> Mul -> ConstantOfShape: only data propagation sees the constant shape."""
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Mul", ["s", "k"], ["s2"]),
        h.make_node("ConstantOfShape", ["s2"], ["y"], name="bomb"),
    ]
    return make(nodes, [vi("x", [1, 1])], [vi("y", ["a", "b"])], [from_array(BIG_SHAPE, "k")])


def huge_range() -> ModelProto:
    inits = [from_array(np.array(v, np.int64), n) for n, v in (("a", 0), ("b", BIG), ("d", 1))]
    node = h.make_node("Range", ["a", "b", "d"], ["y"], name="bomb")
    return make([node], [], [vi("y", ["n"], I64)], inits)


def sparse_bomb() -> ModelProto:
    values = from_array(np.array([1.0], np.float32), "sp")
    indices = from_array(np.array([0], np.int64), "sp_idx")
    sparse = h.make_sparse_tensor(values, indices, [2**20, 2**20])
    model = single("Identity", ["x"])
    model.graph.sparse_initializer.append(sparse)
    return model


def local_function() -> ModelProto:
    fn = h.make_function("local", "Twice", ["a"], ["b"], [h.make_node("Add", ["a", "a"], ["b"])],
                         [h.make_opsetid("", 17)])  # fmt: skip
    model = make([h.make_node("Twice", ["x"], ["y"], domain="local")],
                 opsets=[h.make_opsetid("", 17), h.make_opsetid("local", 1)])  # fmt: skip
    model.functions.append(fn)
    return model


def dropout_training() -> ModelProto:
    inits = [from_array(np.array(0.5, np.float32), "r"), from_array(np.array(True), "t")]
    return single("Dropout", ["x", "r", "t"], inits)


def sequence_output() -> ModelProto:
    model = single("Identity", ["x"])
    del model.graph.output[:]
    model.graph.output.append(h.make_tensor_sequence_value_info("y", F, [1]))
    return model


def sequence_input() -> ModelProto:
    model = single("Identity", ["x"])
    del model.graph.input[:]
    model.graph.input.append(h.make_tensor_sequence_value_info("x", F, [1]))
    return model


def in_domain(op: str, domain: str, version: int = 1, **attrs: Any) -> ModelProto:
    """One `op` node from `domain`, with the domain imported next to the default one."""
    node = h.make_node(op, ["x"], ["y"], name=f"{op.lower()}_node", domain=domain, **attrs)
    return make([node], opsets=[h.make_opsetid("", 17), h.make_opsetid(domain, version)])


def with_opset(version: int) -> ModelProto:
    return make([h.make_node("Relu", ["x"], ["y"])], opsets=[h.make_opsetid("", version)])


def sequence_ops() -> ModelProto:
    nodes = [
        h.make_node("SequenceConstruct", ["x"], ["s"], name="seq"),
        h.make_node("SequenceAt", ["s", "i"], ["y"]),
    ]
    return make(nodes, inits=[from_array(np.array(0), "i")])


def mutated(fn: Callable[[ModelProto], None], base: Callable[[], ModelProto] = mlp) -> ModelProto:
    model = base()
    fn(model)
    return model


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], bytes | ModelProto]
    error: type[UnsafeModel]
    fact: str  # must appear in the message: the thing found, a number, or the fix
    limits: Limits = DEFAULT_LIMITS
    expected_cid: str | None = None
    bomb: bool = field(default=False)  # must not allocate: memory is checked too


def _set_dims(t: TensorProto, dims: list[int]) -> None:
    del t.dims[:]
    t.dims.extend(dims)


CORPUS = [
    Case("oversized-file", lambda: mlp(), ModelTooLarge, "limit of 100",
         Limits(max_file_bytes=100)),
    Case("wrong-cid", lambda: mlp(), ModelCidMismatch, str(file_cid(b"other")),
         expected_cid=str(file_cid(b"other"))),
    Case("garbage-bytes", lambda: b"\xff" * 64, MalformedModel, "parsable"),
    Case("truncated", lambda: mlp().SerializeToString()[:150], MalformedModel, "parsable"),
    Case("empty-bytes", lambda: b"", MalformedModel, "0 nodes"),
    Case("nesting-200-raw", lambda: raw_nested_if(200), MalformedModel, "more than 64 deep"),
    Case("nesting-40-raw", lambda: raw_nested_if(40), MalformedModel, "more than 64 deep"),
    Case("nesting-20-raw", lambda: raw_nested_if(20), GraphTooDeep, "limit of 8"),
    Case("subgraph-depth-9", lambda: nested_if(9), GraphTooDeep, "nested 9 deep"),
    Case("subgraph-depth-3-limit-2", lambda: nested_if(3), GraphTooDeep, "limit of 2",
         Limits(max_graph_depth=2)),
    Case("too-many-nodes", lambda: mlp(), ModelTooLarge, "more than 3 nodes", Limits(max_nodes=3)),
    Case("custom-domain", lambda: in_domain("Pwn", "com.evil"), CustomDomain, "com.evil"),
    Case("custom-domain-node-only", lambda: mutated(lambda m: m.opset_import.pop(),
         lambda: in_domain("Pwn", "com.evil")), CustomDomain, "Pwn"),
    Case("com-microsoft", lambda: in_domain("Gelu", "com.microsoft"), CustomDomain,
         "com.microsoft"),
    Case("preview-training", lambda: in_domain("Adam", "ai.onnx.preview.training"), CustomDomain,
         "ai.onnx.preview.training"),
    Case("local-function", local_function, CustomDomain, "inline_local_functions"),
    Case("unknown-op", lambda: single("FooBar", ["x"]), DisallowedOperator, "FooBar"),
    Case("random-normal", lambda: single("RandomNormal", [], shape=[1]), DisallowedOperator,
         "RandomNormal"),
    Case("random-uniform-like", lambda: single("RandomUniformLike", ["x"]), DisallowedOperator,
         "nondeterministic"),
    Case("bernoulli", lambda: single("Bernoulli", ["x"]), DisallowedOperator, "Bernoulli"),
    Case("multinomial", lambda: single("Multinomial", ["x"]), DisallowedOperator, "Multinomial"),
    Case("dropout-training-mode", dropout_training, DisallowedOperator, "training_mode"),
    Case("sequence-construct", sequence_ops, DisallowedOperator, "SequenceConstruct"),
    Case("zipmap", lambda: in_domain("ZipMap", "ai.onnx.ml", 3, classlabels_int64s=[0]),
         DisallowedOperator, "zipmap"),
    Case("opset-too-new", lambda: with_opset(99), DisallowedOperator, "opset <= "),
    Case("ml-opset-too-new", lambda: in_domain("Normalizer", "ai.onnx.ml", 77),
         DisallowedOperator, "version 77"),
    Case("external-initializer", external_initializer, ExternalData, "/etc/passwd"),
    Case("external-in-if-constant", external_in_subgraph, ExternalData, "then_branch"),
    Case("external-sparse", lambda: mutated(lambda m: set_external_data(
         m.graph.sparse_initializer[0].values, "/etc/shadow"), sparse_bomb),
         ExternalData, "/etc/shadow"),
    Case("huge-initializer", lambda: mlp(hidden=100, inputs=100), TensorTooLarge, "10000",
         Limits(max_tensor_elements=1000)),
    Case("constant-value-ints", lambda: single("Constant", [], value_ints=list(range(2000))),
         TensorTooLarge, "list of 2000 values", Limits(max_tensor_elements=1000)),
    Case("total-initializer-bytes", lambda: mlp(), ModelTooLarge, "more than 100 bytes",
         Limits(max_total_initializer_bytes=100)),
    Case("lying-dims", lying_dims, MalformedModel, str(BIG), bomb=True),
    Case("lying-typed-field", lying_typed_field, MalformedModel, "3 float_data entries"),
    Case("negative-dims", lambda: mutated(lambda m: _set_dims(m.graph.initializer[0], [-4, -8])),
         MalformedModel, "negative"),
    Case("unknown-data-type", lambda: mutated(lambda m: setattr(m.graph.initializer[1],
         "data_type", 99)), MalformedModel, "data_type 99"),
    Case("sparse-dense-bomb", sparse_bomb, TensorTooLarge, str(2**40), bomb=True),
    Case("constant-of-shape-initializer", cos_initializer, TensorTooLarge, "ConstantOfShape",
         bomb=True),
    Case("constant-of-shape-constant", cos_constant, TensorTooLarge, "bomb", bomb=True),
    Case("expand", lambda: via_inference("Expand", BIG_SHAPE, [1]), TensorTooLarge,
         "Expand", bomb=True),
    Case("expand-symbolic-dim", lambda: via_inference("Expand", np.array([2**20, 2**20, 1]),
         ["N"]), TensorTooLarge, "Expand", bomb=True),
    Case("tile", lambda: via_inference("Tile", BIG_SHAPE, [1, 1]), TensorTooLarge, "Tile",
         bomb=True),
    Case("pad", lambda: via_inference("Pad", np.array([0, 0, 2**20, 2**20]), [1, 1]),
         TensorTooLarge, "Pad", bomb=True),
    Case("range", huge_range, TensorTooLarge, str(BIG), bomb=True),
    Case("declared-shape-hides-bomb", declared_small, TensorTooLarge, "Expand", bomb=True),
    Case("invalid-utf8-op-type", bad_utf8_op, DisallowedOperator, "not a standard op"),
    Case("shape-data-propagation", shape_chain, TensorTooLarge, "ConstantOfShape", bomb=True),
    Case("sequence-output", sequence_output, UnsupportedSignature, "zipmap': False"),
    Case("sequence-input", sequence_input, UnsupportedSignature, "'x'"),
    Case("checker-undefined-input", lambda: single("Add", ["x", "nope"]), MalformedModel, "nope"),
    Case("checker-ir-version", lambda: mutated(lambda m: setattr(m, "ir_version", 99)),
         MalformedModel, "ir_version"),
]  # fmt: skip


def _bytes(case: Case) -> bytes:
    built = case.build()
    return built if isinstance(built, bytes) else built.SerializeToString()


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_corpus_refused(case: Case) -> None:
    with pytest.raises(UnsafeModel) as info:
        check_model(_bytes(case), expected_cid=case.expected_cid, limits=case.limits)
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    assert case.fact in str(info.value)


@pytest.mark.parametrize("case", [c for c in CORPUS if c.bomb], ids=lambda c: c.id)
def test_bombs_do_not_allocate(case: Case) -> None:
    data = _bytes(case)
    tracemalloc.start()
    try:
        with pytest.raises(case.error):
            check_model(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20


def test_bombs_do_not_allocate_native_memory(tmp_path: object) -> None:
    """tracemalloc sees Python only; peak RSS in a fresh process also covers onnx's C++ side."""
    bombs = [_bytes(c).hex() for c in CORPUS if c.bomb]
    script = textwrap.dedent(f"""
        import resource
        from verinet.errors import UnsafeModel
        from verinet.hub.safety import check_model
        bombs = [bytes.fromhex(b) for b in {bombs!r}]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for data in bombs:
            try:
                check_model(data)
            except UnsafeModel:
                pass
            else:
                raise SystemExit("bomb accepted")
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 50 * 1024  # KiB


def test_valid_mlp_passes() -> None:
    model = check_model(mlp().SerializeToString())
    assert isinstance(model, ModelProto)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu", "MatMul"]


def test_if_subgraph_passes() -> None:
    model = check_model(nested_if(2).SerializeToString())
    assert model.graph.node[0].op_type == "If"


def test_nesting_at_the_limit_passes() -> None:
    check_model(nested_if(DEFAULT_LIMITS.max_graph_depth).SerializeToString())
    check_model(nested_if(3).SerializeToString(), limits=Limits(max_graph_depth=3))


def test_dropout_at_inference_passes() -> None:
    check_model(single("Dropout", ["x"]).SerializeToString())
    inits = [from_array(np.array(0.5, np.float32), "r"), from_array(np.array(False), "t")]
    check_model(single("Dropout", ["x", "r", "t"], inits).SerializeToString())


def test_right_cid_passes() -> None:
    data = mlp().SerializeToString()
    assert check_model(data, expected_cid=file_cid(data)).graph.node


def test_right_cid_passes_for_chunked_file() -> None:
    weights = np.random.default_rng(1).standard_normal((300, 1000)).astype(np.float32)
    node = h.make_node("MatMul", ["x", "w"], ["y"])
    data = make([node], [vi("x", [1, 300])], [vi("y", [1, 1000])], [from_array(weights, "w")])
    raw = data.SerializeToString()
    assert len(raw) > 1 << 20
    cid = file_cid(raw)
    assert cid.startswith("baga")  # a json chunk list: the chunked path
    assert check_model(raw, expected_cid=cid).graph.initializer[0].dims == [300, 1000]
    with pytest.raises(ModelCidMismatch):
        check_model(raw[:-1] + b"\0", expected_cid=cid)


def test_check_model_proto_takes_parsed_models() -> None:
    check_model_proto(mlp())
    with pytest.raises(CustomDomain):
        check_model_proto(make([h.make_node("Pwn", ["x"], ["y"], domain="com.evil")]))


def test_allowed_ops() -> None:
    domains = {d for d, _ in ALLOWED_OPS}
    assert domains <= ALLOWED_DOMAINS and domains == {"", "ai.onnx.ml"}
    default = {op for d, op in ALLOWED_OPS if d == ""}
    assert {"MatMul", "Add", "Relu", "If", "Loop", "Identity", "Dropout"} <= default
    assert not {"RandomNormal", "Multinomial", "SequenceConstruct", "Optional"} & default
    ml = {op for d, op in ALLOWED_OPS if d == "ai.onnx.ml"}
    assert "TreeEnsembleClassifier" in ml and not {"ZipMap", "DictVectorizer"} & ml


def test_non_tensor_ops_derived_from_schemas() -> None:
    expected = {
        "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
        "SequenceLength", "SequenceMap", "SplitToSequence", "ConcatFromSequence", "Optional",
        "OptionalGetElement", "OptionalHasElement", "ZipMap", "DictVectorizer", "CastMap",
    }  # fmt: skip
    assert expected <= NON_TENSOR_OPS
    assert not {"If", "Loop", "Scan", "Identity", "Cast", "TreeEnsembleClassifier"} & (
        NON_TENSOR_OPS | NONDETERMINISTIC_OPS
    )


def test_limits_refuse_sizes_protobuf_cannot_hold() -> None:
    with pytest.raises(ValueError, match="max_file_bytes"):
        Limits(max_file_bytes=4 << 30)


def test_does_not_import_onnxruntime() -> None:
    script = textwrap.dedent(f"""
        import sys
        from verinet.hub.safety import check_model
        check_model(bytes.fromhex({mlp().SerializeToString().hex()!r}))
        assert "onnxruntime" not in sys.modules, "onnxruntime was imported"
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


_VALID = mlp().SerializeToString()
_edit = st.tuples(
    st.sampled_from(["flip", "truncate", "insert", "delete"]),
    st.integers(0, len(_VALID) - 1),
    st.binary(min_size=1, max_size=8),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_edit, min_size=1, max_size=4))
def test_mutations_pass_or_raise_unsafe_model(edits: list[tuple[str, int, bytes]]) -> None:
    data = bytearray(_VALID)
    for kind, at, payload in edits:
        at = min(at, max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[at] ^= payload[0] or 1
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = payload
        else:
            del data[at : at + len(payload)]
    with contextlib.suppress(UnsafeModel):
        assert isinstance(check_model(bytes(data)), ModelProto)


def test_a_shadowed_constant_does_not_hide_training_mode_dropout() -> None:
    # The main graph's training_mode `t` is True; If branches hold initializers also named
    # `t` (False). A check that merged constants across scopes would read False and pass.
    def branch(n: int) -> onnx.GraphProto:
        return h.make_graph(
            [h.make_node("Identity", ["t"], [f"o{n}"])],
            f"b{n}",
            [],
            [h.make_tensor_value_info(f"o{n}", TensorProto.BOOL, [])],
            [from_array(np.array(False), "t")],
        )

    nodes = [
        h.make_node("Constant", [], ["t"], value=from_array(np.array(True), "tv")),
        h.make_node("Dropout", ["x", "r", "t"], ["y"]),
        h.make_node("If", ["c"], ["z"], then_branch=branch(1), else_branch=branch(2)),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [
            h.make_tensor_value_info("x", TensorProto.FLOAT, [1000]),
            h.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [
            h.make_tensor_value_info("y", TensorProto.FLOAT, [1000]),
            h.make_tensor_value_info("z", TensorProto.BOOL, []),
        ],
        [from_array(np.array(0.5, np.float32), "r")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])
    model.ir_version = 10
    with pytest.raises(DisallowedOperator, match="training_mode"):
        check_model(model.SerializeToString())
