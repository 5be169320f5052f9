"""Cheating nodes among honest ones, on a real EVM with the nodes' own code and HTTP.

Each persona (`verinet.devnet.personas`) runs in an arena with four honest nodes, all of them
watchers and jurors. The persona answers some optimistic jobs itself (`claimant=`) and watches
the honest nodes' jobs; the checks:

- every wrong result it claims is challenged, refuted (the job refunded) and it is slashed;
- a griefer (or a cheater whose own answer differs from an honest claim) loses its bond;
- no honest node is ever slashed or loses a game: the honest runs are counted, and the
  false-slash count must be 0;
- funds are conserved: market, registry and game books balance, every job paid or refunded
  exactly its escrow, and once everyone withdraws the game holds nothing.

CI runs a small campaign per persona; `-m slow` runs the full size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from verinet.devnet.arena import Arena, Campaign, inputs, run_campaign
from verinet.devnet.audit import audit, audit_jobs
from verinet.devnet.personas import PERSONAS, GriefingChallenger, Replayer
from verinet.node.service import Node
from verinet.protocol.types import GameOutcome, JobState, Mode
from verinet.runtime.tensors import group_hash
from verinet.types import Address, JobId

pytestmark = pytest.mark.adversarial

SMALL, FULL = 2, 8
"""Jobs the persona claims, and as many claimed by honest nodes, per campaign."""


@pytest.fixture(autouse=True, scope="module")
def _quiet() -> Iterator[None]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    yield
    structlog.reset_defaults()


def check_books(arena: Arena) -> None:
    """Conservation, then everyone withdraws and the game is left holding nothing."""
    audit(arena.deployment)
    counts = audit_jobs(arena.deployment, now=arena.chain.timestamp())
    assert set(counts) <= {"PAID", "REFUNDED"}
    for node in arena.nodes:
        node.claim()
    games = arena.deployment.disputes
    if games.owed(arena.treasury):  # the forfeits' treasury share
        games.withdraw(sender=arena.treasury)
    assert games.total_owed() == 0 and games.total_bonds() == 0
    assert arena.deployment.token.balance_of(games.address) == 0


CHEATS = sorted(set(PERSONAS) - {"griefing-challenger"})


def _cheater_is_caught(tmp: Path, name: str, jobs: int) -> None:
    campaign = run_campaign(tmp, PERSONAS[name], jobs)
    arena, market = campaign.arena, campaign.arena.deployment.market
    with arena:
        wrong = [j for j in campaign.cheated if _differs(campaign, j)]
        if name != "replayer":  # its first answer is its honest one, replayed later
            assert wrong == campaign.cheated
        assert wrong, "the persona never claimed a wrong result"
        for job_id in wrong:
            assert market.job(job_id).state is JobState.REFUNDED, f"job {job_id} was paid"
            refuting = [
                g
                for g in arena.games()
                if g.job_id == job_id and g.outcome is GameOutcome.CHALLENGER
            ]
            assert refuting, f"job {job_id}'s wrong result was never refuted"
        assert arena.penalties()[campaign.cheater.address] > 0
        for job_id in campaign.honest:
            assert market.job(job_id).state is JobState.PAID
        assert campaign.honest_runs() >= len(campaign.honest)
        assert campaign.false_slashes() == 0
        check_books(arena)


def _differs(campaign: Campaign, job_id: JobId) -> bool:
    """Whether the persona's claim differs from what an honest node computed for the job."""
    claim = campaign.arena.deployment.market.claim_of(job_id)
    witness = campaign.honest_nodes[0].record(job_id)
    return (claim.output_hash, claim.trace_final) != (witness.output_hash, witness.trace_final)


def _griefer_loses_its_bond(tmp: Path, jobs: int) -> None:
    campaign = run_campaign(tmp, GriefingChallenger, jobs)
    arena = campaign.arena
    with arena:
        griefer = campaign.cheater.address
        griefs = [g for g in arena.games() if g.challenger == griefer]
        assert len(griefs) == len(campaign.honest)  # it challenged every other node's result
        assert all(g.outcome is GameOutcome.DEFENDER for g in griefs)
        bond = arena.deployment.params.snapshot().challenge_bond
        before = arena.deployment.token.balance_of(griefer)
        check_books(arena)  # everyone withdraws: the griefer gets nothing back for its games
        after = arena.deployment.token.balance_of(griefer)
        market_earnings = after - before
        assert market_earnings < bond  # at most its own jobs' fees came back, never a bond
        resolved = [
            e.args
            for e in arena.deployment.disputes.history("GameResolved")
            if e.args["game_id"] in {g.game_id for g in griefs}
        ]
        assert all(r["forfeited"] == bond and r["winner"] != griefer for r in resolved)
        assert sum(arena.penalties().values()) == 0
        assert all(arena.deployment.market.job(j).state is JobState.PAID for j in campaign.honest)
        assert campaign.false_slashes() == 0


