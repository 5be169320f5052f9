"""Fetching a job's input by CID, on a requester's word, without letting the requester abuse it.

A requester may send a job's input as the CID of its canonical blob and name peers holding
it. The node fetches only when every rule below holds, checked in this order, and contacts
nothing otherwise:

- every named peer is a registered node's endpoint (from the NodeRegistry's events), on the
  node's ``fetch_allowlist``, or one of its replication ``peers`` (else `PeerNotAllowed`, 403);
- fewer than ``fetch_concurrency`` fetches are in flight (else `FetchBusy`, 503: retry, or send
  the tensors inline);
- the job exists on-chain and the CID names exactly its input: the CID's sha2-256 digest is
  the job's input hash (else `UnknownJob` 404, `InputHashMismatch` 409);
- the whole transfer, over all peers, ends by ``fetch_deadline`` seconds (else
  `FetchTimeout`): a deadline on the transfer, not on each read, so a peer that drips one byte
  at a time is cut off at the deadline all the same.

Transfers are async I/O on the API's event loop and the chain reads run in this fetcher's own
two threads, so fetches never hold a thread that serves ``/healthz`` or a model run.
Redirects are not followed (a registered endpoint could otherwise point anywhere).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from verinet.chain.contracts import InferenceMarket, NodeRegistry
from verinet.errors import (
    FetchBusy,
    FetchFailed,
    FetchTimeout,
    InputHashMismatch,
    MalformedTensor,
    PeerNotAllowed,
    UnknownJob,
)
from verinet.hub import cid as cids
from verinet.hub.store import BlobStore
from verinet.protocol.types import JobState
from verinet.types import Cid, JobId

MAX_PEERS = 8
"""Most peers one request may name."""
REFRESH_EVERY = 2.0
"""Seconds between re-reads of the registry caused by unknown peers (each is a chain read)."""

_T = TypeVar("_T")


def base_url(url: str) -> str | None:
    """`url` as a comparable base URL (scheme, host, port, path without a trailing slash), or
    None when it is not a plain http(s) URL (credentials, query or fragment included)."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    if parsed.userinfo or parsed.query or parsed.fragment:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host.lower()}:{port}{parsed.path.rstrip('/')}"


class PeerBook:
    """Base URLs a node may fetch from: registered nodes' endpoints and an allowlist. Read
    incrementally from the registry's events, and again (at most every `REFRESH_EVERY`
    seconds) when asked about a URL it does not know."""

    def __init__(self, registry: NodeRegistry, allowlist: Sequence[str]) -> None:
        self._registry = registry
        self._allowed = {b for b in map(base_url, allowlist) if b is not None}
        self._endpoints: dict[str, str] = {}  # node -> its latest registered endpoint
        self._known: set[str] = set()
        self._next_block = 0
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def refused(self, peers: Sequence[str]) -> list[str]:
        """Which of `peers` this node will not contact (blocking: may read the chain)."""
        wanted = [(peer, base_url(peer)) for peer in peers]
        if any(b is not None and not self._knows(b) for _, b in wanted):
            self._refresh()
        return [peer for peer, b in wanted if b is None or not self._knows(b)]

    def _knows(self, base: str) -> bool:
        return base in self._allowed or base in self._known

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < REFRESH_EVERY:
                return
            self._read_at = time.monotonic()
            # The head first: events after it are read again next time, none is missed.
            head = self._registry.chain.block_number()
            for event in self._registry.history(from_block=self._next_block):
                if event.name in ("NodeRegistered", "EndpointChanged"):
                    self._endpoints[str(event.args["node"])] = str(event.args["endpoint"])
            self._next_block = head + 1
            self._known = {b for b in map(base_url, self._endpoints.values()) if b is not None}


