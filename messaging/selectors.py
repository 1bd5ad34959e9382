"""Reads for the messaging API: queues of an instance with their counters, and webhook
subscriptions with their delivery log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from meshsite.errors import Invalid, NotFound
from meshsite.platform.models import ServiceInstance

from .descriptor import Rules
from .models import DeliveryAttempt, Message, Queue, Subscription, WebhookSubscription
from .names import InvalidName, prefixes, validate_queue_name


@dataclass(frozen=True)
class QueueStats:
    message_count: int = 0
    size_in_bytes: int = 0
    unacknowledged: int = 0
    oldest: datetime | None = None  # the oldest message's creation time (the cockpit's "oldest age")


def rules_for(instance: ServiceInstance) -> Rules:
    return Rules(instance.parameters["rules"])


def queue_get(*, instance: ServiceInstance, name: str) -> Queue:
    try:
        validate_queue_name(name)
    except InvalidName as error:
        raise Invalid(str(error)) from None
    try:
        return Queue.objects.get(instance=instance, name=name)
    except Queue.DoesNotExist:
        raise NotFound("Queue does not exist") from None


def queues_list(*, instance: ServiceInstance) -> list[Queue]:
    return list(Queue.objects.filter(instance=instance).order_by("name"))


def _stats_query(now: datetime):  # type: ignore[no-untyped-def]
    return Message.objects.values("queue_id").annotate(
        count=Count("id"), size=Sum("size"), unacked=Count("id", filter=Q(locked_until__gt=now)),
        oldest=Min("created_at"),
    )


def queues_stats(*, queues: Sequence[Queue]) -> dict[int, QueueStats]:
    """Counters of many queues in one grouped query (no query per queue)."""
    rows = _stats_query(timezone.now()).filter(queue_id__in=[queue.pk for queue in queues])
    stats = {
        row["queue_id"]: QueueStats(row["count"], row["size"] or 0, row["unacked"], row["oldest"]) for row in rows
    }
    return {queue.pk: stats.get(queue.pk, QueueStats()) for queue in queues}


def queue_stats(*, queue: Queue) -> QueueStats:
    return queues_stats(queues=[queue])[queue.pk]


def subscriptions_of(*, queue: Queue) -> list[Subscription]:
    return list(queue.subscriptions.order_by("pattern"))


def queues_subscribed_to(*, subaccount_id: int, topic: str) -> list[Queue]:
    """The queues whose subscriptions match `topic`, found through the prefix index."""
    candidates = Subscription.objects.filter(
        subaccount_id=subaccount_id, prefix__in=prefixes(topic)
    ).select_related("queue")
    matched = {sub.queue_id: sub.queue for sub in candidates if sub.matches(topic)}
    return [matched[key] for key in sorted(matched)]


def messages_browse(*, queue: Queue, limit: int = 100) -> list[Message]:
    """The oldest messages of a queue, without consuming them (a meshsite extension)."""
    return list(Message.objects.filter(queue=queue).defer("payload").order_by("id")[:limit])


def topics_stored(*, instance: ServiceInstance) -> list[tuple[str, str]]:
    """(topic, queue) of the messages stored now that were published to a topic.

    No index serves `address`: this reads every message row of the instance's queues. Measured
    on PostgreSQL (one queue, 50 topics): 5 ms at 10,000 messages, 37 ms at 100,000. Fine for a
    document fetched by hand or a cockpit helper asked as the user types; not for the hot path.
    """
    rows = (
        Message.objects.filter(queue__instance=instance, address__startswith="topic:")
        .values_list("address", "queue__name")
        .distinct()
        .order_by("address", "queue__name")
    )
    return [(address.removeprefix("topic:"), queue) for address, queue in rows]


def webhook_get(*, instance: ServiceInstance, name: str) -> WebhookSubscription:
    subscription = WebhookSubscription.objects.select_related("queue").filter(instance=instance, name=name).first()
    if subscription is None:
        raise NotFound("Subscription does not exist")
    return subscription


def webhooks_list(*, instance: ServiceInstance) -> list[WebhookSubscription]:
    return list(WebhookSubscription.objects.filter(instance=instance).select_related("queue").order_by("name"))


def webhook_attempts(*, subscription: WebhookSubscription, limit: int) -> list[DeliveryAttempt]:
    """The subscription's latest push attempts, newest first (the delivery log)."""
    return list(subscription.attempts.order_by("-attempted_at", "-id")[:limit])
