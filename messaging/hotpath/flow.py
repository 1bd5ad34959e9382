"""maxDeliveredUnackedMsgsPerFlow without a count per consume.

Counting what a consumer holds means walking the queue's recently claimed rows, acknowledged
ones included until vacuum removes them: measured, that count made a claim 5x slower than
the claim itself. Far below the limit the answer is always "go on", so each process keeps,
per (queue, consumer), the last exact count and how many it claimed since; while that sum is
under half the limit and the count is younger than MESH_FLOW_RECOUNT_MS, the claim runs
without the check. Near the limit, every claim is checked exactly, in the claim statement
itself, as on the DRF path. Other processes' claims since the last count are what it cannot
see: the limit can be passed only if they claim more than half of it within that interval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings


@dataclass
class _Seen:
    counted_at: float
    held: int
    claimed_since: int = 0


class FlowGate:
    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.interval = settings.MESH_FLOW_RECOUNT_MS / 1000
        self.seen: dict[tuple[int, str], _Seen] = {}

    def needs_check(self, queue_id: int, consumer: str, limit: int) -> bool:
        seen = self.seen.get((queue_id, consumer))
        if seen is None or time.monotonic() - seen.counted_at >= self.interval:
            return True
        return 2 * (seen.held + seen.claimed_since) >= limit

    def counted(self, queue_id: int, consumer: str, held: int) -> None:
        if len(self.seen) >= self.size:
            self.seen.clear()
        self.seen[(queue_id, consumer)] = _Seen(time.monotonic(), held)

    def claimed(self, queue_id: int, consumer: str) -> None:
        seen = self.seen.get((queue_id, consumer))
        if seen is not None:
            seen.claimed_since += 1
