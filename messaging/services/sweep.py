"""The periodic sweep: moves expired messages (on respectTtl queues) and messages whose
redeliveries are exhausted to their dead message queue. Claims treat an expired lock as
free, so nothing here is needed for redelivery itself; the sweep keeps counters honest and
dead-letters what nobody consumes any more.

Queue by queue, in batches of MESH_SWEEP_BATCH, each its own short transaction (see
`messaging.store.cleanup`), until a queue has nothing left or the sweep has run for
MESH_SWEEP_INTERVAL: a backlog larger than that is worked off by the next sweeps, and a
sweep never overlaps the next one for long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from ..metrics.retention import minutes_prune
from ..models import Queue
from ..store import cleanup
from .connections import connections_forget_dead

Batch = Callable[..., int]


def queues_sweep(*, now: datetime | None = None, batch: int | None = None) -> int:
    now = now or timezone.now()
    connections_forget_dead(now=now)  # the quota of a server process that died
    minutes_prune(now=now)  # the meter's minutes past MESH_METER_RETENTION_HOURS
    limit = batch or settings.MESH_SWEEP_BATCH
    deadline = time.monotonic() + settings.MESH_SWEEP_INTERVAL
    moved = 0
    work: tuple[tuple[Batch, Queue], ...] = (
        *((cleanup.expire_batch, queue) for queue in Queue.objects.filter(respect_ttl=True)),
        *((cleanup.exhaust_batch, queue) for queue in Queue.objects.filter(max_redelivery_count__gt=0)),
    )
    for step, queue in work:
        while time.monotonic() < deadline:
            done = step(queue=queue, now=now, limit=limit)
            moved += done
            if done < limit:
                break
    return moved
