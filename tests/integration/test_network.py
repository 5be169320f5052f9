"""A live network: anvil, the contracts and four `verinet node run` processes on loopback.

One devnet serves the whole module (starting it takes ~15 s); every test leaves it with all
nodes running and every token accounted for (`audit`, `audit_jobs`, checked after each test).
Tests that need a job's timing under control request it on the market themselves and decide
which node gets the input when, instead of racing the nodes.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest

from tests.helpers import deep_json_server
from verinet.chain._abi import Event
from verinet.client import Client
from verinet.client.sdk import NodeEndpoint
from verinet.devnet.audit import audit, audit_jobs
from verinet.devnet.liveness import assert_none_overdue
from verinet.devnet.network import Devnet
from verinet.devnet.samples import SampleModel, sample_models
from verinet.errors import DtypeMismatch, InputTooLarge, NotEnoughNodes
from verinet.hub.cid import cid_of
from verinet.hub.store import DiskStore
from verinet.protocol.types import Job, JobState, Mode, Penalty
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.inputs import validate_inputs
from verinet.runtime.tensors import Array, group_hash
from verinet.runtime.wire import encode_group, group_to_json
from verinet.types import Address, Hash32, JobId

# The devnet is per xdist worker: `--dist loadfile` (or `loadgroup`, once pytest-xdist#1386
# makes it work with pytest 9.2 again) keeps the module on one worker, so one devnet starts;
# plain `--dist load` spreads the tests and every worker that gets one starts its own.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("devnet")]

T = TypeVar("T")
DEADLINE = 60.0
"""Longest any poll below waits: a job's whole life on the devnet (commit + reveal windows)."""
MiB = 1024 * 1024


# -- helpers -------------------------------------------------------------------------------


@cache
def samples() -> dict[str, SampleModel]:
    return {s.name: s for s in sample_models()}


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def expected_outputs(sample: SampleModel) -> dict[str, Array]:
    """The sample's outputs run here, outside the network, in the manifest's order."""
    return OnnxExecutor(sample.model_bytes, sample.manifest).run(sample.example)


def input_hash(sample: SampleModel, inputs: dict[str, Array] | None = None) -> Hash32:
    m = sample.manifest
    return group_hash(validate_inputs(m.inputs, m.input_policy, inputs or sample.example))


def assert_bit_exact(actual: dict[str, Any], expected: dict[str, Array]) -> None:
    assert list(actual) == list(expected)
    for name, want in expected.items():
        got = np.asarray(actual[name], dtype=want.dtype)
        assert got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), f"output {name} differs from a local run"


def events(net: Devnet, name: str, job_id: JobId, node: Address | None = None) -> list[Event]:
    return [
        e
        for e in net.deployment.market.history(name)
        if e.args["job_id"] == job_id and (node is None or e.args["node"] == node)
    ]


def url_of(net: Devnet, node: Address) -> str:
    return dict(net.nodes)[node]


def record(http: httpx.Client, url: str, job_id: JobId) -> dict[str, Any] | None:
    """A node's record of a job, or None while it has none (or is down)."""
    try:
        response = http.get(f"{url}/v1/jobs/{job_id}")
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def stage_is(http: httpx.Client, url: str, job_id: JobId, *stages: str) -> dict[str, Any] | None:
    found = record(http, url, job_id)
    return found if found is not None and found["stage"] in stages else None


def post_input(http: httpx.Client, url: str, job_id: JobId, sample: SampleModel) -> None:
    body = {"inputs": group_to_json(sample.example)}
    response = http.post(f"{url}/v1/jobs/{job_id}/input", json=body)
    assert response.status_code == 202, response.text


def request(net: Devnet, sample: SampleModel, mode: Mode, k: int) -> JobId:
    """A job on the market from the second client (the CLI signs with the first)."""
    job_id, _ = net.deployment.market.request(
        net.models[sample.name],
        input_hash(sample),
        mode,
        k,
        sender=Address(net.clients[1].address),
    )
    return job_id


