"""Replicate files by CID from peers' blob endpoints, verifying every blob before storing it.

Peers are tried in the order given. Nothing a peer sends is trusted: each blob is hashed
against its CID before `BlobStore.put_verified`, bodies are cut off past a size bound (the
exact chunk size where the chunk list gives it), and a peer that serves wrong bytes or breaks
the protocol is skipped for the rest of the call. An interrupted body is resumed once from the
same peer with a Range request before moving on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Final

import httpx

from verinet.errors import CorruptBlob, FetchFailed, InvalidManifest
from verinet.hub import cid as cids
from verinet.hub.cid import CHUNK_SIZE
from verinet.hub.files import MAX_CHUNKS, ChunkList
from verinet.hub.manifest import MAX_MANIFEST_BYTES, ModelManifest
from verinet.hub.safety import DEFAULT_LIMITS
from verinet.hub.store import BlobStore
from verinet.types import Cid

log = logging.getLogger("verinet.hub")

ByteProgress = Callable[[int, int], None]
"""Called with (bytes in place so far, bytes in all) while a file is replicated."""

MAX_CHUNK_LIST_BYTES: Final = 1024 + MAX_CHUNKS * 96
"""Upper bound on a chunk list's size: each entry is about 80 bytes of canonical JSON."""

_DIGITS = re.compile(r"[0-9]{1,19}")
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})")  # bounded: a peer


class _Misbehaved(Exception):
    """The peer broke the protocol (wrong bytes, oversized body, bad headers)."""


class _Unreachable(Exception):
    """No connection to the peer could be made."""


class _Unavailable(Exception):
    """The peer did not serve this blob this time (404, 5xx, timeout, cut-off body)."""


class _Interrupted(Exception):
    """The body stopped early; the bytes so far are kept for a resume."""

    def __init__(self, reason: str, total: int | None) -> None:
        super().__init__(reason)
        self.total = total  # the blob's size, if the peer announced it


