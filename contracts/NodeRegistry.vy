# pragma version ~=0.4.3
"""
@title Verinet node registry
@notice Permissionless node registration, stake, unbonding and slashing.
        - Anyone registers an endpoint, declares the models it serves and bonds stake
          in the Verinet token.
        - Unstaking moves stake into an unbonding bucket that can be withdrawn only
          after `Params.unbonding_delay` (longer than every challenge window) and only
          while the node holds no open assignment; unbonding stake stays slashable.
        - Only protocol contracts (set by the owner, later governance) may assign
          work to a node, release it, or slash it.
        - Eligibility for a job is a stake-weighted sortition draw evaluated per node
          in O(1) gas: keccak(seed, node) mod total < stake * multiplier, where `total`
          is the total stake the market recorded when the job was requested, and only
          stake that last changed in an earlier block counts. The seed is public once
          the job exists, so stake moved after it could otherwise be sized to win (or
          to deny others) a seat.
        Reverts carry a reason code equal to a Verinet exception name.
"""

from ethereum.ercs import IERC20
from snekmate.auth import ownable

initializes: ownable

exports: (ownable.owner, ownable.transfer_ownership)


interface IParams:
    def min_stake() -> uint256: view
    def unbonding_delay() -> uint256: view


BPS: constant(uint256) = 10_000
MAX_ENDPOINT: constant(uint256) = 256
MAX_MODELS_PER_CALL: constant(uint256) = 32


struct Node:
    registered: bool
    endpoint: String[MAX_ENDPOINT]
    stake: uint256
    unbonding: uint256
    unbond_at: uint256
    open_assignments: uint256
    slashed: uint256
    stake_block: uint256


TOKEN: public(immutable(IERC20))
PARAMS: public(immutable(IParams))

nodes: public(HashMap[address, Node])
serves: public(HashMap[address, HashMap[uint256, bool]])
# 0: never, 1: active (may assign, release, slash), 2: retired (may only finish its
# open work: release and slash), so retiring a market never strands its jobs.
protocol: public(HashMap[address, uint256])
total_stake: public(uint256)
total_bonded: public(uint256)
node_count: public(uint256)


event NodeRegistered:
    node: indexed(address)
    endpoint: String[MAX_ENDPOINT]

event EndpointChanged:
    node: indexed(address)
    endpoint: String[MAX_ENDPOINT]

event ModelServed:
    node: indexed(address)
    model_id: indexed(uint256)
    serving: bool

event Staked:
    node: indexed(address)
    amount: uint256
    stake: uint256

event UnstakeRequested:
    node: indexed(address)
    amount: uint256
    unbond_at: uint256

event Withdrawn:
    node: indexed(address)
    amount: uint256

event Slashed:
    node: indexed(address)
    amount: uint256
    recipient: address
    by: address

event ProtocolContractSet:
    target: indexed(address)
    status: uint256


@deploy
def __init__(token: IERC20, params: IParams):
    ownable.__init__()
    TOKEN = token
    PARAMS = params


PROTOCOL_ACTIVE: constant(uint256) = 1
PROTOCOL_RETIRED: constant(uint256) = 2


@external
def set_protocol(target: address, active: bool):
    """
    @notice Makes `target` a protocol contract, or retires it: a retired contract can
            no longer assign work but still releases and slashes for the work it gave.
    """
    ownable._check_owner()
    assert target != empty(address), "ZeroAddress"
    status: uint256 = PROTOCOL_ACTIVE
    if not active:
        assert self.protocol[target] != 0, "NotProtocol"
        status = PROTOCOL_RETIRED
    self.protocol[target] = status
    log ProtocolContractSet(target=target, status=status)


@internal
@view
def _only_protocol():
    assert self.protocol[msg.sender] == PROTOCOL_ACTIVE, "NotProtocol"


@internal
@view
def _only_known_protocol():
    assert self.protocol[msg.sender] != 0, "NotProtocol"


@external
def register(endpoint: String[MAX_ENDPOINT]):
    assert not self.nodes[msg.sender].registered, "AlreadyRegistered"
    assert len(endpoint) > 0, "InvalidEndpoint"
    self.nodes[msg.sender].registered = True
    self.nodes[msg.sender].endpoint = endpoint
    self.node_count += 1
    log NodeRegistered(node=msg.sender, endpoint=endpoint)


@external
def set_endpoint(endpoint: String[MAX_ENDPOINT]):
    assert self.nodes[msg.sender].registered, "NotRegistered"
    assert len(endpoint) > 0, "InvalidEndpoint"
    self.nodes[msg.sender].endpoint = endpoint
    log EndpointChanged(node=msg.sender, endpoint=endpoint)


