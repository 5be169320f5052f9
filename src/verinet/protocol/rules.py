"""Settlement rules as pure functions, the Python twin of InferenceMarket.vy.

No I/O, no clocks: time is an argument. The same vectors run against these functions
and against the contract (tests/contracts/test_rules_agree.py), so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from verinet.protocol.types import BPS, ZERO_HASH
from verinet.types import Address, Hash32, Wei

MAX_BOOST_SHIFT = 16


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a quorum: the majority output (None: no majority) and who did what.

    Seat indices refer to the order in which nodes committed.
    """

    majority: Hash32 | None
    winners: tuple[int, ...]
    wrong: tuple[int, ...]
    no_show: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FeeSplit:
    per_node: Wei
    owner: Wei
    treasury: Wei

    def total(self, winners: int) -> Wei:
        return Wei(self.per_node * winners + self.owner + self.treasury)


def commitment(output_hash: Hash32, salt: bytes, node: Address) -> Hash32:
    """keccak(abi_encode(output_hash, salt, node)): what a quorum node commits first."""
    return Hash32(keccak(encode(["bytes32", "bytes32", "address"], [output_hash, salt, node])))


def resolve_quorum(votes: Sequence[Hash32 | None], k: int) -> Verdict:
    """Strict majority of the k seats wins; unrevealed seats are no-shows.

    `votes[i]` is what seat i revealed (None if it did not). The first output, in seat
    order, with at least k // 2 + 1 votes is the majority; without one nobody is
    judged wrong, since nobody can tell who was right.
    """
    need = k // 2 + 1
    majority: Hash32 | None = None
    for vote in votes:
        if vote is not None and vote != ZERO_HASH and sum(v == vote for v in votes) >= need:
            majority = vote
            break
    winners = tuple(i for i, v in enumerate(votes) if majority is not None and v == majority)
    no_show = tuple(i for i, v in enumerate(votes) if v is None or v == ZERO_HASH)
    wrong = tuple(
        i
        for i, v in enumerate(votes)
        if majority is not None and i not in winners and i not in no_show
    )
    return Verdict(majority=majority, winners=winners, wrong=wrong, no_show=no_show)


def split_fee(escrow: Wei, winners: int, owner_bps: int, treasury_bps: int) -> FeeSplit:
    """Owner and treasury take their basis points; the nodes share the rest equally.

    Integer-division dust goes to the treasury, so per_node * winners + owner +
    treasury == escrow exactly.
    """
    if winners < 1:
        raise ValueError("a paid job has at least one winner")
    owner = escrow * owner_bps // BPS
    treasury = escrow * treasury_bps // BPS
    pool = escrow - owner - treasury
    per_node = pool // winners
    treasury += pool - per_node * winners
    return FeeSplit(per_node=Wei(per_node), owner=Wei(owner), treasury=Wei(treasury))


def slash_amount(bonded: Wei, bps: int) -> Wei:
    """What a slash of `bps` takes from everything a node has bonded."""
    return Wei(bonded * bps // BPS)


def selection_multiplier(k: int, oversample: int, elapsed: int, round_seconds: int) -> int:
    """k * oversample, doubled every selection round so a job always finds nodes."""
    return (k * oversample) << min(elapsed // round_seconds, MAX_BOOST_SHIFT)


def is_selected(seed: Hash32, node: Address, stake: Wei, total_stake: Wei, multiplier: int) -> bool:
    """The O(1) sortition draw NodeRegistry.is_eligible makes (stake floor checked apart)."""
    if stake == 0 or total_stake == 0:
        return False
    draw = int.from_bytes(keccak(encode(["bytes32", "address"], [seed, node])), "big") % total_stake
    return draw < stake * multiplier


def audit_bps(
    escrow: Wei,
    bonded: Wei,
    *,
    slash_bps: int,
    owner_bps: int,
    treasury_bps: int,
    floor_bps: int,
    margin_bps: int,
) -> int:
    """p, the probability (basis points) that a signed job is drawn for audit.

    Cheating saves a node at most its share F of the fee; caught, it forfeits F and is
    slashed S = bonded * slash_bps. Deterrence needs p * (S + F) > F, so
    p = max(floor, ceil(margin * F / (S + F))) meets it `margin` times over.
    """
    fee_share = escrow - escrow * owner_bps // BPS - escrow * treasury_bps // BPS
    if fee_share == 0:
        return floor_bps
    slash = bonded * slash_bps // BPS
    need = -(-margin_bps * fee_share // (slash + fee_share))
    return min(BPS, max(floor_bps, need))


def audit_drawn(block_hash: bytes, job_id: int, p_bps: int) -> bool:
    """Whether the audit draws a signed job: keccak(block hash ‖ job id) mod 10^4 < p, where
    the block is the one that holds the job's receipt."""
    draw = int.from_bytes(keccak(encode(["bytes32", "uint256"], [block_hash, job_id])), "big")
    return draw % BPS < p_bps
