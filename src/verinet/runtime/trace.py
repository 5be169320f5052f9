"""Traced execution: every op's outputs, hashed into a chain and a Merkle tree.

`traced_model` exposes each op's outputs as graph outputs; under the ``disable_all`` profile
onnxruntime then runs exactly the ops of the file, one kernel each, and the traced outputs equal
the untraced ones bit for bit. `Trace` holds the values and the commitment (see
`verinet.protocol.trace` for the hash chain and Merkle rules). `execute_op` re-executes one op
from given input tensors: the one-step check that ends a dispute.

Op i (1-based) is ``model.graph.node[i - 1]``: ONNX requires nodes in topological order, and
`onnx.checker` (run by `verinet.hub.safety`) enforces it. An op with subgraphs (If, Loop, Scan)
is one step; its inputs include the outer-scope values its subgraphs read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import onnx

from verinet.errors import InvalidInput, UnexpectedInput
from verinet.hub import cid as cids
from verinet.hub.manifest import ELEMENT_TYPES, ExecutionProfile
from verinet.protocol.trace import (
    MerkleProof,
    hash_chain,
    initial_link,
    merkle_proof,
    merkle_root,
)
from verinet.runtime.session import open_session, run_session
from verinet.runtime.tensors import Array, dtype_name, group_hash
from verinet.types import Cid, Hash32


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def _outer_refs(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads from enclosing scopes, in first-use order."""
    defined = (
        {value.name for value in graph.input}
        | {init.name for init in graph.initializer}
        | {sparse.values.name for sparse in graph.sparse_initializer}
    )
    refs: list[str] = []
    for node in graph.node:
        used = [*node.input]
        for sub in _subgraphs(node):
            used += _outer_refs(sub)
        refs += [name for name in used if name and name not in defined and name not in refs]
        defined.update(node.output)
    return refs


def op_inputs(node: onnx.NodeProto) -> list[str]:
    """Every value op `node` reads: its inputs, then what its subgraphs read from outside."""
    names = [name for name in node.input if name]
    for sub in _subgraphs(node):
        names += [name for name in _outer_refs(sub) if name not in names]
    return list(dict.fromkeys(names))


def op_outputs(node: onnx.NodeProto) -> list[str]:
    return [name for name in node.output if name]


def traced_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs are its own, then every op's outputs in op order."""
    traced = onnx.ModelProto()
    traced.CopyFrom(model)
    exposed = {value.name for value in traced.graph.output}
    for node in model.graph.node:
        for name in op_outputs(node):
            if name not in exposed:
                # Name only: onnxruntime infers the type, and a wrong hand-written type would
                # make it refuse the model.
                traced.graph.output.append(onnx.ValueInfoProto(name=name))
                exposed.add(name)
    return traced


@dataclass(frozen=True, slots=True)
class TraceStep:
    """Op `index`'s outputs with the proof that they are committed under the trace's root."""

    index: int
    op_type: str
    node_name: str
    inputs: tuple[str, ...]
    outputs: Mapping[str, Array]
    op_hash: Hash32
    proof: MerkleProof


@dataclass(frozen=True, slots=True)
class Trace:
    """One traced run: outputs, every op's outputs and the commitment over them."""

    model_cid: Cid
    input_hash: Hash32
    output_hash: Hash32
    outputs: Mapping[str, Array]
    op_hashes: tuple[Hash32, ...]
    links: tuple[Hash32, ...]
    """h_0 .. h_N."""
    root: Hash32
    nodes: tuple[onnx.NodeProto, ...] = field(repr=False)
    values: Mapping[str, Array] = field(repr=False)
    """Every value of the run by name: the request's inputs and each op's outputs."""
    input_names: tuple[str, ...] = ()
    """The graph inputs' names in declared order (their tensors are in `values`)."""

    @property
    def ops(self) -> int:
        return len(self.op_hashes)

    @property
    def final(self) -> Hash32:
        """h_N, the end of the hash chain: what a node commits for the whole run."""
        return self.links[-1]

    def _node(self, index: int) -> onnx.NodeProto:
        if not 1 <= index <= self.ops:
            raise IndexError(f"op index {index} outside 1..{self.ops}")
        return self.nodes[index - 1]

    def step(self, index: int) -> TraceStep:
        node = self._node(index)
        return TraceStep(
            index=index,
            op_type=node.op_type,
            node_name=node.name,
            inputs=tuple(op_inputs(node)),
            outputs={name: self.values[name] for name in op_outputs(node)},
            op_hash=self.op_hashes[index - 1],
            proof=merkle_proof(self.op_hashes, index),
        )

    def step_inputs(self, index: int) -> dict[str, Array]:
        """The tensors op `index` reads that are not weights: request inputs and earlier ops'
        outputs. With the model file, they are all `execute_op` needs."""
        return {
            name: self.values[name] for name in op_inputs(self._node(index)) if name in self.values
        }


