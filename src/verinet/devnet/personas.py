"""Nodes that cheat, for the adversarial suite and the demo's staged dispute.

Each persona is a `Node` that departs from the protocol in one way and is otherwise the real
node: the chain, the watchers and the committee treat it as they would any node. What each
does, and what should happen to it:

- `WrongOutput`: runs the model, then reports other outputs (an honest trace, a wrong output
  hash). Caught at the outputs step N+1 and slashed.
- `LazyCopier`: never runs the model; answers with the outputs it gave for its previous
  job (zeros at first) and a made-up trace. Caught at the first op and slashed.
- `SubstitutedModel`: runs a perturbed twin of the model (weights scaled by 1 + 1e-3) and
  claims its honest-looking trace. Caught at the first op that reads a changed weight.
- `Withholder`: claims a wrong result, then never moves in the game nor serves evidence.
  Loses by timeout.
- `Equivocator`: claims one output on-chain and plays the bisection with another. Its reveal
  cannot match both links, so it loses by timeout.
- `GriefingChallenger`: an honest executor that challenges other nodes' right results with
  a made-up trace. The committee upholds the defender; the griefer loses its bond.
- `Replayer`: resubmits its previous claim (or signed receipt) for each new job without
  running it. A replayed receipt is refused by the market's signature check; a replayed
  claim is wrong for new inputs and slashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from verinet.errors import ContractRevert, ResultNotReady
from verinet.node._process import TracedRun
from verinet.node.db import JobRecord, Stage
from verinet.node.disputes import Run
from verinet.node.service import Node, ServedModel
from verinet.protocol.dispute import top_link
from verinet.protocol.receipts import Receipt
from verinet.protocol.trace import hash_chain, initial_link, merkle_root
from verinet.protocol.types import Job, JobState, Mode
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import Array, group_hash
from verinet.runtime.wire import decode_group
from verinet.types import Cid, Hash32, JobId


def _word(*parts: bytes) -> Hash32:
    return Hash32(hashlib.sha256(b"".join(parts)).digest())


def _skewed(outputs: Mapping[str, Array]) -> dict[str, Array]:
    """The same outputs with the first one changed (a wrong answer of the right shape)."""
    changed = {name: np.array(value, copy=True) for name, value in outputs.items()}
    first = next(iter(changed))
    changed[first] = (changed[first] + 1).astype(changed[first].dtype)
    return changed


class Persona(Node):
    """A node that reports `forge`'s run instead of its honest one, and defends it."""

    def _job_run(
        self, served: ServedModel, record: JobRecord, feeds: Mapping[str, Array]
    ) -> tuple[dict[str, Array], TracedRun | None]:
        traced = self.forge(served, record, feeds)
        if traced is None:
            return super()._job_run(served, record, feeds)
        return {s.name: traced.outputs[s.name] for s in served.manifest.outputs}, traced

    def forge(
        self, served: ServedModel, record: JobRecord, feeds: Mapping[str, Array]
    ) -> TracedRun | None:
        """The run this persona reports for a job (None: its honest run). Deterministic per
        job: the game replays it."""
        return None

    def dispute_run(self, record: JobRecord) -> Run:
        if record.mode == Mode.SIGNED or record.input_cid is None:
            return super().dispute_run(record)
        served, feeds = self._inputs(record)
        traced = self.forge(served, record, feeds) or self._honest(served, feeds)
        assert record.output_hash is not None
        return Run(traced.links, [*traced.step_hashes, record.output_hash])

    def _inputs(self, record: JobRecord) -> tuple[ServedModel, dict[str, Array]]:
        assert record.input_cid is not None
        return self.served(record.model_id), decode_group(self.store.get(Cid(record.input_cid)))

    def _honest(self, served: ServedModel, feeds: Mapping[str, Array]) -> TracedRun:
        return self.pool.traced(served.manifest_cid, feeds)

    def _made_up(
        self, record: JobRecord, op_hashes: list[Hash32], outputs: dict[str, Array]
    ) -> TracedRun:
        """A run with these op hashes and outputs, linked from the job's real h_0."""
        model_cid = self.deployment.models.model(record.model_id).model_cid
        links = hash_chain(initial_link(model_cid, record.input_hash), op_hashes)
        top = top_link(links[-1], group_hash(outputs))
        return TracedRun(
            outputs, len(op_hashes), links[-1], merkle_root(op_hashes), [*links, top], op_hashes
        )


class WrongOutput(Persona):
    def forge(
        self, served: ServedModel, record: JobRecord, feeds: Mapping[str, Array]
    ) -> TracedRun:
        honest = self._honest(served, feeds)
        outputs = _skewed({s.name: honest.outputs[s.name] for s in served.manifest.outputs})
        top = top_link(honest.final, group_hash(outputs))
        return honest._replace(outputs=outputs, links=[*honest.links[:-1], top])


