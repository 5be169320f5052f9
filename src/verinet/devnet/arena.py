"""An in-process network stepped by hand: an embedded chain, nodes (honest, or `personas` that
cheat) each serving its HTTP API on loopback, and a requester.

The adversarial suite and the demo's staged dispute run here: every part is the real one
(py-evm, onnxruntime, the nodes' own code and HTTP), only the clock is the arena's. `step`
polls and ticks every node once, then moves chain time on, so a run is the same every time
and a dispute that takes minutes of protocol time takes a second.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from verinet._server import serve
from verinet.chain.deploy import Deployment, deploy_protocol
from verinet.chain.embedded import EmbeddedChain
from verinet.devnet.bootstrap import MAX_UINT, TOKEN, fund, stake_node
from verinet.devnet.liveness import assert_none_overdue
from verinet.devnet.network import Windows, apply_windows
from verinet.devnet.samples import SampleModel, publish_samples, sample_models
from verinet.errors import VerinetError
from verinet.hub.store import DiskStore
from verinet.node.api import node_app
from verinet.node.config import NodeSettings
from verinet.node.service import Node
from verinet.protocol.expiry import finalizable_from
from verinet.protocol.types import Game, GameOutcome, GamePhase, JobState, Mode
from verinet.runtime.tensors import Array, group_hash
from verinet.types import Address, JobId, ModelId, Wei

STAKE = Wei(1_000 * TOKEN)

NodeKind = Callable[..., Node]
"""`Node` or a persona: called like `Node(settings, account, deployment)`."""


@dataclass
class Arena:
    chain: EmbeddedChain
    deployment: Deployment
    nodes: list[Node]
    urls: list[str]
    client: LocalAccount
    treasury: Address
    sample: SampleModel
    model_id: ModelId
    _stack: contextlib.ExitStack = field(repr=False)

    @classmethod
    def open(
        cls,
        folder: Path,
        kinds: Sequence[NodeKind],
        *,
        sample: str = "mlp",
        windows: Windows | None = None,
        watch_fraction: float = 1.0,
    ) -> Arena:
        """Deploy, publish the sample, and start one staked node per entry of `kinds`."""
        windows = windows or Windows()
        chain = EmbeddedChain(accounts=len(kinds) + 4)
        accounts = list(chain.accounts)
        deployer, owner, client, treasury = accounts[:4]
        node_accounts = accounts[4:]
        d = deploy_protocol(
            chain, deployer=Address(deployer.address), treasury=Address(treasury.address)
        )
        apply_windows(d, Address(deployer.address), windows)
        hub = DiskStore(folder / "hub")
        chosen = next(s for s in sample_models() if s.name == sample)
        model_id = publish_samples(d, hub, Address(owner.address), [chosen])[sample].model_id
        fund(d, Address(deployer.address), node_accounts, Wei(2 * STAKE))
        fund(d, Address(deployer.address), [client], Wei(10_000 * TOKEN))
        d.token.approve(d.market.address, Wei(MAX_UINT), sender=Address(client.address))
        stack = contextlib.ExitStack()
        nodes, urls = [], []
        try:
            for index, (kind, account) in enumerate(zip(kinds, node_accounts, strict=True)):
                settings = NodeSettings(
                    data_dir=folder / f"node-{index}",
                    isolation="thread",
                    withdraw_interval=1e9,
                    watch_fraction=watch_fraction,
                )
                node = kind(settings, account, d)
                stack.callback(node.close)
                for cid in hub:
                    node.store.put_verified(cid, hub.get(cid))
                url = stack.enter_context(serve(node_app(node)))
                stake_node(d, account, endpoint=url, stake=STAKE, models=[model_id])
                node.sync_models()
                nodes.append(node)
                urls.append(url)
        except BaseException:
            stack.close()
            raise
        return cls(
            chain, d, nodes, urls, client, Address(treasury.address), chosen, model_id, stack
        )

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Arena:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            if kind is None:
                self.finish()
        finally:
            self.close()

    def finish(self) -> None:
        """Move chain time to the last deadline of any unsettled job, let every node look
        once, and fail if a job is still unsettled a block later: the nodes must end every
        escrow left behind (no input, no seat, nobody finalizing) without being asked."""
        market = self.deployment.market
        jobs = [market.job(JobId(i)) for i in range(1, market.job_count() + 1)]
        due = [d for d in map(finalizable_from, jobs) if d is not None]
        if not due:
            return
        self.chain.advance_time(max(0, max(due) - self.chain.timestamp()))
        self.step()  # every node polls and ticks once; then one block's time passes
        self.chain.advance_time(1)  # now past every deadline by more than a block
        assert_none_overdue(self.deployment)

    # -- driving -------------------------------------------------------------------------

    def step(self, seconds: int = 1) -> None:
        """Every node reads the chain and moves each of its jobs and games once; then chain
        time moves on by `seconds`."""
        for node in self.nodes:
            node.poll()
            node.tick()
        self.chain.advance_time(seconds)

    def request(
        self,
        mode: Mode,
        inputs: Mapping[str, Array] | None = None,
        *,
        k: int = 1,
        claimant: Node | None = None,
    ) -> JobId:
        """Request a job on `inputs` (the sample's example by default) and hand the input to
        every node, as a client does; a node that refuses it is skipped.

        With `claimant` (signed and optimistic jobs), that node gets the input first, and
        the arena steps until it has put its result on-chain (the others, without the input,
        cannot); they get the input then and watch it. A run so decides who answers instead
        of the draw, while every node goes on playing its games."""
        feeds = dict(inputs or self.sample.example)
        job_id, _ = self.deployment.market.request(
            self.model_id, group_hash(feeds), mode, k, sender=Address(self.client.address)
        )
        if claimant is not None:
            claimant.accept_input(job_id, feeds)
            round_ = self.deployment.params.selection_round()
            for _ in range(100):
                self.step(0)
                if self.deployment.market.job(job_id).state != JobState.OPEN:
                    break
                self.chain.advance_time(round_)
            else:
                raise AssertionError(f"{claimant.address} was never drawn for job {job_id}")
        for node in self.nodes:
            if node is not claimant:
                with contextlib.suppress(VerinetError):
                    node.accept_input(job_id, feeds)
        return job_id

    def settled(self, job_ids: Sequence[JobId]) -> bool:
        """Every job PAID or REFUNDED, and no dispute game left open."""
        market, games = self.deployment.market, self.deployment.disputes
        if not all(market.job(j).state.terminal for j in job_ids):
            return False
        return all(games.game(g).phase is GamePhase.DONE for g in range(1, games.game_count() + 1))

    def run(self, job_ids: Sequence[JobId], *, limit: int = 2_000) -> int:
        """Step until `settled(job_ids)`; returns the steps taken (AssertionError at `limit`)."""
        for steps in range(1, limit + 1):
            self.step()
            if self.settled(job_ids):
                return steps
        states = {j: self.deployment.market.job(j).state.name for j in job_ids}
        raise AssertionError(f"not settled after {limit} steps: {states}")

    # -- reading the outcome -------------------------------------------------------------

    def penalties(self) -> dict[Address, int]:
        """Tokens slashed from each node, from the registry's books."""
        return {
            node.address: int(self.deployment.nodes.node(node.address).slashed)
            for node in self.nodes
        }

    def job_states(self, job_ids: Sequence[JobId]) -> dict[JobId, JobState]:
        return {j: self.deployment.market.job(j).state for j in job_ids}

    def games(self) -> list[Game]:
        games = self.deployment.disputes
        return [games.game(g) for g in range(1, games.game_count() + 1)]


def inputs(arena: Arena, i: int) -> dict[str, Array]:
    """A different input per job (so a replayed or copied answer is wrong)."""
    return {name: (value + i).astype(value.dtype) for name, value in arena.sample.example.items()}


@dataclass
class Campaign:
    """A persona among honest nodes: which jobs it answered, which they did."""

    arena: Arena
    cheater: Node
    cheated: list[JobId] = field(default_factory=list)  # claimed by the persona
    honest: list[JobId] = field(default_factory=list)  # claimed by honest nodes

    @property
    def honest_nodes(self) -> list[Node]:
        return [n for n in self.arena.nodes if n is not self.cheater]

    def honest_runs(self) -> int:
        """Honest nodes' results and game moves put at stake: every honest claim, and every
        game an honest node played (as defender or challenger)."""
        honest = {n.address for n in self.honest_nodes}
        parties = sum((g.defender in honest) + (g.challenger in honest) for g in self.arena.games())
        return len(self.honest) + parties

    def false_slashes(self) -> int:
        """Honest nodes slashed, or games an honest party lost."""
        honest = {n.address for n in self.honest_nodes}
        slashed = sum(
            1 for node, amount in self.arena.penalties().items() if node in honest and amount
        )
        lost = sum(
            1
            for g in self.arena.games()
            if (g.defender in honest and g.outcome is GameOutcome.CHALLENGER)
            or (g.challenger in honest and g.outcome is GameOutcome.DEFENDER)
        )
        return slashed + lost


def run_campaign(folder: Path, persona: NodeKind, jobs: int, *, honest: int = 4) -> Campaign:
    """`jobs` optimistic jobs answered by `persona` and as many by `honest` honest nodes in
    turn, each on its own input, run until all are settled (the arena is left open)."""
    arena = Arena.open(folder, [persona] + [Node] * honest)
    campaign = Campaign(arena, arena.nodes[0])
    try:
        for i in range(jobs):
            campaign.cheated.append(
                arena.request(Mode.OPTIMISTIC, inputs(arena, 2 * i), claimant=campaign.cheater)
            )
            claimant = campaign.honest_nodes[i % honest]
            campaign.honest.append(
                arena.request(Mode.OPTIMISTIC, inputs(arena, 2 * i + 1), claimant=claimant)
            )
        arena.run(campaign.cheated + campaign.honest)
    except BaseException:
        arena.close()
        raise
    return campaign
