"""Reads of the Event Mesh application's pages, each one grouped query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max
from django.utils import timezone

from meshsite.platform.models import Service, ServiceInstance, Subaccount

from ..models import Connection, DeliveryAttempt, Message, Queue, WebhookSubscription
from ..selectors import QueueStats, queues_stats, topics_stored
from ..services.connections import STALE


@dataclass(frozen=True)
class QueueRow:
    queue: Queue
    stats: QueueStats
    consumers: int  # live AMQP / JSON WebSocket connections consuming it now

    @property
    def oldest_age_seconds(self) -> float | None:
        oldest = self.stats.oldest
        return None if oldest is None else max((timezone.now() - oldest).total_seconds(), 0.0)


def message_clients(*, subaccount: Subaccount) -> list[ServiceInstance]:
    return list(subaccount.instances.filter(service=Service.EVENT_MESH, plan="default")
                .annotate(queue_count=Count("queues")).order_by("name"))


def is_subscribed(*, subaccount: Subaccount) -> bool:
    return subaccount.instances.filter(service=Service.EVENT_MESH, plan="standard").exists()


def queue_rows(*, instance: ServiceInstance, name: str | None = None) -> list[QueueRow]:
    """The instance's queues (or the one named) with their counters, topic subscription and
    webhook counts and consumers connected: three queries whatever the number of queues."""
    queues = Queue.objects.filter(instance=instance).annotate(
        subscription_count=Count("subscriptions", distinct=True), webhook_count=Count("webhooks", distinct=True),
    ).order_by("name")
    found = list(queues if name is None else queues.filter(name=name))
    stats = queues_stats(queues=found)
    consumers = consumers_by_queue(instance=instance)
    return [QueueRow(queue, stats[queue.pk], consumers.get(queue.pk, 0)) for queue in found]


def _live_connections(instance: ServiceInstance):  # type: ignore[no-untyped-def]
    return Connection.objects.filter(instance=instance, process__seen_at__gt=timezone.now() - STALE)


def connections_by_protocol(*, instance: ServiceInstance) -> dict[str, int]:
    rows = _live_connections(instance).values("protocol").annotate(n=Count("id"))
    return {row["protocol"]: row["n"] for row in rows}


def consumers_by_queue(*, instance: ServiceInstance) -> dict[int, int]:
    """Live connections consuming each queue. Read whole and counted here: an instance has
    at most MESH_MAX_CONNECTIONS_PER_INSTANCE of them, and SQLite cannot search JSON lists."""
    counts: dict[int, int] = {}
    for queue_ids in _live_connections(instance).values_list("queue_ids", flat=True):
        for queue_id in queue_ids:
            counts[queue_id] = counts.get(queue_id, 0) + 1
    return counts


def topics_seen(*, instance: ServiceInstance, limit: int = 200) -> list[str]:
    """Topics of the messages the instance's queues hold now (what a pattern may be tried on)."""
    return sorted({topic for topic, _ in topics_stored(instance=instance)})[:limit]


def dead_message_queues(*, instance: ServiceInstance) -> list[str]:
    named: set[str] = set(Queue.objects.filter(instance=instance).exclude(dead_msg_queue=None)
                .exclude(dead_msg_queue="").values_list("dead_msg_queue", flat=True))  # type: ignore[arg-type]
    holding = set(Message.objects.filter(queue__instance=instance).exclude(dead_from="")
                  .values_list("queue__name", flat=True).distinct())
    return sorted(named | holding)


def message_peek(*, instance: ServiceInstance, message_uuid: str) -> Message | None:
    return Message.objects.select_related("queue").filter(queue__instance=instance, uuid=message_uuid).first()


@dataclass(frozen=True)
class FailureGroup:
    webhook: str
    endpoint: str
    error: str
    status_code: int | None
    count: int
    last: datetime


def failed_deliveries(*, instance: ServiceInstance, hours: int = 24) -> list[FailureGroup]:
    since = timezone.now() - timedelta(hours=hours)
    rows = (DeliveryAttempt.objects.filter(subscription__instance=instance, succeeded=False, attempted_at__gte=since)
            .values("subscription__name", "subscription__endpoint", "error", "status_code")
            .annotate(n=Count("id"), last=Max("attempted_at")).order_by("-n", "-last")[:100])
    return [FailureGroup(row["subscription__name"], row["subscription__endpoint"], row["error"],
                         row["status_code"], row["n"], row["last"]) for row in rows]


def webhooks_of(*, instance: ServiceInstance) -> list[WebhookSubscription]:
    return list(WebhookSubscription.objects.filter(instance=instance).select_related("queue").order_by("name"))
