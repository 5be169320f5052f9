# pragma version ~=0.4.3
"""
@title Verinet inference market
@notice Escrow and settlement of inference jobs. Only hashes live here: the input and
        output tensors stay off-chain, addressed by their canonical hash.

        Modes
        - signed: one eligible node's EIP-712 Receipt (domain: name "Verinet Market",
          version "1", chainId, this contract) is submitted by anyone before the
          deadline; it is paid at once unless the audit draws it (see below).
        - quorum(k): eligible nodes take seats by committing
          keccak(abi_encode(output_hash, salt, node)). Reveals open only when all k seats
          are taken (or the commit deadline passed), so no node can copy another.
          finalize pays the strict majority (> k/2 of the seats), slashes the minority
          and the no-shows; with no majority it refunds.
          The fast path: the requester collects k eligible nodes' Receipts off-chain
          (each node hands its receipt to the requester alone, so none can copy another)
          and settles them in one `submit_quorum` call while no seat is taken. Nodes
          whose receipts are not settled that way fall back to commit and reveal.

        - optimistic: one eligible node runs the job traced and claims its output hash,
          the end of its execution-trace hash chain h_N, the Merkle root over its ops'
          output hashes and the op count. For `challenge_window` any staked node may
          challenge the claim through the DisputeGame (bisection to one op, settled by
          a committee); a refuted claim is refunded and its node slashed there.
        - signed jobs are sampled for audit: the hash of the block that holds the
          receipt (unknown when the receipt was sent) selects the job with probability
          p (see `_audit_bps`); a selected job is held `audit_window` during which a
          staked auditor may dispute it the same way, as a one-step game.
        - zk: the requester commits, with `request_zk`, to the keccak of the circuit's
          input instances (the quantized inputs, abi-packed). One drawn node proves the
          run with ezkl and sends `submit_proof`; the market checks the proof there and
          then with the model's registered EVM verifier and pays at once (no hold, no
          dispute: the proof is the verification). The result is the keccak of the
          proof's output instances, abi-packed.

        Every job ends in exactly one terminal state, PAID or REFUNDED, and anyone may
        call finalize once the reveal deadline has passed, so no job can stay stuck.
        Money is conserved per job: node payouts + owner share + treasury share, or the
        refund, add up to the escrow exactly. Payees withdraw what they are owed (pull).
        Reverts carry a reason code equal to a Verinet exception name.
"""

from ethereum.ercs import IERC20
from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator as eip712

initializes: eip712

exports: eip712.eip712Domain


interface IParams:
    def commit_window() -> uint256: view
    def reveal_window() -> uint256: view
    def audit_window() -> uint256: view
    def min_quorum() -> uint256: view
    def max_quorum() -> uint256: view
    def selection_oversample() -> uint256: view
    def selection_round() -> uint256: view
    def slash_fault_bps() -> uint256: view
    def slash_noshow_bps() -> uint256: view
    def owner_bps() -> uint256: view
    def treasury_bps() -> uint256: view
    def treasury() -> address: view
    def challenge_window() -> uint256: view
    def audit_bps() -> uint256: view
    def audit_margin_bps() -> uint256: view


interface INodeRegistry:
    def bonded(node: address) -> uint256: view
    def is_eligible(
        node: address, model_id: uint256, seed: bytes32, multiplier: uint256, total: uint256, before_block: uint256
    ) -> bool: view
    def total_stake() -> uint256: view
    def assign(node: address): nonpayable
    def release(node: address): nonpayable
    def slash(node: address, bps: uint256, recipient: address) -> uint256: nonpayable


interface IModelRegistry:
    def terms(model_id: uint256) -> (address, uint256, uint256, bool): view
    def verifier_of(model_id: uint256) -> (address, uint256): view


BPS: constant(uint256) = 10_000
MAX_SEATS: constant(uint256) = 15
MAX_BOOST_SHIFT: constant(uint256) = 16
MASK48: constant(uint256) = 2**48 - 1
MASK64: constant(uint256) = 2**64 - 1
# A traced claim has at most 2**20 ops (at most 21 bisection rounds; see Params).
MAX_OPS: constant(uint256) = 2**20
# secp256k1n / 2: signatures with a higher s are malleable twins and are refused.
HALF_N: constant(uint256) = 57_896_044_618_658_097_711_785_492_504_343_953_926_418_782_139_537_452_191_302_581_570_759_080_747_168

MODE_SIGNED: constant(uint256) = 1
MODE_QUORUM: constant(uint256) = 2
MODE_OPTIMISTIC: constant(uint256) = 4
MODE_ZK: constant(uint256) = 8

# Bounds on a zk proof (ezkl's KZG proofs of small circuits are a few KB) and on a
# circuit's public instances (inputs and outputs together).
MAX_PROOF: constant(uint256) = 16_384
MAX_INSTANCES: constant(uint256) = 1_024
VERIFY_PROOF: constant(bytes4) = method_id("verifyProof(bytes,uint256[])", output_type=bytes4)