def ended(net: Devnet, job_id: JobId) -> Job | None:
    job = net.deployment.market.job(job_id)
    return job if job.state.terminal else None


def process_group(pgid: int) -> list[int]:
    """Live processes in group `pgid`: a node process leads its own, with its model workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        state, _, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            found.append(int(entry.name))
    return found


def sigkill(net: Devnet, node: Address) -> None:
    """Kill a node outright, as a crash or the OOM killer would; it must leave nothing behind."""
    process = net.processes[node]
    if sys.platform == "linux":
        assert len(process_group(process.pid)) > 1  # the node and its worker processes
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    if sys.platform == "linux":
        wait_for(lambda: not process_group(process.pid), "the node's workers to exit", 10)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    samples()  # build the models here (seconds), not inside the first test's job
    with Devnet.start(tmp_path_factory.mktemp("devnet"), chain="anvil", nodes=4) as network:
        yield network


@pytest.fixture(autouse=True)
def _nothing_lost(net: Devnet) -> Iterator[None]:
    yield
    try:
        audit(net.deployment)
        audit_jobs(net.deployment, now=net.chain.timestamp())
        # No escrow unsettled past its deadline plus a block; the nodes get a few seconds
        # to end one found so (they look every tick, later on a loaded machine).
        assert_none_overdue(net.deployment, wait=30.0)
    finally:
        # A test that killed a node and failed before restarting it must not fail the next.
        for node, process in list(net.processes.items()):
            if process.poll() is not None:
                net.restart_node(node)


@pytest.fixture(scope="module")
def client(net: Devnet) -> Iterator[Client]:
    with Client(net.deployment, net.clients[0], timeout=DEADLINE) as c:
        yield c


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as c:
        yield c


# -- 1. the SDK, end to end ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "trees", "cnn"])
@pytest.mark.parametrize(("mode", "k"), [("signed", 1), ("quorum", 3)])
def test_sdk_inference_is_verified(
    net: Devnet, client: Client, name: str, mode: str, k: int
) -> None:
    sample = samples()[name]
    token, market = net.deployment.token, net.deployment.market
    before = token.balance_of(client.address)

    result = client.infer(net.models[name], sample.example, mode=mode, k=k)  # type: ignore[arg-type]

    expected = expected_outputs(sample)
    assert_bit_exact(result.outputs, expected)
    settled = market.job(result.job_id)
    assert result.state == settled.state
    assert settled.result == result.output_hash == group_hash(expected)
    assert settled.input_hash == result.input_hash == input_hash(sample)
    assert settled.k == result.k == k
    assert token.balance_of(client.address) == before - settled.escrow
    assert result.verdict is not None
    if settled.state == JobState.SUBMITTED:
        # Drawn for audit: the result is back at once, the node is paid after the hold.
        assert mode == "signed" and market.claim_of(result.job_id).audited
        assert result.verdict.checks[1].startswith("the chain holds this result (SUBMITTED")
    else:
        assert settled.state == JobState.PAID
        (paid,) = events(net, "JobPaid", result.job_id)
        assert paid.args["output_hash"] == settled.result
        assert paid.args["winners"] == len(result.nodes)
        assert result.verdict.checks[1] == "the chain settled on this result (PAID)"
    assert result.verdict.checks[0] == "outputs hash to the result"
    if mode == "signed":
        (receipt,) = result.receipts
        assert result.nodes == (receipt.node,) and receipt.output_hash == settled.result
        assert result.verdict.summary.startswith(f"EIP-712 receipt signed by {receipt.node[:10]}")
    else:
        # Every node is honest: three drawn nodes' receipts agree and settled in one call.
        assert sorted(result.nodes) == sorted(market.seats_of(result.job_id))
        assert len(set(result.nodes)) == 3
        assert sorted(r.node for r in result.receipts) == sorted(result.nodes)
        assert {r.output_hash for r in result.receipts} == {settled.result}
        assert "submit_quorum" in result.transactions
        assert events(net, "JobCommitted", result.job_id) == []
        assert result.verdict.summary == (
            "3 of 3 EIP-712 receipts agree, settled in one transaction (majority 2)"
        )


def test_a_job_that_drew_no_node_is_served_in_a_later_round(
    net: Devnet, http: httpx.Client
) -> None:
    # A signed job draws each of the four nodes with probability 1/2, so about one in 16
    # draws none; the draw doubles every selection round of chain time. anvil mines only on
    # transactions and views read the last block's time, so chain time must move on an idle
    # devnet for that: it mines a block a second.
    sample = samples()["mlp"]
    market = net.deployment.market
    nodes = [a for a, _ in net.nodes]
    # Nothing else may mine meanwhile: let the nodes claim their earnings first.
    wait_for(lambda: all(market.owed(n) == 0 for n in nodes), "the nodes to claim what they earned")
    jobs: list[JobId] = []
    for _ in range(200):
        jobs.append(request(net, sample, Mode.SIGNED, 1))
        if not any(market.is_eligible(jobs[-1], node) for node in nodes):
            break
    else:
        pytest.fail("200 signed jobs in a row drew a node each: is the draw still random?")
    *drawn, undrawn = jobs

    for _, url in net.nodes:
        post_input(http, url, undrawn, sample)
    settled = wait_for(lambda: ended(net, undrawn), f"job {undrawn} to be served")
    assert settled.state == JobState.PAID
    (receipt,) = events(net, "ReceiptSubmitted", undrawn)
    assert (
        receipt.args["finalize_after"]
        >= settled.requested_at + net.deployment.params.selection_round()
    )

    for job_id in drawn:  # the others (no input yet) end too
        for _, url in net.nodes:
            post_input(http, url, job_id, sample)
    for job_id in drawn:
        settled = wait_for(lambda job_id=job_id: ended(net, job_id), f"job {job_id} to end")  # type: ignore[misc]
        assert settled.state == JobState.PAID, job_id


# -- 2. the CLI ----------------------------------------------------------------------------


def verinet(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "verinet", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("mode", [[], ["--mode", "quorum", "-k", "3"]], ids=["signed", "quorum"])
def test_cli_infer_and_job_show(net: Devnet, mode: list[str]) -> None:
    devnet = ["--devnet", str(net.data_dir)]
    out = verinet("infer", "mlp", "--example", "--json", *mode, *devnet)

    sample = samples()["mlp"]
    # A signed job drawn for audit comes back SUBMITTED (held), else PAID.
    held = out["state"] == "SUBMITTED"
    assert out["state"] == "PAID" or (held and not mode)
    assert out["mode"] == ("quorum" if mode else "signed") and out["k"] == (3 if mode else 1)
    # A held job may be paid (nodes finalize it) between the result and its verification,
    # which reads the job again; a paid one never goes back.
    assert out["verdict"] and out["verdict"][1].startswith(
        ("the chain holds this result (SUBMITTED", "the chain settled on this result (PAID)")
        if held
        else "the chain settled on this result (PAID)"
    )
    assert out["output_hash"] == "0x" + group_hash(expected_outputs(sample)).hex()
    assert out["input_hash"] == "0x" + input_hash(sample).hex()
    assert_bit_exact(out["outputs"], expected_outputs(sample))

    shown = verinet("job", "show", str(out["job_id"]), *devnet)
    assert shown["job_id"] == out["job_id"]
    assert shown["state"] == out["state"]
    assert shown["mode"] == ("QUORUM" if mode else "SIGNED")
    assert shown["result"] == out["output_hash"]
    assert shown["input_hash"] == out["input_hash"]
    assert set(out["nodes"]) <= set(shown["seat_holders"])
    assert len(shown["seat_holders"]) == out["k"]


# -- 3, 4. nodes killed mid-job ------------------------------------------------------------


def seat_two(net: Devnet, http: httpx.Client, job_id: JobId, first: list[Address]) -> None:
    """Give the input to two nodes only and wait until both hold a seat: with two of three
    seats taken the reveals stay closed, so both sit committed, not yet revealed."""
    sample = samples()["mlp"]
    for node in first:
        post_input(http, url_of(net, node), job_id, sample)
    for node in first:
        wait_for(
            lambda node=node: stage_is(http, url_of(net, node), job_id, "committed"),  # type: ignore[misc]
            f"{node} to commit to job {job_id}",
        )
    job = net.deployment.market.job(job_id)
    assert (job.state, job.seats, job.reveals) == (JobState.OPEN, 2, 0)


def test_killed_node_is_a_no_show_and_resumes_without_resending(
    net: Devnet, http: httpx.Client
) -> None:
    sample = samples()["mlp"]
    market, token, registry = net.deployment.market, net.deployment.token, net.deployment.nodes
    victim, partner, *rest = [a for a, _ in net.nodes]
    requester = Address(net.clients[1].address)
    balance = token.balance_of(requester)
    stake = registry.node(victim).stake

    job_id = request(net, sample, Mode.QUORUM, 3)
    seat_two(net, http, job_id, [victim, partner])
    before_kill = record(http, url_of(net, victim), job_id)
    assert before_kill is not None and before_kill["commit_tx"]
    sigkill(net, victim)
    with pytest.raises(httpx.TransportError):
        http.get(f"{url_of(net, victim)}/healthz")

    # The other two take the last seat between them; the seated ones reveal, the victim can't.
    for node in rest:
        post_input(http, url_of(net, node), job_id, sample)
    wait_for(lambda: len(events(net, "JobRevealed", job_id)) == 2, "two reveals")
    job = market.job(job_id)
    assert (job.state, job.seats, job.reveals) == (JobState.OPEN, 3, 2)
    assert not market.finalizable(job_id)  # a silent seat holds the job until its deadline

    net.chain.advance_time(job.reveal_deadline - net.chain.timestamp() + 1)
    settled = wait_for(lambda: ended(net, job_id), f"job {job_id} to be finalized")

    assert settled.state == JobState.PAID  # 2 of 3 reveals agree: a majority
    seats = market.seats_of(job_id)
    winners = [n for n in seats if market.revealed_by(job_id, n) == settled.result]
    assert victim not in winners and partner in winners and len(winners) == 2
    (paid,) = events(net, "JobPaid", job_id)
    assert paid.args["winners"] == 2
    (penalty,) = events(net, "NodePenalized", job_id)
    assert penalty.args["node"] == victim and penalty.args["reason"] == Penalty.NO_SHOW
    assert registry.node(victim).stake == stake - penalty.args["amount"] > 0
    assert token.balance_of(requester) == balance - settled.escrow

    net.restart_node(victim)
    after = wait_for(
        lambda: stage_is(http, url_of(net, victim), job_id, "done", "lost"),
        f"the restarted {victim} to close job {job_id}",
    )
    # The record written before the kill survived, and the chain has the one commit it made.
    assert after["commit_tx"] == before_kill["commit_tx"]
    assert "output_hash" not in before_kill  # sealed until revealed or settled
    assert after["output_hash"] == "0x" + settled.result.hex()
    assert (after["stage"], after["outcome"], after["reveal_tx"]) == ("done", "PAID", None)
    (committed,) = events(net, "JobCommitted", job_id, victim)
    assert committed.tx_hash == before_kill["commit_tx"]
    assert events(net, "JobRevealed", job_id, victim) == []
    assert market.revealed_by(job_id, victim) == bytes(32)


def test_node_restarted_in_time_reveals_once(net: Devnet, http: httpx.Client) -> None:
    sample = samples()["mlp"]
    market = net.deployment.market
    *rest, victim, partner = [a for a, _ in net.nodes]

    job_id = request(net, sample, Mode.QUORUM, 3)
    seat_two(net, http, job_id, [victim, partner])
    sigkill(net, victim)
    # The last seat fills while the victim is down: reveals open, and two of three come in.
    for node in rest:
        post_input(http, url_of(net, node), job_id, sample)
    wait_for(lambda: len(events(net, "JobRevealed", job_id)) == 2, "the live seats' reveals")
    assert market.job(job_id).state == JobState.OPEN

    net.restart_node(victim)
    settled = wait_for(lambda: ended(net, job_id), f"job {job_id} to end")

    assert net.chain.timestamp() < settled.reveal_deadline  # ended early: every seat revealed
    assert settled.state == JobState.PAID
    assert [e.args["node"] for e in events(net, "JobCommitted", job_id, victim)] == [victim]
    (revealed,) = events(net, "JobRevealed", job_id, victim)
    assert revealed.args["output_hash"] == settled.result
    (paid,) = events(net, "JobPaid", job_id)
    assert paid.args["winners"] == 3
    assert events(net, "NodePenalized", job_id) == []
    mine = wait_for(
        lambda: stage_is(http, url_of(net, victim), job_id, "done"),
        f"the restarted {victim} to record job {job_id} as done",
    )
    assert mine["outcome"] == "PAID" and mine["reveal_tx"] == revealed.tx_hash


# -- 5. malformed input --------------------------------------------------------------------


def tensor(array: Array) -> dict[str, Any]:
    return {"dtype": str(array.dtype), "shape": list(array.shape), "data": array.tolist()}


def test_malformed_inputs_are_refused_with_what_to_fix(net: Devnet, http: httpx.Client) -> None:
    sample = samples()["mlp"]
    (x,) = sample.example.values()
    assert x.shape == (1, 16) and x.dtype == np.float32
    job_id = request(net, sample, Mode.SIGNED, 1)
    url = net.nodes[0][1]
    job_input = f"{url}/v1/jobs/{job_id}/input"

    def refused(status: int, error: str, *fix: str, path: str = job_input, **kw: Any) -> None:
        response = http.post(path, **kw)
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error", "detail"} and body["error"] == error, body
        for words in fix:
            assert words in body["detail"], body["detail"]

    refused(
        422,
        "DtypeMismatch",
        "dtype int64",
        "takes float32",
        ".astype('float32')",
        json={"inputs": {"x": tensor(x.astype(np.int64))}},
    )
    refused(
        422,
        "ShapeMismatch",
        "axis 1 is 8",
        "[batch, 16]",
        json={"inputs": {"x": tensor(x[:, :8])}},
    )
    refused(
        413,
        "PayloadTooLarge",
        f"over {8 * MiB} bytes",
        content=b"0" * (9 * MiB),
        headers={"content-type": "application/json"},
    )
    refused(
        400,
        "MalformedTensor",
        "not valid JSON",
        content=b'{"inputs": {"x": ',
        headers={"content-type": "application/json"},
    )
    # 100,000 levels would overflow the C stack of json's parser (a segfault, since py-evm
    # raises the recursion limit): refused before parsing, on the job and the direct route.
    deep = b'{"inputs": {"x": ' + b"[" * 100_000
    for where in (job_input, f"{url}/v1/models/{net.models[sample.name]}/execute"):
        refused(400, "MalformedTensor", "deeper than 64 levels", path=where, content=deep)
    other = np.ones_like(x)
    refused(
        409,
        "InputHashMismatch",
        f"0x{input_hash(sample).hex()}",
        f"0x{input_hash(sample, {'x': other}).hex()}",
        "send exactly the tensors",
        json={"inputs": {"x": tensor(other)}},
    )
    nan = x.copy()
    nan[0, 3] = np.nan
    # Standard JSON has no NaN: as raw bytes (b64), and as the bare NaN Python's json writes.
    as_b64 = {"dtype": "float32", "shape": [1, 16], "b64": base64.b64encode(nan.tobytes()).decode()}
    refused(422, "NonFiniteInput", "NaN/Inf", "index (0, 3)", json={"inputs": {"x": as_b64}})
    refused(
        422,
        "NonFiniteInput",
        "finite values only",
        content=json.dumps({"inputs": {"x": tensor(nan)}}).encode(),
        headers={"content-type": "application/json"},
    )
    short = {**as_b64, "b64": base64.b64encode(x.tobytes()[:60]).decode()}
    refused(400, "MalformedTensor", "b64 holds 60 bytes", "needs 64", json={"inputs": {"x": short}})
    good = {"inputs": group_to_json(sample.example)}
    refused(404, "UnknownJob", "does not exist", path=f"{url}/v1/jobs/999999/input", json=good)
    refused(404, "ModelNotServed", "serves [", path=f"{url}/v1/models/999999/execute", json=good)
    unknown = http.get(f"{url}/v1/jobs/999999")
    assert unknown.status_code == 404 and unknown.json()["error"] == "UnknownJob"

    # None of it stuck: the right tensors still run, and the job ends paid.
    direct = http.post(f"{url}/v1/models/{net.models['mlp']}/execute", json=good)
    assert direct.status_code == 200, direct.text
    assert direct.json()["output_hash"] == "0x" + group_hash(expected_outputs(sample)).hex()
    for _, node_url in net.nodes:
        post_input(http, node_url, job_id, sample)
    settled = wait_for(lambda: ended(net, job_id), f"job {job_id} to end")
    assert settled.state == JobState.PAID
    metrics = http.get(f"{url}/metrics").text
    assert 'verinet_http_errors_total{error="DtypeMismatch"} 1.0' in metrics


def test_sdk_refuses_a_wrong_dtype_before_any_money_moves(net: Devnet, client: Client) -> None:
    sample = samples()["mlp"]
    token, market = net.deployment.token, net.deployment.market
    balance, jobs = token.balance_of(client.address), market.job_count()
    wrong = {name: array.astype(np.int64) for name, array in sample.example.items()}

    with pytest.raises(DtypeMismatch, match=r"astype\('float32'\)"):
        client.infer(net.models["mlp"], wrong, mode="quorum", k=3)

    assert token.balance_of(client.address) == balance
    assert market.job_count() == jobs


class _ClientWithHostileNodes(Client):
    """Lists a hostile endpoint first under every registered node's address."""

    hostile_url = ""

    def nodes(self, model_id: Any = None) -> list[NodeEndpoint]:
        real = super().nodes(model_id)
        return [NodeEndpoint(n.address, self.hostile_url) for n in real] + real


