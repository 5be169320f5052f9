"""zk mode end to end on a 4 -> 8 -> 2 MLP: circuit and keys built once per module, one real
proof, checked off-chain by ezkl and on-chain by the compiled verifier on the embedded EVM."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers import tampered
from verinet.chain import EmbeddedChain
from verinet.devnet.models import mlp
from verinet.errors import (
    CircuitBuildFailed,
    ConfigError,
    ContractRevert,
    MissingInput,
    ShapeMismatch,
)
from verinet.runtime.tensors import Array
from verinet.types import Address
from verinet.verification._solc import EIP170_LIMIT
from verinet.verification.zk import (
    BUILD_STEPS,
    FIELD_MODULUS,
    PROVE_STEPS,
    CircuitArtifacts,
    ZkProof,
    build_artifacts,
    input_instances,
    load_artifacts,
    prove,
    verifier_calldata,
    verify,
)

MODEL = mlp((4, 8, 2), seed=3).SerializeToString()  # symbolic batch, bound to 1 by the sample
SAMPLE = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
# Not the calibration sample. Two values are 2.5 steps of 2**-13: rounding half away from zero
# (ezkl's) and half to even differ there.
X = np.array([[0.8125, 5 * 2.0**-14, -5 * 2.0**-14, -1.3]], dtype=np.float32)
HOME_DIRS = (Path.home() / ".ezkl", Path.home() / ".svm")


@dataclass
class Built:
    artifacts: CircuitArtifacts
    steps: list[tuple[str, int, int]]
    warnings: list[str]
    home_before: list[bool]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    home_before = [d.exists() for d in HOME_DIRS]
    steps: list[tuple[str, int, int]] = []
    handler, logger = _Collect(), logging.getLogger("verinet.zk")
    logger.addHandler(handler)
    try:
        artifacts = build_artifacts(
            MODEL,
            {"x": SAMPLE},
            tmp_path_factory.mktemp("zk"),
            progress=lambda *step: steps.append(step),
        )
    finally:
        logger.removeHandler(handler)
    return Built(artifacts, steps, handler.messages, home_before)


@pytest.fixture(scope="module")
def artifacts(built: Built) -> CircuitArtifacts:
    return built.artifacts


@pytest.fixture(scope="module")
def proved(artifacts: CircuitArtifacts) -> tuple[ZkProof, list[tuple[str, int, int]]]:
    steps: list[tuple[str, int, int]] = []
    return prove(artifacts, {"x": X}, progress=lambda *step: steps.append(step)), steps


@pytest.fixture(scope="module")
def proof(proved: tuple[ZkProof, list[tuple[str, int, int]]]) -> ZkProof:
    return proved[0]


@pytest.fixture(scope="module")
def verifier(artifacts: CircuitArtifacts) -> tuple[EmbeddedChain, Address]:
    chain = EmbeddedChain(accounts=1)
    receipt = chain.deploy(artifacts.verifier_bytecode, sender=chain.accounts[0].address)
    assert receipt.contract_address is not None
    return chain, receipt.contract_address


def _accepted_on_chain(verifier: tuple[EmbeddedChain, Address], calldata: bytes) -> bool:
    chain, address = verifier
    try:
        answer = chain.call(address, calldata)
    except ContractRevert:
        return False
    return int.from_bytes(answer, "big") == 1


def test_build_reports_every_step_and_warns_about_the_local_srs(built: Built) -> None:
    total = len(BUILD_STEPS)
    assert [s for s, _, _ in built.steps[:-1]] == list(BUILD_STEPS)
    assert [done for _, done, _ in built.steps] == [*range(total), total]
    assert built.artifacts.srs_for_testing
    assert any("TESTING ONLY" in message for message in built.warnings)


def test_artifacts_are_files_in_the_work_directory(artifacts: CircuitArtifacts) -> None:
    for path in (
        artifacts.settings,
        artifacts.compiled_circuit,
        artifacts.vk,
        artifacts.pk,
        artifacts.srs,
        artifacts.verifier_sol,
    ):
        assert path.is_file() and path.parent == artifacts.directory
    assert load_artifacts(artifacts.directory) == artifacts
    x, y = artifacts.inputs[0], artifacts.outputs[0]
    assert (x.name, x.shape, y.name, y.shape) == ("x", (1, 4), "y", (1, 2))


def test_ezkl_writes_nothing_to_the_home_directory(built: Built) -> None:
    for existed, folder in zip(built.home_before, HOME_DIRS, strict=True):
        assert existed or not folder.exists(), f"{folder} appeared"


def test_verifier_fits_eip170_and_deploys(
    artifacts: CircuitArtifacts, verifier: tuple[EmbeddedChain, Address]
) -> None:
    chain, address = verifier
    assert artifacts.verifier_runtime_size <= EIP170_LIMIT
    assert len(chain.code(address)) == artifacts.verifier_runtime_size
    assert artifacts.verify_selector == bytes.fromhex("1e8e1e13")  # verifyProof(bytes,uint256[])


def test_proof_verifies_off_chain(
    artifacts: CircuitArtifacts, proved: tuple[ZkProof, list[tuple[str, int, int]]]
) -> None:
    proof, steps = proved
    assert steps == [("witness", 0, 2), ("prove", 1, 2), ("prove", 2, 2)]
    assert [s for s, _, _ in steps[:-1]] == list(PROVE_STEPS)
    assert verify(artifacts, proof)
    assert len(proof.instances) == 4 + 2 and proof.input_count == 4


def test_outputs_match_onnxruntime(proof: ZkProof) -> None:
    session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": X})
    got: Array = proof.outputs["y"]
    assert got.dtype == np.float32 and got.shape == (1, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-3)
    assert not np.array_equal(got, np.zeros_like(got))


def test_input_instances_are_known_before_proving(
    artifacts: CircuitArtifacts, proof: ZkProof
) -> None:
    committed = input_instances(artifacts, {"x": X})
    assert committed == list(proof.input_instances)
    # The documented quantization: round half away from zero, negatives as p - |q|.
    assert artifacts.inputs[0].scale == 13  # X's halfway values assume it
    scaled = X.astype(np.float64).ravel() * 2.0 ** artifacts.inputs[0].scale
    q = (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(int).tolist()
    assert committed == [v % FIELD_MODULUS for v in q]
    assert input_instances(artifacts, {"x": SAMPLE}) != committed


def test_tampered_proofs_fail_off_chain(artifacts: CircuitArtifacts, proof: ZkProof) -> None:
    assert not verify(artifacts, tampered(proof, byte=100))
    assert not verify(artifacts, tampered(proof, instance=0))  # an input element
    assert not verify(artifacts, tampered(proof, instance=len(proof.instances) - 1))  # output
    assert not verify(artifacts, replace(proof, instances=proof.instances[:-1]))


def test_evm_verifier_accepts_the_proof(
    artifacts: CircuitArtifacts,
    proof: ZkProof,
    verifier: tuple[EmbeddedChain, Address],
    record_property: pytest.RecordProperty,
) -> None:
    chain, address = verifier
    calldata = verifier_calldata(artifacts, proof)
    assert _accepted_on_chain(verifier, calldata)
    gas = chain.transact(address, calldata, sender=chain.accounts[0].address).gas_used
    record_property("verify_gas", gas)
    print(f"verifyProof gas on the embedded EVM: {gas:,}")
    assert 200_000 < gas < 1_500_000


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("proof byte", {"byte": 100}),
        ("input element", {"instance": 1}),
        ("output element", {"instance": 5}),
    ],
)
def test_evm_verifier_refuses_tampering(
    artifacts: CircuitArtifacts,
    proof: ZkProof,
    verifier: tuple[EmbeddedChain, Address],
    what: str,
    change: dict[str, int],
) -> None:
    changed = tampered(proof, **change)
    assert not _accepted_on_chain(verifier, verifier_calldata(artifacts, changed)), what


def test_inputs_that_do_not_fit_the_circuit_are_refused(artifacts: CircuitArtifacts) -> None:
    with pytest.raises(ShapeMismatch):
        prove(artifacts, {"x": np.zeros((2, 4), np.float32)})
    with pytest.raises(MissingInput):
        input_instances(artifacts, {})


def test_an_srs_too_small_for_the_circuit_fails_the_build(tmp_path: Path) -> None:
    import ezkl

    small = tmp_path / "k4.srs"
    ezkl.gen_srs(small, 4)
    with pytest.raises(CircuitBuildFailed, match="'setup'"):
        build_artifacts(MODEL, {"x": SAMPLE}, tmp_path / "zk", srs_path=small)
    with pytest.raises(ConfigError):
        build_artifacts(MODEL, {"x": SAMPLE}, tmp_path / "zk", srs_path=tmp_path / "missing.srs")
