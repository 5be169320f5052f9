"""Publishing a model: check it, store its blobs, register it on-chain.

A model with zk mode needs its circuit built first: `verinet.verification.zk_hub.publish_zk`
builds it, stores its files, publishes through `publish` here and registers its verifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verinet.chain import TxReceipt
from verinet.chain.contracts import ModelRegistry
from verinet.errors import ModelCidMismatch
from verinet.hub import cid as cids
from verinet.hub.files import file_cid, put_file
from verinet.hub.manifest import ModelManifest
from verinet.hub.safety import DEFAULT_LIMITS, Limits, check_model
from verinet.hub.signature import check_signature, graph_signature
from verinet.hub.store import BlobStore
from verinet.types import Address, Cid, ModelId, Wei


def draft_manifest(
    model_bytes: bytes,
    *,
    name: str,
    fee: int,
    license: str,
    modes: tuple[str, ...] = ("signed", "quorum", "optimistic"),
    version: str = "1",
    **fields: Any,
) -> ModelManifest:
    """A manifest for `model_bytes` with its CID, size and signature read from the file.

    Other manifest fields (profile, comparison, input_policy, description, zk) pass through
    `fields`. The model is checked by `check_model` first.
    """
    model = check_model(model_bytes)
    inputs, outputs = graph_signature(model)
    manifest = ModelManifest.model_validate(
        {
            "name": name,
            "version": version,
            "model": file_cid(model_bytes),
            "model_size": len(model_bytes),
            "inputs": inputs,
            "outputs": outputs,
            "fee": fee,
            "license": license,
            "modes": modes,
            **fields,
        }
    )
    check_signature(model, manifest)
    return manifest


@dataclass(frozen=True, slots=True)
class Published:
    model_id: ModelId
    model_cid: Cid
    manifest_cid: Cid
    manifest: ModelManifest
    receipt: TxReceipt


def store_model(
    store: BlobStore,
    model_bytes: bytes,
    manifest: ModelManifest,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Cid:
    """Check the model against its manifest, store both, and return the manifest's CID."""
    model = check_model(model_bytes, limits=limits)
    actual = file_cid(model_bytes)
    if actual != manifest.model or len(model_bytes) != manifest.model_size:
        raise ModelCidMismatch(
            f"the manifest names model {manifest.model} ({manifest.model_size} bytes) but the "
            f"file is {actual} ({len(model_bytes)} bytes); rebuild it with draft_manifest"
        )
    check_signature(model, manifest)
    put_file(store, model_bytes)
    return store.put(manifest.canonical(), "json")


def publish(
    source: bytes | str | Path,
    manifest: ModelManifest,
    *,
    store: BlobStore,
    registry: ModelRegistry,
    sender: Address,
    previous: ModelId | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Published:
    """Check the model file, store it and its manifest, and register both CIDs on-chain.

    `previous` publishes a new version of an existing model (same family, owner only).
    """
    model_bytes = source if isinstance(source, bytes) else Path(source).read_bytes()
    manifest_cid = store_model(store, model_bytes, manifest, limits=limits)
    model_raw, manifest_raw = cids.to_bytes(manifest.model), cids.to_bytes(manifest_cid)
    if previous is None:
        model_id, receipt = registry.publish(
            model_raw, manifest_raw, Wei(manifest.fee), manifest.mode_bits, sender=sender
        )
    else:
        model_id, receipt = registry.publish_version(
            previous, model_raw, manifest_raw, Wei(manifest.fee), manifest.mode_bits, sender=sender
        )
    return Published(model_id, manifest.model, manifest_cid, manifest, receipt)


def load_manifest(store: BlobStore, manifest_cid: Cid) -> ModelManifest:
    """A manifest from the store, verified against its CID and validated."""
    return ModelManifest.parse(store.get(manifest_cid))
