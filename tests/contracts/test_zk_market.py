"""zk mode in the market on the embedded EVM, with real ezkl proofs of a 4 -> 8 -> 2 MLP and its
real EVM verifier: verifier registration, a proved job paid at once, wrong proofs, wrong inputs
and replays refused with typed errors, refunds when nobody proves, and every token accounted
for. The circuit is built and two runs proved once per module (about 3 s)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from tests.helpers import addr, assert_nothing_lost, h, tampered
from verinet.chain.artifacts import contracts_dir
from verinet.devnet.bootstrap import Network, placeholder_cid
from verinet.devnet.models import mlp
from verinet.errors import (
    DeadlinePassed,
    InstancesMismatch,
    InvalidHash,
    InvalidProof,
    InvalidVerifier,
    JobNotOpen,
    ModeNotAllowed,
    NotEligible,
    NotModelOwner,
    NoVerifier,
    TooEarly,
    UnknownModel,
    UseRequestZk,
    VerifierAlreadySet,
    WrongMode,
)
from verinet.protocol.rules import split_fee
from verinet.protocol.types import JobState, Mode, ZkVerifier
from verinet.protocol.zk import MAX_INSTANCES, MAX_PROOF, instances_hash, split_instances
from verinet.types import Address, Hash32, JobId, ModelId, Wei
from verinet.verification.zk import CircuitArtifacts, ZkProof, build_artifacts
from verinet.verification.zk import prove as zk_prove

pytestmark = pytest.mark.contracts

MODEL = mlp((4, 8, 2), seed=3).SerializeToString()
X1 = np.array([[0.5, -0.25, 1.0, -1.5]], dtype=np.float32)
X2 = np.array([[-0.75, 0.125, 0.0, 2.0]], dtype=np.float32)


@dataclass(frozen=True)
class Circuit:
    artifacts: CircuitArtifacts
    proofs: tuple[ZkProof, ZkProof]  # of X1, of X2


@pytest.fixture(scope="module")
def circuit(tmp_path_factory: pytest.TempPathFactory) -> Circuit:
    sample = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    artifacts = build_artifacts(MODEL, {"x": sample}, tmp_path_factory.mktemp("zk-market"))
    return Circuit(artifacts, (zk_prove(artifacts, {"x": X1}), zk_prove(artifacts, {"x": X2})))


@dataclass(frozen=True)
class ZkModel:
    model_id: ModelId
    verifier: Address


def _publish(net: Network, modes: Mode = Mode.ZK | Mode.SIGNED) -> ModelId:
    d, owner = net.deployment, addr(net.model_owner)
    model_id, _ = d.models.publish(
        placeholder_cid("zk model"),
        placeholder_cid("zk manifest"),
        Wei(10**18),
        modes,
        sender=owner,
    )
    for node in net.nodes:
        d.nodes.set_serving([model_id], True, sender=addr(node))
    return model_id


def _deploy_verifier(net: Network, circuit: Circuit) -> Address:
    receipt = net.chain.deploy(circuit.artifacts.verifier_bytecode, sender=addr(net.deployer))
    assert receipt.contract_address is not None
    return receipt.contract_address


@pytest.fixture
def zk(net: Network, circuit: Circuit) -> ZkModel:
    model_id = _publish(net)
    verifier = _deploy_verifier(net, circuit)
    net.deployment.models.set_verifier(
        model_id, verifier, circuit.artifacts.input_count, sender=addr(net.model_owner)
    )
    return ZkModel(model_id, verifier)


def _request(net: Network, zk: ZkModel, proof: ZkProof, client: int = 0) -> JobId:
    job_id, _ = net.deployment.market.request_zk(
        zk.model_id,
        h(f"inputs {proof.input_instances}"),
        instances_hash(proof.input_instances),
        sender=addr(net.clients[client]),
    )
    return job_id


def _drawn(net: Network, job_id: JobId) -> Address:
    drawn = [addr(n) for n in net.nodes if net.deployment.market.is_eligible(job_id, addr(n))]
    assert drawn, "with equal stake and oversampling some node is drawn at once"
    return drawn[0]


def _submit(net: Network, job_id: JobId, proof: ZkProof, node: Address) -> int:
    receipt = net.deployment.market.submit_proof(job_id, proof.proof, proof.instances, sender=node)
    return receipt.gas_used


# -- ModelRegistry: the verifier -----------------------------------------------------------


def test_owner_sets_a_zk_models_verifier_once(net: Network, circuit: Circuit) -> None:
    d, owner = net.deployment, addr(net.model_owner)
    model_id = _publish(net)
    verifier = _deploy_verifier(net, circuit)
    assert not d.models.verifier_of(model_id).registered
    with pytest.raises(NotModelOwner):
        d.models.set_verifier(model_id, verifier, 4, sender=addr(net.clients[0]))
    with pytest.raises(UnknownModel):
        d.models.set_verifier(ModelId(999), verifier, 4, sender=owner)
    with pytest.raises(ModeNotAllowed):  # the bootstrap model does not allow zk
        d.models.set_verifier(net.model_id, verifier, 4, sender=owner)
    with pytest.raises(InvalidVerifier):  # an account without code
        d.models.set_verifier(model_id, addr(net.clients[0]), 4, sender=owner)
    with pytest.raises(InvalidVerifier):
        d.models.set_verifier(model_id, verifier, 0, sender=owner)

    receipt = d.models.set_verifier(model_id, verifier, 4, sender=owner)
    (event,) = d.models.events(receipt, "VerifierSet")
    assert event.args == {"model_id": model_id, "verifier": verifier, "input_instances": 4}
    assert d.models.verifier_of(model_id) == ZkVerifier(verifier, 4)
    assert d.models.verifier_of(model_id).registered
    with pytest.raises(VerifierAlreadySet):
        d.models.set_verifier(model_id, _deploy_verifier(net, circuit), 4, sender=owner)


def test_zk_requests_need_a_verifier_and_an_instances_commitment(
    net: Network, circuit: Circuit
) -> None:
    d, client = net.deployment, addr(net.clients[0])
    model_id = _publish(net)
    committed = instances_hash(circuit.proofs[0].input_instances)
    with pytest.raises(NoVerifier):
        d.market.request_zk(model_id, h("in"), committed, sender=client)
    d.models.set_verifier(model_id, _deploy_verifier(net, circuit), 4, sender=addr(net.model_owner))
    with pytest.raises(UseRequestZk):  # request cannot carry the commitment
        d.market.request(model_id, h("in"), Mode.ZK, 1, sender=client)
    with pytest.raises(InvalidHash):
        d.market.request_zk(model_id, h("in"), Hash32(bytes(32)), sender=client)
    with pytest.raises(ModeNotAllowed):
        d.market.request_zk(net.model_id, h("in"), committed, sender=client)
    job_id, _ = d.market.request_zk(model_id, h("in"), committed, sender=client)
    job = d.market.job(job_id)
    assert (job.mode, job.k, job.state) == (Mode.ZK, 1, JobState.OPEN)
    assert d.market.instances_hash(job_id) == committed
    assert d.market.instances_hash(JobId(job_id - 1)) == bytes(32)  # other jobs have none


# -- InferenceMarket: proofs -----------------------------------------------------------------


def test_a_proved_job_is_paid_at_once(
    net: Network, circuit: Circuit, zk: ZkModel, record_property: pytest.RecordProperty
) -> None:
    d = net.deployment
    proof = circuit.proofs[0]
    job_id = _request(net, zk, proof)
    node = _drawn(net, job_id)
    owed_before = d.market.owed(node)
    receipt = d.market.submit_proof(job_id, proof.proof, proof.instances, sender=node)

    job = d.market.job(job_id)
    _, outputs = split_instances(proof.instances, circuit.artifacts.input_count)
    assert job.state == JobState.PAID
    assert job.result == instances_hash(outputs)
    assert d.market.seats_of(job_id) == [node]
    assert d.market.claim_of(job_id).node == node
    (accepted,) = d.market.events(receipt, "ProofAccepted")
    assert accepted.args == {"job_id": job_id, "node": node, "output_hash": job.result}
    (paid,) = d.market.events(receipt, "JobPaid")
    p = d.params.snapshot()
    split = split_fee(job.escrow, 1, p.owner_bps, p.treasury_bps)
    assert paid.args["node_amount"] == split.per_node
    assert d.market.owed(node) - owed_before == split.per_node
    # Paid at once: nothing assigned to the node, nothing left to finalize.
    assert d.nodes.node(node).open_assignments == 0
    with pytest.raises(JobNotOpen):
        d.market.finalize(job_id, sender=node)
    assert_nothing_lost(net)
    record_property("submit_proof_gas", receipt.gas_used)
    print(
        f"submit_proof gas ({len(proof.proof)}-byte proof, {len(proof.instances)} instances):"
        f" {receipt.gas_used:,}"
    )


@pytest.mark.parametrize(
    ("what", "change", "error"),
    [
        ("a proof byte", {"byte": 200}, InvalidProof),
        ("an output instance", {"instance": 5}, InvalidProof),
        ("an input instance", {"instance": 0}, InstancesMismatch),
    ],
)
def test_a_wrong_proof_is_refused(
    net: Network,
    circuit: Circuit,
    zk: ZkModel,
    what: str,
    change: dict[str, int],
    error: type[Exception],
) -> None:
    proof = circuit.proofs[0]
    job_id = _request(net, zk, proof)
    node = _drawn(net, job_id)
    with pytest.raises(error):
        _submit(net, job_id, tampered(proof, **change), node)
    # Only the inputs, no outputs: nothing to settle on.
    with pytest.raises(InstancesMismatch):
        _submit(net, job_id, replace(proof, instances=proof.input_instances), node)
    assert net.deployment.market.job(job_id).state == JobState.OPEN, what
    _submit(net, job_id, proof, node)  # the right proof still settles it
    assert net.deployment.market.job(job_id).state == JobState.PAID
    assert_nothing_lost(net)


def test_another_jobs_proof_is_refused_and_a_proof_settles_once(
    net: Network, circuit: Circuit, zk: ZkModel
) -> None:
    d = net.deployment
    first, second = circuit.proofs
    job_a = _request(net, zk, first)
    job_b = _request(net, zk, second, client=1)
    node = _drawn(net, job_a)
    _submit(net, job_a, first, node)
    # Job B committed to other inputs: job A's proof, replayed, proves the wrong run.
    with pytest.raises(InstancesMismatch):
        _submit(net, job_b, first, _drawn(net, job_b))
    with pytest.raises(JobNotOpen):  # and job A is paid once
        _submit(net, job_a, first, node)
    _submit(net, job_b, second, _drawn(net, job_b))
    assert d.market.job(job_b).state == JobState.PAID
    assert d.market.job(job_a).result != d.market.job(job_b).result
    assert_nothing_lost(net)


def test_a_proof_fits_only_a_zk_job_and_a_drawn_node(
    net: Network, circuit: Circuit, zk: ZkModel
) -> None:
    d, client = net.deployment, addr(net.clients[0])
    proof = circuit.proofs[0]
    job_id = _request(net, zk, proof)
    with pytest.raises(NotEligible):  # not a staked node serving the model
        _submit(net, job_id, proof, client)
    signed, _ = d.market.request(zk.model_id, h("signed in"), Mode.SIGNED, 1, sender=client)
    with pytest.raises(WrongMode):
        _submit(net, signed, proof, _drawn(net, signed))
    assert d.market.job(job_id).state == JobState.OPEN


def test_a_job_nobody_proves_is_refunded_after_its_deadline(
    net: Network, circuit: Circuit, zk: ZkModel
) -> None:
    d = net.deployment
    proof = circuit.proofs[0]
    job_id = _request(net, zk, proof)
    node = _drawn(net, job_id)
    with pytest.raises(TooEarly):
        d.market.finalize(job_id, sender=node)
    job = d.market.job(job_id)
    net.chain.advance_time(job.reveal_deadline - net.chain.timestamp() + 1)
    with pytest.raises(DeadlinePassed):
        _submit(net, job_id, proof, node)
    requester = addr(net.clients[0])
    owed = d.market.owed(requester)
    receipt = d.market.finalize(job_id, sender=node)
    (refund,) = d.market.events(receipt, "JobRefunded")
    assert refund.args["amount"] == job.escrow
    assert d.market.job(job_id).state == JobState.REFUNDED
    assert d.market.owed(requester) - owed == job.escrow
    assert_nothing_lost(net)


def test_python_bounds_match_the_contract(circuit: Circuit) -> None:
    source = (contracts_dir() / "InferenceMarket.vy").read_text()
    assert f"MAX_PROOF: constant(uint256) = {MAX_PROOF:_}" in source
    assert f"MAX_INSTANCES: constant(uint256) = {MAX_INSTANCES:_}" in source
    assert len(circuit.proofs[0].proof) <= MAX_PROOF
