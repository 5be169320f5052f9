"""Escrow never stuck: a job past its deadline is finalized by the next node or client that
sees it, and a client refuses before paying what no node would take.

Embedded chain, nodes stepped by hand (their loops' `poll` and `tick`), chain time moved
explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from tests.helpers import stake_for_model
from verinet.chain.deploy import Deployment, deploy_protocol
from verinet.chain.embedded import EmbeddedChain
from verinet.client import Client
from verinet.devnet.audit import audit, audit_jobs
from verinet.devnet.samples import SampleModel, publish_samples, sample_models
from verinet.errors import NoNodes, NotEnoughNodes, TooEarly
from verinet.hub.store import DiskStore
from verinet.node.config import NodeSettings
from verinet.node.expiry import FINALIZE_PER_TICK
from verinet.node.service import Node
from verinet.protocol.expiry import overdue
from verinet.protocol.types import JobState, Mode
from verinet.runtime.tensors import group_hash
from verinet.types import Address, JobId, ModelId


@dataclass
class Market:
    chain: EmbeddedChain
    deployment: Deployment
    nodes: list[LocalAccount]
    client: LocalAccount
    sample: SampleModel
    served: ModelId  # staked nodes serve this one
    unserved: ModelId  # and nobody this one
    tmp: Path

    def node(self, index: int = 0) -> Node:
        settings = NodeSettings(
            data_dir=self.tmp / f"node-{index}", isolation="thread", withdraw_interval=1e9
        )
        node = Node(settings, self.nodes[index], self.deployment)
        hub = DiskStore(self.tmp / "hub")
        for cid in hub:
            node.store.put_verified(cid, hub.get(cid))
        node.sync_models()
        return node

    def request(self, model: ModelId, mode: Mode = Mode.SIGNED, k: int = 1) -> JobId:
        job_id, _ = self.deployment.market.request(
            model, group_hash(self.sample.example), mode, k, sender=Address(self.client.address)
        )
        return job_id

    def past_deadline(self, job_id: JobId) -> None:
        """Chain time moved to exactly the job's reveal deadline (from then anyone may end it)."""
        deadline = self.deployment.market.job(job_id).reveal_deadline
        self.chain.advance_time(max(0, deadline - self.chain.timestamp()))


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    chain = EmbeddedChain(accounts=9)
    accounts = list(chain.accounts)
    deployer, owner, nodes, client = accounts[0], accounts[1], accounts[2:5], accounts[5]
    d = deploy_protocol(chain, deployer=deployer.address, treasury=accounts[8].address)
    published = publish_samples(d, DiskStore(tmp_path / "hub"), Address(owner.address))
    served, unserved = published["mlp"].model_id, published["trees"].model_id
    stake_for_model(d, Address(deployer.address), nodes, client, served)
    sample = next(s for s in sample_models() if s.name == "mlp")
    yield Market(chain, d, nodes, client, sample, served, unserved, tmp_path)
    audit(d)
    audit_jobs(d)


def test_a_node_finalizes_any_job_left_past_its_deadline(market: Market) -> None:
    token, m = market.deployment.token, market.deployment.market
    node = market.node()
    requester = Address(market.client.address)
    before = token.balance_of(requester)
    nobody_sent = market.request(market.served)  # paid, input never sent to anyone
    quorum = market.request(market.served, Mode.QUORUM, 3)
    not_served = market.request(market.unserved)  # a model no node serves
    jobs = [nobody_sent, quorum, not_served]
    assert token.balance_of(requester) < before

    node.poll()
    node.tick()  # before the deadline nothing may be finalized
    assert [m.job(j).state for j in jobs] == [JobState.OPEN] * 3

    market.past_deadline(quorum)
    node.poll()
    node.tick()  # the first look past the deadline ends them all

    assert [m.job(j).state for j in jobs] == [JobState.REFUNDED] * 3
    assert token.balance_of(requester) + m.owed(requester) == before  # refunds are withdrawn
    refunds = {e.args["job_id"]: e for e in m.history("JobRefunded")}
    assert set(refunds) == set(jobs)
    assert not any(overdue(m.job(j), market.chain.timestamp()) for j in jobs)


def test_a_restarted_node_finds_open_jobs_it_saw_before(market: Market) -> None:
    m = market.deployment.market
    node = market.node()
    job_id = market.request(market.unserved)
    node.poll()  # the request event is read, and the cursor moves past it
    node.close()
    market.past_deadline(job_id)

    restarted = market.node()  # same data dir: the event is not read again
    restarted.poll()
    restarted.tick()  # the scan over job ids finds it

    assert m.job(job_id).state == JobState.REFUNDED
    restarted.close()


def test_a_tick_finalizes_a_bounded_number_of_jobs(market: Market) -> None:
    m = market.deployment.market
    node = market.node()
    jobs = [market.request(market.unserved) for _ in range(FINALIZE_PER_TICK + 2)]
    market.past_deadline(jobs[-1])
    node.poll()
    node.tick()
    ended = [j for j in jobs if m.job(j).state == JobState.REFUNDED]
    assert len(ended) == FINALIZE_PER_TICK
    node.tick()
    assert all(m.job(j).state == JobState.REFUNDED for j in jobs)
    node.close()


def test_client_finalize_is_refused_early_and_refunds_after(market: Market) -> None:
    token, m = market.deployment.token, market.deployment.market
    requester = Address(market.client.address)
    before = token.balance_of(requester)
    job_id = market.request(market.unserved)
    with Client(market.deployment, market.client) as client:
        with pytest.raises(TooEarly, match=f"job {job_id} is OPEN"):
            client.finalize(job_id)
        assert m.job(job_id).state == JobState.OPEN
        market.past_deadline(job_id)

        ended = client.finalize(job_id)

        assert ended.state == JobState.REFUNDED == m.job(job_id).state
        assert token.balance_of(requester) + m.owed(requester) == before  # refunds are withdrawn
        (refund,) = m.history("JobRefunded")
        assert refund.args["amount"] == ended.escrow
        assert client.finalize(job_id) == ended  # already ended: nothing sent, same job
        assert len(m.history("JobRefunded")) == 1


def test_client_refuses_before_paying_when_too_few_nodes_serve(market: Market) -> None:
    m, token = market.deployment.market, market.deployment.token
    requester = Address(market.client.address)
    before, jobs = token.balance_of(requester), m.job_count()
    # Three staked nodes serve the model; their registered endpoints do not answer.
    with Client(market.deployment, market.client) as client:
        manifest_free = market.sample.example
        with pytest.raises(NotEnoughNodes, match="needs 4 nodes serving model") as caught:
            client._plan(market.served, 4, manifest_free, lambda _: None)
        assert (caught.value.serving, caught.value.needed) == (3, 4)
        with pytest.raises(NotEnoughNodes, match="only 0 answered") as caught:
            client._plan(market.served, 1, manifest_free, lambda _: None)
        assert caught.value.serving == 3
        with pytest.raises(NoNodes, match="no staked node serves model"):
            client._plan(market.unserved, 1, manifest_free, lambda _: None)
    assert (token.balance_of(requester), m.job_count()) == (before, jobs)
