"""A node on the embedded chain, driven step by step: jobs, restarts, its HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from eth_account.signers.local import LocalAccount

from tests.helpers import stake_for_model
from verinet._server import serve
from verinet.chain.deploy import Deployment, deploy_protocol
from verinet.chain.embedded import EmbeddedChain
from verinet.client.sdk import Client, _choose_quorum
from verinet.devnet.audit import audit, audit_jobs
from verinet.devnet.samples import SampleModel, publish_samples, sample_models
from verinet.errors import ReceiptRequestRefused
from verinet.hub.store import DiskStore
from verinet.node.api import node_app
from verinet.node.config import NodeSettings
from verinet.node.db import Stage
from verinet.node.service import Node
from verinet.protocol.receipts import Receipt, sign_receipt_request
from verinet.protocol.types import JobState, Mode
from verinet.runtime.tensors import group_hash
from verinet.runtime.wire import group_to_json
from verinet.types import Address, Hash32, JobId, ModelId


@dataclass
class World:
    chain: EmbeddedChain
    deployment: Deployment
    nodes: list[LocalAccount]
    client: LocalAccount
    sample: SampleModel
    model_id: int
    tmp: Path

    def node(self, index: int, **settings_: Any) -> Node:
        settings = NodeSettings(
            data_dir=self.tmp / f"node-{index}",
            isolation="thread",
            withdraw_interval=1e9,
            **settings_,
        )
        node = Node(settings, self.nodes[index], self.deployment)
        # Every node replicates from the model owner's store, as the devnet's nodes do.
        for cid in DiskStore(self.tmp / "hub"):
            node.store.put_verified(cid, DiskStore(self.tmp / "hub").get(cid))
        node.sync_models()
        return node

    def request(self, mode: Mode, k: int) -> JobId:
        job_id, _ = self.deployment.market.request(
            self.model_id, group_hash(self.sample.example), mode, k, sender=self.client.address
        )
        return job_id


def make_world(tmp: Path) -> World:
    """A deployed protocol with the mlp published and three nodes staked to serve it."""
    chain = EmbeddedChain(accounts=9)
    accounts = list(chain.accounts)
    deployer, owner, nodes, client = accounts[0], accounts[1], accounts[2:5], accounts[5]
    d = deploy_protocol(chain, deployer=deployer.address, treasury=accounts[8].address)
    published = publish_samples(d, DiskStore(tmp / "hub"), Address(owner.address))
    model_id = published["mlp"].model_id
    stake_for_model(d, Address(deployer.address), nodes, client, model_id)
    sample = next(s for s in sample_models() if s.name == "mlp")
    return World(chain, d, nodes, client, sample, model_id, tmp)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path)
    yield world
    audit(world.deployment)
    audit_jobs(world.deployment)


def test_quorum_job_settles_through_three_nodes(world: World) -> None:
    nodes = [world.node(i) for i in range(3)]
    job_id = world.request(Mode.QUORUM, 3)
    for node in nodes:
        assert node.accept_input(job_id, world.sample.example).record.stage == Stage.READY
    for _ in range(4):
        for node in nodes:
            node.advance(job_id)
    job = world.deployment.market.job(job_id)
    assert job.state == JobState.PAID
    assert {n.record(job_id).stage for n in nodes} == {Stage.DONE}
    expected = nodes[0].record(job_id).output_hash
    assert job.result == expected
    result = nodes[1].result(job_id)
    assert result["output_hash"] == "0x" + job.result.hex()


def test_restarted_node_never_commits_twice(world: World) -> None:
    node = world.node(0)
    job_id = world.request(Mode.QUORUM, 3)
    node.accept_input(job_id, world.sample.example)
    node.advance(job_id)  # READY -> COMMITTED (the commit went out)
    assert node.record(job_id).stage == Stage.COMMITTED
    # Simulate a crash after the commit was sent but before the stage was written.
    node.db.update(job_id, stage=Stage.COMMITTING)
    salt = node.record(job_id).salt
    node.close()

    again = world.node(0)
    commits_before = len(world.deployment.market.history("JobCommitted"))
    again.advance(job_id)
    assert again.record(job_id).stage == Stage.COMMITTED
    assert again.record(job_id).salt == salt  # the salt survived, so the reveal can open it
    assert len(world.deployment.market.history("JobCommitted")) == commits_before
    # The other seats fill; the restarted node reveals exactly once, and the job pays.
    others = [world.node(i) for i in (1, 2)]
    for other in others:
        other.accept_input(job_id, world.sample.example)
    for _ in range(4):
        for n in (again, *others):
            n.advance(job_id)
    reveals = [
        e for e in world.deployment.market.history("JobRevealed") if e.args["job_id"] == job_id
    ]
    assert sorted(e.args["node"] for e in reveals) == sorted(n.address for n in (again, *others))
    assert world.deployment.market.job(job_id).state == JobState.PAID


def test_signed_job_and_receipt(world: World) -> None:
    nodes = [world.node(i) for i in range(3)]
    job_id = world.request(Mode.SIGNED, 1)
    for node in nodes:
        node.accept_input(job_id, world.sample.example)
    for _ in range(30):  # the draw widens every selection round
        for node in nodes:
            node.advance(job_id)
        if world.deployment.market.job(job_id).state.terminal:
            break
        world.chain.advance_time(world.deployment.params.selection_round())
    assert world.deployment.market.job(job_id).state == JobState.PAID
    winners = [n for n in nodes if n.record(job_id).receipt_tx]
    assert len(winners) == 1
    assert winners[0].result(job_id)["receipt"]


def test_unanswered_job_is_refunded_and_nodes_stand_down(world: World) -> None:
    node = world.node(0)
    job_id = world.request(Mode.QUORUM, 3)
    balance = world.deployment.token.balance_of(world.client.address)
    node.poll()  # sees the request; never gets the input
    assert node.record(job_id).stage == Stage.AWAITING_INPUT
    world.chain.advance_time(10_000)
    world.deployment.market.finalize(job_id, sender=world.client.address)
    node.poll()
    assert world.deployment.market.job(job_id).state == JobState.REFUNDED
    world.deployment.market.withdraw(sender=world.client.address)
    assert world.deployment.token.balance_of(world.client.address) > balance
    record = node.record(job_id)
    assert record.stage == Stage.DONE and record.outcome == "REFUNDED"


def test_http_api_refusals_say_what_to_fix(world: World) -> None:
    node = world.node(0)
    job_id = world.request(Mode.QUORUM, 3)
    example = world.sample.example
    good = {"inputs": group_to_json(example)}
    (name,) = example
    with serve(node_app(node)) as url, httpx.Client(base_url=url, timeout=30) as http:
        ok = http.post(f"/v1/models/{world.model_id}/execute", json=good)
        assert ok.status_code == 200
        assert ok.json()["input_hash"] == "0x" + group_hash(example).hex()
        cases = [
            (
                {"inputs": {name: {"dtype": "int64", "shape": [1, 16], "data": [0] * 16}}},
                422,
                "DtypeMismatch",
                "astype",
            ),
            (
                {"inputs": {name: {"dtype": "float32", "shape": [1, 15], "data": [0.0] * 15}}},
                422,
                "ShapeMismatch",
                "axis 1",
            ),
            ({"inputs": {}}, 422, "MissingInput", name),
            ({"wrong": 1}, 400, "MalformedTensor", "inputs"),
        ]
        for body, status, error, hint in cases:
            r = http.post(f"/v1/models/{world.model_id}/execute", json=body)
            assert (r.status_code, r.json()["error"]) == (status, error), r.text
            assert hint in r.json()["detail"]
        nan = {name: np.full((1, 16), np.nan, dtype=np.float32)}
        r = http.post(f"/v1/models/{world.model_id}/execute", json={"inputs": group_to_json(nan)})
        assert (r.status_code, r.json()["error"]) == (422, "NonFiniteInput")
        r = http.post("/v1/models/999/execute", json=good)
        assert (r.status_code, r.json()["error"]) == (404, "ModelNotServed")
        r = http.post("/v1/jobs/777/input", json=good)
        assert (r.status_code, r.json()["error"]) == (404, "UnknownJob")
        other = {name: example[name] + 1}
        r = http.post(f"/v1/jobs/{job_id}/input", json={"inputs": group_to_json(other)})
        assert (r.status_code, r.json()["error"]) == (409, "InputHashMismatch")
        r = http.get(f"/v1/jobs/{job_id}/result")
        assert r.status_code == 404  # never sent an input: no record
        r = http.post(f"/v1/jobs/{job_id}/input", json=good)
        assert r.status_code == 202 and r.json()["stage"] == "ready"
        r = http.get(f"/v1/jobs/{job_id}/result")
        assert (r.status_code, r.json()["error"]) == (409, "ResultNotReady")  # not yet revealed
        big = b'{"inputs": "' + b"x" * (node.settings.max_request_bytes + 1) + b'"}'
        r = http.post(f"/v1/jobs/{job_id}/input", content=big)
        assert r.status_code == 413 and "send less" in r.json()["detail"]
        r = http.post(f"/v1/jobs/{job_id}/input", content=b"{not json")
        assert (r.status_code, r.json()["error"]) == (400, "MalformedTensor")
        assert http.get("/healthz").json()["models"] == [world.model_id]
        metrics = http.get("/metrics").text
        assert 'verinet_executions_total{path="direct",result="ok"}' in metrics
        paths = http.get("/openapi.json").json()["paths"]
        assert "/v1/jobs/{job_id}/input" in paths
        execute = paths["/v1/models/{model_id}/execute"]["post"]  # the lean route, documented
        assert execute["parameters"][0]["schema"]["type"] == "integer"
        assert "requestBody" in execute and "ExecuteResponse" in json.dumps(execute["responses"])
        r = http.post("/v1/models/mlp/execute", json=good)
        assert r.status_code == 404  # not an integer: no such route


def _ask(world: World, job_id: JobId, node: Node, signer: LocalAccount) -> str:
    return "0x" + (
        sign_receipt_request(
            signer,
            chain_id=world.chain.chain_id,
            market=world.deployment.market.address,
            job_id=job_id,
            node=node.address,
        ).hex()
    )


def test_quorum_receipts_go_to_the_requester_alone_and_settle_at_once(world: World) -> None:
    nodes = [world.node(i) for i in range(3)]
    market = world.deployment.market
    job_id = world.request(Mode.QUORUM, 3)
    body = {"inputs": group_to_json(world.sample.example)}
    receipts = []
    for i, node in enumerate(nodes):
        with serve(node_app(node)) as url, httpx.Client(base_url=url, timeout=30) as http:
            if i == 0:
                # Someone else's signature, or one meant for another node: 403, no receipt.
                for signer, named in ((nodes[1].account, node), (world.client, nodes[1])):
                    r = http.post(
                        f"/v1/jobs/{job_id}/input",
                        json={**body, "receipt_request": _ask(world, job_id, named, signer)},
                    )
                    assert r.status_code == 403, r.text
                    assert "ReceiptRequest" in r.json()["detail"]
                r = http.post(
                    f"/v1/jobs/{job_id}/input", json={**body, "receipt_request": "0x1234"}
                )
                assert r.status_code == 400 and r.json()["error"] == "InvalidReceipt"
                # Without asking, a sealed answer stays hidden from every reader.
                r = http.post(f"/v1/jobs/{job_id}/input", json=body)
                assert r.status_code == 202 and "receipt" not in r.json()
                assert "output_hash" not in http.get(f"/v1/jobs/{job_id}").json()
                assert http.get(f"/v1/jobs/{job_id}/result").status_code == 409
                assert http.get(f"/v1/jobs/{job_id}/trace/1").status_code == 409
            r = http.post(
                f"/v1/jobs/{job_id}/input",
                json={**body, "receipt_request": _ask(world, job_id, node, world.client)},
            )
            assert r.status_code == 202, r.text
            got = r.json()["receipt"]
            assert got["node"] == node.address
            assert "output_hash" not in r.json()  # the record part stays sealed
            receipts.append(node.receipt(node.record(job_id)))
    assert all(r is not None for r in receipts)
    # The nodes hold back their commits while the requester may still settle.
    for node in nodes:
        node.advance(job_id)
        assert node.record(job_id).stage == Stage.READY
    assert market.job(job_id).seats == 0
    market.submit_quorum([r for r in receipts if r], sender=world.client.address)
    job = market.job(job_id)
    assert job.state == JobState.PAID and job.result == nodes[0].record(job_id).output_hash
    # A node serves the result (and its trace) as soon as the chain settled, before it saw
    # the event.
    assert nodes[2].result(job_id)["output_hash"] == "0x" + job.result.hex()
    assert nodes[1].trace_step(job_id, 1)
    for node in nodes:
        node.advance(job_id)
        assert node.record(job_id).stage == Stage.DONE
        assert node.record(job_id).outcome == "PAID"


def test_receipt_holders_commit_after_the_grace_if_the_requester_is_silent(world: World) -> None:
    nodes = [world.node(i) for i in range(3)]
    job_id = world.request(Mode.QUORUM, 3)
    for node in nodes:
        accepted = node.accept_input(
            job_id,
            world.sample.example,
            receipt_request=bytes.fromhex(_ask(world, job_id, node, world.client)[2:]),
        )
        assert accepted.receipt is not None
        node.advance(job_id)
        assert node.record(job_id).stage == Stage.READY  # waiting for submit_quorum
    job = world.deployment.market.job(job_id)
    grace = min(nodes[0].settings.receipt_grace, (job.commit_deadline - job.requested_at) // 2)
    world.chain.advance_time(grace)
    for _ in range(4):
        for node in nodes:
            node.advance(job_id)
    assert world.deployment.market.job(job_id).state == JobState.PAID
    assert {n.record(job_id).stage for n in nodes} == {Stage.DONE}


def test_receipt_request_refused_for_a_signed_job(world: World) -> None:
    node = world.node(0)
    job_id = world.request(Mode.SIGNED, 1)
    with pytest.raises(ReceiptRequestRefused, match="quorum jobs only"):
        node.accept_input(
            job_id,
            world.sample.example,
            receipt_request=bytes.fromhex(_ask(world, job_id, node, world.client)[2:]),
        )


def test_client_falls_back_to_commit_and_reveal_when_a_seat_is_taken(world: World) -> None:
    # No daemons: the nodes move only when the test moves them, at the client's progress
    # messages. Node 0 takes a seat just before the client submits the receipts, so
    # submit_quorum reverts (SeatsTaken) and the job settles by commit and reveal.
    nodes = [world.node(i, receipt_grace=0) for i in range(3)]
    market = world.deployment.market
    messages: list[str] = []

    def progress(message: str) -> None:
        messages.append(message)
        job_id = JobId(market.job_count())
        if message.startswith("settling"):
            nodes[0].advance(job_id)
            assert market.job(job_id).seats == 1
        elif message.startswith("the receipts did not settle"):
            for _ in range(4):
                for node in nodes:
                    node.advance(job_id)

    with ExitStack() as stack:
        for node in nodes:
            url = stack.enter_context(serve(node_app(node)))
            world.deployment.nodes.set_endpoint(url, sender=node.address)
        client = stack.enter_context(Client(world.deployment, world.client))
        result = client.infer(
            world.model_id, world.sample.example, mode="quorum", k=3, progress=progress
        )
    assert "the receipts did not settle (SeatsTaken); nodes commit instead" in messages
    assert result.state == JobState.PAID and "submit_quorum" not in result.transactions
    assert result.receipts == ()
    assert result.verdict is not None
    assert result.verdict.summary == "3 of 3 committed reveals agree (majority 2)"


def test_choose_quorum_takes_a_clear_majority_or_nothing() -> None:
    def r(answer: str, who: int) -> Receipt:
        return Receipt(
            chain_id=1,
            market=Address("0x" + "11" * 20),
            job_id=JobId(1),
            model_id=ModelId(1),
            input_hash=Hash32(bytes(32)),
            output_hash=Hash32(answer.encode().ljust(32, b".")),
            node=Address(f"0x{who:040x}"),
            signature=bytes(65),
        )

    assert _choose_quorum([r("a", 1), r("a", 2)], 3) is None  # too few
    chosen = _choose_quorum([r("b", 1), r("a", 2), r("a", 3), r("c", 4)], 3)
    assert chosen is not None and len(chosen) == 3
    assert chosen[:2] == [r("a", 2), r("a", 3)]  # the majority first, then one other
    assert _choose_quorum([r("a", 1), r("a", 2), r("b", 3), r("b", 4)], 3) is None  # a tie
    assert _choose_quorum([r("a", 1), r("b", 2), r("c", 3)], 3) is None  # no majority


def test_a_peer_will_not_run_an_open_quorum_jobs_input_directly(world: World) -> None:
    # A lazy seat could POST the job's input to a peer's execute endpoint and commit the
    # answer it gets. The peer refuses while the quorum's answers are sealed.
    nodes = [world.node(i) for i in range(3)]
    job_id = world.request(Mode.QUORUM, 3)
    body = {"inputs": group_to_json(world.sample.example)}
    with serve(node_app(nodes[1])) as url, httpx.Client(base_url=url, timeout=30) as http:
        nodes[1].poll()  # the peer saw the JobRequested event
        r = http.post(f"/v1/models/{world.model_id}/execute", json=body)
        assert r.status_code == 409 and r.json()["error"] == "InputSealed"
        assert f"quorum job {job_id}" in r.json()["detail"]
        other = {k: v + 1 for k, v in world.sample.example.items()}
        ok = http.post(
            f"/v1/models/{world.model_id}/execute", json={"inputs": group_to_json(other)}
        )
        assert ok.status_code == 200  # any other input runs as before
        for node in nodes:
            node.accept_input(job_id, world.sample.example)
        for _ in range(4):
            for node in nodes:
                node.advance(job_id)
        assert world.deployment.market.job(job_id).state == JobState.PAID
        r = http.post(f"/v1/models/{world.model_id}/execute", json=body)
        assert r.status_code == 200  # settled: the answer is public now