@pytest.mark.parametrize("name", CHEATS)
def test_a_cheating_claimant_is_challenged_and_slashed(tmp_path: Path, name: str) -> None:
    _cheater_is_caught(tmp_path, name, SMALL)


def test_a_griefing_challenger_loses_its_bond(tmp_path: Path) -> None:
    _griefer_loses_its_bond(tmp_path, SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHEATS)
def test_full_campaign_cheater(tmp_path: Path, name: str) -> None:
    _cheater_is_caught(tmp_path, name, FULL)


@pytest.mark.slow
def test_full_campaign_griefer(tmp_path: Path) -> None:
    _griefer_loses_its_bond(tmp_path, FULL)


def test_a_replayed_signed_receipt_is_refused(tmp_path: Path) -> None:
    with Arena.open(tmp_path, [Replayer] + [Node] * 2) as arena:
        replayer, market = arena.nodes[0], arena.deployment.market
        assert isinstance(replayer, Replayer)
        first = arena.request(Mode.SIGNED, inputs(arena, 0), claimant=replayer)
        # The second job goes to the replayer alone until it has tried its replay.
        feeds = inputs(arena, 1)
        second, _ = market.request(
            arena.model_id, group_hash(feeds), Mode.SIGNED, 1, sender=arena.client.address
        )
        replayer.accept_input(second, feeds)
        for _ in range(100):
            replayer.tick()
            if replayer.refused:
                break
            arena.chain.advance_time(arena.deployment.params.selection_round())
        assert replayer.refused == ["WrongSigner"]  # typed: the signature is for another job
        assert market.job(second).state is JobState.OPEN
        for node in arena.nodes[1:]:
            node.accept_input(second, feeds)
        arena.run([first, second])
        assert market.job(first).state is JobState.PAID
        assert market.job(second).state is JobState.PAID
        assert market.job(second).result == arena.nodes[1].record(second).output_hash
        assert market.claim_of(second).node != replayer.address
        check_books(arena)


def test_a_quorum_with_a_byzantine_minority_pays_the_honest_answer(tmp_path: Path) -> None:
    kinds = [PERSONAS["wrong-output"], PERSONAS["lazy-copier"], Node, Node, Node]
    with Arena.open(tmp_path, kinds) as arena:
        jobs = [arena.request(Mode.QUORUM, inputs(arena, i), k=5) for i in range(2)]
        arena.run(jobs)
        market = arena.deployment.market
        for job_id in jobs:
            job = market.job(job_id)
            assert job.state is JobState.PAID
            honest = {n.record(job_id).output_hash for n in arena.nodes[2:]}
            assert honest == {job.result}
        penalised = {e.args["node"] for e in market.history("NodePenalized")}
        assert penalised == {Address(arena.nodes[0].address), Address(arena.nodes[1].address)}
        honest_nodes = {n.address for n in arena.nodes[2:]}
        assert not any(arena.penalties()[n] for n in honest_nodes)
        check_books(arena)


def test_every_honest_node_agrees_with_itself(tmp_path: Path) -> None:
    """The baseline: with no cheater, nobody challenges and every job pays."""
    with Arena.open(tmp_path, [Node] * 4) as arena:
        jobs = [arena.request(Mode.OPTIMISTIC, inputs(arena, i)) for i in range(3)]
        arena.run(jobs)
        assert arena.games() == []
        assert all(arena.deployment.market.job(j).state is JobState.PAID for j in jobs)
        checked = [n.record(j).error or "" for n in arena.nodes for j in jobs]
        assert sum("right" in c for c in checked) == 3 * 3  # three watchers checked each claim
        check_books(arena)


def test_jobs_nobody_answered_are_ended_by_the_nodes(tmp_path: Path) -> None:
    """A requester that pays and walks away (no input to anyone), and a quorum with too few
    takers: no node is asked to finalize, yet every escrow comes back by the deadline."""
    with Arena.open(tmp_path, [Node] * 3) as arena:
        market, client = arena.deployment.market, Address(arena.client.address)
        jobs = [
            market.request(arena.model_id, group_hash(inputs(arena, i)), mode, k, sender=client)[0]
            for i, (mode, k) in enumerate(
                [(Mode.SIGNED, 1), (Mode.OPTIMISTIC, 1), (Mode.QUORUM, 3)]
            )
        ]
        arena.nodes[0].accept_input(jobs[2], inputs(arena, 2))  # one taker for three seats
        for _ in range(3):
            arena.step()
        assert [market.job(j).state for j in jobs] == [JobState.OPEN] * 3

        arena.finish()  # past the deadlines: one look by each node

        assert [market.job(j).state for j in jobs] == [JobState.REFUNDED] * 3
        check_books(arena)
