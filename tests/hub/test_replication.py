"""Replication over real HTTP on loopback: honest, lying, oversized, flaky and dead peers."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from verinet._server import serve
from verinet.errors import FetchFailed, InvalidManifest, MalformedCid
from verinet.hub import cid as cids
from verinet.hub.cid import CHUNK_SIZE
from verinet.hub.files import MAX_CHUNKS, ChunkList, ChunkRef, chunks_of, get_file, put_file
from verinet.hub.http import blob_app
from verinet.hub.replicate import MAX_CHUNK_LIST_BYTES, fetch_blob, replicate
from verinet.hub.store import DiskStore
from verinet.types import Cid

FILE = random.Random(2024).randbytes(7 * CHUNK_SIZE // 2)
SMALL = random.Random(7).randbytes(1000)


@dataclass
class Origin:
    url: str
    store: DiskStore
    cid: Cid
    chunk_list: ChunkList

    def blob(self, index: int) -> Cid:
        """Chunk `index` of FILE; -1 is the chunk list itself."""
        return self.cid if index < 0 else self.chunk_list.chunks[index].cid


@dataclass
class Recorder:
    """An httpx request hook: every request the client sends, in order."""

    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def to(self, base: str) -> list[tuple[str, str | None]]:
        """(cid, Range header) of each request sent to the peer at `base`."""
        return [
            (request.url.path.rsplit("/", 1)[-1], request.headers.get("range"))
            for request in self.requests
            if str(request.url).startswith(base + "/")
        ]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    store = DiskStore(tmp_path_factory.mktemp("origin"))
    cid = put_file(store, FILE)
    put_file(store, SMALL)
    chunk_list = chunks_of(store, cid)
    assert chunk_list is not None and len(chunk_list.chunks) == 4
    with serve(blob_app(store)) as url:
        yield Origin(url, store, cid, chunk_list)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(recorder: Recorder) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, event_hooks={"request": [recorder]}) as http:
        yield http


@pytest.fixture
def target(tmp_path: Path) -> DiskStore:
    return DiskStore(tmp_path / "target")


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def _dead_url(servers: ExitStack) -> str:
    """A loopback port that refuses connections: bound (so no other server can take it while
    the test runs) but never listening."""
    sock = servers.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _assert_all_verified(store: DiskStore) -> None:
    for blob in store:
        assert cids.matches(blob, store.get(blob))
    assert list((store.root / "tmp").iterdir()) == []


# --- misbehaving peers, as raw ASGI apps wrapping an honest one -------------------------------


async def _start(send: Send, status: int, length: int | None) -> None:
    headers = [(b"content-type", b"application/octet-stream")]
    if length is not None:  # without it uvicorn uses chunked transfer encoding
        headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})


def lying(inner: ASGIApp, victim: Cid, data: bytes, flip_at: int = 0) -> ASGIApp:
    """Serves `victim` with one bit flipped, everything else honestly."""
    wrong = bytearray(data)
    wrong[flip_at] ^= 0x01

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == f"/blobs/{victim}":
            await _start(send, 200, len(wrong))
            await send({"type": "http.response.body", "body": bytes(wrong)})
        else:
            await inner(scope, receive, send)

    return app


def truncating(
    inner: ASGIApp, victim: Cid, data: bytes, *, always: bool, announce: bool = True
) -> ASGIApp:
    """Drops the connection half-way through `victim`'s body (once, or every time)."""
    dropped: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        targeted = scope["type"] == "http" and scope["path"] == f"/blobs/{victim}"
        if targeted and (always or not dropped):
            dropped.append(True)
            await _start(send, 200, len(data) if announce else None)
            half = data[: len(data) // 2]
            await send({"type": "http.response.body", "body": half, "more_body": True})
            return  # uvicorn closes the connection: the response was never completed
        await inner(scope, receive, send)

    return app


def oversized(*, announce: bool, total: int = 16 * CHUNK_SIZE) -> ASGIApp:
    """Serves `total` zero bytes for every blob, with or without a Content-Length."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await _start(send, 200, total if announce else None)
        piece = bytes(64 * 1024)
        # Sends after the client has hung up are dropped by uvicorn, so this ends quickly.
        for _ in range(total // len(piece)):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


async def failing(scope: Scope, receive: Receive, send: Send) -> None:
    """A peer that answers every request with a 500."""
    if scope["type"] == "http":
        await _start(send, 500, 0)
        await send({"type": "http.response.body", "body": b""})


# --- the blob endpoint ------------------------------------------------------------------------


RANGE_CASES: list[tuple[str, int, str | None, bytes | None]] = [
    ("bytes=0-9", 206, "bytes 0-9/1000", SMALL[:10]),
    ("bytes=10-", 206, "bytes 10-999/1000", SMALL[10:]),
    ("bytes=-5", 206, "bytes 995-999/1000", SMALL[-5:]),
    ("bytes=990-5000", 206, "bytes 990-999/1000", SMALL[990:]),  # end clamped
    ("bytes=-5000", 206, "bytes 0-999/1000", SMALL),
    ("BYTES=999-999", 206, "bytes 999-999/1000", SMALL[999:]),  # units are case-insensitive
    ("bytes=1000-", 416, "bytes */1000", None),
    ("bytes=-0", 416, "bytes */1000", None),
    # Not one satisfiable byte range: ignored, whole blob (RFC 9110 14.2).
    ("bytes=0-1,5-6", 200, None, SMALL),
    ("items=0-9", 200, None, SMALL),
    ("bytes=9-0", 200, None, SMALL),
    ("bytes=abc", 200, None, SMALL),
    ("bytes=-", 200, None, SMALL),
]


@pytest.mark.parametrize(
    ("range_header", "status", "content_range", "body"),
    RANGE_CASES,
    ids=[case[0] for case in RANGE_CASES],
)
def test_ranges(
    origin: Origin,
    client: httpx.Client,
    range_header: str,
    status: int,
    content_range: str | None,
    body: bytes | None,
) -> None:
    cid = cids.cid_of(SMALL)
    response = client.get(f"{origin.url}/blobs/{cid}", headers={"Range": range_header})
    assert response.status_code == status
    assert response.headers.get("content-range") == content_range
    assert response.headers["etag"] == f'"{cid}"'
    if body is None:
        assert response.json()["error"] == "RangeNotSatisfiable"
    else:
        assert response.content == body
        assert response.headers["content-length"] == str(len(body))
        assert response.headers["content-type"] == "application/octet-stream"


def test_full_get_and_head(origin: Origin, client: httpx.Client) -> None:
    cid = cids.cid_of(SMALL)
    response = client.get(f"{origin.url}/blobs/{cid}")
    assert response.status_code == 200 and response.content == SMALL
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    head = client.head(f"{origin.url}/blobs/{cid}", headers={"Range": "bytes=0-9"})
    assert head.status_code == 200  # Range is defined for GET only
    assert head.content == b""
    assert head.headers["content-length"] == "1000"
    assert head.headers["etag"] == f'"{cid}"'
    # Another base of the same CID names the same blob; the ETag is the canonical form.
    other = str(cids.parse(cid).set(base="base58btc"))
    assert client.get(f"{origin.url}/blobs/{other}").headers["etag"] == f'"{cid}"'


def test_if_range(origin: Origin, client: httpx.Client) -> None:
    cid = cids.cid_of(SMALL)
    url = f"{origin.url}/blobs/{cid}"
    matching = client.get(url, headers={"Range": "bytes=0-9", "If-Range": f'"{cid}"'})
    assert matching.status_code == 206 and matching.content == SMALL[:10]
    stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"something-else"'})
    assert stale.status_code == 200 and stale.content == SMALL


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("not-a-cid", 400, "MalformedCid"),
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", 400, "MalformedCid"),
        (cids.cid_of(b"nobody has this"), 404, "BlobNotFound"),
    ],
)
def test_endpoint_errors(
    origin: Origin, client: httpx.Client, path: str, status: int, error: str
) -> None:
    response = client.get(f"{origin.url}/blobs/{path}")
    assert response.status_code == status
    assert response.json().keys() == {"error", "detail"}
    assert response.json()["error"] == error
    assert client.head(f"{origin.url}/blobs/{path}").status_code == status


def test_corrupt_blob_is_not_served(tmp_path: Path, client: httpx.Client) -> None:
    store = DiskStore(tmp_path)
    cid = store.put(b"will rot on disk")
    path = store.root / "blobs" / cid[-2:] / cid
    path.write_bytes(b"W" + path.read_bytes()[1:])
    with serve(blob_app(store)) as url:
        response = client.get(f"{url}/blobs/{cid}")
        assert response.status_code == 404
        assert response.json()["error"] == "CorruptBlob"
        assert str(tmp_path) not in response.text  # no local paths leak to peers
        assert not store.has(cid)
        assert client.get(f"{url}/blobs/{cid}").json()["error"] == "BlobNotFound"


# --- replication --------------------------------------------------------------------------------


def test_replicate_from_an_honest_peer(
    origin: Origin, target: DiskStore, client: httpx.Client, recorder: Recorder
) -> None:
    assert replicate(origin.cid, [origin.url], target, client=client) == origin.cid
    assert get_file(target, origin.cid) == FILE
    assert set(target) == {origin.blob(i) for i in range(-1, 4)}
    assert len(recorder.requests) == 5  # the chunk list and four chunks
    _assert_all_verified(target)
    recorder.requests.clear()
    assert replicate(origin.cid, [origin.url], target, client=client) == origin.cid
    assert recorder.requests == []


def test_replicate_fetches_only_what_is_missing(
    origin: Origin, target: DiskStore, client: httpx.Client, recorder: Recorder
) -> None:
    replicate(origin.cid, [origin.url], target, client=client)
    target.delete(origin.blob(2))
    recorder.requests.clear()
    replicate(origin.cid, [origin.url], target, client=client)
    assert recorder.to(origin.url) == [(origin.blob(2), None)]
    # A chunk list rotten on disk is quarantined on read and fetched again.
    path = target.root / "blobs" / origin.cid[-2:] / origin.cid
    path.write_bytes(b" " + path.read_bytes()[1:])
    recorder.requests.clear()
    replicate(origin.cid, [origin.url], target, client=client)
    assert recorder.to(origin.url) == [(origin.cid, None)]
    assert get_file(target, origin.cid) == FILE


def test_replicate_reports_bytes_in_place_including_blobs_already_held(
    origin: Origin, target: DiskStore, client: httpx.Client
) -> None:
    replicate(origin.cid, [origin.url], target, client=client)
    target.delete(origin.blob(2))
    seen: list[tuple[int, int]] = []
    replicate(origin.cid, [origin.url], target, client=client, progress=lambda *p: seen.append(p))
    sizes = [c.size for c in origin.chunk_list.chunks]
    assert seen == [(sum(sizes[:i]), len(FILE)) for i in range(len(sizes) + 1)]


def test_replicate_small_and_empty_files(origin: Origin, target: DiskStore) -> None:
    small = cids.cid_of(SMALL)
    other_base = str(cids.parse(small).set(base="base58btc"))
    assert replicate(Cid(other_base), [origin.url], target) == small
    assert target.get(small) == SMALL
    empty = origin.store.put(b"")
    assert replicate(empty, [origin.url], target) == empty
    assert target.get(empty) == b""


def test_replicate_refuses_a_malformed_cid(origin: Origin, target: DiskStore) -> None:
    with pytest.raises(MalformedCid):
        replicate(Cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"), [origin.url], target)


@pytest.mark.parametrize("victim", [-1, 1], ids=["chunk-list", "chunk"])
def test_lying_peer_is_rejected(
    origin: Origin,
    target: DiskStore,
    client: httpx.Client,
    recorder: Recorder,
    servers: ExitStack,
    caplog: pytest.LogCaptureFixture,
    victim: int,
) -> None:
    bad = origin.blob(victim)
    liar = servers.enter_context(
        serve(lying(blob_app(origin.store), bad, origin.store.get(bad), flip_at=100))
    )
    with caplog.at_level(logging.WARNING, logger="verinet.hub"):
        replicate(origin.cid, [liar, origin.url], target, client=client)
    assert get_file(target, origin.cid) == FILE
    _assert_all_verified(target)
    # The liar was asked until it lied, then never again; the honest peer filled in.
    asked_liar = [cid for cid, _ in recorder.to(liar)]
    assert asked_liar == [origin.blob(i) for i in range(-1, victim + 1)]
    asked_honest = [cid for cid, _ in recorder.to(origin.url)]
    assert asked_honest == [origin.blob(i) for i in range(victim, 4)]
    assert any(
        liar in record.getMessage() and bad in record.getMessage() for record in caplog.records
    )


def test_only_lying_peers_fail_and_store_nothing_unverified(
    origin: Origin, target: DiskStore, client: httpx.Client, servers: ExitStack
) -> None:
    bad = origin.blob(1)
    liars = [
        servers.enter_context(serve(lying(blob_app(origin.store), bad, origin.store.get(bad), i)))
        for i in (0, 500)
    ]
    with pytest.raises(FetchFailed) as failure:
        replicate(origin.cid, liars, target, client=client)
    message = str(failure.value)
    assert bad in message
    assert all(f"{liar}: served {CHUNK_SIZE} bytes that do not hash" in message for liar in liars)
    assert not target.has(bad)
    assert target.has(origin.blob(0)) and target.has(origin.cid)  # verified, kept for a retry
    _assert_all_verified(target)


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "chunked"])
def test_oversized_body_is_abandoned(
    origin: Origin,
    target: DiskStore,
    client: httpx.Client,
    recorder: Recorder,
    servers: ExitStack,
    caplog: pytest.LogCaptureFixture,
    announce: bool,
) -> None:
    greedy = servers.enter_context(serve(oversized(announce=announce)))
    with caplog.at_level(logging.WARNING, logger="verinet.hub"):
        replicate(origin.cid, [greedy, origin.url], target, client=client)
    assert get_file(target, origin.cid) == FILE
    assert recorder.to(greedy) == [(origin.cid, None)]  # then skipped for every chunk
    expected = "announced 16777216 bytes" if announce else "sent more than"
    assert any(expected in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "chunked"])
def test_fetch_blob_enforces_max_bytes(
    origin: Origin, client: httpx.Client, servers: ExitStack, announce: bool
) -> None:
    small = cids.cid_of(SMALL)
    assert fetch_blob(small, [origin.url], client=client, max_bytes=1000) == SMALL
    with pytest.raises(FetchFailed, match="more than the 999 allowed"):
        fetch_blob(small, [origin.url], client=client, max_bytes=999)
    greedy = servers.enter_context(serve(oversized(announce=announce, total=4 * CHUNK_SIZE)))
    with pytest.raises(FetchFailed, match="more than"):
        fetch_blob(small, [greedy], client=client)


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "chunked"])
def test_interrupted_body_is_resumed(
    origin: Origin,
    target: DiskStore,
    client: httpx.Client,
    recorder: Recorder,
    servers: ExitStack,
    announce: bool,
) -> None:
    cut = origin.blob(2)
    flaky = servers.enter_context(
        serve(
            truncating(
                blob_app(origin.store), cut, origin.store.get(cut), always=False, announce=announce
            )
        )
    )
    replicate(origin.cid, [flaky], target, client=client)
    assert get_file(target, origin.cid) == FILE
    asked = recorder.to(flaky)
    assert asked.count((cut, None)) == 1
    assert (cut, f"bytes={CHUNK_SIZE // 2}-") in asked


def test_peer_that_keeps_dropping_is_left_for_the_next(
    origin: Origin, target: DiskStore, client: httpx.Client, recorder: Recorder, servers: ExitStack
) -> None:
    cut = origin.blob(0)
    flaky = servers.enter_context(
        serve(truncating(blob_app(origin.store), cut, origin.store.get(cut), always=True))
    )
    replicate(origin.cid, [flaky, origin.url], target, client=client)
    assert get_file(target, origin.cid) == FILE
    asked = recorder.to(flaky)
    assert [entry for entry in asked if entry[0] == cut] == [
        (cut, None),
        (cut, f"bytes={CHUNK_SIZE // 2}-"),
    ]
    assert len(asked) == 6  # an interruption is not misbehaviour: still asked for later chunks
    assert recorder.to(origin.url) == [(cut, None)]


def test_dead_empty_and_failing_peers_are_skipped(
    origin: Origin,
    target: DiskStore,
    client: httpx.Client,
    recorder: Recorder,
    servers: ExitStack,
    tmp_path: Path,
) -> None:
    dead = _dead_url(servers)
    empty = servers.enter_context(serve(blob_app(DiskStore(tmp_path / "empty"))))
    broken = servers.enter_context(serve(failing))
    replicate(origin.cid, [dead, empty, broken, origin.url], target, client=client)
    assert get_file(target, origin.cid) == FILE
    assert len(recorder.to(dead)) == 1  # refused once, then not asked again in this call
    assert len(recorder.to(empty)) == 5 and len(recorder.to(broken)) == 5


def test_fetch_failed_names_every_peer(
    origin: Origin, target: DiskStore, servers: ExitStack, tmp_path: Path
) -> None:
    dead = _dead_url(servers)
    empty = servers.enter_context(serve(blob_app(DiskStore(tmp_path / "empty"))))
    with pytest.raises(FetchFailed) as failure:
        replicate(origin.cid, [dead, empty], target, timeout=2.0)
    message = str(failure.value)
    assert origin.cid in message
    assert f"{dead}: ConnectError" in message
    assert f"{empty}: HTTP 404" in message
    assert list(target) == []
    with pytest.raises(FetchFailed, match="no peers given"):
        replicate(origin.cid, [], target)


GARBAGE_LIST = (
    b'{"chunk_size":1048576,"chunks":[{"cid":"garbage","size":1048576},'
    b'{"cid":"garbage","size":1}],"size":1048577,"type":"verinet.chunks/1"}'
)


@pytest.mark.parametrize("document", [b'{"hello":"world"}', GARBAGE_LIST], ids=["other", "bad-cid"])
def test_a_json_blob_that_is_not_a_chunk_list(
    origin: Origin, target: DiskStore, client: httpx.Client, recorder: Recorder, document: bytes
) -> None:
    not_a_list = origin.store.put(document, "json")
    with pytest.raises(InvalidManifest):
        replicate(not_a_list, [origin.url, origin.url + "/"], target, client=client)
    # The bytes matched their CID, so no other peer could do better: asked once, not stored.
    assert len(recorder.requests) == 1
    assert list(target) == []


def test_largest_chunk_list_fits_the_bound() -> None:
    chunk = ChunkRef(cid=cids.cid_of(b"x"), size=CHUNK_SIZE)
    largest = ChunkList(size=MAX_CHUNKS * CHUNK_SIZE, chunks=(chunk,) * MAX_CHUNKS)
    assert len(largest.canonical()) <= MAX_CHUNK_LIST_BYTES


# --- the loopback server itself -------------------------------------------------------------------


def test_serve_stops_and_frees_the_port(origin: Origin) -> None:
    with serve(blob_app(origin.store)) as url:
        assert httpx.get(f"{url}/blobs/{origin.cid}").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/blobs/{origin.cid}")


def test_serve_reports_a_failed_startup() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(RuntimeError, match="failed to start"), serve(broken):
        pass  # pragma: no cover


def test_replicate_model_fetches_manifest_then_model(
    tmp_path: Path, target: DiskStore, client: httpx.Client, servers: ExitStack
) -> None:
    # A node that decides to serve a model knows only the manifest CID from the registry.
    import numpy as np

    from verinet.devnet.models import cnn
    from verinet.hub.publish import draft_manifest, store_model
    from verinet.hub.replicate import replicate_model
    from verinet.runtime.executor import OnnxExecutor

    # Wide enough that the file is chunked (> 1 MiB).
    model_bytes = cnn(channels=(64, 512)).SerializeToString()
    assert len(model_bytes) > CHUNK_SIZE
    manifest = draft_manifest(model_bytes, name="cnn", fee=1, license="MIT")
    origin = DiskStore(tmp_path / "origin")
    manifest_cid = store_model(origin, model_bytes, manifest)
    url = servers.enter_context(serve(blob_app(origin)))

    seen: list[tuple[int, int]] = []
    fetched = replicate_model(
        manifest_cid, [url], target, client=client, progress=lambda *p: seen.append(p)
    )
    assert fetched == manifest
    assert get_file(target, manifest.model) == model_bytes
    # Byte progress: from 0 to the whole file, one step per chunk, never backwards.
    chunk_list = chunks_of(target, manifest.model)
    assert chunk_list is not None
    assert seen[0] == (0, len(model_bytes)) and seen[-1] == (len(model_bytes),) * 2
    assert len(seen) == len(chunk_list.chunks) + 1
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    executor = OnnxExecutor(get_file(target, fetched.model), fetched)
    logits = executor.run({"image": np.zeros((1, 3, 32, 32), np.float32)})["logits"]
    assert logits.shape == (1, 10)


def test_replicate_model_refuses_a_file_of_another_size(
    tmp_path: Path, target: DiskStore, client: httpx.Client, servers: ExitStack
) -> None:
    # A manifest whose model_size disagrees with the chunk list: nothing past the list is
    # fetched, so a published manifest cannot make a node download more than it declares.
    from verinet.devnet.models import cnn
    from verinet.hub.manifest import ModelManifest
    from verinet.hub.publish import draft_manifest
    from verinet.hub.replicate import replicate_model

    model_bytes = cnn(channels=(64, 512)).SerializeToString()
    honest = draft_manifest(model_bytes, name="cnn", fee=1, license="MIT")
    lying = honest.model_copy(update={"model_size": 1000})
    origin = DiskStore(tmp_path / "origin")
    put_file(origin, model_bytes)
    manifest_cid = origin.put(lying.canonical(), "json")
    url = servers.enter_context(serve(blob_app(origin)))
    with pytest.raises(InvalidManifest, match="not the 1000 expected"):
        replicate_model(manifest_cid, [url], target, client=client)
    assert not any(target.has(chunk.cid) for chunk in chunks_of(origin, honest.model).chunks)
    assert ModelManifest.parse(target.get(manifest_cid)) == lying
    with pytest.raises(InvalidManifest, match="over this node's limit"):
        replicate_model(manifest_cid, [url], target, client=client, max_model_bytes=100)
