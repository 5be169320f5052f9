# pragma version ~=0.4.3
"""
@title Verinet dispute game
@notice Settles a challenge to a submitted result (an optimistic claim, or a signed job
        drawn for audit) by bisection over its execution trace, then a committee vote
        on one step.

        A claim commits to the links of a hash chain (see DESIGN.md, "Execution trace"):
            h_0     = sha256(model CID ‖ input hash)           computed here
            h_i     = sha256(h_{i-1} ‖ H_i)                     H_i: op i's output hash
            h_{N+1} = sha256(h_N ‖ output hash)                 the outputs step
        A signed job has no trace: N = 0 and its one step is the whole model.

        The challenger (a staked node, with a bond) disputes h_{N+1}; h_0 is agreed. While
        more than one step separates the agreed link `lo` from the disputed link `hi`, the
        defender (the node that made the claim) posts its link at mid = (lo + hi) / 2 and
        the challenger agrees (lo = mid) or not (hi = mid): ceil(log2(N + 1)) rounds.
        Then the defender reveals H_hi with sha256(link_lo ‖ H_hi) == link_hi, and a
        committee of staked nodes serving the model, drawn by a seed fixed at that
        moment, re-executes step hi from the tensors the defender committed to
        (Merkle-proven against its trace root) and votes. A defender that withholds
        them is voted wrong.

        Every move has `move_timeout`; whoever must move and does not, loses (anyone may
        call `timeout`). The vote ends when a strict majority of the committee agrees or
        `vote_window` ends (then the side with more votes wins; a tie, or no vote, is a
        draw: the bond goes back, nobody is slashed and the job is refunded).

        The loser forfeits: a defender `slash_fault_bps` of its bond in the registry, a
        challenger its bond. The winner takes `dispute_winner_bps` of that, the committee
        members who voted with the outcome share `dispute_committee_bps`, the treasury
        the rest; a winning challenger also gets its bond back. Payees withdraw (pull).
        Several games may run over one claim (a colluding challenger cannot shield a bad
        claim by losing on purpose): any refutation refunds the job and slashes once.
        Reverts carry a reason code equal to a Verinet exception name.
"""

from ethereum.ercs import IERC20


interface IParams:
    def min_stake() -> uint256: view
    def challenge_bond() -> uint256: view
    def move_timeout() -> uint256: view
    def vote_window() -> uint256: view
    def committee_size() -> uint256: view
    def dispute_winner_bps() -> uint256: view
    def dispute_committee_bps() -> uint256: view
    def slash_fault_bps() -> uint256: view
    def selection_oversample() -> uint256: view
    def selection_round() -> uint256: view
    def treasury() -> address: view


interface INodeRegistry:
    def is_eligible(
        node: address, model_id: uint256, seed: bytes32, multiplier: uint256, total: uint256, before_block: uint256
    ) -> bool: view
    def bonded(node: address) -> uint256: view
    def total_stake() -> uint256: view
    def slash(node: address, bps: uint256, recipient: address) -> uint256: nonpayable


interface IModelRegistry:
    def model_cid(model_id: uint256) -> Bytes[64]: view


interface IMarket:
    def open_dispute(job_id: uint256) -> (address, uint256, bytes32, bytes32, bytes32, uint256): nonpayable
    def close_dispute(job_id: uint256, verdict: uint256) -> bool: nonpayable


BPS: constant(uint256) = 10_000
MAX_COMMITTEE: constant(uint256) = 15
MAX_BOOST_SHIFT: constant(uint256) = 16
MASK24: constant(uint256) = 2**24 - 1
MASK48: constant(uint256) = 2**48 - 1

PHASE_DEFENDER: constant(uint256) = 1  # the defender posts its link at mid
PHASE_CHALLENGER: constant(uint256) = 2  # the challenger agrees with it or not
PHASE_STEP: constant(uint256) = 3  # the defender reveals the disputed step's hash
PHASE_VOTE: constant(uint256) = 4  # the committee judges that step
PHASE_DONE: constant(uint256) = 5

OUTCOME_DEFENDER: constant(uint256) = 1
OUTCOME_CHALLENGER: constant(uint256) = 2
OUTCOME_DRAW: constant(uint256) = 3

BALLOT_DEFENDER: constant(uint256) = 1
BALLOT_CHALLENGER: constant(uint256) = 2

VERDICT_UPHELD: constant(uint256) = 1
VERDICT_REFUTED: constant(uint256) = 2
VERDICT_UNDECIDED: constant(uint256) = 3


