"""No escrow left for nobody to end: the check the demo and the test suites run at the end.

Every job must end PAID or REFUNDED by its deadline. Nodes and clients finalize what they
see past it (`verinet.node.expiry`, `Client.finalize`); this reads every job from the market
and fails if one is still unsettled more than `grace` (a block) past the time anyone could
have ended it. A job held by a running dispute is not overdue: the game decides it first.
"""

from __future__ import annotations

import time

from verinet.chain.deploy import Deployment
from verinet.protocol.expiry import finalizable_from, overdue
from verinet.protocol.types import Job
from verinet.types import JobId

BLOCK = 1
"""Seconds of chain time in one devnet block: the grace a finalize gets after a deadline."""


def overdue_jobs(
    deployment: Deployment, *, now: int, grace: int = BLOCK, among: list[JobId] | None = None
) -> list[Job]:
    """Jobs (all, or those `among`) unsettled more than `grace` past their deadline at `now`."""
    market = deployment.market
    ids = among if among is not None else [JobId(i) for i in range(1, market.job_count() + 1)]
    found = []
    for job_id in ids:
        job = market.job(job_id)
        if overdue(job, now, grace=grace) and market.finalizable(job_id):
            found.append(job)
    return found


def assert_none_overdue(deployment: Deployment, *, grace: int = BLOCK, wait: float = 0.0) -> None:
    """Fail if a job is unsettled past its deadline plus `grace`. With `wait` (seconds), a
    running network gets that long to end the ones found overdue (nodes finalize on their
    next look, which on a loaded machine may come a few seconds late); nothing here
    finalizes anything."""
    chain = deployment.chain
    stuck = overdue_jobs(deployment, now=chain.timestamp(), grace=grace)
    until = time.monotonic() + wait
    while stuck and time.monotonic() < until:
        time.sleep(0.1)
        stuck = overdue_jobs(
            deployment, now=chain.timestamp(), grace=grace, among=[j.job_id for j in stuck]
        )
    if stuck:
        now = chain.timestamp()
        listed = ", ".join(
            f"job {j.job_id} {j.state.name} since chain time {finalizable_from(j)}" for j in stuck
        )
        raise AssertionError(
            f"escrow left unsettled past its deadline at chain time {now}: {listed}"
        )
