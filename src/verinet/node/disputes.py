"""The node's part in dispute games: defender of its own claims, challenger of wrong ones
(the watchtower), juror when drawn, and whoever calls time on a stalled game.

Games are found by their events (`Challenged`, `StepRevealed`, `GameResolved`) and followed in
the node's database, so a restarted node picks up every game it was in. Every move reads the
game first and is sent only if it is this node's turn: the contract refuses a second move
(`NotYourMove`), so a move resent after a restart is refused, never played twice.

A party's links are h_0 .. h_{N+1} (`verinet.verification.optimistic`): for an optimistic job
from this node's own traced run, for a signed job the two links of its one step. They are
recomputed from the stored input when needed and kept in memory for the game's length.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from verinet.chain._abi import Event
from verinet.errors import ContractRevert, ExecutionTimeout, VerinetError
from verinet.node.db import GameRecord, JobRecord
from verinet.protocol.types import Game, GameOutcome, GamePhase, Mode
from verinet.runtime.wire import decode_group
from verinet.types import Cid, Hash32, JobId, ModelId
from verinet.verification.optimistic import (
    DEFAULT_MAX_EVIDENCE_BYTES,
    signed_links,
    whole_model_evidence,
)

if TYPE_CHECKING:
    from verinet.node.service import Node

DEFENDER, CHALLENGER, JUROR = "defender", "challenger", "juror"


@dataclass(frozen=True, slots=True)
class Run:
    """A party's view of a run: its links h_0 .. h_{N+1} and its step hashes H_1 .. H_{N+1}."""

    links: list[Hash32]
    step_hashes: list[Hash32]

    def step_hash(self, step: int) -> Hash32:
        return self.step_hashes[step - 1]