struct Game:
    # Ten slots. The fields every move touches share one packed slot (`meta`).
    job_id: uint256
    defender: address
    challenger: address
    model_id: uint256
    bond: uint256
    lo_link: bytes32
    hi_link: bytes32
    mid_link: bytes32
    step_hash: bytes32
    meta: uint256
    # Fixed when the step is revealed: the committee's draw.
    seed: bytes32
    stake_total: uint256


struct Meta:
    phase: uint256
    outcome: uint256
    committee: uint256
    votes_defender: uint256
    votes_challenger: uint256
    lo: uint256
    hi: uint256
    deadline: uint256
    vote_opened_at: uint256
    vote_block: uint256


struct GameView:
    job_id: uint256
    defender: address
    challenger: address
    model_id: uint256
    bond: uint256
    phase: uint256
    outcome: uint256
    lo: uint256
    hi: uint256
    lo_link: bytes32
    hi_link: bytes32
    mid_link: bytes32
    step_hash: bytes32
    deadline: uint256
    committee: uint256
    votes_defender: uint256
    votes_challenger: uint256
    seed: bytes32
    vote_block: uint256
    vote_opened_at: uint256
    stake_total: uint256


TOKEN: public(immutable(IERC20))
PARAMS: public(immutable(IParams))
NODES: public(immutable(INodeRegistry))
MODELS: public(immutable(IModelRegistry))
MARKET: public(immutable(IMarket))

_games: HashMap[uint256, Game]
voters: HashMap[uint256, DynArray[address, MAX_COMMITTEE]]
ballots: public(HashMap[uint256, HashMap[address, uint256]])
challenged: public(HashMap[uint256, HashMap[address, bool]])
owed: public(HashMap[address, uint256])
game_count: public(uint256)
total_bonds: public(uint256)
total_owed: public(uint256)


event Challenged:
    game_id: indexed(uint256)
    job_id: indexed(uint256)
    challenger: indexed(address)
    defender: address
    steps: uint256
    bond: uint256
    deadline: uint256

event Bisected:
    game_id: indexed(uint256)
    mid: uint256
    link: bytes32
    deadline: uint256

event Responded:
    game_id: indexed(uint256)
    mid: uint256
    agree: bool
    lo: uint256
    hi: uint256
    deadline: uint256

event StepRevealed:
    game_id: indexed(uint256)
    step: uint256
    step_hash: bytes32
    seed: bytes32
    deadline: uint256

event Voted:
    game_id: indexed(uint256)
    voter: indexed(address)
    defender_right: bool

event GameResolved:
    game_id: indexed(uint256)
    job_id: indexed(uint256)
    outcome: uint256
    forfeited: uint256
    winner: address
    winner_amount: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256


@deploy
def __init__(token: IERC20, params: IParams, nodes: INodeRegistry, models: IModelRegistry, market: IMarket):
    TOKEN = token
    PARAMS = params
    NODES = nodes
    MODELS = models
    MARKET = market


# -- packed game fields -------------------------------------------------------
# meta bits: [0,8) phase | [8,16) outcome | [16,24) committee | [24,32) votes for the
#            defender | [32,40) votes for the challenger | [40,64) lo | [64,88) hi
#            [88,136) deadline | [136,184) vote_opened_at | [184,232) vote_block


@internal
@pure
def _unpack(meta: uint256) -> Meta:
    return Meta(
        phase=meta & 255,
        outcome=(meta >> 8) & 255,
        committee=(meta >> 16) & 255,
        votes_defender=(meta >> 24) & 255,
        votes_challenger=(meta >> 32) & 255,
        lo=(meta >> 40) & MASK24,
        hi=(meta >> 64) & MASK24,
        deadline=(meta >> 88) & MASK48,
        vote_opened_at=(meta >> 136) & MASK48,
        vote_block=(meta >> 184) & MASK48,
    )


@internal
@pure
def _pack(m: Meta) -> uint256:
    return (
        m.phase
        | (m.outcome << 8)
        | (m.committee << 16)
        | (m.votes_defender << 24)
        | (m.votes_challenger << 32)
        | (m.lo << 40)
        | (m.hi << 64)
        | (m.deadline << 88)
        | (m.vote_opened_at << 136)
        | (m.vote_block << 184)
    )


