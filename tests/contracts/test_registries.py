"""Token, Params, NodeRegistry and ModelRegistry on the embedded EVM."""

from __future__ import annotations

import pytest

from tests.helpers import addr, assert_nothing_lost, h
from verinet.devnet.bootstrap import TOKEN, Network, placeholder_cid, stake_node
from verinet.errors import (
    AlreadyRegistered,
    InsufficientAllowance,
    InsufficientStake,
    InvalidCid,
    InvalidEndpoint,
    InvalidModes,
    InvalidParam,
    ModelDeprecated,
    NothingToWithdraw,
    NotLatestVersion,
    NotModelOwner,
    NotOwner,
    NotProtocol,
    NotRegistered,
    PermitExpired,
    PermitInvalidSignature,
    UnbondingTooShort,
    UnknownModel,
)
from verinet.protocol.types import Mode
from verinet.types import Address, ModelId, Wei

pytestmark = pytest.mark.contracts


def _spare(net: Network, i: int = 0) -> Address:
    used = {
        a.address for a in (net.deployer, net.treasury, net.model_owner, *net.nodes, *net.clients)
    }
    return Address([a.address for a in net.chain.accounts if a.address not in used][i])


# -- Token ------------------------------------------------------------------


def test_permit_sets_allowance_without_a_transaction_from_the_owner(net: Network) -> None:
    d, owner, spender = net.deployment, net.clients[0], net.clients[1]
    deadline = net.chain.timestamp() + 3600
    v, r, s = d.token.sign_permit(owner, d.market.address, Wei(5 * TOKEN), deadline)
    d.token.permit(
        addr(owner), d.market.address, Wei(5 * TOKEN), deadline, v, r, s, sender=addr(spender)
    )
    assert d.token.allowance(addr(owner), d.market.address) == 5 * TOKEN
    assert d.token.nonces(addr(owner)) == 1
    # The same permit cannot be used twice: the nonce moved on.
    with pytest.raises(PermitInvalidSignature):
        d.token.permit(
            addr(owner), d.market.address, Wei(5 * TOKEN), deadline, v, r, s, sender=addr(spender)
        )


def test_expired_permit_is_refused(net: Network) -> None:
    d, owner = net.deployment, net.clients[0]
    deadline = net.chain.timestamp() - 1
    v, r, s = d.token.sign_permit(owner, d.market.address, Wei(1), deadline)
    with pytest.raises(PermitExpired):
        d.token.permit(addr(owner), d.market.address, Wei(1), deadline, v, r, s, sender=addr(owner))


def test_transfer_from_needs_allowance(net: Network) -> None:
    d = net.deployment
    with pytest.raises(InsufficientAllowance):
        d.token.transfer_from(addr(net.clients[0]), _spare(net), Wei(1), sender=_spare(net))


# -- Params -----------------------------------------------------------------


def test_params_only_owner_and_in_range(net: Network) -> None:
    p, owner = net.deployment.params, addr(net.deployer)
    with pytest.raises(NotOwner):
        p.set_fee_split(100, 100, sender=addr(net.clients[0]))
    with pytest.raises(InvalidParam):
        p.set_fee_split(6_000, 5_000, sender=owner)
    with pytest.raises(InvalidParam):
        p.set_slash(10_001, 0, sender=owner)
    with pytest.raises(InvalidParam):
        p.set_quorum_bounds(3, 16, sender=owner)
    receipt = p.set_fee_split(2_000, 1_000, sender=owner)
    assert p.snapshot().owner_bps == 2_000
    assert {e.args["name"] for e in p.events(receipt, "ParamsChanged")} == {
        "owner_bps",
        "treasury_bps",
    }


def test_unbonding_must_outlast_every_window(net: Network) -> None:
    p, owner = net.deployment.params, addr(net.deployer)
    span = p.dispute_span()
    assert span == 43 * p.snapshot().move_timeout + p.snapshot().vote_window
    with pytest.raises(UnbondingTooShort):
        p.set_windows(100, 100, 100, 100, 400 + span, sender=owner)
    p.set_windows(100, 100, 100, 100, 401 + span, sender=owner)
    assert p.snapshot().unbonding_delay == 401 + span
    # Longer disputes must fit in the unbonding delay too.
    s = p.snapshot()
    with pytest.raises(UnbondingTooShort):
        p.set_disputes(
            s.challenge_bond, s.move_timeout + 1, s.vote_window, 3, 5_000, 2_000, sender=owner
        )
    # Deadlines are packed into 64 bits on-chain: absurd windows are refused outright.
    with pytest.raises(InvalidParam):
        p.set_windows(100, 100, 100, 100, 2**32 + 1, sender=owner)


# -- NodeRegistry -----------------------------------------------------------


