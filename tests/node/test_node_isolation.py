"""A node whose model traps: the request fails with a typed error, the node keeps serving.

The model divides int32 by int32: every static check admits it, and onnxruntime runs
INT_MIN / -1 into SIGFPE. Before models ran in worker processes this ended the node's
process (in a devnet: the chain, the hub and every node with it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.helpers import stake_for_model
from verinet._server import serve
from verinet.chain.deploy import Deployment, deploy_protocol
from verinet.chain.embedded import EmbeddedChain
from verinet.hub.publish import draft_manifest, publish
from verinet.hub.store import DiskStore
from verinet.node.api import node_app
from verinet.node.config import NodeSettings
from verinet.node.db import Stage
from verinet.node.service import Node
from verinet.protocol.types import JobState, Mode
from verinet.runtime.tensors import group_hash
from verinet.runtime.wire import group_to_json
from verinet.types import Address, ModelId

LOWEST = np.iinfo(np.int32).min
TRAP = {"a": np.array([LOWEST, 6], np.int32), "b": np.array([-1, 3], np.int32)}
FINE = {"a": np.array([LOWEST, 6], np.int32), "b": np.array([2, 3], np.int32)}


def divider() -> bytes:
    a, b = (helper.make_tensor_value_info(n, TensorProto.INT32, ["n"]) for n in ("a", "b"))
    y = helper.make_tensor_value_info("y", TensorProto.INT32, ["n"])
    graph = helper.make_graph([helper.make_node("Div", ["a", "b"], ["y"])], "div", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


@dataclass
class Served:
    deployment: Deployment
    node: Node
    model_id: ModelId
    client: Address
    http: httpx.Client


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    chain = EmbeddedChain(accounts=6)
    deployer, owner, operator, client = chain.accounts[:4]
    d = deploy_protocol(chain, deployer=deployer.address, treasury=chain.accounts[5].address)
    model = divider()
    manifest = draft_manifest(model, name="divider", fee=10, license="MIT")
    store = DiskStore(tmp_path / "node" / "blobs")
    model_id = publish(
        model, manifest, store=store, registry=d.models, sender=Address(owner.address)
    ).model_id
    stake_for_model(d, Address(deployer.address), [operator], client, model_id)
    settings = NodeSettings(data_dir=tmp_path / "node", withdraw_interval=1e9)
    assert settings.isolation == "process"  # the default under test
    node = Node(settings, operator, d)
    node.sync_models()
    try:
        with serve(node_app(node)) as url, httpx.Client(base_url=url, timeout=60) as http:
            yield Served(d, node, model_id, Address(client.address), http)
    finally:
        node.close()


def test_a_trapping_request_is_a_typed_error_and_the_node_serves_on(served: Served) -> None:
    path = f"/v1/models/{served.model_id}/execute"
    answer = served.http.post(path, json={"inputs": group_to_json(TRAP)})
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "ExecutionFailed" and "SIGFPE" in body["detail"]
    assert served.http.get("/healthz").status_code == 200
    for _ in range(3):  # the worker was replaced; the same node answers, again and again
        answer = served.http.post(path, json={"inputs": group_to_json(FINE)})
        assert answer.status_code == 200, answer.text
        assert (
            answer.json()["outputs"]["y"]
            == group_to_json({"y": np.array([LOWEST // 2, 2], np.int32)})["y"]
        )
        answer = served.http.post(path, json={"inputs": group_to_json(TRAP)})
        assert answer.status_code == 422 and "SIGFPE" in answer.json()["detail"]


def test_a_job_whose_input_traps_is_refused_and_the_next_job_is_paid(served: Served) -> None:
    market, node = served.deployment.market, served.node
    trap_job, _ = market.request(
        served.model_id, group_hash(TRAP), Mode.SIGNED, 1, sender=served.client
    )
    answer = served.http.post(f"/v1/jobs/{trap_job}/input", json={"inputs": group_to_json(TRAP)})
    assert answer.status_code == 422 and answer.json()["error"] == "ExecutionFailed"
    fine_job, _ = market.request(
        served.model_id, group_hash(FINE), Mode.SIGNED, 1, sender=served.client
    )
    answer = served.http.post(f"/v1/jobs/{fine_job}/input", json={"inputs": group_to_json(FINE)})
    assert answer.status_code in (200, 202), answer.text
    for _ in range(4):
        node.advance(fine_job)
    assert node.record(fine_job).stage in (Stage.SUBMITTED, Stage.DONE)
    assert market.job(fine_job).state in (JobState.PAID, JobState.SUBMITTED)
    assert market.job(trap_job).state == JobState.OPEN  # no receipt for a run that failed


def test_a_model_that_kills_its_worker_loading_is_not_served_and_the_rest_are(
    tmp_path: Path,
) -> None:
    from tests.node.test_native_crashes import _attention

    chain = EmbeddedChain(accounts=6)
    deployer, owner, operator, client = chain.accounts[:4]
    d = deploy_protocol(chain, deployer=deployer.address, treasury=chain.accounts[5].address)
    store = DiskStore(tmp_path / "node" / "blobs")
    ids = []
    for name, model in (("load-crash", _attention(2, 0)), ("divider", divider())):
        manifest = draft_manifest(model, name=name, fee=10, license="MIT")
        published = publish(model, manifest, store=store, registry=d.models, sender=owner.address)
        ids.append(published.model_id)
    bad, good = ids
    stake_for_model(d, Address(deployer.address), [operator], client, bad)
    d.nodes.set_serving([good], True, sender=operator.address)
    node = Node(NodeSettings(data_dir=tmp_path / "node", withdraw_interval=1e9), operator, d)
    try:
        assert node.sync_models() == [good]  # onnxruntime dies opening the other one
        assert bad not in node.models
        answer = node.execute(good, FINE)
        assert answer["outputs"]["y"].tolist() == [LOWEST // 2, 2]
        workers = {w.process.pid for w in node.pool._workers}
        assert node.sync_models() == []  # no second try on the next sync
        assert {w.process.pid for w in node.pool._workers} == workers
    finally:
        node.close()
