"""Typed wrapper for the DisputeGame contract (bisection over a claim's trace, then a vote)."""

from __future__ import annotations

from verinet.chain._abi import BoundContract
from verinet.chain._backend import TxReceipt
from verinet.protocol.types import Game, GameOutcome, GamePhase
from verinet.types import Address, Hash32, JobId, ModelId, Wei


class DisputeGame(BoundContract):
    """Challenges to submitted results: bisection, a one-step reveal, a committee vote."""

    NAME = "DisputeGame"

    def game(self, game_id: int) -> Game:
        v = self._call("games", game_id)
        return Game(
            game_id=game_id,
            job_id=JobId(v[0]),
            defender=v[1],
            challenger=v[2],
            model_id=ModelId(v[3]),
            bond=Wei(v[4]),
            phase=GamePhase(v[5]),
            outcome=GameOutcome(v[6]),
            lo=v[7],
            hi=v[8],
            lo_link=Hash32(v[9]),
            hi_link=Hash32(v[10]),
            mid_link=Hash32(v[11]),
            step_hash=Hash32(v[12]),
            deadline=v[13],
            committee=v[14],
            votes_defender=v[15],
            votes_challenger=v[16],
            seed=Hash32(v[17]),
            vote_block=v[18],
            vote_opened_at=v[19],
            stake_total=Wei(v[20]),
        )

    def game_count(self) -> int:
        return int(self._call("game_count"))

    def voters_of(self, game_id: int) -> list[Address]:
        return list(self._call("voters_of", game_id))

    def ballot(self, game_id: int, voter: Address) -> int:
        """0: none, 1: for the defender, 2: for the challenger."""
        return int(self._call("ballots", game_id, voter))

    def challenged(self, job_id: JobId, node: Address) -> bool:
        return bool(self._call("challenged", job_id, node))

    def is_juror(self, game_id: int, node: Address) -> bool:
        return bool(self._call("is_juror", game_id, node))

    def owed(self, account: Address) -> Wei:
        return Wei(self._call("owed", account))

    def total_bonds(self) -> Wei:
        return Wei(self._call("total_bonds"))

    def total_owed(self) -> Wei:
        return Wei(self._call("total_owed"))

    def challenge(self, job_id: JobId, *, sender: Address) -> tuple[int, TxReceipt]:
        """Dispute a job's result (approve the bond to this contract first)."""
        receipt = self._send("challenge", job_id, sender=sender)
        (event,) = self.events(receipt, "Challenged")
        return int(event.args["game_id"]), receipt

    def bisect(self, game_id: int, link: Hash32, *, sender: Address) -> TxReceipt:
        return self._send("bisect", game_id, link, sender=sender)

    def respond(self, game_id: int, agree: bool, *, sender: Address) -> TxReceipt:
        return self._send("respond", game_id, agree, sender=sender)

    def reveal_step(self, game_id: int, step_hash: Hash32, *, sender: Address) -> TxReceipt:
        return self._send("reveal_step", game_id, step_hash, sender=sender)

    def vote(self, game_id: int, defender_right: bool, *, sender: Address) -> TxReceipt:
        return self._send("vote", game_id, defender_right, sender=sender)

    def timeout(self, game_id: int, *, sender: Address) -> TxReceipt:
        return self._send("timeout", game_id, sender=sender)

    def withdraw(self, *, sender: Address) -> TxReceipt:
        return self._send("withdraw", sender=sender)
