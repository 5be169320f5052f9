"""Stand up a small protocol on any chain: deploy, fund, register and stake nodes, publish models.

Used by the devnet, the demo tour, the tests and the benchmarks, so all of them start
from the same, realistic state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from verinet.chain._backend import Chain
from verinet.chain.deploy import Deployment, deploy_protocol
from verinet.hub import cid as cids
from verinet.protocol.types import Mode
from verinet.types import Address, ModelId, Wei

TOKEN = 10**18
MAX_UINT = 2**256 - 1
DEFAULT_STAKE = Wei(1_000 * TOKEN)
DEFAULT_FEE = Wei(TOKEN)


def placeholder_cid(label: str) -> bytes:
    """The binary CIDv1 (raw codec, sha2-256) of the text `label`, for registry entries that
    stand for a model without a file behind them (contract tests, the tour)."""
    return cids.to_bytes(cids.cid_of(label.encode()))


@dataclass(frozen=True, slots=True)
class Network:
    """A deployed protocol with its roles: who deployed, who serves, who asks, who owns models."""

    deployment: Deployment
    deployer: LocalAccount
    treasury: LocalAccount
    nodes: tuple[LocalAccount, ...]
    clients: tuple[LocalAccount, ...]
    model_owner: LocalAccount
    model_id: ModelId

    @property
    def chain(self) -> Chain:
        return self.deployment.chain


def fund(
    deployment: Deployment, source: Address, accounts: Sequence[LocalAccount], amount: Wei
) -> None:
    for account in accounts:
        deployment.token.transfer(Address(account.address), amount, sender=source)


def stake_node(
    deployment: Deployment,
    node: LocalAccount,
    *,
    endpoint: str,
    stake: Wei,
    models: Sequence[ModelId] = (),
) -> None:
    address = Address(node.address)
    deployment.nodes.register(endpoint, sender=address)
    deployment.token.approve(deployment.nodes.address, stake, sender=address)
    deployment.nodes.stake(stake, sender=address)
    if models:
        deployment.nodes.set_serving(list(models), True, sender=address)


def bootstrap(
    chain: Chain,
    *,
    nodes: int = 4,
    clients: int = 2,
    stake: Wei = DEFAULT_STAKE,
    fee: Wei = DEFAULT_FEE,
    modes: Mode = Mode.SIGNED | Mode.QUORUM | Mode.OPTIMISTIC,
) -> Network:
    """Deploy the protocol and bring up `nodes` staked nodes serving one published model.

    Accounts are taken from `chain.accounts` in order: deployer, treasury, model owner,
    the nodes, then the clients; it needs 3 + nodes + clients of them.
    """
    accounts = list(chain.accounts)
    need = 3 + nodes + clients
    if len(accounts) < need:
        raise ValueError(f"bootstrap needs {need} accounts, the chain has {len(accounts)}")
    deployer, treasury, owner = accounts[0], accounts[1], accounts[2]
    node_accounts = tuple(accounts[3 : 3 + nodes])
    client_accounts = tuple(accounts[3 + nodes : need])
    deployment = deploy_protocol(
        chain, deployer=Address(deployer.address), treasury=Address(treasury.address)
    )
    model_id, _ = deployment.models.publish(
        placeholder_cid("sample model"),
        placeholder_cid("sample manifest"),
        fee,
        modes,
        sender=Address(owner.address),
    )
    fund(deployment, Address(deployer.address), node_accounts, Wei(stake * 2))
    fund(deployment, Address(deployer.address), client_accounts, Wei(10_000 * TOKEN))
    for i, node in enumerate(node_accounts):
        stake_node(
            deployment,
            node,
            endpoint=f"http://127.0.0.1:{9100 + i}",
            stake=stake,
            models=[model_id],
        )
    for client in client_accounts:
        deployment.token.approve(
            deployment.market.address, Wei(MAX_UINT), sender=Address(client.address)
        )
    return Network(
        deployment=deployment,
        deployer=deployer,
        treasury=treasury,
        nodes=node_accounts,
        clients=client_accounts,
        model_owner=owner,
        model_id=model_id,
    )
