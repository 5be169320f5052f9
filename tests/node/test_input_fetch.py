"""Inputs by CID on a requester's word: fetched only from registered nodes or the allowlist,
under one deadline per transfer and a bound on fetches at once, never stalling the node.

The peers here are real servers on loopback: a blob server, and a peer that answers 200 and
then drips its body one byte a second (that is its behaviour, not the test's timing).
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.node.test_hostile_http import make_world
from tests.node.test_node_jobs import World
from verinet._server import serve
from verinet.hub import cid as cids
from verinet.hub.http import blob_app
from verinet.hub.store import DiskStore
from verinet.node.api import node_app
from verinet.protocol.types import Mode
from verinet.runtime.tensors import Array, group_hash
from verinet.runtime.wire import encode_group
from verinet.types import Address, JobId

DEADLINE = 2.0
SLOTS = 4
SLACK = 2.5  # a loaded 2-core machine may answer this much after the deadline


def poll_until(done: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    """Whether `done()` came true within `timeout` seconds, asking every `every` seconds."""
    deadline = time.monotonic() + timeout
    idle = threading.Event()  # never set: its wait is the pause between polls
    while not done():
        if time.monotonic() > deadline:
            return False
        idle.wait(every)
    return True


@dataclass
class DripPeer:
    """A peer that accepts, answers 200 with a Content-Length, and sends one byte a second."""

    size: int
    stop: threading.Event = field(default_factory=threading.Event)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with self.lock:
                self.connections += 1
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
            threading.Thread(target=self.drip, args=(conn,), daemon=True).start()

    def drip(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {self.size}\r\n\r\n"
            conn.sendall(head.encode())
            for _ in range(self.size):
                conn.sendall(b"\0")
                if self.stop.wait(1.0):  # the peer's pace: one byte a second
                    return
        except OSError:
            return  # the node hung up: what it should do at its deadline
        finally:
            conn.close()
            with self.lock:
                self.open_now -= 1


@pytest.fixture(scope="module")
def drip() -> Iterator[DripPeer]:
    yield from _drip_peer()


@pytest.fixture(scope="module")
def stranger() -> Iterator[DripPeer]:
    """A live peer on no list: the node must never connect to it."""
    yield from _drip_peer()


def _drip_peer() -> Iterator[DripPeer]:
    peer = DripPeer(size=1000)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    peer.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(target=peer.serve, args=(sock,), daemon=True)
    thread.start()
    yield peer
    peer.stop.set()
    thread.join(5)
    sock.close()


@dataclass
class Fetching:
    world: World
    url: str
    http: httpx.Client
    store: DiskStore  # a blob store another registered node could serve from
    next_input: int = 0

    def job(self) -> tuple[JobId, str, Array]:
        """A new quorum job with inputs of its own, and its input blob's CID."""
        self.next_input += 1
        (name,) = self.world.sample.example
        inputs = {name: self.world.sample.example[name] + np.float32(self.next_input)}
        job_id, _ = self.world.deployment.market.request(
            self.world.model_id,
            group_hash(inputs),
            Mode.QUORUM,
            3,
            sender=self.world.client.address,
        )
        blob = encode_group(inputs)
        return job_id, self.store.put(blob), inputs[name]


@pytest.fixture(scope="module")
def fetching(
    tmp_path_factory: pytest.TempPathFactory, drip: DripPeer, stranger: DripPeer
) -> Iterator[Fetching]:
    world = make_world(tmp_path_factory.mktemp("fetch"))
    node = world.node(
        0,
        fetch_allowlist=[drip.url + "/"],
        fetch_deadline=DEADLINE,
        fetch_concurrency=SLOTS,
    )
    store = DiskStore(Path(tmp_path_factory.mktemp("peer")))
    with serve(node_app(node)) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield Fetching(world, url, http, store)


