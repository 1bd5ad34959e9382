"""The buffer: stored events processing has not folded yet (models.BufferedEvent)."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from .models import BufferedEvent


def buffer_add(*, instance_id: UUID, event_ids: Iterable[int]) -> None:
    """Put these events (new, or replaced by a re-send) into the instance's buffer; call in
    the transaction that stored them, so an event is never stored without being buffered."""
    BufferedEvent.objects.bulk_create([BufferedEvent(event_id=pk, instance_id=instance_id) for pk in event_ids],
                                      ignore_conflicts=True)


def buffer_count(*, instance_id: UUID) -> int:
    return BufferedEvent.objects.filter(instance_id=instance_id).count()
