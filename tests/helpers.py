"""Assertions, hand-assembled bytecode and a hostile HTTP endpoint shared by the tests."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from verinet.chain.deploy import Deployment
from verinet.devnet.bootstrap import MAX_UINT, TOKEN, Network, fund, stake_node
from verinet.node.db import JobRecord, Stage
from verinet.protocol.types import JobState, Mode
from verinet.types import Address, Hash32, JobId, ModelId, Wei

if TYPE_CHECKING:
    from verinet.verification.zk import ZkProof


def h(label: str) -> Hash32:
    return Hash32(keccak(text=label))


def addr(account: object) -> Address:
    return Address(account.address)  # type: ignore[attr-defined]


def assert_nothing_lost(net: Network) -> None:
    """The escrow audit: every token the market and registry hold is accounted for.

    market balance == open escrows + what it owes; registry balance == everything
    bonded; and for every job, payouts + refund + fees == escrow (checked from events).
    """
    d = net.deployment
    assert d.token.balance_of(d.market.address) == d.market.total_escrow() + d.market.total_owed()
    assert d.token.balance_of(d.nodes.address) == d.nodes.total_bonded()
    # The dispute game holds the bonds of open games and what it owes (bonds back, rewards).
    assert (
        d.token.balance_of(d.disputes.address) == d.disputes.total_bonds() + d.disputes.total_owed()
    )
    assert d.token.total_supply() == 1_000_000_000 * 10**18
    open_escrow = 0
    paid = {e.args["job_id"]: e.args for e in d.market.history("JobPaid")}
    refunded = {e.args["job_id"]: e.args for e in d.market.history("JobRefunded")}
    for job_id in range(1, d.market.job_count() + 1):
        job = d.market.job(JobId(job_id))
        if job.state is JobState.PAID:
            p = paid[job_id]
            total = p["node_amount"] * p["winners"] + p["owner_amount"] + p["treasury_amount"]
            assert total == job.escrow, f"job {job_id}: paid {total} of escrow {job.escrow}"
            assert job_id not in refunded
        elif job.state is JobState.REFUNDED:
            assert refunded[job_id]["amount"] == job.escrow
            assert job_id not in paid
        else:
            open_escrow += job.escrow
    assert open_escrow == d.market.total_escrow()


# Hand-assembled contracts for chain-backend tests.
NOT_ELIGIBLE = bytes.fromhex("08c379a0") + encode(["string"], ["NotEligible"])
"""ABI `Error(string)` revert data for the reason code NotEligible (100 bytes)."""
# Succeeds when GASPRICE is 0 (eth_estimateGas without fees), else reverts NotEligible:
# a transaction that estimates fine and is then mined with status 0.
# GASPRICE ISZERO PUSH1 0x0f JUMPI <revert stub, data at 0x11> JUMPDEST STOP <data>
REVERTS_WHEN_PAID = bytes.fromhex("3a15600f57606460115f3960645ffd5b00") + NOT_ELIGIBLE


def init_code(runtime: bytes) -> bytes:
    """Init code that returns `runtime`: CODECOPY it from behind this 12-byte stub."""
    size = len(runtime).to_bytes(2, "big")
    return (
        b"\x61"
        + size
        + bytes.fromhex("600c5f39")
        + b"\x61"
        + size
        + bytes.fromhex("5ff3")
        + runtime
    )


DEEP_JSON = b"[" * 200_000
"""JSON nested past json's C stack once py-evm has raised the recursion limit."""


@dataclass
class Hostile:
    url: str = ""
    answered: int = 0


@contextmanager
def deep_json_server(*methods: str) -> Iterator[Hostile]:
    """An HTTP endpoint on a free loopback port that answers `methods` ("GET", "POST") with
    `DEEP_JSON` and any other with 503; `answered` counts the deep answers."""
    state = Hostile()

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.command not in methods:
                self.send_error(503)
                return
            state.answered += 1
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(DEEP_JSON)))
            self.end_headers()
            self.wfile.write(DEEP_JSON)

        do_GET = do_POST = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def after_killing_parent(program: str, ready: bytes) -> bytes:
    """Run Python `program` as a parent whose children share its stdin and stdout pipes; once
    one line `ready` is read, SIGKILL the parent and return all the children print until
    every holder of the pipe has exited (EOF). The test holds stdin open, so a child blocked
    on it ends only by its own doing."""
    parent = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert parent.stdin is not None and parent.stdout is not None
    try:
        assert parent.stdout.readline() == ready
        parent.kill()
        parent.wait()
        return parent.stdout.read()
    finally:
        parent.kill()
        parent.stdin.close()
        parent.stdout.close()


def tampered(proof: ZkProof, *, byte: int | None = None, instance: int | None = None) -> ZkProof:
    """`proof` with one bit of its byte `byte` flipped, or its instance `instance` moved by
    one (within the field)."""
    from verinet.verification.zk import FIELD_MODULUS  # ezkl: loaded by zk tests only

    if byte is not None:
        raw = bytearray(proof.proof)
        raw[byte] ^= 0x01
        return replace(proof, proof=bytes(raw))
    assert instance is not None
    values = list(proof.instances)
    values[instance] = (values[instance] + 1) % FIELD_MODULUS
    return replace(proof, instances=tuple(values))


def stake_for_model(
    d: Deployment,
    deployer: Address,
    nodes: list[LocalAccount],
    client: LocalAccount,
    model_id: ModelId,
) -> None:
    """Nodes funded and staked 1,000 tokens each to serve `model_id` (placeholder endpoints
    http://127.0.0.1:1, :2, ...), and `client` funded 1,000 tokens with the market approved."""
    fund(d, deployer, nodes, Wei(2_000 * TOKEN))
    fund(d, deployer, [client], Wei(1_000 * TOKEN))
    d.token.approve(d.market.address, Wei(MAX_UINT), sender=Address(client.address))
    for i, node in enumerate(nodes):
        stake_node(
            d,
            node,
            endpoint=f"http://127.0.0.1:{1 + i}",
            stake=Wei(1_000 * TOKEN),
            models=[model_id],
        )


def job_record(job_id: int, stage: Stage = Stage.AWAITING_INPUT) -> JobRecord:
    """A quorum(3) job's record in a node's database, its input hash made from its id."""
    return JobRecord(
        job_id=JobId(job_id),
        model_id=ModelId(1),
        mode=Mode.QUORUM,
        k=3,
        input_hash=Hash32(bytes([job_id]) * 32),
        stage=stage,
        reveal_deadline=1_000,
    )
