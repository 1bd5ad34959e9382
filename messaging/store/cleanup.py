"""Cleanup in bounded batches: expired messages of respectTtl queues and messages whose
redeliveries are exhausted leave their queue for its dead message queue (or are dropped).

Each batch is one statement in its own short transaction that locks only the rows it moves
(SKIP LOCKED past anything a consumer holds), so consumers and publishers of the same queue
are never blocked behind a cleanup, and a large backlog is worked off batch by batch instead
of in one long statement.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Q

from ..metrics.meter import meter_count
from ..models import Message, Queue
from . import rules, statements
from .claims import EXHAUSTED
from .execute import postgres, run

log = logging.getLogger(__name__)

EXPIRED = "message expired (respectTtl)"


def expire_batch(*, queue: Queue, now: datetime, limit: int) -> int:
    """Move up to `limit` messages of a respectTtl queue that expired by `now` and nobody holds."""
    return _batch(queue, rules.expired_sql(now), rules.expired_q(now), "expires_at", limit, EXPIRED)


def exhaust_batch(*, queue: Queue, now: datetime, limit: int) -> int:
    """Move up to `limit` messages of a queue with maxRedeliveryCount that nobody consumes any
    more (a claim dead-letters the ones it meets; these are the ones it does not)."""
    exhausted, params = rules.exhausted_sql(queue.max_redelivery_count)
    free, free_params = rules.free_sql(now)
    condition = (f"{exhausted} AND {free}", [*params, *free_params])
    return _batch(queue, condition, rules.exhausted_q() & rules.free_q(now), "id", limit, EXHAUSTED)


def _batch(queue: Queue, condition: rules.Fragment, same: Q, order: str, limit: int, reason: str) -> int:
    target = None
    if queue.dead_msg_queue:
        target = _dead_msg_queue(queue, same)
        if target is None:
            return 0
    statement = statements.dead_letter_batch(
        postgres=postgres(), queue_id=queue.pk, condition=condition, order=order, limit=limit,
        target_id=target.pk if target else None, reason=reason, dead_from=queue.name,
    )
    moved = run(statement)  # in autocommit: a transaction of its own
    meter_count(queue.pk, "dead_lettered", moved)
    if moved and target is None:
        log.info("dropped %d messages from %s: %s (no deadMsgQueue)", moved, queue.name, reason)
    return moved


def _dead_msg_queue(queue: Queue, condition: Q) -> Queue | None:
    """The queue's deadMsgQueue. A missing one is created rather than losing the messages,
    but only when there is something to move (`condition`, the batch's rule as a Q)."""
    target = Queue.objects.filter(instance_id=queue.instance_id, name=queue.dead_msg_queue).first()
    if target is not None or not Message.objects.filter(condition, queue_id=queue.pk).exists():
        return target
    return Queue.objects.get_or_create(instance_id=queue.instance_id, name=queue.dead_msg_queue)[0]


def purge_batch(*, queue_id: int, limit: int) -> int:
    """Delete up to `limit` of a queue's messages, oldest first, held or not: a purge is the
    operator's word that none of them matter (a consumer's later settle finds nothing)."""
    ids = list(Message.objects.filter(queue_id=queue_id).order_by("id").values_list("id", flat=True)[:limit])
    if not ids:
        return 0
    deleted, _ = Message.objects.filter(id__in=ids).delete()
    return deleted
