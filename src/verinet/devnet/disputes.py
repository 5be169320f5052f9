"""Drive optimistic claims and dispute games through the contracts by hand.

The contract tests, the dispute benchmark and the adversarial suite use these: a trace is
given as its op output hashes (a real traced run's, or made up), and each party plays the
game from its own trace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from verinet.chain._backend import TxReceipt
from verinet.devnet.bootstrap import Network
from verinet.devnet.jobs import JobRun, drawn_nodes
from verinet.protocol.trace import hash_chain, initial_link, merkle_root
from verinet.protocol.types import GamePhase, Mode
from verinet.types import Address, Hash32, JobId


@dataclass(frozen=True, slots=True)
class ClaimedTrace:
    """What one party believes a run was: op output hashes, then the output hash.

    `links` are h_0 .. h_{N+1}; `step_hash(i)` is H_i (op i's output hash; for the
    outputs step N+1, the output hash).
    """

    model_cid: bytes
    input_hash: Hash32
    op_hashes: tuple[Hash32, ...]
    output_hash: Hash32

    @property
    def ops(self) -> int:
        return len(self.op_hashes)

    @property
    def links(self) -> list[Hash32]:
        chain = hash_chain(initial_link(self.model_cid, self.input_hash), self.op_hashes)
        top = Hash32(hashlib.sha256(chain[-1] + self.output_hash).digest())
        return [*chain, top]

    @property
    def final(self) -> Hash32:
        """h_N: what a claim commits as its trace's end."""
        return self.links[-2]

    @property
    def root(self) -> Hash32:
        return merkle_root(self.op_hashes)

    def step_hash(self, step: int) -> Hash32:
        return self.output_hash if step == self.ops + 1 else self.op_hashes[step - 1]

    def with_op(self, index: int, op_hash: Hash32) -> ClaimedTrace:
        """The same run with op `index`'s output hash replaced (a wrong op)."""
        ops = list(self.op_hashes)
        ops[index - 1] = op_hash
        return ClaimedTrace(self.model_cid, self.input_hash, tuple(ops), self.output_hash)

    def with_output(self, output_hash: Hash32) -> ClaimedTrace:
        return ClaimedTrace(self.model_cid, self.input_hash, self.op_hashes, output_hash)


def synthetic_trace(
    model_cid: bytes, input_hash: Hash32, ops: int, salt: bytes = b""
) -> ClaimedTrace:
    """A made-up run of `ops` ops (for games where nobody re-executes anything)."""

    def word(label: bytes) -> Hash32:
        return Hash32(hashlib.sha256(salt + label).digest())

    return ClaimedTrace(
        model_cid,
        input_hash,
        tuple(word(b"op %d" % i) for i in range(1, ops + 1)),
        word(b"outputs"),
    )


def run_optimistic(
    net: Network, client: LocalAccount, trace: ClaimedTrace, *, node: LocalAccount | None = None
) -> tuple[JobRun, LocalAccount]:
    """Request an optimistic job and have a drawn node (or `node`) claim `trace`."""
    d = net.deployment
    sender = Address(client.address)
    job_id, receipt = d.market.request(
        net.model_id, trace.input_hash, Mode.OPTIMISTIC, 1, sender=sender
    )
    run = JobRun(job_id, transactions=[("request", receipt)])
    claimant = node or drawn_nodes(net, job_id, 1)[0]
    tx = d.market.submit_claim(
        job_id,
        trace.output_hash,
        trace.final,
        trace.root,
        trace.ops,
        sender=Address(claimant.address),
    )
    run.transactions.append(("submit_claim", tx))
    run.job = d.market.job(job_id)
    return run, claimant


def challenge(net: Network, job_id: JobId, challenger: LocalAccount) -> tuple[int, TxReceipt]:
    """Approve the bond and open a game over `job_id`'s result."""
    d = net.deployment
    sender = Address(challenger.address)
    bond = d.params.snapshot().challenge_bond
    d.token.approve(d.disputes.address, bond, sender=sender)
    return d.disputes.challenge(job_id, sender=sender)


Judge = Callable[[int, Hash32], bool]
"""A committee member's ruling: is `step_hash` right for step `step`?"""


@dataclass(slots=True)
class GamePlay:
    """A game played to its end: the rounds it took and every transaction."""

    game_id: int
    rounds: int = 0
    step: int = 0
    transactions: list[tuple[str, TxReceipt]] = field(default_factory=list)

    @property
    def gas(self) -> int:
        return sum(r.gas_used for _, r in self.transactions)


def play(
    net: Network,
    game_id: int,
    *,
    defender: ClaimedTrace,
    challenger: ClaimedTrace,
    judge: Judge | None = None,
    jurors: Sequence[LocalAccount] = (),
) -> GamePlay:
    """Play game `game_id` with both parties honest to their own traces: the defender posts
    its links, the challenger agrees where its own link is the same, the defender reveals
    the disputed step, and each juror votes `judge(step, step_hash)` until it is decided.
    With no judge the game stops once the vote is open."""
    games = net.deployment.disputes
    game = games.game(game_id)
    play = GamePlay(game_id)
    mine, theirs = defender.links, challenger.links
    while game.phase in (GamePhase.DEFENDER, GamePhase.CHALLENGER):
        mid = game.mid
        if game.phase is GamePhase.DEFENDER:
            tx = games.bisect(game_id, mine[mid], sender=game.defender)
            play.transactions.append(("bisect", tx))
        else:
            agree = mid < len(theirs) and theirs[mid] == game.mid_link
            tx = games.respond(game_id, agree, sender=game.challenger)
            play.transactions.append(("respond", tx))
            play.rounds += 1
        game = games.game(game_id)
    play.step = game.hi
    tx = games.reveal_step(game_id, defender.step_hash(game.hi), sender=game.defender)
    play.transactions.append(("reveal_step", tx))
    if judge is None:
        return play
    game = games.game(game_id)
    for juror in jurors:
        if game.phase is not GamePhase.VOTE:
            break
        ruling = judge(game.hi, game.step_hash)
        tx = games.vote(game_id, ruling, sender=Address(juror.address))
        play.transactions.append(("vote", tx))
        game = games.game(game_id)
    return play


def jurors_for(net: Network, game_id: int) -> list[LocalAccount]:
    """The nodes that may vote in the game now (neither party, drawn, not voted)."""
    games = net.deployment.disputes
    return [n for n in net.nodes if games.is_juror(game_id, Address(n.address))]


def past_deadline(net: Network, deadline: int) -> None:
    """Move a dev chain's clock past `deadline`."""
    net.chain.advance_time(max(0, deadline - net.chain.timestamp()) + 1)
