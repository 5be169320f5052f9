"""The node's HTTP API (FastAPI; the schema is at ``/openapi.json``, docs at ``/docs``).

Every refusal is a JSON body ``{"error": <class name>, "detail": <what to fix>}`` (see
`verinet.http_errors`, declared on every route of the schema) with a 4xx status: 400 malformed
JSON, tensors, signatures, CIDs or path parameters, 403 a receipt asked for by someone other
than the job's requester or a fetch from a peer that is not registered, 404 unknown route, job
or model, 405 a method the route does not take, 409 a hash that does not match, a result not
ready, or a direct run of an open quorum job's input (its answers are sealed), 413 a body over
the limit, 422 tensors that do not fit the model. 5xx: 502/504 a peer failed an input fetch,
503 too many fetches at once (retry), 500 a fault of the node's own (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

from verinet import __version__, safe_json
from verinet.errors import (
    ExecutionFailed,
    ExecutionTimeout,
    FetchBusy,
    FetchFailed,
    FetchTimeout,
    HubError,
    InputHashMismatch,
    InputSealed,
    InputTooLarge,
    InvalidInput,
    InvalidReceipt,
    JsonTooDeep,
    MalformedCid,
    MalformedTensor,
    NodeError,
    PeerNotAllowed,
    ReceiptRequestRefused,
    ResultNotReady,
    TransientError,
    VerinetError,
)
from verinet.http_errors import ERROR_RESPONSES, Guard, install, refusal
from verinet.hub.http import blob_router
from verinet.node.fetch import InputFetcher
from verinet.node.service import Node
from verinet.runtime.tensors import Array
from verinet.runtime.wire import group_from_json, group_to_json
from verinet.types import JobId, ModelId

_STATUS: tuple[tuple[type[VerinetError], int], ...] = (
    (InputTooLarge, 413),
    (MalformedTensor, 400),
    (InputHashMismatch, 409),
    (ReceiptRequestRefused, 403),
    (PeerNotAllowed, 403),
    (InputSealed, 409),
    (InvalidReceipt, 400),
    (InvalidInput, 422),
    (ResultNotReady, 409),
    (NodeError, 404),
    (MalformedCid, 400),
    (FetchBusy, 503),
    (FetchTimeout, 504),
    (FetchFailed, 502),
    (HubError, 409),
    (ExecutionTimeout, 504),
    (ExecutionFailed, 422),
    (TransientError, 503),
)


def _status(exc: VerinetError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400


MAX_ID = 2**63 - 1
"""Largest job id or step a path may carry: what the node's SQLite stores (job ids are
counted up from 1 on-chain, so no real job is refused)."""


class _IdConvertor(IntegerConvertor):
    """Starlette's ``int`` with at most 19 digits: a longer one would fail `int()` past
    Python's 4300-digit limit inside routing (a 500); now the path simply matches no route."""

    regex = "[0-9]{1,19}"


register_url_convertor("id", _IdConvertor())
JobIdPath = Annotated[int, Path(ge=0, le=MAX_ID, description="the job's on-chain id")]
StepPath = Annotated[int, Path(ge=0, le=MAX_ID)]


class TensorJson(BaseModel):
    dtype: str = Field(examples=["float32"])
    shape: list[int] = Field(examples=[[1, 16]])
    data: list[Any] | None = Field(default=None, description="values, nested or flat")
    b64: str | None = Field(default=None, description="little-endian C-order bytes, base64")


class ExecuteRequest(BaseModel):
    inputs: dict[str, TensorJson]


class ExecuteResponse(BaseModel):
    model_id: int
    node: str = Field(description="the node's address")
    input_hash: str = Field(description="sha2-256 of the canonical inputs, 0x-hex")
    output_hash: str = Field(description="sha2-256 of the canonical outputs, 0x-hex")
    outputs: dict[str, TensorJson]


class JobInput(BaseModel):
    inputs: dict[str, TensorJson] | None = Field(default=None, description="the tensors")
    input_cid: str | None = Field(default=None, description="or: their canonical blob's CID")
    peers: list[str] = Field(
        default_factory=list,
        description=(
            "where to fetch input_cid: registered nodes' endpoints (or the node's allowlist); "
            "any other is refused (403) uncontacted"
        ),
    )
    receipt_request: str | None = Field(
        default=None,
        description=(
            "quorum jobs: 0x-hex EIP-712 ReceiptRequest(jobId, node) signed by the job's "
            "requester; the response then carries this node's receipt, for submit_quorum"
        ),
    )


