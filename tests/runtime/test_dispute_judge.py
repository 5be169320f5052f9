"""Disputes off chain with real onnxruntime: bisection between an honest and a cheating trace,
the defender's evidence, and the committee's one-step judgement."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.runtime.test_trace import _if_model
from verinet.devnet.models import cnn, mlp
from verinet.errors import MalformedEvidence, VerinetError
from verinet.hub import cid as cids
from verinet.protocol.dispute import (
    Bisection,
    final_step_holds,
    next_bisection_step,
    open_bisection,
    post_link,
    rounds,
)
from verinet.protocol.trace import (
    ZERO,
    MerkleProof,
    hash_chain,
    initial_link,
    merkle_root,
)
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import group_hash
from verinet.runtime.trace import Trace, op_outputs
from verinet.types import Hash32
from verinet.verification.optimistic import (
    Check,
    Evidence,
    Judgement,
    Opening,
    defender_link,
    first_difference,
    judge_step,
    links,
    play_bisection,
    signed_links,
    step_evidence,
    step_hash,
    watcher_agrees,
    whole_model_evidence,
)

RNG = np.random.default_rng(5)

MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], dict[str, tuple[int, ...]]]] = {
    "mlp": (mlp, {"x": (2, 16)}),
    "cnn": (cnn, {"image": (1, 3, 32, 32)}),
    "if": (_if_model, {"x": (4,)}),
}

Case = tuple[OnnxExecutor, Trace]


def _run(name: str) -> Case:
    build, shapes = MODELS[name]
    executor = OnnxExecutor(build())
    feeds = {key: RNG.standard_normal(shape).astype(np.float32) for key, shape in shapes.items()}
    return executor, executor.run_traced(feeds)


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request: pytest.FixtureRequest) -> Case:
    return _run(request.param)


@pytest.fixture(scope="module")
def mlp_case() -> Case:
    return _run("mlp")


def _judge(
    executor: OnnxExecutor,
    trace: Trace,
    at: int,
    evidence: Evidence,
    **overrides: Any,
) -> Judgement:
    """The committee's ruling on `trace`'s claim at `step`, with the chain's values taken from
    the claim unless overridden."""
    chain: dict[str, Any] = {
        "model_cid": executor.model_cid,
        "input_hash": trace.input_hash,
        "ops": trace.ops,
        "root": trace.root,
        "step": at,
        "agreed_link": links(trace)[at - 1],
        "claimed_op_hash": step_hash(trace, at),
        "evidence": evidence,
    }
    return judge_step(executor.model, executor.profile, **{**chain, **overrides})


def _tamper(executor: OnnxExecutor, trace: Trace, m: int) -> Trace:
    """The trace of a node whose op m is faulty: its first output is off by one, and every later
    op runs on what the faulty one produced."""
    values = dict(trace.values)
    first = op_outputs(trace.nodes[m - 1])[0]
    value = values[first]
    values[first] = np.asarray(~value if value.dtype == bool else value + 1, value.dtype)
    for index in range(m + 1, trace.ops + 1):
        reads = {name: values[name] for name in trace.step_inputs(index)}
        values.update(executor.execute_op(index, reads))
    op_hashes = tuple(
        group_hash([(name, values[name]) for name in op_outputs(node)]) for node in trace.nodes
    )
    outputs = {name: values[name] for name in trace.outputs}
    h0 = initial_link(cids.to_bytes(trace.model_cid), trace.input_hash)
    return dataclasses.replace(
        trace,
        values=values,
        outputs=outputs,
        output_hash=group_hash(outputs),
        op_hashes=op_hashes,
        links=tuple(hash_chain(h0, op_hashes)),
        root=merkle_root(op_hashes),
    )


def _bisect(defender: list[Hash32], watcher: list[Hash32]) -> Bisection:
    """Drive the game move by move: the defender posts, the watcher answers from its links."""
    game = open_bisection(len(defender) - 2, defender[0], defender[-1])
    while not game.done:
        game = post_link(game, defender_link(defender, game.mid))
        assert game.posted is not None
        game = next_bisection_step(game, watcher_agrees(watcher, game.mid, game.posted))
    return game


def test_an_honest_defender_is_right_on_every_step(case: Case) -> None:
    executor, trace = case
    assert len(links(trace)) == trace.ops + 2
    for step in range(1, trace.ops + 2):
        evidence = step_evidence(trace, step)
        decoded = Evidence.from_json(evidence.to_json())
        judgement = _judge(executor, trace, step, decoded)
        assert judgement.defender_right, judgement.reason
        assert judgement.check is Check.RESULT
        assert judgement.expected == step_hash(trace, step)


def test_evidence_holds_what_the_step_reads(mlp_case: Case) -> None:
    _, trace = mlp_case  # x → matmul0 → add0 → relu0 → matmul1 → add1 → out(Identity) → y
    first = step_evidence(trace, 1)
    assert first.inputs is not None and list(first.inputs) == ["x"]
    assert first.producers == () and first.op_hashes == ()
    third = step_evidence(trace, 3)
    assert third.inputs is None
    assert [opening.op for opening in third.producers] == [2]
    assert third.op_hashes == trace.op_hashes[:2]
    top = step_evidence(trace, trace.ops + 1)
    assert [opening.op for opening in top.producers] == [trace.ops]
    assert top.op_hashes == trace.op_hashes
    assert json.loads(top.to_json())["producers"][0]["proof"]


def test_a_wrong_op_is_found_by_bisection_and_ruled_wrong(case: Case) -> None:
    executor, honest = case
    mine = links(honest)
    played = []
    for m in range(1, honest.ops + 1):
        cheat = _tamper(executor, honest, m)
        theirs = links(cheat)
        assert first_difference(theirs, mine) == m
        game = _bisect(theirs, mine)
        assert game.step == m and game.lo_link == mine[m - 1]
        assert game.played <= rounds(honest.ops)
        played.append(game.played)
        assert play_bisection(theirs, mine) == game
        claimed = step_hash(cheat, m)
        assert final_step_holds(game, claimed)  # the cheat's H_m passes the chain's link check
        evidence = Evidence.from_json(step_evidence(cheat, m).to_json())
        judgement = _judge(
            executor,
            cheat,
            m,
            evidence,
            agreed_link=game.lo_link,
            claimed_op_hash=claimed,
        )
        assert not judgement.defender_right, judgement.reason
        assert judgement.check is Check.RESULT
        assert judgement.expected == honest.op_hashes[m - 1]
    # A game takes floor or ceil of log2(N+1) rounds (an odd interval's halves differ by one);
    # the longest, over a faulty op, takes exactly rounds(N).
    assert min(played) >= (honest.ops + 1).bit_length() - 1
    assert max(played) == rounds(honest.ops)


def test_a_wrong_output_hash_alone_is_caught_at_the_outputs_step(case: Case) -> None:
    executor, honest = case
    cheat = dataclasses.replace(honest, output_hash=Hash32(bytes(31) + b"\x01"))
    game = _bisect(links(cheat), links(honest))
    assert game.step == honest.ops + 1
    assert game.played == rounds(honest.ops)  # always the larger half: the longest game
    evidence = step_evidence(cheat, game.step)
    judgement = _judge(executor, cheat, game.step, evidence, agreed_link=game.lo_link)
    assert not judgement.defender_right and judgement.check is Check.RESULT
    assert judgement.expected == honest.output_hash
    assert _judge(executor, honest, game.step, evidence).defender_right


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_whole_model_claim_is_judged_both_ways(name: str) -> None:
    executor, trace = _run(name)
    feeds = {key: trace.values[key] for key in trace.input_names}
    evidence = Evidence.from_json(whole_model_evidence(feeds).to_json())
    honest = signed_links(executor.model_cid, trace.input_hash, trace.output_hash)
    wrong = signed_links(executor.model_cid, trace.input_hash, Hash32(bytes(32)))
    for claimed, right in [(trace.output_hash, True), (Hash32(bytes(32)), False)]:
        claimed_links = honest if right else wrong
        game = open_bisection(0, claimed_links[0], claimed_links[1])
        assert game.done and game.step == 1 and final_step_holds(game, claimed)
        judgement = judge_step(
            executor.model,
            executor.profile,
            model_cid=cids.to_bytes(executor.model_cid),
            input_hash=trace.input_hash,
            ops=0,
            root=ZERO,
            step=1,
            agreed_link=game.lo_link,
            claimed_op_hash=claimed,
            evidence=evidence,
        )
        assert judgement.defender_right is right, judgement.reason
        assert judgement.expected == trace.output_hash
    # A withholder who serves no inputs, or someone else's, loses.
    base: dict[str, Any] = {
        "model_cid": executor.model_cid,
        "input_hash": trace.input_hash,
        "ops": 0,
        "root": ZERO,
        "step": 1,
        "agreed_link": honest[0],
        "claimed_op_hash": trace.output_hash,
    }
    empty = dataclasses.replace(evidence, inputs=None)
    other = whole_model_evidence({key: value + 1 for key, value in feeds.items()})
    for bad in (empty, other):
        judgement = judge_step(executor.model, executor.profile, **base, evidence=bad)
        assert not judgement.defender_right and judgement.check is Check.INPUTS


def _bent(opening: Opening) -> Opening:
    siblings = (Hash32(bytes(32)), *opening.proof.siblings[1:])
    return dataclasses.replace(opening, proof=MerkleProof(opening.op, siblings))


def _changed(arrays: Any) -> dict[str, Any]:
    return {name: value + np.float32(0.5) for name, value in arrays.items()}


TAMPERINGS: dict[str, tuple[int, Callable[[Evidence, Trace], Evidence], Check, str]] = {
    "changed input": (
        1,
        lambda e, t: dataclasses.replace(e, inputs=_changed(e.inputs)),
        Check.INPUTS,
        "input hash",
    ),
    "renamed input": (
        1,
        lambda e, t: dataclasses.replace(e, inputs={"z": t.values["x"]}),
        Check.INPUTS,
        "takes",
    ),
    "no inputs": (1, lambda e, t: dataclasses.replace(e, inputs=None), Check.INPUTS, "none"),
    "missing producer": (
        3,
        lambda e, t: dataclasses.replace(e, producers=()),
        Check.PRODUCERS,
        "missing",
    ),
    "changed producer": (
        3,
        lambda e, t: dataclasses.replace(
            e, producers=(dataclasses.replace(e.producers[0], outputs=_changed(t.step(2).outputs)),)
        ),
        Check.PRODUCERS,
        "do not hash to H_2",
    ),
    "later producer": (
        3,
        lambda e, t: dataclasses.replace(
            e, producers=(*e.producers, step_evidence(t, 5).producers[0])
        ),
        Check.PRODUCERS,
        "not an earlier op",
    ),
    "wrong merkle proof": (
        3,
        lambda e, t: dataclasses.replace(e, producers=(_bent(e.producers[0]),)),
        Check.MERKLE,
        "Merkle proof",
    ),
    "wrong op-hash prefix": (
        3,
        lambda e, t: dataclasses.replace(e, op_hashes=(e.op_hashes[0], Hash32(bytes(32)))),
        Check.PREFIX,
        "agreed link",
    ),
    "short prefix": (
        3,
        lambda e, t: dataclasses.replace(e, op_hashes=e.op_hashes[:1]),
        Check.PREFIX,
        "H_1..H_2",
    ),
    "evidence for another step": (
        3,
        lambda e, t: step_evidence(t, 4),
        Check.CLAIM,
        "for step 4",
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_tampered_evidence_rules_against_the_defender(mlp_case: Case, tampering: str) -> None:
    executor, trace = mlp_case
    step, tamper, check, reason = TAMPERINGS[tampering]
    evidence = tamper(step_evidence(trace, step), trace)
    for served in (evidence, Evidence.from_json(evidence.to_json())):
        judgement = _judge(executor, trace, step, served)
        assert not judgement.defender_right
        assert judgement.check is check and reason in judgement.reason, judgement.reason
        assert judgement.expected is None


def test_a_claim_that_does_not_fit_the_model_loses(mlp_case: Case) -> None:
    executor, trace = mlp_case
    evidence = step_evidence(trace, 2)
    for overrides in ({"ops": trace.ops + 1}, {"step": trace.ops + 2}, {"root": ZERO}):
        judgement = _judge(executor, trace, 2, evidence, **overrides)
        assert not judgement.defender_right
        assert judgement.check in (Check.CLAIM, Check.MERKLE), judgement.reason


def test_oversized_evidence_is_refused(mlp_case: Case) -> None:
    _, trace = mlp_case
    raw = step_evidence(trace, 1).to_json()
    assert Evidence.from_json(raw, max_bytes=len(raw)).step == 1
    with pytest.raises(MalformedEvidence, match="over the limit"):
        Evidence.from_json(raw, max_bytes=len(raw) - 1)
    with pytest.raises(MalformedEvidence, match="over the limit"):
        Evidence.from_json(raw.decode(), max_bytes=100)
    # A small document that declares a huge tensor is refused before anything is allocated.
    huge = {"dtype": "float32", "shape": [2**20, 2**20], "b64": ""}
    doc = {"step": 1, "inputs": {"x": huge}, "producers": [], "op_hashes": []}
    with pytest.raises(MalformedEvidence, match="over the limit"):
        Evidence.from_json(json.dumps(doc))


MALFORMED = [
    b"",
    b"not json",
    b"[" * 100_000,
    b"\xff\xfe\x00",
    b"[]",
    b'{"step": 1}',
    b'{"step": true, "inputs": null, "producers": [], "op_hashes": []}',
    b'{"step": 0, "inputs": null, "producers": [], "op_hashes": []}',
    b'{"step": 1, "inputs": [], "producers": [], "op_hashes": []}',
    b'{"step": 1, "inputs": null, "producers": {}, "op_hashes": []}',
    b'{"step": 2, "inputs": null, "producers": [], "op_hashes": ["0x12"]}',
    b'{"step": 2, "inputs": null, "producers": [], "op_hashes": ["' + b"ab" * 32 + b'"]}',
    b'{"step": 2, "inputs": null, "producers": [{"op": 1, "outputs": {}}], "op_hashes": []}',
    b'{"step": 1, "inputs": {"x": {"dtype": "float32", "shape": [2], "data": [1]}},'
    b' "producers": [], "op_hashes": [], "extra": 1}',
    b'{"step": 1, "inputs": {"x": {"dtype": "float32", "shape": [2], "data": [1]}},'
    b' "producers": [], "op_hashes": []}',
    b'{"step": 1, "inputs": {"x": {"dtype": "complex", "shape": [1], "data": [1]}},'
    b' "producers": [], "op_hashes": []}',
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_evidence_raises_a_typed_error(raw: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        Evidence.from_json(raw)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


_SAMPLE = step_evidence(_run("mlp")[1], 3).to_json()
_PATHS: list[tuple[Any, ...]] = [
    ("step",),
    ("inputs",),
    ("producers",),
    ("op_hashes",),
    ("op_hashes", 0),
    ("producers", 0),
    ("producers", 0, "op"),
    ("producers", 0, "outputs"),
    ("producers", 0, "proof"),
    ("producers", 0, "proof", 0),
    ("producers", 0, "outputs", "z0"),
    ("producers", 0, "outputs", "z0", "shape"),
    ("producers", 0, "outputs", "z0", "b64"),
    ("producers", 0, "outputs", "z0", "dtype"),
]


@given(st.data())
def test_from_json_raises_nothing_but_verinet_errors(data: st.DataObject) -> None:
    """Valid evidence with one field replaced by arbitrary JSON, or arbitrary bytes."""
    doc = json.loads(_SAMPLE)
    path = data.draw(st.sampled_from(_PATHS))
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(_JSON)
    for raw in (json.dumps(doc).encode(), data.draw(st.binary(max_size=64))):
        try:
            Evidence.from_json(raw, max_bytes=4096)
        except VerinetError as exc:
            assert isinstance(exc, MalformedEvidence)
