"""When a job's escrow is due back: the chain time from which anyone may end it.

A job that is neither PAID nor REFUNDED holds its requester's money until somebody calls
`InferenceMarket.finalize`. The contract lets anyone do so once the job's deadline has passed:
an OPEN job at its reveal deadline (paid to a majority, or refunded), a SUBMITTED one when
its hold ends (unless a dispute over it is still running). Nodes, clients and the devnet's
checks all ask this one question, so they agree on which jobs are overdue.
"""

from __future__ import annotations

from verinet.protocol.types import Job, JobState


def finalizable_from(job: Job) -> int | None:
    """The chain time from which anyone may finalize `job`; None once it has ended (or for
    no job at all). A SUBMITTED job with an open dispute waits for the game as well."""
    if job.state == JobState.OPEN:
        return job.reveal_deadline
    if job.state == JobState.SUBMITTED:
        return job.finalize_after
    return None


def overdue(job: Job, now: int, *, grace: int = 0) -> bool:
    """Whether `job` is still unsettled more than `grace` seconds after it could be ended."""
    due = finalizable_from(job)
    return due is not None and now > due + grace