class _LeanRoute(APIRoute):
    """A route documented like any other whose requests skip FastAPI's per-request machinery
    (dependency solving, parameter validation, response serialization): its endpoint takes
    the path parameters (typed by the path's convertors) and the `Request`, and returns a
    `Response`. For the execute path, where that machinery cost ~80 µs a request on the
    benchmark machine, more than the node's own work and a small model's run together."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(**request.path_params, request=request)
            return response

        return handle


INLINE_DECODE = 64 * 1024
"""Bodies up to this size are parsed on the event loop (tens of µs); larger ones in a thread."""


async def _json_body(request: Request) -> Any:
    return _parse(await request.body())


def _parse(raw: bytes) -> Any:
    try:
        return safe_json.loads(raw)
    except JsonTooDeep as exc:
        raise MalformedTensor(
            f"the body is {exc}; send each tensor as flat data with a shape"
        ) from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise MalformedTensor(f"the body is not valid JSON: {exc}") from None


def _receipt_request(body: Any) -> bytes | None:
    raw = body.get("receipt_request") if isinstance(body, dict) else None
    if raw is None:
        return None
    try:
        if not isinstance(raw, str) or not raw.startswith("0x"):
            raise ValueError("not 0x-prefixed")
        signature = bytes.fromhex(raw[2:])
    except ValueError:
        raise MalformedTensor(
            "receipt_request must be the 0x-hex of a 65-byte EIP-712 ReceiptRequest signature"
        ) from None
    return signature


JSON = "application/json"
_EXECUTE = re.compile(r"/v1/models/([0-9]{1,19})/execute")


def executor(node: Node) -> Callable[[int, bytes], Awaitable[bytes]]:
    """``POST /v1/models/{id}/execute``: from the request body to the response body."""
    limit = node.settings.max_request_bytes

    async def run(model_id: int, raw: bytes) -> bytes:
        if len(raw) <= INLINE_DECODE:
            result = await node.execute_async(ModelId(model_id), _inputs(_parse(raw), limit))
        else:  # decoding a large body must not stall the loop
            inputs = await asyncio.to_thread(lambda: _inputs(_parse(raw), limit))
            result = await node.execute_async(ModelId(model_id), inputs)
        body = {
            "model_id": model_id,
            "node": node.address,
            "input_hash": "0x" + result["input_hash"].hex(),
            "output_hash": "0x" + result["output_hash"].hex(),
            "outputs": group_to_json(result["outputs"]),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    return run


def _inputs(body: Any, limit: int) -> dict[str, Array]:
    if not isinstance(body, dict) or "inputs" not in body:
        raise MalformedTensor('the body must be {"inputs": {name: tensor, ...}}')
    return group_from_json(body["inputs"], max_bytes=limit)


class _Execute:
    """ASGI: ``POST /v1/models/{id}/execute`` straight to the node, ahead of the framework's
    middleware, routing and request objects (~60 µs of a request on the benchmark machine,
    more than the node's own work and a small model's run together); every other request,
    and the route's documentation, go to `app`. Refusals are the same as the route's: the
    contract's body and status, counted; a fault goes on to `Guard`."""

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app, self.run = app, executor(node)
        self.seen = lambda name: node.metrics.http_errors.labels(error=name).inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = (
            _EXECUTE.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if found is None:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            body = await self.run(int(found[1]), b"".join(chunks))
        except VerinetError as exc:
            await refusal(exc, _status, self.seen)(scope, receive, send)
            return
        headers = [(b"content-type", JSON.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def node_router(node: Node, fetcher: InputFetcher) -> APIRouter:
    router = APIRouter(responses=ERROR_RESPONSES)
    limit = node.settings.max_request_bytes

    def inputs_of(body: Any) -> dict[str, Array]:
        return _inputs(body, limit)

    run = executor(node)

    # First: routes match in order, and this is the hot one.
    async def execute(model_id: int, request: Request) -> Response:
        """Run the model now, off-chain (no payment, no receipt): outputs and hashes."""
        return Response(await run(model_id, await request.body()), media_type=JSON)

    router.add_api_route(
        "/v1/models/{model_id:id}/execute",
        execute,
        methods=["POST"],
        tags=["models"],
        response_model=ExecuteResponse,
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": ExecuteRequest.model_json_schema()}},
                "required": True,
            }
        },
        route_class_override=_LeanRoute,
    )

    @router.get("/healthz", tags=["node"])
    async def healthz() -> dict[str, Any]:
        """Liveness and a summary: chain, block, models served, jobs by stage."""
        return {"status": "ok", "version": __version__, **await asyncio.to_thread(node.status)}

    @router.get("/metrics", tags=["node"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(node.metrics.render(), media_type="text/plain; version=0.0.4")

    @router.get("/v1/models", tags=["models"])
    async def models() -> list[dict[str, Any]]:
        """Models this node serves, with their manifests."""
        return [
            {
                "model_id": m.model_id,
                "manifest_cid": m.manifest_cid,
                "manifest": json.loads(m.manifest.canonical()),
            }
            for m in node.models.values()
        ]

    @router.post(
        "/v1/jobs/{job_id}/input",
        tags=["jobs"],
        status_code=202,
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": JobInput.model_json_schema()}},
                "required": True,
            }
        },
    )
    async def job_input(job_id: JobIdPath, request: Request) -> dict[str, Any]:
        """Send a job's input (tensors, or the CID of their canonical blob and peers that hold
        it). They must hash to the job's on-chain input hash. The node executes at once and
        takes part if it is drawn."""
        body = await _json_body(request)
        asked = _receipt_request(body)
        if isinstance(body, dict) and "input_cid" in body:
            cid, peers = body.get("input_cid"), body.get("peers", [])
            if not isinstance(cid, str) or not isinstance(peers, list):
                raise MalformedTensor("input_cid must be a string and peers a list of URLs")
            if not all(isinstance(p, str) for p in peers):
                raise MalformedTensor("peers must be a list of base URLs (strings)")
            # Fetched (if missing) under the fetch rules, on this loop: no thread is held.
            name = await fetcher.fetch_input(JobId(job_id), cid, peers)
            record, receipt = await asyncio.to_thread(
                lambda: node.accept_input_blob(JobId(job_id), name, receipt_request=asked)
            )
        else:
            record, receipt = await asyncio.to_thread(
                lambda: node.accept_input(JobId(job_id), inputs_of(body), receipt_request=asked)
            )
        out = record.to_json()
        if receipt is not None:  # for the requester's eyes: it asked with its signature
            out["receipt"] = {
                "node": receipt.node,
                "output_hash": "0x" + receipt.output_hash.hex(),
                "signature": "0x" + receipt.signature.hex(),
            }
        return out

    @router.get("/v1/jobs/{job_id}", tags=["jobs"])
    async def job(job_id: JobIdPath) -> dict[str, Any]:
        """This node's record of a job: stage, hashes, transactions."""
        return (await asyncio.to_thread(node.record, JobId(job_id))).to_json()

    @router.get("/v1/jobs/{job_id}/result", tags=["jobs"])
    async def result(job_id: JobIdPath) -> dict[str, Any]:
        """Outputs, output hash and (signed mode) the EIP-712 receipt signature, once the node
        may publish them."""
        return await asyncio.to_thread(node.result, JobId(job_id))

    @router.get("/v1/jobs/{job_id}/trace/{step}", tags=["jobs"])
    async def trace(job_id: JobIdPath, step: StepPath) -> dict[str, Any]:
        """Op `step` (1-based) of this node's traced run: its outputs, hash, hash-chain links
        and Merkle proof against the trace root."""
        try:
            return await asyncio.to_thread(node.trace_step, JobId(job_id), step)
        except IndexError as exc:
            raise ResultNotReady(str(exc)) from None

    @router.get("/v1/jobs/{job_id}/evidence/{step}", tags=["disputes"])
    async def evidence(job_id: JobIdPath, step: StepPath) -> Response:
        """The evidence for step `step` (1..N+1) of the result this node put on-chain: what a
        dispute's committee re-executes the step from (graph inputs, the producers' outputs
        with Merkle proofs, the op hashes before the step)."""
        body = await asyncio.to_thread(node.evidence, JobId(job_id), step)
        return Response(body, media_type="application/json")

    return router


def node_app(node: Node) -> ASGIApp:
    settings = node.settings
    fetcher = InputFetcher(
        market=node.market,
        registry=node.deployment.nodes,
        store=node.store,
        # The peers the operator configured for replication (a devnet's hub) are trusted too.
        allowlist=[*settings.fetch_allowlist, *settings.peers],
        deadline=settings.fetch_deadline,
        concurrency=settings.fetch_concurrency,
        max_bytes=settings.max_input_blob_bytes,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            fetcher.close()

    app = FastAPI(
        title="Verinet node",
        version=__version__,
        description="Verified inference: jobs, results with evidence, blobs by CID.",
        lifespan=lifespan,
    )
    install(app, _status, count=lambda name: node.metrics.http_errors.labels(error=name).inc())
    app.include_router(node_router(node, fetcher))
    app.include_router(blob_router(node.store), tags=["blobs"])
    return Guard(_Execute(app, node), settings.max_request_bytes)
