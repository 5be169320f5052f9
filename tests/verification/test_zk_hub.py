"""A zk circuit in the hub: its files stored as blobs, fetched back over HTTP from a peer into a
directory `load_artifacts` reads (a client's share without the proving key), proofs carried
as JSON, and what publishing refuses. A 4 -> 8 -> 2 MLP, built and proved once (~1 s)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from verinet._server import serve
from verinet.chain import EmbeddedChain
from verinet.chain.deploy import deploy_protocol
from verinet.devnet.models import mlp
from verinet.errors import CircuitTooLarge, ConfigError, InvalidManifest, MalformedEvidence
from verinet.hub.http import blob_app
from verinet.hub.manifest import ModelManifest
from verinet.hub.publish import draft_manifest
from verinet.hub.store import DiskStore
from verinet.types import Address
from verinet.verification._artifacts import MANIFEST, load_artifacts
from verinet.verification.zk import CircuitArtifacts, ZkProof, build_artifacts, prove, verify
from verinet.verification.zk_hub import (
    fetch_artifacts,
    proof_from_json,
    proof_to_json,
    publish_zk,
    store_artifacts,
    with_zk,
)

MODEL = mlp((4, 8, 2), seed=3).SerializeToString()
X = np.array([[0.25, -0.5, 1.0, 0.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> CircuitArtifacts:
    return build_artifacts(MODEL, {"x": X}, tmp_path_factory.mktemp("zk-hub"))


@pytest.fixture(scope="module")
def proof(artifacts: CircuitArtifacts) -> ZkProof:
    return prove(artifacts, {"x": X})


def _manifest() -> ModelManifest:
    return draft_manifest(MODEL, name="tiny", fee=1, license="MIT", modes=("signed",))


def test_a_circuit_travels_by_cid_to_a_client_and_a_prover(
    artifacts: CircuitArtifacts, proof: ZkProof, tmp_path: Path
) -> None:
    owner = DiskStore(tmp_path / "owner")
    zk = store_artifacts(owner, artifacts)
    assert zk.srs_for_testing and None not in (zk.circuit, zk.verifier, zk.proving_key)
    manifest = with_zk(_manifest(), zk)
    assert manifest.modes == ("signed", "zk") and manifest.zk == zk
    assert ModelManifest.parse(manifest.canonical()) == manifest

    with serve(blob_app(owner)) as peer:
        client = fetch_artifacts(DiskStore(tmp_path / "c"), zk, tmp_path / "client", peers=[peer])
        prover = fetch_artifacts(
            DiskStore(tmp_path / "p"), zk, tmp_path / "prover", proving=True, peers=[peer]
        )
    assert not client.pk.exists() and prover.pk.read_bytes() == artifacts.pk.read_bytes()
    for got in (client, prover):
        assert replace(got, directory=artifacts.directory, srs=artifacts.srs) == artifacts
    assert verify(client, proof)  # the client's share checks proofs
    again = prove(prover, {"x": X})  # the prover's proves
    assert again.instances == proof.instances and verify(artifacts, again)
    # Written once per CID: a second fetch needs neither peers nor the store's blobs.
    assert fetch_artifacts(DiskStore(tmp_path / "empty"), zk, tmp_path / "client") == client
    with pytest.raises(InvalidManifest, match="circuit"):
        fetch_artifacts(owner, zk.model_copy(update={"circuit": None}), tmp_path / "other")


def test_proofs_travel_as_json_and_malformed_ones_are_refused(
    artifacts: CircuitArtifacts, proof: ZkProof
) -> None:
    data = proof_to_json(proof)
    back = proof_from_json(data, artifacts)
    assert back == proof and np.array_equal(back.outputs["y"], proof.outputs["y"])
    assert all(isinstance(v, str) for v in data["instances"])  # 254-bit numbers as strings
    for bad in (
        None,
        {**data, "proof": "0xzz"},
        {**data, "instances": data["instances"][:-1]},
        {**data, "input_count": 3},
        {**data, "instances": ["-1", *data["instances"][1:]]},
        {**data, "proof": "0x"},
    ):
        with pytest.raises(MalformedEvidence):
            proof_from_json(bad, artifacts)


def test_publishing_refuses_a_model_too_large_for_zk(tmp_path: Path) -> None:
    chain = EmbeddedChain(accounts=1)
    owner = Address(chain.accounts[0].address)
    d = deploy_protocol(chain, deployer=owner)
    with pytest.raises(CircuitTooLarge, match="without zk mode"):
        publish_zk(
            MODEL,
            _manifest(),
            {"x": X},
            store=DiskStore(tmp_path),
            registry=d.models,
            sender=owner,
            max_model_bytes=len(MODEL) - 1,
        )
    assert d.models.model_count() == 0


def test_a_circuit_description_nested_to_crash_json_is_refused(tmp_path: Path) -> None:
    # A publisher's artifacts.json is read by every client and prover that fetches the circuit.
    (tmp_path / MANIFEST).write_bytes(b'{"inputs": ' + b"[" * 200_000)
    with pytest.raises(ConfigError, match="JsonTooDeep"):
        load_artifacts(tmp_path)
