"""A devnet started again in the same folder, on the embedded chain and then on anvil, serves
its jobs: each start is a new chain with the same chain id and contract addresses, and job ids
counting from 1 again, so nodes that kept the last run's records skipped every job as done
(each was refunded after its windows)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from verinet.client import Client
from verinet.devnet.network import ChainKind, Devnet
from verinet.devnet.samples import sample_models
from verinet.protocol.types import JobState

pytestmark = pytest.mark.integration

DEADLINE = 60.0


@pytest.mark.parametrize("then", ["embedded", "anvil"])
def test_a_devnet_started_again_serves_job_one_again(tmp_path: Path, then: ChainKind) -> None:
    mlp = next(s for s in sample_models() if s.name == "mlp")
    contracts = None
    for chain in ("embedded", then):
        with Devnet.start(tmp_path, chain=chain, nodes=2) as net:
            assert contracts in (None, net.deployment.addresses())  # the same addresses
            contracts = net.deployment.addresses()
            started = time.monotonic()
            with Client(net.deployment, net.clients[0], timeout=DEADLINE) as client:
                result = client.infer(net.models["mlp"], mlp.example, mode="signed", k=1)
            # A node's receipt settled it (PAID), or holds it for an audit draw (SUBMITTED).
            assert result.job_id == 1 and result.state in (JobState.PAID, JobState.SUBMITTED)
            # Served at once, not left to be refunded after its windows.
            assert time.monotonic() - started < DEADLINE
