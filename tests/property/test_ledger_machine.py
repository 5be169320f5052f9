"""Stateful property test of the ledger: NodeRegistry + InferenceMarket on the embedded EVM.

A hypothesis state machine registers, stakes, unstakes and withdraws nodes, requests
signed and quorum jobs (paid and free), commits honest or wrong outputs, reveals with
the right or a wrong salt, submits signed receipts, finalizes, lets deadlines pass and
withdraws what the market owes. A plain-Python model, built on the twin rules in
`verinet.protocol.rules`, predicts every outcome, down to the typed revert each refused
call must raise.

After every step the chain must satisfy the accounting identities (supply conserved,
the market holds exactly escrow + owed, the registry exactly what is bonded) and agree
with the model: every node's stake, unbonding and open assignments (the seats it holds
in unsettled jobs), every job's state, every settled job paid out exactly its escrow,
once, and terminal jobs never change again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import TypeVar

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from verinet.chain import EmbeddedChain, TxReceipt
from verinet.devnet.bootstrap import MAX_UINT, TOKEN, Network, bootstrap, placeholder_cid
from verinet.errors import REVERT_REASONS, ContractRevert
from verinet.protocol.receipts import Receipt, sign_receipt
from verinet.protocol.rules import (
    audit_bps,
    audit_drawn,
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

ACCOUNTS = 13
NODES = 5  # registered and staked by bootstrap
CLIENTS = 2
SPARES = ACCOUNTS - 3 - NODES - CLIENTS  # unregistered until the machine registers them
POOL = NODES + SPARES  # every account that may act as a node
SPARE_FUNDS = Wei(2_000 * TOKEN)
# The bootstrap model, a free one, and one whose fee split leaves integer-division dust.
FEES = (Wei(TOKEN), Wei(0), Wei(TOKEN // 10 + 3))
MAX_K = 4
# Fees an owner may reprice a model to.
PRICE = st.sampled_from((*FEES, Wei(1), Wei(3 * TOKEN)))
# Now and then a client caps the fee at what it read before the owner raised it.
STALE_CAP = st.sampled_from((False, False, False, False, False, True))
# Jobs in flight at once: enough to interleave, few enough that most get driven to the end.
MAX_IN_FLIGHT = 3

CLIENT = st.integers(0, CLIENTS - 1)
MODEL = st.integers(0, len(FEES) - 1)
NODE = st.integers(0, POOL - 1)
ACCOUNT = st.integers(0, ACCOUNTS - 1)
SHAPE = st.sampled_from(((Mode.SIGNED, 1), *((Mode.QUORUM, k) for k in range(2, MAX_K + 1))))
# A node's answer: 0 is the honest output, 1 and 2 wrong ones (which may still agree).
ANSWER = st.sampled_from((0, 0, 0, 1, 2))
UNUSED_ANSWER = 3
# How a seated node reveals; "withhold" leaves its seat a no-show.
TAMPER = st.sampled_from(("honest", "honest", "salt", "output"))
MOVE = st.sampled_from(("honest", "honest", "honest", "honest", "withhold", "salt", "output"))
# Who acts, on what: mostly the likely one (a node the draw picked, a seated node, one with
# stake to withdraw, an unsettled job), sometimes any.
PREFER = st.sampled_from(("preferred", "preferred", "preferred", "any"))
# The network's moves on one job: seat answers, reveal moves, which drawn node signs, how
# many moves in a row.
PLAN = st.tuples(
    st.lists(ANSWER, min_size=MAX_K, max_size=MAX_K),
    st.lists(MOVE, min_size=MAX_K, max_size=MAX_K),
    st.integers(0, POOL - 1),
    st.integers(1, 6),
)


@dataclass(slots=True)
class _World:
    """The protocol, deployed once per session; every example starts from `snapshot`."""

    net: Network
    models: tuple[ModelId, ...]
    pool: tuple[LocalAccount, ...]
    everyone: tuple[Address, ...]
    params: ParamsSnapshot
    supply: Wei
    stakes: dict[Address, int]
    snapshot: int


@cache
def _world() -> _World:
    chain = EmbeddedChain(accounts=ACCOUNTS)
    net = bootstrap(chain, nodes=NODES, clients=CLIENTS, fee=FEES[0])
    d = net.deployment
    owner = Address(net.model_owner.address)
    deployer = Address(net.deployer.address)
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
    # Oversample 1 (not 2), so that a draw among five nodes often leaves some out.
    d.params.set_selection(1, d.params.snapshot().selection_round, sender=deployer)
    for i, node in enumerate(net.nodes):
        address = Address(node.address)
        d.token.approve(d.nodes.address, Wei(MAX_UINT), sender=address)
        d.nodes.set_serving(models[1:], True, sender=address)
        if i:
            # Unequal stakes, so that the draw differs from node to node.
            d.nodes.stake(Wei(i * 150 * TOKEN), sender=address)
    spares = tuple(chain.accounts[3 + NODES + CLIENTS :])
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
    stake_block: int = 0  # block of the node's last stake or unstake


@dataclass(slots=True)
class _Job:
    job_id: JobId
    requester: Address
    model_id: ModelId
    input_hash: Hash32
    mode: Mode
    k: int
    escrow: int
    seed: Hash32
    requested_at: int
    commit_deadline: int
    reveal_deadline: int
    stake_total: int = 0  # total active stake when requested: the draw's denominator
    request_block: int = 0
    finalize_after: int = 0
    submit_block: int = 0  # a signed job's receipt block: its hash draws the audit
    audit_p: int = 0  # the audit probability in basis points
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
    """Run `send`: it must succeed when `reason` is None, else revert with exactly `reason`."""
    if reason is None:
        return send()
    with pytest.raises(ContractRevert) as refused:
        send()
    assert type(refused.value) is REVERT_REASONS[reason], (
        f"expected {reason}, got {type(refused.value).__name__}"
    )
    return None


class LedgerMachine(RuleBasedStateMachine):
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
        # Every model's owner and fee now: the owner is the one paid at settlement.
        self.owners = dict.fromkeys(w.models, Address(w.net.model_owner.address))
        self.fees = dict(zip(w.models, FEES, strict=True))
        self.clients = tuple(Address(c.address) for c in w.net.clients)
        self.pool = tuple(Address(a.address) for a in w.pool)
        # The deployer: owns Params, never a model.
        self.stranger = Address(w.net.deployer.address)
        self.nodes = {
            address: _Node(
                registered=i < NODES,
                stake=w.stakes[address],
                serves=frozenset(w.models) if i < NODES else frozenset(),
            )
            for i, address in enumerate(self.pool)
        }
        self.job_model: dict[JobId, _Job] = {}
        self.owed: defaultdict[Address, int] = defaultdict(int)
        self.deprecated: set[ModelId] = set()
        self.settled_by_events: set[JobId] = set()
        self.log_cursor = self.chain.block_number() + 1
        self.checked_once = False

    # -- model -------------------------------------------------------------------

    def _unsettled(self) -> list[JobId]:
        return [j for j, job in self.job_model.items() if not job.state.terminal]

    def _pick_job(self, data: st.DataObject, mode: Mode | None = None) -> _Job:
        """Mostly an unsettled job (of `mode`, if given), sometimes any: a settled job, or
        one of the other mode, must refuse the move."""
        likely = [j for j in self._unsettled() if mode in (None, self.job_model[j].mode)]
        if likely and data.draw(PREFER, label="prefer") == "preferred":
            return self.job_model[data.draw(st.sampled_from(likely), label="job")]
        return self.job_model[data.draw(st.sampled_from(sorted(self.job_model)), label="job")]

    def _open_assignments(self, node: Address) -> int:
        return sum(node in job.seats for job in self.job_model.values() if not job.state.terminal)

    def _eligible(self, job: _Job, node: Address) -> bool:
        """The sortition draw, predicted with the twin rules: only stake that predates the
        job's block counts, against the total stake recorded at request."""
        n = self.nodes[node]
        if job.model_id not in n.serves or n.stake < self.p.min_stake or n.stake == 0:
            return False
        if n.stake_block >= job.request_block:
            return False
        total = job.stake_total
        elapsed = self.chain.timestamp() - job.requested_at
        multiplier = selection_multiplier(
            job.k, self.p.selection_oversample, elapsed, self.p.selection_round
        )
        return is_selected(job.seed, node, Wei(n.stake), Wei(total), multiplier)

    def _check_eligible(self, job: _Job, node: Address) -> bool:
        predicted = job.state == JobState.OPEN and self._eligible(job, node)
        assert self.d.market.is_eligible(job.job_id, node) == predicted
        return predicted

    def _drawn(self, job: _Job) -> list[Address]:
        """Nodes the draw picks for `job` right now that hold no seat in it yet."""
        if job.state != JobState.OPEN:
            return []
        return [a for a in self.pool if a not in job.commits and self._eligible(job, a)]

    def _pick_node(self, data: st.DataObject, preferred: list[Address]) -> Address:
        if preferred and data.draw(PREFER, label="prefer") == "preferred":
            return data.draw(st.sampled_from(preferred), label="node")
        return self.pool[data.draw(NODE, label="node")]

    def _audit_drawn(self, job: _Job, block: int) -> bool:
        """The audit draw as seen from block `block` (held while undecided or out of reach)."""
        if block <= job.submit_block or block > job.submit_block + 256:
            return True
        block_hash = self.chain.block(job.submit_block).hash  # type: ignore[attr-defined]
        return audit_drawn(block_hash, job.job_id, job.audit_p)

    def _finalizable(self, job: _Job, *, next_block: bool = False) -> bool:
        """As `finalizable` answers now, or (next_block) as a finalize sent now would find."""
        now = self.chain.timestamp()
        if job.state == JobState.SUBMITTED:
            block = self.chain.block_number() + next_block
            return now >= job.finalize_after or not self._audit_drawn(job, block)
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

    def _advance_to(self, target: int) -> None:
        now = self.chain.timestamp()
        if target > now:
            self.chain.advance_time(target - now)

    # -- node registry -----------------------------------------------------------

    @rule(i=NODE, served=st.sets(MODEL))
    def register(self, i: int, served: set[int]) -> None:
        """Register a fresh account, or change what a registered node serves."""
        node = self.pool[i]
        n = self.nodes[node]
        ids = sorted(self.w.models[m] for m in served)
        if not n.registered:
            serve = partial(self.d.nodes.set_serving, [self.w.models[0]], True, sender=node)
            _expect("NotRegistered", serve)
        reason = "AlreadyRegistered" if n.registered else None
        _expect(reason, partial(self.d.nodes.register, f"http://n{i}.test", sender=node))
        n.registered = True
        dropped = sorted(n.serves - set(ids))
        if dropped:
            self.d.nodes.set_serving(dropped, False, sender=node)
        if ids:
            self.d.nodes.set_serving(ids, True, sender=node)
        n.serves = frozenset(ids)

    @rule(
        i=NODE,
        amount=st.sampled_from((0, 1, 40 * TOKEN, 100 * TOKEN, 450 * TOKEN, 5_000 * TOKEN)),
    )
    def stake(self, i: int, amount: int) -> None:
        node = self.pool[i]
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
        if _expect(reason, partial(self.d.nodes.stake, Wei(amount), sender=node)) is None:
            return
        n.stake += amount
        n.stake_block = self.chain.block_number()
        assert self.d.token.balance_of(node) == balance - amount

    @rule(i=NODE, part=st.sampled_from(("zero", "third", "keep_min", "all", "over")))
    def request_unstake(self, i: int, part: str) -> None:
        node = self.pool[i]
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
        send = partial(self.d.nodes.request_unstake, Wei(amount), sender=node)
        if _expect(reason, send) is None:
            return
        assert self.d.nodes.node(node).open_assignments == 0, "unstaked with open assignments"
        n.stake -= amount
        n.unbonding += amount
        n.unbond_at = self.chain.timestamp() + self.p.unbonding_delay
        n.stake_block = self.chain.block_number()

    @rule(data=st.data())
    def withdraw_stake(self, data: st.DataObject) -> None:
        # Likeliest: a node with stake to withdraw; among those, one that still holds seats.
        leaving = [a for a, n in self.nodes.items() if n.unbonding]
        seated = [a for a in leaving if self._open_assignments(a)]
        node = self._pick_node(data, seated or leaving)
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
        if _expect(reason, partial(self.d.nodes.withdraw, sender=node)) is None:
            return
        assert self.d.nodes.node(node).open_assignments == 0, "withdrew with open assignments"
        assert self.d.token.balance_of(node) == balance + n.unbonding
        n.unbonding = 0
        event("withdraw_stake: paid out")

    # -- requests ------------------------------------------------------------------

    def _request(
        self, client: int, model: int, shape: tuple[Mode, int], stale_cap: bool = False
    ) -> None:
        """Request a job; with `stale_cap` the client caps the fee just below the current one
        (it read the fee before the owner raised it)."""
        requester = self.clients[client]
        mode, k = shape
        model_id = self.w.models[model]
        fee = self.fees[model_id]
        max_fee = fee - 1 if stale_cap and fee else fee
        job_id = JobId(len(self.job_model) + 1)
        input_hash = Hash32(keccak(f"input {job_id}".encode()))
        if model_id in self.deprecated:
            reason: str | None = "ModelDeprecated"
        elif max_fee < fee:
            reason = "FeeTooHigh"
        else:
            reason = None
        balance = self.d.token.balance_of(requester)
        now = self.chain.timestamp()
        stake_total = sum(n.stake for n in self.nodes.values())
        send = partial(
            self.d.market.request,
            model_id,
            input_hash,
            mode,
            k,
            max_fee=Wei(max_fee),
            sender=requester,
        )
        sent = _expect(reason, send)
        if sent is None:
            return
        got_id, receipt = sent
        assert got_id == job_id
        (requested,) = self.d.market.events(receipt, "JobRequested")
        escrow = fee * k
        args = requested.args
        assert (args["escrow"], args["mode"], args["k"]) == (escrow, mode, k)
        assert args["commit_deadline"] == now + self.p.commit_window
        assert args["reveal_deadline"] == args["commit_deadline"] + self.p.reveal_window
        assert self.d.token.balance_of(requester) == balance - escrow
        self.job_model[job_id] = _Job(
            job_id=job_id,
            requester=requester,
            model_id=model_id,
            input_hash=input_hash,
            mode=mode,
            k=k,
            escrow=escrow,
            seed=Hash32(args["seed"]),
            requested_at=now,
            commit_deadline=args["commit_deadline"],
            reveal_deadline=args["reveal_deadline"],
            stake_total=stake_total,
            request_block=self.chain.block_number(),
        )

    @initialize(audit=st.sampled_from((0, 45)))
    def audit_window(self, audit: int) -> None:
        """Signed jobs settle at once (the default) or only after an audit window."""
        p = self.p
        windows = (p.commit_window, p.reveal_window, audit, p.challenge_window, p.unbonding_delay)
        self.d.params.set_windows(*windows, sender=self.stranger)
        self.p = replace(p, audit_window=audit)

    @initialize(client=CLIENT, model=MODEL, shape=SHAPE)
    def first_request(self, client: int, model: int, shape: tuple[Mode, int]) -> None:
        self._request(client, model, shape)

    @precondition(lambda self: len(self._unsettled()) < MAX_IN_FLIGHT)
    @rule(client=CLIENT, model=MODEL, shape=SHAPE, stale_cap=STALE_CAP)
    def request(self, client: int, model: int, shape: tuple[Mode, int], stale_cap: bool) -> None:
        self._request(client, model, shape, stale_cap)

    @rule(
        case=st.sampled_from(
            ("unknown_model", "zk", "signed_k2", "quorum_k1", "quorum_k16", "zero_input")
        )
    )
    def request_refused(self, case: str) -> None:
        model_id, mode, k, input_hash = self.w.models[0], Mode.QUORUM, 3, Hash32(keccak(b"in"))
        reason = "InvalidQuorum"
        if case == "unknown_model":
            model_id, reason = ModelId(99), "UnknownModel"
        elif case == "zk":
            mode, reason = Mode.ZK, "ModeNotAllowed"
        elif case == "signed_k2":
            mode, k = Mode.SIGNED, 2
        elif case == "quorum_k1":
            k = 1
        elif case == "quorum_k16":
            k = 16
        else:
            input_hash, reason = ZERO_HASH, "InvalidHash"
        sender = self.clients[0]
        _expect(
            reason, partial(self.d.market.request, model_id, input_hash, mode, k, sender=sender)
        )
        # No job was created: the next id is still unknown to the market.
        job_id = JobId(len(self.job_model) + 1)
        assert not self.d.market.finalizable(job_id)
        assert not self.d.market.is_eligible(job_id, self.pool[0])
        _expect("JobNotOpen", partial(self.d.market.finalize, job_id, sender=sender))
        reveal = partial(self.d.market.reveal, job_id, input_hash, input_hash, sender=sender)
        _expect("JobNotOpen", reveal)

    @rule(model=st.integers(1, len(FEES) - 1), by_owner=st.booleans())
    def deprecate(self, model: int, by_owner: bool) -> None:
        # The bootstrap model stays live; deprecating the others must not strand their jobs.
        model_id = self.w.models[model]
        sender = self.owners[model_id] if by_owner else self.stranger
        if not by_owner:
            reason: str | None = "NotModelOwner"
        elif model_id in self.deprecated:
            reason = "ModelDeprecated"
        else:
            reason = None
        if _expect(reason, partial(self.d.models.deprecate, model_id, sender=sender)) is None:
            return
        self.deprecated.add(model_id)

    @rule(model=MODEL, to=ACCOUNT, by_owner=st.booleans())
    def hand_over_model(self, model: int, to: int, by_owner: bool) -> None:
        """The model changes hands: from now on its new owner is paid its share."""
        model_id = self.w.models[model]
        new_owner = self.w.everyone[to]
        if new_owner == self.stranger:
            return
        sender = self.owners[model_id] if by_owner else self.stranger
        reason = None if by_owner else "NotModelOwner"
        send = partial(self.d.models.set_model_owner, model_id, new_owner, sender=sender)
        if _expect(reason, send) is None:
            return
        self.owners[model_id] = new_owner

    @rule(model=MODEL, fee=PRICE, by_owner=st.booleans())
    def reprice(self, model: int, fee: Wei, by_owner: bool) -> None:
        """The owner changes the fee: jobs already requested keep the escrow they have."""
        model_id = self.w.models[model]
        sender = self.owners[model_id] if by_owner else self.stranger
        reason = None if by_owner else "NotModelOwner"
        if _expect(reason, partial(self.d.models.set_fee, model_id, fee, sender=sender)) is None:
            return
        self.fees[model_id] = fee

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
        receipt = _expect(reason, partial(self.d.market.commit, job.job_id, sealed, sender=node))
        if receipt is None:
            return False
        (committed,) = self.d.market.events(receipt, "JobCommitted")
        assert (committed.args["node"], committed.args["seat"]) == (node, len(job.seats))
        job.seats.append(node)
        job.commits[node] = (output, salt)
        assert len(self.d.market.events(receipt, "JobSealed")) == (len(job.seats) == job.k)
        return True

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
        elif tamper != "honest":
            reason = "CommitmentMismatch"
        else:
            reason = None
        send = partial(self.d.market.reveal, job.job_id, output, salt, sender=node)
        receipt = _expect(reason, send)
        if receipt is None:
            return False
        (revealed,) = self.d.market.events(receipt, "JobRevealed")
        assert (revealed.args["node"], revealed.args["output_hash"]) == (node, output)
        job.revealed[node] = output
        return True

    @rule(answer=ANSWER, data=st.data())
    def commit(self, answer: int, data: st.DataObject) -> None:
        job = self._pick_job(data, Mode.QUORUM)
        self._commit(job, self._pick_node(data, self._drawn(job)), answer)

    @rule(tamper=TAMPER, data=st.data())
    def reveal(self, tamper: str, data: st.DataObject) -> None:
        job = self._pick_job(data, Mode.QUORUM)
        self._reveal(job, self._pick_node(data, job.seats), tamper)

    # -- signed: receipts ----------------------------------------------------------

    def _receipt(self, job: _Job, node: Address, answer: int, forged: bool) -> Receipt:
        """`node`'s receipt for `answer`; a forged one names `node` but is signed by the
        next node of the pool."""
        index = self.pool.index(node)
        signed = sign_receipt(
            self.w.pool[(index + 1) % POOL if forged else index],
            chain_id=self.chain.chain_id,
            market=self.d.market.address,
            job_id=job.job_id,
            model_id=job.model_id,
            input_hash=job.input_hash,
            output_hash=_output(job.job_id, answer),
        )
        return replace(signed, node=node)

    def _submit(self, job: _Job, node: Address, answer: int, forged: bool, sender: Address) -> bool:
        output = _output(job.job_id, answer)
        signed = self._receipt(job, node, answer, forged)
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
        receipt = _expect(reason, partial(self.d.market.submit_receipt, signed, sender=sender))
        if receipt is None:
            return False
        (submitted,) = self.d.market.events(receipt, "ReceiptSubmitted")
        assert (submitted.args["node"], submitted.args["output_hash"]) == (node, output)
        assert submitted.args["finalize_after"] == now + self.p.audit_window
        n = self.nodes[node]
        job.submit_block = receipt.block_number
        job.audit_p = audit_bps(
            Wei(job.escrow),
            Wei(n.stake + n.unbonding),
            slash_bps=self.p.slash_fault_bps,
            owner_bps=self.p.owner_bps,
            treasury_bps=self.p.treasury_bps,
            floor_bps=self.p.audit_bps,
            margin_bps=self.p.audit_margin_bps,
        )
        assert self.d.market.claim_of(job.job_id).audit_bps == job.audit_p
        job.state = JobState.SUBMITTED
        job.finalize_after = now + self.p.audit_window
        job.seats.append(node)
        job.revealed[node] = output
        job.result = output  # pending until finalize pays it
        return True

    @rule(answer=ANSWER, forged=st.booleans(), submitter=ACCOUNT, data=st.data())
    def submit_receipt(
        self, answer: int, forged: bool, submitter: int, data: st.DataObject
    ) -> None:
        job = self._pick_job(data, Mode.SIGNED)
        node = self._pick_node(data, self._drawn(job))
        self._submit(job, node, answer, forged, self.w.everyone[submitter])

    # -- settlement ----------------------------------------------------------------

    def _slash(self, node: Address, bonded: int, bps: int) -> int:
        """Apply a slash to the model, active stake first, then unbonding; return its amount."""
        amount = slash_amount(Wei(bonded), bps)
        n = self.nodes[node]
        assert n.stake + n.unbonding == bonded
        from_active = min(amount, n.stake)
        if amount > n.stake:
            event("finalize: slash reached unbonding stake")
        n.stake -= from_active
        n.unbonding -= amount - from_active
        return amount

    def _finalize(self, job: _Job, sender: Address) -> bool:
        assert self.d.market.finalizable(job.job_id) == self._finalizable(job)
        if job.state.terminal:
            reason: str | None = "JobNotOpen"
        elif not self._finalizable(job, next_block=True):
            reason = "TooEarly"
        else:
            reason = None
        # Read from the chain just before: what each seat had bonded, what the treasury held.
        bonded = {n: self.d.nodes.bonded(n) for n in job.seats}
        treasury_balance = self.d.token.balance_of(self.treasury)
        receipt = _expect(reason, partial(self.d.market.finalize, job.job_id, sender=sender))
        if receipt is None:
            return False
        self._check_settlement(job, receipt, bonded, treasury_balance, sender)
        return True

    def _check_settlement(
        self,
        job: _Job,
        receipt: TxReceipt,
        bonded: dict[Address, int],
        treasury_balance: int,
        sender: Address,
    ) -> None:
        """What a settling transaction (finalize or submit_quorum) must have done, by the
        twin rules: slashes, payment or refund, and a job that refuses every further move."""
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

        # Every penalty is the twin rule's slash of what the node had bonded, never more.
        penalized = self.d.market.events(receipt, "NodePenalized")
        got = [(e.args["node"], e.args["reason"], e.args["amount"]) for e in penalized]
        assert got == penalties
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
            got_refund = (refunded.args["requester"], refunded.args["amount"])
            assert got_refund == (job.requester, job.escrow)
            self.owed[job.requester] += job.escrow
            job.state = JobState.REFUNDED
            event(f"finalize: refunded {job.mode.name}")
        else:
            assert not self.d.market.events(receipt, "JobRefunded")
            (paid,) = self.d.market.events(receipt, "JobPaid")
            split = split_fee(Wei(job.escrow), len(winners), self.p.owner_bps, self.p.treasury_bps)
            a = paid.args
            assert (a["output_hash"], a["winners"]) == (output, len(winners))
            assert (a["node_amount"], a["owner_amount"], a["treasury_amount"]) == (
                split.per_node,
                split.owner,
                split.treasury,
            )
            payout = a["node_amount"] * a["winners"]
            assert payout + a["owner_amount"] + a["treasury_amount"] == job.escrow
            for node in winners:
                self.owed[node] += split.per_node
            self.owed[self.owners[job.model_id]] += split.owner
            self.owed[self.treasury] += split.treasury
            job.state, job.result = JobState.PAID, output
            event(f"finalize: paid {job.mode.name}")

        job.settled = self.d.market.job(job.job_id)
        assert (job.settled.state, job.settled.result) == (job.state, job.result)
        # A settled job refuses every further move.
        node = job.seats[0] if job.seats else self.pool[0]
        salt = _salt(job.job_id, node)
        _expect("JobNotOpen", partial(self.d.market.finalize, job.job_id, sender=sender))
        _expect("JobNotOpen", partial(self.d.market.commit, job.job_id, salt, sender=node))
        reveal = partial(
            self.d.market.reveal, job.job_id, _output(job.job_id, 0), salt, sender=node
        )
        _expect("JobNotOpen", reveal)

    @rule(caller=ACCOUNT, data=st.data())
    def finalize(self, caller: int, data: st.DataObject) -> None:
        self._finalize(self._pick_job(data), self.w.everyone[caller])

    # -- quorum: k receipts at once ------------------------------------------------

    @rule(
        extra=st.sampled_from((0, 0, 0, 0, -1, 1)),
        forged=st.sampled_from((None, None, None, 0, 1)),
        caller=ACCOUNT,
        data=st.data(),
    )
    def submit_quorum(
        self, extra: int, forged: int | None, caller: int, data: st.DataObject
    ) -> None:
        job = self._pick_job(data, Mode.QUORUM)
        count = max(1, job.k + extra)  # mostly k receipts; one too few or too many
        answers = data.draw(st.lists(ANSWER, min_size=count, max_size=count), label="answers")
        drawn = self._drawn(job)
        if len(drawn) >= count and data.draw(PREFER, label="prefer") == "preferred":
            nodes = data.draw(st.permutations(drawn), label="nodes")[:count]  # distinct
        else:
            nodes = [self._pick_node(data, drawn) for _ in answers]
        receipts = [
            self._receipt(job, node, answer, forged == i)
            for i, (node, answer) in enumerate(zip(nodes, answers, strict=True))
        ]
        now = self.chain.timestamp()
        if job.state != JobState.OPEN:
            reason: str | None = "JobNotOpen"
        elif job.mode != Mode.QUORUM:
            reason = "WrongMode"
        elif now >= job.commit_deadline:
            reason = "DeadlinePassed"
        elif job.seats:
            reason = "SeatsTaken"
        elif len(receipts) != job.k:
            reason = "WrongReceiptCount"
        else:
            reason = None
            for i, node in enumerate(nodes):  # the contract checks seat by seat
                if node in nodes[:i]:
                    reason = "DuplicateNode"
                elif forged == i:
                    reason = "WrongSigner"
                elif not self._eligible(job, node):
                    reason = "NotEligible"
                if reason:
                    break
        bonded = {n: self.d.nodes.bonded(n) for n in set(nodes)}
        treasury_balance = self.d.token.balance_of(self.treasury)
        sender = self.w.everyone[caller]
        tx = _expect(reason, partial(self.d.market.submit_quorum, receipts, sender=sender))
        if tx is None:
            return
        revealed = self.d.market.events(tx, "JobRevealed")
        assert [(e.args["node"], e.args["output_hash"]) for e in revealed] == [
            (r.node, r.output_hash) for r in receipts
        ]
        job.seats.extend(nodes)
        job.revealed.update({r.node: r.output_hash for r in receipts})
        event("submit_quorum: settled")
        self._check_settlement(job, tx, bonded, treasury_balance, sender)

    @rule(data=st.data())
    def withdraw_owed(self, data: st.DataObject) -> None:
        creditors = sorted(a for a, v in self.owed.items() if v)
        if creditors and data.draw(st.booleans(), label="a creditor"):
            who = data.draw(st.sampled_from(creditors), label="who")
        else:
            who = self.w.everyone[data.draw(ACCOUNT, label="who")]
        amount = self.owed[who]
        balance = self.d.token.balance_of(who)
        reason = None if amount else "NothingToWithdraw"
        receipt = _expect(reason, partial(self.d.market.withdraw, sender=who))
        if receipt is None:
            return
        (withdrawn,) = self.d.market.events(receipt, "Withdrawn")
        assert (withdrawn.args["account"], withdrawn.args["amount"]) == (who, amount)
        assert self.d.token.balance_of(who) == balance + amount
        self.owed[who] = 0

    # -- the network moving a job along ------------------------------------------

    def _wait_for_draw(self, job: _Job) -> None:
        """Move to the next selection round, which doubles the draw."""
        round_seconds = self.p.selection_round
        elapsed = self.chain.timestamp() - job.requested_at
        self._advance_to(job.requested_at + (elapsed // round_seconds + 1) * round_seconds)

    def _next_move(self, job: _Job, answers: list[int], moves: list[str], pick: int) -> None:
        now = self.chain.timestamp()
        if job.state.terminal or self._finalizable(job):
            self._finalize(job, job.requester)
        elif job.state == JobState.SUBMITTED:
            self._advance_to(job.finalize_after)
        elif job.mode == Mode.SIGNED:
            drawn = self._drawn(job)
            if drawn:
                self._submit(job, drawn[pick % len(drawn)], answers[0], False, job.requester)
            else:
                self._wait_for_draw(job)
        elif len(job.seats) < job.k and now < job.commit_deadline:
            drawn = self._drawn(job)
            if not drawn:
                self._wait_for_draw(job)
            for node in drawn[: job.k - len(job.seats)]:
                self._commit(job, node, answers[len(job.seats)])
        else:
            # Reveals are open and the reveal deadline is ahead.
            acted = False
            for seat, node in enumerate(job.seats):
                if node not in job.revealed and moves[seat] != "withhold":
                    acted |= self._reveal(job, node, moves[seat]) or moves[seat] != "honest"
            if not acted:
                self._advance_to(job.reveal_deadline)

    # A single argument sorts this rule first in hypothesis's rule order, and hypothesis
    # draws its first rule about three times as often as the others: without that, paid
    # quorums and slashes get rare. Keep it to one argument.
    @rule(data=st.data())
    def progress(self, data: st.DataObject) -> None:
        """The network's next few moves on an unsettled job: seat drawn nodes, reveal, sign,
        settle, or wait for the next selection round or deadline.

        Seat i answers `answers[i]` and reveals as `moves[i]` says; the granular rules
        interleave everything else.
        """
        unsettled = self._unsettled()
        if not unsettled:
            return
        job = self.job_model[data.draw(st.sampled_from(unsettled), label="job")]
        answers, moves, pick, count = data.draw(PLAN, label="plan")
        for _ in range(count):
            self._next_move(job, answers, moves, pick)
            if job.state.terminal:
                return

    # -- time ----------------------------------------------------------------------

    @rule(
        seconds=st.sampled_from((1, 15, 29, 30, 61, 119, 120, 121, 240, 241, 3_600, "unbonded")),
        offset=st.sampled_from((-1, 0, 1)),
    )
    def advance_time(self, seconds: int | str, offset: int) -> None:
        if isinstance(seconds, int):
            self.chain.advance_time(seconds)
            return
        # To the end of some node's unbonding delay, give or take a second.
        ends = [n.unbond_at for n in self.nodes.values() if n.unbonding]
        if ends:
            self._advance_to(max(ends) + offset)

    @rule(
        deadline=st.sampled_from(("commit_deadline", "reveal_deadline", "finalize_after")),
        offset=st.sampled_from((-1, 0, 1)),
        data=st.data(),
    )
    def advance_to_deadline(self, deadline: str, offset: int, data: st.DataObject) -> None:
        """To one of a job's deadlines, give or take a second."""
        self._advance_to(getattr(self._pick_job(data), deadline) + offset)

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def accounting_identities(self) -> None:
        assert self.d.token.total_supply() == self.w.supply, "tokens minted or burned"
        escrow = sum(j.escrow for j in self.job_model.values() if not j.state.terminal)
        owed = sum(self.owed.values())
        assert self.d.market.total_escrow() == escrow
        assert self.d.market.total_owed() == owed
        assert self.d.token.balance_of(self.d.market.address) == escrow + owed
        total_stake = sum(n.stake for n in self.nodes.values())
        total_bonded = total_stake + sum(n.unbonding for n in self.nodes.values())
        assert self.d.nodes.total_stake() == total_stake
        assert self.d.nodes.total_bonded() == total_bonded
        assert self.d.token.balance_of(self.d.nodes.address) == total_bonded

    @invariant()
    def chain_matches_model(self) -> None:
        """Every node and job record equals the model's; every settlement paid its escrow.

        Each contract call that succeeds here logs an event, and a refused one is rolled
        back, so a step that logged nothing left every record as the last check saw it
        (the clock aside, which no record depends on): the sweep is skipped then.
        """
        cursor, self.log_cursor = self.log_cursor, self.chain.block_number() + 1
        if self.checked_once and not self.chain.logs(from_block=cursor):
            return
        self.checked_once = True
        assert self.d.market.job_count() == len(self.job_model)
        for e in self.d.market.history(from_block=cursor):
            if e.name not in ("JobPaid", "JobRefunded"):
                continue
            job_id = JobId(e.args["job_id"])
            assert job_id not in self.settled_by_events, f"job {job_id} settled twice"
            self.settled_by_events.add(job_id)
            a = e.args
            if e.name == "JobPaid":
                total = a["node_amount"] * a["winners"] + a["owner_amount"] + a["treasury_amount"]
            else:
                total = a["amount"]
            assert total == self.job_model[job_id].escrow, f"job {job_id} paid out {total}"
        terminal = {j for j, job in self.job_model.items() if job.state.terminal}
        assert self.settled_by_events == terminal

        for job_id, job in self.job_model.items():
            onchain = self.d.market.job(job_id)
            # The job's view names the model's owner now, who is the one paid.
            assert onchain.model_owner == self.owners[job.model_id]
            if job.settled is not None:
                record = replace(onchain, model_owner=job.settled.model_owner)
                assert record == job.settled, f"settled job {job_id} changed"
                continue
            assert (onchain.state, onchain.result) == (job.state, job.result)
            assert (onchain.seats, onchain.reveals) == (len(job.seats), len(job.revealed))
            assert (onchain.stake_total, onchain.request_block) == (
                job.stake_total,
                job.request_block,
            )

        for address, n in self.nodes.items():
            info = self.d.nodes.node(address)
            assert info.registered == n.registered
            assert (info.stake, info.unbonding) == (n.stake, n.unbonding), address
            assert info.open_assignments == self._open_assignments(address), address
            if n.unbonding:
                assert info.unbond_at == n.unbond_at
        for account, amount in self.owed.items():
            assert self.d.market.owed(account) == amount, account


_COMMON = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class TestLedgerMachine(LedgerMachine.TestCase):
    settings = settings(_COMMON, max_examples=200, stateful_step_count=40)


@pytest.mark.slow
class TestLedgerMachineLong(LedgerMachine.TestCase):
    settings = settings(_COMMON, max_examples=2_000, stateful_step_count=60)
