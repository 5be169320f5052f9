# pragma version ~=0.4.3
"""
@title Verinet token (VNET)
@notice ERC-20 with EIP-2612 permit, taken whole from snekmate's audited module.
        The whole supply is minted to `holder` at deployment; the deployer keeps the
        minter role only if `keep_minter` is set (the devnet uses it for faucets).
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

exports: erc20.__interface__


@deploy
def __init__(initial_supply: uint256, holder: address, keep_minter: bool):
    ownable.__init__()
    erc20.__init__("Verinet", "VNET", 18, "Verinet", "1")
    erc20._mint(holder, initial_supply)
    if not keep_minter:
        erc20.is_minter[msg.sender] = False
