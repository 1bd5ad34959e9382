from __future__ import annotations

import logging

from ..models import Message, Queue

log = logging.getLogger(__name__)


def message_dead_letter(*, message: Message, queue: Queue, reason: str) -> None:
    """Move a message to its queue's deadMsgQueue, or drop it when the queue has none.

    Runs inside the caller's transaction with the message row locked. A missing dead
    message queue is created rather than losing the message.
    """
    if not queue.dead_msg_queue:
        log.info("dropping message %s from %s: %s (no deadMsgQueue)", message.uuid, queue.name, reason)
        Message.objects.filter(pk=message.pk).delete()
        return
    target, _ = Queue.objects.get_or_create(instance_id=queue.instance_id, name=queue.dead_msg_queue)
    Message.objects.filter(pk=message.pk).update(
        queue=target, locked_until=None, claim_id=None, claimed_by="", delivery_count=0,
        death_reason=reason[:200], dead_from=queue.name,
    )
