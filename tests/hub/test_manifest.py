"""Model manifests and publishing: canonical form, validation, store + registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verinet.devnet.bootstrap import Network
from verinet.devnet.models import mlp
from verinet.errors import InvalidManifest, MalformedModel, ModelCidMismatch, UnsupportedSignature
from verinet.hub import cid as cids
from verinet.hub.files import get_file
from verinet.hub.manifest import ExecutionProfile, ModelManifest, TensorSpec, Tolerance
from verinet.hub.publish import draft_manifest, load_manifest, publish
from verinet.hub.store import DiskStore
from verinet.protocol.types import Mode
from verinet.runtime.executor import OnnxExecutor
from verinet.types import Address

MODEL = mlp().SerializeToString()


def _manifest(**fields: object) -> ModelManifest:
    return draft_manifest(MODEL, name="mlp-tiny", fee=5, license="Apache-2.0", **fields)  # type: ignore[arg-type]


def test_draft_reads_the_file() -> None:
    manifest = _manifest()
    assert manifest.model == cids.cid_of(MODEL)
    assert manifest.model_size == len(MODEL)
    assert manifest.inputs == (TensorSpec(name="x", dtype="float32", shape=("batch", 16)),)
    assert manifest.profile == ExecutionProfile()
    assert manifest.mode_bits == Mode.SIGNED | Mode.QUORUM | Mode.OPTIMISTIC


def test_canonical_form_round_trips_and_names_the_cid() -> None:
    manifest = _manifest(comparison={"kind": "tolerance", "atol": 1e-6, "rtol": 1e-5})
    data = manifest.canonical()
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    assert ModelManifest.parse(data) == manifest
    assert isinstance(manifest.comparison, Tolerance)
    assert manifest.cid() == cids.cid_of(data, "json")
    assert cids.codec_of(manifest.cid()) == "json"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"extra": 1}, "Extra inputs are not permitted"),
        ({"name": "bad name!"}, "letters, digits"),
        ({"model": "not-a-cid"}, "not a CID"),
        ({"modes": []}, "at least 1"),
        ({"modes": ["signed", "signed"]}, "repeat a mode"),
        ({"modes": ["teleport"]}, "signed"),
        ({"modes": ["zk"]}, "zk mode needs zk artifacts"),
        ({"profile": {"graph_optimization": "all"}}, "must be 'disable_all'"),
        ({"profile": {"provider": "CUDAExecutionProvider"}}, "CPUExecutionProvider"),
        ({"profile": {"onnxruntime": "banana"}}, "not a version specifier"),
        ({"fee": -1}, "greater than or equal to 0"),
        ({"comparison": {"kind": "tolerance", "atol": -1, "rtol": 0}}, "greater than or equal"),
        ({"inputs": [{"name": "x", "dtype": "complex64", "shape": [1]}]}, "not one of"),
        ({"inputs": [{"name": "x", "dtype": "float32", "shape": [-1]}]}, "negative"),
        ({"inputs": [{"name": "x", "dtype": "float32", "shape": ["9a"]}]}, "identifier"),
        ({"outputs": [{"name": "x", "dtype": "float32", "shape": [1]}]}, "distinct"),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(
    change: dict[str, object], fragment: str
) -> None:
    document = json.loads(_manifest().canonical())
    document.update(change)
    with pytest.raises(InvalidManifest) as caught:
        ModelManifest.parse(json.dumps(document).encode())
    assert fragment in str(caught.value)


def test_oversized_manifest_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidManifest, match="limit"):
        ModelManifest.parse(b" " * (65 * 1024))


def test_optimistic_mode_accepts_only_the_disable_all_profile() -> None:
    assert _manifest(modes=("signed",), profile={"graph_optimization": "all"})
    with pytest.raises(ValueError, match="disable_all"):
        _manifest(profile={"graph_optimization": "basic"})


def test_publish_stores_blobs_and_registers_cids(net: Network, tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    owner = Address(net.model_owner.address)
    manifest = _manifest()
    published = publish(MODEL, manifest, store=store, registry=net.deployment.models, sender=owner)

    info = net.deployment.models.model(published.model_id)
    assert info.owner == owner
    assert cids.from_bytes(info.model_cid) == manifest.model == published.model_cid
    assert cids.from_bytes(info.manifest_cid) == published.manifest_cid == manifest.cid()
    assert info.fee == 5
    assert info.modes == manifest.mode_bits

    # A node that reads the registry can rebuild the executor from the store alone.
    loaded = load_manifest(store, cids.from_bytes(info.manifest_cid))
    executor = OnnxExecutor(get_file(store, loaded.model), loaded)
    assert executor.run({"x": np.zeros((1, 16), np.float32)})["y"].shape == (1, 4)

    # A new version joins the family.
    v2_bytes = mlp(seed=3).SerializeToString()
    v2 = draft_manifest(v2_bytes, name="mlp-tiny", version="2", fee=7, license="Apache-2.0")
    second = publish(
        v2_bytes,
        v2,
        store=store,
        registry=net.deployment.models,
        sender=owner,
        previous=published.model_id,
    )
    assert net.deployment.models.latest(published.model_id) == second.model_id


def test_publish_refuses_a_file_that_is_not_the_manifests(net: Network, tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    count = net.deployment.models.model_count()
    other = mlp(seed=9).SerializeToString()
    with pytest.raises(ModelCidMismatch, match="rebuild it with draft_manifest"):
        publish(
            other,
            _manifest(),
            store=store,
            registry=net.deployment.models,
            sender=Address(net.model_owner.address),
        )
    with pytest.raises(MalformedModel):
        publish(
            b"not onnx",
            _manifest(),
            store=store,
            registry=net.deployment.models,
            sender=Address(net.model_owner.address),
        )
    wrong_io = _manifest().model_copy(
        update={"outputs": (TensorSpec(name="z", dtype="float32", shape=("batch", 4)),)}
    )
    with pytest.raises(UnsupportedSignature, match="name 'z'"):
        publish(
            MODEL,
            wrong_io,
            store=store,
            registry=net.deployment.models,
            sender=Address(net.model_owner.address),
        )
    assert net.deployment.models.model_count() == count
    assert list(store) == []


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda d: d.replace(b'"fee":5', b'"fee":"5"'), "a string for a number"),
        (lambda d: d.replace(b'"fee":5', b'"fee":5.0'), "a float for an integer"),
        (lambda d: d.replace(b'"intra_op_threads":1', b'"intra_op_threads":true'), "a bool"),
        (lambda d: d.replace(b'{"comparison"', b'{"fee":5,"comparison"'), "a duplicate key"),
        (lambda d: d.replace(b",", b", "), "whitespace"),
        (lambda d: d + b"\n", "a trailing newline"),
    ],
)
def test_only_the_canonical_byte_form_is_a_manifest(edit: object, why: str) -> None:
    # One manifest, one CID: otherwise one model could be registered under many manifest CIDs.
    data = _manifest().canonical()
    changed = edit(data)  # type: ignore[operator]
    assert changed != data, why
    with pytest.raises(InvalidManifest):
        ModelManifest.parse(changed)


def test_names_may_not_end_in_a_newline() -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        draft_manifest(MODEL, name="mlp\n", fee=1, license="MIT")