@external
@view
def games(game_id: uint256) -> GameView:
    g: Game = self._games[game_id]
    m: Meta = self._unpack(g.meta)
    return GameView(
        job_id=g.job_id,
        defender=g.defender,
        challenger=g.challenger,
        model_id=g.model_id,
        bond=g.bond,
        phase=m.phase,
        outcome=m.outcome,
        lo=m.lo,
        hi=m.hi,
        lo_link=g.lo_link,
        hi_link=g.hi_link,
        mid_link=g.mid_link,
        step_hash=g.step_hash,
        deadline=m.deadline,
        committee=m.committee,
        votes_defender=m.votes_defender,
        votes_challenger=m.votes_challenger,
        seed=g.seed,
        vote_block=m.vote_block,
        vote_opened_at=m.vote_opened_at,
        stake_total=g.stake_total,
    )


@external
@view
def voters_of(game_id: uint256) -> DynArray[address, MAX_COMMITTEE]:
    return self.voters[game_id]


@internal
@view
def _deadline(seconds: uint256) -> uint256:
    deadline: uint256 = block.timestamp + seconds
    assert deadline <= MASK48, "InvalidParam"
    return deadline


@external
def challenge(job_id: uint256) -> uint256:
    """
    @notice Disputes `job_id`'s result. The caller must be a registered node with at
            least the minimum stake bonded and must have approved `challenge_bond`.
            Returns the game id.
    """
    assert staticcall NODES.bonded(msg.sender) >= staticcall PARAMS.min_stake(), "NotStaked"
    assert not self.challenged[job_id][msg.sender], "AlreadyChallenged"
    defender: address = empty(address)
    model_id: uint256 = 0
    input_hash: bytes32 = empty(bytes32)
    output_hash: bytes32 = empty(bytes32)
    trace_final: bytes32 = empty(bytes32)
    ops: uint256 = 0
    defender, model_id, input_hash, output_hash, trace_final, ops = extcall MARKET.open_dispute(job_id)
    assert msg.sender != defender, "Conflicted"
    self.challenged[job_id][msg.sender] = True

    bond: uint256 = staticcall PARAMS.challenge_bond()
    h0: bytes32 = sha256(concat(staticcall MODELS.model_cid(model_id), input_hash))
    final: bytes32 = trace_final
    if ops == 0:
        final = h0
    game_id: uint256 = self.game_count + 1
    self.game_count = game_id
    phase: uint256 = PHASE_DEFENDER
    if ops == 0:
        phase = PHASE_STEP
    deadline: uint256 = self._deadline(staticcall PARAMS.move_timeout())
    self._games[game_id] = Game(
        job_id=job_id,
        defender=defender,
        challenger=msg.sender,
        model_id=model_id,
        bond=bond,
        lo_link=h0,
        hi_link=sha256(concat(final, output_hash)),
        mid_link=empty(bytes32),
        step_hash=empty(bytes32),
        meta=self._pack(
            Meta(
                phase=phase,
                outcome=0,
                committee=0,
                votes_defender=0,
                votes_challenger=0,
                lo=0,
                hi=ops + 1,
                deadline=deadline,
                vote_opened_at=0,
                vote_block=0,
            )
        ),
        seed=empty(bytes32),
        stake_total=0,
    )
    self.total_bonds += bond
    assert extcall TOKEN.transferFrom(msg.sender, self, bond, default_return_value=True), "TransferFailed"
    log Challenged(
        game_id=game_id, job_id=job_id, challenger=msg.sender, defender=defender, steps=ops + 1, bond=bond, deadline=deadline
    )
    return game_id


@internal
@view
def _move(game_id: uint256, phase: uint256, mover: address) -> Meta:
    m: Meta = self._unpack(self._games[game_id].meta)
    assert m.phase == phase and msg.sender == mover, "NotYourMove"
    assert block.timestamp < m.deadline, "DeadlinePassed"
    return m


