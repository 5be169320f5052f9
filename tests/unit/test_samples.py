"""The devnet's sample models: reproducible files, runnable manifests, published on-chain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from verinet.chain import EmbeddedChain, deploy_protocol
from verinet.devnet import samples
from verinet.devnet.samples import SampleModel, publish_samples, sample_models
from verinet.hub import cid as cids
from verinet.hub.files import file_cid, get_file
from verinet.hub.publish import load_manifest, store_model
from verinet.hub.store import DiskStore
from verinet.protocol.types import Mode
from verinet.runtime.executor import OnnxExecutor
from verinet.runtime.tensors import group_hash
from verinet.types import Address

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("mlp", "trees", "cnn")


def by_name() -> dict[str, SampleModel]:
    return {sample.name: sample for sample in sample_models()}


def fingerprint(sample: SampleModel) -> dict[str, str]:
    """What must come out the same everywhere: the file, the manifest and the example's output."""
    executor = OnnxExecutor(sample.model_bytes, sample.manifest)
    return {
        "model": sample.manifest.model,
        "manifest": sample.manifest.cid(),
        "output": executor.output_hash(executor.run(sample.example)).hex(),
    }


_CHILD = """
import json
from verinet.devnet.samples import sample_models
from tests.unit.test_samples import fingerprint
print(json.dumps({sample.name: fingerprint(sample) for sample in sample_models()}))
"""


def test_the_samples_and_their_manifests() -> None:
    models = by_name()
    assert tuple(models) == NAMES
    for name, sample in models.items():
        manifest = sample.manifest
        assert manifest.name == name
        assert manifest.model == file_cid(sample.model_bytes)
        assert manifest.model_size == len(sample.model_bytes)
        assert manifest.license == "Apache-2.0"
        assert manifest.fee == 10**18
        assert manifest.description == sample.description != ""
        assert manifest.modes == ("signed", "quorum", "optimistic")
        assert manifest.profile.intra_op_threads == manifest.profile.inter_op_threads == 1
        assert [spec.name for spec in manifest.inputs] == list(sample.example)
    trees = models["trees"].manifest
    assert [(s.name, s.dtype, s.shape) for s in (*trees.inputs, *trees.outputs)] == [
        ("features", "float32", ("batch", 8)),
        ("label", "int64", ("batch",)),
        ("probabilities", "float32", ("batch", 3)),
    ]
    ops = [node.op_type for node in onnx.load_from_string(models["trees"].model_bytes).graph.node]
    assert ops == ["TreeEnsembleClassifier"]
    assert sample_models(fee=7)[0].manifest.fee == 7


def test_files_and_manifests_are_the_same_on_every_build() -> None:
    first, second = sample_models(), sample_models()
    for a, b in zip(first, second, strict=True):
        assert a.model_bytes == b.model_bytes
        assert a.manifest.canonical() == b.manifest.canonical()
    # Training and converting again, in this process, gives the same bytes.
    trees = by_name()["trees"].model_bytes
    assert samples.trees_model().SerializeToString() == trees
    assert samples.trees_model().SerializeToString() == trees


def test_a_second_process_builds_the_same_files_and_outputs() -> None:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(child.stdout) == {
        sample.name: fingerprint(sample) for sample in sample_models()
    }


@pytest.mark.parametrize("name", NAMES)
def test_each_sample_runs_its_example_reproducibly(name: str) -> None:
    sample = by_name()[name]
    executor = OnnxExecutor(sample.model_bytes, sample.manifest)
    outputs = executor.run(sample.example)
    assert list(outputs) == [spec.name for spec in sample.manifest.outputs]
    assert executor.output_hash(executor.run(sample.example)) == executor.output_hash(outputs)
    fresh = OnnxExecutor(sample.model_bytes, sample.manifest)
    assert fresh.output_hash(fresh.run(sample.example)) == executor.output_hash(outputs)
    for value in outputs.values():
        assert value.shape[0] == 1
        assert value.dtype.kind != "f" or np.all(np.isfinite(value))