class LazyCopier(Persona):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answers: dict[JobId, TracedRun] = {}

    def forge(
        self, served: ServedModel, record: JobRecord, feeds: Mapping[str, Array]
    ) -> TracedRun:
        if record.job_id in self._answers:
            return self._answers[record.job_id]
        if self._answers:
            outputs = dict(self._answers[max(self._answers)].outputs)
        else:
            outputs = {
                s.name: np.zeros([d if isinstance(d, int) else 1 for d in s.shape], s.dtype)
                for s in served.manifest.outputs
            }
        ops = len(onnx.load_from_string(self.store.get(served.manifest.model)).graph.node)
        salt = record.job_id.to_bytes(32, "big")
        made_up = [_word(b"lazy", salt, i.to_bytes(4, "big")) for i in range(ops)]
        run = self._answers[record.job_id] = self._made_up(record, made_up, outputs)
        return run


class SubstitutedModel(Persona):
    """Runs a twin whose float weights are scaled by 1 + 1e-3 (a cheaper or tampered copy)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._twins: dict[str, OnnxExecutor] = {}

    def forge(
        self, served: ServedModel, record: JobRecord, feeds: Mapping[str, Array]
    ) -> TracedRun:
        twin = self._twins.get(served.manifest_cid)
        if twin is None:
            model = onnx.load_from_string(self.store.get(served.manifest.model))
            for init in model.graph.initializer:
                weights = numpy_helper.to_array(init)
                if weights.dtype.kind == "f":
                    bent = (weights * 1.001).astype(weights.dtype)
                    init.CopyFrom(numpy_helper.from_array(bent, init.name))
            twin = OnnxExecutor(model.SerializeToString(), profile=served.manifest.profile)
            self._twins[served.manifest_cid] = twin
        trace = twin.run_traced(feeds)
        outputs = {s.name: trace.outputs[s.name] for s in served.manifest.outputs}
        return self._made_up(record, list(trace.op_hashes), outputs)


class Withholder(WrongOutput):
    """Claims a wrong result, then goes silent: no moves, no evidence."""

    def dispute_run(self, record: JobRecord) -> Run:
        raise ResultNotReady("the withholder does not move")

    def evidence(self, job_id: JobId, step: int) -> bytes:
        raise ResultNotReady(f"job {job_id}: withheld")


class Equivocator(WrongOutput):
    """Claims a wrong output on-chain, but plays the bisection with its honest run."""

    def dispute_run(self, record: JobRecord) -> Run:
        served, feeds = self._inputs(record)
        honest = self._honest(served, feeds)
        outputs = {s.name: honest.outputs[s.name] for s in served.manifest.outputs}
        return Run(honest.links, [*honest.step_hashes, group_hash(outputs)])


class GriefingChallenger(Node):
    """Runs honestly, but challenges every other node's optimistic result and plays a
    made-up trace."""

    def _watching(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        claim = self.market.claim_of(record.job_id)
        if claim.node == self.address or job.mode != Mode.OPTIMISTIC:
            return super()._watching(record, job, now)
        games = self.desk.games
        if job.state == JobState.SUBMITTED and not games.challenged(record.job_id, self.address):
            game_id = self.desk.challenge(record.job_id)
            return self.db.update(
                record.job_id, stage=Stage.WATCHED, error=f"griefed: game {game_id}"
            )
        return self.db.update(record.job_id, stage=Stage.WATCHED, error="too late to grief")

    def dispute_run(self, record: JobRecord) -> Run:
        honest = super().dispute_run(record)
        # Pretend op 1 came out otherwise: every link from h_1 on differs.
        bent = [honest.links[0], *(_word(b"grief", link) for link in honest.links[1:])]
        return Run(bent, [_word(b"grief", h) for h in honest.step_hashes])


class Replayer(Persona):
    """Answers each job with what it sent for its first: the same claim (optimistic) or the
    same receipt signature (signed, which the market refuses)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claims: dict[JobId, TracedRun] = {}
        self._receipt: Receipt | None = None
        self.refused: list[str] = []

    def forge(
        self, served: ServedModel, record: JobRecord, feeds: Mapping[str, Array]
    ) -> TracedRun | None:
        if record.mode != Mode.OPTIMISTIC:
            return None
        if record.job_id not in self._claims:
            first = self._claims[min(self._claims)] if self._claims else None
            self._claims[record.job_id] = first or self._honest(served, feeds)
        return self._claims[record.job_id]

    def _submitting(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        if self._receipt is None or self._receipt.job_id == record.job_id:
            self._receipt = self.receipt(record)
            return super()._submitting(record, job, now)
        replay = Receipt(
            chain_id=self.chain.chain_id,
            market=self.market.address,
            job_id=record.job_id,
            model_id=record.model_id,
            input_hash=record.input_hash,
            output_hash=self._receipt.output_hash,
            node=self.address,
            signature=self._receipt.signature,
        )
        try:
            self.market.submit_receipt(replay, sender=self.address)
        except ContractRevert as exc:
            self.refused.append(type(exc).__name__)
            return self.db.update(record.job_id, stage=Stage.LOST, error=f"replay refused: {exc}")
        return self.db.update(record.job_id, stage=Stage.SUBMITTED)


PERSONAS: dict[str, type[Node]] = {
    "wrong-output": WrongOutput,
    "lazy-copier": LazyCopier,
    "substituted-model": SubstitutedModel,
    "withholder": Withholder,
    "equivocator": Equivocator,
    "griefing-challenger": GriefingChallenger,
    "replayer": Replayer,
}