class _Fetcher:
    """One call's view of the peers: which to skip, and why each failed."""

    def __init__(self, peers: Sequence[str], client: httpx.Client) -> None:
        self.peers = [peer.rstrip("/") for peer in peers]
        self.client = client
        self.shunned: dict[str, str] = {}

    def fetch(self, cid: Cid, max_bytes: int) -> bytes:
        failures: list[str] = []
        for peer in self.peers:
            if peer in self.shunned:
                failures.append(f"{peer}: skipped ({self.shunned[peer]})")
                continue
            try:
                data = self._download(f"{peer}/blobs/{cid}", max_bytes)
                if not cids.matches(cid, data):
                    raise _Misbehaved(f"served {len(data)} bytes that do not hash to {cid}")
            except _Misbehaved as exc:
                log.warning(
                    "peer %s misbehaved fetching %s: %s; not asking it again", peer, cid, exc
                )
                self.shunned[peer] = f"misbehaved: {exc}"
                failures.append(f"{peer}: {exc}")
            except _Unreachable as exc:
                # A peer refusing connections now will not accept them for the next chunk
                # either; waiting out a connect timeout per chunk would stall the whole file.
                log.info("peer %s unreachable: %s", peer, exc)
                self.shunned[peer] = f"unreachable: {exc}"
                failures.append(f"{peer}: {exc}")
            except _Unavailable as exc:
                log.info("peer %s did not serve %s: %s", peer, cid, exc)
                failures.append(f"{peer}: {exc}")
            else:
                return data
        reasons = "; ".join(failures) or "no peers given"
        raise FetchFailed(f"no peer served a verified copy of {cid}: {reasons}")

    def _download(self, url: str, max_bytes: int) -> bytes:
        body = bytearray()
        try:
            self._stream(url, body, max_bytes, None)
        except _Interrupted as first:
            # Resume once from the same peer: it had the blob a moment ago, and asking
            # for the rest costs less than starting over elsewhere.
            log.info("resuming %s at byte %d after: %s", url, len(body), first)
            try:
                self._stream(url, body, max_bytes, first.total)
            except _Interrupted as second:
                raise _Unavailable(f"body cut off twice: {first}; then {second}") from None
        return bytes(body)

    def _stream(self, url: str, body: bytearray, max_bytes: int, total: int | None) -> None:
        """Read `url` into `body`; a non-empty `body` is resumed with a Range request.

        `total` is the blob's size an earlier response announced, if any: a resumed response
        must agree with it.
        """
        offset = len(body)
        headers = {"Accept-Encoding": "identity"}  # the CID is over the bytes as stored
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                total = self._check_headers(response, body, max_bytes, total)
                try:
                    for piece in response.iter_raw():
                        body += piece
                        if len(body) > max_bytes:
                            raise _Misbehaved(f"sent more than {max_bytes} bytes")
                except httpx.TransportError as exc:
                    raise _Interrupted(f"{type(exc).__name__}: {exc}", total) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from None
        if total is not None and len(body) < total:  # h11 normally raises first; belt and braces
            raise _Interrupted(f"body ended at {len(body)} of {total} bytes", total)

    @staticmethod
    def _check_headers(
        response: httpx.Response, body: bytearray, max_bytes: int, total: int | None
    ) -> int | None:
        """Validate the status and framing headers; return the blob's size if announced."""
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise _Misbehaved(f"content-encoding {response.headers['content-encoding']!r}")
        length_text = response.headers.get("content-length")
        length = int(length_text) if length_text and _DIGITS.fullmatch(length_text) else None
        if response.status_code == 200:
            body.clear()  # a full body, also when a resume's Range was ignored (RFC 9110 14.2)
            if length is not None and total is not None and length != total:
                raise _Misbehaved(f"announced {length} bytes, earlier {total}")
            total = length if length is not None else total
        elif response.status_code == 206 and body:
            content_range = response.headers.get("content-range", "")
            match = _CONTENT_RANGE.fullmatch(content_range)
            if match is None:
                raise _Misbehaved(f"206 with Content-Range {content_range!r}")
            start, end, size = (int(group) for group in match.groups())
            if start != len(body) or end != size - 1 or total not in (None, size):
                raise _Misbehaved(f"asked for bytes {len(body)}- of {total}, got {content_range}")
            if length is not None and length != size - start:
                raise _Misbehaved(f"Content-Range {content_range} with Content-Length {length}")
            total = size
        else:
            raise _Unavailable(f"HTTP {response.status_code}")
        if total is not None and total > max_bytes:
            raise _Misbehaved(f"announced {total} bytes, more than the {max_bytes} allowed")
        return total


def fetch_blob(
    cid: Cid, peers: Sequence[str], *, client: httpx.Client, max_bytes: int = CHUNK_SIZE * 2
) -> bytes:
    """One blob's bytes from the first of `peers` that serves them verified against `cid`.

    Raises `FetchFailed` (naming each peer and why it failed) if none does, `MalformedCid` if
    `cid` is not a Verinet CID. Bodies longer than `max_bytes` are abandoned unread.
    """
    return _Fetcher(peers, client).fetch(cids.normalize(cid), max_bytes)


def replicate(
    cid: Cid,
    peers: Sequence[str],
    store: BlobStore,
    *,
    client: httpx.Client | None = None,
    timeout: float = 10.0,
    expected_size: int | None = None,
    progress: ByteProgress | None = None,
) -> Cid:
    """Make the file `cid` names (a raw blob, or a chunk list and its chunks) whole in `store`.

    Only missing blobs are fetched, from `peers` (base URLs) in order; each is verified before
    it is stored. Returns the normalized CID. Raises `FetchFailed` if some blob could not be
    had from any peer (the blobs fetched so far stay: all verified, and a retry skips them),
    `InvalidManifest` if `cid` names a JSON blob that is not a chunk list. `timeout` applies
    only to the client made here when `client` is None. `expected_size` (e.g. a manifest's
    `model_size`) bounds the download: a chunk list or blob of another size is refused before
    any chunk is fetched. `progress(done, total)` follows the file's bytes in place.
    """
    name = cids.normalize(cid)
    http = client or httpx.Client(timeout=timeout)
    try:
        _replicate(name, _Fetcher(peers, http), store, expected_size, progress)
    finally:
        if client is None:
            http.close()
    return name


