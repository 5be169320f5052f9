# pragma version ~=0.4.3
"""
@title Verinet protocol parameters
@notice The tunable numbers every other Verinet contract reads: stake floor, windows,
        quorum bounds, slash fractions and the fee split. An owner sets them for now;
        governance takes that role later (transfer_ownership to the Governor).
        Every setter checks the invariants that keep the protocol safe, so no
        combination of parameters can strand funds:
        - unbonding_delay > commit + reveal + audit + challenge windows, so stake
          cannot leave before every fault it could answer for has been judged;
        - the owner and treasury shares never exceed the whole fee;
        - slash fractions are at most 100 %.
        Reverts carry a reason code equal to a Verinet exception name.
"""

from snekmate.auth import ownable

initializes: ownable

exports: (ownable.owner, ownable.transfer_ownership)

BPS: constant(uint256) = 10_000
# The most seats a quorum job can have; the market sizes its arrays by this.
MAX_SEATS: constant(uint256) = 15
# No window may exceed ~136 years (2**32 s): the market packs deadlines into 64 bits.
MAX_WINDOW: constant(uint256) = 2**32

min_stake: public(uint256)
commit_window: public(uint256)
reveal_window: public(uint256)
audit_window: public(uint256)
challenge_window: public(uint256)
unbonding_delay: public(uint256)
min_quorum: public(uint256)
max_quorum: public(uint256)
selection_oversample: public(uint256)
selection_round: public(uint256)
slash_fault_bps: public(uint256)
slash_noshow_bps: public(uint256)
owner_bps: public(uint256)
treasury_bps: public(uint256)
treasury: public(address)

event ParamsChanged:
    name: String[32]
    value: uint256

event TreasuryChanged:
    treasury: address


@deploy
def __init__(treasury: address):
    ownable.__init__()
    assert treasury != empty(address), "ZeroAddress"
    self.treasury = treasury
    self.min_stake = 100 * 10**18
    self.commit_window = 120
    self.reveal_window = 120
    self.audit_window = 0
    self.challenge_window = 600
    self.unbonding_delay = 7 * 86_400
    self.min_quorum = 2
    self.max_quorum = MAX_SEATS
    self.selection_oversample = 2
    self.selection_round = 30
    self.slash_fault_bps = 1_000
    self.slash_noshow_bps = 200
    self.owner_bps = 1_000
    self.treasury_bps = 500


@internal
@view
def _check_unbonding(unbonding: uint256, commit: uint256, reveal: uint256, audit: uint256, challenge: uint256):
    assert unbonding > commit + reveal + audit + challenge, "UnbondingTooShort"


@external
def set_min_stake(amount: uint256):
    ownable._check_owner()
    assert amount > 0, "InvalidParam"
    self.min_stake = amount
    log ParamsChanged(name="min_stake", value=amount)


@external
def set_windows(commit: uint256, reveal: uint256, audit: uint256, challenge: uint256, unbonding: uint256):
    """
    @notice All windows in seconds. Commit and reveal windows must be non-zero or a
            quorum job could never gather its seats.
    """
    ownable._check_owner()
    assert commit > 0 and reveal > 0, "InvalidParam"
    assert unbonding <= MAX_WINDOW, "InvalidParam"
    self._check_unbonding(unbonding, commit, reveal, audit, challenge)
    self.commit_window = commit
    self.reveal_window = reveal
    self.audit_window = audit
    self.challenge_window = challenge
    self.unbonding_delay = unbonding
    log ParamsChanged(name="commit_window", value=commit)
    log ParamsChanged(name="reveal_window", value=reveal)
    log ParamsChanged(name="audit_window", value=audit)
    log ParamsChanged(name="challenge_window", value=challenge)
    log ParamsChanged(name="unbonding_delay", value=unbonding)


@external
def set_quorum_bounds(min_k: uint256, max_k: uint256):
    ownable._check_owner()
    assert min_k >= 1 and min_k <= max_k and max_k <= MAX_SEATS, "InvalidParam"
    self.min_quorum = min_k
    self.max_quorum = max_k
    log ParamsChanged(name="min_quorum", value=min_k)
    log ParamsChanged(name="max_quorum", value=max_k)


@external
def set_selection(oversample: uint256, round_seconds: uint256):
    """
    @notice A node is eligible for a job with probability
            min(1, oversample * k * stake / total_stake * 2**(elapsed // round_seconds)).
    """
    ownable._check_owner()
    assert oversample >= 1 and oversample <= 64 and round_seconds > 0, "InvalidParam"
    self.selection_oversample = oversample
    self.selection_round = round_seconds
    log ParamsChanged(name="selection_oversample", value=oversample)
    log ParamsChanged(name="selection_round", value=round_seconds)


@external
def set_slash(fault_bps: uint256, noshow_bps: uint256):
    ownable._check_owner()
    assert fault_bps <= BPS and noshow_bps <= BPS, "InvalidParam"
    self.slash_fault_bps = fault_bps
    self.slash_noshow_bps = noshow_bps
    log ParamsChanged(name="slash_fault_bps", value=fault_bps)
    log ParamsChanged(name="slash_noshow_bps", value=noshow_bps)


@external
def set_fee_split(owner_share_bps: uint256, treasury_share_bps: uint256):
    """
    @notice The node(s) receive what is left: BPS - owner - treasury.
    """
    ownable._check_owner()
    assert owner_share_bps + treasury_share_bps <= BPS, "InvalidParam"
    self.owner_bps = owner_share_bps
    self.treasury_bps = treasury_share_bps
    log ParamsChanged(name="owner_bps", value=owner_share_bps)
    log ParamsChanged(name="treasury_bps", value=treasury_share_bps)


@external
def set_treasury(treasury: address):
    ownable._check_owner()
    assert treasury != empty(address), "ZeroAddress"
    self.treasury = treasury
    log TreasuryChanged(treasury=treasury)
