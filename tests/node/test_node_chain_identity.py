"""A node's records belong to one chain: on a fresh chain with the same chain id and contract
addresses (a devnet started again), its old database is moved aside and the new job 1 is
served, not skipped as the old job 1."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from tests.helpers import job_record, stake_for_model
from verinet.chain import Chain, dev_accounts
from verinet.chain.deploy import Deployment, deploy_protocol
from verinet.chain.embedded import EmbeddedChain
from verinet.devnet.samples import SampleModel, publish_samples, sample_models
from verinet.hub.store import DiskStore
from verinet.node.config import NodeSettings
from verinet.node.db import ChainIdentity, JobDB, Stage
from verinet.node.service import Node
from verinet.protocol.types import JobState, Mode
from verinet.runtime.tensors import group_hash
from verinet.types import Address, JobId, ModelId


@dataclass
class Deployed:
    chain: Chain
    deployment: Deployment
    nodes: list[LocalAccount]
    client: LocalAccount
    sample: SampleModel
    model_id: ModelId


def fresh_chain(hub: Path, start_time: int) -> Deployed:
    """A new embedded chain with the protocol deployed (see `deploy`)."""
    return deploy(EmbeddedChain(accounts=9, start_time=start_time), hub)


def deploy(chain: Chain, hub: Path) -> Deployed:
    """The protocol deployed by the same accounts, in the same order: the same contract
    addresses on every new chain."""
    accounts = list(chain.accounts)
    deployer, owner, nodes, client = accounts[0], accounts[1], accounts[2:5], accounts[5]
    d = deploy_protocol(chain, deployer=deployer.address, treasury=accounts[8].address)
    model_id = publish_samples(d, DiskStore(hub), Address(owner.address))["mlp"].model_id
    stake_for_model(d, Address(deployer.address), nodes, client, model_id)
    sample = next(s for s in sample_models() if s.name == "mlp")
    return Deployed(chain, d, nodes, client, sample, model_id)


def start_nodes(on: Deployed, tmp: Path) -> list[Node]:
    nodes = []
    for index, account in enumerate(on.nodes):
        settings = NodeSettings(
            data_dir=tmp / f"node-{index}", isolation="thread", withdraw_interval=1e9
        )
        node = Node(settings, account, on.deployment)
        for cid in DiskStore(tmp / "hub"):
            node.store.put_verified(cid, DiskStore(tmp / "hub").get(cid))
        node.sync_models()
        nodes.append(node)
    return nodes


def serve_one_quorum_job(on: Deployed, nodes: list[Node]) -> JobId:
    example = on.sample.example
    job_id, _ = on.deployment.market.request(
        on.model_id, group_hash(example), Mode.QUORUM, 3, sender=on.client.address
    )
    for node in nodes:
        assert node.accept_input(job_id, example).record.stage == Stage.READY
    for _ in range(4):
        for node in nodes:
            node.advance(job_id)
    assert on.deployment.market.job(job_id).state == JobState.PAID
    return job_id


def test_a_node_on_a_fresh_chain_moves_the_old_records_aside_and_serves(tmp_path: Path) -> None:
    first = fresh_chain(tmp_path / "hub", start_time=int(time.time()))
    nodes = start_nodes(first, tmp_path)
    assert serve_one_quorum_job(first, nodes) == 1
    for node in nodes:
        node.close()

    # Started later, as a devnet started again is: the same id and addresses, new blocks.
    second = fresh_chain(tmp_path / "hub", start_time=first.chain.timestamp() + 3600)
    assert second.deployment.addresses() == first.deployment.addresses()
    assert second.chain.chain_id == first.chain.chain_id
    nodes = start_nodes(second, tmp_path)
    for index, node in enumerate(nodes):
        moved = node.db.moved_aside
        assert moved is not None and moved.parent == tmp_path / f"node-{index}"
        old = JobDB(moved)  # the old records are kept, out of the way
        old_record = old.get(JobId(1))
        assert old_record is not None and old_record.stage == Stage.DONE
        old.close()
        assert node.db.get(JobId(1)) is None
    assert serve_one_quorum_job(second, nodes) == 1  # served, not skipped as done
    for node in nodes:
        node.close()

    # The same chain again: the records stay.
    again = start_nodes(second, tmp_path)
    assert [n.db.moved_aside for n in again] == [None] * 3
    assert {n.record(JobId(1)).stage for n in again} == {Stage.DONE}
    for node in again:
        node.close()


@pytest.mark.integration
def test_nodes_moved_from_an_embedded_chain_to_anvil_serve_its_jobs(tmp_path: Path) -> None:
    from verinet.chain.anvil import AnvilProcess
    from verinet.chain.jsonrpc import JsonRpcChain

    embedded = fresh_chain(tmp_path / "hub", start_time=int(time.time()))
    nodes = start_nodes(embedded, tmp_path)
    assert serve_one_quorum_job(embedded, nodes) == 1
    for node in nodes:
        node.close()
    with AnvilProcess.start() as anvil:
        on_anvil = deploy(JsonRpcChain(anvil.url, dev_accounts(9), dev=True), tmp_path / "hub")
        assert on_anvil.deployment.addresses() == embedded.deployment.addresses()
        nodes = start_nodes(on_anvil, tmp_path)
        assert all(node.db.moved_aside is not None for node in nodes)
        assert serve_one_quorum_job(on_anvil, nodes) == 1
        for node in nodes:
            node.close()


def _identity(chain_id: int = 31337, genesis: str = "0x01") -> ChainIdentity:
    market, registry = Address("0x" + "aa" * 20), Address("0x" + "bb" * 20)
    return ChainIdentity(chain_id, market, registry, genesis)


def test_a_database_is_kept_for_its_own_chain_only(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    db = JobDB(path, _identity())
    assert db.moved_aside is None and db.insert(job_record(1, Stage.DONE))
    db.close()
    db = JobDB(path, _identity())
    assert db.moved_aside is None and db.get(JobId(1)) is not None
    db.close()
    for other in (_identity(genesis="0x02"), _identity(chain_id=1)):
        db = JobDB(path, other)
        assert db.moved_aside is not None and db.moved_aside.exists()
        assert db.get(JobId(1)) is None
        assert db.insert(job_record(1, Stage.DONE))
        db.close()
    assert len(list(tmp_path.glob("jobs.*.replaced.sqlite"))) == 2


def test_a_database_from_before_identities_is_adopted_only_when_empty(tmp_path: Path) -> None:
    empty, used = tmp_path / "empty" / "jobs.sqlite", tmp_path / "used" / "jobs.sqlite"
    JobDB(empty).close()
    legacy = JobDB(used)
    legacy.set_cursor(7)
    legacy.close()
    adopted = JobDB(empty, _identity())
    assert adopted.moved_aside is None
    adopted.close()
    fresh = JobDB(used, _identity())
    assert fresh.moved_aside is not None and fresh.moved_aside.name.startswith("jobs.unknown-")
    assert fresh.cursor() == 0
    fresh.close()