def _replicate(
    name: Cid,
    fetcher: _Fetcher,
    store: BlobStore,
    expected_size: int | None,
    progress: ByteProgress | None = None,
) -> None:
    report = progress or (lambda _done, _total: None)
    if cids.codec_of(name) == "raw":
        limit = CHUNK_SIZE * 2 if expected_size is None else expected_size
        _ensure(store, fetcher, name, limit)
        size = store.size(name)
        report(size, size)
        return
    chunk_list = _chunk_list(store, fetcher, name)
    if expected_size is not None and chunk_list.size != expected_size:
        raise InvalidManifest(
            f"{name} is a file of {chunk_list.size} bytes, not the {expected_size} expected"
        )
    # Repeated chunks (a file of zeros is one chunk many times) are fetched once.
    sizes: dict[Cid, int] = {}
    for chunk in chunk_list.chunks:
        chunk_cid = cids.normalize(chunk.cid)
        sizes[chunk_cid] = max(sizes.get(chunk_cid, 0), chunk.size)
    done = 0
    report(done, chunk_list.size)
    for chunk in chunk_list.chunks:
        chunk_cid = cids.normalize(chunk.cid)
        if chunk_cid in sizes:
            _ensure(store, fetcher, chunk_cid, sizes.pop(chunk_cid))
        done += chunk.size
        report(done, chunk_list.size)


def _ensure(store: BlobStore, fetcher: _Fetcher, cid: Cid, max_bytes: int) -> None:
    # `has` is enough: the store verified the blob on the way in and re-checks every read.
    if not store.has(cid):
        store.put_verified(cid, fetcher.fetch(cid, max_bytes))


def _chunk_list(store: BlobStore, fetcher: _Fetcher, cid: Cid) -> ChunkList:
    if store.has(cid):
        try:
            return _parse(cid, store.get(cid))
        except CorruptBlob:
            pass  # quarantined by the store; fetch a good copy below
    data = fetcher.fetch(cid, MAX_CHUNK_LIST_BYTES)
    # The bytes hash to `cid`, so every honest peer has these same bytes: a parse failure is
    # the CID's fault, not this peer's, and asking other peers would not help.
    chunk_list = _parse(cid, data)
    store.put_verified(cid, data)
    return chunk_list


def _parse(cid: Cid, data: bytes) -> ChunkList:
    try:
        return ChunkList.parse(data)
    except InvalidManifest as exc:
        raise InvalidManifest(f"{cid} is not a valid chunk list: {exc}") from None


def replicate_model(
    manifest_cid: Cid,
    peers: Sequence[str],
    store: BlobStore,
    *,
    client: httpx.Client | None = None,
    timeout: float = 10.0,
    max_model_bytes: int = DEFAULT_LIMITS.max_file_bytes,
    progress: ByteProgress | None = None,
) -> ModelManifest:
    """Fetch a model a node decided to serve: its manifest (as the registry names it), then the
    model file the manifest names, every blob verified. Returns the validated manifest.

    `progress(done, total)` is called with the model file's bytes in place so far (blobs
    already in `store` count at once) and its size, after each chunk."""
    name = cids.normalize(manifest_cid)
    http = client or httpx.Client(timeout=timeout)
    try:
        fetcher = _Fetcher(peers, http)  # one per call: a lying peer is skipped for both parts
        _ensure(store, fetcher, name, MAX_MANIFEST_BYTES)
        manifest = ModelManifest.parse(store.get(name))
        if manifest.model_size > max_model_bytes:
            raise InvalidManifest(
                f"manifest {name} names a model of {manifest.model_size} bytes, over this node's "
                f"limit of {max_model_bytes}"
            )
        _replicate(manifest.model, fetcher, store, manifest.model_size, progress)
    finally:
        if client is None:
            http.close()
    return manifest