STATE_OPEN: constant(uint256) = 1
STATE_SUBMITTED: constant(uint256) = 2
STATE_PAID: constant(uint256) = 3
STATE_REFUNDED: constant(uint256) = 4

# What the DisputeGame reports when a game over a claim ends (close_dispute).
VERDICT_UPHELD: constant(uint256) = 1
VERDICT_REFUTED: constant(uint256) = 2
VERDICT_UNDECIDED: constant(uint256) = 3

RECEIPT_TYPEHASH: constant(bytes32) = keccak256(
    "Receipt(uint256 jobId,uint256 modelId,bytes32 inputHash,bytes32 outputHash,address node)"
)


struct Job:
    # Storage layout: nine slots. The small fields share one packed slot (`meta`, see
    # _pack) because a fresh storage slot costs 22,100 gas; packing them took the cost
    # of a request from about 365k to about 230k gas.
    requester: address
    model_id: uint256
    input_hash: bytes32
    escrow: uint256
    seed: bytes32
    stake_total: uint256
    meta: uint256
    # A submitted (signed or optimistic) job's hold, packed: see _hold_of.
    finalize_after: uint256
    result: bytes32


struct Claim:
    # An optimistic claim's trace commitment (see DESIGN.md, "Execution trace").
    trace_final: bytes32
    trace_root: bytes32
    ops: uint256


struct ClaimView:
    node: address
    output_hash: bytes32
    trace_final: bytes32
    trace_root: bytes32
    ops: uint256
    submit_block: uint256
    audit_bps: uint256
    audited: bool
    open_disputes: uint256


struct Meta:
    mode: uint256
    k: uint256
    state: uint256
    seats: uint256
    reveals: uint256
    requested_at: uint256
    commit_deadline: uint256
    reveal_deadline: uint256
    request_block: uint256


struct JobView:
    requester: address
    model_id: uint256
    model_owner: address
    input_hash: bytes32
    mode: uint256
    k: uint256
    escrow: uint256
    seed: bytes32
    stake_total: uint256
    request_block: uint256
    requested_at: uint256
    commit_deadline: uint256
    reveal_deadline: uint256
    finalize_after: uint256
    state: uint256
    seats: uint256
    reveals: uint256
    result: bytes32


TOKEN: public(immutable(IERC20))
PARAMS: public(immutable(IParams))
NODES: public(immutable(INodeRegistry))
MODELS: public(immutable(IModelRegistry))

_jobs: HashMap[uint256, Job]
seat_holders: HashMap[uint256, DynArray[address, MAX_SEATS]]
claims: HashMap[uint256, Claim]
open_disputes: public(HashMap[uint256, uint256])
# A game over the job ended with no verdict (its committee never formed): refund it.
undecided: HashMap[uint256, bool]
# The DisputeGame, set once by the deployer (the two contracts name each other).
dispute_game: public(address)
DEPLOYER: immutable(address)
commitments: public(HashMap[uint256, HashMap[address, bytes32]])
revealed: public(HashMap[uint256, HashMap[address, bytes32]])
# A zk job's commitment: keccak256 of its input instances, abi-packed (uint256 each).
instances_hash: public(HashMap[uint256, bytes32])
owed: public(HashMap[address, uint256])
job_count: public(uint256)
total_escrow: public(uint256)
total_owed: public(uint256)


event JobRequested:
    job_id: indexed(uint256)
    requester: indexed(address)
    model_id: indexed(uint256)
    input_hash: bytes32
    mode: uint256
    k: uint256
    escrow: uint256
    seed: bytes32
    commit_deadline: uint256
    reveal_deadline: uint256

event JobCommitted:
    job_id: indexed(uint256)
    node: indexed(address)
    commitment: bytes32
    seat: uint256

event JobSealed:
    job_id: indexed(uint256)

event JobRevealed:
    job_id: indexed(uint256)
    node: indexed(address)
    output_hash: bytes32

event ReceiptSubmitted:
    job_id: indexed(uint256)
    node: indexed(address)
    output_hash: bytes32
    finalize_after: uint256

event ClaimSubmitted:
    job_id: indexed(uint256)
    node: indexed(address)
    output_hash: bytes32
    trace_final: bytes32
    trace_root: bytes32
    ops: uint256
    finalize_after: uint256

event ProofAccepted:
    job_id: indexed(uint256)
    node: indexed(address)
    output_hash: bytes32

event DisputeOpened:
    job_id: indexed(uint256)
    open_disputes: uint256

event DisputeClosed:
    job_id: indexed(uint256)
    verdict: uint256
    open_disputes: uint256

event JobPaid:
    job_id: indexed(uint256)
    output_hash: bytes32
    winners: uint256
    node_amount: uint256
    owner: address
    owner_amount: uint256
    treasury_amount: uint256

event JobRefunded:
    job_id: indexed(uint256)
    requester: indexed(address)
    amount: uint256

event NodePenalized:
    job_id: indexed(uint256)
    node: indexed(address)
    reason: uint256
    amount: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256


# NodePenalized.reason
PENALTY_WRONG: constant(uint256) = 1
PENALTY_NO_SHOW: constant(uint256) = 2


