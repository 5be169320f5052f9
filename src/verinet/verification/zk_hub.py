"""zk models in the hub: a circuit's files as blobs, back as files, and publishing a zk model.

`publish_zk` is the hub's publish for a model that declares zk mode: it builds the model's
circuit, keys and EVM verifier (`verinet.verification.zk`), puts every file in the blob store
and names them in the manifest's `ZkArtifacts`, publishes the model, deploys its verifier and
registers it with ``ModelRegistry.set_verifier``. It lives here rather than in
`verinet.hub.publish` because the hub sits below verification: the hub stores bytes, this
module knows what they are.

`fetch_artifacts` turns the manifest's CIDs back into a directory `load_artifacts` reads: a
client fetches what committing and checking need (settings, verification key, SRS, circuit
description), a prover also the compiled circuit and the proving key. Files are written once
per CID and reused. `proof_to_json` and `proof_from_json` carry a proof between a node and a
client.

Without ``srs_path`` the SRS is generated locally, FOR TESTING ONLY (see
`verinet.verification.zk`); the manifest says so (`ZkArtifacts.srs_for_testing`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from verinet.chain.contracts import ModelRegistry
from verinet.errors import CircuitTooLarge, InvalidManifest, MalformedEvidence
from verinet.hub.files import canonical_json, get_file, put_file
from verinet.hub.manifest import ModelManifest, ZkArtifacts
from verinet.hub.publish import Published, publish
from verinet.hub.replicate import replicate
from verinet.hub.safety import DEFAULT_LIMITS, Limits
from verinet.hub.store import BlobStore
from verinet.protocol.zk import MAX_INSTANCES, MAX_PROOF
from verinet.runtime.tensors import Array
from verinet.types import Address, Cid, ModelId
from verinet.verification._artifacts import COMPILED, MANIFEST, PK, SETTINGS, SRS, VK
from verinet.verification.zk import (
    BUILD_STEPS,
    FIELD_MODULUS,
    CircuitArtifacts,
    Progress,
    ZkProof,
    build_artifacts,
    dequantize_outputs,
    load_artifacts,
)

__all__ = [
    "DEFAULT_MAX_MODEL_BYTES",
    "PUBLISH_STEPS",
    "ZkPublished",
    "fetch_artifacts",
    "proof_from_json",
    "proof_to_json",
    "publish_zk",
    "register_zk",
    "store_artifacts",
    "with_zk",
]

_log = logging.getLogger("verinet.zk")

DEFAULT_MAX_MODEL_BYTES: Final = 1 << 20
"""Largest model file `publish_zk` takes by default. Proving time and key size grow with the
model: a 3 KB MLP proves in under a second with an 8.6 MB proving key here."""
PUBLISH_STEPS: Final = (*BUILD_STEPS, "store", "publish", "register")
"""`publish_zk`'s progress steps: the build's, then storing the files, deploying the verifier
and publishing the model, and naming the verifier in the registry."""

_STAMP = ".cids.json"  # file name -> the CID its bytes came from


@dataclass(frozen=True, slots=True)
class ZkPublished:
    published: Published
    verifier: Address
    """The deployed EVM verifier, named for the model in ModelRegistry."""
    artifacts: CircuitArtifacts

    @property
    def model_id(self) -> ModelId:
        return self.published.model_id


def store_artifacts(store: BlobStore, artifacts: CircuitArtifacts) -> ZkArtifacts:
    """Put a built circuit's files in `store` (large ones chunked) and name them by CID."""
    described = json.loads((artifacts.directory / MANIFEST).read_text())
    described["srs"] = SRS  # where `fetch_artifacts` writes it, whatever file it came from

    def put(path: Path) -> Cid:
        return put_file(store, path.read_bytes())

    return ZkArtifacts(
        settings=put(artifacts.settings),
        verification_key=put(artifacts.vk),
        srs=put(artifacts.srs),
        proving_key=put(artifacts.pk),
        compiled_circuit=put(artifacts.compiled_circuit),
        circuit=put_file(store, canonical_json(described)),
        verifier=put_file(store, artifacts.verifier_bytecode),
        srs_for_testing=artifacts.srs_for_testing,
    )


