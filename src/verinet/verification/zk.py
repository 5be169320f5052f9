"""zk mode's proving pipeline: a model's circuit, keys and EVM verifier, and proofs of its runs.

ezkl (Halo2 with KZG commitments on BN254) turns an ONNX model into a circuit whose inputs and
outputs are public instances and whose weights are fixed columns: the verification key commits
to the weights, so a verifier built for one model accepts proofs of that model only. Tensors
become field elements by fixed-point quantization: x * 2**scale rounded half away from zero,
negatives as ``p - |q|``; calibration on a sample input picks the scales::

    artifacts = build_artifacts(model_bytes, {"x": sample}, work_dir, srs_path=ceremony_srs)
    proof = prove(artifacts, {"x": x})                  # proof.outputs: dequantized float32
    verify(artifacts, proof)                            # off-chain
    chain.call(verifier, verifier_calldata(artifacts, proof))  # on-chain: returns uint256 1

A client commits to `input_instances(artifacts, inputs)` before it asks for a job, without
proving; an honest proof's `input_instances` equal them.

SRS: KZG needs a structured reference string from a trusted setup. Production passes the file
of a public ceremony as `srs_path`. Without one, `build_artifacts` generates an SRS with
`ezkl.gen_srs` and warns: such an SRS is FOR TESTING ONLY, since the machine that made it
knows its secret and can forge proofs that its verifiers accept.

Everything ezkl writes goes under the work directory given to `build_artifacts`: model.onnx,
sample.json, settings.json, model.ezkl (the compiled circuit), vk.key, pk.key, kzg.srs (when
generated), Verifier.sol, artifacts.json (what `load_artifacts` reads), short-lived proof and
verify files, and ``.ezkl``, the home and cache folder of the child processes that run ezkl's
heavy steps (see `_ezkl` for why they are separate processes, and why they live on:
`close_workers` ends them at once). The verifier's Solidity is compiled with
solcjs (see `_solc`), not with the solc ezkl would download.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import ezkl
import numpy as np
import onnx
from eth_abi.abi import encode

from verinet.errors import CircuitBuildFailed, ConfigError, ProvingFailed, VerifierBuildFailed
from verinet.hub.manifest import InputPolicy, TensorSpec
from verinet.hub.safety import check_model
from verinet.hub.signature import graph_signature
from verinet.runtime.inputs import validate_inputs
from verinet.runtime.tensors import Array
from verinet.verification._artifacts import (
    ABI,
    COMPILED,
    MODEL,
    PK,
    SAMPLE,
    SCRATCH,
    SETTINGS,
    SOL,
    SRS,
    VK,
    CircuitArtifacts,
    ZkProof,
    ZkTensor,
    load_artifacts,
    save_manifest,
)
from verinet.verification._ezkl import Call, Failure, close_workers, run_calls
from verinet.verification._solc import compile_within_limit

__all__ = [
    "BUILD_STEPS",
    "FIELD_MODULUS",
    "PROVE_STEPS",
    "CircuitArtifacts",
    "Progress",
    "ZkProof",
    "ZkTensor",
    "build_artifacts",
    "close_workers",
    "dequantize_outputs",
    "input_instances",
    "load_artifacts",
    "prove",
    "verifier_calldata",
    "verify",
]

_log = logging.getLogger("verinet.zk")

Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``: called as each step starts (`done` steps finished so far)
and once more when all are done (``done == total``, `step` the last one)."""

BUILD_STEPS: Final = ("settings", "calibrate", "compile", "srs", "setup", "verifier", "solc")
PROVE_STEPS: Final = ("witness", "prove")

FIELD_MODULUS: Final = 21888242871839275222246405745257275088548364400416034343698204186575808495617
"""Order of BN254's scalar field: every public instance is below it."""

