"""Accounting checks over a deployment: every token the contracts hold is accounted for, and
every ended job paid out or refunded exactly its escrow."""

from __future__ import annotations

from typing import Any

from verinet.chain.deploy import Deployment
from verinet.protocol.types import JobState
from verinet.types import JobId


def audit(deployment: Deployment) -> dict[str, int]:
    """Token balances against the contracts' books. Raises `AssertionError` if anything is off."""
    d = deployment
    market_balance = d.token.balance_of(d.market.address)
    escrow, owed = d.market.total_escrow(), d.market.total_owed()
    registry_balance, bonded = d.token.balance_of(d.nodes.address), d.nodes.total_bonded()
    if market_balance != escrow + owed or registry_balance != bonded:
        raise AssertionError(
            f"escrow audit failed: market holds {market_balance} for {escrow}+{owed}, "
            f"registry holds {registry_balance} for {bonded}"
        )
    game_balance = d.token.balance_of(d.disputes.address)
    bonds, game_owed = d.disputes.total_bonds(), d.disputes.total_owed()
    if game_balance != bonds + game_owed:
        raise AssertionError(
            f"dispute audit failed: the game holds {game_balance} for {bonds}+{game_owed}"
        )
    return {
        "game_balance": game_balance,
        "market_balance": market_balance,
        "open_escrow": escrow,
        "owed": owed,
        "registry_balance": registry_balance,
        "bonded": bonded,
    }


def audit_jobs(deployment: Deployment, *, now: int | None = None) -> dict[str, Any]:
    """Per job: a PAID job's payouts + owner share + treasury share, or a REFUNDED job's
    refund, equal its escrow; no open job is past its deadline, nor a held one past its
    hold (when `now` is given, someone should have finalized it). Returns counts by state;
    raises `AssertionError` otherwise."""
    market = deployment.market
    paid = {e.args["job_id"]: e.args for e in market.history("JobPaid")}
    refunded = {e.args["job_id"]: e.args for e in market.history("JobRefunded")}
    counts: dict[str, int] = {}
    for job_id in range(1, market.job_count() + 1):
        job = market.job(JobId(job_id))
        counts[job.state.name] = counts.get(job.state.name, 0) + 1
        if job.state == JobState.PAID:
            p = paid[job_id]
            total = p["node_amount"] * p["winners"] + p["owner_amount"] + p["treasury_amount"]
            if total != job.escrow:
                raise AssertionError(f"job {job_id}: paid {total} of escrow {job.escrow}")
        elif job.state == JobState.REFUNDED:
            if refunded[job_id]["amount"] != job.escrow:
                raise AssertionError(f"job {job_id}: refunded {refunded[job_id]['amount']}")
        elif now is not None and now > max(job.reveal_deadline, job.finalize_after) + 60:
            raise AssertionError(f"job {job_id} is still {job.state.name} past its deadline")
    return counts