@external
def bisect(game_id: uint256, link: bytes32):
    """
    @notice The defender's link h_mid at mid = (lo + hi) / 2.
    """
    m: Meta = self._move(game_id, PHASE_DEFENDER, self._games[game_id].defender)
    assert link != empty(bytes32), "InvalidHash"
    self._games[game_id].mid_link = link
    m.phase = PHASE_CHALLENGER
    m.deadline = self._deadline(staticcall PARAMS.move_timeout())
    self._games[game_id].meta = self._pack(m)
    log Bisected(game_id=game_id, mid=(m.lo + m.hi) // 2, link=link, deadline=m.deadline)


@external
def respond(game_id: uint256, agree: bool):
    """
    @notice The challenger's answer to the defender's link at mid: the same as its own
            (the dispute lies after mid) or not (at or before mid).
    """
    m: Meta = self._move(game_id, PHASE_CHALLENGER, self._games[game_id].challenger)
    mid: uint256 = (m.lo + m.hi) // 2
    if agree:
        m.lo = mid
        self._games[game_id].lo_link = self._games[game_id].mid_link
    else:
        m.hi = mid
        self._games[game_id].hi_link = self._games[game_id].mid_link
    m.phase = PHASE_DEFENDER
    if m.hi - m.lo == 1:
        m.phase = PHASE_STEP
    m.deadline = self._deadline(staticcall PARAMS.move_timeout())
    self._games[game_id].meta = self._pack(m)
    log Responded(game_id=game_id, mid=mid, agree=agree, lo=m.lo, hi=m.hi, deadline=m.deadline)


@external
def reveal_step(game_id: uint256, step_hash: bytes32):
    """
    @notice The defender's hash of step hi (op hi's outputs, or the output hash for the
            outputs step): sha256(link_lo ‖ step_hash) must be link_hi. Opens the vote.
    """
    m: Meta = self._move(game_id, PHASE_STEP, self._games[game_id].defender)
    assert sha256(concat(self._games[game_id].lo_link, step_hash)) == self._games[game_id].hi_link, "StepMismatch"
    # The committee is drawn by a seed fixed only now that the step is settled.
    seed: bytes32 = keccak256(abi_encode(block.prevrandao, game_id, self))
    self._games[game_id].step_hash = step_hash
    self._games[game_id].seed = seed
    self._games[game_id].stake_total = staticcall NODES.total_stake()
    m.phase = PHASE_VOTE
    m.committee = staticcall PARAMS.committee_size()
    m.vote_opened_at = block.timestamp
    m.vote_block = block.number
    m.deadline = self._deadline(staticcall PARAMS.vote_window())
    assert m.vote_block <= MASK48, "InvalidParam"
    self._games[game_id].meta = self._pack(m)
    log StepRevealed(game_id=game_id, step=m.hi, step_hash=step_hash, seed=seed, deadline=m.deadline)


@internal
@view
def _drawn(game_id: uint256, m: Meta, node: address) -> bool:
    # Widen the draw by doubling every selection round, so a committee always forms.
    doublings: uint256 = min(
        (block.timestamp - m.vote_opened_at) // staticcall PARAMS.selection_round(), MAX_BOOST_SHIFT
    )
    multiplier: uint256 = (m.committee * staticcall PARAMS.selection_oversample()) << doublings
    return staticcall NODES.is_eligible(
        node, self._games[game_id].model_id, self._games[game_id].seed, multiplier, self._games[game_id].stake_total, m.vote_block
    )


@external
@view
def is_juror(game_id: uint256, node: address) -> bool:
    """
    @notice Whether `node` may vote in `game_id` right now.
    """
    m: Meta = self._unpack(self._games[game_id].meta)
    if m.phase != PHASE_VOTE or block.timestamp >= m.deadline:
        return False
    if node == self._games[game_id].defender or node == self._games[game_id].challenger:
        return False
    if self.ballots[game_id][node] != 0 or len(self.voters[game_id]) >= m.committee:
        return False
    return self._drawn(game_id, m, node)


@external
def vote(game_id: uint256, defender_right: bool):
    """
    @notice A drawn committee member's judgement of the revealed step: whether the
            defender's step hash is what the step computes from the committed tensors.
    """
    m: Meta = self._unpack(self._games[game_id].meta)
    assert m.phase == PHASE_VOTE, "NotVoting"
    assert block.timestamp < m.deadline, "DeadlinePassed"
    assert msg.sender != self._games[game_id].defender, "Conflicted"
    assert msg.sender != self._games[game_id].challenger, "Conflicted"
    assert self.ballots[game_id][msg.sender] == 0, "AlreadyVoted"
    assert len(self.voters[game_id]) < m.committee, "CommitteeFull"
    assert self._drawn(game_id, m, msg.sender), "NotEligible"
    self.voters[game_id].append(msg.sender)
    if defender_right:
        self.ballots[game_id][msg.sender] = BALLOT_DEFENDER
        m.votes_defender += 1
    else:
        self.ballots[game_id][msg.sender] = BALLOT_CHALLENGER
        m.votes_challenger += 1
    self._games[game_id].meta = self._pack(m)
    log Voted(game_id=game_id, voter=msg.sender, defender_right=defender_right)
    need: uint256 = m.committee // 2 + 1
    if m.votes_defender >= need:
        self._resolve(game_id, m, OUTCOME_DEFENDER)
    elif m.votes_challenger >= need:
        self._resolve(game_id, m, OUTCOME_CHALLENGER)


@external
def timeout(game_id: uint256):
    """
    @notice Ends a game whose current deadline passed: whoever had to move loses; a vote
            that ran out is decided by the votes cast (a tie is a draw).
    """
    m: Meta = self._unpack(self._games[game_id].meta)
    assert m.phase != 0 and m.phase != PHASE_DONE, "GameOver"
    assert block.timestamp >= m.deadline, "TooEarly"
    outcome: uint256 = OUTCOME_DRAW
    if m.phase == PHASE_DEFENDER or m.phase == PHASE_STEP:
        outcome = OUTCOME_CHALLENGER
    elif m.phase == PHASE_CHALLENGER:
        outcome = OUTCOME_DEFENDER
    elif m.votes_defender > m.votes_challenger:
        outcome = OUTCOME_DEFENDER
    elif m.votes_challenger > m.votes_defender:
        outcome = OUTCOME_CHALLENGER
    self._resolve(game_id, m, outcome)


@internal
def _resolve(game_id: uint256, m: Meta, outcome: uint256):
    job_id: uint256 = self._games[game_id].job_id
    defender: address = self._games[game_id].defender
    challenger: address = self._games[game_id].challenger
    bond: uint256 = self._games[game_id].bond
    self.total_bonds -= bond
    forfeited: uint256 = 0
    winner: address = empty(address)
    winner_amount: uint256 = 0
    if outcome == OUTCOME_CHALLENGER:
        self._credit(challenger, bond)
        winner = challenger
        if extcall MARKET.close_dispute(job_id, VERDICT_REFUTED):
            forfeited = extcall NODES.slash(defender, staticcall PARAMS.slash_fault_bps(), self)
            self.total_owed += forfeited
            winner_amount = self._share(game_id, forfeited, challenger, BALLOT_CHALLENGER)
    elif outcome == OUTCOME_DEFENDER:
        extcall MARKET.close_dispute(job_id, VERDICT_UPHELD)
        winner = defender
        forfeited = bond
        self.total_owed += bond
        winner_amount = self._share(game_id, bond, defender, BALLOT_DEFENDER)
    else:
        extcall MARKET.close_dispute(job_id, VERDICT_UNDECIDED)
        self._credit(challenger, bond)
    n: Meta = m
    n.phase = PHASE_DONE
    n.outcome = outcome
    self._games[game_id].meta = self._pack(n)
    log GameResolved(
        game_id=game_id, job_id=job_id, outcome=outcome, forfeited=forfeited, winner=winner, winner_amount=winner_amount
    )


@internal
def _credit(account: address, amount: uint256):
    self.owed[account] += amount
    self.total_owed += amount


@internal
def _share(game_id: uint256, pot: uint256, winner: address, side: uint256) -> uint256:
    """
    @dev Splits a forfeited `pot` (already counted in total_owed) between the winner,
         the committee members who voted `side`, and the treasury (the rest and dust).
    """
    winner_amount: uint256 = pot * staticcall PARAMS.dispute_winner_bps() // BPS
    committee_pool: uint256 = pot * staticcall PARAMS.dispute_committee_bps() // BPS
    right: DynArray[address, MAX_COMMITTEE] = []
    for voter: address in self.voters[game_id]:
        if self.ballots[game_id][voter] == side:
            right.append(voter)
    paid: uint256 = 0
    if len(right) > 0:
        each: uint256 = committee_pool // len(right)
        for voter: address in right:
            self.owed[voter] += each
        paid = each * len(right)
    self.owed[winner] += winner_amount
    self.owed[staticcall PARAMS.treasury()] += pot - winner_amount - paid
    return winner_amount


@external
def withdraw() -> uint256:
    """
    @notice Sends the caller what the game owes them: bonds returned, rewards.
    """
    amount: uint256 = self.owed[msg.sender]
    assert amount > 0, "NothingToWithdraw"
    self.owed[msg.sender] = 0
    self.total_owed -= amount
    assert extcall TOKEN.transfer(msg.sender, amount, default_return_value=True), "TransferFailed"
    log Withdrawn(account=msg.sender, amount=amount)
    return amount
