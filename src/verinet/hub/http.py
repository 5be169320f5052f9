"""The blob endpoint peers replicate from: ``GET`` / ``HEAD /blobs/{cid}``.

Blobs are immutable (the CID is the hash of the bytes), so responses carry a strong ETag equal
to the CID and may be cached forever. Every body is read through `BlobStore.get`, which
re-hashes it, so a node never serves bytes that disagree with their name.

Ranges: one ``bytes`` range (``a-b``, ``a-``, ``-n``) is served as 206; a satisfiable-looking
but empty selection gives 416 with ``Content-Range: bytes */size``. Any other Range header
(another unit, bad syntax, several ranges) is ignored and the whole blob sent with 200. RFC 9110
section 14.2 allows either ignoring or rejecting such headers; ignoring is always safe because a
client that sends Range must already accept a 200 (any cache or proxy on the way may drop the
header), blobs are small (a chunk is at most 1 MiB), and clients verify whole bodies by hash.

Errors have one JSON shape, `verinet.http_errors`'s contract: ``{"error":
"<ExceptionClassName>", "detail": "<message>"}``, framework refusals (404, 405) included.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from verinet.errors import BlobNotFound, CorruptBlob, MalformedCid, VerinetError
from verinet.http_errors import ERROR_RESPONSES, Guard, error_response, install
from verinet.hub import cid as cids
from verinet.hub.store import BlobStore

_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})", re.IGNORECASE)  # bounded digits
_IMMUTABLE = "public, max-age=31536000, immutable"


class _Unsatisfiable(Exception):
    """The Range header is well formed but selects no byte of the blob."""


def blob_router(store: BlobStore) -> APIRouter:
    """Routes serving `store`'s blobs by CID, with single byte-range support."""
    router = APIRouter(responses=ERROR_RESPONSES)

    # A plain `def`: the store does blocking disk I/O, so FastAPI runs this in its threadpool.
    @router.get("/blobs/{cid}", response_class=Response)
    @router.head("/blobs/{cid}", response_class=Response, include_in_schema=False)
    def get_blob(cid: str, request: Request) -> Response:
        try:
            name = cids.normalize(cid)
            # HEAD reads and verifies too, so it answers exactly as GET would (RFC 9110 9.3.2).
            data = store.get(name)
        except MalformedCid as exc:
            return _error(400, MalformedCid.__name__, str(exc))
        # The store's own messages name paths on this machine; peers get their own wording.
        except BlobNotFound:
            return _error(404, BlobNotFound.__name__, f"no blob {name} on this node")
        except CorruptBlob:
            # A corrupt blob is a local fault, not the client's, but a 5xx would read as "try
            # again here". The store has quarantined the file, so this node no longer holds
            # the blob: 404 tells the peer to fetch it elsewhere, and the error name says why.
            detail = f"blob {name} failed verification on this node and was quarantined"
            return _error(404, CorruptBlob.__name__, detail)
        headers = {
            "ETag": f'"{name}"',
            "Accept-Ranges": "bytes",
            "Cache-Control": _IMMUTABLE,
        }
        spec = _wanted_range(request, headers["ETag"])
        if spec is None:
            return Response(data, media_type="application/octet-stream", headers=headers)
        try:
            start, end = _resolve(spec, len(data))
        except _Unsatisfiable:
            headers["Content-Range"] = f"bytes */{len(data)}"
            asked = request.headers["range"].strip()
            detail = f"range {asked!r} selects nothing of a {len(data)}-byte blob"
            return _error(416, "RangeNotSatisfiable", detail, headers)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return Response(
            data[start : end + 1], 206, media_type="application/octet-stream", headers=headers
        )

    return router


MAX_BODY = 64 * 1024
"""Largest request body the blob server reads; its routes take none."""


def blob_app(store: BlobStore) -> ASGIApp:
    """An app serving `store` (the blob endpoint alone, e.g. for a local peer)."""
    app = FastAPI(title="Verinet blobs", docs_url=None, redoc_url=None, openapi_url=None)
    install(app, _status)
    app.include_router(blob_router(store))
    return Guard(app, MAX_BODY)


def _status(exc: VerinetError) -> int:
    return 404 if isinstance(exc, (BlobNotFound, CorruptBlob)) else 400


def _wanted_range(request: Request, etag: str) -> tuple[int | None, int | None] | None:
    """The single byte range asked for, as (first, last) with either side open; None: all."""
    header = request.headers.get("range")
    # Range is defined for GET only; RFC 9110 14.2 says to ignore it on other methods.
    if header is None or request.method != "GET":
        return None
    # If-Range asks for the range only if the blob is unchanged; with a CID the only validator
    # it can match is our ETag, and anything else (a date, another tag) means "send it all".
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:  # another unit, several ranges, or bad syntax: ignored, see module doc
        return None
    first, last = (int(group) if group else None for group in match.groups())
    if first is None and last is None:
        return None  # "bytes=-" is not a range
    if first is not None and last is not None and last < first:
        return None  # invalid per RFC 9110 14.1.1, so ignored like any other invalid spec
    return first, last


def _resolve(spec: tuple[int | None, int | None], size: int) -> tuple[int, int]:
    """Inclusive (start, end) offsets within `size` bytes; `_Unsatisfiable` if none."""
    first, last = spec
    if first is None:  # suffix range: the last `last` bytes
        if not last or size == 0:
            raise _Unsatisfiable
        return max(0, size - last), size - 1
    if first >= size:
        raise _Unsatisfiable
    end = size - 1 if last is None else min(last, size - 1)
    return first, end


def _error(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    # Errors other than 416 may change (the node may fetch the blob later): never cache them.
    headers = headers or {"Cache-Control": "no-store"}
    return error_response(status, error, detail, headers)