def test_a_node_answering_hostile_json_cannot_crash_the_client(net: Devnet) -> None:
    # Its inputs refused, its reads answered with JSON nested past json's C stack.
    sample = samples()["mlp"]
    with (
        deep_json_server("GET") as hostile,
        _ClientWithHostileNodes(net.deployment, net.clients[1], timeout=DEADLINE) as c,
    ):
        c.hostile_url = hostile.url
        result = c.infer(net.models["mlp"], sample.example, mode="signed")
    assert hostile.answered > 0  # the client asked the hostile endpoint first, and went on
    assert_bit_exact(result.outputs, expected_outputs(sample))
    assert result.verdict is not None and result.verdict.checks[0] == "outputs hash to the result"


# -- 5. escrow never stuck: refused before paying, or ended by the deadline ----------------


@pytest.fixture
def hub_client(net: Devnet) -> Iterator[Client]:
    """A client that puts inputs over a node's body limit in the devnet's hub, by CID."""
    store = DiskStore(net.data_dir / "hub")
    with Client(
        net.deployment, net.clients[0], timeout=DEADLINE, blob_store=store, blob_url=net.hub_url
    ) as c:
        yield c


def large_input(size: int) -> dict[str, Array]:
    """An mlp input of about `size` bytes (its batch axis is symbolic)."""
    rows = size // (16 * 4)
    return {"x": np.random.default_rng(7).standard_normal((rows, 16)).astype(np.float32)}