class Tracer:
    """A traced session for one model: every op's outputs exposed, hashed and committed.

    What does not change between runs (the traced session, op output names, the binary model
    CID) is prepared once here: parsing a CID with multiformats alone costs ~0.2 ms.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        model_cid: Cid,
        input_names: list[str],
        output_names: list[str],
        profile: ExecutionProfile,
    ) -> None:
        traced = traced_model(model)
        self.names = [value.name for value in traced.graph.output]
        self.session = open_session(traced.SerializeToString(), profile)
        self.nodes = tuple(model.graph.node)
        self.op_names = [op_outputs(node) for node in self.nodes]
        self.model_cid = model_cid
        self.cid_bytes = cids.to_bytes(model_cid)
        self.input_names = input_names
        self.output_names = output_names

    def run(self, feeds: Mapping[str, Array], *, timeout: float | None) -> Trace:
        """Run on validated `feeds` and build the `Trace`."""
        values = dict(
            zip(
                self.names,
                run_session(self.session, self.names, feeds, timeout=timeout),
                strict=True,
            )
        )
        op_hashes = tuple(
            group_hash([(name, values[name]) for name in names]) for names in self.op_names
        )
        input_hash = group_hash([(name, feeds[name]) for name in self.input_names])
        outputs = {name: values[name] for name in self.output_names}
        return Trace(
            model_cid=self.model_cid,
            input_hash=input_hash,
            output_hash=group_hash(list(outputs.items())),
            outputs=outputs,
            op_hashes=op_hashes,
            links=tuple(hash_chain(initial_link(self.cid_bytes, input_hash), op_hashes)),
            root=merkle_root(op_hashes),
            nodes=self.nodes,
            values={**feeds, **values},
            input_names=tuple(self.input_names),
        )


def execute_op(
    model: onnx.ModelProto,
    index: int,
    inputs: Mapping[str, Array],
    profile: ExecutionProfile | None = None,
    *,
    timeout: float | None = None,
) -> dict[str, Array]:
    """Run op `index` (1-based) of `model` alone on `inputs` under `profile`.

    `inputs` holds every value the op reads that is not a weight of the model; weights are
    taken from the model itself (they are fixed by its CID). Returns the op's outputs by name.
    """
    nodes = model.graph.node
    if not 1 <= index <= len(nodes):
        raise IndexError(f"op index {index} outside 1..{len(nodes)}")
    node = nodes[index - 1]
    weights = {init.name: init for init in model.graph.initializer}
    sparse_weights = {sparse.values.name: sparse for sparse in model.graph.sparse_initializer}
    graph_inputs: list[onnx.ValueInfoProto] = []
    initializers: list[onnx.TensorProto] = []
    sparse: list[onnx.SparseTensorProto] = []
    feeds: dict[str, Array] = {}
    reads = op_inputs(node)
    extra = sorted(str(name) for name in inputs if name not in reads)
    if extra:
        raise UnexpectedInput(
            f"op {index} ({node.op_type}) does not read {extra}; it reads {reads}"
        )
    for name in reads:
        if name in weights:
            initializers.append(weights[name])
            continue
        if name in sparse_weights:
            sparse.append(sparse_weights[name])
            continue
        if name not in inputs:
            raise InvalidInput(f"op {index} ({node.op_type}) reads {name!r}; give its tensor")
        array = inputs[name]
        try:
            element_type = ELEMENT_TYPES[dtype_name(array)]
        except (AttributeError, TypeError):
            raise InvalidInput(
                f"op {index} ({node.op_type}) input {name!r} must be a numpy array of a "
                f"supported dtype, not {type(array).__name__} {getattr(array, 'dtype', '')}"
            ) from None
        graph_inputs.append(
            onnx.helper.make_tensor_value_info(name, element_type, list(array.shape))
        )
        feeds[name] = array
    outputs = op_outputs(node)
    graph = onnx.helper.make_graph(
        [node],
        f"step_{index}",
        graph_inputs,
        [onnx.ValueInfoProto(name=name) for name in outputs],
        initializers,
        sparse_initializer=sparse,
    )
    single = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    single.ir_version = model.ir_version
    session = open_session(single.SerializeToString(), profile or ExecutionProfile())
    values = run_session(
        session, outputs, feeds, timeout=timeout, what=f"op {index} ({node.op_type})"
    )
    return dict(zip(outputs, values, strict=True))
