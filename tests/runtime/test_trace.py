"""Traced execution: the commitment, step openings and the one-step check of a dispute."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from verinet.devnet.models import attention, cnn, mlp
from verinet.errors import InvalidInput
from verinet.hub import cid as cids
from verinet.protocol.trace import (
    MerkleProof,
    hash_chain,
    initial_link,
    merkle_proof,
    merkle_root,
    next_link,
    verify_merkle_proof,
)
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import group_hash
from verinet.types import Hash32

RNG = np.random.default_rng(11)

MODELS = {
    "mlp": (mlp, {"x": (3, 16)}),
    "cnn": (cnn, {"image": (2, 3, 32, 32)}),
    "attention": (attention, {"x": (2, 5, 32)}),
}


def _if_model() -> onnx.ModelProto:
    """An If whose branches read an outer-scope value (`h`): implicit inputs of one step."""
    h = onnx.helper
    then_g = h.make_graph(
        [h.make_node("Mul", ["h", "h"], ["t"])],
        "then",
        [],
        [h.make_tensor_value_info("t", onnx.TensorProto.FLOAT, None)],
    )
    else_g = h.make_graph(
        [h.make_node("Neg", ["h"], ["e"])],
        "else",
        [],
        [h.make_tensor_value_info("e", onnx.TensorProto.FLOAT, None)],
    )
    nodes = [
        h.make_node("Relu", ["x"], ["h"], name="relu"),
        h.make_node("ReduceSum", ["h"], ["s"], name="sum", keepdims=0),
        h.make_node("Greater", ["s", "zero"], ["c"], name="cond"),
        h.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
    ]
    graph = h.make_graph(
        nodes,
        "if",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
        [onnx.numpy_helper.from_array(np.array(0, np.float32), "zero")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])
    model.ir_version = 10
    return model


MODELS["if"] = (_if_model, {"x": (4,)})


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request: pytest.FixtureRequest) -> tuple[OnnxExecutor, dict[str, np.ndarray]]:
    build, shapes = MODELS[request.param]
    executor = OnnxExecutor(build().SerializeToString())
    feeds = {name: RNG.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    return executor, feeds


def test_traced_outputs_equal_untraced_bit_for_bit(
    case: tuple[OnnxExecutor, dict[str, np.ndarray]],
) -> None:
    executor, feeds = case
    plain = executor.run(feeds)
    trace = executor.run_traced(feeds)
    assert list(trace.outputs) == list(plain)
    for name, value in plain.items():
        assert trace.outputs[name].dtype == value.dtype
        assert trace.outputs[name].tobytes() == value.tobytes()
    assert trace.output_hash == executor.output_hash(plain)
    assert trace.input_hash == executor.input_hash(feeds)


def test_commitment_is_the_hash_chain_and_merkle_root(
    case: tuple[OnnxExecutor, dict[str, np.ndarray]],
) -> None:
    executor, feeds = case
    trace = executor.run_traced(feeds)
    assert trace.ops == len(executor.model.graph.node)
    h0 = initial_link(cids.to_bytes(executor.model_cid), trace.input_hash)
    assert trace.links[0] == h0
    assert list(trace.links) == hash_chain(h0, list(trace.op_hashes))
    assert trace.final == trace.links[-1] != h0
    assert trace.root == merkle_root(list(trace.op_hashes))
    # The same input gives the same commitment; another input another one.
    assert executor.run_traced(feeds).final == trace.final
    other = {name: value + np.float32(1.0) for name, value in feeds.items()}
    assert executor.run_traced(other).final != trace.final


def test_every_step_opens_against_the_root_and_re_executes_alone(
    case: tuple[OnnxExecutor, dict[str, np.ndarray]],
) -> None:
    executor, feeds = case
    trace = executor.run_traced(feeds)
    for index in range(1, trace.ops + 1):
        step = trace.step(index)
        assert group_hash(list(step.outputs.items())) == step.op_hash
        assert verify_merkle_proof(trace.root, step.op_hash, step.proof)
        redone = executor.execute_op(index, trace.step_inputs(index))
        assert list(redone) == list(step.outputs)
        assert group_hash(list(redone.items())) == step.op_hash, f"op {index} {step.op_type}"


def test_one_step_check_exposes_a_wrong_step() -> None:
    executor = OnnxExecutor(mlp().SerializeToString())
    trace = executor.run_traced({"x": RNG.standard_normal((1, 16)).astype(np.float32)})
    # A cheater who claims op 3 (Relu) produced something else is caught by re-execution.
    claimed = {name: value.copy() for name, value in trace.step(3).outputs.items()}
    next(iter(claimed.values()))[0, 0] += np.float32(1.0)
    redone = executor.execute_op(3, trace.step_inputs(3))
    assert group_hash(list(redone.items())) != group_hash(list(claimed.items()))
    # And a tampered input to the step yields a different result than the honest one.
    inputs = {name: value + np.float32(1.0) for name, value in trace.step_inputs(3).items()}
    assert group_hash(list(executor.execute_op(3, inputs).items())) != trace.op_hashes[2]


def test_the_if_step_reads_outer_scope_values() -> None:
    executor = OnnxExecutor(_if_model().SerializeToString())
    trace = executor.run_traced({"x": np.array([1, -2, 3, -4], np.float32)})
    step = trace.step(4)
    assert step.op_type == "If"
    assert step.inputs == ("c", "h")
    np.testing.assert_array_equal(step.outputs["y"], np.array([1, 0, 9, 0], np.float32))
    with pytest.raises(InvalidInput, match="reads 'h'"):
        executor.execute_op(4, {"c": trace.values["c"]})


def test_step_index_bounds() -> None:
    executor = OnnxExecutor(mlp().SerializeToString())
    trace = executor.run_traced({"x": RNG.standard_normal((1, 16)).astype(np.float32)})
    for bad in (0, trace.ops + 1):
        with pytest.raises(IndexError):
            trace.step(bad)
        with pytest.raises(IndexError):
            executor.execute_op(bad, {})


@given(st.integers(min_value=1, max_value=40), st.data())
def test_merkle_proofs_verify_only_for_their_leaf(n: int, data: st.DataObject) -> None:
    leaves = [Hash32(os.urandom(32)) for _ in range(n)]
    root = merkle_root(leaves)
    index = data.draw(st.integers(min_value=1, max_value=n))
    proof = merkle_proof(leaves, index)
    assert verify_merkle_proof(root, leaves[index - 1], proof)
    assert not verify_merkle_proof(root, Hash32(os.urandom(32)), proof)
    if n > 1:
        other = data.draw(st.integers(min_value=1, max_value=n).filter(lambda i: i != index))
        assert not verify_merkle_proof(root, leaves[index - 1], MerkleProof(other, proof.siblings))
    if proof.siblings:
        bent = (Hash32(os.urandom(32)), *proof.siblings[1:])
        assert not verify_merkle_proof(root, leaves[index - 1], MerkleProof(index, bent))


def test_hash_chain_prefix_agreement() -> None:
    # Agreement on h_m is agreement on every op up to m: chains that share a prefix of op
    # hashes share the links, and the first differing op changes every later link.
    ops = [Hash32(os.urandom(32)) for _ in range(8)]
    forked = [*ops[:5], Hash32(os.urandom(32)), *ops[6:]]
    h0 = Hash32(bytes(32))
    a, b = hash_chain(h0, ops), hash_chain(h0, forked)
    assert a[:6] == b[:6]
    assert all(x != y for x, y in zip(a[6:], b[6:], strict=True))
    assert a[1] == next_link(h0, ops[0])
