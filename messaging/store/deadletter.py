"""Dead-lettering and re-queueing: a message moves between queues as a fresh delivery."""

from __future__ import annotations

import logging
from typing import Any

from ..metrics.meter import meter_count_after_commit
from ..models import Message, Queue
from .queues import StoredQueue

log = logging.getLogger(__name__)

# A message that changes queue starts over there: not held by anyone, never delivered.
UNCLAIMED: dict[str, Any] = {
    "locked_until": None, "available_at": None, "claim_id": None, "claimed_by": "", "delivery_count": 0,
}


def dead_letter(*, message: Message, queue: StoredQueue, reason: str, removed: bool = False) -> None:
    """Move a message to its queue's deadMsgQueue, or drop it when the queue has none.

    Runs inside the caller's transaction with the message row locked (claimed by the caller),
    or, with `removed`, after a qos-0 claim deleted the row: then it is written again, into
    the dead message queue. A missing dead message queue is created rather than losing the
    message.
    """
    meter_count_after_commit(queue.pk, "dead_lettered")
    if not queue.dead_msg_queue:
        log.info("dropping message %s from %s: %s (no deadMsgQueue)", message.uuid, queue.name, reason)
        if not removed:
            Message.objects.filter(pk=message.pk).delete()
        return
    target, _ = Queue.objects.get_or_create(instance_id=queue.instance_id, name=queue.dead_msg_queue)
    moved = {**UNCLAIMED, "queue_id": target.pk, "death_reason": reason[:200], "dead_from": queue.name}
    if removed:
        for name, value in moved.items():
            setattr(message, name, value)
        message.save(force_insert=True)
        return
    Message.objects.filter(pk=message.pk).update(**moved)


def requeue(*, message: Message, target: Queue) -> None:
    """Back into service in `target` (where it died), as a fresh delivery."""
    Message.objects.filter(pk=message.pk).update(queue=target, dead_from="", death_reason="", **UNCLAIMED)
