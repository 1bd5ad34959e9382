"""The periodic sweep: moves expired messages (on respectTtl queues) and messages whose
redeliveries are exhausted to their dead message queue. Claims treat an expired lock as
free, so nothing here is needed for redelivery itself; the sweep keeps counters honest and
dead-letters what nobody consumes any more."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .. import store
from ..models import Message
from ..store import rules


def queues_sweep(*, now: datetime | None = None, batch: int = 500) -> int:
    now = now or timezone.now()
    moved = 0
    sweeps = (
        ("message expired (respectTtl)", rules.expired_q(now)),
        (store.EXHAUSTED, rules.exhausted_q() & rules.free_q(now)),
    )
    for reason, condition in sweeps:
        with transaction.atomic():
            rows = (
                Message.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("queue")
                .filter(condition)
                .order_by("id")[:batch]
            )
            for message in rows:
                store.dead_letter(message=message, queue=message.queue, reason=reason)
                moved += 1
    return moved