class DisputeDesk:
    """Plays and judges the games a node is in. Called by `Node.poll` and `Node.tick`."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.games = node.deployment.disputes
        self.log = node.log
        self._runs: dict[JobId, Run] = {}
        self._http = httpx.Client(timeout=10.0)

    def close(self) -> None:
        self._http.close()

    # -- finding games -------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        args, me, db = event.args, self.node.address, self.node.db
        if event.name == "Challenged":
            game_id, job_id = int(args["game_id"]), JobId(args["job_id"])
            if args["defender"] == me:
                db.add_game(game_id, job_id, DEFENDER)
                self.log.warning("our result is challenged", game_id=game_id, job_id=job_id)
            elif args["challenger"] == me:
                db.add_game(game_id, job_id, CHALLENGER)
        elif event.name == "StepRevealed" and self.node.settings.jury:
            game_id = int(args["game_id"])
            if db.game(game_id) is None:
                game = self.games.game(game_id)
                if me not in (game.defender, game.challenger) and game.model_id in self.node.models:
                    db.add_game(game_id, game.job_id, JUROR)
        elif event.name == "GameResolved":
            game_id = int(args["game_id"])
            record = db.game(game_id)
            if record is not None and not record.done:
                self._finish(record, GameOutcome(int(args["outcome"])))

    def poll(self, start: int) -> int:
        """Handle game events from block `start` on (handling one twice changes nothing)."""
        events = self.games.decode_logs(
            self.node.chain.logs(address=self.games.address, from_block=start)
        )
        for event in events:
            self.on_event(event)
        return len(events)

    def challenge(self, job_id: JobId) -> int:
        """Put up the bond and open a game over `job_id`'s result; follow it as challenger."""
        me, d = self.node.address, self.node.deployment
        bond = d.params.snapshot().challenge_bond
        if d.token.allowance(me, self.games.address) < bond:
            d.token.approve(self.games.address, bond, sender=me)
        game_id, _ = self.games.challenge(job_id, sender=me)
        self.node.metrics.transactions.labels(kind="challenge").inc()
        self.node.db.add_game(game_id, job_id, CHALLENGER)
        return game_id

    # -- moving games --------------------------------------------------------------------

    def tick(self, now: int) -> None:
        for record in self.node.db.open_games():
            try:
                self.advance(record, now)
            except ContractRevert as exc:  # a move the chain refused: read again next tick
                self.log.warning("game move refused", game_id=record.game_id, error=str(exc))
            except VerinetError as exc:
                self.log.warning("game step failed", game_id=record.game_id, error=str(exc))

    def advance(self, record: GameRecord, now: int) -> None:
        game = self.games.game(record.game_id)
        if game.phase is GamePhase.DONE:
            self._finish(record, game.outcome)
            return
        me = self.node.address
        if record.role == JUROR:
            if game.phase is GamePhase.VOTE and not record.voted:
                self._judge(record, game, now)
            return
        defender = record.role == DEFENDER
        mine = game.phase in (
            (GamePhase.DEFENDER, GamePhase.STEP) if defender else (GamePhase.CHALLENGER,)
        )
        if not mine:
            if now > game.deadline:  # the other side (or the committee) let time run out
                self.games.timeout(game.game_id, sender=me)
                self.log.info("called time on a game", game_id=game.game_id)
            return
        run = self._run(game)
        if game.phase is GamePhase.DEFENDER:
            self.games.bisect(game.game_id, run.links[game.mid], sender=me)
        elif game.phase is GamePhase.STEP:
            self.games.reveal_step(game.game_id, run.step_hash(game.hi), sender=me)
            self.log.info("revealed the disputed step", game_id=game.game_id, step=game.hi)
        else:
            agree = game.mid < len(run.links) and run.links[game.mid] == game.mid_link
            self.games.respond(game.game_id, agree, sender=me)

    def _finish(self, record: GameRecord, outcome: GameOutcome) -> None:
        won = {DEFENDER: GameOutcome.DEFENDER, CHALLENGER: GameOutcome.CHALLENGER}.get(record.role)
        self.node.db.update_game(record.game_id, done=1, outcome=outcome.name)
        self._runs.pop(JobId(record.job_id), None)
        self.node.metrics.games.labels(role=record.role, outcome=outcome.name.lower()).inc()
        level = "warning" if won is not None and outcome not in (won, GameOutcome.DRAW) else "info"
        getattr(self.log, level)(
            "game over", game_id=record.game_id, role=record.role, outcome=outcome.name
        )

    def _run(self, game: Game) -> Run:
        """This node's links and step hashes for the game's job (from its stored input)."""
        run = self._runs.get(game.job_id)
        if run is None:
            record = self.node.record(game.job_id)
            run = self._runs[game.job_id] = self.node.dispute_run(record)
        return run

    def run_of(self, record: JobRecord) -> Run:
        """The links and step hashes of this node's own run of a job (honest play)."""
        if record.output_hash is None or record.input_cid is None:
            raise VerinetError(f"this node has not executed job {record.job_id}")
        if record.mode == Mode.SIGNED:
            model_cid = self.node.deployment.models.model(record.model_id).model_cid
            links = signed_links(model_cid, record.input_hash, record.output_hash)
            return Run(links, [record.output_hash])
        served = self.node.served(record.model_id)
        inputs = decode_group(self.node.store.get(Cid(record.input_cid)))
        traced = self.node.pool.traced(served.manifest_cid, inputs)
        return Run(traced.links, [*traced.step_hashes, record.output_hash])

    # -- evidence and judging ------------------------------------------------------------

    def evidence(self, record: JobRecord, step: int) -> bytes:
        """The evidence this node serves for step `step` of its claimed result."""
        if record.input_cid is None:
            raise VerinetError(f"this node has not executed job {record.job_id}")
        inputs = decode_group(self.node.store.get(Cid(record.input_cid)))
        if record.mode == Mode.SIGNED:
            return whole_model_evidence(inputs).to_json()
        served = self.node.served(record.model_id)
        return self.node.pool.evidence(served.manifest_cid, inputs, step)

    def _judge(self, record: GameRecord, game: Game, now: int) -> None:
        me = self.node.address
        if not self.games.is_juror(game.game_id, me):
            return  # not drawn (yet: the draw widens each selection round)
        served = self.node.models.get(ModelId(game.model_id))
        if served is None:
            return
        evidence = self._fetch_evidence(game)
        window = self.node.deployment.params.snapshot().vote_window
        if evidence is None and now < game.vote_opened_at + window // 2:
            return  # give a slow defender half the window before ruling it withheld
        claim = self.node.market.claim_of(game.job_id)
        job = self.node.market.job(game.job_id)
        terms: dict[str, Any] = {
            "model_cid": self.node.deployment.models.model(game.model_id).model_cid,
            "input_hash": job.input_hash,
            "ops": claim.ops,
            "root": claim.trace_root,
            "step": game.hi,
            "agreed_link": game.lo_link,
            "claimed_op_hash": game.step_hash,
        }
        try:
            judgement = self.node.pool.judge(served.manifest_cid, evidence or b"", terms)
        except ExecutionTimeout as exc:
            self.log.warning("abstained: the step overran", game_id=game.game_id, error=str(exc))
            self.node.db.update_game(game.game_id, voted=1, note="abstained: " + str(exc))
            return
        self.node.db.update_game(game.game_id, voted=1, note=judgement.reason)
        self.games.vote(game.game_id, judgement.defender_right, sender=me)
        self.log.info(
            "voted",
            game_id=game.game_id,
            defender_right=judgement.defender_right,
            check=str(judgement.check),
        )

    def _fetch_evidence(self, game: Game) -> bytes | None:
        """The defender's evidence for the disputed step, or None if it does not serve it."""
        endpoint = self.node.deployment.nodes.node(game.defender).endpoint
        url = f"{endpoint.rstrip('/')}/v1/jobs/{game.job_id}/evidence/{game.hi}"
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    return None
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > DEFAULT_MAX_EVIDENCE_BYTES:
                        return b""  # oversized: malformed, against the defender
                return bytes(body)
        except httpx.HTTPError:
            return None


def watch_draw(secret: bytes, job_id: JobId, fraction: float) -> bool:
    """Whether this node re-executes job `job_id` as a watcher: a draw keyed by the node's own
    secret, so no claimant can know which jobs a given watcher checks."""
    if fraction >= 1.0:
        return True
    word = hashlib.sha256(secret + job_id.to_bytes(32, "big")).digest()
    return int.from_bytes(word[:8], "big") < fraction * 2**64