@pytest.mark.parametrize(("mode", "k"), [("signed", 1), ("quorum", 3)])
def test_an_input_over_the_nodes_body_limit_goes_by_cid(
    net: Devnet, hub_client: Client, http: httpx.Client, mode: str, k: int
) -> None:
    # The manifest takes 16 MiB; a node's body is at most 8 MiB (it says so in /healthz).
    sample, token = samples()["mlp"], net.deployment.token
    limits = http.get(f"{net.nodes[0][1]}/healthz").json()["limits"]
    assert limits["max_request_bytes"] == 8 * MiB < 12_000_000
    assert sample.manifest.input_policy.max_bytes == 16 * MiB
    inputs = large_input(12_000_000)
    before = token.balance_of(hub_client.address)

    result = hub_client.infer(net.models["mlp"], inputs, mode=mode, k=k)  # type: ignore[arg-type]

    want = OnnxExecutor(sample.model_bytes, sample.manifest).run(inputs)
    assert_bit_exact(result.outputs, want)
    settled = net.deployment.market.job(result.job_id)
    assert settled.state in (JobState.PAID, JobState.SUBMITTED)
    assert token.balance_of(hub_client.address) == before - settled.escrow
    blob = encode_group(inputs)
    assert len(blob) > 8 * MiB
    for node in result.nodes:  # the nodes the chain paid took it by CID
        found = record(http, url_of(net, node), result.job_id)
        assert found is not None and found["input_cid"] == cid_of(blob)