def test_a_dripping_peer_is_cut_off_at_the_deadline_and_the_node_stays_responsive(
    fetching: Fetching, drip: DripPeer
) -> None:
    job_id, cid, _ = fetching.job()
    body = {"input_cid": cid, "peers": [drip.url]}

    # Clients made first: making one costs tens of ms of CPU, not the node's time.
    clients = [httpx.Client(base_url=fetching.url, timeout=30) for _ in range(40)]

    def post(http: httpx.Client) -> tuple[int, str, float]:
        start = time.monotonic()
        r = http.post(f"/v1/jobs/{job_id}/input", json=body)
        return r.status_code, r.json()["error"], time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        futures = [pool.submit(post, http) for http in clients]
        slowest_health = 0.0
        probes = 0
        while not all(f.done() for f in futures):
            start = time.monotonic()
            assert fetching.http.get("/healthz", timeout=5).status_code == 200
            slowest_health = max(slowest_health, time.monotonic() - start)
            probes += 1
            concurrent.futures.wait(futures, timeout=0.1)  # pace the probes
        results = [f.result() for f in futures]
    for http in clients:
        http.close()
    assert slowest_health < 1.0, f"/healthz took {slowest_health:.2f} s while fetches hung"
    assert probes >= 5  # the probes really ran while the fetches were in flight
    kinds = {(status, error) for status, error, _ in results}
    assert kinds <= {(504, "FetchTimeout"), (503, "FetchBusy")}, kinds
    timed_out = [t for status, _, t in results if status == 504]
    assert 1 <= len(timed_out) <= 40
    assert all(DEADLINE - 0.2 <= t <= DEADLINE + SLACK for t in timed_out), timed_out
    assert max(t for *_, t in results) <= DEADLINE + SLACK
    assert drip.most_open <= SLOTS  # never more transfers at once than the node allows
    # Each transfer was hung up on: the peer sees its connections close.
    assert poll_until(lambda: drip.open_now == 0, 5.0)


@pytest.mark.parametrize(
    "peer",
    [
        "stranger",
        "http://127.0.0.1:1.evil/",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1:1",
        "http://127.0.0.1:1/?x=1",
        "gopher://127.0.0.1:1",
        "not a url",
    ],
)
def test_a_peer_on_no_list_is_refused_and_never_contacted(
    fetching: Fetching, stranger: DripPeer, drip: DripPeer, peer: str
) -> None:
    job_id, cid, _ = fetching.job()
    named = stranger.url if peer == "stranger" else peer
    before = drip.connections
    r = fetching.http.post(
        f"/v1/jobs/{job_id}/input", json={"input_cid": cid, "peers": [drip.url, named]}
    )
    assert (r.status_code, r.json()["error"]) == (403, "PeerNotAllowed"), r.text
    assert "registered" in r.json()["detail"]
    assert stranger.connections == 0
    assert drip.connections == before  # one bad peer refuses the whole request, up front


def test_a_cid_that_is_not_the_jobs_input_is_refused_before_any_fetch(
    fetching: Fetching, drip: DripPeer
) -> None:
    job_id, _, _ = fetching.job()
    before = drip.connections
    other = cids.cid_of(b"some other bytes")
    r = fetching.http.post(
        f"/v1/jobs/{job_id}/input", json={"input_cid": other, "peers": [drip.url]}
    )
    assert (r.status_code, r.json()["error"]) == (409, "InputHashMismatch"), r.text
    r = fetching.http.post("/v1/jobs/999999/input", json={"input_cid": other, "peers": [drip.url]})
    assert (r.status_code, r.json()["error"]) == (404, "UnknownJob"), r.text
    assert drip.connections == before


def test_a_registered_nodes_endpoint_serves_the_input(fetching: Fetching) -> None:
    job_id, cid, _ = fetching.job()
    with serve(blob_app(fetching.store)) as peer:
        body = {"input_cid": cid, "peers": [peer + "/"]}
        r = fetching.http.post(f"/v1/jobs/{job_id}/input", json=body)
        assert (r.status_code, r.json()["error"]) == (403, "PeerNotAllowed")  # not yet
        registry = fetching.world.deployment.nodes
        registry.set_endpoint(peer, sender=Address(fetching.world.nodes[1].address))
        # The node reads new endpoints again at most every couple of seconds: poll.
        answers: list[httpx.Response] = []

        def accepted() -> bool:
            answers.append(fetching.http.post(f"/v1/jobs/{job_id}/input", json=body))
            return answers[-1].status_code != 403

        assert poll_until(accepted, 10.0), answers[-1].text
    assert answers[-1].status_code == 202, answers[-1].text
    assert answers[-1].json()["stage"] == "ready"
