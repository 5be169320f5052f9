"""The node's work: which models it serves, the jobs it takes, and each job's next step.

`Node` is synchronous and thread-safe; the daemon (`verinet.node.daemon`) calls it from worker
threads, the HTTP API for requests and a loop for chain events and job steps. Every job moves
forward through `Stage`s by `advance`, one step per call, each step written to SQLite before
the transaction it leads to is sent (see `verinet.node.db`).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import structlog
from eth_account.signers.local import LocalAccount

from verinet.chain._abi import Event
from verinet.chain._backend import Chain
from verinet.chain.deploy import Deployment
from verinet.errors import (
    AlreadyCommitted,
    AlreadyRevealed,
    BlobNotFound,
    ContractRevert,
    DeadlinePassed,
    ExecutionFailed,
    InputHashMismatch,
    InputSealed,
    InvalidInput,
    JobNotOpen,
    ModelNotServed,
    NotEligible,
    ReceiptRequestRefused,
    ResultNotReady,
    RevealNotOpen,
    SeatsFull,
    TooEarly,
    UnknownJob,
    VerinetError,
)
from verinet.hub import cid as cids
from verinet.hub.manifest import ModelManifest
from verinet.hub.publish import load_manifest
from verinet.hub.replicate import replicate_model
from verinet.hub.store import DiskStore
from verinet.node._process import TracedRun
from verinet.node.config import NodeSettings
from verinet.node.db import ChainIdentity, JobDB, JobRecord, Stage
from verinet.node.disputes import DisputeDesk, Run, watch_draw
from verinet.node.expiry import ExpirySweep
from verinet.node.metrics import NodeMetrics
from verinet.node.proving import Prover
from verinet.node.worker import ModelPool
from verinet.protocol.receipts import Receipt, receipt_requester, sign_receipt
from verinet.protocol.rules import commitment
from verinet.protocol.types import Job, JobState, Mode
from verinet.runtime.inputs import validate_inputs
from verinet.runtime.tensors import Array, group_hash
from verinet.runtime.wire import decode_group, encode_group, group_to_json
from verinet.types import Address, Cid, Hash32, JobId, ModelId

_T = TypeVar("_T")
_LOST_REVERTS = (JobNotOpen, SeatsFull, DeadlinePassed)
LONE_AFTER = 4
"""Direct runs in a row, each with no other in progress from start to end, after which the
node takes it that one client calls it at a time and asks its model worker not to sleep
between calls (`ModelPool.arun_validated`'s `lone`)."""


class Accepted(NamedTuple):
    """What taking a job's input left: the job's record, and the receipt handed to its
    requester when they asked for it (quorum jobs)."""

    record: JobRecord
    receipt: Receipt | None


@dataclass(frozen=True, slots=True)
class ServedModel:
    model_id: ModelId
    manifest_cid: Cid
    manifest: ModelManifest


class Node:
    """One staked node: its account, chain view, store, models and jobs."""

    def __init__(
        self,
        settings: NodeSettings,
        account: LocalAccount,
        deployment: Deployment,
        *,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.account = account
        self.address = Address(account.address)
        self.deployment = deployment
        self.chain: Chain = deployment.chain
        self.market = deployment.market
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.store = DiskStore(data / "blobs")
        # Another chain's records (a devnet restarted afresh) are moved aside, not followed.
        self.db = JobDB(data / "jobs.sqlite", ChainIdentity.of(deployment))
        self.pool = ModelPool(
            data / "blobs",
            isolation=settings.isolation,
            workers=settings.workers,
            memory_limit_mb=settings.memory_limit_mb,
            timeout=settings.execution_timeout,
        )
        self.metrics = metrics or NodeMetrics()
        self._run_counters: dict[tuple[str, str], Any] = {}
        self.models: dict[ModelId, ServedModel] = {}
        self._unloadable: set[str] = set()  # manifests whose model failed to load
        self._executing = 0  # direct runs in progress
        self._lone = 0  # direct runs in a row that had no other beside them
        self.log = structlog.get_logger("verinet.node").bind(node=self.address[:10])
        if self.db.moved_aside is not None:
            self.log.warning(
                "db.moved_aside",
                reason="the database belongs to another chain or deployment",
                to=str(self.db.moved_aside),
                was=self.db.replaced_identity,
            )
        self._lock = threading.RLock()
        self._job_locks: dict[JobId, threading.Lock] = {}
        self._last_claim = 0.0
        self._selection_round = deployment.params.selection_round()
        self._undrawn: dict[JobId, int] = {}  # job -> the selection round that left us out
        # (model, input hash) of open quorum jobs: direct runs of these inputs are refused.
        self._sealed_inputs: dict[tuple[ModelId, Hash32], JobId] = {
            (r.model_id, r.input_hash): r.job_id for r in self.db.active() if r.sealed
        }
        self.on_change: Callable[[], None] = lambda: None
        """Called (from any thread) when a job may be able to move: the daemon's wake-up."""
        self.desk = DisputeDesk(self)
        self.prover = Prover(self)  # zk jobs: circuits and proofs
        self.expiry = ExpirySweep(self.market, self.address)  # any job left past its deadline
        self._watch_secret = _secret(data / "watch.key")

    def close(self) -> None:
        self.prover.close()
        self.desk.close()
        self.pool.close()
        self.db.close()

    # -- models --------------------------------------------------------------------------

    def sync_models(self, progress: Callable[[str, int, int], None] | None = None) -> list[ModelId]:
        """Serve every model this node is registered for on-chain: fetch what is missing
        (manifest and model, verified) from the store or peers, and warm a worker for it.
        `progress(model, done, total)` follows each download in bytes."""
        self._selection_round = self.deployment.params.selection_round()
        serving: dict[ModelId, bool] = {}
        for event in self.deployment.nodes.history("ModelServed"):
            if event.args["node"] == self.address:
                serving[ModelId(event.args["model_id"])] = bool(event.args["serving"])
        added = []
        for model_id, on in serving.items():
            if not on:
                self.models.pop(model_id, None)
                continue
            if model_id in self.models:
                continue
            info = self.deployment.models.model(model_id)
            manifest_cid = cids.from_bytes(info.manifest_cid)
            if manifest_cid in self._unloadable:
                continue
            if not self.store.has(manifest_cid) or not self.store.has(
                load_manifest(self.store, manifest_cid).model
            ):
                label = f"model {model_id}"
                replicate_model(
                    manifest_cid,
                    self.settings.peers,
                    self.store,
                    progress=None if progress is None else functools.partial(progress, label),
                )
            manifest = load_manifest(self.store, manifest_cid)
            if Mode.ZK in manifest.mode_bits:
                self.prover.circuit(manifest)  # zk: its circuit and keys, before any job
            try:
                self.pool.warm(manifest_cid)
            except ExecutionFailed as exc:
                # onnxruntime refuses it, or dies building its session: serving it would
                # fail every request. The other models are served; the owner hears why.
                self.log.error("model.unloadable", model_id=model_id, error=str(exc))
                self._unloadable.add(manifest_cid)
                continue
            self.models[model_id] = ServedModel(model_id, manifest_cid, manifest)
            added.append(model_id)
            self.log.info("serving model", model_id=model_id, name=manifest.name)
        return added

    def served(self, model_id: ModelId) -> ServedModel:
        served = self.models.get(model_id)
        if served is None:
            raise ModelNotServed(
                f"this node does not serve model {model_id}; it serves {sorted(self.models)}"
            )
        return served

    # -- direct execution ----------------------------------------------------------------

    def execute(self, model_id: ModelId, inputs: Mapping[str, Array]) -> dict[str, Any]:
        """Run a model on inputs now, off-chain: outputs and both hashes (no payment, no
        receipt). The path the benchmark measures and jobs share."""
        served = self.served(model_id)
        feeds = validate_inputs(served.manifest.inputs, served.manifest.input_policy, inputs)
        input_hash = self._refuse_sealed(model_id, group_hash(feeds))
        return self._direct(served, input_hash, self._run(served, feeds, path="direct"))

    async def execute_async(self, model_id: ModelId, inputs: Mapping[str, Array]) -> dict[str, Any]:
        """`execute` for the HTTP API's event loop, which waits on the model's worker without
        a thread of its own. The worker validates the inputs and hashes both sides too: the
        event loop is what limits a busy node's requests per second."""
        served = self.served(model_id)
        started = time.perf_counter()
        self._executing += 1
        alone = self._executing == 1
        try:
            run = await self.pool.adirect(
                served.manifest_cid, inputs, lone=self._lone >= LONE_AFTER
            )
            # The run happened, but its answer goes out only if it may (a sealed input).
            input_hash = self._refuse_sealed(model_id, Hash32(run.input_hash))
        except VerinetError as exc:
            self._count_run("direct", started, exc)
            raise
        finally:
            alone = alone and self._executing == 1
            self._executing -= 1
            self._lone = self._lone + 1 if alone else 0
        self._count_run("direct", started, None)
        return {
            "model_id": served.model_id,
            "input_hash": input_hash,
            "output_hash": Hash32(run.output_hash),
            "outputs": run.outputs,
        }

    def _refuse_sealed(self, model_id: ModelId, input_hash: Hash32) -> Hash32:
        """`input_hash`, unless it is an open quorum job's input whose answers are still
        sealed: a direct run would then hand a seated node the answer to copy."""
        job_id = self._sealed_inputs.get((model_id, input_hash))
        if job_id is not None:
            record = self.db.get(job_id)
            if record is not None and record.sealed and not record.stage.final:
                raise InputSealed(
                    f"these inputs are those of open quorum job {job_id}, whose answers are "
                    "sealed until revealed or settled; run them again after that"
                )
            self._sealed_inputs.pop((model_id, input_hash), None)
        return input_hash

    def _direct(
        self, served: ServedModel, input_hash: Hash32, outputs: dict[str, Array]
    ) -> dict[str, Any]:
        return {
            "model_id": served.model_id,
            "input_hash": input_hash,
            "output_hash": group_hash([(s.name, outputs[s.name]) for s in served.manifest.outputs]),
            "outputs": outputs,
        }

    def _run(
        self, served: ServedModel, feeds: Mapping[str, Array], *, path: str
    ) -> dict[str, Array]:
        return self._timed(path, self.pool.run_validated, served.manifest_cid, feeds)

    def _timed(self, path: str, run: Callable[..., _T], *args: Any) -> _T:
        """`run(*args)`, counted and timed in the metrics under `path`."""
        started = time.perf_counter()
        try:
            value = run(*args)
        except VerinetError as exc:
            self._count_run(path, started, exc)
            raise
        self._count_run(path, started, None)
        return value

    def _count_run(self, path: str, started: float, failure: VerinetError | None) -> None:
        result = "ok" if failure is None else type(failure).__name__
        counter = self._run_counters.get((path, result))
        if counter is None:  # labels() costs a lock and a lookup; runs are the hot path
            counter = self._run_counters[path, result] = self.metrics.executions.labels(
                path=path, result=result
            )
        counter.inc()
        if failure is None:
            self.metrics.execution_seconds.observe(time.perf_counter() - started)

    # -- jobs: input ---------------------------------------------------------------------

    def _job_lock(self, job_id: JobId) -> threading.Lock:
        with self._lock:
            return self._job_locks.setdefault(job_id, threading.Lock())

    def _chain_job(self, job_id: JobId) -> Job:
        job = self.market.job(job_id)
        if job.state == JobState.NONE:
            raise UnknownJob(f"job {job_id} does not exist on market {self.market.address}")
        return job

    def _track(
        self,
        job_id: JobId,
        *,
        model_id: ModelId,
        mode: Mode,
        k: int,
        input_hash: Hash32,
        reveal_deadline: int,
    ) -> JobRecord:
        """The node's record of a job, created if it serves the model. The terms come from
        the chain's `Job` or from its `JobRequested` event, which carries them all."""
        record = self.db.get(job_id)
        if record is not None:
            return record
        self.served(model_id)
        if mode == Mode.QUORUM:
            self._sealed_inputs[(model_id, input_hash)] = job_id
        self.db.insert(
            JobRecord(
                job_id=job_id,
                model_id=model_id,
                mode=mode,
                k=k,
                input_hash=input_hash,
                stage=Stage.AWAITING_INPUT,
                reveal_deadline=reveal_deadline,
            )
        )
        record = self.db.get(job_id)
        assert record is not None
        return record

    def accept_input(
        self,
        job_id: JobId,
        inputs: Mapping[str, Array],
        *,
        receipt_request: bytes | None = None,
    ) -> Accepted:
        """Take a job's input: it must fit the model and hash to the job's on-chain input
        hash. The node executes at once and keeps the outputs until it is drawn.

        With a quorum job's `receipt_request` (see `protocol.receipts`) signed by the job's
        requester, the node also signs its receipt and returns it, for the requester to
        settle with `submit_quorum`; it then waits `receipt_grace` before committing."""
        job = self._chain_job(job_id)
        if receipt_request is not None:
            self._check_receipt_request(job, receipt_request)
        served = self.served(job.model_id)
        feeds = validate_inputs(served.manifest.inputs, served.manifest.input_policy, inputs)
        actual = group_hash(feeds)
        if actual != job.input_hash:
            raise InputHashMismatch(
                f"these inputs hash to 0x{actual.hex()} but job {job_id} was requested for "
                f"0x{job.input_hash.hex()}; send exactly the tensors whose hash you requested"
            )
        if job.mode == Mode.ZK:
            self.prover.check_inputs(served.manifest, feeds, job_id)
        with self._job_lock(job_id):
            record = self._track(
                job_id,
                model_id=job.model_id,
                mode=job.mode,
                k=job.k,
                input_hash=job.input_hash,
                reveal_deadline=job.reveal_deadline,
            )
            if record.stage != Stage.AWAITING_INPUT:
                # A repeated upload changes nothing, but may still ask for the receipt.
                return Accepted(record, self._hand_receipt(record, receipt_request))
            watchable = job.state == JobState.SUBMITTED and job.mode != Mode.QUORUM
            if job.state != JobState.OPEN and not watchable:
                lost = self.db.update(job_id, stage=Stage.LOST, error="job no longer open")
                return Accepted(lost, None)
            input_cid = self.store.put(encode_group(feeds))
            if job.mode == Mode.ZK:  # proved once drawn (proving is costly), not run now
                self.db.update(job_id, stage=Stage.READY, input_cid=input_cid)
                self.on_change()
                return Accepted(self.record(job_id), None)
            if job.mode == Mode.OPTIMISTIC and not self._runs_optimistic(job_id):
                # Neither drawn nor watching: keep the input, run it if drawn later.
                self.db.update(job_id, stage=Stage.READY, input_cid=input_cid)
                self.on_change()
                return Accepted(self.record(job_id), None)
            self.db.update(job_id, input_cid=input_cid)
            record = self._execute_job(served, self.record(job_id), feeds)
            receipt = self._hand_receipt(record, receipt_request)
        assert record.output_hash is not None
        self.log.info("executed", job_id=job_id, output_hash=record.output_hash.hex()[:16])
        self.on_change()
        return Accepted(self.record(job_id), receipt)

    def _runs_optimistic(self, job_id: JobId) -> bool:
        """Whether to run an optimistic job's input now: as its drawn node, or as a watcher
        this job's private draw picked."""
        if watch_draw(self._watch_secret, job_id, self.settings.watch_fraction):
            return True
        return self.market.is_eligible(job_id, self.address)

    def _execute_job(
        self, served: ServedModel, record: JobRecord, feeds: Mapping[str, Array]
    ) -> JobRecord:
        """Run a job's input and store what the node commits to; a failed run ends the job
        for this node as FAILED (callers hold the job's lock)."""
        try:
            outputs, traced = self._job_run(served, record, feeds)
        except VerinetError as exc:
            failed = self.db.update(record.job_id, stage=Stage.FAILED, error=str(exc))
            self._count(failed)
            raise
        return self.db.update(
            record.job_id,
            stage=Stage.READY,
            output_cid=self.store.put(encode_group(outputs)),
            output_hash=group_hash([(s.name, outputs[s.name]) for s in served.manifest.outputs]),
            ops=None if traced is None else traced.ops,
            trace_final=None if traced is None else traced.final,
            trace_root=None if traced is None else traced.root,
        )

    def _job_run(
        self, served: ServedModel, record: JobRecord, feeds: Mapping[str, Array]
    ) -> tuple[dict[str, Array], TracedRun | None]:
        """A job's outputs, and for an optimistic job the traced run it claims."""
        if record.mode == Mode.OPTIMISTIC:
            traced = self._timed("traced", self.pool.traced, served.manifest_cid, feeds)
            return traced.outputs, traced
        return self._run(served, feeds, path="job"), None

    def _check_receipt_request(self, job: Job, signature: bytes) -> None:
        if job.mode != Mode.QUORUM:
            raise ReceiptRequestRefused(
                f"job {job.job_id} is a {str(job.mode.name).lower()} job; receipts are asked for "
                "quorum jobs only (a signed job's receipt is in its result)"
            )
        signer = receipt_requester(
            signature,
            chain_id=self.chain.chain_id,
            market=self.market.address,
            job_id=job.job_id,
            node=self.address,
        )
        if signer != job.requester:
            raise ReceiptRequestRefused(
                f"the receipt request for job {job.job_id} was signed by {signer}, not the "
                f"job's requester {job.requester}; sign a ReceiptRequest(jobId, node) naming "
                f"this node ({self.address}) with the requesting account"
            )

    def _hand_receipt(self, record: JobRecord, request: bytes | None) -> Receipt | None:
        """This node's receipt for the requester, signed once and kept (callers hold the
        job's lock and checked the request). None before the node has executed, or once
        it has committed: a seat taken by commit cannot be settled by receipt."""
        if request is None or record.output_hash is None or record.stage != Stage.READY:
            return None
        if record.signature is None:
            record = self.db.update(
                record.job_id,
                signature=self._sign(record).signature,
                handed_at=self.chain.timestamp(),
            )
        return self.receipt(record)

    def _sign(self, record: JobRecord) -> Receipt:
        """This node's EIP-712 receipt for its output of the job."""
        assert record.output_hash is not None
        return sign_receipt(
            self.account,
            chain_id=self.chain.chain_id,
            market=self.market.address,
            job_id=record.job_id,
            model_id=record.model_id,
            input_hash=record.input_hash,
            output_hash=record.output_hash,
        )

    def accept_input_blob(
        self, job_id: JobId, cid: str, *, receipt_request: bytes | None = None
    ) -> Accepted:
        """Take a job's input as a blob (its canonical encoding) already in the store. A
        blob named by a requester is fetched first by `verinet.node.fetch`, under its rules
        (registered peers only, a deadline, bounded fetches); nothing here contacts a peer."""
        name = cids.normalize(cid)
        if not self.store.has(name):
            raise BlobNotFound(f"no blob {name} on this node; send the tensors, or name peers")
        return self.accept_input(
            job_id, decode_group(self.store.get(name)), receipt_request=receipt_request
        )

    # -- jobs: results -------------------------------------------------------------------

    def _unsealed_if_settled(self, record: JobRecord) -> JobRecord:
        """A sealed quorum answer may be public already: the chain settled the job (say by
        submit_quorum) before this node saw the event. One chain read, for live records
        only (a final one is settled or was never answered)."""
        if not record.sealed or record.stage.final:
            return record
        if not self._chain_job(record.job_id).state.terminal:
            return record
        with self._job_lock(record.job_id):
            return self.advance(record.job_id)

    def record(self, job_id: JobId) -> JobRecord:
        record = self.db.get(job_id)
        if record is None:
            raise UnknownJob(f"this node has no record of job {job_id}; send its input first")
        return record

    def receipt(self, record: JobRecord) -> Receipt | None:
        if record.signature is None or record.output_hash is None:
            return None
        return Receipt(
            chain_id=self.chain.chain_id,
            market=self.market.address,
            job_id=record.job_id,
            model_id=record.model_id,
            input_hash=record.input_hash,
            output_hash=record.output_hash,
            node=self.address,
            signature=record.signature,
        )

    def result(self, job_id: JobId) -> dict[str, Any]:
        """The outputs of a job, once this node may show them: after its receipt is signed
        (signed) or once its answer is public: revealed or settled on-chain (quorum; earlier
        would let others copy)."""
        record = self._unsealed_if_settled(self.record(job_id))
        if record.output_cid is None or not _published(record):
            raise ResultNotReady(
                f"job {job_id} is at stage {record.stage}; its result is served once this node "
                + {
                    Mode.SIGNED: "has signed its receipt",
                    Mode.OPTIMISTIC: "has claimed it on-chain (or checked another's claim)",
                    Mode.ZK: "has had its proof accepted on-chain",
                }.get(record.mode, "has revealed or the job is settled")
            )
        outputs = decode_group(self.store.get(Cid(record.output_cid)))
        receipt = self.receipt(record)
        return {
            "job_id": job_id,
            "model_id": record.model_id,
            "node": self.address,
            "stage": str(record.stage),
            "input_hash": "0x" + record.input_hash.hex(),
            "output_hash": "0x" + (record.output_hash or b"").hex(),
            "outputs": group_to_json(outputs),
            "receipt": None if receipt is None else "0x" + receipt.signature.hex(),
            "zk": self.prover.evidence(record),  # a zk job's proof and instances
            "transactions": {
                k: v
                for k, v in (
                    ("commit", record.commit_tx),
                    ("reveal", record.reveal_tx),
                    ("receipt", record.receipt_tx),
                    ("claim", record.claim_tx),
                    ("proof", record.proof_tx),
                    ("finalize", record.finalize_tx),
                )
                if v
            },
        }

    def trace_step(self, job_id: JobId, index: int) -> dict[str, Any]:
        """Op `index` of this node's traced run of the job, with its Merkle proof."""
        record = self._unsealed_if_settled(self.record(job_id))
        if record.input_cid is None or record.output_cid is None:
            raise ResultNotReady(f"job {job_id} has not been executed by this node")
        if record.sealed:
            raise ResultNotReady(
                f"job {job_id}'s trace is served once this node revealed or the job is settled"
            )
        served = self.served(record.model_id)
        inputs = decode_group(self.store.get(Cid(record.input_cid)))
        return self.pool.trace_step(served.manifest_cid, inputs, index)

    def evidence(self, job_id: JobId, step: int) -> bytes:
        """This node's evidence (JSON) for step `step` of the result it put on-chain: what a
        dispute's committee judges the step from."""
        record = self.record(job_id)
        if record.receipt_tx is None and record.claim_tx is None:
            raise ResultNotReady(
                f"job {job_id}: this node serves evidence only for results it put on-chain"
            )
        last = 1 if record.mode == Mode.SIGNED else (record.ops or 0) + 1
        if not 1 <= step <= last:
            raise InvalidInput(f"step {step} is outside 1..{last} for job {job_id}")
        return self.desk.evidence(record, step)

    def dispute_run(self, record: JobRecord) -> Run:
        """The run this node defends or challenges with in a game over the job: its own."""
        return self.desk.run_of(record)

    # -- chain: events and steps ---------------------------------------------------------

    def poll(self) -> int:
        """Read market events since the cursor; returns how many were handled."""
        start = self.db.cursor()
        head = self.chain.block_number()
        if head < start:
            return 0
        events = self.market.decode_logs(
            self.chain.logs(address=self.market.address, from_block=start)
        )
        for event in events:
            self._on_event(event)
        handled = len(events) + self.desk.poll(start)
        self.db.set_cursor(head + 1)
        self.metrics.block.set(head)
        return handled

    def _on_event(self, event: Event) -> None:
        job_id = JobId(event.args["job_id"]) if "job_id" in event.args else None
        if job_id is None:
            return
        if event.name == "JobRequested":
            self.expiry.requested(job_id, int(event.args["reveal_deadline"]))
        elif event.name in ("JobPaid", "JobRefunded"):
            self.expiry.ended(job_id)
        if event.name == "JobRequested" and ModelId(event.args["model_id"]) in self.models:
            args = event.args
            with self._job_lock(job_id):
                self._track(
                    job_id,
                    model_id=ModelId(args["model_id"]),
                    mode=Mode(args["mode"]),
                    k=int(args["k"]),
                    input_hash=Hash32(args["input_hash"]),
                    reveal_deadline=int(args["reveal_deadline"]),
                )
        elif event.name in ("JobPaid", "JobRefunded"):
            record = self.db.get(job_id)
            if record is not None and not record.stage.final:
                outcome = "PAID" if event.name == "JobPaid" else "REFUNDED"
                with self._job_lock(job_id):
                    record = self.db.update(job_id, stage=Stage.DONE, outcome=outcome)
                self._ended(record)

    def tick(self) -> None:
        """Move every active job one step; claim earnings now and then."""
        active = self.db.active()
        self.metrics.active_jobs.set(len(active))
        games = self.db.open_games()
        now = self.chain.timestamp() if active or games else 0
        for record in active:
            try:
                with self._job_lock(record.job_id):
                    self.advance(record.job_id, now=now)
            except ContractRevert as exc:
                self.log.warning("transaction refused", job_id=record.job_id, error=str(exc))
            except VerinetError as exc:
                self.log.warning("step failed", job_id=record.job_id, error=str(exc))
        if games:
            self.desk.tick(now)
        if self.settings.finalize:
            for job_id, tx in self.expiry.sweep(self.chain.timestamp):
                self.metrics.transactions.labels(kind="finalize").inc()
                self.log.info("finalized a job left past its deadline", job_id=job_id, tx=tx)
        if time.monotonic() - self._last_claim >= self.settings.withdraw_interval:
            self._last_claim = time.monotonic()
            self.claim()

    def claim(self) -> int:
        """Withdraw what the market and the dispute game owe this node."""
        total = 0
        for contract in (self.market, self.desk.games):
            owed = contract.owed(self.address)
            if owed:
                contract.withdraw(sender=self.address)
                self.metrics.transactions.labels(kind="withdraw").inc()
                self.log.info("withdrew", amount=owed, source=contract.NAME)
                total += owed
        return total

    def advance(self, job_id: JobId, *, now: int | None = None) -> JobRecord:
        """One step of a job (callers hold the job's lock). `now` is the chain's time, read
        once for a whole tick (a time read earlier than the step's is never ahead of it)."""
        record = self.record(job_id)
        if record.stage.final:
            return record
        job = self._chain_job(job_id)
        if job.state.terminal:
            record = self.db.update(job_id, stage=Stage.DONE, outcome=job.state.name)
            self._ended(record)
            return record
        if now is None:
            now = self.chain.timestamp()
        step = {
            Stage.AWAITING_INPUT: self._awaiting,
            Stage.READY: self._ready,
            Stage.COMMITTING: self._committing,
            Stage.COMMITTED: self._committed,
            Stage.REVEALING: self._revealing,
            Stage.SUBMITTING: self._submitting,
            Stage.CLAIMING: self._claiming,
            Stage.WATCHING: self._watching,
            Stage.PROVING: self._proving,
            Stage.REVEALED: self._settle,
            Stage.SUBMITTED: self._settle,
        }[record.stage]
        try:
            record = step(record, job, now)
        except _LOST_REVERTS as exc:
            settled = self._chain_job(job_id)
            if settled.state.terminal:  # settled under us (by submit_quorum, say)
                record = self.db.update(job_id, stage=Stage.DONE, outcome=settled.state.name)
            else:
                record = self.db.update(job_id, stage=Stage.LOST, error=type(exc).__name__)
        if record.stage.final:
            self._ended(record)
        return record

    def _ended(self, record: JobRecord) -> None:
        """Count a job that reached its final stage and drop what was kept for it."""
        self._undrawn.pop(record.job_id, None)
        self._sealed_inputs.pop((record.model_id, record.input_hash), None)
        self._count(record)

    def _awaiting(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        if now >= job.reveal_deadline:
            return self.db.update(record.job_id, stage=Stage.LOST, error="no input received")
        return record

    def _ready(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        if job.state != JobState.OPEN:
            if job.mode in (Mode.SIGNED, Mode.OPTIMISTIC) and record.output_hash is not None:
                record = self.db.update(record.job_id, stage=Stage.WATCHING)
                return self._watching(record, job, now)
            return self.db.update(record.job_id, stage=Stage.LOST, error="receipt from another")
        if job.mode == Mode.QUORUM and (job.seats >= job.k or now >= job.commit_deadline):
            return self.db.update(record.job_id, stage=Stage.LOST, error="no seat")
        if job.mode == Mode.QUORUM and record.handed_at is not None and job.seats == 0:
            # The receipt went to the requester: give them `receipt_grace` from then to
            # settle the job with submit_quorum (one transaction) before taking a seat by
            # commit, which closes that path; never past half the commit window.
            half = job.requested_at + (job.commit_deadline - job.requested_at) // 2
            if now < min(record.handed_at + self.settings.receipt_grace, half):
                return record
        # The draw widens every selection round and not within one: a node left out is
        # left out until the next round begins.
        draw = (now - job.requested_at) // max(self._selection_round, 1)
        if self._undrawn.get(record.job_id) == draw:
            return record
        if not self.market.is_eligible(record.job_id, self.address):
            self._undrawn[record.job_id] = draw
            return record
        if job.mode == Mode.ZK:
            record = self.db.update(record.job_id, stage=Stage.PROVING)
            return self._proving(record, job, now)
        if job.mode == Mode.OPTIMISTIC:
            if record.output_hash is None:  # drawn for a job it was not watching
                served = self.served(record.model_id)
                assert record.input_cid is not None
                feeds = decode_group(self.store.get(Cid(record.input_cid)))
                record = self._execute_job(served, record, feeds)
            record = self.db.update(record.job_id, stage=Stage.CLAIMING)
            return self._claiming(record, job, now)
        assert record.output_hash is not None
        if job.mode == Mode.SIGNED:
            record = self.db.update(
                record.job_id, stage=Stage.SUBMITTING, signature=self._sign(record).signature
            )
            return self._submitting(record, job, now)
        record = self.db.update(record.job_id, stage=Stage.COMMITTING, salt=os.urandom(32))
        return self._committing(record, job, now)

    def _committing(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        if self.market.commitment_of(record.job_id, self.address) != bytes(32):
            return self.db.update(record.job_id, stage=Stage.COMMITTED)  # sent before a restart
        assert record.output_hash is not None and record.salt is not None
        c = commitment(record.output_hash, record.salt, self.address)
        try:
            tx = self.market.commit(record.job_id, c, sender=self.address)
        except AlreadyCommitted:
            return self.db.update(record.job_id, stage=Stage.COMMITTED)
        except NotEligible:
            return self.db.update(record.job_id, stage=Stage.READY)
        self.metrics.transactions.labels(kind="commit").inc()
        self.log.info("committed", job_id=record.job_id)
        record = self.db.update(record.job_id, stage=Stage.COMMITTED, commit_tx=tx.tx_hash)
        self.on_change()  # the last seat may be taken: reveals can open at once
        return record

    def _committed(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        if job.seats < job.k and now < job.commit_deadline:
            return record  # reveals open when every seat is taken
        record = self.db.update(record.job_id, stage=Stage.REVEALING)
        return self._revealing(record, job, now)

    def _revealing(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        if self.market.revealed_by(record.job_id, self.address) != bytes(32):
            return self.db.update(record.job_id, stage=Stage.REVEALED)
        assert record.output_hash is not None and record.salt is not None
        try:
            tx = self.market.reveal(
                record.job_id, record.output_hash, record.salt, sender=self.address
            )
        except AlreadyRevealed:
            return self.db.update(record.job_id, stage=Stage.REVEALED)
        except RevealNotOpen:
            return self.db.update(record.job_id, stage=Stage.COMMITTED)
        self.metrics.transactions.labels(kind="reveal").inc()
        self.log.info("revealed", job_id=record.job_id)
        record = self.db.update(record.job_id, stage=Stage.REVEALED, reveal_tx=tx.tx_hash)
        self.on_change()
        return record

    def _submitting(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        if job.state != JobState.OPEN:
            holders = self.market.seats_of(record.job_id)
            if holders and holders[0] == self.address:
                return self.db.update(record.job_id, stage=Stage.SUBMITTED)
            return self.db.update(record.job_id, stage=Stage.LOST, error="receipt from another")
        receipt = self.receipt(record)
        assert receipt is not None
        try:
            tx = self.market.submit_receipt(receipt, sender=self.address)
        except NotEligible:
            return record
        self.metrics.transactions.labels(kind="receipt").inc()
        self.log.info("receipt submitted", job_id=record.job_id)
        record = self.db.update(record.job_id, stage=Stage.SUBMITTED, receipt_tx=tx.tx_hash)
        self.on_change()
        return record

    def _claiming(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        if job.state != JobState.OPEN:
            if self.market.claim_of(record.job_id).node == self.address:
                return self.db.update(record.job_id, stage=Stage.SUBMITTED)  # sent before a restart
            record = self.db.update(record.job_id, stage=Stage.WATCHING)
            return self._watching(record, job, now)
        assert record.output_hash is not None and record.ops is not None
        assert record.trace_final is not None and record.trace_root is not None
        try:
            tx = self.market.submit_claim(
                record.job_id,
                record.output_hash,
                Hash32(record.trace_final),
                Hash32(record.trace_root),
                record.ops,
                sender=self.address,
            )
        except NotEligible:
            return self.db.update(record.job_id, stage=Stage.READY)
        self.metrics.transactions.labels(kind="claim").inc()
        self.log.info("claim submitted", job_id=record.job_id, ops=record.ops)
        record = self.db.update(record.job_id, stage=Stage.SUBMITTED, claim_tx=tx.tx_hash)
        self.on_change()
        return record

    def _proving(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        """A zk job this node was drawn for: proved off the job loop, then submitted."""
        return self.prover.step(record, job)

    def _watching(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        """Another node's result is on-chain: compare it with this node's run and challenge
        it while it can be challenged (the watchtower; for a signed job, its audit)."""
        claim = self.market.claim_of(record.job_id)
        if claim.node == self.address:
            return self.db.update(record.job_id, stage=Stage.SUBMITTED)
        if job.mode == Mode.SIGNED:
            if claim.submit_block >= self.chain.block_number():
                return record  # the audit draw is the next block's
            if not claim.audited:
                return self.db.update(record.job_id, stage=Stage.WATCHED, error="not audited")
            agrees = claim.output_hash == record.output_hash
        else:
            agrees = (claim.output_hash, claim.trace_final, claim.ops) == (
                record.output_hash,
                record.trace_final,
                record.ops,
            )
        if agrees:
            return self.db.update(
                record.job_id, stage=Stage.WATCHED, error=f"checked {claim.node}'s result: right"
            )
        if self.desk.games.challenged(record.job_id, self.address):
            return self.db.update(  # challenged before a restart; the game is followed
                record.job_id, stage=Stage.WATCHED, error=f"challenged {claim.node}'s result"
            )
        if job.state != JobState.SUBMITTED or now >= job.finalize_after:
            return self.db.update(
                record.job_id,
                stage=Stage.WATCHED,
                error=f"{claim.node}'s result differs, but can no longer be challenged",
            )
        game_id = self.desk.challenge(record.job_id)
        self.log.warning("challenged a wrong result", job_id=record.job_id, node=claim.node)
        return self.db.update(
            record.job_id,
            stage=Stage.WATCHED,
            error=f"challenged {claim.node}'s result: game {game_id}",
        )

    def _settle(self, record: JobRecord, job: Job, now: int) -> JobRecord:
        if not self.settings.finalize or not self.market.may_finalize(record.job_id):
            return record
        try:
            tx = self.market.finalize(record.job_id, sender=self.address)
        except JobNotOpen:
            return record  # someone else finalized; the event will say how it ended
        except TooEarly:
            return record  # drawn for audit: held until its audit window ends
        self.metrics.transactions.labels(kind="finalize").inc()
        settled = self.market.job(record.job_id)
        return self.db.update(
            record.job_id, stage=Stage.DONE, outcome=settled.state.name, finalize_tx=tx.tx_hash
        )

    def _count(self, record: JobRecord) -> None:
        self.metrics.jobs.labels(
            mode=record.mode.name.lower() if record.mode.name else "?",
            result=record.outcome.lower() if record.outcome else str(record.stage),
        ).inc()

    def status(self) -> dict[str, Any]:
        return {
            "node": self.address,
            "chain_id": self.chain.chain_id,
            "market": self.market.address,
            "block": self.chain.block_number(),
            "models": sorted(self.models),
            "jobs": self.db.counts(),
            # What a client checks before it pays: a body over the first is refused (413),
            # so a larger input goes as a blob by CID, up to the second.
            "limits": {
                "max_request_bytes": self.settings.max_request_bytes,
                "max_input_blob_bytes": self.settings.max_input_blob_bytes,
            },
        }


def _published(record: JobRecord) -> bool:
    """Whether a job's outputs may be shown: a quorum answer once no longer sealed, a signed
    one once receipted, an optimistic one once claimed on-chain (by this node or another)."""
    if record.mode == Mode.QUORUM:
        return not record.sealed
    if record.mode == Mode.OPTIMISTIC:
        return record.claim_tx is not None or record.stage in (Stage.WATCHING, Stage.WATCHED)
    if record.mode == Mode.ZK:  # once its proof is on-chain: earlier, others could submit it
        return record.proof_tx is not None
    return record.signature is not None


def _secret(path: Path) -> bytes:
    """A node's private random key, made once and kept in its data directory."""
    if not path.exists():
        path.write_bytes(os.urandom(32))
        path.chmod(0o600)
    return path.read_bytes()