@deploy
def __init__(token: IERC20, params: IParams, nodes: INodeRegistry, models: IModelRegistry):
    eip712.__init__("Verinet Market", "1")
    TOKEN = token
    PARAMS = params
    NODES = nodes
    MODELS = models
    DEPLOYER = msg.sender


@external
def set_dispute_game(game: address):
    """
    @notice Names the DisputeGame, once, by the deployer: the game is deployed after
            the market because each needs the other's address.
    """
    assert msg.sender == DEPLOYER, "NotDeployer"
    assert self.dispute_game == empty(address), "AlreadySet"
    assert game != empty(address), "ZeroAddress"
    self.dispute_game = game


# -- packed job fields --------------------------------------------------------
# meta bits: [0,8) mode | [8,16) k | [16,24) state | [24,32) seats | [32,40) reveals
#            [64,112) requested_at | [112,160) commit_deadline | [160,208) reveal_deadline
#            [208,256) request_block


@internal
@pure
def _unpack(meta: uint256) -> Meta:
    return Meta(
        mode=meta & 255,
        k=(meta >> 8) & 255,
        state=(meta >> 16) & 255,
        seats=(meta >> 24) & 255,
        reveals=(meta >> 32) & 255,
        requested_at=(meta >> 64) & MASK48,
        commit_deadline=(meta >> 112) & MASK48,
        reveal_deadline=(meta >> 160) & MASK48,
        request_block=meta >> 208,
    )


@internal
@pure
def _pack(m: Meta) -> uint256:
    return (
        m.mode
        | (m.k << 8)
        | (m.state << 16)
        | (m.seats << 24)
        | (m.reveals << 32)
        | (m.requested_at << 64)
        | (m.commit_deadline << 112)
        | (m.reveal_deadline << 160)
        | (m.request_block << 208)
    )


@external
@view
def jobs(job_id: uint256) -> JobView:
    """
    @notice Everything about a job, unpacked. `model_owner` is the model's owner now,
            who is the one paid at settlement.
    """
    job: Job = self._jobs[job_id]
    m: Meta = self._unpack(job.meta)
    owner: address = empty(address)
    if job.requester != empty(address):
        owner = (staticcall MODELS.terms(job.model_id))[0]
    return JobView(
        requester=job.requester,
        model_id=job.model_id,
        model_owner=owner,
        input_hash=job.input_hash,
        mode=m.mode,
        k=m.k,
        escrow=job.escrow,
        seed=job.seed,
        stake_total=job.stake_total,
        request_block=m.request_block,
        requested_at=m.requested_at,
        commit_deadline=m.commit_deadline,
        reveal_deadline=m.reveal_deadline,
        finalize_after=job.finalize_after & MASK64,
        state=m.state,
        seats=m.seats,
        reveals=m.reveals,
        result=job.result,
    )


@external
def request(model_id: uint256, input_hash: bytes32, mode: uint256, k: uint256, max_fee: uint256) -> uint256:
    """
    @notice Escrows fee * k from the caller (approve first, or use permit) and opens a
            job. `k` is the quorum size for quorum jobs and 1 for the others.
            `max_fee` is the most the caller accepts per execution: a model owner who
            raises the fee just before the request cannot take more than that.
            zk jobs are requested with `request_zk`.
    """
    return self._open(model_id, input_hash, mode, k, max_fee, empty(bytes32))


@external
def request_zk(model_id: uint256, input_hash: bytes32, instances_hash: bytes32, max_fee: uint256) -> uint256:
    """
    @notice Opens a zk job (k = 1) as `request` does, committing to the circuit's input
            instances: `instances_hash` = keccak256 of them abi-packed, as the client
            computes them from its inputs without proving. Only a proof whose input
            instances hash to it can settle the job, so the proof is of these inputs.
    """
    assert instances_hash != empty(bytes32), "InvalidHash"
    job_id: uint256 = self._open(model_id, input_hash, MODE_ZK, 1, max_fee, instances_hash)
    self.instances_hash[job_id] = instances_hash
    return job_id


