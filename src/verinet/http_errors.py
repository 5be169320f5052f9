"""The one error contract of every HTTP server Verinet runs (a node's API, a blob server).

Every error response is ``{"error": <class name>, "detail": <what to fix>}``: a Verinet error
by its class name, a framework refusal by its HTTP reason in one word (``NotFound``,
``MethodNotAllowed``), a malformed path or query parameter as ``BadRequest``, and any
exception nobody expected as ``InternalError`` with status 500, logged with its traceback.
Bodies over the size limit are ``PayloadTooLarge`` (413), whether announced by
Content-Length or found while a chunked body streams in.

`install` puts the handlers on an app; `Guard` wraps it (outermost) for the body limit and
for faults raised where no handler reaches (after a response started, or in middleware).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verinet.errors import PayloadTooLarge, VerinetError

log = logging.getLogger("verinet.http")

MAX_DETAIL = 2048
"""Longest `detail` sent: messages may quote what a client sent, and a client may send a lot."""


class ErrorBody(BaseModel):
    """What every error response carries."""

    error: str = Field(
        description="the error's class name (see verinet.errors), or the HTTP reason in one "
        "word for a refusal by the framework (NotFound, MethodNotAllowed, BadRequest)",
        examples=["UnknownJob"],
    )
    detail: str = Field(
        description="what happened and what to send instead",
        examples=["this node has no record of job 7; send its input first"],
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "malformed request: JSON, tensors, signatures, CIDs or path parameters"),
        (403, "not allowed: a receipt asked for by another account, a peer not registered"),
        (404, "unknown route, job, model or blob"),
        (409, "conflict: a hash that does not match, a result not ready, a sealed input"),
        (413, "the request body is over the node's limit"),
        (422, "the tensors do not fit the model"),
        (500, "a fault in the server itself (logged); not the request's"),
    )
}
"""The error responses every route declares in the OpenAPI schema (`responses=` of a router)."""


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 20] + f"... ({len(detail)} chars)"
    return JSONResponse({"error": error, "detail": detail}, status, headers=headers)


def refusal(
    exc: VerinetError, status_of: Callable[[VerinetError], int], seen: Callable[[str], None]
) -> JSONResponse:
    """The response to a Verinet error (`seen` counts it by name)."""
    name = type(exc).__name__
    seen(name)
    status = status_of(exc)
    headers = {"Retry-After": "2"} if status in (429, 503) else None
    return error_response(status, name, str(exc), headers)


def reason(status: int) -> str:
    """The HTTP reason phrase as one identifier: 404 → NotFound."""
    try:
        return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")
    except ValueError:
        return f"Http{status}"


def install(
    app: FastAPI,
    status_of: Callable[[VerinetError], int],
    *,
    count: Callable[[str], None] | None = None,
) -> None:
    """Answer every error `app` raises in the contract's shape; `status_of` maps Verinet's
    errors to statuses and `count(error)` sees each error response's name."""
    seen = count or (lambda _name: None)

    async def verinet_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VerinetError)
        return refusal(exc, status_of, seen)

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        seen("BadRequest")
        detail = f"{where}: {first.get('msg', 'invalid request')}"
        return error_response(400, "BadRequest", detail)

    async def framework(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        name = reason(exc.status_code)
        seen(name)
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == HTTPStatus.NOT_FOUND.phrase:
            detail = f"no route {request.url.path[:200]!r}; the routes are in /openapi.json"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            detail = f"{request.method} is not allowed here; use {allowed or 'another method'}"
        return error_response(exc.status_code, name, detail, dict(exc.headers or {}) or None)

    async def fault(request: Request, exc: Exception) -> JSONResponse:
        seen("InternalError")
        log.error(
            "unhandled %s on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path[:200],
            exc_info=exc,
        )
        return _fault()

    app.add_exception_handler(VerinetError, verinet_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(HTTPException, framework)
    app.add_exception_handler(Exception, fault)


def _fault() -> JSONResponse:
    return error_response(
        500, "InternalError", "the server failed on this request (logged); report it if it lasts"
    )


def _too_large(limit: int) -> JSONResponse:
    return error_response(
        413, PayloadTooLarge.__name__, f"request body over {limit} bytes; send less"
    )


class Guard:
    """Outermost ASGI wrapper: refuses bodies over `limit` bytes with 413 (by Content-Length,
    or while a chunked body streams: reading past the limit raises `PayloadTooLarge` in the
    app, whose handler answers), and answers anything that escapes the app's handlers with a
    500 in the contract's shape instead of a bare one (or nothing)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(self.limit)(scope, receive, send)
            return
        started = False
        seen = 0

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(f"request body over {self.limit} bytes; send less")
            return message

        # With Content-Length the server reads exactly that many bytes: nothing to count.
        inner = receive if declared is not None else bounded
        try:
            await self.app(scope, inner, sending)
        except PayloadTooLarge:
            if not started:
                await _too_large(self.limit)(scope, receive, send)
        except Exception:
            # The app's own handler has answered and logged it if it could; else we do.
            if not started:
                log.exception("unhandled fault on %s", scope.get("path", "?")[:200])
                await _fault()(scope, receive, send)
