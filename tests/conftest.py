"""Shared fixtures: a bootstrapped protocol on the embedded EVM and on anvil.

Every test gets the network in the same state: the chain is snapshotted before the
test and reverted after it (titanoboa-style isolation), on either backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from verinet.chain import Chain, EmbeddedChain, dev_accounts
from verinet.devnet.bootstrap import Network, bootstrap

settings.register_profile(
    "verinet", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("verinet"),
    derandomize=False,
)
settings.load_profile("ci" if os.environ.get("CI") else "verinet")

NODES = 5
CLIENTS = 2
ACCOUNTS = 3 + NODES + CLIENTS + 4  # a few spare, unregistered accounts


@pytest.fixture(scope="session")
def _embedded_net() -> Network:
    return bootstrap(EmbeddedChain(accounts=ACCOUNTS), nodes=NODES, clients=CLIENTS)


@pytest.fixture(scope="session")
def _anvil_net() -> Iterator[Network]:
    from verinet.chain.anvil import AnvilProcess
    from verinet.chain.jsonrpc import JsonRpcChain

    with AnvilProcess.start() as anvil:
        chain = JsonRpcChain(anvil.url, dev=True)
        for account in dev_accounts(ACCOUNTS):
            chain.add_account(account)
        yield bootstrap(chain, nodes=NODES, clients=CLIENTS)


def _isolated(net: Network) -> Iterator[Network]:
    snap = net.chain.snapshot()
    try:
        yield net
    finally:
        net.chain.revert(snap)


@pytest.fixture
def net(_embedded_net: Network) -> Iterator[Network]:
    """The bootstrapped protocol on the embedded EVM, reset after the test."""
    yield from _isolated(_embedded_net)


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.integration)])
def any_net(request: pytest.FixtureRequest) -> Iterator[Network]:
    """The same protocol on each backend: the conformance suite runs on both."""
    network: Network = request.getfixturevalue(f"_{request.param}_net")
    yield from _isolated(network)


@pytest.fixture
def chain(net: Network) -> Chain:
    return net.chain
