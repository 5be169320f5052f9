"""zk jobs through nodes on the embedded chain, driven step by step: a node takes a zk job's
input without running it, proves once drawn (off its job loop), survives a restart mid-proof,
submits, is paid, and serves its proof. The circuit (the ``mlp`` sample's) is built once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from eth_account.signers.local import LocalAccount

from tests.helpers import stake_for_model
from verinet.chain.deploy import Deployment, deploy_protocol
from verinet.chain.embedded import EmbeddedChain
from verinet.devnet.audit import audit, audit_jobs
from verinet.devnet.bootstrap import TOKEN
from verinet.devnet.samples import SampleModel, sample_models
from verinet.errors import InputHashMismatch, ResultNotReady
from verinet.hub.publish import draft_manifest
from verinet.hub.store import DiskStore
from verinet.node.config import NodeSettings
from verinet.node.db import Stage
from verinet.node.service import Node
from verinet.protocol.types import JobState
from verinet.protocol.zk import instances_hash
from verinet.runtime.tensors import Array, group_hash
from verinet.types import Address, JobId, ModelId
from verinet.verification.zk import CircuitArtifacts, build_artifacts, input_instances, verify
from verinet.verification.zk_hub import proof_from_json, register_zk

DEADLINE = 60.0


@pytest.fixture(scope="module")
def mlp() -> SampleModel:
    return next(s for s in sample_models() if s.name == "mlp")


@pytest.fixture(scope="module")
def circuit(mlp: SampleModel, tmp_path_factory: pytest.TempPathFactory) -> CircuitArtifacts:
    return build_artifacts(mlp.model_bytes, mlp.example, tmp_path_factory.mktemp("zk-build"))


@dataclass
class World:
    chain: EmbeddedChain
    deployment: Deployment
    nodes: list[LocalAccount]
    client: LocalAccount
    model_id: ModelId
    circuit: CircuitArtifacts
    tmp: Path

    def node(self, index: int) -> Node:
        settings = NodeSettings(
            data_dir=self.tmp / f"node-{index}", isolation="thread", withdraw_interval=1e9
        )
        node = Node(settings, self.nodes[index], self.deployment)
        hub = DiskStore(self.tmp / "hub")  # replicated as the devnet's nodes do
        for cid in hub:
            node.store.put_verified(cid, hub.get(cid))
        node.sync_models()
        return node

    def request(self, inputs: dict[str, Array], committed: dict[str, Array]) -> JobId:
        job_id, _ = self.deployment.market.request_zk(
            self.model_id,
            group_hash(inputs),
            instances_hash(input_instances(self.circuit, committed)),
            sender=Address(self.client.address),
        )
        return job_id

    def drawn(self, job_id: JobId, nodes: list[Node]) -> Node:
        """A node drawn for the job, widening the draw with chain time if none is yet."""
        for _ in range(8):
            for node in nodes:
                if self.deployment.market.is_eligible(job_id, node.address):
                    return node
            self.chain.advance_time(self.deployment.params.selection_round())
        raise AssertionError("no node drawn after 8 selection rounds")


@pytest.fixture
def world(tmp_path: Path, mlp: SampleModel, circuit: CircuitArtifacts) -> Iterator[World]:
    chain = EmbeddedChain(accounts=8)
    accounts = list(chain.accounts)
    deployer, owner, nodes, client = accounts[0], accounts[1], accounts[2:5], accounts[5]
    d = deploy_protocol(chain, deployer=deployer.address, treasury=accounts[7].address)
    manifest = draft_manifest(
        mlp.model_bytes, name="mlp-zk", fee=TOKEN, license="Apache-2.0", modes=("signed",)
    )
    steps: list[tuple[str, int, int]] = []
    published = register_zk(
        mlp.model_bytes,
        manifest,
        circuit,
        store=DiskStore(tmp_path / "hub"),
        registry=d.models,
        sender=Address(owner.address),
        progress=lambda *step: steps.append(step),
    )
    assert steps == [
        ("store", 7, 10),
        ("publish", 8, 10),
        ("register", 9, 10),
        ("register", 10, 10),
    ]
    stake_for_model(d, Address(deployer.address), nodes, client, published.model_id)
    yield World(chain, d, nodes, client, published.model_id, circuit, tmp_path)
    audit(d)
    audit_jobs(d)


def _advance_until(node: Node, job_id: JobId, stage: Stage) -> None:
    deadline = time.monotonic() + DEADLINE
    while node.advance(job_id).stage != stage:
        assert time.monotonic() < deadline, f"job {job_id} never reached {stage}"
        time.sleep(0.05)


def test_a_drawn_node_proves_across_a_restart_is_paid_and_serves_its_proof(
    world: World, mlp: SampleModel
) -> None:
    nodes = [world.node(i) for i in range(3)]
    job_id = world.request(mlp.example, mlp.example)
    for node in nodes:
        record = node.accept_input(job_id, mlp.example).record
        assert record.stage == Stage.READY and record.output_hash is None  # not run: proved
    drawn = world.drawn(job_id, nodes)
    assert drawn.advance(job_id).stage == Stage.PROVING
    # Killed while proving: the proof in flight is lost, the stage is not.
    drawn.close()
    drawn.prover.close(wait=True)
    again = world.node(nodes.index(drawn))
    record = again.record(job_id)
    assert record.stage == Stage.PROVING and record.proof_cid is None
    _advance_until(again, job_id, Stage.DONE)

    job = world.deployment.market.job(job_id)
    record = again.record(job_id)
    assert job.state == JobState.PAID and record.outcome == "PAID"
    assert world.deployment.market.seats_of(job_id) == [again.address]
    assert record.proof_tx is not None and record.output_hash == job.result
    served = again.result(job_id)
    assert served["output_hash"] == "0x" + job.result.hex()
    assert served["transactions"]["proof"] == record.proof_tx
    proof = proof_from_json(served["zk"], world.circuit)
    assert verify(world.circuit, proof)
    assert instances_hash(proof.output_instances) == job.result
    np.testing.assert_array_equal(proof.outputs["y"], again.prover.proof(record).outputs["y"])

    for other in (n for n in nodes if n is not drawn):
        assert other.advance(job_id).stage == Stage.DONE  # settled by another: nothing to show
        with pytest.raises(ResultNotReady):
            other.result(job_id)
    again.close()


def test_inputs_whose_instances_the_job_did_not_commit_to_are_refused(
    world: World, mlp: SampleModel
) -> None:
    node = world.node(0)
    other = {"x": (mlp.example["x"] * 0.5).astype(np.float32)}
    job_id = world.request(mlp.example, other)
    with pytest.raises(InputHashMismatch, match="committed to"):
        node.accept_input(job_id, mlp.example)
    assert node.db.get(job_id) is None or node.record(job_id).stage == Stage.AWAITING_INPUT
    node.close()