def test_an_input_no_node_takes_is_refused_before_paying(net: Devnet, client: Client) -> None:
    market, token = net.deployment.market, net.deployment.token
    jobs, balance = market.job_count(), token.balance_of(client.address)
    # This client has no blob store to send a CID from: 12 MB fits no node's body limit.
    with pytest.raises(InputTooLarge, match="Nothing was paid"):
        client.infer(net.models["mlp"], large_input(12_000_000))
    assert (market.job_count(), token.balance_of(client.address)) == (jobs, balance)


def test_a_quorum_larger_than_the_serving_nodes_is_refused_before_paying(
    net: Devnet, client: Client
) -> None:
    market, token = net.deployment.market, net.deployment.token
    jobs, balance = market.job_count(), token.balance_of(client.address)
    sample = samples()["mlp"]
    with pytest.raises(NotEnoughNodes, match=r"a quorum of 5 needs 5 nodes .* but 4 serve it") as e:
        client.infer(net.models["mlp"], sample.example, mode="quorum", k=5)
    assert (e.value.serving, e.value.needed) == (4, 5)
    assert (market.job_count(), token.balance_of(client.address)) == (jobs, balance)


def test_a_job_nobody_answers_is_ended_by_the_nodes(net: Devnet) -> None:
    market = net.deployment.market
    devnet = ["--devnet", str(net.data_dir)]
    job_id = request(net, samples()["mlp"], Mode.SIGNED, 1)  # paid; its input never sent

    early = subprocess.run(
        [sys.executable, "-m", "verinet", "job", "finalize", str(job_id), *devnet],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert early.returncode == 1 and "TooEarly" in early.stderr
    assert market.job(job_id).state == JobState.OPEN

    job = market.job(job_id)
    net.chain.advance_time(job.reveal_deadline - net.chain.timestamp())
    settled = wait_for(lambda: ended(net, job_id), f"the nodes to end job {job_id}")
    assert settled.state == JobState.REFUNDED
    (refund,) = events(net, "JobRefunded", job_id)
    assert refund.args["amount"] == job.escrow
    assert verinet("job", "finalize", str(job_id), *devnet) == {
        "job_id": job_id,
        "state": "REFUNDED",
        "finalize_tx": None,
    }
