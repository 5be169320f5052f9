"""A whole local network: chain, contracts, sample models, N staked nodes, a model hub.

`Devnet.start(...)` brings it up and returns once every node answers; `stop()` (or ``with``)
takes it down. Two shapes:

- ``chain="embedded"``: the in-process EVM, every node a `NodeDaemon` in this process (one
  asyncio loop in a thread), and the chain also served over JSON-RPC so other processes (the
  CLI, your scripts) can reach it.
- ``chain="anvil"``: an anvil process, and every node its own ``verinet node run`` process
  with an encrypted keystore, as operators run them.

The network's description (RPC URL, contracts, node endpoints, models, dev keys) is written to
``<data_dir>/devnet.json`` for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from eth_account.signers.local import LocalAccount

from verinet._server import serve
from verinet.chain._accounts import dev_accounts
from verinet.chain._backend import Chain
from verinet.chain.deploy import Deployment, deploy_protocol
from verinet.devnet.bootstrap import MAX_UINT, TOKEN, fund, stake_node
from verinet.devnet.samples import ZK_SAMPLE, publish_samples, publish_zk_sample
from verinet.errors import TransientError
from verinet.hub.http import blob_app
from verinet.hub.store import DiskStore
from verinet.node.config import ChainSettings, Isolation, NodeSettings
from verinet.node.daemon import NodeDaemon, bind_socket
from verinet.node.keys import DEV_SCRYPT_N, create_keystore
from verinet.node.service import Node
from verinet.types import Address, ModelId, Wei

ChainKind = Literal["embedded", "anvil"]
DEV_PASSWORD = "verinet-devnet-insecure"
"""Password of devnet keystores. Devnet keys are public knowledge; never hold value with them."""
STAKE = Wei(1_000 * TOKEN)
CLIENT_FUNDS = Wei(100_000 * TOKEN)
START_DEADLINE = 120.0
BLOCK_INTERVAL = 1.0
"""Seconds between blocks on an anvil devnet, transactions or not."""


@dataclass(frozen=True, slots=True)
class Windows:
    """Protocol timings for a devnet: short enough to watch a job end."""

    commit: int = 30
    reveal: int = 30
    # A job whose first draw took no node (1 signed job in 16 with 4 equal nodes and
    # oversample 2) is served when the draw widens, one round later.
    selection_round: int = 2
    oversample: int = 2
    # Holds on submitted results: a signed job drawn for audit, an optimistic claim.
    audit: int = 20
    challenge: int = 20
    # Each dispute move, and the committee's vote.
    move_timeout: int = 10
    vote_window: int = 20


@dataclass
class Devnet:
    chain_kind: ChainKind
    chain: Chain
    deployment: Deployment
    data_dir: Path
    rpc_url: str
    hub_url: str
    nodes: list[tuple[Address, str]]
    models: dict[str, ModelId]
    clients: list[LocalAccount]
    model_owner: LocalAccount
    _stack: contextlib.ExitStack = field(repr=False)
    processes: dict[Address, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    daemons: list[NodeDaemon] = field(default_factory=list, repr=False)

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        chain: ChainKind = "embedded",
        nodes: int = 4,
        clients: int = 2,
        windows: Windows = Windows(),
        isolation: Isolation = "process",
        progress: Any = None,
        zk: bool = False,
    ) -> Devnet:
        say = progress or (lambda _: None)
        data_dir.mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        net: Devnet | None = None
        try:
            accounts = dev_accounts(3 + nodes + clients)
            say(f"starting the {chain} chain")
            the_chain, rpc_url = _open_chain(chain, accounts, stack)
            deployer, treasury, owner = accounts[:3]
            node_accounts = accounts[3 : 3 + nodes]
            client_accounts = accounts[3 + nodes :]
            say("deploying the contracts")
            deployment = deploy_protocol(
                the_chain,
                deployer=Address(deployer.address),
                treasury=Address(treasury.address),
            )
            apply_windows(deployment, Address(deployer.address), windows)
            say("building and publishing the sample models")
            hub_store = DiskStore(data_dir / "hub")
            published = publish_samples(deployment, hub_store, Address(owner.address))
            models = {name: p.model_id for name, p in published.items()}
            if zk:  # the mlp once more, with zk mode: its circuit is built here (~2 s)
                say(f"building {ZK_SAMPLE}'s circuit with a local SRS: FOR TESTING ONLY")
                models[ZK_SAMPLE] = publish_zk_sample(
                    deployment, hub_store, Address(owner.address), work_dir=data_dir / "zk"
                ).model_id
            hub_url = stack.enter_context(serve(blob_app(hub_store)))
            fund(deployment, Address(deployer.address), node_accounts, Wei(STAKE * 2))
            fund(deployment, Address(deployer.address), client_accounts, CLIENT_FUNDS)
            for client in client_accounts:
                deployment.token.approve(
                    deployment.market.address, Wei(MAX_UINT), sender=Address(client.address)
                )
            for index in range(nodes):
                forget_chain_state(data_dir / f"node-{index}")
            sockets = [_reserve_port() for _ in node_accounts]
            urls = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in sockets]
            for account, url in zip(node_accounts, urls, strict=True):
                say(f"staking node {account.address[:10]}…")
                stake_node(
                    deployment, account, endpoint=url, stake=STAKE, models=list(models.values())
                )
            net = cls(
                chain_kind=chain,
                chain=the_chain,
                deployment=deployment,
                data_dir=data_dir,
                rpc_url=rpc_url,
                hub_url=hub_url,
                nodes=[(Address(a.address), u) for a, u in zip(node_accounts, urls, strict=True)],
                models=models,
                clients=list(client_accounts),
                model_owner=owner,
                _stack=stack,
            )
            say("starting the nodes")
            if chain == "embedded":
                net._run_in_process(node_accounts, sockets, isolation)
            else:
                for sock in sockets:
                    sock.close()  # the node process binds its port itself
                for account, url in zip(node_accounts, urls, strict=True):
                    net.processes[Address(account.address)] = net._spawn(account, url)
            net._wait_ready(say)
            net.write_description()
            return net
        except BaseException:
            if net is not None:
                net.stop()  # node processes already spawned go too, not only the chain
            else:
                stack.close()
            raise

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._stack.close()

    def __enter__(self) -> Devnet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- nodes -----------------------------------------------------------------------------

    def node_settings(self, index: int, url: str) -> NodeSettings:
        port = int(url.rsplit(":", 1)[1])
        return NodeSettings(
            data_dir=self.data_dir / f"node-{index}",
            port=port,
            public_url=url,
            peers=[self.hub_url],
            chain=ChainSettings(
                url=self.rpc_url, contracts=self.deployment.addresses(), poll_interval=0.02
            ),
            withdraw_interval=5.0,
        )

    def _run_in_process(
        self, accounts: list[LocalAccount], sockets: list[socket.socket], isolation: str
    ) -> None:
        ready = threading.Event()
        stop_holder: list[asyncio.Event] = []
        loop_holder: list[asyncio.AbstractEventLoop] = []
        failures: list[BaseException] = []

        async def main() -> None:
            stop = asyncio.Event()
            stop_holder.append(stop)
            loop_holder.append(asyncio.get_running_loop())
            tasks = []
            for i, (account, sock) in enumerate(zip(accounts, sockets, strict=True)):
                settings = self.node_settings(i, self.nodes[i][1]).model_copy(
                    update={"isolation": isolation}
                )
                node = Node(settings, account, self.deployment)
                daemon = NodeDaemon(node)
                self.daemons.append(daemon)
                tasks.append(asyncio.create_task(daemon.run(stop, sock=sock)))
            ready.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failures.extend(r for r in results if isinstance(r, BaseException))

        thread = threading.Thread(target=lambda: asyncio.run(main()), name="devnet-nodes")
        thread.start()
        ready.wait(START_DEADLINE)

        def shutdown() -> None:
            if stop_holder and loop_holder:
                loop_holder[0].call_soon_threadsafe(stop_holder[0].set)
            thread.join(30)

        self._stack.callback(shutdown)

    def _spawn(self, account: LocalAccount, url: str) -> subprocess.Popen[bytes]:
        index = [a for a, _ in self.nodes].index(Address(account.address))
        settings = self.node_settings(index, url)
        keystore = settings.data_dir / "key.json"
        if not keystore.exists():
            create_keystore(keystore, DEV_PASSWORD, account=account, scrypt_n=DEV_SCRYPT_N)
        config = settings.data_dir / "node.toml"
        config.write_text(_toml(settings.model_copy(update={"keystore": keystore})))
        log = (settings.data_dir / "node.log").open("ab")
        env = {**os.environ, "VERINET_KEYSTORE_PASSWORD": DEV_PASSWORD}
        process = subprocess.Popen(
            # --exit-with-parent: a devnet killed outright takes its nodes with it.
            [
                *(sys.executable, "-m", "verinet", "node", "run", "--config", str(config)),
                "--exit-with-parent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        return process

    def restart_node(self, address: Address) -> None:
        """Start a node process again (after a kill), with its data directory as it was."""
        url = dict(self.nodes)[address]
        account = next(a for a in dev_accounts(64) if Address(a.address) == address)
        self.processes[address] = self._spawn(account, url)
        self._wait_ready(lambda _: None, only=[url])

    def _wait_ready(self, say: Any, only: list[str] | None = None) -> None:
        deadline = time.monotonic() + START_DEADLINE
        pending = list(only or [url for _, url in self.nodes])
        with httpx.Client(timeout=2.0) as http:
            while pending:
                url = pending[0]
                with contextlib.suppress(httpx.HTTPError):
                    body = http.get(f"{url}/healthz").json()
                    if len(body.get("models", [])) >= len(self.models):
                        pending.pop(0)
                        say(f"node {url} is up")
                        continue
                for address, process in self.processes.items():
                    if process.poll() is not None and dict(self.nodes)[address] == url:
                        log = self.data_dir / f"node-{[a for a, _ in self.nodes].index(address)}"
                        raise RuntimeError(f"node {url} exited; see {log / 'node.log'}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {url} not ready after {START_DEADLINE} s")
                time.sleep(0.1)

    # -- description ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "chain": self.chain_kind,
            "chain_id": self.chain.chain_id,
            "rpc_url": self.rpc_url,
            "contracts": self.deployment.addresses(),
            "hub_url": self.hub_url,
            "nodes": [{"address": a, "url": u} for a, u in self.nodes],
            "models": self.models,
            "clients": [
                {"address": c.address, "private_key": "0x" + c.key.hex()} for c in self.clients
            ],
            "model_owner": {
                "address": self.model_owner.address,
                "private_key": "0x" + self.model_owner.key.hex(),
            },
            "warning": "development keys: public knowledge, never use them with real value",
        }

    def write_description(self) -> Path:
        path = self.data_dir / "devnet.json"
        path.write_text(json.dumps(self.describe(), indent=2))
        return path


def forget_chain_state(node_dir: Path) -> None:
    """Delete a devnet node's records of earlier chains: every devnet starts a new chain, on
    which job and game ids count from 1 again (a node would skip the new jobs as done). Its
    blobs and zk files are content-addressed and stay."""
    for path in node_dir.glob("jobs*.sqlite*"):
        path.unlink()


def _open_chain(
    kind: ChainKind, accounts: list[LocalAccount], stack: contextlib.ExitStack
) -> tuple[Chain, str]:
    if kind == "embedded":
        from verinet.chain.embedded import EmbeddedChain
        from verinet.chain.rpc_server import rpc_app

        chain = EmbeddedChain(accounts=len(accounts), clock="wall")
        url = stack.enter_context(serve(rpc_app(chain)))
        return chain, url
    if kind != "anvil":
        raise ValueError(f"unknown chain {kind!r}: use 'embedded' or 'anvil'")
    from verinet.chain.anvil import AnvilProcess
    from verinet.chain.jsonrpc import JsonRpcChain

    anvil = stack.enter_context(AnvilProcess.start())
    rpc = JsonRpcChain(anvil.url, dev=True)
    for account in accounts:
        rpc.add_account(account)
    stack.enter_context(_blocks_every(JsonRpcChain(anvil.url, dev=True), BLOCK_INTERVAL))
    return rpc, anvil.url


@contextlib.contextmanager
def _blocks_every(chain: Chain, seconds: float) -> Iterator[None]:
    """Mine an empty block every `seconds`, as a live chain does.

    anvil mines only when a transaction comes, and contract views read the last block's
    time: on an idle devnet the clock would stop, and a job whose first draw picked no node
    would never widen its draw nor reach its deadline.
    """
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(seconds):
            with contextlib.suppress(TransientError):
                chain.advance_time(0)

    thread = threading.Thread(target=run, name="devnet-blocks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def _reserve_port() -> socket.socket:
    """A socket bound to a free loopback port below the kernel's ephemeral range.

    Node processes bind their port themselves, seconds after it is chosen here (and again
    when restarted). A port from the ephemeral range could meanwhile become the local end of
    any outgoing connection on the machine; one below it cannot.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return bind_socket("127.0.0.1", 0)
    for _ in range(100):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", random.randrange(min(10_000, low // 2), low)))
        except OSError:
            sock.close()
            continue
        return sock
    return bind_socket("127.0.0.1", 0)


def apply_windows(deployment: Deployment, owner: Address, windows: Windows) -> None:
    """Set a deployment's windows, dispute timeouts and selection round to `windows` (the
    devnet's short ones), keeping every other parameter."""
    params = deployment.params
    current = params.snapshot()
    params.set_windows(
        windows.commit,
        windows.reveal,
        windows.audit,
        windows.challenge,
        current.unbonding_delay,
        sender=owner,
    )
    params.set_disputes(
        current.challenge_bond,
        windows.move_timeout,
        windows.vote_window,
        current.committee_size,
        current.dispute_winner_bps,
        current.dispute_committee_bps,
        sender=owner,
    )
    params.set_selection(windows.oversample, windows.selection_round, sender=owner)


def _toml(settings: NodeSettings) -> str:
    data = json.loads(settings.model_dump_json(exclude_none=True))
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        for key, value in table.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def devnet(data_dir: Path, **kwargs: Any) -> Iterator[Devnet]:
    net = Devnet.start(data_dir, **kwargs)
    try:
        yield net
    finally:
        net.stop()
