"""The protocol's values: modes, job states and the records the contracts keep.

These mirror the Vyper structs field for field; `verinet.chain` decodes into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from verinet.types import Address, Hash32, JobId, ModelId, Wei

BPS = 10_000
MAX_SEATS = 15
ZERO_HASH = Hash32(bytes(32))


class Mode(IntFlag):
    """Verification modes, as the bit set ModelRegistry stores."""

    SIGNED = 1
    QUORUM = 2
    OPTIMISTIC = 4
    ZK = 8


class JobState(IntEnum):
    NONE = 0
    OPEN = 1
    SUBMITTED = 2  # a signed receipt or optimistic claim is in; paid after its hold
    PAID = 3
    REFUNDED = 4

    @property
    def terminal(self) -> bool:
        return self in (JobState.PAID, JobState.REFUNDED)


class Penalty(IntEnum):
    WRONG_OUTPUT = 1
    NO_SHOW = 2


@dataclass(frozen=True, slots=True)
class Job:
    job_id: JobId
    requester: Address
    model_id: ModelId
    model_owner: Address
    input_hash: Hash32
    mode: Mode
    k: int
    escrow: Wei
    seed: Hash32
    stake_total: Wei
    request_block: int
    requested_at: int
    commit_deadline: int
    reveal_deadline: int
    finalize_after: int
    state: JobState
    seats: int
    reveals: int
    result: Hash32


@dataclass(frozen=True, slots=True)
class NodeInfo:
    address: Address
    registered: bool
    endpoint: str
    stake: Wei
    unbonding: Wei
    unbond_at: int
    open_assignments: int
    slashed: Wei
    stake_block: int


@dataclass(frozen=True, slots=True)
class ModelInfo:
    model_id: ModelId
    owner: Address
    model_cid: bytes
    manifest_cid: bytes
    fee: Wei
    modes: Mode
    version: int
    family: ModelId
    deprecated: bool


@dataclass(frozen=True, slots=True)
class ZkVerifier:
    """A zk model's EVM verifier and how many of a proof's public instances (the first
    ones) are the circuit's inputs. `address` is the zero address when none is set."""

    address: Address
    input_instances: int

    @property
    def registered(self) -> bool:
        return int(self.address, 16) != 0


@dataclass(frozen=True, slots=True)
class ParamsSnapshot:
    """The on-chain Params at one moment."""

    min_stake: Wei
    commit_window: int
    reveal_window: int
    audit_window: int
    challenge_window: int
    unbonding_delay: int
    min_quorum: int
    max_quorum: int
    selection_oversample: int
    selection_round: int
    slash_fault_bps: int
    slash_noshow_bps: int
    owner_bps: int
    treasury_bps: int
    treasury: Address
    challenge_bond: Wei
    move_timeout: int
    vote_window: int
    committee_size: int
    dispute_winner_bps: int
    dispute_committee_bps: int
    audit_bps: int
    audit_margin_bps: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A submitted signed or optimistic job's claim, as InferenceMarket.claim_of gives it.

    Optimistic claims carry the trace commitment (h_N, Merkle root, op count); a signed
    job's carries none (ops 0) but says whether the audit drew it.
    """

    node: Address
    output_hash: Hash32
    trace_final: Hash32
    trace_root: Hash32
    ops: int
    submit_block: int
    audit_bps: int
    audited: bool
    open_disputes: int


class GamePhase(IntEnum):
    NONE = 0
    DEFENDER = 1  # the defender posts its link at mid
    CHALLENGER = 2  # the challenger agrees or not
    STEP = 3  # the defender reveals the disputed step's hash
    VOTE = 4  # the committee judges the step
    DONE = 5


class GameOutcome(IntEnum):
    NONE = 0
    DEFENDER = 1
    CHALLENGER = 2
    DRAW = 3


@dataclass(frozen=True, slots=True)
class Game:
    """One dispute game, as DisputeGame.games gives it."""

    game_id: int
    job_id: JobId
    defender: Address
    challenger: Address
    model_id: ModelId
    bond: Wei
    phase: GamePhase
    outcome: GameOutcome
    lo: int
    hi: int
    lo_link: Hash32
    hi_link: Hash32
    mid_link: Hash32
    step_hash: Hash32
    deadline: int
    committee: int
    votes_defender: int
    votes_challenger: int
    seed: Hash32
    vote_block: int
    vote_opened_at: int
    stake_total: Wei

    @property
    def mid(self) -> int:
        return (self.lo + self.hi) // 2
