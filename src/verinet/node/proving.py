"""zk jobs on a node: each zk model's circuit files, proofs made off the job loop, and the
proof's submission to the market.

A node that serves a zk model keeps the model's circuit (settings, compiled circuit, keys,
SRS; `ZkArtifacts` in its manifest) as files under ``<data_dir>/zk/<circuit CID>/``, fetched
once from its store or its peers. Once drawn for a zk job it proves the run in a child process
(`verinet.verification.zk.prove`) on a background thread, so the node's other jobs keep
moving, then sends ``submit_proof``: the market checks the proof and pays at once.

Only a drawn node proves: proving costs 10^5-10^6 times a plain run. Two drawn nodes may both
prove one job; the first proof on-chain is paid and the other node's job ends LOST.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verinet.chain import TxReceipt
from verinet.chain.contracts import InferenceMarket
from verinet.errors import (
    InputHashMismatch,
    InstancesMismatch,
    InvalidManifest,
    InvalidProof,
    NotEligible,
    VerinetError,
)
from verinet.hub.manifest import ModelManifest
from verinet.hub.store import BlobStore
from verinet.node.db import JobRecord, Stage
from verinet.protocol.types import Job
from verinet.protocol.zk import instances_hash
from verinet.runtime.tensors import Array
from verinet.runtime.wire import decode_group, encode_group
from verinet.types import Address, Cid, JobId
from verinet.verification.zk import CircuitArtifacts, ZkProof, input_instances, prove
from verinet.verification.zk_hub import fetch_artifacts, proof_from_json, proof_to_json

if TYPE_CHECKING:
    from verinet.node.service import Node


def circuit_of(
    store: BlobStore, manifest: ModelManifest, work_dir: Path, *, peers: Sequence[str] = ()
) -> CircuitArtifacts:
    """The zk model's circuit with its proving key, as files under `work_dir` (one folder per
    circuit, written once), fetched from `store` or, for what it lacks, from `peers`."""
    zk = manifest.zk
    if zk is None or zk.circuit is None:
        raise InvalidManifest(f"model {manifest.name} has no zk circuit in its manifest")
    return fetch_artifacts(store, zk, work_dir / zk.circuit, proving=True, peers=peers)


def prove_job(
    store: BlobStore,
    manifest: ModelManifest,
    inputs: Mapping[str, Array],
    work_dir: Path,
    *,
    peers: Sequence[str] = (),
) -> ZkProof:
    """Prove a run of the zk model on `inputs` (ezkl in a child process). The result carries
    the proof's bytes and its public instances (the inputs', then the outputs'), the
    arguments of ``submit_proof``, and the outputs they dequantize to. Raises `InvalidInput`
    for inputs that do not fit the circuit, `ProvingFailed` when ezkl fails."""
    return prove(circuit_of(store, manifest, work_dir, peers=peers), inputs)


def submit_proof(
    market: InferenceMarket, job_id: JobId, proof: ZkProof, *, sender: Address
) -> TxReceipt:
    """Settle zk job `job_id` with `proof`, sent by the drawn node `sender`, who is paid."""
    return market.submit_proof(job_id, proof.proof, proof.instances, sender=sender)


class Prover:
    """A node's zk work: circuits ready for the models it serves, one proof at a time on a
    background thread, and the step that turns a drawn job into a paid one."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.work_dir = node.settings.data_dir / "zk"
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="verinet-prove")
        self._proofs: dict[JobId, concurrent.futures.Future[ZkProof]] = {}

    def close(self, *, wait: bool = False) -> None:
        """Stop proving: queued proofs are dropped (a restarted node proves them again);
        with `wait`, return once the proof in flight has ended."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def circuit(self, manifest: ModelManifest) -> CircuitArtifacts:
        """The model's circuit files, fetched on first use (sync_models calls this when the
        node starts serving a zk model, so jobs find them ready)."""
        with self._lock:
            return circuit_of(
                self.node.store, manifest, self.work_dir, peers=self.node.settings.peers
            )

    def check_inputs(
        self, manifest: ModelManifest, feeds: Mapping[str, Array], job_id: JobId
    ) -> None:
        """Refuse inputs whose circuit instances are not those the job committed to: a proof
        of them could never settle it. Raises `InputHashMismatch` (or `ShapeMismatch` when
        they do not fit the circuit's fixed shapes)."""
        committed = self.node.market.instances_hash(job_id)
        actual = instances_hash(input_instances(self.circuit(manifest), feeds))
        if actual != committed:
            raise InputHashMismatch(
                f"these inputs quantize to circuit instances hashing to 0x{actual.hex()}, but "
                f"zk job {job_id} committed to 0x{committed.hex()}; send the tensors whose "
                "instances you committed to"
            )

    def step(self, record: JobRecord, job: Job) -> JobRecord:
        """One step of a zk job this node was drawn for (stage PROVING; the caller holds the
        job's lock): start its proof, wait for it, store it, then submit it."""
        node = self.node
        if record.proof_cid is None:
            try:
                proof = self._poll(record)
            except VerinetError as exc:  # inputs outside the circuit's ranges, say
                return node.db.update(record.job_id, stage=Stage.FAILED, error=str(exc))
            if proof is None:
                return record
            record = node.db.update(
                record.job_id,
                proof_cid=node.store.put(json.dumps(proof_to_json(proof)).encode(), "json"),
                output_cid=node.store.put(encode_group(proof.outputs)),
                output_hash=instances_hash(proof.output_instances),
            )
            node.log.info("proved", job_id=record.job_id, bytes=len(proof.proof))
        proof = self.proof(record)
        try:
            tx = submit_proof(node.market, record.job_id, proof, sender=node.address)
        except NotEligible:
            return record  # the draw only widens; try again next tick
        except (InvalidProof, InstancesMismatch) as exc:
            return node.db.update(record.job_id, stage=Stage.FAILED, error=str(exc))
        node.metrics.transactions.labels(kind="proof").inc()
        node.log.info("proof accepted", job_id=record.job_id, gas=tx.gas_used)
        return node.db.update(record.job_id, stage=Stage.DONE, outcome="PAID", proof_tx=tx.tx_hash)

    def proof(self, record: JobRecord) -> ZkProof:
        """The proof this node stored for a job."""
        assert record.proof_cid is not None
        served = self.node.served(record.model_id)
        data = json.loads(self.node.store.get(Cid(record.proof_cid)))
        return proof_from_json(data, self.circuit(served.manifest))

    def evidence(self, record: JobRecord) -> dict[str, Any] | None:
        """A zk job's proof as served with its result (None before it is on-chain: shown
        earlier, another drawn node could submit it first and be paid for it)."""
        if record.proof_cid is None or record.proof_tx is None:
            return None
        data: dict[str, Any] = json.loads(self.node.store.get(Cid(record.proof_cid)))
        return data

    def _poll(self, record: JobRecord) -> ZkProof | None:
        """The job's proof once made (starting it if it is not running); raises what proving
        raised. Proofs lost to a restart are started again."""
        future = self._proofs.get(record.job_id)
        if future is None:
            self._proofs[record.job_id] = self._pool.submit(self._prove, record)
            return None
        if not future.done():
            return None
        del self._proofs[record.job_id]
        return future.result()

    def _prove(self, record: JobRecord) -> ZkProof:
        node = self.node
        try:
            served = node.served(record.model_id)
            assert record.input_cid is not None
            feeds = decode_group(node.store.get(Cid(record.input_cid)))
            return prove(self.circuit(served.manifest), feeds)
        finally:
            node.on_change()  # the job can move: wake the daemon
