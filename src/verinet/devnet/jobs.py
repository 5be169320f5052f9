"""Drive whole jobs through the market by hand (no node daemon yet): request, commit,
reveal or sign, finalize. The tour, the benchmarks and the tests use these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from verinet.chain._backend import TxReceipt
from verinet.devnet.bootstrap import Network
from verinet.protocol.receipts import Receipt, sign_receipt
from verinet.protocol.rules import commitment
from verinet.protocol.types import Job, Mode
from verinet.types import Address, Hash32, JobId


@dataclass(slots=True)
class JobRun:
    """A job driven to its end, with every transaction it took."""

    job_id: JobId
    job: Job | None = None
    receipt: Receipt | None = None
    transactions: list[tuple[str, TxReceipt]] = field(default_factory=list)

    @property
    def gas(self) -> int:
        return sum(r.gas_used for _, r in self.transactions)


def drawn_nodes(net: Network, job_id: JobId, want: int) -> list[LocalAccount]:
    """Nodes drawn for the job; moves the clock a selection round at a time until enough are."""
    market, params = net.deployment.market, net.deployment.params
    for _ in range(20):
        drawn = [n for n in net.nodes if market.is_eligible(job_id, Address(n.address))]
        if len(drawn) >= want:
            return drawn[:want]
        net.chain.advance_time(params.selection_round())
    raise RuntimeError(f"fewer than {want} nodes were ever drawn for job {job_id}")


def sign_for(
    net: Network, node: LocalAccount, job_id: JobId, input_hash: Hash32, output_hash: Hash32
) -> Receipt:
    """`node`'s EIP-712 receipt for a job on `net`'s market and model."""
    return sign_receipt(
        node,
        chain_id=net.chain.chain_id,
        market=net.deployment.market.address,
        job_id=job_id,
        model_id=net.model_id,
        input_hash=input_hash,
        output_hash=output_hash,
    )


def run_signed(
    net: Network, client: LocalAccount, input_hash: Hash32, output_hash: Hash32
) -> JobRun:
    """A signed job: a drawn node signs an EIP-712 receipt, the client submits it, finalizes."""
    d = net.deployment
    sender = Address(client.address)
    job_id, receipt = d.market.request(net.model_id, input_hash, Mode.SIGNED, 1, sender=sender)
    run = JobRun(job_id, transactions=[("request", receipt)])
    (node,) = drawn_nodes(net, job_id, 1)
    signed = sign_for(net, node, job_id, input_hash, output_hash)
    run.receipt = signed
    run.transactions.append(("submit_receipt", d.market.submit_receipt(signed, sender=sender)))
    finalize_after_hold(net, job_id)
    run.transactions.append(("finalize", d.market.finalize(job_id, sender=sender)))
    run.job = d.market.job(job_id)
    return run


def finalize_after_hold(net: Network, job_id: JobId) -> None:
    """Move a dev chain past a submitted job's hold when it has one: a signed job drawn for
    audit (the draw is decided from the block after the receipt's), an optimistic claim."""
    market = net.deployment.market
    # While the receipt's block is the latest, the draw is open and `finalizable` says yes;
    # the finalize's own block would decide it. Mine a block first, so it is decided now.
    if market.claim_of(job_id).submit_block >= net.chain.block_number():
        net.chain.advance_time(0)
    if not market.finalizable(job_id):
        hold = market.job(job_id).finalize_after
        net.chain.advance_time(max(0, hold - net.chain.timestamp()) + 1)


def run_quorum(
    net: Network,
    client: LocalAccount,
    input_hash: Hash32,
    k: int,
    answer: Callable[[int], Hash32 | None],
) -> JobRun:
    """A quorum(k) job: k drawn nodes commit, then reveal `answer(seat)` (None: no-show).

    When some seat does not reveal, the clock is moved past the reveal deadline before
    finalize, as it would be in real time.
    """
    d = net.deployment
    sender = Address(client.address)
    job_id, receipt = d.market.request(net.model_id, input_hash, Mode.QUORUM, k, sender=sender)
    run = JobRun(job_id, transactions=[("request", receipt)])
    seated = drawn_nodes(net, job_id, k)
    salts = [os.urandom(32) for _ in seated]
    answers: Sequence[Hash32 | None] = [answer(i) for i in range(len(seated))]
    for node, salt, out in zip(seated, salts, answers, strict=True):
        c = commitment(out or Hash32(keccak(b"never revealed")), salt, Address(node.address))
        run.transactions.append(
            ("commit", d.market.commit(job_id, c, sender=Address(node.address)))
        )
    for node, salt, out in zip(seated, salts, answers, strict=True):
        if out is not None:
            tx = d.market.reveal(job_id, out, salt, sender=Address(node.address))
            run.transactions.append(("reveal", tx))
    if not d.market.finalizable(job_id):
        job = d.market.job(job_id)
        net.chain.advance_time(max(0, job.reveal_deadline - net.chain.timestamp()) + 1)
    run.transactions.append(("finalize", d.market.finalize(job_id, sender=sender)))
    run.job = d.market.job(job_id)
    return run


def run_quorum_receipts(
    net: Network,
    client: LocalAccount,
    input_hash: Hash32,
    k: int,
    answer: Callable[[int], Hash32],
) -> JobRun:
    """A quorum(k) job on the fast path: k drawn nodes sign receipts for `answer(seat)`,
    and the client settles them all in one `submit_quorum` transaction."""
    d = net.deployment
    sender = Address(client.address)
    job_id, receipt = d.market.request(net.model_id, input_hash, Mode.QUORUM, k, sender=sender)
    run = JobRun(job_id, transactions=[("request", receipt)])
    seated = drawn_nodes(net, job_id, k)
    receipts = [sign_for(net, node, job_id, input_hash, answer(i)) for i, node in enumerate(seated)]
    run.transactions.append(("submit_quorum", d.market.submit_quorum(receipts, sender=sender)))
    run.job = d.market.job(job_id)
    return run