VERIFY_FUNCTION: Final = "verifyProof(bytes,uint256[])"
EVM_VERSION: Final = "prague"
"""The EVM version the verifier is compiled for: the same as Verinet's Vyper contracts."""
CALIBRATION_TARGET: Final = "resources"
"""ezkl calibrates for the fewest rows (fastest proofs) at the accuracy the sample allows."""
LOOKUP_SAFETY_MARGIN: Final = 2.0
DECOMPOSITIONS: Final = ((128, 4), (16384, 2))
"""(base, legs) of ezkl's range-check decomposition; each covers values up to 2**28. ezkl's
default (the last) needs a 2**14-row lookup table, which sets the size of a small circuit: a
4 -> 8 -> 2 MLP gets 2**15 rows with it and 2**9 with 128 x 4 (setup, proving and keys shrink
about as much), while a large circuit needs fewer rows with it (fewer rows per check). The build
calibrates them in turn, skips one whose table alone is larger than the best circuit so far, and
keeps the fewest rows (a later one on a tie)."""


def build_artifacts(
    model: bytes,
    sample: Mapping[str, Array],
    directory: Path | str,
    *,
    srs_path: Path | str | None = None,
    progress: Progress | None = None,
) -> CircuitArtifacts:
    """Build `model`'s circuit, keys and EVM verifier in `directory` (created if needed; files
    of an earlier build there are replaced) and save a manifest `load_artifacts` reads back.

    `sample` (input name -> array, the shapes every proof will use) calibrates the fixed-point
    scales. `srs_path`: the KZG SRS file to use (production: a public ceremony's). A file for
    more rows than the circuit's `logrows` works, but setup and every proof read it whole: give
    the ceremony's file for exactly `logrows` where there is one. Without `srs_path` an SRS is
    generated here, FOR TESTING ONLY (see the module docstring), with a warning.
    `progress(step, done, total)` follows `BUILD_STEPS`.

    Raises `UnsafeModel` for a model that fails the hub's checks, `InvalidInput` for a bad
    sample, `CircuitBuildFailed` when ezkl fails, `VerifierBuildFailed` when the verifier does
    not compile or exceeds EIP-170, `ConfigError` for a missing SRS file or solcjs.
    """
    srs = None if srs_path is None else Path(srs_path).resolve()
    if srs is not None and not srs.is_file():
        raise ConfigError(f"SRS file {srs} does not exist; pass the path of a KZG SRS file")
    folder = Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    proto = check_model(model)
    in_specs, out_specs = graph_signature(proto)
    arrays = validate_inputs(in_specs, InputPolicy(), sample)
    steps = _Steps(progress, BUILD_STEPS)
    (folder / MODEL).write_bytes(model)
    _write_data(folder / SAMPLE, arrays.values())
    settings = _calibrated_settings(folder, _variables(proto, arrays), steps)
    logrows = int(settings["run_args"]["logrows"])
    inputs, outputs = _tensors(settings, in_specs, out_specs)

    calls = [Call("compile", "compile_circuit", (*_paths(folder, MODEL, COMPILED, SETTINGS),))]
    if srs is None:
        srs = folder / SRS
        _log.warning(
            "no SRS given: generating a KZG SRS for 2**%d rows with ezkl.gen_srs. FOR TESTING "
            "ONLY: this machine knows its secret and can forge proofs its verifiers accept. In "
            "production pass srs_path= the SRS file of a public ceremony.",
            logrows,
        )
        calls.append(Call("srs", "gen_srs", (str(srs), logrows)))
    sol = folder / SOL
    sol.unlink(missing_ok=True)
    calls += [
        Call("setup", "setup", (*_paths(folder, COMPILED, VK, PK), str(srs), None, False)),
        # reusable=False: the vk is in the contract, so the verifier accepts this model only.
        Call(
            "verifier",
            "create_evm_verifier",
            (*_paths(folder, VK, SETTINGS, SOL, ABI), str(srs), False),
        ),
    ]
    failed = steps.calls(calls, folder / SCRATCH)
    if failed and not (failed.step == "verifier" and sol.is_file()):
        raise CircuitBuildFailed(_failed(failed))
    if failed:
        # ezkl wrote the Solidity, then could not fetch a solc binary (offline): expected.
        _log.info("ezkl did not compile the verifier; solcjs will: %s", _failed(failed))

    steps.start("solc")
    contract = compile_within_limit(
        sol.read_text(), function=VERIFY_FUNCTION.split("(")[0], evm_version=EVM_VERSION
    )
    if VERIFY_FUNCTION not in contract.method_ids:
        raise VerifierBuildFailed(f"the verifier has no {VERIFY_FUNCTION}: {contract.method_ids}")
    entry = next(item for item in contract.abi if item.get("name") == "verifyProof")
    artifacts = CircuitArtifacts(
        directory=folder,
        srs=srs,
        srs_for_testing=srs_path is None,
        logrows=logrows,
        inputs=inputs,
        outputs=outputs,
        verifier_bytecode=contract.bytecode,
        verifier_runtime_size=len(contract.runtime),
        verify_selector=contract.method_ids[VERIFY_FUNCTION],
        verify_abi=json.dumps(entry, sort_keys=True),
        solc_version=contract.solc_version,
        optimizer_runs=contract.optimizer_runs,
        evm_version=contract.evm_version,
    )
    save_manifest(artifacts)
    steps.finish()
    return artifacts