def fetch_artifacts(
    store: BlobStore,
    zk: ZkArtifacts,
    directory: Path | str,
    *,
    proving: bool = False,
    peers: Sequence[str] = (),
    client: httpx.Client | None = None,
) -> CircuitArtifacts:
    """The circuit `zk` names, as files in `directory`: what a client needs to commit to its
    inputs and check proofs, and with `proving` what a prover needs too. Files missing from
    `store` are replicated from `peers` first (each blob verified against its CID); files
    already written from the same CID are kept.

    Raises `InvalidManifest` when `zk` lacks a needed file or describes another circuit than
    its files, `FetchFailed` when no peer serves a missing blob, `BlobNotFound` without peers.
    """
    fields = {SETTINGS: "settings", VK: "verification_key", SRS: "srs", MANIFEST: "circuit"}
    if proving:
        fields |= {COMPILED: "compiled_circuit", PK: "proving_key"}
    needed: dict[str, Cid | None] = {name: getattr(zk, field) for name, field in fields.items()}
    absent = sorted(fields[name] for name, cid in needed.items() if cid is None)
    if absent:
        raise InvalidManifest(
            f"the manifest's zk artifacts do not name {', '.join(absent)}; republish the model "
            "with verinet.verification.zk_hub.publish_zk"
        )
    folder = Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    written = _stamp(folder)
    for name, cid in needed.items():
        assert cid is not None
        if written.get(name) == cid and (folder / name).is_file():
            continue
        if peers:
            replicate(cid, peers, store, client=client)
        _write_atomic(folder / name, get_file(store, cid))
        written[name] = cid
        _write_atomic(folder / _STAMP, json.dumps(written, sort_keys=True).encode())
    artifacts = load_artifacts(folder)
    if artifacts.srs != folder / SRS or artifacts.srs_for_testing != zk.srs_for_testing:
        raise InvalidManifest(
            "the manifest's circuit description disagrees with its zk artifacts (SRS file or "
            "srs_for_testing); republish the model"
        )
    return artifacts


def with_zk(manifest: ModelManifest, zk: ZkArtifacts) -> ModelManifest:
    """`manifest` with zk among its modes and `zk` as its artifacts (validated again)."""
    data = manifest.model_dump(mode="json", by_alias=True)
    data["modes"] = [*data["modes"], *([] if "zk" in data["modes"] else ["zk"])]
    data["zk"] = zk.model_dump(mode="json")
    return ModelManifest.model_validate(data)


def publish_zk(
    source: bytes | str | Path,
    manifest: ModelManifest,
    sample: Mapping[str, Array],
    *,
    store: BlobStore,
    registry: ModelRegistry,
    sender: Address,
    work_dir: Path | str | None = None,
    srs_path: Path | str | None = None,
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    previous: ModelId | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> ZkPublished:
    """Publish a model with zk mode: build its circuit (calibrated on `sample`, whose shapes
    every proof will use), store the files, publish the model with `manifest` plus zk,
    deploy its EVM verifier and name it in the registry, all sent by `sender`.

    `srs_path`: the KZG SRS file of a public ceremony; without it a local SRS is generated,
    FOR TESTING ONLY, with a warning, and the manifest says so. `work_dir` keeps the build's
    files (default: a temporary directory, removed after). `progress(step, done, total)`
    follows `PUBLISH_STEPS`. Raises `CircuitTooLarge` for a model over `max_model_bytes` or a
    circuit with more public instances than the market takes, and what `build_artifacts`
    and `publish` raise.
    """
    model_bytes = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(model_bytes) > max_model_bytes:
        raise CircuitTooLarge(
            f"the model is {len(model_bytes):,} bytes; zk mode takes models up to "
            f"{max_model_bytes:,} bytes here (proving cost grows with the model). Publish it "
            "without zk mode, or raise max_model_bytes"
        )

    def build_progress(step: str, done: int, _total: int) -> None:
        # The build's own "finished" is the start of register_zk's first step.
        if progress is not None and done < len(BUILD_STEPS):
            progress(step, done, len(PUBLISH_STEPS))

    with contextlib.ExitStack() as stack:
        folder = work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="zk-"))
        artifacts = build_artifacts(
            model_bytes, sample, folder, srs_path=srs_path, progress=build_progress
        )
        return register_zk(
            model_bytes,
            manifest,
            artifacts,
            store=store,
            registry=registry,
            sender=sender,
            previous=previous,
            limits=limits,
            progress=progress,
        )


