"""Hostile HTTP against a running node: every route, many malformed requests, one contract.

Every answer the node gives to a request it refuses is ``{"error": <class name>, "detail":
<what to fix>}`` with a 4xx status (5xx only for the node's own faults, and none of these
requests is one). Cases are generated from the node's own OpenAPI schema, so a route added
later is thrown the same requests without editing this file.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.node.test_node_jobs import make_world
from verinet._server import serve
from verinet.http_errors import Guard, install
from verinet.hub.http import blob_app
from verinet.hub.store import DiskStore
from verinet.node.api import node_app
from verinet.protocol.receipts import HALF_N
from verinet.protocol.types import Mode
from verinet.runtime.wire import group_to_json

LIMIT = 64 * 1024
HUGE = 2**256
ERROR_STATUSES = ("400", "403", "404", "409", "413", "422", "500")


@dataclass
class Live:
    url: str
    http: httpx.Client
    job_id: int
    model_id: int
    good: dict[str, Any]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    # One node for the module: these requests change nothing a later one depends on.
    world = make_world(tmp_path_factory.mktemp("hostile"))
    node = world.node(0, max_request_bytes=LIMIT)
    job_id = world.request(Mode.QUORUM, 3)
    good = {"inputs": group_to_json(world.sample.example)}
    with serve(node_app(node)) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield Live(url, http, int(job_id), world.model_id, good)


def assert_contract_shape(response: httpx.Response) -> None:
    body = response.json()
    assert set(body) == {"error", "detail"} and all(isinstance(v, str) for v in body.values())


def assert_contract(response: httpx.Response, what: str) -> None:
    """A refusal in the contract's shape, and never a 5xx for a client's mistake."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code < 400 or response.request.method == "HEAD":
        return
    try:
        body = response.json()
    except ValueError:
        pytest.fail(f"{what}: {response.status_code} with a body that is not JSON: {response.text}")
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, f"{what}: {body}"
    assert isinstance(body["error"], str) and body["error"].isidentifier(), f"{what}: {body}"
    assert isinstance(body["detail"], str) and body["detail"], f"{what}: {body}"


def tensor(**fields: Any) -> dict[str, Any]:
    return {"inputs": {"x": fields}}


TENSORS: list[dict[str, Any]] = [
    tensor(dtype="float32", shape=[2**40, 2**40, 0], data=[]),
    tensor(dtype="float32", shape=[2**40, 2**40, 0], b64=""),
    tensor(dtype="float32", shape=[2**62, 2**62, 0], data=[]),
    tensor(dtype="float32", shape=[2**64, 0], data=[]),
    tensor(dtype="float32", shape=[HUGE, 0], data=[]),
    tensor(dtype="string", shape=[2**40, 2**40, 0], data=[]),
    tensor(dtype="float32", shape=[2**40, 2**40, 0]),
    tensor(dtype="float32", shape=[-1, 16], data=[0.0] * 16),
    tensor(dtype="float32", shape=[-(2**70)], data=[]),
    tensor(dtype="float32", shape=[1, 16], data=[0.0] * 15),
    tensor(dtype="float32", shape=[1] * 10_000, data=[0.0]),
    tensor(dtype="float32", shape=[1, 1.5], data=[0.0]),
    tensor(dtype="float32", shape="1,16", data=[0.0] * 16),
    tensor(dtype="float32", shape=[True], data=[0.0]),
    tensor(dtype="float32", shape=None, data=[0.0]),
    tensor(dtype="Float32", shape=[1], data=[0.0]),
    tensor(dtype="float128", shape=[1], data=[0.0]),
    tensor(dtype="object", shape=[1], data=[0.0]),
    tensor(dtype="", shape=[1], data=[0.0]),
    tensor(dtype=None, shape=[1], data=[0.0]),
    tensor(dtype="float32", shape=[4], b64="!!!!garbage"),
    tensor(dtype="float32", shape=[4], b64="AAAA" * 3),
    tensor(dtype="float32", shape=[4], b64=12),
    tensor(dtype="string", shape=[1], b64="AAAA"),
    tensor(dtype="int64", shape=[1], data=[HUGE]),
    tensor(dtype="int8", shape=[1], data=[-129]),
    tensor(dtype="uint64", shape=[1], data=[-1]),
    tensor(dtype="float16", shape=[1], data=[1e300]),
    tensor(dtype="float32", shape=[1], data=[{"a": 1}]),
    tensor(dtype="float32", shape=[2], data=[[1.0], 2.0]),
    tensor(dtype="bool", shape=[1], data=[2]),
    tensor(dtype="float32", shape=[1, 16], data=[0.0] * 16, b64=""),
    tensor(dtype="float32", shape=[1, 16], values=[0.0] * 16),
    {"inputs": {"x": [1, 2, 3]}},
    {"inputs": [1, 2, 3]},
    {"inputs": {}},
    {"inputs": None},
    {"input": {}},
    [],
    "inputs",
    12,
    None,
]
RECEIPTS: list[Any] = [
    "0x" + "00" * 65,
    "0x" + "00" * 64,
    "0x" + "00" * 66,
    "0x",
    "0x" + "ff" * 65,
    "0x" + (HALF_N + 1).to_bytes(32, "big").hex() * 2 + "1b",
    "0x" + "11" * 64 + "1b",
    "0x" + "11" * 64 + "00",
    "0xzz",
    "00" * 65,
    65,
    ["0x00"],
    "0x" + "0" * 131,
]
CIDS: list[dict[str, Any]] = [
    {"input_cid": "not-a-cid"},
    {"input_cid": ""},
    {"input_cid": 7},
    {"input_cid": None},
    {"input_cid": "bafkrei" + "a" * 52, "peers": "http://127.0.0.1:1"},
    {"input_cid": "bafkrei" + "a" * 52, "peers": [1, 2]},
    {"input_cid": "bafkrei" + "a" * 52, "peers": ["not a url"]},
    {"input_cid": "b" + "a" * 10_000},
]
RAW: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"{not json", "application/json"),
    (b"\xff\xfe\x00", "application/json"),
    (b"[" * 100_000, "application/json"),
    (b'{"inputs": ' * 5_000, "application/json"),
    (b"NaN", "application/json"),
    (b'{"inputs": {"x": {"dtype": "float32", "shape": [1], "data": [1e400]}}}', "application/json"),
    (b'{"inputs": {"x": {"dtype": "float32", "shape": [1], "data": [NaN]}}}', "application/json"),
    (b'{"inputs": {"x": {"dtype": "float32", "shape": [1e999], "data": []}}}', "text/plain"),
    (b"1" * 5_000, "application/json"),
    (b"x=1&y=2", "application/x-www-form-urlencoded"),
]
PATH_VALUES = [
    str(HUGE),
    str(2**63),
    str(2**64),
    "-1",
    "-" + str(HUGE),
    "0",
    "abc",
    "1e3",
    "1.5",
    "%00",
    "9" * 5_000,
    "%F0%9F%92%A9",
]


