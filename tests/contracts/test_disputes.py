"""Optimistic claims, sampled audits and the DisputeGame on the embedded EVM.

Each game is played from two traces (the defender's and the challenger's); the committee
votes as an honest juror would, by comparing the revealed step hash with the step of the
true trace. What must hold: a wrong claim is found at its first wrong step in
ceil(log2(N + 1)) rounds and slashed; a griefing challenger loses its bond; whoever must
move and does not, loses; funds are conserved in the market, the registry and the game.
"""

from __future__ import annotations

import math

import pytest

from tests.helpers import addr, assert_nothing_lost, h
from verinet.devnet.bootstrap import Network, placeholder_cid
from verinet.devnet.disputes import (
    ClaimedTrace,
    challenge,
    past_deadline,
    play,
    run_optimistic,
    synthetic_trace,
)
from verinet.devnet.jobs import drawn_nodes, sign_for
from verinet.errors import (
    AlreadyChallenged,
    ChallengeClosed,
    CommitteeFull,
    Conflicted,
    DeadlinePassed,
    DisputeOpen,
    InvalidTrace,
    NotAudited,
    NotChallengeable,
    NotEligible,
    NotStaked,
    NotYourMove,
    StepMismatch,
    TooEarly,
    WrongMode,
)
from verinet.protocol.types import BPS, GameOutcome, GamePhase, JobState, Mode
from verinet.types import Address, Hash32, JobId

pytestmark = pytest.mark.contracts

MODEL_CID = placeholder_cid("sample model")


def _trace(ops: int = 12, label: str = "in") -> ClaimedTrace:
    return synthetic_trace(MODEL_CID, h(label), ops)


def _others(net: Network, *exclude: object) -> list:  # type: ignore[type-arg]
    skip = {a if isinstance(a, str) else addr(a) for a in exclude}
    return [n for n in net.nodes if addr(n) not in skip]


def _honest_judge(truth: ClaimedTrace):  # type: ignore[no-untyped-def]
    return lambda step, step_hash: truth.step_hash(step) == step_hash


# -- optimistic claims --------------------------------------------------------


def test_an_unchallenged_claim_is_paid_after_the_challenge_window(net: Network) -> None:
    d = net.deployment
    truth = _trace()
    run, node = run_optimistic(net, net.clients[0], truth)
    job = d.market.job(run.job_id)
    assert job.state is JobState.SUBMITTED and job.result == truth.output_hash
    claim = d.market.claim_of(run.job_id)
    assert (claim.node, claim.trace_final, claim.trace_root, claim.ops) == (
        addr(node),
        truth.final,
        truth.root,
        truth.ops,
    )
    with pytest.raises(TooEarly):
        d.market.finalize(run.job_id, sender=addr(net.clients[0]))
    past_deadline(net, job.finalize_after)
    d.market.finalize(run.job_id, sender=addr(net.clients[0]))
    assert d.market.job(run.job_id).state is JobState.PAID
    assert d.nodes.node(addr(node)).open_assignments == 0
    assert_nothing_lost(net)


def test_a_claim_is_refused_unless_it_is_well_formed_and_from_a_drawn_node(
    net: Network,
) -> None:
    d, t = net.deployment, _trace()
    job_id, _ = d.market.request(
        net.model_id, t.input_hash, Mode.OPTIMISTIC, 1, sender=addr(net.clients[0])
    )
    (node,) = drawn_nodes(net, job_id, 1)
    with pytest.raises(InvalidTrace):
        d.market.submit_claim(job_id, t.output_hash, t.final, t.root, 0, sender=addr(node))
    with pytest.raises(InvalidTrace):
        d.market.submit_claim(job_id, t.output_hash, t.final, t.root, 2**20 + 1, sender=addr(node))
    spare = net.chain.accounts[-1]
    with pytest.raises(NotEligible):
        d.market.submit_claim(job_id, t.output_hash, t.final, t.root, t.ops, sender=addr(spare))
    signed_job, _ = d.market.request(
        net.model_id, t.input_hash, Mode.SIGNED, 1, sender=addr(net.clients[0])
    )
    with pytest.raises(WrongMode):
        d.market.submit_claim(signed_job, t.output_hash, t.final, t.root, t.ops, sender=addr(node))


# -- the game -----------------------------------------------------------------


