"""Replay and forgery: receipts from another chain, another contract, high-s, wrong signer.

Each forgery is refused twice: off-chain by `verify_receipt` and on-chain by
InferenceMarket.submit_receipt.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import addr, h
from verinet.devnet.bootstrap import Network
from verinet.errors import (
    InvalidSignature,
    JobNotOpen,
    MalleableSignature,
    ReceiptMalleable,
    ReceiptWrongDomain,
    ReceiptWrongSigner,
    WrongSigner,
)
from verinet.protocol.receipts import SECP256K1_N, Receipt, sign_receipt, verify_receipt
from verinet.protocol.types import JobState, Mode
from verinet.types import Address, JobId

pytestmark = pytest.mark.contracts


def _job_and_receipt(net: Network, **overrides: object) -> tuple[JobId, Receipt]:
    d, client = net.deployment, net.clients[0]
    job_id, _ = d.market.request(net.model_id, h("in"), Mode.SIGNED, 1, sender=addr(client))
    node = next(n for n in net.nodes if d.market.is_eligible(job_id, addr(n)))
    fields: dict[str, object] = {
        "chain_id": net.chain.chain_id,
        "market": d.market.address,
        "job_id": job_id,
        "model_id": net.model_id,
        "input_hash": h("in"),
        "output_hash": h("out"),
    }
    fields.update(overrides)
    return job_id, sign_receipt(node, **fields)  # type: ignore[arg-type]


def _high_s(receipt: Receipt) -> Receipt:
    sig = receipt.signature
    s = int.from_bytes(sig[32:64], "big")
    v = 27 if sig[64] == 28 else 28
    twin = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([v])
    return dataclasses.replace(receipt, signature=twin)


def test_honest_receipt_verifies_and_settles(net: Network) -> None:
    d = net.deployment
    job_id, receipt = _job_and_receipt(net)
    assert (
        verify_receipt(receipt, chain_id=net.chain.chain_id, market=d.market.address)
        == receipt.node
    )
    d.market.submit_receipt(receipt, sender=addr(net.clients[0]))
    assert d.market.job(job_id).state is JobState.SUBMITTED


def test_receipt_for_another_chain_is_rejected(net: Network) -> None:
    d = net.deployment
    job_id, receipt = _job_and_receipt(net, chain_id=net.chain.chain_id + 1)
    with pytest.raises(ReceiptWrongDomain):
        verify_receipt(receipt, chain_id=net.chain.chain_id, market=d.market.address)
    # Relabelled as ours, the signature no longer recovers to the node.
    relabelled = dataclasses.replace(receipt, chain_id=net.chain.chain_id)
    with pytest.raises(ReceiptWrongSigner):
        verify_receipt(relabelled, chain_id=net.chain.chain_id, market=d.market.address)
    with pytest.raises(WrongSigner):
        d.market.submit_receipt(receipt, sender=addr(net.clients[0]))
    assert d.market.job(job_id).state is JobState.OPEN


def test_receipt_for_another_contract_is_rejected(net: Network) -> None:
    d = net.deployment
    other = d.nodes.address  # any other contract address
    job_id, receipt = _job_and_receipt(net, market=other)
    with pytest.raises(ReceiptWrongDomain):
        verify_receipt(receipt, chain_id=net.chain.chain_id, market=d.market.address)
    with pytest.raises(WrongSigner):
        d.market.submit_receipt(receipt, sender=addr(net.clients[0]))
    assert d.market.job(job_id).state is JobState.OPEN


def test_high_s_twin_is_rejected(net: Network) -> None:
    d = net.deployment
    job_id, receipt = _job_and_receipt(net)
    twin = _high_s(receipt)
    with pytest.raises(ReceiptMalleable):
        verify_receipt(twin, chain_id=net.chain.chain_id, market=d.market.address)
    with pytest.raises(MalleableSignature):
        d.market.submit_receipt(twin, sender=addr(net.clients[0]))
    assert d.market.job(job_id).state is JobState.OPEN


def test_wrong_signer_is_rejected(net: Network) -> None:
    d = net.deployment
    job_id, receipt = _job_and_receipt(net)
    impostor = Address(next(n.address for n in net.nodes if n.address != receipt.node))
    forged = dataclasses.replace(receipt, node=impostor)
    with pytest.raises(ReceiptWrongSigner):
        verify_receipt(forged, chain_id=net.chain.chain_id, market=d.market.address)
    with pytest.raises(WrongSigner):
        d.market.submit_receipt(forged, sender=addr(net.clients[0]))
    assert d.market.job(job_id).state is JobState.OPEN


def test_tampered_output_is_rejected(net: Network) -> None:
    d = net.deployment
    _, receipt = _job_and_receipt(net)
    tampered = dataclasses.replace(receipt, output_hash=h("something else"))
    with pytest.raises(ReceiptWrongSigner):
        verify_receipt(tampered, chain_id=net.chain.chain_id, market=d.market.address)
    with pytest.raises(WrongSigner):
        d.market.submit_receipt(tampered, sender=addr(net.clients[0]))


def test_truncated_signature_is_rejected(net: Network) -> None:
    d = net.deployment
    _, receipt = _job_and_receipt(net)
    short = dataclasses.replace(receipt, signature=receipt.signature[:64])
    with pytest.raises(InvalidSignature):
        d.market.submit_receipt(short, sender=addr(net.clients[0]))


def test_replayed_receipt_is_rejected(net: Network) -> None:
    d = net.deployment
    job_id, receipt = _job_and_receipt(net)
    d.market.submit_receipt(receipt, sender=addr(net.clients[0]))
    with pytest.raises(JobNotOpen):
        d.market.submit_receipt(receipt, sender=addr(net.clients[0]))
    # Nor can it settle a later job for the same input: the job id is signed.
    job2, _ = d.market.request(net.model_id, h("in"), Mode.SIGNED, 1, sender=addr(net.clients[0]))
    replay = dataclasses.replace(receipt, job_id=job2)
    with pytest.raises(WrongSigner):
        d.market.submit_receipt(replay, sender=addr(net.clients[0]))
    assert d.market.job(job2).state is JobState.OPEN
    assert d.market.job(job_id).state is JobState.SUBMITTED