@pytest.mark.parametrize("name", NAMES)
def test_optimistic_samples_replay_op_by_op(name: str) -> None:
    """Optimistic mode is offered only where a dispute's one-step check would uphold an honest
    node: the traced run equals the plain run, and every op re-executed alone matches."""
    sample = by_name()[name]
    assert "optimistic" in sample.manifest.modes
    executor = OnnxExecutor(sample.model_bytes, sample.manifest)
    trace = executor.run_traced(sample.example)
    assert trace.output_hash == executor.output_hash(executor.run(sample.example))
    for index in range(1, trace.ops + 1):
        redone = executor.execute_op(index, trace.step_inputs(index))
        assert group_hash(list(redone.items())) == trace.op_hashes[index - 1]


def test_the_forest_converts_faithfully() -> None:
    """The ONNX forest gives scikit-learn's probabilities on the training data; labels agree
    except where two classes tie (20 trees vote in multiples of 1/20)."""
    forest = samples.train_forest()
    x, _ = samples.trees_dataset()
    executor = OnnxExecutor(by_name()["trees"].model_bytes, by_name()["trees"].manifest)
    outputs = executor.run({"features": x})
    expected = forest.predict_proba(x)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-6)
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-6
    assert clear.sum() > len(x) * 0.9
    np.testing.assert_array_equal(outputs["label"][clear], forest.predict(x)[clear])
    assert (forest.predict(x) == samples.trees_dataset()[1]).mean() > 0.6  # it learned something


def test_examples_are_read_only() -> None:
    sample = by_name()["mlp"]
    with pytest.raises(ValueError, match="read-only"):
        sample.example["x"][0, 0] = 1.0


@pytest.mark.parametrize("name", NAMES)
def test_each_manifest_stores(name: str, tmp_path: Path) -> None:
    sample = by_name()[name]
    store = DiskStore(tmp_path)
    manifest_cid = store_model(store, sample.model_bytes, sample.manifest)
    assert manifest_cid == sample.manifest.cid()
    assert load_manifest(store, manifest_cid) == sample.manifest
    assert get_file(store, sample.manifest.model) == sample.model_bytes


def test_publish_samples_registers_each_model_on_chain(tmp_path: Path) -> None:
    chain = EmbeddedChain(accounts=2)
    deployer, owner = (Address(account.address) for account in chain.accounts)
    deployment = deploy_protocol(chain, deployer=deployer)
    store = DiskStore(tmp_path)
    chosen = sample_models(fee=3 * 10**17)

    published = publish_samples(deployment, store, owner, chosen)

    assert list(published) == list(NAMES)
    assert deployment.models.model_count() == len(NAMES)
    assert len({entry.model_id for entry in published.values()}) == len(NAMES)
    for sample in chosen:
        entry = published[sample.name]
        info = deployment.models.model(entry.model_id)
        assert info.owner.lower() == owner.lower()
        assert info.model_cid == cids.to_bytes(sample.manifest.model)
        assert info.manifest_cid == cids.to_bytes(entry.manifest_cid)
        assert entry.manifest_cid == sample.manifest.cid()
        assert info.fee == 3 * 10**17
        assert info.modes == Mode.SIGNED | Mode.QUORUM | Mode.OPTIMISTIC
        assert load_manifest(store, cids.from_bytes(info.manifest_cid)) == sample.manifest
        assert get_file(store, cids.from_bytes(info.model_cid)) == sample.model_bytes


def test_publish_samples_refuses_repeated_names(tmp_path: Path) -> None:
    chain = EmbeddedChain(accounts=1)
    deployer = Address(chain.accounts[0].address)
    deployment = deploy_protocol(chain, deployer=deployer)
    mlp = by_name()["mlp"]
    with pytest.raises(ValueError, match="distinct"):
        publish_samples(deployment, DiskStore(tmp_path), deployer, [mlp, mlp])
    assert deployment.models.model_count() == 0