@external
def set_serving(model_ids: DynArray[uint256, MAX_MODELS_PER_CALL], serving: bool):
    assert self.nodes[msg.sender].registered, "NotRegistered"
    for model_id: uint256 in model_ids:
        self.serves[msg.sender][model_id] = serving
        log ModelServed(node=msg.sender, model_id=model_id, serving=serving)


@external
def stake(amount: uint256):
    assert self.nodes[msg.sender].registered, "NotRegistered"
    assert amount > 0, "ZeroAmount"
    self.nodes[msg.sender].stake += amount
    self.nodes[msg.sender].stake_block = block.number
    self.total_stake += amount
    self.total_bonded += amount
    assert extcall TOKEN.transferFrom(msg.sender, self, amount, default_return_value=True), "TransferFailed"
    log Staked(node=msg.sender, amount=amount, stake=self.nodes[msg.sender].stake)


@external
def request_unstake(amount: uint256):
    """
    @notice Moves `amount` of active stake into unbonding. Refused while the node
            holds open assignments: it must finish or forfeit them first.
    """
    node: Node = self.nodes[msg.sender]
    assert node.registered, "NotRegistered"
    assert node.open_assignments == 0, "OpenAssignments"
    assert amount > 0, "ZeroAmount"
    assert amount <= node.stake, "InsufficientStake"
    unbond_at: uint256 = block.timestamp + staticcall PARAMS.unbonding_delay()
    self.nodes[msg.sender].stake = node.stake - amount
    self.nodes[msg.sender].unbonding = node.unbonding + amount
    self.nodes[msg.sender].unbond_at = unbond_at
    self.nodes[msg.sender].stake_block = block.number
    self.total_stake -= amount
    log UnstakeRequested(node=msg.sender, amount=amount, unbond_at=unbond_at)


@external
def withdraw():
    node: Node = self.nodes[msg.sender]
    assert node.unbonding > 0, "NothingToWithdraw"
    assert node.open_assignments == 0, "OpenAssignments"
    assert block.timestamp >= node.unbond_at, "StillUnbonding"
    self.nodes[msg.sender].unbonding = 0
    self.total_bonded -= node.unbonding
    assert extcall TOKEN.transfer(msg.sender, node.unbonding, default_return_value=True), "TransferFailed"
    log Withdrawn(node=msg.sender, amount=node.unbonding)


@external
def assign(node: address):
    self._only_protocol()
    self.nodes[node].open_assignments += 1


@external
def release(node: address):
    self._only_known_protocol()
    self.nodes[node].open_assignments -= 1


@external
def slash(node: address, bps: uint256, recipient: address) -> uint256:
    """
    @notice Takes `bps` of everything `node` has bonded (active first, then unbonding)
            and sends it to `recipient`. Returns the amount taken.
    """
    self._only_known_protocol()
    assert bps <= BPS, "InvalidParam"
    active: uint256 = self.nodes[node].stake
    unbonding: uint256 = self.nodes[node].unbonding
    amount: uint256 = (active + unbonding) * bps // BPS
    if amount == 0:
        return 0
    from_active: uint256 = min(amount, active)
    self.nodes[node].stake = active - from_active
    self.nodes[node].unbonding = unbonding - (amount - from_active)
    self.nodes[node].slashed += amount
    self.total_stake -= from_active
    self.total_bonded -= amount
    assert extcall TOKEN.transfer(recipient, amount, default_return_value=True), "TransferFailed"
    log Slashed(node=node, amount=amount, recipient=recipient, by=msg.sender)
    return amount


@external
@view
def is_eligible(
    node: address, model_id: uint256, seed: bytes32, multiplier: uint256, total: uint256, before_block: uint256
) -> bool:
    """
    @notice Stake-weighted sortition in O(1): the node is drawn when its stake last
            changed before `before_block` (the job's block) and
            keccak(seed, node) mod total < stake * multiplier.
            With multiplier = k * oversample, about oversample * k nodes qualify.
    """
    node_stake: uint256 = self.nodes[node].stake
    if not self.serves[node][model_id] or total == 0:
        return False
    if self.nodes[node].stake_block >= before_block:
        return False
    if node_stake < staticcall PARAMS.min_stake() or node_stake == 0:
        return False
    draw: uint256 = convert(keccak256(abi_encode(seed, node)), uint256) % total
    return draw < node_stake * multiplier


@external
@view
def bonded(node: address) -> uint256:
    return self.nodes[node].stake + self.nodes[node].unbonding
