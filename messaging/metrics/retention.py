"""Retention of the meter's minutes: the periodic sweep deletes those older than
MESH_METER_RETENTION_HOURS. The totals (QueueCounter) stay, so /metrics is unaffected."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from ..models import QueueMinute

# Rows per DELETE: each its own short statement, so a backlog (the sweep was off for days)
# never becomes one long delete that holds back vacuum and the flushers' upserts.
BATCH = 5000
# At most this many batches per sweep; the next sweep goes on.
MAX_BATCHES = 20


def minutes_prune(*, now: datetime | None = None, batch: int = BATCH) -> int:
    """Delete minutes older than the retention, in batches; returns how many went."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.MESH_METER_RETENTION_HOURS)
    pruned = 0
    for _ in range(MAX_BATCHES):
        ids = list(QueueMinute.objects.filter(minute__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            break
        pruned += QueueMinute.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch:
            break
    return pruned