def input_instances(artifacts: CircuitArtifacts, inputs: Mapping[str, Array]) -> list[int]:
    """The field elements a proof of a run on `inputs` carries for them, computed without
    proving: what a client commits to before it requests a job. Raises `InvalidInput`."""
    arrays = _validated(artifacts, inputs)
    return [
        _felt_int(ezkl.float_to_felt(value, t.scale, getattr(ezkl.PyInputType, t.ezkl_type)))
        for t in artifacts.inputs
        for value in arrays[t.name].astype(np.float64).ravel().tolist()
    ]


def prove(
    artifacts: CircuitArtifacts, inputs: Mapping[str, Array], progress: Progress | None = None
) -> ZkProof:
    """Run the model on `inputs` inside the circuit and prove it (`PROVE_STEPS`).

    Raises `InvalidInput` for inputs that do not fit the circuit's fixed shapes and dtypes, and
    `ProvingFailed` when ezkl cannot make the witness or the proof.
    """
    arrays = _validated(artifacts, inputs)
    steps = _Steps(progress, PROVE_STEPS)
    with tempfile.TemporaryDirectory(dir=artifacts.directory, prefix="proof-") as scratch:
        data, witness, proof_file = (Path(scratch) / n for n in ("input.json", "w.json", "p.json"))
        _write_data(data, arrays.values())
        circuit, srs = str(artifacts.compiled_circuit), str(artifacts.srs)
        failed = steps.calls(
            [
                Call("witness", "gen_witness", (str(data), circuit, str(witness), None, srs)),
                Call(
                    "prove",
                    "prove",
                    (str(witness), circuit, str(artifacts.pk), str(proof_file), srs),
                ),
            ],
            artifacts.directory / SCRATCH,
        )
        if failed:
            raise ProvingFailed(_failed(failed))
        written = json.loads(proof_file.read_text())
    instances = tuple(_felt_int(felt) for column in written["instances"] for felt in column)
    if len(instances) != artifacts.instance_count:
        raise ProvingFailed(
            f"the proof carries {len(instances)} instances, the circuit declares "
            f"{artifacts.instance_count}; rebuild the artifacts with this ezkl version"
        )
    count = artifacts.input_count
    steps.finish()
    return ZkProof(
        proof=bytes(written["proof"]),
        instances=instances,
        input_count=count,
        outputs=dequantize_outputs(artifacts, instances[count:]),
    )