@internal
def _open(
    model_id: uint256, input_hash: bytes32, mode: uint256, k: uint256, max_fee: uint256, instances_hash: bytes32
) -> uint256:
    owner: address = empty(address)
    fee: uint256 = 0
    modes: uint256 = 0
    deprecated: bool = False
    owner, fee, modes, deprecated = staticcall MODELS.terms(model_id)
    assert owner != empty(address), "UnknownModel"
    assert not deprecated, "ModelDeprecated"
    assert fee <= max_fee, "FeeTooHigh"
    assert mode == MODE_SIGNED or mode == MODE_QUORUM or mode == MODE_OPTIMISTIC or mode == MODE_ZK, "ModeNotAllowed"
    assert modes & mode == mode, "ModeNotAllowed"
    if mode == MODE_ZK:
        # Without the input instances' hash a proof of any input would settle the job.
        assert instances_hash != empty(bytes32), "UseRequestZk"
        assert (staticcall MODELS.verifier_of(model_id))[0] != empty(address), "NoVerifier"
    if mode == MODE_QUORUM:
        assert k >= staticcall PARAMS.min_quorum() and k <= staticcall PARAMS.max_quorum(), "InvalidQuorum"
    else:
        assert k == 1, "InvalidQuorum"
    assert input_hash != empty(bytes32), "InvalidHash"

    job_id: uint256 = self.job_count + 1
    self.job_count = job_id
    escrow: uint256 = fee * k
    commit_deadline: uint256 = block.timestamp + staticcall PARAMS.commit_window()
    reveal_deadline: uint256 = commit_deadline + staticcall PARAMS.reveal_window()
    assert reveal_deadline <= MASK48 and block.number <= MASK48, "InvalidParam"  # packed as 48 bits
    # The draw that picks nodes is fixed here, after the input hash is committed.
    seed: bytes32 = keccak256(abi_encode(block.prevrandao, job_id, self))
    self._jobs[job_id] = Job(
        requester=msg.sender,
        model_id=model_id,
        input_hash=input_hash,
        escrow=escrow,
        seed=seed,
        # The draw divides by the stake at request time: stake moved later cannot tilt it.
        stake_total=staticcall NODES.total_stake(),
        meta=self._pack(
            Meta(
                mode=mode,
                k=k,
                state=STATE_OPEN,
                seats=0,
                reveals=0,
                requested_at=block.timestamp,
                commit_deadline=commit_deadline,
                reveal_deadline=reveal_deadline,
                request_block=block.number,
            )
        ),
        finalize_after=0,
        result=empty(bytes32),
    )
    self.total_escrow += escrow
    if escrow > 0:
        assert extcall TOKEN.transferFrom(msg.sender, self, escrow, default_return_value=True), "TransferFailed"
    log JobRequested(
        job_id=job_id,
        requester=msg.sender,
        model_id=model_id,
        input_hash=input_hash,
        mode=mode,
        k=k,
        escrow=escrow,
        seed=seed,
        commit_deadline=commit_deadline,
        reveal_deadline=reveal_deadline,
    )
    return job_id


