"""Capacity and flow limits: what a publish may add and how much a consumer may hold.

Queue counters are not kept on the queue row: a hot row would serialize every publisher on
one lock, so limits are checked by counting, and only on queues that have a limit -- an
unlimited queue (the common case) costs no count per publish.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db.models import Count, Sum

from meshsite.errors import LimitReached, TooLarge

from ..models import Message, Queue
from . import rules
from .queues import StoredQueue


def has_capacity_limits(queue: StoredQueue) -> bool:
    return bool(queue.max_queue_size_in_bytes or queue.max_queue_message_count)


def check_message_size(queues: Sequence[StoredQueue], size: int) -> None:
    for queue in queues:
        if queue.max_message_size_in_bytes and size > queue.max_message_size_in_bytes:
            raise TooLarge(f"Message exceeds the maximum message size of queue {queue.name}")


def check_capacity(queues: Sequence[StoredQueue], size: int) -> None:
    """Refuse a publish of `size` bytes that would overfill a limited queue. Inside the
    publish's transaction, which it makes wait for the other publishers of those queues."""
    limited = [queue for queue in queues if has_capacity_limits(queue)]
    if not limited:
        return
    # Serialize the publishers of limited queues (in id order, so fan-outs cannot deadlock);
    # NO KEY UPDATE leaves the foreign-key locks of concurrent inserts unblocked.
    list(Queue.objects.select_for_update(no_key=True).filter(pk__in=[q.pk for q in limited]).order_by("pk"))
    rows = (
        Message.objects.filter(queue_id__in=[q.pk for q in limited])
        .values("queue_id").annotate(count=Count("id"), size=Sum("size"))
    )
    held = {row["queue_id"]: (row["count"], row["size"] or 0) for row in rows}
    for queue in limited:
        count, bytes_held = held.get(queue.pk, (0, 0))
        count_full = queue.max_queue_message_count and count + 1 > queue.max_queue_message_count
        size_full = queue.max_queue_size_in_bytes and bytes_held + size > queue.max_queue_size_in_bytes
        if count_full or size_full:
            raise LimitReached(f"Queue {queue.name} is full", headers={"Retry-After": "1"})


def flow_limit(queue: StoredQueue, qos: int) -> int:
    """maxDeliveredUnackedMsgsPerFlow for a claim: it counts what qos 1 holds; a qos-0
    consume holds nothing."""
    return queue.max_delivered_unacked_msgs_per_flow if qos == 1 else 0


def unacked_refusal(held: int, limit: int) -> LimitReached | None:
    """The answer to a consumer that holds `held` of at most `limit` unacknowledged messages."""
    if not limit or held < limit:
        return None
    return LimitReached(
        f"{held} messages are delivered and unacknowledged (maxDeliveredUnackedMsgsPerFlow); "
        "acknowledge some first"
    )


def check_unacked(queue: StoredQueue, consumer: str, now: datetime) -> None:
    """maxDeliveredUnackedMsgsPerFlow for a consumer that may hold messages across requests
    (REST): refuse another delivery while it holds the limit."""
    limit = queue.max_delivered_unacked_msgs_per_flow
    if not limit:
        return
    held = Message.objects.filter(rules.held_by_q(consumer, now), queue_id=queue.pk)[:limit].count()
    refusal = unacked_refusal(held, limit)
    if refusal is not None:
        raise refusal


def flow_cap(queue: StoredQueue, wanted: int) -> int:
    """The same limit for a consumer that settles everything it holds before it claims again
    (the webhook engine): no count needed, only a cap on one claim."""
    limit = queue.max_delivered_unacked_msgs_per_flow
    return min(wanted, limit) if limit else wanted
