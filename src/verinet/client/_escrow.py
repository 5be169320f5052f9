"""Keeping a client's escrow from getting stuck: everything the nodes would refuse is checked
before any money moves, and a job past its deadline can always be finalized.

Money moves with `InferenceMarket.request`. A job whose input every node then refuses (too
large for their HTTP limit, too few nodes for its quorum, a mode nobody may run) holds the
fee until its deadline and after, until someone finalizes it. So `check_terms` and `plan`
run first: the model's on-chain terms against the mode and quorum asked for, the nodes that
serve the model and the limits each advertises in ``GET /healthz``, and the input's size
against those limits. An input whose JSON body is over a node's `max_request_bytes` goes to
that node as a blob by CID, fetched from the client's blob store (the hub it publishes to,
which nodes replicate from); with no store, or a blob over every limit, the client refuses
with a typed error and pays nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from verinet import safe_json
from verinet.errors import (
    ConfigError,
    InputTooLarge,
    JobNotOpen,
    NoNodes,
    NotEnoughNodes,
    TooEarly,
)
from verinet.hub.store import BlobStore
from verinet.protocol.expiry import finalizable_from
from verinet.protocol.types import Job, JobState, Mode, ModelInfo
from verinet.runtime.tensors import Array
from verinet.runtime.wire import encode_group, group_to_json
from verinet.types import Cid, JobId, ModelId, TxHash

if TYPE_CHECKING:
    from verinet.client.sdk import Client, NodeEndpoint, Progress

MiB = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 8 * MiB
"""The body limit assumed for a node that does not advertise one (a node's default)."""
RECEIPT_REQUEST_BYTES = len(json.dumps({"receipt_request": "0x" + "00" * 65})) - 1
"""What a quorum job's receipt request adds to an input body (a comma, a key, 65 bytes hex)."""
HEALTH_TIMEOUT = 5.0
"""Seconds a node has to say what it takes before the client counts it out."""


@dataclass(frozen=True, slots=True)
class NodeLimits:
    """What one node takes, as it advertises in ``GET /healthz``."""

    max_request_bytes: int
    max_input_blob_bytes: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A job's input ready to send: the nodes that take it in the body, those that fetch it
    by CID (from `peers`), and the serialized forms."""

    tensors: dict[str, Any]
    inline: tuple[NodeEndpoint, ...]
    by_cid: tuple[NodeEndpoint, ...]
    cid: Cid | None = None
    peers: tuple[str, ...] = ()

    @property
    def nodes(self) -> tuple[NodeEndpoint, ...]:
        return self.inline + self.by_cid

    def body(self, node: NodeEndpoint, receipt_request: bytes | None) -> bytes:
        """The exact bytes posted to `node` (their size is what `plan` checked)."""
        content: dict[str, Any] = (
            {"input_cid": self.cid, "peers": list(self.peers)}
            if node in self.by_cid
            else {"inputs": self.tensors}
        )
        if receipt_request is not None:
            content["receipt_request"] = "0x" + receipt_request.hex()
        return encode_json(content)


def encode_json(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def check_terms(client: Client, model: ModelId, mode: Mode, k: int) -> ModelInfo:
    """The model's on-chain terms, after checking that a job of `mode` with quorum `k` may be
    requested and run: the model exists and is current, allows the mode, and k is within the
    protocol's bounds. Raises `ConfigError` otherwise (nothing is paid)."""
    info = client.deployment.models.model(model)
    if not info.manifest_cid:
        raise ConfigError(f"model {model} is not published on this deployment")
    if info.deprecated:
        raise ConfigError(f"model {model} is deprecated; request its latest version instead")
    if not info.modes & mode:
        allowed = ", ".join(str(m.name).lower() for m in Mode if info.modes & m)
        raise ConfigError(
            f"model {model} does not allow {str(mode.name).lower()} jobs (it allows {allowed})"
        )
    if mode == Mode.QUORUM:
        params = client.deployment.params.snapshot()
        if not params.min_quorum <= k <= params.max_quorum:
            raise ConfigError(
                f"k={k} is outside the protocol's quorum bounds "
                f"{params.min_quorum}..{params.max_quorum}"
            )
    return info


def node_limits(
    client: Client, nodes: Sequence[NodeEndpoint]
) -> tuple[dict[NodeEndpoint, NodeLimits], list[str]]:
    """Each reachable node's advertised limits (asked all at once), and why the others were
    counted out."""
    pending = [(n, client._senders.submit(_limits_of, client._http, n.url)) for n in nodes]
    limits: dict[NodeEndpoint, NodeLimits] = {}
    missing: list[str] = []
    for node, future in pending:
        found = future.result()
        if isinstance(found, str):
            missing.append(f"{node.url}: {found}")
        else:
            limits[node] = found
    return limits, missing


def _limits_of(http: httpx.Client, url: str) -> NodeLimits | str:
    try:
        response = http.get(f"{url}/healthz", timeout=HEALTH_TIMEOUT)
        body = safe_json.loads(response.content) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        return f"did not answer /healthz ({type(exc).__name__})"
    if not isinstance(body, dict):
        return f"answered /healthz with {response.status_code}"
    limits = body.get("limits")
    limits = limits if isinstance(limits, dict) else {}
    inline = _positive(limits.get("max_request_bytes"), DEFAULT_MAX_REQUEST_BYTES)
    # A node that says nothing about blobs fetches at most its body limit (older nodes did).
    return NodeLimits(inline, _positive(limits.get("max_input_blob_bytes"), inline))


def _positive(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    )


def plan(
    client: Client,
    model: ModelId,
    seats: int,
    feeds: Mapping[str, Array],
    say: Progress,
    *,
    receipts: bool = False,
    store: BlobStore | None = None,
    store_url: str | None = None,
) -> Delivery:
    """Which nodes get the input and how, checked before paying: at least `seats` nodes
    that serve `model`, answer, and take an input this size (in the body, or by CID when the
    client has a blob store the nodes fetch from; the blob is put there now). Raises `NoNodes`,
    `NotEnoughNodes` (naming how many serve the model) or `InputTooLarge`."""
    nodes = client.nodes(model)
    if not nodes:
        raise NoNodes(f"no staked node serves model {model}; nobody could run it")
    if len(nodes) < seats:
        raise NotEnoughNodes(
            f"a quorum of {seats} needs {seats} nodes serving model {model}, but "
            f"{len(nodes)} serve it; ask for k <= {len(nodes)} or wait for more nodes",
            serving=len(nodes),
            needed=seats,
        )
    say(f"asking {len(nodes)} nodes what they take")
    limits, missing = node_limits(client, nodes)
    if len(limits) < seats:
        raise NotEnoughNodes(
            f"{seats} node(s) must take the input of model {model}; {len(nodes)} serve it but "
            f"only {len(limits)} answered: {'; '.join(missing)}",
            serving=len(nodes),
            needed=seats,
        )
    tensors = group_to_json(feeds)
    size = len(encode_json({"inputs": tensors})) + (RECEIPT_REQUEST_BYTES if receipts else 0)
    answering = [n for n in nodes if n in limits]
    inline = tuple(n for n in answering if size <= limits[n].max_request_bytes)
    if len(inline) >= seats and len(inline) == len(answering):
        return Delivery(tensors, inline, ())
    blob = encode_group(feeds)
    fetchers = tuple(
        n for n in answering if n not in inline and len(blob) <= limits[n].max_input_blob_bytes
    )
    if store is None or store_url is None or len(inline) + len(fetchers) < seats:
        largest = max(limit.max_request_bytes for limit in limits.values())
        if len(inline) >= seats:  # enough nodes take it in the body; the others are left out
            return Delivery(tensors, inline, ())
        how = (
            "give the client a blob store the nodes fetch from (blob_store=, blob_url=) so "
            "it sends the input by CID, or send less"
            if store is None or store_url is None
            else f"the nodes fetch blobs of at most "
            f"{max(limit.max_input_blob_bytes for limit in limits.values())} bytes; send less"
        )
        raise InputTooLarge(
            f"the input's request body is {size} bytes (its blob {len(blob)}); {len(inline)} of "
            f"the {len(answering)} answering nodes take a body that size (the largest limit is "
            f"{largest}) and {seats} must take it: {how}. Nothing was paid"
        )
    cid = store.put(blob)
    say(f"the input ({len(blob)} bytes) goes by CID to {len(fetchers)} node(s)")
    return Delivery(tensors, inline, fetchers, cid, (store_url,))


def finalize(client: Client, job_id: JobId) -> tuple[Job, TxHash | None]:
    """End `job_id` if anyone may now: the job as the chain has it afterwards, and the
    finalize transaction if this client sent it. A job that has ended already is returned as
    it is; one whose deadline has not passed raises `TooEarly` (saying when it will have)."""
    market = client.deployment.market
    job = market.job(job_id)
    if job.state == JobState.NONE:
        raise JobNotOpen(f"there is no job {job_id} on market {market.address}")
    if job.state.terminal:
        return job, None
    if not market.may_finalize(job_id):
        due = finalizable_from(job)
        raise TooEarly(
            f"job {job_id} is {job.state.name} and may be finalized from chain time {due} "
            f"(now {client.chain.timestamp()}), once no dispute over it is running"
        )
    try:
        tx: TxHash | None = market.finalize(job_id, sender=client.address).tx_hash
    except JobNotOpen:
        tx = None  # a node finalized it first
    return market.job(job_id), tx
