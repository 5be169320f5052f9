"""Ending jobs that nobody else ends: any job past its deadline is finalized by the next node
that sees it.

The nodes that took part in a job finalize it themselves (`Node._settle`). A job that no node
took (its input never came, every node refused it, nobody serves its model) would sit OPEN
with its requester's money until someone called `finalize`; so would a held result whose
node went away. Each node therefore keeps the deadline of every job it sees requested (any
model, not only those it serves) and finalizes the ones still open past it. A slow scan over
the job ids finds those requested while the node was down.

Work per tick is bounded: at most `FINALIZE_PER_TICK` finalize transactions and
`READS_PER_TICK` job reads, and one scan batch a `SCAN_EVERY` seconds.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from verinet.chain.contracts import InferenceMarket
from verinet.errors import DisputeOpen, JobNotOpen, TooEarly
from verinet.protocol.expiry import finalizable_from
from verinet.types import Address, JobId, TxHash

FINALIZE_PER_TICK = 4
READS_PER_TICK = 16
SCAN_EVERY = 2.0
"""Seconds between batches of the scan over all job ids (it only finds what events missed)."""
RETRY_AFTER = 5
"""Chain seconds before a job that could not be finalized yet (a dispute is running) is
looked at again."""


class ExpirySweep:
    """The deadlines of unsettled jobs, and the finalize transactions they are owed."""

    def __init__(self, market: InferenceMarket, sender: Address) -> None:
        self.market = market
        self.sender = sender
        self._due: list[tuple[int, JobId]] = []  # (chain time it may be finalized, job)
        self._known: dict[JobId, int] = {}
        self._scan_next = self._floor = 1  # every job below the floor has ended
        self._scanned = 0.0

    def requested(self, job_id: JobId, deadline: int) -> None:
        """A job was requested (or found unsettled) that may be finalized from `deadline`."""
        if self._known.get(job_id) == deadline:
            return
        self._known[job_id] = deadline
        heapq.heappush(self._due, (deadline, job_id))

    def ended(self, job_id: JobId) -> None:
        self._known.pop(job_id, None)  # its heap entry is skipped when it comes up

    def sweep(self, clock: Callable[[], int]) -> list[tuple[JobId, TxHash]]:
        """Finalize jobs past their deadline; returns those this node finalized, with the
        transaction. `clock` reads the chain's time (only called when there is work)."""
        reads = READS_PER_TICK
        if time.monotonic() - self._scanned >= SCAN_EVERY:
            self._scanned = time.monotonic()
            reads -= self._scan(READS_PER_TICK // 2)
        if not self._due:
            return []
        now = clock()
        done: list[tuple[JobId, TxHash]] = []
        while self._due and self._due[0][0] <= now and reads > 0:
            if len(done) >= FINALIZE_PER_TICK:
                break
            deadline, job_id = heapq.heappop(self._due)
            if self._known.get(job_id) != deadline:
                continue  # ended, or re-queued under a later deadline
            reads -= 1
            job = self.market.job(job_id)
            due = finalizable_from(job)
            if due is None:
                self.ended(job_id)
                continue
            if due > now:  # a receipt came in: its hold is the deadline now
                self._known.pop(job_id)
                self.requested(job_id, due)
                continue
            if not self.market.may_finalize(job_id):  # a dispute or an audit hold
                self._known.pop(job_id)
                self.requested(job_id, now + RETRY_AFTER)
                continue
            self.ended(job_id)
            try:
                done.append((job_id, self.market.finalize(job_id, sender=self.sender).tx_hash))
            except JobNotOpen:
                pass  # another node, or the requester, was first
            except (TooEarly, DisputeOpen):
                self.requested(job_id, now + RETRY_AFTER)
        return done

    def _scan(self, budget: int) -> int:
        """Read up to `budget` job ids from where the last scan stopped (wrapping around) and
        queue the unsettled ones; returns how many reads it spent."""
        count = self.market.job_count()
        if count == 0:
            return 1
        spent = 1
        for _ in range(min(budget, count - self._floor + 1)):
            if self._scan_next > count:
                self._scan_next = self._floor
            job_id = JobId(self._scan_next)
            self._scan_next += 1
            if job_id in self._known:
                continue
            spent += 1
            due = finalizable_from(self.market.job(job_id))
            if due is not None:
                self.requested(job_id, due)
            elif job_id == self._floor:  # an ended job never reopens: no need to read it again
                self._floor += 1
        return spent
