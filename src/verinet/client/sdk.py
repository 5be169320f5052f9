"""`Client` and `AsyncClient`: jobs from request to a result whose evidence the client checks.

An inference is: validate the inputs against the model's manifest (fetched from a node and
checked against its CID), check everything the nodes would refuse (`client._escrow`), escrow
the fee with `InferenceMarket.request`, send the tensors to the nodes that serve the model
(in the body, or by CID when over a node's body limit), wait until the job is PAID or
REFUNDED (finalizing it itself when nobody else does), fetch the outputs from a node whose
result the chain settled on, and `verify` them: hashes recomputed, receipt signatures
recovered, on-chain state read back. Nothing a node says is believed unless the chain or a
signature backs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
from eth_account.signers.local import LocalAccount

from verinet import safe_json
from verinet.chain.deploy import Deployment
from verinet.chain.jsonrpc import JsonRpcChain
from verinet.client import _escrow
from verinet.client._escrow import Delivery
from verinet.errors import (
    ConfigError,
    ContractRevert,
    InvalidReceipt,
    JobNotOpen,
    JobNotSettled,
    JobRefunded,
    NodeRequestFailed,
    NoNodes,
    TooEarly,
    TransientError,
    VerificationFailed,
)
from verinet.hub import cid as cids
from verinet.hub.manifest import ModelManifest
from verinet.hub.publish import Published, publish
from verinet.hub.replicate import fetch_blob
from verinet.hub.store import BlobStore
from verinet.protocol.receipts import Receipt, sign_receipt_request, verify_receipt
from verinet.protocol.types import Job, JobState, Mode, ModelInfo
from verinet.runtime.inputs import validate_inputs
from verinet.runtime.tensors import Array, group_hash
from verinet.runtime.wire import group_from_json
from verinet.types import Address, Hash32, JobId, ModelId, TxHash, Wei

ModeName = Literal["signed", "quorum", "optimistic", "zk"]
Progress = Callable[[str], None]
MAX_RESULT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `verify` checked, each line a fact it confirmed."""

    mode: str
    checks: tuple[str, ...]

    @property
    def summary(self) -> str:
        return self.checks[-1] if self.checks else "not verified"


@dataclass(frozen=True, slots=True)
class VerifiedResult:
    job_id: JobId
    model_id: ModelId
    mode: str
    k: int
    outputs: dict[str, Array]
    input_hash: Hash32
    output_hash: Hash32
    receipts: tuple[Receipt, ...]
    nodes: tuple[Address, ...]
    """Nodes whose answer the chain settled on (the receipt's signer, or the majority)."""
    transactions: dict[str, TxHash]
    state: JobState
    verdict: Verdict | None = None
    served_by: str = ""
    """The endpoint the outputs were fetched from."""
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    address: Address
    url: str


