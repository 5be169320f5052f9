"""Optimistic mode's disputes off chain: the links both parties bisect over, the evidence a
defender serves for the disputed step, and a committee member's judgement of that step.

The rules of the game are `verinet.protocol.dispute`; the commitment is
`verinet.protocol.trace`. A party's links are h_0 .. h_{N+1} (`links`, or `signed_links` for a
signed job, N = 0). When the bisection ends at step s, the defender posts H_s (`step_hash`) and
serves `Evidence` (`step_evidence`, `whole_model_evidence`): the graph inputs if step s reads
any, all outputs of every earlier op whose values step s reads (each with its Merkle proof),
and H_1 .. H_{s-1}. `judge_step` checks the evidence against what the chain holds (input hash,
claimed root, agreed link h_{s-1}), recomputes step s and compares. Evidence that is missing,
malformed or does not check out rules against the defender: that is how a withholder loses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import onnx
from onnx import numpy_helper

from verinet.errors import ExecutionFailed, ExecutionTimeout, InvalidInput, MalformedEvidence
from verinet.hub import cid as cids
from verinet.hub.manifest import ExecutionProfile
from verinet.protocol.dispute import (
    Bisection,
    next_bisection_step,
    open_bisection,
    post_link,
    top_link,
)
from verinet.protocol.trace import (
    MerkleProof,
    hash_chain,
    initial_link,
    merkle_proof,
    verify_merkle_proof,
)
from verinet.runtime.session import open_session, run_session
from verinet.runtime.tensors import Array, group_hash
from verinet.runtime.trace import Trace, execute_op, op_inputs, op_outputs
from verinet.runtime.wire import group_from_json, group_to_json
from verinet.safe_json import nesting
from verinet.types import Cid, Hash32

DEFAULT_MAX_EVIDENCE_BYTES = 32 * 2**20
"""Largest evidence document `Evidence.from_json` reads, and the most its tensors may decode to."""
MAX_PROOF_DEPTH = 64
"""Most siblings a Merkle proof may have (2^64 ops is beyond any model)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting evidence JSON may have (it needs about 5 + a tensor's rank)."""
JUDGE_TIMEOUT = 60.0
"""Seconds the judge lets one re-execution run."""


def _cid_bytes(model_cid: Cid | bytes) -> bytes:
    return model_cid if isinstance(model_cid, bytes) else cids.to_bytes(model_cid)


# Links and moves ---------------------------------------------------------------------------


def links(trace: Trace) -> list[Hash32]:
    """h_0 .. h_{N+1} of a traced run: its hash chain, then the OUTPUTS step's link (the top)."""
    return [*trace.links, top_link(trace.final, trace.output_hash)]


def signed_links(model_cid: Cid | bytes, input_hash: Hash32, output_hash: Hash32) -> list[Hash32]:
    """h_0, h_1 of a signed (untraced) claim, N = 0: its one step runs the whole model."""
    initial = initial_link(_cid_bytes(model_cid), input_hash)
    return [initial, top_link(initial, output_hash)]


def step_hash(trace: Trace, step: int) -> Hash32:
    """What the defender posts once the bisection ends at `step`: H_step, the hash of op step's
    outputs, or the output hash for the OUTPUTS step N+1."""
    if not 1 <= step <= trace.ops + 1:
        raise IndexError(f"step {step} outside 1..{trace.ops + 1}")
    return trace.output_hash if step == trace.ops + 1 else trace.op_hashes[step - 1]


def defender_link(mine: Sequence[Hash32], mid: int) -> Hash32:
    """The defender's move: the link it posts at `mid`, from its own links."""
    if not 0 <= mid < len(mine):
        raise IndexError(f"link {mid} outside 0..{len(mine) - 1}")
    return mine[mid]


def watcher_agrees(mine: Sequence[Hash32], mid: int, posted: Hash32) -> bool:
    """The challenger's move: whether the defender's `posted` link at `mid` equals its own."""
    return defender_link(mine, mid) == posted


def first_difference(mine: Sequence[Hash32], theirs: Sequence[Hash32]) -> int | None:
    """The first index where two link lists differ (a length difference counts), or None."""
    for index, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        if a != b:
            return index
    return None if len(mine) == len(theirs) else min(len(mine), len(theirs))


def play_bisection(defender: Sequence[Hash32], watcher: Sequence[Hash32]) -> Bisection:
    """A whole bisection, each party moving from its own links; returns the finished game (its
    `step` is the disputed one)."""
    if len(defender) != len(watcher) or len(defender) < 2:
        raise ValueError("both parties need links h_0 .. h_{N+1} over the same N")
    state = open_bisection(len(defender) - 2, defender[0], defender[-1])
    while not state.done:
        state = post_link(state, defender_link(defender, state.mid))
        state = next_bisection_step(state, watcher_agrees(watcher, state.mid, defender[state.mid]))
    return state


# Evidence ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opening:
    """All of op `op`'s outputs, and the proof that their hash is leaf `op` under the root."""

    op: int
    outputs: Mapping[str, Array]
    proof: MerkleProof


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the defender serves so that a committee member can judge step `step`."""

    step: int
    inputs: Mapping[str, Array] | None
    """The graph inputs, when the step reads any (always for the whole-model step)."""
    producers: tuple[Opening, ...]
    """Every earlier op whose outputs the step reads."""
    op_hashes: tuple[Hash32, ...]
    """H_1 .. H_{step-1}: they chain h_0 to the agreed link."""

    def to_json(self) -> bytes:
        """The evidence as compact JSON (tensors in `verinet.runtime.wire`'s form)."""
        doc = {
            "step": self.step,
            "inputs": None if self.inputs is None else group_to_json(self.inputs),
            "producers": [
                {
                    "op": opening.op,
                    "outputs": group_to_json(opening.outputs),
                    "proof": [_hex(sibling) for sibling in opening.proof.siblings],
                }
                for opening in self.producers
            ],
            "op_hashes": [_hex(op_hash) for op_hash in self.op_hashes],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(
        cls, data: bytes | str, *, max_bytes: int = DEFAULT_MAX_EVIDENCE_BYTES
    ) -> Evidence:
        """Evidence from its JSON form; `MalformedEvidence` for anything else, including a
        document (or its decoded tensors) over `max_bytes`."""
        return _Decoder(max_bytes).evidence(data)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


_FIELDS = frozenset({"step", "inputs", "producers", "op_hashes"})
_OPENING_FIELDS = frozenset({"op", "outputs", "proof"})
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


class _Decoder:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.left = max_bytes  # what the tensors may still decode to

    def evidence(self, data: bytes | str) -> Evidence:
        if not isinstance(data, bytes | bytearray | str):
            raise MalformedEvidence(f"evidence must be JSON bytes or text, not {type(data)}")
        if len(data) > self.max_bytes or (
            isinstance(data, str) and len(data.encode(errors="replace")) > self.max_bytes
        ):
            raise MalformedEvidence(
                f"the evidence is over the limit of {self.max_bytes} bytes; the judge refuses it"
            )
        try:
            text = data if isinstance(data, str) else bytes(data).decode()
        except UnicodeDecodeError:
            raise MalformedEvidence("the evidence is not UTF-8 text") from None
        if nesting(text) > MAX_JSON_DEPTH:
            raise MalformedEvidence(f"the evidence nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise MalformedEvidence(f"the evidence is not JSON: {exc}") from None
        fields = self._object(doc, _FIELDS, "evidence")
        inputs = fields["inputs"]
        producers = fields["producers"]
        op_hashes = fields["op_hashes"]
        if not isinstance(producers, list) or not isinstance(op_hashes, list):
            raise MalformedEvidence("evidence: producers and op_hashes must be lists")
        return Evidence(
            step=self._index(fields["step"], "evidence step"),
            inputs=None if inputs is None else self._group(inputs, "inputs"),
            producers=tuple(
                self._opening(item, f"producers[{i}]") for i, item in enumerate(producers)
            ),
            op_hashes=tuple(
                self._hash(item, f"op_hashes[{i}]") for i, item in enumerate(op_hashes)
            ),
        )

    def _object(self, value: Any, fields: frozenset[str], where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or set(value) != fields:
            raise MalformedEvidence(f"{where} must be an object with exactly {sorted(fields)}")
        return value

    def _index(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
            raise MalformedEvidence(f"{where} must be a positive integer, not {value!r:.40}")
        return value

    def _hash(self, value: Any, where: str) -> Hash32:
        if not isinstance(value, str) or not _HASH.fullmatch(value):
            raise MalformedEvidence(f"{where} must be a 0x-prefixed 32-byte hex hash")
        return Hash32(bytes.fromhex(value[2:]))

    def _group(self, value: Any, where: str) -> dict[str, Array]:
        try:
            arrays = group_from_json(value, max_bytes=self.left, what=where)
        except InvalidInput as exc:  # MalformedTensor, InputTooLarge
            raise MalformedEvidence(f"evidence {exc}") from None
        except TypeError:  # wire.py looks up a dtype given as a list or object before typing it
            raise MalformedEvidence(f"evidence {where}: a tensor's dtype is not a name") from None
        self.left -= sum(array.nbytes for array in arrays.values())
        return arrays

    def _opening(self, value: Any, where: str) -> Opening:
        fields = self._object(value, _OPENING_FIELDS, where)
        op = self._index(fields["op"], f"{where}.op")
        proof = fields["proof"]
        if not isinstance(proof, list) or len(proof) > MAX_PROOF_DEPTH:
            raise MalformedEvidence(f"{where}.proof must be a list of at most {MAX_PROOF_DEPTH}")
        siblings = tuple(self._hash(item, f"{where}.proof[{i}]") for i, item in enumerate(proof))
        return Opening(
            op=op,
            outputs=self._group(fields["outputs"], f"{where}.outputs"),
            proof=MerkleProof(index=op, siblings=siblings),
        )


def _reads(nodes: Sequence[onnx.NodeProto], outputs: Sequence[str], step: int) -> list[str]:
    """The values step `step` reads: op step's inputs, or the graph outputs for step N+1."""
    return op_inputs(nodes[step - 1]) if step <= len(nodes) else list(outputs)


def _producers(nodes: Sequence[onnx.NodeProto]) -> dict[str, int]:
    """Value name → the op (1-based) that produces it."""
    return {name: index for index, node in enumerate(nodes, 1) for name in op_outputs(node)}


def step_evidence(trace: Trace, step: int) -> Evidence:
    """The evidence a defender serves for step `step` (1..N+1) of its traced run."""
    if not 1 <= step <= trace.ops + 1:
        raise IndexError(f"step {step} outside 1..{trace.ops + 1}")
    reads = _reads(trace.nodes, list(trace.outputs), step)
    made = _producers(trace.nodes)
    ops = sorted({made[name] for name in reads if name in made})
    inputs = None
    if any(name in trace.input_names for name in reads):
        inputs = {name: trace.values[name] for name in trace.input_names}
    return Evidence(
        step=step,
        inputs=inputs,
        producers=tuple(
            Opening(
                op=op,
                outputs={name: trace.values[name] for name in op_outputs(trace.nodes[op - 1])},
                proof=merkle_proof(trace.op_hashes, op),
            )
            for op in ops
        ),
        op_hashes=trace.op_hashes[: step - 1],
    )


def whole_model_evidence(inputs: Mapping[str, Array]) -> Evidence:
    """The evidence for a signed claim's one step (N = 0): the graph inputs."""
    return Evidence(step=1, inputs=dict(inputs), producers=(), op_hashes=())


# Judging -----------------------------------------------------------------------------------


class Check(StrEnum):
    """The judge's checks, in the order it makes them; a judgement names the one that decided."""

    CLAIM = "claim"  # the step and op count fit the model and the evidence is for this step
    INPUTS = "inputs"  # the graph inputs hash to the job's input hash
    PREFIX = "prefix"  # H_1 .. H_{s-1} chain from h_0 to the agreed link
    PRODUCERS = "producers"  # every value read is opened, and each opening hashes to its H_j
    MERKLE = "merkle"  # each H_j is proven under the claimed root
    EXECUTION = "execution"  # the step ran on the agreed values
    RESULT = "result"  # the correct H_s compared with the claimed one


@dataclass(frozen=True, slots=True)
class Judgement:
    """Whether the defender's claimed H_step is right, which check decided and why."""

    defender_right: bool
    check: Check
    reason: str
    expected: Hash32 | None = None
    """The step's correct hash, when the evidence let the judge compute it."""


class _Rejected(Exception):
    def __init__(self, check: Check, reason: str) -> None:
        super().__init__(reason)
        self.check = check
        self.reason = reason


def _need(condition: bool, check: Check, reason: str) -> None:
    if not condition:
        raise _Rejected(check, reason)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == 32


def _hash(items: Sequence[tuple[str, Any]], check: Check, what: str) -> Hash32:
    try:
        return group_hash(items)
    except (TypeError, ValueError) as exc:
        raise _Rejected(check, f"{what} cannot be hashed: {exc}") from None


def judge_step(
    model: onnx.ModelProto,
    profile: ExecutionProfile,
    *,
    model_cid: Cid | bytes,
    input_hash: Hash32,
    ops: int,
    root: Hash32,
    step: int,
    agreed_link: Hash32,
    claimed_op_hash: Hash32,
    evidence: Evidence,
    timeout: float | None = JUDGE_TIMEOUT,
) -> Judgement:
    """Judge whether `claimed_op_hash` is step `step`'s correct result given the agreed prefix.

    `model_cid`, `input_hash`, `ops` (N), `root` and `agreed_link` (link_{step-1}) are what the
    chain holds for the claim and the game; N = 0 is a signed claim, judged by running the whole
    model. Anything missing, malformed or not matching in `evidence` rules against the defender.
    Raises only for the judge's own faults: `ConfigError` if its onnxruntime does not fit
    `profile`, `ExecutionTimeout` if a re-execution outruns `timeout` (the judge abstains).
    """
    try:
        expected = _correct_hash(
            model, profile, model_cid, input_hash, ops, root, step, agreed_link, evidence, timeout
        )
    except _Rejected as rejected:
        return Judgement(False, rejected.check, f"step {step}: {rejected.reason}")
    if expected == claimed_op_hash:
        return Judgement(True, Check.RESULT, f"step {step}: the claimed hash is correct", expected)
    return Judgement(
        False,
        Check.RESULT,
        f"step {step}: claimed {claimed_op_hash.hex()[:16]}.., correct {expected.hex()[:16]}..",
        expected,
    )


def _correct_hash(
    model: onnx.ModelProto,
    profile: ExecutionProfile,
    model_cid: Cid | bytes,
    input_hash: Hash32,
    ops: int,
    root: Hash32,
    step: int,
    agreed_link: Hash32,
    evidence: Evidence,
    timeout: float | None,
) -> Hash32:
    graph = model.graph
    nodes = list(graph.node)
    weights = {init.name for init in graph.initializer}
    weights |= {sparse.values.name for sparse in graph.sparse_initializer}
    input_names = [value.name for value in graph.input if value.name not in weights]
    output_names = [value.name for value in graph.output]

    _need(ops in (0, len(nodes)), Check.CLAIM, f"the claim has {ops} ops; the model {len(nodes)}")
    _need(1 <= step <= ops + 1, Check.CLAIM, f"no such step in a claim of {ops} ops")
    _need(evidence.step == step, Check.CLAIM, f"the evidence is for step {evidence.step}")
    whole = ops == 0
    reads = input_names if whole else _reads(nodes, output_names, step)

    values: dict[str, Any] = {}
    if evidence.inputs is not None:
        given = evidence.inputs
        _need(
            set(given) == set(input_names),
            Check.INPUTS,
            f"the evidence's graph inputs are {sorted(given)}; the model takes {input_names}",
        )
        values.update((name, given[name]) for name in input_names)
        _need(
            _hash(list(values.items()), Check.INPUTS, "the graph inputs") == input_hash,
            Check.INPUTS,
            "the graph inputs do not hash to the job's input hash",
        )
    else:
        unread = not set(reads) & set(input_names)
        _need(unread, Check.INPUTS, "the step reads graph inputs and the evidence holds none")

    prefix = evidence.op_hashes
    given_hashes = f"{len(prefix)} op hashes given; the step needs H_1..H_{step - 1}"
    _need(len(prefix) == step - 1, Check.PREFIX, given_hashes)
    _need(all(_is_hash(h) for h in prefix), Check.PREFIX, "an op hash is not 32 bytes")
    chained = hash_chain(initial_link(_cid_bytes(model_cid), input_hash), prefix)[-1]
    _need(chained == agreed_link, Check.PREFIX, "the op hashes do not chain to the agreed link")

    opened: set[int] = set()
    for opening in evidence.producers:
        op = opening.op
        earlier = 1 <= op < step and op not in opened
        _need(earlier, Check.PRODUCERS, f"op {op} is not an earlier op (or is opened twice)")
        opened.add(op)
        names = op_outputs(nodes[op - 1])
        _need(
            set(opening.outputs) == set(names),
            Check.PRODUCERS,
            f"op {op} outputs {names}; the evidence opens {sorted(opening.outputs)}",
        )
        items = [(name, opening.outputs[name]) for name in names]
        _need(
            _hash(items, Check.PRODUCERS, f"op {op}'s outputs") == prefix[op - 1],
            Check.PRODUCERS,
            f"op {op}'s outputs do not hash to H_{op}",
        )
        _need(
            opening.proof.index == op and verify_merkle_proof(root, prefix[op - 1], opening.proof),
            Check.MERKLE,
            f"H_{op}'s Merkle proof does not verify against the claimed root",
        )
        values.update(items)
    made = {} if whole else _producers(nodes)
    for name in reads:
        _need(
            name not in made or made[name] in opened,
            Check.PRODUCERS,
            f"the outputs of op {made.get(name)} (the step reads {name!r}) are missing",
        )

    try:
        if whole:
            session = open_session(model.SerializeToString(), profile)
            feeds = {name: values[name] for name in input_names}
            results = run_session(session, output_names, feeds, timeout=timeout)
            return _hash(list(zip(output_names, results, strict=True)), Check.RESULT, "outputs")
        if step == ops + 1:
            constants = {init.name: init for init in graph.initializer}
            for name in output_names:
                if name not in values and name in constants:
                    values[name] = numpy_helper.to_array(constants[name])
                _need(name in values, Check.PRODUCERS, f"graph output {name!r} is not opened")
            items = [(name, values[name]) for name in output_names]
            return _hash(items, Check.RESULT, "the graph outputs")
        node = nodes[step - 1]
        # A value that is neither a weight nor opened is missing: execute_op says which.
        feeds = {name: values[name] for name in op_inputs(node) if name in values}
        outputs = execute_op(model, step, feeds, profile, timeout=timeout)
        return _hash([(name, outputs[name]) for name in op_outputs(node)], Check.RESULT, "outputs")
    except ExecutionTimeout:
        raise  # the judge's own limit: it abstains rather than blame the defender
    except (ExecutionFailed, InvalidInput) as exc:
        raise _Rejected(Check.EXECUTION, f"the step failed on the agreed values: {exc}") from None