@pytest.mark.parametrize("wrong_op", [1, 5, 12])
def test_a_wrong_op_is_found_by_bisection_and_its_node_slashed(net: Network, wrong_op: int) -> None:
    d = net.deployment
    truth = _trace(12)
    lie = truth.with_op(wrong_op, h("wrong"))
    run, cheat = run_optimistic(net, net.clients[0], lie)
    honest = _others(net, cheat)[0]
    stake_before = d.nodes.node(addr(cheat)).stake
    game_id, _ = challenge(net, run.job_id, honest)
    jurors = _others(net, cheat, honest)
    played = play(
        net, game_id, defender=lie, challenger=truth, judge=_honest_judge(truth), jurors=jurors
    )

    assert played.step == wrong_op
    # Each round halves the N + 1 steps in dispute (rounding either way).
    assert (
        math.floor(math.log2(truth.ops + 1)) <= played.rounds <= math.ceil(math.log2(truth.ops + 1))
    )
    game = d.disputes.game(game_id)
    assert game.phase is GamePhase.DONE and game.outcome is GameOutcome.CHALLENGER
    assert d.market.job(run.job_id).state is JobState.REFUNDED
    slashed = stake_before - d.nodes.node(addr(cheat)).stake
    s = d.params.snapshot()
    assert slashed == stake_before * s.slash_fault_bps // BPS
    # The challenger gets its bond back and half the slash; the two agreeing jurors share 20 %.
    assert d.disputes.owed(addr(honest)) == s.challenge_bond + slashed * s.dispute_winner_bps // BPS
    voters = d.disputes.voters_of(game_id)
    assert len(voters) == 2
    for voter in voters:
        assert d.disputes.owed(voter) == slashed * s.dispute_committee_bps // BPS // 2
    assert d.nodes.node(addr(cheat)).open_assignments == 0
    assert_nothing_lost(net)
    d.disputes.withdraw(sender=addr(honest))
    assert_nothing_lost(net)


def test_a_wrong_output_hash_over_an_honest_trace_is_caught_at_the_outputs_step(
    net: Network,
) -> None:
    truth = _trace(7)
    lie = truth.with_output(h("made up"))
    run, cheat = run_optimistic(net, net.clients[0], lie)
    honest = _others(net, cheat)[0]
    game_id, _ = challenge(net, run.job_id, honest)
    played = play(
        net,
        game_id,
        defender=lie,
        challenger=truth,
        judge=_honest_judge(truth),
        jurors=_others(net, cheat, honest),
    )
    assert played.step == truth.ops + 1 and played.rounds == 3
    assert net.deployment.disputes.game(game_id).outcome is GameOutcome.CHALLENGER
    assert net.deployment.market.job(run.job_id).state is JobState.REFUNDED
    assert_nothing_lost(net)


def test_a_griefing_challenger_loses_its_bond_and_the_claim_is_paid(net: Network) -> None:
    d = net.deployment
    truth = _trace(9)
    run, node = run_optimistic(net, net.clients[0], truth)
    griefer = _others(net, node)[0]
    stake_before = d.nodes.node(addr(node)).stake
    game_id, _ = challenge(net, run.job_id, griefer)
    fake = truth.with_op(3, h("griefer's story"))
    play(
        net,
        game_id,
        defender=truth,
        challenger=fake,
        judge=_honest_judge(truth),
        jurors=_others(net, node, griefer),
    )
    game = d.disputes.game(game_id)
    assert game.outcome is GameOutcome.DEFENDER
    s = d.params.snapshot()
    assert d.disputes.owed(addr(node)) == s.challenge_bond * s.dispute_winner_bps // BPS
    assert d.disputes.owed(addr(griefer)) == 0
    assert d.nodes.node(addr(node)).stake == stake_before  # never slashed
    job = d.market.job(run.job_id)
    assert job.state is JobState.SUBMITTED
    past_deadline(net, job.finalize_after)
    d.market.finalize(run.job_id, sender=addr(net.clients[0]))
    assert d.market.job(run.job_id).state is JobState.PAID
    assert_nothing_lost(net)


