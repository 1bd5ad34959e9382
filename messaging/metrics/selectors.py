"""Reads of the meter's minutes, for the cockpit's rate charts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from meshsite.platform.models import ServiceInstance

from ..models import Queue, QueueMinute
from .meter import KINDS


@dataclass(frozen=True)
class QueueSeries:
    queue: str  # queue name
    minutes: list[datetime]  # oldest first, one per minute, `minutes` long, ending at the current minute
    published: list[int]
    consumed: list[int]
    acknowledged: list[int]
    delivered: list[int]
    delivery_failed: list[int]
    dead_lettered: list[int]


def minute_of(moment: datetime) -> datetime:
    """`moment` truncated to its minute, in UTC (what QueueMinute.minute holds)."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def queue_rates(*, instance: ServiceInstance, minutes: int = 60, now: datetime | None = None) -> list[QueueSeries]:
    """Every queue of `instance` (by name), each with its counts per minute for the last
    `minutes` minutes, zeros where nothing was counted: one query for the queues and one
    for all their minutes."""
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    end = minute_of(now or timezone.now())
    axis = [end - timedelta(minutes=minutes - 1 - step) for step in range(minutes)]
    position = {minute: index for index, minute in enumerate(axis)}
    queues = list(Queue.objects.filter(instance=instance).order_by("name").values_list("pk", "name"))
    series = {pk: {kind: [0] * minutes for kind in KINDS} for pk, _ in queues}
    rows = QueueMinute.objects.filter(queue__instance=instance, minute__gte=axis[0], minute__lte=end)
    for queue_id, minute, *counts in rows.values_list("queue_id", "minute", *KINDS):
        index = position.get(minute)
        if index is None or queue_id not in series:  # a queue created since the first query
            continue
        for kind, n in zip(KINDS, counts, strict=True):
            series[queue_id][kind][index] = n
    return [QueueSeries(queue=name, minutes=list(axis), **series[pk]) for pk, name in queues]