def _json_bodies(live: Live) -> list[Any]:
    good_receipts = [{**live.good, "receipt_request": r} for r in RECEIPTS]
    return [*TENSORS, *good_receipts, *CIDS]


def test_every_route_declares_the_error_body(live: Live) -> None:
    schema = live.http.get("/openapi.json").json()
    assert "ErrorBody" in schema["components"]["schemas"]
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) == {"error", "detail"}
    checked = 0
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for status in ERROR_STATUSES:
                declared = operation["responses"].get(status)
                assert declared is not None, f"{method.upper()} {path} does not declare {status}"
                ref = declared["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), f"{method.upper()} {path} {status}: {ref}"
            checked += 1
    assert checked >= 9


def _concrete(path: str, value: str, live: Live) -> str:
    """`path` with its first parameter set to `value` and any other to a plausible one."""
    out, first = [], True
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            out.append(value if first else "1")
            first = False
        else:
            out.append(part)
    return "/".join(out)


def test_hostile_requests_on_every_route_get_the_contract(live: Live) -> None:
    schema = live.http.get("/openapi.json").json()
    sent = 0
    for path, methods in schema["paths"].items():
        templated = "{" in path
        values = PATH_VALUES if templated else [""]
        for method in methods:
            for value in values:
                url = _concrete(path, value, live) if templated else path
                r = live.http.request(method.upper(), url)
                assert_contract(r, f"{method.upper()} {url[:80]}")
                sent += 1
                if method != "post":
                    continue
                for body in _json_bodies(live):
                    r = live.http.post(url, json=body)
                    assert_contract(r, f"POST {url[:80]} {json.dumps(body)[:200]}")
                    sent += 1
                for raw, kind in RAW:
                    r = live.http.post(url, content=raw, headers={"content-type": kind})
                    assert_contract(r, f"POST {url[:80]} {raw[:40]!r}")
                    sent += 1
            for other in ("PUT", "DELETE", "PATCH", "OPTIONS"):
                r = live.http.request(other, _concrete(path, "1", live))
                assert r.status_code in (404, 405), f"{other} {path}: {r.status_code}"
                assert_contract(r, f"{other} {path}")
                sent += 1
    assert sent > 500


@pytest.mark.parametrize("body", TENSORS + CIDS, ids=[json.dumps(t)[:60] for t in TENSORS + CIDS])
def test_hostile_tensors_to_a_real_job(live: Live, body: Any) -> None:
    for url in (f"/v1/jobs/{live.job_id}/input", f"/v1/models/{live.model_id}/execute"):
        assert_contract(live.http.post(url, json=body), f"POST {url} {json.dumps(body)[:200]}")


@pytest.mark.parametrize("signature", RECEIPTS)
def test_malformed_receipt_requests_are_refused_as_400(live: Live, signature: Any) -> None:
    r = live.http.post(
        f"/v1/jobs/{live.job_id}/input", json={**live.good, "receipt_request": signature}
    )
    assert_contract(r, f"receipt_request {signature!r}")
    assert r.status_code in (400, 403), r.text


@pytest.mark.parametrize("job", [str(HUGE), str(2**63), "-1", "9" * 5_000])
def test_out_of_range_job_ids_are_refused_on_every_job_route(live: Live, job: str) -> None:
    for method, url in [
        ("POST", f"/v1/jobs/{job}/input"),
        ("GET", f"/v1/jobs/{job}"),
        ("GET", f"/v1/jobs/{job}/result"),
        ("GET", f"/v1/jobs/{job}/trace/1"),
        ("GET", f"/v1/jobs/{job}/evidence/1"),
        ("GET", f"/v1/jobs/{live.job_id}/trace/{job}"),
        ("GET", f"/v1/jobs/{live.job_id}/evidence/{job}"),
    ]:
        r = live.http.request(method, url, json=live.good if method == "POST" else None)
        assert_contract(r, f"{method} {url[:80]}")
        assert 400 <= r.status_code < 500


def _chunks(total: int) -> Iterator[bytes]:
    piece = b"x" * 4096
    for _ in range(total // len(piece) + 1):
        yield piece


@pytest.mark.parametrize("route", ["/v1/jobs/{job}/input", "/v1/models/{model}/execute"])
def test_a_chunked_body_over_the_limit_is_413(live: Live, route: str) -> None:
    url = route.format(job=live.job_id, model=live.model_id)
    r = live.http.post(
        url, content=_chunks(4 * LIMIT), headers={"content-type": "application/json"}
    )
    assert "content-length" not in r.request.headers  # really chunked
    assert (r.status_code, r.json()["error"]) == (413, "PayloadTooLarge"), r.text
    assert_contract(r, f"chunked POST {url}")
    # And the node still serves after it.
    assert live.http.post(f"/v1/models/{live.model_id}/execute", json=live.good).status_code == 200


def test_framework_refusals_have_the_contract_shape(live: Live) -> None:
    r = live.http.get("/no/such/route")
    assert (r.status_code, r.json()["error"]) == (404, "NotFound")
    assert_contract(r, "unknown route")
    r = live.http.delete("/healthz")
    assert (r.status_code, r.json()["error"]) == (405, "MethodNotAllowed")
    assert_contract(r, "wrong method")
    r = live.http.get("/v1/jobs/abc")
    assert (r.status_code, r.json()["error"]) == (400, "BadRequest")
    assert "job_id" in r.json()["detail"]


def test_the_standalone_blob_server_keeps_the_contract(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "blobs")
    cid = store.put(b"hello")
    with serve(blob_app(store)) as url, httpx.Client(base_url=url, timeout=10) as http:
        assert http.get(f"/blobs/{cid}").content == b"hello"
        for method, path in [
            ("GET", "/nope"),
            ("POST", f"/blobs/{cid}"),
            ("GET", "/blobs/not-a-cid"),
            ("GET", "/blobs/" + "b" * 10_000),
            ("GET", "/blobs/" + base64.b32encode(b"\0" * 40).decode().lower()),
            ("GET", "/blobs/%00"),
        ]:
            r = http.request(method, path)
            assert 400 <= r.status_code < 500, f"{method} {path}: {r.status_code}"
            assert_contract(r, f"{method} {path[:60]}")


def test_an_unexpected_fault_is_a_logged_500_in_the_contract_shape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install(app, lambda exc: 400)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug in the server")

    with (
        caplog.at_level(logging.ERROR, logger="verinet.http"),
        serve(Guard(app, LIMIT)) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        r = http.get("/boom")
        assert (r.status_code, r.json()["error"]) == (500, "InternalError")
        assert_contract_shape(r)
        assert "a bug in the server" not in r.text  # the traceback stays in the log
        assert http.get("/boom").status_code == 500  # and the server goes on
    assert any("RuntimeError" in rec.getMessage() for rec in caplog.records)