def dequantize_outputs(artifacts: CircuitArtifacts, instances: Sequence[int]) -> dict[str, Array]:
    """Output instances (all of them, in order) as float32 arrays by output name."""
    values = iter(instances)
    return {
        t.name: np.array(
            [ezkl.felt_to_float(_felt_hex(next(values)), t.scale) for _ in range(t.size)],
            dtype=np.float32,
        ).reshape(t.shape)
        for t in artifacts.outputs
    }


def verify(artifacts: CircuitArtifacts, proof: ZkProof) -> bool:
    """Whether `proof` proves a run of this circuit with exactly its instances (off-chain)."""
    if (
        len(proof.instances) != artifacts.instance_count
        or proof.input_count != artifacts.input_count
        or not all(0 <= value < FIELD_MODULUS for value in proof.instances)
    ):
        return False
    for needed in (artifacts.settings, artifacts.vk, artifacts.srs):
        if not needed.is_file():
            raise ConfigError(f"{needed} is missing; rebuild the artifacts with build_artifacts()")
    instances = json.dumps([[_felt_hex(value) for value in proof.instances]])
    with tempfile.NamedTemporaryFile(
        "w", dir=artifacts.directory, prefix="verify-", suffix=".json"
    ) as file:
        # The proof's bytes as a JSON array of numbers, written by table: 3x faster than
        # json.dumps on a 3 KB proof, which is 3 % of a small circuit's verification.
        proof_bytes = ",".join([_DECIMAL[byte] for byte in proof.proof])
        file.write(f'{{"instances": {instances}, "proof": [{proof_bytes}]}}')
        file.flush()
        try:
            # reduced_srs: load only the SRS points verification needs (KZG checks use the G1
            # generator and the two G2 points), not the whole file: ~4 ms instead of ~210 ms
            # for a 2**9-row circuit with a 2**12 SRS.
            return ezkl.verify(file.name, artifacts.settings, artifacts.vk, artifacts.srs, True)
        except RuntimeError as exc:  # ezkl raises, rather than returns False, for a bad proof
            _log.debug("proof rejected: %s", exc)
            return False


def verifier_calldata(artifacts: CircuitArtifacts, proof: ZkProof) -> bytes:
    """Calldata of ``verifyProof(proof.proof, proof.instances)`` on this model's verifier."""
    return artifacts.verify_selector + encode(
        ["bytes", "uint256[]"], [proof.proof, list(proof.instances)]
    )


class _Steps:
    def __init__(self, progress: Progress | None, names: Sequence[str]) -> None:
        self._progress, self._names = progress, names
        self._current = ""

    def start(self, name: str) -> None:
        if self._progress is not None and name != self._current:
            self._progress(name, self._names.index(name), len(self._names))
        self._current = name

    def finish(self) -> None:
        if self._progress is not None:
            self._progress(self._names[-1], len(self._names), len(self._names))

    def calls(
        self, calls: Sequence[Call], scratch: Path, *, more_to_come: bool = False
    ) -> Failure | None:
        """Run ezkl `calls`, reporting each as it starts; the one that failed, if any."""
        self.start(calls[0].step)

        def done(n: int) -> None:
            if n < len(calls):
                self.start(calls[n].step)

        return run_calls(calls, scratch=scratch, on_done=done, more_to_come=more_to_come)


def _failed(failure: Failure) -> str:
    return f"ezkl failed at step {failure.step!r}: {failure.message}"


def _validated(artifacts: CircuitArtifacts, inputs: Mapping[str, Array]) -> dict[str, Array]:
    specs = [TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in artifacts.inputs]
    return validate_inputs(specs, InputPolicy(), inputs)


_DECIMAL: Final = tuple(str(byte) for byte in range(256))


def _felt_int(felt: str) -> int:
    """ezkl writes a field element as 32 bytes little-endian, in hex."""
    return int.from_bytes(bytes.fromhex(felt), "little")