def test_registration_is_permissionless_once(net: Network) -> None:
    d, newcomer = net.deployment, _spare(net)
    with pytest.raises(NotRegistered):
        d.nodes.stake(Wei(1), sender=newcomer)
    with pytest.raises(InvalidEndpoint):
        d.nodes.register("", sender=newcomer)
    d.nodes.register("http://127.0.0.1:9999", sender=newcomer)
    with pytest.raises(AlreadyRegistered):
        d.nodes.register("http://127.0.0.1:9999", sender=newcomer)
    assert d.nodes.node(newcomer).endpoint == "http://127.0.0.1:9999"


def test_only_protocol_contracts_slash_or_assign(net: Network) -> None:
    d, victim = net.deployment, addr(net.nodes[0])
    for caller in (addr(net.deployer), addr(net.clients[0]), victim):
        with pytest.raises(NotProtocol):
            d.nodes._send("slash", victim, 10_000, caller, sender=caller)
        with pytest.raises(NotProtocol):
            d.nodes._send("assign", victim, sender=caller)
    assert d.nodes.node(victim).slashed == 0


def test_unstake_cannot_exceed_stake_and_withdraw_needs_unbonding(net: Network) -> None:
    d, node = net.deployment, addr(net.nodes[0])
    stake = d.nodes.node(node).stake
    with pytest.raises(InsufficientStake):
        d.nodes.request_unstake(Wei(stake + 1), sender=node)
    with pytest.raises(NothingToWithdraw):
        d.nodes.withdraw(sender=node)
    d.nodes.request_unstake(Wei(stake // 2), sender=node)
    assert d.nodes.total_stake() == len(net.nodes) * stake - stake // 2
    assert d.nodes.total_bonded() == len(net.nodes) * stake
    assert_nothing_lost(net)


def test_under_min_stake_or_not_serving_is_never_eligible(net: Network) -> None:
    d, client, newcomer = net.deployment, net.clients[0], net.chain.accounts[-1]
    d.token.transfer(Address(newcomer.address), Wei(100 * TOKEN), sender=addr(net.deployer))
    floor = d.params.snapshot().min_stake
    stake_node(
        d, newcomer, endpoint="http://127.0.0.1:9", stake=Wei(floor - 1), models=[net.model_id]
    )
    job_id, _ = d.market.request(net.model_id, h("e"), Mode.SIGNED, 1, sender=addr(client))
    for _ in range(17):  # past every selection round: the draw is now certain for staked nodes
        net.chain.advance_time(d.params.snapshot().selection_round)
    assert not d.market.is_eligible(job_id, Address(newcomer.address))
    assert all(d.market.is_eligible(job_id, addr(n)) for n in net.nodes)
    d.nodes.set_serving([net.model_id], False, sender=addr(net.nodes[0]))
    assert not d.market.is_eligible(job_id, addr(net.nodes[0]))


# -- ModelRegistry ----------------------------------------------------------


def test_publish_versions_and_deprecate(net: Network) -> None:
    m, owner, other = net.deployment.models, addr(net.model_owner), addr(net.clients[0])
    v1, _ = m.publish(
        placeholder_cid("a"), placeholder_cid("a.json"), Wei(7), Mode.SIGNED, sender=owner
    )
    with pytest.raises(NotModelOwner):
        m.publish_version(
            v1, placeholder_cid("b"), placeholder_cid("b.json"), Wei(7), Mode.SIGNED, sender=other
        )
    v2, _ = m.publish_version(
        v1, placeholder_cid("b"), placeholder_cid("b.json"), Wei(9), Mode.QUORUM, sender=owner
    )
    with pytest.raises(NotLatestVersion):
        m.publish_version(
            v1, placeholder_cid("c"), placeholder_cid("c.json"), Wei(9), Mode.QUORUM, sender=owner
        )
    info = m.model(v2)
    assert (info.version, info.family, info.fee, info.modes) == (2, v1, 9, Mode.QUORUM)
    assert info.model_cid == placeholder_cid("b")
    assert m.latest(v1) == v2
    m.deprecate(v1, sender=owner)
    with pytest.raises(ModelDeprecated):
        net.deployment.market.request(v1, h("x"), Mode.SIGNED, 1, sender=addr(net.clients[0]))
    with pytest.raises(UnknownModel):
        net.deployment.market.request(
            ModelId(999), h("x"), Mode.SIGNED, 1, sender=addr(net.clients[0])
        )


def test_publish_refuses_bad_cids_and_modes(net: Network) -> None:
    m, owner = net.deployment.models, addr(net.model_owner)
    with pytest.raises(InvalidCid):
        m.publish(
            b"\x00" + placeholder_cid("x")[1:],
            placeholder_cid("m"),
            Wei(1),
            Mode.SIGNED,
            sender=owner,
        )
    with pytest.raises(InvalidCid):
        m.publish(
            placeholder_cid("x")[:20], placeholder_cid("m"), Wei(1), Mode.SIGNED, sender=owner
        )
    with pytest.raises(InvalidModes):
        m.publish(placeholder_cid("x"), placeholder_cid("m"), Wei(1), Mode(0), sender=owner)
    with pytest.raises(InvalidModes):
        m._send("publish", placeholder_cid("x"), placeholder_cid("m"), 1, 16, sender=owner)