def register_zk(
    model_bytes: bytes,
    manifest: ModelManifest,
    artifacts: CircuitArtifacts,
    *,
    store: BlobStore,
    registry: ModelRegistry,
    sender: Address,
    previous: ModelId | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> ZkPublished:
    """`publish_zk` after the build, for circuit files already built: store them, deploy
    the verifier, publish the model with zk mode and name its verifier (`PUBLISH_STEPS` from
    "store" on)."""
    total = len(PUBLISH_STEPS)

    def report(step: str, done: int) -> None:
        if progress is not None:
            progress(step, done, total)

    if artifacts.instance_count > MAX_INSTANCES:
        raise CircuitTooLarge(
            f"the circuit has {artifacts.instance_count} public instances (inputs and "
            f"outputs); the market takes proofs with up to {MAX_INSTANCES}"
        )
    report("store", len(BUILD_STEPS))
    zk = store_artifacts(store, artifacts)
    if zk.srs_for_testing:
        _log.warning(
            "publishing %s with a locally generated SRS: FOR TESTING ONLY, its proofs prove "
            "nothing to anyone who did not make it; pass srs_path in production",
            manifest.name,
        )
    report("publish", len(BUILD_STEPS) + 1)
    deployed = registry.chain.deploy(artifacts.verifier_bytecode, sender=sender)
    if deployed.contract_address is None:
        raise RuntimeError("deploying the verifier returned no contract address")
    published = publish(
        model_bytes,
        with_zk(manifest, zk),
        store=store,
        registry=registry,
        sender=sender,
        previous=previous,
        limits=limits,
    )
    report("register", len(BUILD_STEPS) + 2)
    registry.set_verifier(
        published.model_id, deployed.contract_address, artifacts.input_count, sender=sender
    )
    report("register", total)
    return ZkPublished(published, deployed.contract_address, artifacts)


def proof_to_json(proof: ZkProof) -> dict[str, Any]:
    """A proof as JSON: hex bytes, instances as decimal strings (254-bit numbers do not fit
    a JSON number in most parsers), and how many instances are inputs."""
    return {
        "proof": "0x" + proof.proof.hex(),
        "instances": [str(value) for value in proof.instances],
        "input_count": proof.input_count,
    }


def proof_from_json(data: Any, artifacts: CircuitArtifacts) -> ZkProof:
    """A proof from `proof_to_json`'s form, shaped for `artifacts`' circuit, its outputs
    dequantized from its output instances. Whether it verifies is `zk.verify`'s question.
    Raises `MalformedEvidence` for anything else."""
    try:
        raw = bytes.fromhex(str(data["proof"]).removeprefix("0x"))
        instances = tuple(int(str(value)) for value in data["instances"])
        input_count = int(data["input_count"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEvidence(f"not a zk proof ({type(exc).__name__}: {exc})") from None
    if not 0 < len(raw) <= MAX_PROOF:
        raise MalformedEvidence(f"a proof of {len(raw)} bytes; the market takes 1..{MAX_PROOF}")
    if (len(instances), input_count) != (artifacts.instance_count, artifacts.input_count):
        raise MalformedEvidence(
            f"a proof with {len(instances)} instances ({input_count} inputs); the circuit has "
            f"{artifacts.instance_count} ({artifacts.input_count} inputs)"
        )
    if not all(0 <= value < FIELD_MODULUS for value in instances):
        raise MalformedEvidence("an instance is outside the BN254 scalar field")
    outputs = dequantize_outputs(artifacts, instances[input_count:])
    return ZkProof(raw, instances, input_count, outputs)


def _stamp(folder: Path) -> dict[str, Cid]:
    try:
        data = json.loads((folder / _STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): Cid(str(v)) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
