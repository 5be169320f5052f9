"""zk mode for the client: request a job committed to the circuit's input instances, fetch the
outputs with their proof, and check the proof off-chain as well as the chain's settlement.

`Client.infer(mode="zk")` and `Client.verify` call into here. The client needs the model's
circuit description, settings, verification key and SRS (never the proving key); it fetches
them by CID from the nodes serving the model, verifies every blob, and keeps them under
``$VERINET_CACHE_DIR/zk`` (default ``~/.cache/verinet/zk``), one folder per circuit.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from verinet.errors import (
    ConfigError,
    ContractRevert,
    JobRefunded,
    MalformedEvidence,
    NodeRequestFailed,
    VerificationFailed,
    VerinetError,
)
from verinet.hub.manifest import ModelManifest
from verinet.hub.store import DiskStore
from verinet.protocol.types import Job, JobState, Mode, ZkVerifier
from verinet.protocol.zk import instances_hash
from verinet.runtime.inputs import validate_inputs
from verinet.runtime.tensors import Array, group_hash
from verinet.runtime.wire import group_from_json
from verinet.types import Address, ModelId, TxHash, Wei
from verinet.verification.zk import (
    CircuitArtifacts,
    ZkProof,
    dequantize_outputs,
    input_instances,
    verifier_calldata,
)
from verinet.verification.zk import verify as verify_proof
from verinet.verification.zk_hub import fetch_artifacts, proof_from_json

if TYPE_CHECKING:
    from verinet.client.sdk import Client, NodeEndpoint, Progress, Verdict, VerifiedResult

RESULT_GRACE = 30.0
"""Seconds the client asks a paid job's prover again while it answers "not ready"."""
TESTING_SRS_WARNING = (
    "this model's SRS was generated locally (a devnet): FOR TESTING ONLY, whoever made it can "
    "forge proofs"
)


