"""The periodic sweep: moves expired messages (on respectTtl queues) and messages whose
redeliveries are exhausted to their dead message queue. Claims treat an expired lock as
free, so nothing here is needed for redelivery itself; the sweep keeps counters honest and
dead-letters what nobody consumes any more."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ..models import Message
from .deadletter import message_dead_letter


def queues_sweep(*, now: datetime | None = None, batch: int = 500) -> int:
    now = now or timezone.now()
    moved = 0
    free = Q(locked_until__isnull=True) | Q(locked_until__lte=now)
    sweeps = (
        ("message expired (respectTtl)", Q(queue__respect_ttl=True, expires_at__lte=now) & free),
        (
            "maxRedeliveryCount exceeded",
            Q(queue__max_redelivery_count__gt=0, locked_until__lte=now)
            & Q(delivery_count__gt=F("queue__max_redelivery_count")),
        ),
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
                message_dead_letter(message=message, queue=message.queue, reason=reason)
                moved += 1
    return moved
