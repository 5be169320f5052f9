# pragma version ~=0.4.3
"""
@title Verinet protocol parameters
@notice The tunable numbers every other Verinet contract reads: stake floor, windows,
        quorum bounds, slash fractions and the fee split. An owner sets them for now;
        governance takes that role later (transfer_ownership to the Governor).
        Every setter checks the invariants that keep the protocol safe, so no
        combination of parameters can strand funds:
        - unbonding_delay > commit + reveal + audit + challenge windows + the longest
          dispute a claim can draw, so stake cannot leave before every fault it could
          answer for has been judged;
        - a dispute's shares (winner, committee) never exceed what was forfeited;
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
# A traced claim has at most 2**20 ops, so a bisection takes at most 21 rounds of two
# moves, then the step reveal: 43 move timeouts, then the committee's vote window.
MAX_DISPUTE_MOVES: constant(uint256) = 43
MAX_COMMITTEE: constant(uint256) = 15

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
challenge_bond: public(uint256)
move_timeout: public(uint256)
vote_window: public(uint256)
committee_size: public(uint256)
dispute_winner_bps: public(uint256)
dispute_committee_bps: public(uint256)
audit_bps: public(uint256)
audit_margin_bps: public(uint256)
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
    self.audit_window = 600
    self.challenge_window = 600
    self.challenge_bond = 10 * 10**18
    self.move_timeout = 60
    self.vote_window = 120
    self.committee_size = 3
    self.dispute_winner_bps = 5_000
    self.dispute_committee_bps = 2_000
    # p for sampled audits of signed jobs: at least 5 %, and at least twice what makes
    # cheating unprofitable for the job at hand (see InferenceMarket._audit_bps).
    self.audit_bps = 500
    self.audit_margin_bps = 20_000
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
def _check_unbonding(
    unbonding: uint256, commit: uint256, reveal: uint256, audit: uint256, challenge: uint256, dispute: uint256
):
    assert unbonding > commit + reveal + audit + challenge + dispute, "UnbondingTooShort"


@external
@view
def dispute_span() -> uint256:
    """
    @notice The longest a dispute can run once opened: every move timed out, then the vote.
    """
    return MAX_DISPUTE_MOVES * self.move_timeout + self.vote_window


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
    self._check_unbonding(unbonding, commit, reveal, audit, challenge, MAX_DISPUTE_MOVES * self.move_timeout + self.vote_window)
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
def set_disputes(
    bond: uint256, move_timeout: uint256, vote_window: uint256, committee: uint256, winner_bps: uint256, committee_bps: uint256
):
    """
    @notice The dispute game's terms: a challenger's bond, how long each move may take,
            how long the committee votes, its size, and how what the loser forfeits is
            shared: `winner_bps` to the winner, `committee_bps` among the committee
            members who voted with the outcome, the rest to the treasury.
    """
    ownable._check_owner()
    assert bond > 0 and move_timeout > 0 and vote_window > 0, "InvalidParam"
    assert committee >= 1 and committee <= MAX_COMMITTEE, "InvalidParam"
    assert winner_bps + committee_bps <= BPS, "InvalidParam"
    assert move_timeout <= MAX_WINDOW and vote_window <= MAX_WINDOW, "InvalidParam"
    self._check_unbonding(
        self.unbonding_delay,
        self.commit_window,
        self.reveal_window,
        self.audit_window,
        self.challenge_window,
        MAX_DISPUTE_MOVES * move_timeout + vote_window,
    )
    self.challenge_bond = bond
    self.move_timeout = move_timeout
    self.vote_window = vote_window
    self.committee_size = committee
    self.dispute_winner_bps = winner_bps
    self.dispute_committee_bps = committee_bps
    log ParamsChanged(name="challenge_bond", value=bond)
    log ParamsChanged(name="move_timeout", value=move_timeout)
    log ParamsChanged(name="vote_window", value=vote_window)
    log ParamsChanged(name="committee_size", value=committee)
    log ParamsChanged(name="dispute_winner_bps", value=winner_bps)
    log ParamsChanged(name="dispute_committee_bps", value=committee_bps)


@external
def set_audit(floor_bps: uint256, margin_bps: uint256):
    """
    @notice Sampled audits of signed jobs. A submitted job is held for audit with
            probability p = max(floor, margin * F / (S + F)) where F is the node's share
            of the fee (what it forfeits when caught) and S what a lost dispute slashes
            from it: cheating saves at most F, so p * (S + F) >= margin * F > F.
            `margin_bps` is that margin in basis points (20_000: twice); at least 1x.
    """
    ownable._check_owner()
    assert floor_bps <= BPS and margin_bps >= BPS and margin_bps <= 100 * BPS, "InvalidParam"
    self.audit_bps = floor_bps
    self.audit_margin_bps = margin_bps
    log ParamsChanged(name="audit_bps", value=floor_bps)
    log ParamsChanged(name="audit_margin_bps", value=margin_bps)


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