def test_a_colluding_challenger_that_loses_on_purpose_cannot_shield_a_bad_claim(
    net: Network,
) -> None:
    d = net.deployment
    truth = _trace(6)
    lie = truth.with_op(2, h("wrong"))
    run, cheat = run_optimistic(net, net.clients[0], lie)
    friend, honest = _others(net, cheat)[:2]
    jurors = _others(net, cheat, friend, honest)
    stake_before = d.nodes.node(addr(cheat)).stake
    shield, _ = challenge(net, run.job_id, friend)
    real, _ = challenge(net, run.job_id, honest)
    assert d.market.claim_of(run.job_id).open_disputes == 2
    # The friend agrees with every link: the game ends on the outputs step, where the
    # cheat's own trace is consistent, so the committee upholds it.
    play(
        net,
        shield,
        defender=lie,
        challenger=lie,
        judge=lambda s, sh: lie.step_hash(s) == sh,
        jurors=jurors,
    )
    assert d.disputes.game(shield).outcome is GameOutcome.DEFENDER
    with pytest.raises(DisputeOpen):
        past_deadline(net, d.market.job(run.job_id).finalize_after)
        d.market.finalize(run.job_id, sender=addr(net.clients[0]))
    # The honest watcher's game refutes the claim and refunds the job anyway.
    game = d.disputes.game(real)
    assert game.phase is GamePhase.DEFENDER and net.chain.timestamp() >= game.deadline
    d.disputes.timeout(real, sender=addr(honest))  # the cheat's move ran out meanwhile
    assert d.disputes.game(real).outcome is GameOutcome.CHALLENGER
    assert d.market.job(run.job_id).state is JobState.REFUNDED
    assert d.nodes.node(addr(cheat)).stake < stake_before
    assert_nothing_lost(net)


def test_whoever_must_move_and_does_not_loses(net: Network) -> None:
    d = net.deployment
    truth = _trace(4)
    s = d.params.snapshot()
    # The defender never bisects.
    run, node = run_optimistic(net, net.clients[0], truth)
    challenger = _others(net, node)[0]
    game_id, _ = challenge(net, run.job_id, challenger)
    with pytest.raises(TooEarly):
        d.disputes.timeout(game_id, sender=addr(challenger))
    past_deadline(net, d.disputes.game(game_id).deadline)
    with pytest.raises(DeadlinePassed):
        d.disputes.bisect(game_id, truth.links[2], sender=addr(node))
    d.disputes.timeout(game_id, sender=addr(challenger))
    assert d.disputes.game(game_id).outcome is GameOutcome.CHALLENGER
    assert d.market.job(run.job_id).state is JobState.REFUNDED

    # The challenger never answers.
    run, node = run_optimistic(net, net.clients[0], truth)
    challenger = _others(net, node)[0]
    game_id, _ = challenge(net, run.job_id, challenger)
    d.disputes.bisect(game_id, truth.links[2], sender=addr(node))
    past_deadline(net, d.disputes.game(game_id).deadline)
    d.disputes.timeout(game_id, sender=addr(node))
    assert d.disputes.game(game_id).outcome is GameOutcome.DEFENDER
    assert d.disputes.owed(addr(node)) >= s.challenge_bond * s.dispute_winner_bps // BPS
    assert_nothing_lost(net)


def test_a_defender_that_withholds_its_step_loses(net: Network) -> None:
    d = net.deployment
    truth = _trace(3)
    run, node = run_optimistic(net, net.clients[0], truth)
    challenger = _others(net, node)[0]
    game_id, _ = challenge(net, run.job_id, challenger)
    play(net, game_id, defender=truth, challenger=truth.with_op(1, h("x")))
    # play() revealed the step; a fresh game shows the withholding case.
    run2, node2 = run_optimistic(net, net.clients[0], truth)
    other = _others(net, node2)[0]
    game2, _ = challenge(net, run2.job_id, other)
    game = d.disputes.game(game2)
    while game.phase is not GamePhase.STEP:
        d.disputes.bisect(game2, truth.links[game.mid], sender=addr(node2))
        d.disputes.respond(game2, False, sender=addr(other))
        game = d.disputes.game(game2)
    with pytest.raises(StepMismatch):
        d.disputes.reveal_step(game2, h("not the step"), sender=addr(node2))
    past_deadline(net, game.deadline)
    d.disputes.timeout(game2, sender=addr(other))
    assert d.disputes.game(game2).outcome is GameOutcome.CHALLENGER
    assert d.market.job(run2.job_id).state is JobState.REFUNDED
    assert_nothing_lost(net)


