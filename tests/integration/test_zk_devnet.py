"""zk mode end to end: an embedded devnet whose nodes serve the ``mlp-zk`` sample (its circuit
built at start with a local test SRS), a client that commits to its inputs' circuit instances,
a drawn node that proves the run and is paid when the market's verifier accepts the proof, and
the client's off-chain check of that proof."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from verinet.chain import artifacts
from verinet.client import Client
from verinet.client.zk import checked_verifier, circuit
from verinet.devnet.audit import audit, audit_jobs
from verinet.devnet.models import mlp
from verinet.devnet.network import Devnet
from verinet.devnet.samples import ZK_SAMPLE, sample_models
from verinet.errors import InputHashMismatch, NodeRequestFailed, VerificationFailed
from verinet.node.db import Stage
from verinet.protocol.types import JobState, Mode
from verinet.protocol.zk import instances_hash
from verinet.runtime.executor import OnnxExecutor
from verinet.types import Address, ModelId

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("zk-devnet")]


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with Devnet.start(tmp_path_factory.mktemp("zk-devnet"), nodes=2, zk=True) as net:
        yield net


def test_a_zk_job_is_proved_paid_and_verified(
    devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERINET_CACHE_DIR", str(tmp_path))  # the client fetches the circuit
    mlp = next(s for s in sample_models() if s.name == "mlp")
    model_id = devnet.models[ZK_SAMPLE]
    manifest_zk = devnet.deployment.models.verifier_of(model_id)
    assert manifest_zk.registered and manifest_zk.input_instances == 16

    steps: list[str] = []
    with Client(devnet.deployment, devnet.clients[0]) as client:
        result = client.infer(model_id, mlp.example, mode="zk", progress=steps.append)
        manifest = client.manifest(model_id)
    assert manifest.zk is not None and manifest.zk.srs_for_testing
    assert (tmp_path / "zk" / str(manifest.zk.circuit) / "vk.key").is_file()
    assert not (tmp_path / "zk" / str(manifest.zk.circuit) / "pk.key").exists()  # not a prover
    assert "zk" in manifest.modes

    job = devnet.deployment.market.job(result.job_id)
    assert (job.mode, job.state, result.state) == (Mode.ZK, JobState.PAID, JobState.PAID)
    assert result.mode == "zk" and result.output_hash == job.result
    prover = devnet.deployment.market.seats_of(result.job_id)
    assert list(result.nodes) == prover and prover[0] in {a for a, _ in devnet.nodes}
    proof = result.extra["proof"]
    assert instances_hash(proof.output_instances) == job.result
    assert devnet.deployment.market.instances_hash(result.job_id) == instances_hash(
        proof.input_instances
    )
    # The proved outputs are the model's, up to the circuit's fixed-point quantization.
    expected = OnnxExecutor(mlp.model_bytes, mlp.manifest).run(mlp.example)["y"]
    np.testing.assert_allclose(result.outputs["y"], expected, rtol=0, atol=2e-2)

    assert result.verdict is not None
    checks = result.verdict.checks
    assert checks[0].startswith("the chain paid this result (PAID) after verifier")
    assert "verified off-chain with the model's verification key" in result.verdict.summary
    assert "FOR TESTING ONLY" in result.verdict.summary
    assert any(s.startswith("WARNING:") and "FOR TESTING ONLY" in s for s in steps)
    assert "waiting for a drawn node's proof" in steps
    # Verifying again from scratch (the proof travels with the result) checks out too.
    with Client(devnet.deployment, devnet.clients[0]) as again:
        assert again.verify(result).checks == checks
        lied = replace(result, outputs={"y": result.outputs["y"] + np.float32(0.5)})
        with pytest.raises(VerificationFailed, match="dequantized"):
            again.verify(lied)
        forged = replace(
            proof, proof=bytes([proof.proof[100] ^ 1]).join((proof.proof[:100], proof.proof[101:]))
        )
        with pytest.raises(VerificationFailed, match="off-chain"):
            again.verify(replace(result, extra={**result.extra, "proof": forged}))

    stages = {
        d.node.record(result.job_id).stage for d in devnet.daemons if d.node.address in prover
    }
    assert stages == {Stage.DONE}
    audit(devnet.deployment)
    audit_jobs(devnet.deployment)


def test_a_node_refuses_inputs_the_job_did_not_commit_to(
    devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERINET_CACHE_DIR", str(tmp_path))
    mlp = next(s for s in sample_models() if s.name == "mlp")
    model_id = devnet.models[ZK_SAMPLE]
    other = {"x": (mlp.example["x"] + 0.5).astype(np.float32)}
    with Client(devnet.deployment, devnet.clients[1]) as client:
        from verinet.client._escrow import Delivery
        from verinet.runtime.tensors import group_hash
        from verinet.runtime.wire import group_to_json
        from verinet.verification.zk import input_instances

        manifest = client.manifest(model_id)
        nodes = client.nodes(model_id)
        artifacts = circuit(manifest, [n.url for n in nodes])
        # A request whose instances commitment is of `other`, while the input hash is the
        # example's: the nodes take the input only if both match.
        job_id, _ = devnet.deployment.market.request_zk(
            model_id,
            group_hash(mlp.example),
            instances_hash(input_instances(artifacts, other)),
            sender=client.address,
        )
        with pytest.raises(NodeRequestFailed, match=InputHashMismatch.__name__):
            delivery = Delivery(group_to_json(mlp.example), tuple(nodes), ())
            client._send_inputs(job_id, delivery, lambda _: None)
    assert devnet.deployment.market.job(job_id).state == JobState.OPEN


# Init code whose runtime answers every call with uint256 1: a "verifier" that accepts anything.
ACCEPTS_ANYTHING = bytes.fromhex("600a600c600039600a6000f3" + "600160005260206000f3")


def test_a_model_whose_verifier_is_not_its_circuits_is_refused_before_paying(
    devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERINET_CACHE_DIR", str(tmp_path))
    mlp = next(s for s in sample_models() if s.name == "mlp")
    d = devnet.deployment
    owner = Address(devnet.model_owner.address)
    # The owner republishes the zk sample (same model and circuit files) and names as its
    # verifier a contract that accepts every proof: the market would pay for anything.
    honest = d.models.model(devnet.models[ZK_SAMPLE])
    evil, _ = d.models.publish(
        honest.model_cid, honest.manifest_cid, honest.fee, honest.modes, sender=owner
    )
    anything = d.chain.deploy(ACCEPTS_ANYTHING, sender=owner).contract_address
    assert anything is not None
    assert d.chain.call(anything, b"any proof") == (1).to_bytes(32, "big")
    d.models.set_verifier(evil, anything, 16, sender=owner)
    for node, _ in devnet.nodes:
        d.nodes.set_serving([evil], True, sender=node)

    with Client(d, devnet.clients[1]) as client:
        balance, jobs = d.token.balance_of(client.address), d.market.job_count()
        with pytest.raises(VerificationFailed, match="not the verifier its circuit was built"):
            client.infer(evil, mlp.example, mode="zk")
        assert d.token.balance_of(client.address) == balance
        assert d.market.job_count() == jobs  # refused before the request: nothing escrowed

        # An owner who also publishes the accept-anything code as the circuit's verifier
        # passes the code comparison, and is caught by the proof of nothing it accepts.
        published = circuit(client.manifest(evil), [n.url for n in client.nodes(evil)])
        lying = replace(published, verifier_bytecode=ACCEPTS_ANYTHING, verifier_runtime_size=10)
        with pytest.raises(VerificationFailed, match="accepts a proof of nothing"):
            checked_verifier(client, evil, lying)
        # The honest model's verifier passes both checks.
        honest_id = devnet.models[ZK_SAMPLE]
        assert checked_verifier(client, honest_id, published) == d.models.verifier_of(honest_id)


def _verinet(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VERINET_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "verinet", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_cli_publishes_a_zk_model_and_infers_with_a_proof(
    devnet: Devnet, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    # The compiled contracts come along (compiling them again takes a while); zk files not.
    shutil.copytree(artifacts._cache_dir(), cache / "contracts")
    model = tmp_path / "tiny.onnx"
    model.write_bytes(mlp((4, 8, 2), seed=5).SerializeToString())
    sample = tmp_path / "sample.npy"
    np.save(sample, np.array([[0.5, -1.0, 0.25, 2.0]], dtype=np.float32))
    where = ("--devnet", str(devnet.data_dir))

    done = _verinet(
        "model", "publish", str(model), "--name", "tiny-zk", "--modes", "signed,zk",
        "--sample", str(sample), *where, cache=cache,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FOR TESTING ONLY" in done.stdout and "with zk mode" in done.stdout
    model_id = ModelId(devnet.deployment.models.model_count())
    verifier = devnet.deployment.models.verifier_of(model_id)
    assert verifier.registered and verifier.input_instances == 4
    assert devnet.deployment.models.model(model_id).modes == Mode.SIGNED | Mode.ZK

    done = _verinet("infer", ZK_SAMPLE, "--example", "--mode", "zk", *where, cache=cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verified off-chain with the model's verification key" in done.stdout
    assert "FOR TESTING ONLY" in done.stdout
    done = _verinet("infer", ZK_SAMPLE, "--example", "--mode", "zk", "--json", *where, cache=cache)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    job = devnet.deployment.market.job(result["job_id"])
    assert result["mode"] == "zk" and result["state"] == "PAID"
    assert result["output_hash"] == "0x" + job.result.hex()