@internal
@view
def _multiplier(m: Meta) -> uint256:
    # Widen the draw by doubling every selection round, so a job always finds nodes.
    doublings: uint256 = min((block.timestamp - m.requested_at) // staticcall PARAMS.selection_round(), MAX_BOOST_SHIFT)
    return (m.k * staticcall PARAMS.selection_oversample()) << doublings


@external
@view
def is_eligible(job_id: uint256, node: address) -> bool:
    """
    @notice Whether `node` may take a seat (quorum) or sign the receipt (signed) of
            `job_id` right now.
    """
    m: Meta = self._unpack(self._jobs[job_id].meta)
    if m.state != STATE_OPEN:
        return False
    return self._drawn(job_id, m, node)


@internal
@view
def _drawn(job_id: uint256, m: Meta, node: address) -> bool:
    return staticcall NODES.is_eligible(
        node,
        self._jobs[job_id].model_id,
        self._jobs[job_id].seed,
        self._multiplier(m),
        self._jobs[job_id].stake_total,
        m.request_block,
    )


@external
@view
def receipt_digest(job_id: uint256, output_hash: bytes32, node: address) -> bytes32:
    """
    @notice The EIP-712 digest a node signs for `job_id`.
    """
    return self._receipt_digest(job_id, output_hash, node)


@internal
@view
def _receipt_digest(job_id: uint256, output_hash: bytes32, node: address) -> bytes32:
    struct_hash: bytes32 = keccak256(
        abi_encode(RECEIPT_TYPEHASH, job_id, self._jobs[job_id].model_id, self._jobs[job_id].input_hash, output_hash, node)
    )
    return eip712._hash_typed_data_v4(struct_hash)


@external
def commit(job_id: uint256, commitment: bytes32):
    """
    @notice Takes a seat in a quorum job by committing
            keccak(abi_encode(output_hash, salt, msg.sender)).
    """
    m: Meta = self._unpack(self._jobs[job_id].meta)
    assert m.state == STATE_OPEN, "JobNotOpen"
    assert m.mode == MODE_QUORUM, "WrongMode"
    assert block.timestamp < m.commit_deadline, "DeadlinePassed"
    assert m.seats < m.k, "SeatsFull"
    assert self.commitments[job_id][msg.sender] == empty(bytes32), "AlreadyCommitted"
    assert commitment != empty(bytes32), "InvalidHash"
    assert self._drawn(job_id, m, msg.sender), "NotEligible"
    self.commitments[job_id][msg.sender] = commitment
    self.seat_holders[job_id].append(msg.sender)
    seat: uint256 = m.seats
    m.seats += 1
    self._jobs[job_id].meta = self._pack(m)
    extcall NODES.assign(msg.sender)
    log JobCommitted(job_id=job_id, node=msg.sender, commitment=commitment, seat=seat)
    if m.seats == m.k:
        log JobSealed(job_id=job_id)


@external
def reveal(job_id: uint256, output_hash: bytes32, salt: bytes32):
    m: Meta = self._unpack(self._jobs[job_id].meta)
    assert m.state == STATE_OPEN, "JobNotOpen"
    assert m.mode == MODE_QUORUM, "WrongMode"
    commitment: bytes32 = self.commitments[job_id][msg.sender]
    assert commitment != empty(bytes32), "NotSeated"
    assert self.revealed[job_id][msg.sender] == empty(bytes32), "AlreadyRevealed"
    assert m.seats == m.k or block.timestamp >= m.commit_deadline, "RevealNotOpen"
    assert block.timestamp < m.reveal_deadline, "DeadlinePassed"
    assert output_hash != empty(bytes32), "InvalidHash"
    assert keccak256(abi_encode(output_hash, salt, msg.sender)) == commitment, "CommitmentMismatch"
    self.revealed[job_id][msg.sender] = output_hash
    m.reveals += 1
    self._jobs[job_id].meta = self._pack(m)
    log JobRevealed(job_id=job_id, node=msg.sender, output_hash=output_hash)


@internal
@view
def _check_receipt(job_id: uint256, m: Meta, output_hash: bytes32, node: address, signature: Bytes[65]):
    """
    @dev Reverts unless `signature` is `node`'s low-s receipt for `output_hash` and
         `node` is drawn for the job.
    """
    assert output_hash != empty(bytes32), "InvalidHash"
    assert len(signature) == 65, "InvalidSignature"
    r: uint256 = extract32(signature, 0, output_type=uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    assert s <= HALF_N, "MalleableSignature"
    assert v == 27 or v == 28, "InvalidSignature"
    signer: address = ecrecover(self._receipt_digest(job_id, output_hash, node), v, r, s)
    assert signer != empty(address), "InvalidSignature"
    assert signer == node, "WrongSigner"
    assert self._drawn(job_id, m, node), "NotEligible"


@external
def submit_quorum(
    job_id: uint256,
    output_hashes: DynArray[bytes32, MAX_SEATS],
    nodes: DynArray[address, MAX_SEATS],
    signatures: DynArray[Bytes[65], MAX_SEATS],
):
    """
    @notice Settles a quorum job at once with k receipts from k distinct eligible nodes,
            while no node has committed yet. The receipts count as commit and reveal
            together; the job is paid (majority) or refunded (none) as `finalize` would.
    """
    m: Meta = self._unpack(self._jobs[job_id].meta)
    assert m.state == STATE_OPEN, "JobNotOpen"
    assert m.mode == MODE_QUORUM, "WrongMode"
    assert block.timestamp < m.commit_deadline, "DeadlinePassed"
    assert m.seats == 0, "SeatsTaken"
    assert len(nodes) == m.k and len(output_hashes) == m.k and len(signatures) == m.k, "WrongReceiptCount"
    for i: uint256 in range(len(nodes), bound=MAX_SEATS):
        node: address = nodes[i]
        for j: uint256 in range(i, bound=MAX_SEATS):
            assert nodes[j] != node, "DuplicateNode"
        self._check_receipt(job_id, m, output_hashes[i], node, signatures[i])
        self.seat_holders[job_id].append(node)
        self.revealed[job_id][node] = output_hashes[i]
        extcall NODES.assign(node)
        log JobRevealed(job_id=job_id, node=node, output_hash=output_hashes[i])
    m.seats = m.k
    m.reveals = m.k
    self._settle_votes(job_id, m)


@external
def submit_receipt(job_id: uint256, output_hash: bytes32, node: address, signature: Bytes[65]):
    """
    @notice Settles a signed job with the node's EIP-712 receipt. Anyone may submit
            it; the signer must be `node` and `node` must be eligible for the job.
    """
    m: Meta = self._unpack(self._jobs[job_id].meta)
    assert m.state == STATE_OPEN, "JobNotOpen"
    assert m.mode == MODE_SIGNED, "WrongMode"
    assert block.timestamp < m.reveal_deadline, "DeadlinePassed"
    self._check_receipt(job_id, m, output_hash, node, signature)
    finalize_after: uint256 = block.timestamp + staticcall PARAMS.audit_window()
    self._submit(job_id, m, node, output_hash, finalize_after, self._audit_bps(self._jobs[job_id].escrow, node))
    log ReceiptSubmitted(job_id=job_id, node=node, output_hash=output_hash, finalize_after=finalize_after)


@external
def submit_claim(job_id: uint256, output_hash: bytes32, trace_final: bytes32, trace_root: bytes32, ops: uint256):
    """
    @notice An optimistic job's result, claimed by the drawn node that ran it traced:
            the output hash, h_N (the end of the trace's hash chain), the Merkle root
            over the ops' output hashes and the op count. It is paid once
            `challenge_window` passed with every dispute over it settled in its favour.
    """
    m: Meta = self._unpack(self._jobs[job_id].meta)
    assert m.state == STATE_OPEN, "JobNotOpen"
    assert m.mode == MODE_OPTIMISTIC, "WrongMode"
    assert block.timestamp < m.reveal_deadline, "DeadlinePassed"
    assert output_hash != empty(bytes32) and trace_final != empty(bytes32), "InvalidHash"
    assert trace_root != empty(bytes32), "InvalidHash"
    assert ops >= 1 and ops <= MAX_OPS, "InvalidTrace"
    assert self._drawn(job_id, m, msg.sender), "NotEligible"
    self.claims[job_id] = Claim(trace_final=trace_final, trace_root=trace_root, ops=ops)
    finalize_after: uint256 = block.timestamp + staticcall PARAMS.challenge_window()
    self._submit(job_id, m, msg.sender, output_hash, finalize_after, 0)
    log ClaimSubmitted(
        job_id=job_id,
        node=msg.sender,
        output_hash=output_hash,
        trace_final=trace_final,
        trace_root=trace_root,
        ops=ops,
        finalize_after=finalize_after,
    )


@external
def submit_proof(job_id: uint256, proof: Bytes[MAX_PROOF], instances: DynArray[uint256, MAX_INSTANCES]):
    """
    @notice Settles a zk job with an ezkl proof of its run and the proof's public
            instances (the inputs', then the outputs'), sent by a node drawn for the job
            before the deadline; that node is paid the node share at once.
            The first `input_instances` (see ModelRegistry.verifier_of) must hash to the
            job's commitment and the model's verifier must accept the proof: the check is
            made here, at submission, so the market never stores the proof (a few KB)
            for a later finalize and the job ends PAID in this transaction. The result is
            keccak256 of the output instances, abi-packed.
            Only drawn, staked nodes may submit: a proof does not name its prover, so
            anyone could otherwise copy one from a pending transaction and take the fee.
            A job never proved is refunded by `finalize` after its deadline.
    """
    m: Meta = self._unpack(self._jobs[job_id].meta)
    assert m.state == STATE_OPEN, "JobNotOpen"
    assert m.mode == MODE_ZK, "WrongMode"
    assert block.timestamp < m.reveal_deadline, "DeadlinePassed"
    assert self._drawn(job_id, m, msg.sender), "NotEligible"
    verifier: address = empty(address)
    inputs: uint256 = 0
    verifier, inputs = staticcall MODELS.verifier_of(self._jobs[job_id].model_id)
    count: uint256 = len(instances)
    assert count > inputs, "InstancesMismatch"
    # The verifier's calldata holds the instances abi-packed after the proof: hash them there.
    data: Bytes[4 + 5 * 32 + MAX_PROOF + 32 * MAX_INSTANCES] = abi_encode(proof, instances, method_id=VERIFY_PROOF)
    start: uint256 = 4 + 4 * 32 + (len(proof) + 31) // 32 * 32
    assert keccak256(slice(data, start, 32 * inputs)) == self.instances_hash[job_id], "InstancesMismatch"
    ok: bool = False
    answer: Bytes[32] = b""
    ok, answer = raw_call(verifier, data, max_outsize=32, is_static_call=True, revert_on_failure=False)
    assert ok and len(answer) == 32 and convert(answer, uint256) == 1, "InvalidProof"
    output_hash: bytes32 = keccak256(slice(data, start + 32 * inputs, 32 * (count - inputs)))
    self.seat_holders[job_id].append(msg.sender)
    n: Meta = m
    n.seats = 1
    n.reveals = 1
    log ProofAccepted(job_id=job_id, node=msg.sender, output_hash=output_hash)
    self._pay(job_id, n, output_hash, [msg.sender])


@internal
def _submit(job_id: uint256, m: Meta, node: address, output_hash: bytes32, finalize_after: uint256, audit_bps: uint256):
    # finalize_after packs the hold [0,64), the submitting block [64,128) (whose hash
    # draws the audit) and the audit probability in basis points [128,256).
    assert finalize_after <= MASK64, "InvalidParam"
    self.seat_holders[job_id].append(node)
    self._jobs[job_id].result = output_hash
    self._jobs[job_id].finalize_after = finalize_after | (block.number << 64) | (audit_bps << 128)
    n: Meta = m
    n.seats = 1
    n.reveals = 1
    n.state = STATE_SUBMITTED
    self._jobs[job_id].meta = self._pack(n)
    extcall NODES.assign(node)


@internal
@view
def _audit_bps(escrow: uint256, node: address) -> uint256:
    """
    @dev p for a signed job, in basis points. Cheating saves the node at most its share F
         of the fee; caught, it forfeits F and a lost dispute slashes S. Deterrence needs
         p * (S + F) > F; p = max(floor, margin * F / (S + F)) meets it `margin` times.
    """
    fee_share: uint256 = escrow - escrow * staticcall PARAMS.owner_bps() // BPS - escrow * staticcall PARAMS.treasury_bps() // BPS
    least: uint256 = staticcall PARAMS.audit_bps()
    if fee_share == 0:
        return least
    slash: uint256 = staticcall NODES.bonded(node) * staticcall PARAMS.slash_fault_bps() // BPS
    margin: uint256 = staticcall PARAMS.audit_margin_bps()
    need: uint256 = (margin * fee_share + slash + fee_share - 1) // (slash + fee_share)
    return min(BPS, max(least, need))


@internal
@view
def _audited(job_id: uint256, packed: uint256) -> bool:
    """
    @dev Whether a submitted signed job was drawn for audit. The seed is the hash of the
         block that holds the receipt: unknown to whoever sent it. Once that hash is
         out of the EVM's 256-block reach the job counts as drawn (held: the safe side).
    """
    submit_block: uint256 = (packed >> 64) & MASK64
    if block.number <= submit_block:
        return True
    if block.number > submit_block + 256:
        return True
    draw: uint256 = convert(keccak256(abi_encode(blockhash(submit_block), job_id)), uint256)
    return draw % BPS < packed >> 128


@external
@view
def claim_of(job_id: uint256) -> ClaimView:
    """
    @notice A submitted job's claim: for optimistic jobs the trace commitment, for signed
            jobs the audit draw (`audited` is final from the block after submission).
    """
    packed: uint256 = self._jobs[job_id].finalize_after
    m: Meta = self._unpack(self._jobs[job_id].meta)
    node: address = empty(address)
    if m.seats > 0:
        node = self.seat_holders[job_id][0]
    claim: Claim = self.claims[job_id]
    return ClaimView(
        node=node,
        output_hash=self._jobs[job_id].result,
        trace_final=claim.trace_final,
        trace_root=claim.trace_root,
        ops=claim.ops,
        submit_block=(packed >> 64) & MASK64,
        audit_bps=packed >> 128,
        audited=m.mode == MODE_SIGNED and m.state == STATE_SUBMITTED and self._audited(job_id, packed),
        open_disputes=self.open_disputes[job_id],
    )


@external
def open_dispute(job_id: uint256) -> (address, uint256, bytes32, bytes32, bytes32, uint256):
    """
    @notice Called by the DisputeGame when a staked node challenges a job's result:
            an optimistic claim within its challenge window, or a signed job drawn for
            audit within its audit window. Holds the job until the game ends and returns
            (node, model_id, input_hash, output_hash, trace_final, ops); a signed job
            has no trace (ops 0).
    """
    assert msg.sender == self.dispute_game, "NotDisputeGame"
    m: Meta = self._unpack(self._jobs[job_id].meta)
    assert m.state == STATE_SUBMITTED, "NotChallengeable"
    packed: uint256 = self._jobs[job_id].finalize_after
    assert block.timestamp < packed & MASK64, "ChallengeClosed"
    if m.mode == MODE_SIGNED:
        assert self._audited(job_id, packed), "NotAudited"
    self.open_disputes[job_id] += 1
    log DisputeOpened(job_id=job_id, open_disputes=self.open_disputes[job_id])
    claim: Claim = self.claims[job_id]
    return (
        self.seat_holders[job_id][0],
        self._jobs[job_id].model_id,
        self._jobs[job_id].input_hash,
        self._jobs[job_id].result,
        claim.trace_final,
        claim.ops,
    )


@external
def close_dispute(job_id: uint256, verdict: uint256) -> bool:
    """
    @notice Called by the DisputeGame when a game over `job_id` ends. A refuted claim
            refunds the job at once; returns True when this verdict refuted it (False
            when an earlier game already had).
    """
    assert msg.sender == self.dispute_game, "NotDisputeGame"
    self.open_disputes[job_id] -= 1
    log DisputeClosed(job_id=job_id, verdict=verdict, open_disputes=self.open_disputes[job_id])
    m: Meta = self._unpack(self._jobs[job_id].meta)
    if m.state != STATE_SUBMITTED:
        return False
    if verdict == VERDICT_REFUTED:
        self._refund(job_id, m, self._jobs[job_id].requester, self._jobs[job_id].escrow)
        extcall NODES.release(self.seat_holders[job_id][0])
        return True
    if verdict == VERDICT_UNDECIDED:
        self.undecided[job_id] = True
    return False


@internal
def _set_state(job_id: uint256, m: Meta, state: uint256):
    n: Meta = m
    n.state = state
    self._jobs[job_id].meta = self._pack(n)


@internal
def _refund(job_id: uint256, m: Meta, requester: address, escrow: uint256):
    self._set_state(job_id, m, STATE_REFUNDED)
    self.total_escrow -= escrow
    self.total_owed += escrow
    self.owed[requester] += escrow
    log JobRefunded(job_id=job_id, requester=requester, amount=escrow)


@internal
def _pay(job_id: uint256, m: Meta, output_hash: bytes32, winners: DynArray[address, MAX_SEATS]):
    escrow: uint256 = self._jobs[job_id].escrow
    owner_amount: uint256 = escrow * staticcall PARAMS.owner_bps() // BPS
    treasury_amount: uint256 = escrow * staticcall PARAMS.treasury_bps() // BPS
    node_pool: uint256 = escrow - owner_amount - treasury_amount
    per_node: uint256 = node_pool // len(winners)
    # Integer-division dust goes to the treasury so the split adds up exactly.
    treasury_amount += node_pool - per_node * len(winners)
    for w: address in winners:
        self.owed[w] += per_node
    # The model's owner at settlement is paid (owners may hand a model over).
    owner: address = (staticcall MODELS.terms(self._jobs[job_id].model_id))[0]
    self.owed[owner] += owner_amount
    self.owed[staticcall PARAMS.treasury()] += treasury_amount
    self._set_state(job_id, m, STATE_PAID)
    self._jobs[job_id].result = output_hash
    self.total_escrow -= escrow
    self.total_owed += escrow
    log JobPaid(
        job_id=job_id,
        output_hash=output_hash,
        winners=len(winners),
        node_amount=per_node,
        owner=owner,
        owner_amount=owner_amount,
        treasury_amount=treasury_amount,
    )


@internal
def _penalize(job_id: uint256, node: address, reason: uint256, bps: uint256, treasury: address):
    amount: uint256 = extcall NODES.slash(node, bps, treasury)
    log NodePenalized(job_id=job_id, node=node, reason=reason, amount=amount)


@external
@view
def finalizable(job_id: uint256) -> bool:
    return self._finalizable(job_id, self._unpack(self._jobs[job_id].meta))


@internal
@view
def _finalizable(job_id: uint256, m: Meta) -> bool:
    if m.state == STATE_SUBMITTED:
        if self.open_disputes[job_id] > 0:
            return False
        packed: uint256 = self._jobs[job_id].finalize_after
        if block.timestamp >= packed & MASK64:
            return True
        # A signed job the audit did not draw is paid at once.
        return m.mode == MODE_SIGNED and not self._audited(job_id, packed)
    if m.state != STATE_OPEN:
        return False
    if block.timestamp >= m.reveal_deadline:
        return True
    # A quorum job whose every seated node has revealed need not wait.
    return m.mode == MODE_QUORUM and m.seats > 0 and m.reveals == m.seats and (
        m.seats == m.k or block.timestamp >= m.commit_deadline
    )


@external
def finalize(job_id: uint256):
    """
    @notice Ends a job in PAID or REFUNDED. Anyone may call it once the job is
            finalizable (see `finalizable`).
    """
    m: Meta = self._unpack(self._jobs[job_id].meta)
    assert m.state == STATE_OPEN or m.state == STATE_SUBMITTED, "JobNotOpen"
    assert self.open_disputes[job_id] == 0, "DisputeOpen"
    assert self._finalizable(job_id, m), "TooEarly"
    holders: DynArray[address, MAX_SEATS] = self.seat_holders[job_id]

    if m.state == STATE_SUBMITTED:
        if self.undecided[job_id]:
            self._refund(job_id, m, self._jobs[job_id].requester, self._jobs[job_id].escrow)
        else:
            self._pay(job_id, m, self._jobs[job_id].result, holders)
        extcall NODES.release(holders[0])
        return

    # Open job past its deadline, or a quorum whose seats have all revealed.
    self._settle_votes(job_id, m)


@internal
def _settle_votes(job_id: uint256, m: Meta):
    """
    @dev Pays the strict majority of the revealed votes and slashes the minority and the
         no-shows, or refunds when no output has a majority. Releases every seat.
    """
    holders: DynArray[address, MAX_SEATS] = self.seat_holders[job_id]
    votes: DynArray[bytes32, MAX_SEATS] = []
    for h: address in holders:
        votes.append(self.revealed[job_id][h])
    majority: bytes32 = empty(bytes32)
    need: uint256 = m.k // 2 + 1
    for i: uint256 in range(len(votes), bound=MAX_SEATS):
        if votes[i] == empty(bytes32):
            continue
        count: uint256 = 0
        for j: uint256 in range(len(votes), bound=MAX_SEATS):
            if votes[j] == votes[i]:
                count += 1
        if count >= need:
            majority = votes[i]
            break

    treasury: address = staticcall PARAMS.treasury()
    winners: DynArray[address, MAX_SEATS] = []
    for i: uint256 in range(len(holders), bound=MAX_SEATS):
        if majority != empty(bytes32) and votes[i] == majority:
            winners.append(holders[i])
        elif votes[i] == empty(bytes32):
            self._penalize(job_id, holders[i], PENALTY_NO_SHOW, staticcall PARAMS.slash_noshow_bps(), treasury)
        elif majority != empty(bytes32):
            self._penalize(job_id, holders[i], PENALTY_WRONG, staticcall PARAMS.slash_fault_bps(), treasury)
        extcall NODES.release(holders[i])

    if majority != empty(bytes32):
        self._pay(job_id, m, majority, winners)
    else:
        self._refund(job_id, m, self._jobs[job_id].requester, self._jobs[job_id].escrow)


@external
def withdraw() -> uint256:
    """
    @notice Sends the caller everything the market owes them (fees or refunds).
    """
    amount: uint256 = self.owed[msg.sender]
    assert amount > 0, "NothingToWithdraw"
    self.owed[msg.sender] = 0
    self.total_owed -= amount
    assert extcall TOKEN.transfer(msg.sender, amount, default_return_value=True), "TransferFailed"
    log Withdrawn(account=msg.sender, amount=amount)
    return amount


@external
@view
def seats_of(job_id: uint256) -> DynArray[address, MAX_SEATS]:
    return self.seat_holders[job_id]
