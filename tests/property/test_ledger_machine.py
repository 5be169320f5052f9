"""Stateful property test of the ledger: NodeRegistry + InferenceMarket on the embedded EVM.

A hypothesis state machine registers, stakes, unstakes and withdraws nodes, requests
signed and quorum jobs (paid and free), commits honest or wrong outputs, reveals with
the right or a wrong salt, submits signed receipts, finalizes, lets deadlines pass and
withdraws what the market owes. A plain-Python model, built on `verinet.protocol.rules`,
predicts every outcome, down to the typed revert each refused call must raise.

After every step the chain must agree with the model and with the protocol's
accounting identities: the supply is conserved, the market holds exactly escrow +
owed, the registry exactly what is bonded, every settled job paid out exactly its
escrow (once), terminal jobs never change again, and a node's open assignments are
the seats it holds in unsettled jobs.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule

from verinet.chain import EmbeddedChain
from verinet.devnet.bootstrap import MAX_UINT, TOKEN, Network, bootstrap, placeholder_cid
from verinet.errors import REVERT_REASONS, ContractRevert
from verinet.protocol.receipts import sign_receipt
from verinet.protocol.rules import (
    commitment,
    is_selected,
    resolve_quorum,
    selection_multiplier,
    slash_amount,
    split_fee,
)
from verinet.protocol.types import ZERO_HASH, Job, JobState, Mode, ParamsSnapshot, Penalty
from verinet.types import Address, Hash32, JobId, ModelId, Wei

pytestmark = pytest.mark.contracts

R = TypeVar("R")

ACCOUNTS = 16
NODES = 5  # registered and staked by bootstrap
CLIENTS = 2
SPARES = ACCOUNTS - 3 - NODES - CLIENTS  # unregistered until the machine registers them
POOL = NODES + SPARES  # every account that may act as a node
SPARE_FUNDS = Wei(2_000 * TOKEN)
# The bootstrap model, a free one, and one whose fee split leaves integer-division dust.
FEES = (Wei(TOKEN), Wei(0), Wei(TOKEN // 10 + 3))
# Seat answers: 0 is the honest output, 1 and 2 are wrong ones (which may still agree).
ANSWERS = st.sampled_from((0, 0, 0, 1, 2))
UNUSED_ANSWER = 3


@dataclass(slots=True)
class _World:
    """The protocol deployed once per session; every example starts from `snapshot`."""

    net: Network
    models: tuple[ModelId, ...]
    pool: tuple[LocalAccount, ...]
    everyone: tuple[Address, ...]
    params: ParamsSnapshot
    supply: Wei
    stakes: dict[Address, int]
    snapshot: int


@functools.cache
def _world() -> _World:
    chain = EmbeddedChain(accounts=ACCOUNTS)
    net = bootstrap(chain, nodes=NODES, clients=CLIENTS, fee=FEES[0])
    d = net.deployment
    owner = Address(net.model_owner.address)
    models = [net.model_id]
    for label, fee in (("free", FEES[1]), ("dust", FEES[2])):
        model_id, _ = d.models.publish(
            placeholder_cid(f"{label} model"),
            placeholder_cid(f"{label} manifest"),
            fee,
            Mode.SIGNED | Mode.QUORUM,
            sender=owner,
        )
        models.append(model_id)
    deployer = Address(net.deployer.address)
    spares = tuple(chain.accounts[3 + NODES + CLIENTS :])
    for i, node in enumerate(net.nodes):
        address = Address(node.address)
        d.token.approve(d.nodes.address, Wei(MAX_UINT), sender=address)
        d.nodes.set_serving(models[1:], True, sender=address)
        if i:
            # Unequal stakes, so the sortition draw differs from node to node.
            d.nodes.stake(Wei(i * 150 * TOKEN), sender=address)
    for spare in spares:
        address = Address(spare.address)
        d.token.transfer(address, SPARE_FUNDS, sender=deployer)
        d.token.approve(d.nodes.address, Wei(MAX_UINT), sender=address)
    pool = (*net.nodes, *spares)
    return _World(
        net=net,
        models=tuple(models),
        pool=pool,
        everyone=tuple(Address(a.address) for a in chain.accounts),
        params=d.params.snapshot(),
        supply=d.token.total_supply(),
        stakes={Address(n.address): d.nodes.node(Address(n.address)).stake for n in pool},
        snapshot=chain.snapshot(),
    )


@dataclass(slots=True)
class _Node:
    registered: bool
    stake: int
    serves: frozenset[ModelId]
    unbonding: int = 0
    unbond_at: int = 0


@dataclass(slots=True)
class _Job:
    job_id: JobId
    requester: Address
    model_id: ModelId
    model_owner: Address
    input_hash: Hash32
    mode: Mode
    k: int
    escrow: int
    seed: Hash32
    requested_at: int
    commit_deadline: int
    reveal_deadline: int
    finalize_after: int = 0
    state: JobState = JobState.OPEN
    seats: list[Address] = field(default_factory=list)
    commits: dict[Address, tuple[Hash32, bytes]] = field(default_factory=dict)
    revealed: dict[Address, Hash32] = field(default_factory=dict)
    result: Hash32 = ZERO_HASH
    settled: Job | None = None  # the chain's record the moment the job turned terminal


def _output(job_id: JobId, answer: int) -> Hash32:
    return Hash32(keccak(f"job {job_id} answer {answer}".encode()))


def _salt(job_id: JobId, node: Address) -> bytes:
    return keccak(f"salt {job_id} {node}".encode())


def _expect(reason: str | None, send: Callable[[], R]) -> R | None:
    """Run `send`; it must succeed when `reason` is None, else revert with exactly `reason`."""
    if reason is None:
        return send()
    with pytest.raises(ContractRevert) as refused:
        send()
    assert type(refused.value) is REVERT_REASONS[reason], (
        f"expected {reason}, got {type(refused.value).__name__}"
    )
    return None


class LedgerMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        w = _world()
        w.net.chain.revert(w.snapshot)
        w.snapshot = w.net.chain.snapshot()
        self.w = w
        self.chain = w.net.chain
        self.d = w.net.deployment
        self.p = w.params
        self.treasury = Address(self.p.treasury)
        self.owner = Address(w.net.model_owner.address)
        self.clients = tuple(Address(c.address) for c in w.net.clients)
        self.nodes = {
            Address(a.address): _Node(
                registered=i < NODES,
                stake=w.stakes[Address(a.address)],
                serves=frozenset(w.models) if i < NODES else frozenset(),
            )
            for i, a in enumerate(w.pool)
        }
        self.job_model: dict[JobId, _Job] = {}
        self.owed: defaultdict[Address, int] = defaultdict(int)
        self.deprecated: set[ModelId] = set()
        self.settled_by_events: set[JobId] = set()
        self.log_cursor = self.chain.block_number() + 1

    # -- model helpers -----------------------------------------------------------

    def _address(self, i: int) -> Address:
        return Address(self.w.pool[i].address)

    def _open_assignments(self, node: Address) -> int:
        return sum(
            node in job.seats for job in self.job_model.values() if not job.state.terminal
        )

    def _eligible(self, job: _Job, node: Address) -> bool:
        """The sortition draw, predicted with the Python twin rules."""
        n = self.nodes[node]
        if job.model_id not in n.serves or n.stake < self.p.min_stake or n.stake == 0:
            return False
        total = sum(m.stake for m in self.nodes.values())
        elapsed = self.chain.timestamp() - job.requested_at
        multiplier = selection_multiplier(
            job.k, self.p.selection_oversample, elapsed, self.p.selection_round
        )
        return is_selected(job.seed, node, Wei(n.stake), Wei(total), multiplier)

    def _check_eligible(self, job: _Job, node: Address) -> bool:
        predicted = job.state == JobState.OPEN and self._eligible(job, node)
        assert self.d.market.is_eligible(job.job_id, node) == predicted
        return predicted

    def _finalizable(self, job: _Job) -> bool:
        now = self.chain.timestamp()
        if job.state == JobState.SUBMITTED:
            return now >= job.finalize_after
        if job.state != JobState.OPEN:
            return False
        if now >= job.reveal_deadline:
            return True
        return (
            job.mode == Mode.QUORUM
            and len(job.seats) > 0
            and len(job.revealed) == len(job.seats)
            and (len(job.seats) == job.k or now >= job.commit_deadline)
        )

    def _drawn(self, job: _Job) -> list[Address]:
        return [
            a
            for a in map(Address, (p.address for p in self.w.pool))
            if a not in job.commits and self._eligible(job, a)
        ]

    # -- node registry -----------------------------------------------------------

    @rule(i=st.integers(0, POOL - 1), served=st.sets(st.integers(0, 2)))
    def register(self, i: int, served: set[int]) -> None:
        node = self._address(i)
        n = self.nodes[node]
        reason = "AlreadyRegistered" if n.registered else None
        if _expect(reason, lambda: self.d.nodes.register(f"http://n{i}.test", sender=node)) is None:
            return
        n.registered = True
        if served:
            ids = sorted(self.w.models[m] for m in served)
            self.d.nodes.set_serving(ids, True, sender=node)
            n.serves = frozenset(ids)

    @rule(i=st.integers(0, POOL - 1), model=st.integers(0, 2), serving=st.booleans())
    def set_serving(self, i: int, model: int, serving: bool) -> None:
        node = self._address(i)
        n = self.nodes[node]
        model_id = self.w.models[model]
        reason = None if n.registered else "NotRegistered"
        send = lambda: self.d.nodes.set_serving([model_id], serving, sender=node)  # noqa: E731
        if _expect(reason, send) is None:
            return
        n.serves = n.serves | {model_id} if serving else n.serves - {model_id}

    @rule(
        i=st.integers(0, POOL - 1),
        amount=st.sampled_from((0, 1, 40 * TOKEN, 100 * TOKEN, 450 * TOKEN, 5_000 * TOKEN)),
    )
    def stake(self, i: int, amount: int) -> None:
        node = self._address(i)
        n = self.nodes[node]
        balance = self.d.token.balance_of(node)
        if not n.registered:
            reason: str | None = "NotRegistered"
        elif amount == 0:
            reason = "ZeroAmount"
        elif amount > balance:
            reason = "InsufficientBalance"
        else:
            reason = None
        if _expect(reason, lambda: self.d.nodes.stake(Wei(amount), sender=node)) is None:
            return
        n.stake += amount
        assert self.d.token.balance_of(node) == balance - amount

    @rule(
        i=st.integers(0, POOL - 1),
        part=st.sampled_from(("zero", "third", "keep_min", "all", "over")),
    )
    def request_unstake(self, i: int, part: str) -> None:
        node = self._address(i)
        n = self.nodes[node]
        amount = {
            "zero": 0,
            "third": n.stake // 3,
            "keep_min": max(n.stake - self.p.min_stake, 0),
            "all": n.stake,
            "over": n.stake + 1,
        }[part]
        if not n.registered:
            reason: str | None = "NotRegistered"
        elif self._open_assignments(node):
            reason = "OpenAssignments"
        elif amount == 0:
            reason = "ZeroAmount"
        elif amount > n.stake:
            reason = "InsufficientStake"
        else:
            reason = None
        send = lambda: self.d.nodes.request_unstake(Wei(amount), sender=node)  # noqa: E731
        if _expect(reason, send) is None:
            return
        assert self.d.nodes.node(node).open_assignments == 0, "unstaked with open assignments"
        n.stake -= amount
        n.unbonding += amount
        n.unbond_at = self.chain.timestamp() + self.p.unbonding_delay

    @rule(i=st.integers(0, POOL - 1))
    def withdraw_stake(self, i: int) -> None:
        node = self._address(i)
        n = self.nodes[node]
        if n.unbonding == 0:
            reason: str | None = "NothingToWithdraw"
        elif self._open_assignments(node):
            reason = "OpenAssignments"
        elif self.chain.timestamp() < n.unbond_at:
            reason = "StillUnbonding"
        else:
            reason = None
        balance = self.d.token.balance_of(node)
        if _expect(reason, lambda: self.d.nodes.withdraw(sender=node)) is None:
            return
        assert self.d.nodes.node(node).open_assignments == 0, "withdrew with open assignments"
        assert self.d.token.balance_of(node) == balance + n.unbonding
        n.unbonding = 0
        event("withdraw_stake: paid out")

    # -- requests ------------------------------------------------------------------

    @rule(
        target=jobs,
        client=st.integers(0, CLIENTS - 1),
        model=st.integers(0, 2),
        shape=st.sampled_from(((Mode.SIGNED, 1), (Mode.QUORUM, 2), (Mode.QUORUM, 3), (Mode.QUORUM, 4))),
    )
    def request(self, client: int, model: int, shape: tuple[Mode, int]) -> object:
        requester = self.clients[client]
        mode, k = shape
        model_id = self.w.models[model]
        job_id = JobId(len(self.job_model) + 1)
        input_hash = Hash32(keccak(f"input {job_id}".encode()))
        reason = "ModelDeprecated" if model_id in self.deprecated else None
        balance = self.d.token.balance_of(requester)
        now = self.chain.timestamp()
        sent = _expect(
            reason, lambda: self.d.market.request(model_id, input_hash, mode, k, sender=requester)
        )
        if sent is None:
            return multiple()
        got_id, receipt = sent
        assert got_id == job_id
        (requested,) = self.d.market.events(receipt, "JobRequested")
        escrow = FEES[model] * k
        args = requested.args
        assert (args["escrow"], args["mode"], args["k"]) == (escrow, mode, k)
        assert args["commit_deadline"] == now + self.p.commit_window
        assert args["reveal_deadline"] == args["commit_deadline"] + self.p.reveal_window
        assert self.d.token.balance_of(requester) == balance - escrow
        self.job_model[job_id] = _Job(
            job_id=job_id,
            requester=requester,
            model_id=model_id,
            model_owner=self.owner,
            input_hash=input_hash,
            mode=mode,
            k=k,
            escrow=escrow,
            seed=Hash32(args["seed"]),
            requested_at=now,
            commit_deadline=args["commit_deadline"],
            reveal_deadline=args["reveal_deadline"],
        )
        return job_id

    @rule(
        case=st.sampled_from(
            ("unknown_model", "optimistic", "signed_k2", "quorum_k1", "quorum_k16", "zero_input")
        )
    )
    def request_refused(self, case: str) -> None:
        model_id, mode, k, input_hash = self.w.models[0], Mode.QUORUM, 3, Hash32(keccak(b"in"))
        reason = "InvalidQuorum"
        if case == "unknown_model":
            model_id, reason = ModelId(99), "UnknownModel"
        elif case == "optimistic":
            mode, reason = Mode.OPTIMISTIC, "ModeNotAllowed"
        elif case == "signed_k2":
            mode, k = Mode.SIGNED, 2
        elif case == "quorum_k1":
            k = 1
        elif case == "quorum_k16":
            k = 16
        else:
            input_hash, reason = ZERO_HASH, "InvalidHash"
        sender = self.clients[0]
        _expect(reason, lambda: self.d.market.request(model_id, input_hash, mode, k, sender=sender))

    @rule(model=st.integers(1, 2))
    def deprecate(self, model: int) -> None:
        # The bootstrap model stays live; deprecating the others must not strand their jobs.
        model_id = self.w.models[model]
        reason = "ModelDeprecated" if model_id in self.deprecated else None
        if _expect(reason, lambda: self.d.models.deprecate(model_id, sender=self.owner)) is None:
            return
        self.deprecated.add(model_id)

    # -- quorum: commit and reveal -------------------------------------------------

    def _commit(self, job: _Job, node: Address, answer: int) -> bool:
        now = self.chain.timestamp()
        eligible = self._check_eligible(job, node)
        if job.state != JobState.OPEN:
            reason: str | None = "JobNotOpen"
        elif job.mode != Mode.QUORUM:
            reason = "WrongMode"
        elif now >= job.commit_deadline:
            reason = "DeadlinePassed"
        elif len(job.seats) >= job.k:
            reason = "SeatsFull"
        elif node in job.commits:
            reason = "AlreadyCommitted"
        elif not eligible:
            reason = "NotEligible"
        else:
            reason = None
        output, salt = _output(job.job_id, answer), _salt(job.job_id, node)
        sealed = commitment(output, salt, node)
        receipt = _expect(reason, lambda: self.d.market.commit(job.job_id, sealed, sender=node))
        if receipt is None:
            return False
        (committed,) = self.d.market.events(receipt, "JobCommitted")
        assert (committed.args["node"], committed.args["seat"]) == (node, len(job.seats))
        job.seats.append(node)
        job.commits[node] = (output, salt)
        assert len(self.d.market.events(receipt, "JobSealed")) == (len(job.seats) == job.k)
        return True

    @rule(job_id=jobs, answer=ANSWERS, data=st.data())
    def commit(self, job_id: JobId, answer: int, data: st.DataObject) -> None:
        job = self.job_model[job_id]
        drawn = self._drawn(job) if job.state == JobState.OPEN else []
        if drawn and data.draw(st.booleans(), label="a drawn node"):
            node = data.draw(st.sampled_from(drawn), label="node")
        else:
            node = self._address(data.draw(st.integers(0, POOL - 1), label="node"))
        self._commit(job, node, answer)

    @rule(job_id=jobs, answers=st.lists(ANSWERS, min_size=4, max_size=4))
    def fill_quorum(self, job_id: JobId, answers: list[int]) -> None:
        """Seat drawn nodes until the quorum is full or no drawn node is left."""
        job = self.job_model[job_id]
        drawn = self._drawn(job) if job.state == JobState.OPEN else []
        if not drawn:
            self._commit(job, self._address(0), answers[0])
            return
        for node in drawn:
            if len(job.seats) == job.k or not self._commit(job, node, answers[len(job.seats)]):
                break

    def _reveal(self, job: _Job, node: Address, tamper: str) -> bool:
        now = self.chain.timestamp()
        output, salt = job.commits.get(node, (_output(job.job_id, 0), _salt(job.job_id, node)))
        if tamper == "salt":
            salt = keccak(salt)
        elif tamper == "output":
            output = _output(job.job_id, UNUSED_ANSWER)
        if job.state != JobState.OPEN:
            reason: str | None = "JobNotOpen"
        elif job.mode != Mode.QUORUM:
            reason = "WrongMode"
        elif node not in job.commits:
            reason = "NotSeated"
        elif node in job.revealed:
            reason = "AlreadyRevealed"
        elif not (len(job.seats) == job.k or now >= job.commit_deadline):
            reason = "RevealNotOpen"
        elif now >= job.reveal_deadline:
            reason = "DeadlinePassed"
        elif tamper != "none":
            reason = "CommitmentMismatch"
        else:
            reason = None
        send = lambda: self.d.market.reveal(job.job_id, output, salt, sender=node)  # noqa: E731
        receipt = _expect(reason, send)
        if receipt is None:
            return False
        (revealed,) = self.d.market.events(receipt, "JobRevealed")
        assert (revealed.args["node"], revealed.args["output_hash"]) == (node, output)
        job.revealed[node] = output
        return True

    @rule(
        job_id=jobs,
        tamper=st.sampled_from(("none", "none", "salt", "output")),
        data=st.data(),
    )
    def reveal(self, job_id: JobId, tamper: str, data: st.DataObject) -> None:
        job = self.job_model[job_id]
        if job.seats and data.draw(st.booleans(), label="a seated node"):
            node = data.draw(st.sampled_from(job.seats), label="node")
        else:
            node = self._address(data.draw(st.integers(0, POOL - 1), label="node"))
        self._reveal(job, node, tamper)

    @rule(job_id=jobs, withhold=st.lists(st.booleans(), min_size=4, max_size=4))
    def reveal_all(self, job_id: JobId, withhold: list[bool]) -> None:
        """Every seated node reveals honestly what it committed, but the withholders."""
        job = self.job_model[job_id]
        pending = [n for n in job.seats if n not in job.revealed]
        if not pending:
            self._reveal(job, self._address(0), "none")
            return
        for seat, node in enumerate(job.seats):
            if node in pending and not withhold[seat] and not self._reveal(job, node, "none"):
                break

    # -- signed: receipts ----------------------------------------------------------

    @rule(
        job_id=jobs,
        answer=ANSWERS,
        forged=st.booleans(),
        submitter=st.integers(0, ACCOUNTS - 1),
        data=st.data(),
    )
    def submit_receipt(
        self, job_id: JobId, answer: int, forged: bool, submitter: int, data: st.DataObject
    ) -> None:
        job = self.job_model[job_id]
        drawn = self._drawn(job) if job.state == JobState.OPEN else []
        if drawn and data.draw(st.booleans(), label="a drawn node"):
            node = data.draw(st.sampled_from(drawn), label="node")
        else:
            node = self._address(data.draw(st.integers(0, POOL - 1), label="node"))
        index = next(i for i, a in enumerate(self.w.pool) if a.address == node)
        # A forged receipt names `node` but is signed by the next account of the pool.
        signer = self.w.pool[(index + 1) % POOL] if forged else self.w.pool[index]
        output = _output(job_id, answer)
        signed = sign_receipt(
            signer,
            chain_id=self.chain.chain_id,
            market=self.d.market.address,
            job_id=job_id,
            model_id=job.model_id,
            input_hash=job.input_hash,
            output_hash=output,
        )
        signed = replace(signed, node=node)
        now = self.chain.timestamp()
        eligible = self._check_eligible(job, node)
        if job.state != JobState.OPEN:
            reason: str | None = "JobNotOpen"
        elif job.mode != Mode.SIGNED:
            reason = "WrongMode"
        elif now >= job.reveal_deadline:
            reason = "DeadlinePassed"
        elif forged:
            reason = "WrongSigner"
        elif not eligible:
            reason = "NotEligible"
        else:
            reason = None
        sender = self.w.everyone[submitter]
        receipt = _expect(reason, lambda: self.d.market.submit_receipt(signed, sender=sender))
        if receipt is None:
            return
        (submitted,) = self.d.market.events(receipt, "ReceiptSubmitted")
        assert submitted.args["finalize_after"] == now + self.p.audit_window
        job.state = JobState.SUBMITTED
        job.finalize_after = now + self.p.audit_window
        job.seats.append(node)
        job.revealed[node] = output

    # -- settlement ----------------------------------------------------------------

    def _slash(self, node: Address, bonded: int, bps: int) -> int:
        """Apply a slash to the model: active stake first, then unbonding."""
        amount = slash_amount(Wei(bonded), bps)
        n = self.nodes[node]
        from_active = min(amount, n.stake)
        n.stake -= from_active
        n.unbonding -= amount - from_active
        return amount

    @rule(job_id=jobs, caller=st.integers(0, ACCOUNTS - 1))
    def finalize(self, job_id: JobId, caller: int) -> None:
        job = self.job_model[job_id]
        finalizable = self._finalizable(job)
        assert self.d.market.finalizable(job_id) == finalizable
        if job.state.terminal:
            reason: str | None = "JobNotOpen"
        elif not finalizable:
            reason = "TooEarly"
        else:
            reason = None
        # Read from the chain just before: what each seat had bonded, what the treasury held.
        bonded = {n: self.d.nodes.bonded(n) for n in job.seats}
        treasury_balance = self.d.token.balance_of(self.treasury)
        sender = self.w.everyone[caller]
        receipt = _expect(reason, lambda: self.d.market.finalize(job_id, sender=sender))
        if receipt is None:
            return

        if job.state == JobState.SUBMITTED:
            output: Hash32 | None = job.revealed[job.seats[0]]
            winners = list(job.seats)
            penalties: list[tuple[Address, int, int]] = []
        else:
            verdict = resolve_quorum([job.revealed.get(n) for n in job.seats], job.k)
            output = verdict.majority
            winners = [job.seats[i] for i in verdict.winners]
            penalties = []
            for seat, node in enumerate(job.seats):
                if seat in verdict.no_show:
                    why, bps = Penalty.NO_SHOW, self.p.slash_noshow_bps
                elif seat in verdict.wrong:
                    why, bps = Penalty.WRONG_OUTPUT, self.p.slash_fault_bps
                else:
                    continue
                penalties.append((node, int(why), self._slash(node, bonded[node], bps)))

        penalized = self.d.market.events(receipt, "NodePenalized")
        assert [(e.args["node"], e.args["reason"], e.args["amount"]) for e in penalized] == penalties
        slashed = self.d.nodes.events(receipt, "Slashed")
        assert [(e.args["node"], e.args["amount"]) for e in slashed] == [
            (node, amount) for node, _, amount in penalties if amount
        ]
        for e in slashed:
            assert e.args["amount"] <= bonded[e.args["node"]], "slashed more than was bonded"
            assert e.args["recipient"] == self.treasury
        taken = sum(amount for _, _, amount in penalties)
        assert self.d.token.balance_of(self.treasury) == treasury_balance + taken
        if taken:
            event("finalize: slashed")

        if output is None:
            assert not self.d.market.events(receipt, "JobPaid")
            (refunded,) = self.d.market.events(receipt, "JobRefunded")
            assert (refunded.args["requester"], refunded.args["amount"]) == (
                job.requester,
                job.escrow,
            )
            self.owed[job.requester] += job.escrow
            job.state = JobState.REFUNDED
            event(f"finalize: refunded {job.mode.name}")
        else:
            assert not self.d.market.events(receipt, "JobRefunded")
            (paid,) = self.d.market.events(receipt, "JobPaid")
            split = split_fee(
                Wei(job.escrow), len(winners), self.p.owner_bps, self.p.treasury_bps
            )
            args = paid.args
            assert args["output_hash"] == output
            assert args["winners"] == len(winners)
            assert (args["node_amount"], args["owner_amount"], args["treasury_amount"]) == (
                split.per_node,
                split.owner,
                split.treasury,
            )
            payout = args["node_amount"] * args["winners"]
            assert payout + args["owner_amount"] + args["treasury_amount"] == job.escrow
            for node in winners:
                self.owed[node] += split.per_node
            self.owed[job.model_owner] += split.owner
            self.owed[self.treasury] += split.treasury
            job.state, job.result = JobState.PAID, output
            event(f"finalize: paid {job.mode.name}")

        job.settled = self.d.market.job(job_id)
        assert (job.settled.state, job.settled.result) == (job.state, job.result)
        # A settled job refuses every further move.
        node = job.seats[0] if job.seats else self._address(0)
        _expect("JobNotOpen", lambda: self.d.market.finalize(job_id, sender=sender))
        _expect("JobNotOpen", lambda: self.d.market.commit(job_id, _salt(job_id, node), sender=node))
        _expect(
            "JobNotOpen",
            lambda: self.d.market.reveal(job_id, _output(job_id, 0), _salt(job_id, node), sender=node),
        )

    @rule()
    def unknown_job(self) -> None:
        job_id = JobId(len(self.job_model) + 1)
        node = self._address(0)
        assert not self.d.market.finalizable(job_id)
        assert not self.d.market.is_eligible(job_id, node)
        _expect("JobNotOpen", lambda: self.d.market.finalize(job_id, sender=node))
        _expect("JobNotOpen", lambda: self.d.market.commit(job_id, _salt(job_id, node), sender=node))

    @rule(data=st.data())
    def withdraw_owed(self, data: st.DataObject) -> None:
        creditors = sorted(a for a, v in self.owed.items() if v)
        if creditors and data.draw(st.booleans(), label="a creditor"):
            who = data.draw(st.sampled_from(creditors), label="who")
        else:
            who = self.w.everyone[data.draw(st.integers(0, ACCOUNTS - 1), label="who")]
        amount = self.owed[who]
        balance = self.d.token.balance_of(who)
        reason = None if amount else "NothingToWithdraw"
        receipt = _expect(reason, lambda: self.d.market.withdraw(sender=who))
        if receipt is None:
            return
        (withdrawn,) = self.d.market.events(receipt, "Withdrawn")
        assert (withdrawn.args["account"], withdrawn.args["amount"]) == (who, amount)
        assert self.d.token.balance_of(who) == balance + amount
        self.owed[who] = 0

    # -- time ----------------------------------------------------------------------

    def _advance_to(self, target: int) -> None:
        now = self.chain.timestamp()
        if target > now:
            self.chain.advance_time(target - now)

    @rule(seconds=st.sampled_from((1, 15, 29, 30, 61, 119, 120, 121, 240, 241, 3_600)))
    def advance_time(self, seconds: int) -> None:
        self.chain.advance_time(seconds)

    @rule(
        job_id=jobs,
        deadline=st.sampled_from(("commit_deadline", "reveal_deadline", "finalize_after")),
        offset=st.sampled_from((-1, 0, 1)),
    )
    def advance_to_deadline(self, job_id: JobId, deadline: str, offset: int) -> None:
        self._advance_to(getattr(self.job_model[job_id], deadline) + offset)

    @rule(i=st.integers(0, POOL - 1), offset=st.sampled_from((-1, 0, 1)))
    def advance_to_unbonded(self, i: int, offset: int) -> None:
        self._advance_to(self.nodes[self._address(i)].unbond_at + offset)

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def supply_is_conserved(self) -> None:
        assert self.d.token.total_supply() == self.w.supply

    @invariant()
    def market_holds_escrow_plus_owed(self) -> None:
        escrow = sum(j.escrow for j in self.job_model.values() if not j.state.terminal)
        owed = sum(self.owed.values())
        assert self.d.market.total_escrow() == escrow
        assert self.d.market.total_owed() == owed
        assert self.d.token.balance_of(self.d.market.address) == escrow + owed
        for account, amount in self.owed.items():
            assert self.d.market.owed(account) == amount

    @invariant()
    def registry_holds_what_is_bonded(self) -> None:
        for address, n in self.nodes.items():
            info = self.d.nodes.node(address)
            assert info.registered == n.registered
            assert (info.stake, info.unbonding) == (n.stake, n.unbonding)
            assert info.open_assignments == self._open_assignments(address)
            if n.unbonding:
                assert info.unbond_at == n.unbond_at
        total_stake = sum(n.stake for n in self.nodes.values())
        total_bonded = total_stake + sum(n.unbonding for n in self.nodes.values())
        assert self.d.nodes.total_stake() == total_stake
        assert self.d.nodes.total_bonded() == total_bonded
        assert self.d.token.balance_of(self.d.nodes.address) == total_bonded

    @invariant()
    def jobs_match_model(self) -> None:
        assert self.d.market.job_count() == len(self.job_model)
        for job_id, job in self.job_model.items():
            onchain = self.d.market.job(job_id)
            if job.settled is not None:
                # Terminal states absorb: the record never changes again.
                assert onchain == job.settled
                continue
            assert onchain.state == job.state
            assert (onchain.seats, onchain.reveals) == (len(job.seats), len(job.revealed))
            assert onchain.result == ZERO_HASH

    @invariant()
    def each_settled_job_paid_out_its_escrow_once(self) -> None:
        """Read the settlement events the chain logged since the last step."""
        cursor, self.log_cursor = self.log_cursor, self.chain.block_number() + 1
        for e in self.d.market.history(from_block=cursor):
            if e.name not in ("JobPaid", "JobRefunded"):
                continue
            job_id = JobId(e.args["job_id"])
            assert job_id not in self.settled_by_events, f"job {job_id} settled twice"
            self.settled_by_events.add(job_id)
            if e.name == "JobPaid":
                a = e.args
                total = a["node_amount"] * a["winners"] + a["owner_amount"] + a["treasury_amount"]
            else:
                total = e.args["amount"]
            assert total == self.job_model[job_id].escrow
        assert self.settled_by_events == {
            j for j, job in self.job_model.items() if job.state.terminal
        }


_COMMON = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class TestLedgerMachine(LedgerMachine.TestCase):
    settings = settings(_COMMON, max_examples=200, stateful_step_count=25)


@pytest.mark.slow
class TestLedgerMachineLong(LedgerMachine.TestCase):
    settings = settings(_COMMON, max_examples=2_000, stateful_step_count=60)