class Client:
    """A requester's view of one Verinet deployment (synchronous; see `AsyncClient`)."""

    def __init__(
        self,
        deployment: Deployment,
        account: LocalAccount,
        *,
        timeout: float = 300.0,
        poll_interval: float = 0.02,
        http: httpx.Client | None = None,
        blob_store: BlobStore | None = None,
        blob_url: str | None = None,
    ) -> None:
        """`blob_store` and `blob_url`: a store the nodes fetch blobs from (the hub the
        client publishes to) and its base URL; an input over a node's body limit is put
        there and sent by CID. Without them such an input is refused before paying."""
        self.deployment = deployment
        self.account = account
        self.address = Address(account.address)
        self.chain = deployment.chain
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._http = http or httpx.Client(timeout=30.0)
        self._manifests: dict[ModelId, ModelManifest] = {}
        self.blob_store, self.blob_url = blob_store, blob_url
        # Inputs go to every node at once; each node answers after it executed.
        self._senders = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="verinet-send")
        if self.address not in {Address(a.address) for a in self.chain.accounts}:
            self.chain.add_account(account)

    @classmethod
    def connect(
        cls, url: str, contracts: Mapping[str, str], account: LocalAccount, **kwargs: Any
    ) -> Client:
        """A client over JSON-RPC at `url` for the deployment at `contracts` (name → address)."""
        chain = JsonRpcChain(url, [account])
        deployment = Deployment.at(chain, {k: Address(v) for k, v in contracts.items()})
        return cls(deployment, account, **kwargs)

    def close(self) -> None:
        self._senders.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- models ------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        registry = self.deployment.models
        return [registry.model(ModelId(i)) for i in range(1, registry.model_count() + 1)]

    def nodes(self, model_id: ModelId | None = None) -> list[NodeEndpoint]:
        """Registered, staked nodes (serving `model_id` if given), from registry events."""
        registry = self.deployment.nodes
        endpoints: dict[Address, str] = {}
        serving: dict[Address, bool] = {}
        for event in registry.history():
            node = Address(event.args.get("node", ""))
            if event.name in ("NodeRegistered", "EndpointChanged"):
                endpoints[node] = event.args["endpoint"]
            elif event.name == "ModelServed" and event.args["model_id"] == model_id:
                serving[node] = bool(event.args["serving"])
        found = []
        for node, url in endpoints.items():
            if model_id is not None and not serving.get(node):
                continue
            if registry.node(node).stake > 0:
                found.append(NodeEndpoint(node, url))
        return found

    def manifest(self, model_id: ModelId) -> ModelManifest:
        """The model's manifest, fetched from a serving node and checked against its CID."""
        cached = self._manifests.get(model_id)
        if cached is not None:
            return cached
        info = self.deployment.models.model(model_id)
        if not info.manifest_cid:
            raise ConfigError(f"model {model_id} is not published on this deployment")
        peers = [n.url for n in self.nodes(model_id)]
        if not peers:
            raise NoNodes(f"no staked node serves model {model_id}; nobody could run it")
        data = fetch_blob(cids.from_bytes(info.manifest_cid), peers, client=self._http)
        manifest = ModelManifest.parse(data)
        self._manifests[model_id] = manifest
        return manifest

    def publish_model(
        self,
        source: bytes | str | Path,
        manifest: ModelManifest,
        *,
        store: BlobStore,
        previous: ModelId | None = None,
    ) -> Published:
        """Check a model, put it and its manifest in `store` (which nodes replicate from), and
        register both on-chain, owned by this client's account."""
        return publish(
            source,
            manifest,
            store=store,
            registry=self.deployment.models,
            sender=self.address,
            previous=previous,
        )

    def job(self, job_id: JobId) -> Job:
        return self.deployment.market.job(job_id)

    def finalize(self, job_id: JobId) -> Job:
        """End a job past its deadline (anyone may): PAID to a majority or REFUNDED to its
        requester. Returns the job as it ended; one already ended is returned as is.
        Raises `TooEarly` before the deadline (or while a dispute over it runs)."""
        return _escrow.finalize(self, job_id)[0]

    # -- inference ----------------------------------------------------------------------

    def infer(
        self,
        model_id: int,
        inputs: Mapping[str, Any],
        *,
        mode: ModeName = "signed",
        k: int = 3,
        verify: bool = True,
        progress: Progress | None = None,
    ) -> VerifiedResult:
        """Run `model_id` on `inputs` under `mode` and return outputs with checked evidence.

        Raises `InvalidInput` (before any money moves) for tensors that do not fit the model,
        `JobRefunded` when the job ends refunded, `JobNotSettled` past `timeout`, and
        `VerificationFailed` when the evidence does not hold.
        """
        if mode == "zk":  # committed to circuit instances, settled by a proof: client/zk.py
            from verinet.client.zk import infer_zk

            return infer_zk(self, model_id, inputs, verify=verify, progress=progress)
        say = progress or (lambda _: None)
        started = time.monotonic()
        model = ModelId(model_id)
        mode_bit = {
            "signed": Mode.SIGNED,
            "quorum": Mode.QUORUM,
            "optimistic": Mode.OPTIMISTIC,
        }.get(mode)
        if mode_bit is None:
            raise ConfigError(
                f"mode must be 'signed', 'quorum', 'optimistic' or 'zk', not {mode!r}"
            )
        seats = k if mode_bit == Mode.QUORUM else 1
        manifest = self.manifest(model)
        feeds = validate_inputs(manifest.inputs, manifest.input_policy, inputs)
        input_hash = group_hash(feeds)
        market = self.deployment.market
        fee = _escrow.check_terms(self, model, mode_bit, seats).fee
        delivery = self._plan(model, seats, feeds, say, receipts=mode_bit == Mode.QUORUM)
        transactions: dict[str, TxHash] = {}
        if self.deployment.token.allowance(self.address, market.address) < fee * seats:
            tx = self.deployment.token.approve(
                market.address, Wei(fee * seats), sender=self.address
            )
            transactions["approve"] = tx.tx_hash
        say(f"requesting a {mode} job")
        job_id, tx = market.request(
            model, input_hash, mode_bit, seats, max_fee=fee, sender=self.address
        )
        transactions["request"] = tx.tx_hash
        nodes = list(delivery.nodes)
        settled: tuple[Receipt, ...] = ()  # a quorum's receipts, when settled at once
        refused = ""
        try:
            if mode_bit == Mode.QUORUM:
                settled = self._quorum_fast_path(
                    job_id, model, input_hash, seats, delivery, say, transactions
                )
            else:
                self._send_inputs(job_id, delivery, say)
        except NodeRequestFailed as exc:
            # Paid, and nobody took the input: the job ends REFUNDED at its deadline, which
            # this client waits for and finalizes itself if no node does first.
            refused = f" ({exc})"
            say("no node took the input; waiting for the deadline to take the escrow back")
        job = self._await_settlement(job_id, say, transactions)
        if job.state == JobState.REFUNDED:
            raise JobRefunded(
                f"job {job_id} ended REFUNDED: no receipt or no majority in time; the escrow "
                f"of {job.escrow} came back to {self.address}{refused}"
            )
        say("fetching the result")
        winners = self._winners(job)
        outputs, url, signature = self._fetch_result(job, nodes, manifest, winners)
        result = VerifiedResult(
            job_id=job_id,
            model_id=model,
            mode=mode,
            k=seats,
            outputs=outputs,
            input_hash=input_hash,
            output_hash=job.result,
            receipts=settled or self._receipts(job, signature, winners),
            nodes=winners,
            transactions=transactions,
            state=job.state,
            served_by=url,
            elapsed=time.monotonic() - started,
        )
        if verify:
            say("verifying")
            verdict = self.verify(result)
            result = replace(result, verdict=verdict)
        return result

    def _plan(
        self,
        model: ModelId,
        seats: int,
        feeds: Mapping[str, Array],
        say: Progress,
        *,
        receipts: bool = False,
    ) -> Delivery:
        """How the input reaches at least `seats` nodes, checked before paying."""
        return _escrow.plan(
            self,
            model,
            seats,
            feeds,
            say,
            receipts=receipts,
            store=self.blob_store,
            store_url=self.blob_url,
        )

    def _send_inputs(
        self,
        job_id: JobId,
        delivery: Delivery,
        say: Progress,
        *,
        receipts_for: tuple[ModelId, Hash32] | None = None,
        enough: Callable[[list[Receipt]], bool] | None = None,
    ) -> list[Receipt]:
        """Send the input to every node at once (each executes before it answers). With
        `receipts_for` (a quorum job's model and input hash) ask each for its receipt too
        and return those that verify, as soon as `enough(receipts)` holds or every node
        answered; the other sends go on."""
        nodes = delivery.nodes
        if not nodes:
            raise NoNodes("no staked node serves this model")
        say(f"sending the input to {len(nodes)} nodes")
        pending = [
            self._senders.submit(self._post_input, job_id, delivery, node, receipts_for)
            for node in nodes
        ]
        accepted, refusals, receipts = 0, [], []
        for done in concurrent.futures.as_completed(pending):
            try:
                receipt = done.result()
            except NodeRequestFailed as exc:
                refusals.append(str(exc))
                continue
            accepted += 1
            say(f"{accepted} of {len(nodes)} nodes took the input")
            if receipt is not None:
                receipts.append(receipt)
                if enough is not None and enough(receipts):
                    return receipts
        if not accepted:
            raise NodeRequestFailed(
                f"no node took the input of job {job_id} (it will be refunded after its "
                f"deadline): {'; '.join(refusals)}"
            )
        return receipts

    def _post_input(
        self,
        job_id: JobId,
        delivery: Delivery,
        node: NodeEndpoint,
        receipts_for: tuple[ModelId, Hash32] | None,
    ) -> Receipt | None:
        """One node's upload (in a sender thread): its verified receipt when asked for and
        given, else None; NodeRequestFailed when the node refused or could not be reached."""
        ask = None
        if receipts_for is not None:
            ask = sign_receipt_request(
                self.account,
                chain_id=self.chain.chain_id,
                market=self.deployment.market.address,
                job_id=job_id,
                node=node.address,
            )
        try:
            response = self._http.post(
                f"{node.url}/v1/jobs/{job_id}/input",
                content=delivery.body(node, ask),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise NodeRequestFailed(f"{node.url}: {exc}") from None
        if response.status_code >= 400:
            raise NodeRequestFailed(f"{node.url}: {response.status_code} {_detail(response)}")
        if receipts_for is None:
            return None
        return self._node_receipt(job_id, receipts_for, node, response)

    def _node_receipt(
        self,
        job_id: JobId,
        terms: tuple[ModelId, Hash32],
        node: NodeEndpoint,
        response: httpx.Response,
    ) -> Receipt | None:
        """The receipt in a node's answer to the input, if it is that node's valid receipt
        for this job on this market (anything else is ignored: commit and reveal remain)."""
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError, InvalidReceipt):
            raw = _json_object(response)["receipt"]
            receipt = Receipt(
                chain_id=self.chain.chain_id,
                market=self.deployment.market.address,
                job_id=job_id,
                model_id=terms[0],
                input_hash=terms[1],
                output_hash=Hash32(bytes.fromhex(raw["output_hash"].removeprefix("0x"))),
                node=node.address,
                signature=bytes.fromhex(raw["signature"].removeprefix("0x")),
            )
            if len(receipt.output_hash) == 32:
                verify_receipt(
                    receipt, chain_id=self.chain.chain_id, market=self.deployment.market.address
                )
                return receipt
        return None

    def _quorum_fast_path(
        self,
        job_id: JobId,
        model: ModelId,
        input_hash: Hash32,
        k: int,
        delivery: Delivery,
        say: Progress,
        transactions: dict[str, TxHash],
    ) -> tuple[Receipt, ...]:
        """Collect k drawn nodes' receipts with the input and settle them in one
        `submit_quorum` transaction; returns them. If that cannot be done (too few drawn
        receipts, no clear majority among them, a node committed first), the nodes settle
        the job by commit and reveal as usual, and this returns ()."""
        market = self.deployment.market
        drawn: dict[Address, bool] = {}

        def candidates(receipts: list[Receipt]) -> list[Receipt]:
            for r in receipts:
                if not drawn.get(r.node):  # the draw widens with time: ask again
                    drawn[r.node] = market.is_eligible(job_id, r.node)
            return [r for r in receipts if drawn[r.node]]

        def enough(receipts: list[Receipt]) -> bool:
            # k that agree; with any disagreement, hear every node out first.
            if len(receipts) < k or len({r.output_hash for r in receipts}) != 1:
                return False
            return len(candidates(receipts)) >= k

        receipts = self._send_inputs(
            job_id, delivery, say, receipts_for=(model, input_hash), enough=enough
        )
        chosen = _choose_quorum(candidates(receipts), k)
        if chosen is None:
            if receipts:
                say("no clear quorum among the receipts; the nodes commit and reveal instead")
            return ()
        say(f"settling {k} receipts in one transaction")
        try:
            tx = market.submit_quorum(chosen, sender=self.address)
        except JobNotOpen:
            say("the job was settled by someone else")
        except (ContractRevert, TransientError) as exc:
            # A transient failure may still have been mined: the chain decides below.
            say(f"the receipts did not settle ({type(exc).__name__}); nodes commit instead")
        else:
            transactions["submit_quorum"] = tx.tx_hash
            return tuple(chosen)
        return ()

    def _await_settlement(
        self, job_id: JobId, say: Progress, transactions: dict[str, TxHash]
    ) -> Job:
        arrived = threading.Event()
        unsubscribe = self.chain.subscribe_blocks(lambda _n: arrived.set())
        try:
            return self._settle(job_id, say, transactions, arrived)
        finally:
            if unsubscribe is not None:
                unsubscribe()

    def _settle(
        self,
        job_id: JobId,
        say: Progress,
        transactions: dict[str, TxHash],
        arrived: threading.Event,
    ) -> Job:
        market = self.deployment.market
        deadline = time.monotonic() + self.timeout
        last, head, checked = "", -1, 0.0
        while True:
            # One cheap call a poll; the job is read again when a block came (or a second
            # passed: chain time, and the deadlines with it, moves on without blocks). A
            # chain that pushes its blocks (`arrived`) ends the wait early.
            arrived.clear()
            block = self.chain.block_number()
            if block == head and time.monotonic() - checked < 1.0:
                arrived.wait(self.poll_interval)
                continue
            head, checked = block, time.monotonic()
            job = market.job(job_id)
            if job.state.terminal:
                return job
            status = (
                f"waiting for the quorum: {job.seats}/{job.k} seats, {job.reveals} reveals"
                if job.mode == Mode.QUORUM
                else "waiting for a drawn node's proof"
                if job.mode == Mode.ZK
                else f"waiting for a receipt ({job.state.name.lower()})"
            )
            if status != last:
                say(status)
                last = status
            if market.may_finalize(job_id):
                # JobNotOpen: a node finalized first. TooEarly: the audit drew the job.
                # Either way the job is read again before anything is concluded.
                with contextlib.suppress(JobNotOpen, TooEarly):
                    transactions["finalize"] = market.finalize(job_id, sender=self.address).tx_hash
                continue
            if job.state == JobState.SUBMITTED:
                # Held (drawn for audit, or an optimistic claim in its challenge window):
                # the result is in and checkable now; the node is paid when the hold ends.
                # Read once more: a node may have finalized since `job` was read.
                held = market.job(job_id)
                if held.state == JobState.SUBMITTED:
                    say(f"result submitted; held until chain time {held.finalize_after}")
                return held
            if time.monotonic() > deadline:
                raise JobNotSettled(
                    f"job {job_id} is still {job.state.name} after {self.timeout:.0f} s; it ends "
                    f"by its reveal deadline (chain time {job.reveal_deadline}), then anyone "
                    f"may finalize it: Client.finalize({job_id}) or `verinet job finalize "
                    f"{job_id}` (nodes do it too)"
                )
            arrived.wait(self.poll_interval)

    def _fetch_result(
        self,
        job: Job,
        nodes: Sequence[NodeEndpoint],
        manifest: ModelManifest,
        paid: Sequence[Address],
    ) -> tuple[dict[str, Array], str, bytes | None]:
        """Outputs from the first node (the `paid` ones first) whose outputs hash to the
        settled result, its URL, and its receipt signature when it signed one."""
        errors: list[str] = []
        for node, body in self._node_results(job.job_id, nodes, set(paid), errors):
            if isinstance(body, int):
                continue
            try:
                outputs = group_from_json(
                    body.get("outputs"), max_bytes=MAX_RESULT_BYTES, what="outputs"
                )
            except ValueError as exc:
                errors.append(f"{node.url}: {exc}")
                continue
            ordered = {s.name: outputs[s.name] for s in manifest.outputs if s.name in outputs}
            if len(ordered) == len(manifest.outputs) and group_hash(ordered) == job.result:
                return ordered, node.url, _signature(body.get("receipt"))
            errors.append(f"{node.url}: outputs do not hash to the settled result")
        raise NodeRequestFailed(
            f"no node served outputs matching job {job.job_id}'s settled hash: {'; '.join(errors)}"
        )

    def _node_results(
        self,
        job_id: JobId,
        nodes: Sequence[NodeEndpoint],
        first: Container[Address],
        errors: list[str],
    ) -> Iterator[tuple[NodeEndpoint, dict[str, Any] | int]]:
        """Each node's answer to ``GET /v1/jobs/{id}/result``, the `first` ones first: its
        JSON object, or the status of a refusal. A node's answer is untrusted: a failed
        request, a refusal or an answer that is not a JSON object (or nests too deep to parse
        safely) adds its reason to `errors`, and only a refusal is yielded (as its status)."""
        for node in sorted(nodes, key=lambda n: n.address not in first):
            try:
                response = self._http.get(f"{node.url}/v1/jobs/{job_id}/result")
            except httpx.HTTPError as exc:
                errors.append(f"{node.url}: {exc}")
                continue
            if response.status_code != 200:
                errors.append(f"{node.url}: {response.status_code} {_detail(response)}")
                yield node, response.status_code
                continue
            try:
                yield node, _json_object(response)
            except ValueError as exc:
                errors.append(f"{node.url}: {exc}")

    def _votes(self, job: Job) -> dict[Address, Hash32]:
        """Each seated node's revealed output hash, read from the chain (quorum jobs)."""
        market = self.deployment.market
        return {n: market.revealed_by(job.job_id, n) for n in market.seats_of(job.job_id)}

    def _winners(
        self, job: Job, votes: Mapping[Address, Hash32] | None = None
    ) -> tuple[Address, ...]:
        if job.mode == Mode.SIGNED:
            return tuple(self.deployment.market.seats_of(job.job_id)[:1])
        if job.mode == Mode.OPTIMISTIC:
            return (self.deployment.market.claim_of(job.job_id).node,)
        votes = self._votes(job) if votes is None else votes
        return tuple(n for n, v in votes.items() if v == job.result)

    def _receipts(
        self, job: Job, signature: bytes | None, winners: Sequence[Address]
    ) -> tuple[Receipt, ...]:
        """A signed job's receipt as the paid node signed it (`verify` checks it)."""
        if job.mode != Mode.SIGNED or signature is None:
            return ()
        (signer,) = winners
        return (
            Receipt(
                chain_id=self.chain.chain_id,
                market=self.deployment.market.address,
                job_id=job.job_id,
                model_id=job.model_id,
                input_hash=job.input_hash,
                output_hash=job.result,
                node=signer,
                signature=signature,
            ),
        )

    # -- verification -------------------------------------------------------------------

    def verify(self, result: VerifiedResult) -> Verdict:
        """Check a result's evidence against the chain; raise `VerificationFailed` if any
        check fails, else return the checks that passed."""
        if result.mode == "zk":
            from verinet.client.zk import verify_zk

            return verify_zk(self, result)
        checks: list[str] = []
        manifest = self.manifest(result.model_id)
        names = [s.name for s in manifest.outputs]
        if sorted(result.outputs) != sorted(names):
            raise VerificationFailed(
                f"outputs {sorted(result.outputs)} are not the model's {names}"
            )
        actual = group_hash([(n, np.asarray(result.outputs[n])) for n in names])
        if actual != result.output_hash:
            raise VerificationFailed(
                f"the outputs hash to 0x{actual.hex()}, not the claimed "
                f"0x{result.output_hash.hex()}"
            )
        checks.append("outputs hash to the result")
        job = self.deployment.market.job(result.job_id)
        settled = job.state in (JobState.PAID, JobState.SUBMITTED)
        if not settled or job.result != result.output_hash:
            raise VerificationFailed(
                f"on-chain job {result.job_id} is {job.state.name} with result "
                f"0x{job.result.hex()}, not PAID (or SUBMITTED) with 0x{result.output_hash.hex()}"
            )
        if job.input_hash != result.input_hash or job.model_id != result.model_id:
            raise VerificationFailed("the on-chain job is for other inputs or another model")
        checks.append(
            "the chain settled on this result (PAID)"
            if job.state == JobState.PAID
            else f"the chain holds this result (SUBMITTED: paid after chain time "
            f"{job.finalize_after} unless a dispute refutes it)"
        )
        if job.mode == Mode.SIGNED:
            if not result.receipts:
                raise VerificationFailed("a signed job's result needs the node's receipt")
            receipt = result.receipts[0]
            try:
                signer = verify_receipt(
                    receipt, chain_id=self.chain.chain_id, market=self.deployment.market.address
                )
            except InvalidReceipt as exc:
                raise VerificationFailed(f"the receipt does not verify: {exc}") from None
            if (receipt.job_id, receipt.output_hash, receipt.input_hash) != (
                job.job_id,
                job.result,
                job.input_hash,
            ):
                raise VerificationFailed("the receipt is for another job, input or output")
            if self.deployment.market.seats_of(job.job_id)[:1] != [signer]:
                raise VerificationFailed(f"the receipt's signer {signer} is not the paid node")
            checks.append(f"EIP-712 receipt signed by {signer[:10]}… (drawn, staked)")
        elif job.mode == Mode.OPTIMISTIC:
            claim = self.deployment.market.claim_of(job.job_id)
            if claim.output_hash != job.result or claim.ops < 1:
                raise VerificationFailed("the on-chain claim is not a traced claim of this result")
            if claim.open_disputes:
                raise VerificationFailed(
                    f"{claim.open_disputes} dispute(s) over this result are still open"
                )
            checks.append(
                f"claimed by {claim.node[:10]}… (drawn, staked) with a trace of {claim.ops} ops; "
                + (
                    "unrefuted through its challenge window"
                    if job.state == JobState.PAID
                    else f"open to challenge by any staked watcher until chain time "
                    f"{job.finalize_after}"
                )
            )
        else:
            need = job.k // 2 + 1
            votes = self._votes(job)
            agree = len(self._winners(job, votes))
            if agree < need:
                raise VerificationFailed(f"only {agree} of {job.k} reveals match; {need} needed")
            for receipt in result.receipts:  # settled at once by submit_quorum
                try:
                    signer = verify_receipt(
                        receipt,
                        chain_id=self.chain.chain_id,
                        market=self.deployment.market.address,
                    )
                except InvalidReceipt as exc:
                    raise VerificationFailed(f"a quorum receipt does not verify: {exc}") from None
                if (receipt.job_id, receipt.input_hash) != (job.job_id, job.input_hash):
                    raise VerificationFailed("a quorum receipt is for another job or input")
                if votes.get(signer) != receipt.output_hash:
                    raise VerificationFailed(
                        f"{signer}'s receipt is not the answer the chain recorded for its seat"
                    )
            if result.receipts:
                checks.append(
                    f"{agree} of {job.k} EIP-712 receipts agree, settled in one transaction "
                    f"(majority {need})"
                )
            else:
                checks.append(f"{agree} of {job.k} committed reveals agree (majority {need})")
        return Verdict(mode=result.mode, checks=tuple(checks))


