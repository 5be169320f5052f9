"""EIP-712 receipts: a node's signed word that it computed `output_hash` for a job.

Domain: name "Verinet Market", version "1", the chain id and the market contract, so
a receipt is worthless on any other chain or contract. Signatures are 65 bytes
(r ‖ s ‖ v) with low s; anything else is refused, here and on-chain.

A quorum node hands its receipt to the job's requester alone (who settles k of them at
once with `submit_quorum`): the requester asks with a `ReceiptRequest` signed in the same
domain and naming the node, so a node cannot forward the request to a peer and read the
peer's answer before committing its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

from verinet.errors import InvalidReceipt, ReceiptMalleable, ReceiptWrongDomain, ReceiptWrongSigner
from verinet.types import Address, Hash32, JobId, ModelId

DOMAIN_NAME = "Verinet Market"
DOMAIN_VERSION = "1"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = SECP256K1_N // 2

RECEIPT_TYPES = {
    "Receipt": [
        {"name": "jobId", "type": "uint256"},
        {"name": "modelId", "type": "uint256"},
        {"name": "inputHash", "type": "bytes32"},
        {"name": "outputHash", "type": "bytes32"},
        {"name": "node", "type": "address"},
    ]
}


RECEIPT_REQUEST_TYPES = {
    "ReceiptRequest": [
        {"name": "jobId", "type": "uint256"},
        {"name": "node", "type": "address"},
    ]
}


@dataclass(frozen=True, slots=True)
class Receipt:
    """A signed receipt, with the domain it was signed for."""

    chain_id: int
    market: Address
    job_id: JobId
    model_id: ModelId
    input_hash: Hash32
    output_hash: Hash32
    node: Address
    signature: bytes


def _domain(chain_id: int, market: Address) -> dict[str, Any]:
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(market),
    }


def _message(
    job_id: JobId, model_id: ModelId, input_hash: Hash32, output_hash: Hash32, node: Address
) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "modelId": model_id,
        "inputHash": bytes(input_hash),
        "outputHash": bytes(output_hash),
        "node": to_checksum_address(node),
    }


def _signable(receipt: Receipt) -> SignableMessage:
    return encode_typed_data(
        domain_data=_domain(receipt.chain_id, receipt.market),
        message_types=RECEIPT_TYPES,
        message_data=_message(
            receipt.job_id, receipt.model_id, receipt.input_hash, receipt.output_hash, receipt.node
        ),
    )


def receipt_digest(receipt: Receipt) -> Hash32:
    """The 32-byte EIP-712 digest (what InferenceMarket.receipt_digest returns)."""
    signable = _signable(receipt)
    return Hash32(keccak(b"\x19" + signable.version + signable.header + signable.body))


def sign_receipt(
    account: LocalAccount,
    *,
    chain_id: int,
    market: Address,
    job_id: JobId,
    model_id: ModelId,
    input_hash: Hash32,
    output_hash: Hash32,
) -> Receipt:
    """Sign a receipt as `account` (the node). eth-account always produces low s."""
    node = Address(account.address)
    signed = account.sign_typed_data(
        domain_data=_domain(chain_id, market),
        message_types=RECEIPT_TYPES,
        message_data=_message(job_id, model_id, input_hash, output_hash, node),
    )
    return Receipt(
        chain_id=chain_id,
        market=Address(to_checksum_address(market)),
        job_id=job_id,
        model_id=model_id,
        input_hash=input_hash,
        output_hash=output_hash,
        node=node,
        signature=bytes(signed.signature),
    )


def recover_signer(receipt: Receipt) -> Address:
    """The address that signed `receipt`, refusing malformed and malleable signatures."""
    sig = receipt.signature
    if len(sig) != 65:
        raise InvalidReceipt(f"signature must be 65 bytes (r, s, v), got {len(sig)}")
    s = int.from_bytes(sig[32:64], "big")
    v = sig[64]
    if s > HALF_N:
        raise ReceiptMalleable("signature s is in the upper half of the curve order; use low-s")
    if v not in (27, 28):
        raise InvalidReceipt(f"signature v must be 27 or 28, got {v}")
    return _recover(_signable(receipt), sig)


def _recover(signable: SignableMessage, signature: bytes) -> Address:
    """The signer of `signable`; `InvalidReceipt` for a signature no key made (r or s zero or
    over the curve order, a point not on the curve), whatever the library raises for it."""
    try:
        return Address(Account.recover_message(signable, signature=signature))
    except (ValueError, TypeError, BadSignature, ValidationError) as exc:
        raise InvalidReceipt(
            f"the signature does not recover to any key ({type(exc).__name__}); sign again"
        ) from None


def verify_receipt(receipt: Receipt, *, chain_id: int, market: Address) -> Address:
    """Check `receipt` was made for this chain and market and signed by its node.

    Returns the node's address; raises an `InvalidReceipt` subclass otherwise.
    """
    if receipt.chain_id != chain_id or to_checksum_address(receipt.market) != to_checksum_address(
        market
    ):
        raise ReceiptWrongDomain(
            f"receipt is for chain {receipt.chain_id} / market {receipt.market}, "
            f"expected chain {chain_id} / market {market}"
        )
    signer = recover_signer(receipt)
    if str(signer) != str(to_checksum_address(receipt.node)):
        raise ReceiptWrongSigner(f"receipt names node {receipt.node} but was signed by {signer}")
    return signer


def sign_receipt_request(
    account: LocalAccount, *, chain_id: int, market: Address, job_id: JobId, node: Address
) -> bytes:
    """The requester's signed ask for `node`'s receipt of `job_id` (65 bytes)."""
    signed = account.sign_typed_data(
        domain_data=_domain(chain_id, market),
        message_types=RECEIPT_REQUEST_TYPES,
        message_data={"jobId": job_id, "node": to_checksum_address(node)},
    )
    return bytes(signed.signature)


def receipt_requester(
    signature: bytes, *, chain_id: int, market: Address, job_id: JobId, node: Address
) -> Address:
    """Who signed a `ReceiptRequest` for `node` and `job_id`; raises `InvalidReceipt` for a
    malformed or malleable signature."""
    if len(signature) != 65:
        raise InvalidReceipt(f"signature must be 65 bytes (r, s, v), got {len(signature)}")
    if int.from_bytes(signature[32:64], "big") > HALF_N:
        raise ReceiptMalleable("signature s is in the upper half of the curve order; use low-s")
    signable = encode_typed_data(
        domain_data=_domain(chain_id, market),
        message_types=RECEIPT_REQUEST_TYPES,
        message_data={"jobId": job_id, "node": to_checksum_address(node)},
    )
    if signature[64] not in (27, 28):
        raise InvalidReceipt(f"signature v must be 27 or 28, got {signature[64]}")
    return _recover(signable, signature)