class InputFetcher:
    """Fetches jobs' input blobs into `store` under the rules in the module's docstring."""

    def __init__(
        self,
        *,
        market: InferenceMarket,
        registry: NodeRegistry,
        store: BlobStore,
        allowlist: Sequence[str],
        deadline: float,
        concurrency: int,
        max_bytes: int,
    ) -> None:
        self.market, self.store = market, store
        self.peers = PeerBook(registry, allowlist)
        self.deadline, self.concurrency, self.max_bytes = deadline, concurrency, max_bytes
        self._slots = threading.BoundedSemaphore(concurrency)
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="verinet-fetch")

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _blocking(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    async def fetch_input(self, job_id: JobId, cid: str, peers: Sequence[str]) -> Cid:
        """Make the input blob `cid` of job `job_id` present in the store; return its CID."""
        name = cids.normalize(cid)
        if await self._blocking(self.store.has, name):
            return name
        if not peers or len(peers) > MAX_PEERS:
            raise MalformedTensor(
                f"name 1 to {MAX_PEERS} peers holding {name}, or send the tensors inline"
            )
        refused = await self._blocking(self.peers.refused, peers)
        if refused:
            shown = ", ".join(repr(p[:100]) for p in refused[:3])
            raise PeerNotAllowed(
                f"{shown}: not a registered node's endpoint nor on this node's allowlist; name "
                "registered nodes that hold the blob, or send the tensors inline"
            )
        if not self._slots.acquire(blocking=False):
            raise FetchBusy(
                f"{self.concurrency} input fetches are in flight on this node; retry in a few "
                "seconds, or send the tensors inline"
            )
        try:
            job = await self._blocking(self.market.job, job_id)
            if job.state == JobState.NONE:
                raise UnknownJob(f"job {job_id} does not exist on market {self.market.address}")
            if cids.digest_of(name) != job.input_hash:
                raise InputHashMismatch(
                    f"{name} is not job {job_id}'s input (its hash is 0x{job.input_hash.hex()}); "
                    "send the CID of exactly the blob whose hash you requested"
                )
            data = await self._transfer(name, [p.rstrip("/") for p in peers])
            await self._blocking(self.store.put_verified, name, data)
        finally:
            self._slots.release()
        return name

    async def _transfer(self, name: Cid, peers: list[str]) -> bytes:
        failures: list[str] = []
        peer = peers[0]
        try:
            async with (
                asyncio.timeout(self.deadline),
                httpx.AsyncClient(timeout=self.deadline, trust_env=False) as client,
            ):
                for peer in peers:
                    try:
                        return await self._from(client, peer, name)
                    except (_Refused, httpx.HTTPError) as exc:
                        failures.append(f"{peer}: {type(exc).__name__}: {exc}"[:300])
        except TimeoutError:
            raise FetchTimeout(
                f"fetching {name} did not finish within {self.deadline} s (last from "
                f"{peer[:100]}); name a faster peer or send the tensors inline"
            ) from None
        raise FetchFailed(f"no peer served a verified copy of {name}: {'; '.join(failures)}")

    async def _from(self, client: httpx.AsyncClient, peer: str, name: Cid) -> bytes:
        headers = {"Accept-Encoding": "identity"}  # the CID is over the bytes as stored
        async with client.stream("GET", f"{peer}/blobs/{name}", headers=headers) as response:
            if response.status_code != 200:
                raise _Refused(f"HTTP {response.status_code}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise _Refused("an encoded body")
            length = response.headers.get("content-length", "")
            if length.isdigit() and len(length) < 20 and int(length) > self.max_bytes:
                raise _Refused(f"announced {length} bytes, over the {self.max_bytes} allowed")
            body = bytearray()
            async for piece in response.aiter_raw():
                body += piece
                if len(body) > self.max_bytes:
                    raise _Refused(f"sent more than {self.max_bytes} bytes")
        if not cids.matches(name, bytes(body)):
            raise _Refused(f"served {len(body)} bytes that do not hash to {name}")
        return bytes(body)


class _Refused(Exception):
    """The peer did not serve a verified copy this time."""