def test_a_vote_nobody_casts_is_a_draw_and_the_job_is_refunded_unslashed(net: Network) -> None:
    d = net.deployment
    truth = _trace(2)
    run, node = run_optimistic(net, net.clients[0], truth)
    challenger = _others(net, node)[0]
    stake_before = d.nodes.node(addr(node)).stake
    game_id, _ = challenge(net, run.job_id, challenger)
    play(net, game_id, defender=truth, challenger=truth.with_op(2, h("x")))
    game = d.disputes.game(game_id)
    assert game.phase is GamePhase.VOTE
    past_deadline(net, game.deadline)
    d.disputes.timeout(game_id, sender=addr(challenger))
    assert d.disputes.game(game_id).outcome is GameOutcome.DRAW
    assert d.disputes.owed(addr(challenger)) == d.params.snapshot().challenge_bond
    assert d.nodes.node(addr(node)).stake == stake_before
    past_deadline(net, d.market.job(run.job_id).finalize_after)
    d.market.finalize(run.job_id, sender=addr(net.clients[0]))
    assert d.market.job(run.job_id).state is JobState.REFUNDED
    assert_nothing_lost(net)


def test_moves_are_refused_out_of_turn_and_from_the_wrong_party(net: Network) -> None:
    d = net.deployment
    truth = _trace(8)
    run, node = run_optimistic(net, net.clients[0], truth)
    challenger, juror = _others(net, node)[:2]
    with pytest.raises(Conflicted):
        challenge(net, run.job_id, node)
    with pytest.raises(NotStaked):
        challenge(net, run.job_id, net.clients[0])
    game_id, _ = challenge(net, run.job_id, challenger)
    with pytest.raises(AlreadyChallenged):
        challenge(net, run.job_id, challenger)
    with pytest.raises(NotYourMove):
        d.disputes.respond(game_id, True, sender=addr(challenger))
    with pytest.raises(NotYourMove):
        d.disputes.bisect(game_id, truth.links[4], sender=addr(challenger))
    d.disputes.bisect(game_id, truth.links[4], sender=addr(node))
    with pytest.raises(NotYourMove):
        d.disputes.bisect(game_id, truth.links[4], sender=addr(node))
    with pytest.raises(NotYourMove):
        d.disputes.reveal_step(game_id, truth.step_hash(1), sender=addr(node))
    play(net, game_id, defender=truth, challenger=truth.with_op(8, h("x")))
    with pytest.raises(Conflicted):
        d.disputes.vote(game_id, False, sender=addr(challenger))
    with pytest.raises(Conflicted):
        d.disputes.vote(game_id, True, sender=addr(node))
    assert d.disputes.is_juror(game_id, addr(juror))


def test_a_split_committee_fills_up_and_the_vote_window_decides(net: Network) -> None:
    d = net.deployment
    s = d.params.snapshot()
    d.params.set_disputes(
        s.challenge_bond,
        s.move_timeout,
        s.vote_window,
        2,
        s.dispute_winner_bps,
        s.dispute_committee_bps,
        sender=addr(net.deployer),
    )
    truth = _trace(1)
    run, node = run_optimistic(net, net.clients[0], truth)
    challenger = _others(net, node)[0]
    game_id, _ = challenge(net, run.job_id, challenger)
    play(net, game_id, defender=truth, challenger=truth.with_output(h("x")))
    a, b, c = _others(net, node, challenger)[:3]
    d.disputes.vote(game_id, True, sender=addr(a))
    d.disputes.vote(game_id, False, sender=addr(b))
    with pytest.raises(CommitteeFull):
        d.disputes.vote(game_id, True, sender=addr(c))
    past_deadline(net, d.disputes.game(game_id).deadline)
    d.disputes.timeout(game_id, sender=addr(c))
    assert d.disputes.game(game_id).outcome is GameOutcome.DRAW
    assert_nothing_lost(net)


def test_a_claim_cannot_be_challenged_after_its_window_or_once_paid(net: Network) -> None:
    d = net.deployment
    run, node = run_optimistic(net, net.clients[0], _trace())
    challenger = _others(net, node)[0]
    past_deadline(net, d.market.job(run.job_id).finalize_after)
    with pytest.raises(ChallengeClosed):
        challenge(net, run.job_id, challenger)
    d.market.finalize(run.job_id, sender=addr(net.clients[0]))
    with pytest.raises(NotChallengeable):
        challenge(net, run.job_id, challenger)


# -- sampled audits of signed jobs -------------------------------------------