class AsyncClient:
    """`Client` for asyncio programs: the same calls as coroutines, run in worker threads so
    the event loop never blocks on the chain or a node."""

    def __init__(self, deployment: Deployment, account: LocalAccount, **kwargs: Any) -> None:
        self.sync = Client(deployment, account, **kwargs)

    @classmethod
    def connect(
        cls, url: str, contracts: Mapping[str, str], account: LocalAccount, **kwargs: Any
    ) -> AsyncClient:
        client = cls.__new__(cls)
        client.sync = Client.connect(url, contracts, account, **kwargs)
        return client

    async def infer(
        self, model_id: int, inputs: Mapping[str, Any], **kwargs: Any
    ) -> VerifiedResult:
        return await asyncio.to_thread(self.sync.infer, model_id, inputs, **kwargs)

    async def verify(self, result: VerifiedResult) -> Verdict:
        return await asyncio.to_thread(self.sync.verify, result)

    async def publish_model(self, *args: Any, **kwargs: Any) -> Published:
        return await asyncio.to_thread(self.sync.publish_model, *args, **kwargs)

    async def manifest(self, model_id: ModelId) -> ModelManifest:
        return await asyncio.to_thread(self.sync.manifest, model_id)

    async def models(self) -> list[ModelInfo]:
        return await asyncio.to_thread(self.sync.models)

    async def job(self, job_id: JobId) -> Job:
        return await asyncio.to_thread(self.sync.job, job_id)

    async def finalize(self, job_id: JobId) -> Job:
        return await asyncio.to_thread(self.sync.finalize, job_id)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _choose_quorum(receipts: Sequence[Receipt], k: int) -> list[Receipt] | None:
    """k receipts to settle: a strict majority of k that agree, filled up with others.
    None with fewer than k receipts, or when no answer leads every other: with two answers
    equally supported, choosing would pick whom to slash, so commit and reveal decide."""
    if len(receipts) < k:
        return None
    groups: dict[Hash32, list[Receipt]] = {}
    for r in receipts:
        groups.setdefault(r.output_hash, []).append(r)
    ranked = sorted(groups.values(), key=len, reverse=True)
    lead = ranked[0]
    if len(lead) < k // 2 + 1 or (len(ranked) > 1 and len(ranked[1]) == len(lead)):
        return None
    return [*lead, *(r for group in ranked[1:] for r in group)][:k]


def _signature(value: Any) -> bytes | None:
    """A node's hex receipt signature, or None if it sent none (or garbage: verify refuses)."""
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        return None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    """A node's JSON answer, which must be an object (`ValueError` otherwise, `JsonTooDeep`
    for one nested too deep to parse safely)."""
    body = safe_json.loads(response.content)
    if not isinstance(body, dict):
        raise ValueError(f"the answer is a JSON {type(body).__name__}, not an object")
    return body


def _detail(response: httpx.Response) -> str:
    try:
        body = safe_json.loads(response.content)
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return f"{body.get('error', '')}: {body.get('detail', '')}"
    return str(body)[:200]
