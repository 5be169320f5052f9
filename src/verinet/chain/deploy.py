"""Deploy and wire the whole protocol on any `Chain`."""

from __future__ import annotations

from dataclasses import dataclass

from verinet.chain._abi import deploy_contract
from verinet.chain._backend import Chain
from verinet.chain.contracts import InferenceMarket, ModelRegistry, NodeRegistry, Params, Token
from verinet.chain.disputes import DisputeGame
from verinet.types import Address, Wei

DEFAULT_SUPPLY = Wei(1_000_000_000 * 10**18)


@dataclass(frozen=True, slots=True)
class Deployment:
    """The six protocol contracts of one Verinet deployment."""

    chain: Chain
    token: Token
    params: Params
    nodes: NodeRegistry
    models: ModelRegistry
    market: InferenceMarket
    disputes: DisputeGame

    def addresses(self) -> dict[str, Address]:
        return {
            "Token": self.token.address,
            "Params": self.params.address,
            "NodeRegistry": self.nodes.address,
            "ModelRegistry": self.models.address,
            "InferenceMarket": self.market.address,
            "DisputeGame": self.disputes.address,
        }

    @classmethod
    def at(cls, chain: Chain, addresses: dict[str, Address]) -> Deployment:
        """Attach to contracts already deployed at `addresses` (as `addresses()` gives)."""
        return cls(
            chain=chain,
            token=Token(chain, addresses["Token"]),
            params=Params(chain, addresses["Params"]),
            nodes=NodeRegistry(chain, addresses["NodeRegistry"]),
            models=ModelRegistry(chain, addresses["ModelRegistry"]),
            market=InferenceMarket(chain, addresses["InferenceMarket"]),
            disputes=DisputeGame(chain, addresses["DisputeGame"]),
        )


def deploy_protocol(
    chain: Chain,
    *,
    deployer: Address,
    treasury: Address | None = None,
    supply: Wei = DEFAULT_SUPPLY,
    keep_minter: bool = False,
) -> Deployment:
    """Deploy Token, Params, NodeRegistry, ModelRegistry, InferenceMarket and DisputeGame
    and wire them.

    The whole token supply goes to `deployer`; the market and the dispute game are made
    the registry's protocol contracts (the market assigns, releases and slashes; the game
    slashes the loser of a dispute), and the market is told its dispute game.
    """
    treasury = treasury or deployer
    token, _ = deploy_contract(
        chain,
        "Token",
        ["uint256", "address", "bool"],
        [supply, deployer, keep_minter],
        sender=deployer,
    )
    params, _ = deploy_contract(chain, "Params", ["address"], [treasury], sender=deployer)
    nodes, _ = deploy_contract(
        chain, "NodeRegistry", ["address", "address"], [token, params], sender=deployer
    )
    models, _ = deploy_contract(chain, "ModelRegistry", [], [], sender=deployer)
    market, _ = deploy_contract(
        chain,
        "InferenceMarket",
        ["address", "address", "address", "address"],
        [token, params, nodes, models],
        sender=deployer,
    )
    disputes, _ = deploy_contract(
        chain,
        "DisputeGame",
        ["address", "address", "address", "address", "address"],
        [token, params, nodes, models, market],
        sender=deployer,
    )
    deployment = Deployment.at(
        chain,
        {
            "Token": token,
            "Params": params,
            "NodeRegistry": nodes,
            "ModelRegistry": models,
            "InferenceMarket": market,
            "DisputeGame": disputes,
        },
    )
    deployment.nodes.set_protocol(market, True, sender=deployer)
    deployment.nodes.set_protocol(disputes, True, sender=deployer)
    deployment.market.set_dispute_game(disputes, sender=deployer)
    return deployment