def _signed(net: Network, output: Hash32) -> tuple[JobId, Address]:
    d = net.deployment
    job_id, _ = d.market.request(net.model_id, h("in"), Mode.SIGNED, 1, sender=addr(net.clients[0]))
    (node,) = drawn_nodes(net, job_id, 1)
    d.market.submit_receipt(
        sign_for(net, node, job_id, h("in"), output), sender=addr(net.clients[0])
    )
    return job_id, addr(node)


def test_the_audit_probability_meets_the_deterrence_condition_with_margin(net: Network) -> None:
    d = net.deployment
    s = d.params.snapshot()
    job_id, node = _signed(net, h("out"))
    escrow = d.market.job(job_id).escrow
    fee_share = escrow - escrow * s.owner_bps // BPS - escrow * s.treasury_bps // BPS
    slash = d.nodes.bonded(node) * s.slash_fault_bps // BPS
    p = d.market.claim_of(job_id).audit_bps
    assert p == min(
        BPS, max(s.audit_bps, -(-s.audit_margin_bps * fee_share // (slash + fee_share)))
    )
    # p * (slash + forfeited fee) > what cheating saves (at most the fee share), twice over.
    assert p * (slash + fee_share) >= 2 * fee_share * BPS
    # A node with little at stake is audited more often: its slash deters less.
    d.params.set_slash(10, s.slash_noshow_bps, sender=addr(net.deployer))
    job_id, node = _signed(net, h("out"))
    assert d.market.claim_of(job_id).audit_bps > p


def test_a_signed_job_the_audit_draws_is_held_and_can_be_disputed(net: Network) -> None:
    d = net.deployment
    s = d.params.snapshot()
    d.params.set_audit(BPS, s.audit_margin_bps, sender=addr(net.deployer))  # p = 100 %
    truth = synthetic_trace(MODEL_CID, h("in"), 0)
    job_id, node = _signed(net, h("wrong output"))
    net.chain.advance_time(0)  # the next block fixes the draw
    claim = d.market.claim_of(job_id)
    assert claim.audited and claim.audit_bps == BPS and claim.ops == 0
    with pytest.raises(TooEarly):
        d.market.finalize(job_id, sender=addr(net.clients[0]))
    auditor = next(n for n in net.nodes if addr(n) != node)
    game_id, _ = challenge(net, job_id, auditor)
    game = d.disputes.game(game_id)
    assert game.phase is GamePhase.STEP and (game.lo, game.hi) == (0, 1)  # one step: the model
    lie = truth.with_output(h("wrong output"))
    played = play(
        net,
        game_id,
        defender=lie,
        challenger=truth,
        judge=_honest_judge(truth),
        jurors=_others(net, node, auditor),
    )
    assert played.rounds == 0 and played.step == 1
    assert d.disputes.game(game_id).outcome is GameOutcome.CHALLENGER
    assert d.market.job(job_id).state is JobState.REFUNDED
    assert_nothing_lost(net)


def test_a_signed_job_the_audit_skips_is_paid_at_once_and_cannot_be_disputed(
    net: Network,
) -> None:
    d = net.deployment
    s = d.params.snapshot()
    d.params.set_audit(0, BPS, sender=addr(net.deployer))  # p = F / (S + F): under 1 %
    for _ in range(20):
        job_id, node = _signed(net, h("out"))
        net.chain.advance_time(0)
        if not d.market.claim_of(job_id).audited:
            break
    else:
        pytest.fail("20 signed jobs in a row were drawn for audit at p < 1 %")
    auditor = next(n for n in net.nodes if addr(n) != node)
    with pytest.raises(NotAudited):
        challenge(net, job_id, auditor)
    assert d.market.finalizable(job_id)
    d.market.finalize(job_id, sender=addr(net.clients[0]))
    assert d.market.job(job_id).state is JobState.PAID
    del s
    assert_nothing_lost(net)


def test_the_audit_draw_follows_the_block_hash(net: Network) -> None:
    """Over many jobs at p = 50 % both outcomes occur: the draw is not constant."""
    d = net.deployment
    s = d.params.snapshot()
    d.params.set_audit(5_000, s.audit_margin_bps, sender=addr(net.deployer))
    drawn = []
    for _ in range(16):
        job_id, _ = _signed(net, h("out"))
        net.chain.advance_time(0)
        drawn.append(d.market.claim_of(job_id).audited)
    assert any(drawn) and not all(drawn)