def cache_dir() -> Path:
    """Where the client keeps zk circuits: ``$VERINET_CACHE_DIR/zk`` or ``~/.cache/verinet/zk``."""
    root = os.environ.get("VERINET_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "verinet") / "zk"


def circuit(
    manifest: ModelManifest, peers: Sequence[str], *, http: httpx.Client | None = None
) -> CircuitArtifacts:
    """The model's circuit as far as a client needs it (no proving key), fetched from `peers`
    (base URLs serving blobs) into the cache, every blob verified against its CID."""
    zk = manifest.zk
    if "zk" not in manifest.modes or zk is None or zk.circuit is None:
        raise ConfigError(
            f"model {manifest.name} does not offer zk mode (its modes: {', '.join(manifest.modes)})"
        )
    root = cache_dir()
    return fetch_artifacts(
        DiskStore(root / "blobs"), zk, root / zk.circuit, peers=peers, client=http
    )


def infer_zk(
    client: Client,
    model_id: int,
    inputs: Mapping[str, Any],
    *,
    verify: bool = True,
    progress: Progress | None = None,
) -> VerifiedResult:
    """`Client.infer` in zk mode: commit to the inputs' circuit instances, escrow the fee with
    ``request_zk``, send the inputs, wait for the drawn node's proof to settle the job (PAID
    in the same transaction), fetch outputs and proof, and verify them."""
    from verinet.client.sdk import VerifiedResult

    say = progress or (lambda _: None)
    started = time.monotonic()
    model = ModelId(model_id)
    manifest = client.manifest(model)
    nodes = client.nodes(model)
    say("fetching the circuit: settings, verification key, SRS")
    artifacts = circuit(manifest, [n.url for n in nodes], http=client._http)
    if artifacts.srs_for_testing:
        say(f"WARNING: {TESTING_SRS_WARNING}")
    say("checking the model's on-chain verifier against its circuit")
    checked_verifier(client, model, artifacts)  # before any money moves
    feeds = validate_inputs(manifest.inputs, manifest.input_policy, inputs)
    input_hash = group_hash(feeds)
    say("committing to the inputs' circuit instances")
    committed = instances_hash(input_instances(artifacts, feeds))
    delivery = client._plan(model, 1, feeds, say)  # before any money moves
    market = client.deployment.market
    fee = client.deployment.models.model(model).fee
    transactions: dict[str, TxHash] = {}
    if client.deployment.token.allowance(client.address, market.address) < fee:
        tx = client.deployment.token.approve(market.address, Wei(fee), sender=client.address)
        transactions["approve"] = tx.tx_hash
    say("requesting a zk job")
    job_id, tx = market.request_zk(model, input_hash, committed, max_fee=fee, sender=client.address)
    transactions["request"] = tx.tx_hash
    with contextlib.suppress(NodeRequestFailed):  # refunded at its deadline: awaited below
        client._send_inputs(job_id, delivery, say)
    job = client._await_settlement(job_id, say, transactions)
    if job.state == JobState.REFUNDED:
        raise JobRefunded(
            f"zk job {job_id} ended REFUNDED: no drawn node proved it before its deadline; the "
            f"escrow of {job.escrow} came back to {client.address}"
        )
    say("fetching the outputs and their proof")
    prover = market.seats_of(job_id)[0]
    outputs, proof, url = _fetch(client, job, nodes, prover, artifacts, manifest)
    result = VerifiedResult(
        job_id=job_id,
        model_id=model,
        mode="zk",
        k=1,
        outputs=outputs,
        input_hash=input_hash,
        output_hash=job.result,
        receipts=(),
        nodes=(prover,),
        transactions=transactions,
        state=job.state,
        served_by=url,
        elapsed=time.monotonic() - started,
        extra={"proof": proof, "artifacts": artifacts},
    )
    if verify:
        say("verifying the proof off-chain")
        result = replace(result, verdict=verify_zk(client, result))
    return result


def _fetch(
    client: Client,
    job: Job,
    nodes: Sequence[NodeEndpoint],
    prover: Address,
    artifacts: CircuitArtifacts,
    manifest: ModelManifest,
) -> tuple[dict[str, Array], ZkProof, str]:
    """Outputs and proof from the first node (the prover first) whose proof's output
    instances hash to the settled result and dequantize to the outputs it sent.

    A node serves its proof once it has recorded the transaction that settled the job, a
    moment after the chain shows the job PAID: a node that answers "not ready" is asked
    again until `RESULT_GRACE` seconds have passed."""
    deadline = time.monotonic() + RESULT_GRACE
    while True:
        found, errors, pending = _fetch_once(client, job, nodes, prover, artifacts, manifest)
        if found is not None:
            return found
        if not pending or time.monotonic() > deadline:
            raise NodeRequestFailed(
                f"no node served a proof matching zk job {job.job_id}'s settled result: "
                f"{'; '.join(errors)}"
            )
        time.sleep(client.poll_interval)


def _fetch_once(
    client: Client,
    job: Job,
    nodes: Sequence[NodeEndpoint],
    prover: Address,
    artifacts: CircuitArtifacts,
    manifest: ModelManifest,
) -> tuple[tuple[dict[str, Array], ZkProof, str] | None, list[str], bool]:
    """One round over the nodes: (outputs, proof, url) or None, the errors, and whether
    some node said its result is not ready yet."""
    from verinet.client.sdk import MAX_RESULT_BYTES

    errors: list[str] = []
    pending = False
    for node, body in client._node_results(job.job_id, nodes, {prover}, errors):
        if isinstance(body, int):
            pending |= body == 409 and node.address == prover
            continue
        try:
            proof = proof_from_json(body.get("zk"), artifacts)
            sent = group_from_json(body.get("outputs"), max_bytes=MAX_RESULT_BYTES, what="outputs")
        except (MalformedEvidence, ValueError) as exc:
            errors.append(f"{node.url}: {exc}")
            continue
        outputs = {s.name: sent[s.name] for s in manifest.outputs if s.name in sent}
        if instances_hash(proof.output_instances) != job.result:
            errors.append(f"{node.url}: the proof's outputs do not hash to the settled result")
        elif not _same(outputs, proof.outputs):
            errors.append(f"{node.url}: the outputs are not the proof's output instances")
        else:
            return (outputs, proof, node.url), errors, pending
    return None, errors, pending


def verify_zk(client: Client, result: VerifiedResult) -> Verdict:
    """`Client.verify` for a zk result: the chain paid this result after its verifier accepted
    the proof; the proof's input instances are those the job committed to and its output
    instances hash to the result and dequantize to the outputs; and ezkl verifies the proof
    off-chain with the model's verification key (fetched by CID from its manifest)."""
    from verinet.client.sdk import Verdict

    checks: list[str] = []
    market = client.deployment.market
    proof = result.extra.get("proof")
    if not isinstance(proof, ZkProof):
        raise VerificationFailed("a zk result needs its proof (VerifiedResult.extra['proof'])")
    manifest = client.manifest(result.model_id)
    artifacts = result.extra.get("artifacts")
    if not isinstance(artifacts, CircuitArtifacts):
        artifacts = circuit(manifest, [n.url for n in client.nodes(result.model_id)])
    job = market.job(result.job_id)
    if job.mode != Mode.ZK or job.state != JobState.PAID or job.result != result.output_hash:
        raise VerificationFailed(
            f"on-chain job {result.job_id} is a {job.mode.name} job, {job.state.name} with result "
            f"0x{job.result.hex()}, not a PAID zk job with 0x{result.output_hash.hex()}"
        )
    if job.input_hash != result.input_hash or job.model_id != result.model_id:
        raise VerificationFailed("the on-chain job is for other inputs or another model")
    verifier = checked_verifier(client, result.model_id, artifacts)
    checks.append(
        f"the chain paid this result (PAID) after verifier {verifier.address[:10]}…, the "
        "circuit's own (its code is the artifacts' verifier), accepted its proof"
    )
    if instances_hash(proof.input_instances) != market.instances_hash(result.job_id):
        raise VerificationFailed("the proof's input instances are not those the job committed to")
    checks.append("the proof's input instances are those the job committed to")
    if instances_hash(proof.output_instances) != job.result:
        raise VerificationFailed("the proof's output instances do not hash to the paid result")
    if sorted(result.outputs) != sorted(s.name for s in manifest.outputs) or not _same(
        result.outputs, dequantize_outputs(artifacts, proof.output_instances)
    ):
        raise VerificationFailed("the outputs are not the proof's output instances, dequantized")
    checks.append("the outputs are the proof's output instances, which hash to the result")
    if not verify_proof(artifacts, proof):
        raise VerificationFailed("the proof does not verify off-chain with the model's key")
    testing = f" ({TESTING_SRS_WARNING})" if artifacts.srs_for_testing else ""
    checks.append(
        f"ezkl proof ({len(proof.proof):,} bytes) verified off-chain with the model's "
        f"verification key{testing}"
    )
    return Verdict(mode="zk", checks=tuple(checks))


def checked_verifier(client: Client, model_id: ModelId, artifacts: CircuitArtifacts) -> ZkVerifier:
    """The model's registered verifier, once (1) its on-chain code is found to be what the
    circuit's published verifier deploys to, and (2) it refuses a proof of nothing (zero
    bytes). A verifier that fails either would let the market pay for proofs that prove
    nothing about this model, so `VerificationFailed` is raised instead.

    What this does not show: that the published verifier embeds the circuit's verification
    key. Both come from the model's owner; an owner who publishes a subtly wrong verifier
    is caught by the off-chain proof check, after payment."""
    verifier = client.deployment.models.verifier_of(model_id)
    code = client.chain.code(verifier.address)
    if code != _runtime_of(artifacts.verifier_bytecode):
        what = "has no code" if not code else f"runs {len(code):,} bytes of other code"
        raise VerificationFailed(
            f"model {model_id}'s registered verifier {verifier.address} {what}, not the "
            f"verifier its circuit was built with ({artifacts.verifier_runtime_size:,} bytes): "
            "the market would accept proofs that prove nothing about this model. Use another "
            "mode, or ask its owner to publish a new version"
        )
    if _accepts_nonsense(client, verifier, artifacts):
        raise VerificationFailed(
            f"model {model_id}'s verifier {verifier.address} accepts a proof of nothing (zero "
            "bytes): the market would pay for any answer. Use another mode"
        )
    return verifier


def _accepts_nonsense(client: Client, verifier: ZkVerifier, artifacts: CircuitArtifacts) -> bool:
    nothing = ZkProof(
        proof=bytes(3072),
        instances=(1,) * artifacts.instance_count,
        input_count=artifacts.input_count,
        outputs={},
    )
    try:
        answer = client.chain.call(verifier.address, verifier_calldata(artifacts, nothing))
    except ContractRevert:
        return False
    return len(answer) == 32 and int.from_bytes(answer, "big") == 1


@functools.lru_cache(maxsize=16)
def _runtime_of(init_code: bytes) -> bytes:
    """The code `init_code` leaves on-chain, found by deploying it in a scratch EVM."""
    from verinet.chain import EmbeddedChain  # py-evm: loaded by zk clients only

    scratch = EmbeddedChain(accounts=1)
    sender = Address(scratch.accounts[0].address)
    try:
        deployed = scratch.deploy(init_code, sender=sender).contract_address
    except VerinetError as exc:
        raise VerificationFailed(
            f"the circuit's published verifier does not deploy: {exc}"
        ) from None
    assert deployed is not None
    return scratch.code(deployed)


def _same(a: Mapping[str, Array], b: Mapping[str, Array]) -> bool:
    return a.keys() == b.keys() and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype
        and np.array_equal(np.asarray(a[k]), np.asarray(b[k]))
        for k in a
    )
