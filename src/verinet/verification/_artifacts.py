"""The values zk mode passes around: a circuit's artifacts (and their manifest file) and a proof."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any, Final

from verinet import safe_json
from verinet.errors import ConfigError
from verinet.runtime.tensors import Array

MODEL, SAMPLE, SETTINGS, COMPILED = "model.onnx", "sample.json", "settings.json", "model.ezkl"
VK, PK, SRS, SOL, ABI = "vk.key", "pk.key", "kzg.srs", "Verifier.sol", "Verifier.abi"
MANIFEST: Final = "artifacts.json"
SCRATCH: Final = ".ezkl"
"""The ezkl child processes' home and cache folder, inside the work directory."""


@dataclass(frozen=True, slots=True)
class ZkTensor:
    """A public input or output of the circuit: its name, fixed shape and fixed-point scale."""

    name: str
    dtype: str
    """As the model declares it (a `verinet.hub.manifest` dtype name)."""
    shape: tuple[int, ...]
    scale: int
    """Element value = field element (as a signed number) / 2**scale."""
    ezkl_type: str
    """ezkl's name for the element type (``F32``, ...)."""

    @property
    def size(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True, slots=True)
class CircuitArtifacts:
    """One model's circuit, keys and EVM verifier: files in `directory` plus the verifier's
    compiled code. The local files behind what `verinet.hub.manifest.ZkArtifacts` names by CID.
    """

    directory: Path
    srs: Path
    srs_for_testing: bool
    """True when the SRS was generated here (`ezkl.gen_srs`): proofs against it prove nothing."""
    logrows: int
    """The circuit has 2**logrows rows."""
    inputs: tuple[ZkTensor, ...]
    outputs: tuple[ZkTensor, ...]
    verifier_bytecode: bytes
    """Init code of the verifier contract: deploy it as is (no constructor arguments)."""
    verifier_runtime_size: int
    verify_selector: bytes
    """Selector of ``verifyProof(bytes proof, uint256[] instances) returns (bool)``."""
    verify_abi: str
    """The JSON ABI entry of that function."""
    solc_version: str
    optimizer_runs: int
    evm_version: str

    @property
    def settings(self) -> Path:
        return self.directory / SETTINGS

    @property
    def compiled_circuit(self) -> Path:
        return self.directory / COMPILED

    @property
    def vk(self) -> Path:
        return self.directory / VK

    @property
    def pk(self) -> Path:
        return self.directory / PK

    @property
    def verifier_sol(self) -> Path:
        return self.directory / SOL

    @property
    def input_count(self) -> int:
        """How many public instances the inputs take (the first ones)."""
        return sum(t.size for t in self.inputs)

    @property
    def instance_count(self) -> int:
        return self.input_count + sum(t.size for t in self.outputs)


@dataclass(frozen=True, slots=True)
class ZkProof:
    """A proof of one run and its public instances: the inputs' field elements, then the
    outputs', each tensor's elements in C order, tensors in the model's declared order."""

    proof: bytes
    """As the EVM verifier takes it (``verifyProof``'s first argument)."""
    instances: tuple[int, ...]
    input_count: int
    """How many of `instances` (the first ones) are the inputs; the rest are the outputs."""
    outputs: dict[str, Array] = field(compare=False)
    """The output instances dequantized to float32 arrays, by output name."""

    @property
    def input_instances(self) -> tuple[int, ...]:
        return self.instances[: self.input_count]

    @property
    def output_instances(self) -> tuple[int, ...]:
        return self.instances[self.input_count :]


_TENSOR_FIELDS = ("name", "dtype", "shape", "scale", "ezkl_type")
_BYTES_FIELDS = ("verifier_bytecode", "verify_selector")


def save_manifest(artifacts: CircuitArtifacts) -> None:
    """Write what `load_artifacts` needs besides the files (the SRS path relative when inside)."""
    saved: dict[str, Any] = {
        name: getattr(artifacts, name)
        for name in CircuitArtifacts.__dataclass_fields__
        if name not in ("directory", "inputs", "outputs", *_BYTES_FIELDS)
    }
    srs = artifacts.srs
    saved["srs"] = str(
        srs.relative_to(artifacts.directory) if srs.is_relative_to(artifacts.directory) else srs
    )
    for name in _BYTES_FIELDS:
        saved[name] = getattr(artifacts, name).hex()
    for side in ("inputs", "outputs"):
        saved[side] = [{k: getattr(t, k) for k in _TENSOR_FIELDS} for t in getattr(artifacts, side)]
    (artifacts.directory / MANIFEST).write_text(json.dumps(saved, indent=1) + "\n")


def load_artifacts(directory: Path | str) -> CircuitArtifacts:
    """The artifacts `build_artifacts` left in `directory` (raises `ConfigError` if none)."""
    folder = Path(directory).resolve()
    try:
        # A fetched circuit's description is its publisher's: nesting is measured first.
        saved = safe_json.loads((folder / MANIFEST).read_bytes())
        tensors = {
            side: tuple(
                ZkTensor(
                    name=str(t["name"]),
                    dtype=str(t["dtype"]),
                    shape=tuple(int(d) for d in t["shape"]),
                    scale=int(t["scale"]),
                    ezkl_type=str(t["ezkl_type"]),
                )
                for t in saved[side]
            )
            for side in ("inputs", "outputs")
        }
        return CircuitArtifacts(
            directory=folder,
            srs=folder / saved["srs"],  # an absolute path stays as it is
            srs_for_testing=bool(saved["srs_for_testing"]),
            logrows=int(saved["logrows"]),
            inputs=tensors["inputs"],
            outputs=tensors["outputs"],
            verifier_bytecode=bytes.fromhex(saved["verifier_bytecode"]),
            verifier_runtime_size=int(saved["verifier_runtime_size"]),
            verify_selector=bytes.fromhex(saved["verify_selector"]),
            verify_abi=str(saved["verify_abi"]),
            solc_version=str(saved["solc_version"]),
            optimizer_runs=int(saved["optimizer_runs"]),
            evm_version=str(saved["evm_version"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{folder} holds no readable zk artifacts ({type(exc).__name__}: {exc}); "
            "build them with build_artifacts()"
        ) from None