def _felt_hex(value: int) -> str:
    return value.to_bytes(32, "little").hex()


def _write_data(path: Path, arrays: Iterable[Array]) -> None:
    """ezkl's input file: one flat list of values per input, in declared order."""
    flat = [np.asarray(a).astype(np.float64).ravel().tolist() for a in arrays]
    path.write_text(json.dumps({"input_data": flat}))


def _variables(model: onnx.ModelProto, arrays: Mapping[str, Array]) -> list[list[Any]]:
    """Symbolic dimensions bound to the sample's sizes: the circuit's shapes are fixed."""
    bound: dict[str, int] = {}
    for value in model.graph.input:
        if value.name in arrays:
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if dim.dim_param:
                    bound[dim.dim_param] = int(arrays[value.name].shape[axis])
    return [[name, size] for name, size in bound.items()]


def _tensors(
    settings: dict[str, Any], in_specs: Sequence[TensorSpec], out_specs: Sequence[TensorSpec]
) -> tuple[tuple[ZkTensor, ...], tuple[ZkTensor, ...]]:
    """The public tensors from ezkl's settings: shapes of inputs then outputs, scales, types."""
    shapes = settings["model_instance_shapes"]
    if len(shapes) != len(in_specs) + len(out_specs):
        raise CircuitBuildFailed(
            f"ezkl made {len(shapes)} public tensors; expected {len(in_specs)} inputs and "
            f"{len(out_specs)} outputs"
        )

    def tensors(
        specs: Sequence[TensorSpec], shapes: list[Any], scales: list[Any], types: list[Any]
    ) -> tuple[ZkTensor, ...]:
        return tuple(
            ZkTensor(spec.name, spec.dtype, tuple(int(d) for d in shape), int(scale), str(kind))
            for spec, shape, scale, kind in zip(specs, shapes, scales, types, strict=True)
        )

    n = len(in_specs)
    return (
        tensors(in_specs, shapes[:n], settings["model_input_scales"], settings["input_types"]),
        tensors(out_specs, shapes[n:], settings["model_output_scales"], settings["output_types"]),
    )


def _paths(folder: Path, *names: str) -> tuple[str, ...]:
    return tuple(str(folder / name) for name in names)


def _calibrated_settings(folder: Path, variables: list[list[Any]], steps: _Steps) -> Any:
    """Settings for the best of `DECOMPOSITIONS` (see there), saved as settings.json."""
    model, sample = _paths(folder, MODEL, SAMPLE)
    best: tuple[int, Path] | None = None
    for base, legs in DECOMPOSITIONS:
        if best is not None and best[0] <= base.bit_length():
            break  # this base's lookup table alone needs 2**bit_length rows
        candidate = folder / f"settings.{base}x{legs}.json"
        run_args = {
            "input_visibility": "public",
            "output_visibility": "public",
            "param_visibility": "fixed",  # weights in fixed columns: the vk commits to them
            "variables": variables,
            "decomp_base": base,
            "decomp_legs": legs,
        }
        calibrate = (CALIBRATION_TARGET, LOOKUP_SAFETY_MARGIN, None, [1], None)
        failed = steps.calls(
            [
                Call("settings", "gen_settings", (model, str(candidate), run_args)),
                Call(
                    "calibrate", "calibrate_settings", (sample, model, str(candidate), *calibrate)
                ),
            ],
            folder / SCRATCH,
            more_to_come=True,
        )
        if failed:
            raise CircuitBuildFailed(_failed(failed))
        logrows = int(json.loads(candidate.read_text())["run_args"]["logrows"])
        if best is None or logrows <= best[0]:
            best = (logrows, candidate)
    assert best is not None
    best[1].replace(folder / SETTINGS)
    for base, legs in DECOMPOSITIONS:
        (folder / f"settings.{base}x{legs}.json").unlink(missing_ok=True)
    return json.loads((folder / SETTINGS).read_text())
