"""Everything that touches an EVM: the `Chain` seam, its backends and typed contracts.

`EmbeddedChain` (in-process py-evm, the default) and `JsonRpcChain` (any JSON-RPC node,
anvil in tests) implement the same `Chain` protocol; the typed wrappers in
`contracts` work on either.
"""

from verinet.chain._abi import BoundContract, Event
from verinet.chain._accounts import DEV_ETHER, dev_account, dev_accounts
from verinet.chain._backend import Chain, Log, TxReceipt
from verinet.chain._revert import decode_revert
from verinet.chain.contracts import InferenceMarket, ModelRegistry, NodeRegistry, Params, Token
from verinet.chain.deploy import Deployment, deploy_protocol
from verinet.chain.disputes import DisputeGame
from verinet.chain.embedded import EmbeddedChain
from verinet.protocol.receipts import Receipt, recover_signer, sign_receipt, verify_receipt

__all__ = [
    "DEV_ETHER",
    "BoundContract",
    "Chain",
    "Deployment",
    "DisputeGame",
    "EmbeddedChain",
    "Event",
    "InferenceMarket",
    "Log",
    "ModelRegistry",
    "NodeRegistry",
    "Params",
    "Receipt",
    "Token",
    "TxReceipt",
    "decode_revert",
    "deploy_protocol",
    "dev_account",
    "dev_accounts",
    "recover_signer",
    "sign_receipt",
    "verify_receipt",
]
