"""Dead-lettered messages back into service: a message in a dead message queue remembers
the queue it died in (`dead_from`); re-queueing puts it back there as a fresh delivery."""

from __future__ import annotations

import uuid

from django.db import transaction

from meshsite.errors import Invalid
from meshsite.platform.models import ServiceInstance

from .. import store
from ..models import Message, Queue
from ..selectors import queue_get


@transaction.atomic
def dead_letters_requeue(*, instance: ServiceInstance, queue_name: str, message_ids: list[str] | None = None) -> int:
    """Move dead messages of `queue_name` (all, or those with the given ids) back to the
    queues they died in. Returns how many moved; a source queue deleted since is recreated."""
    dmq = queue_get(instance=instance, name=queue_name)
    dead = Message.objects.select_for_update(skip_locked=True).filter(queue=dmq).exclude(dead_from="")
    if message_ids is not None:
        dead = dead.filter(uuid__in=_uuids(message_ids))
    moved = 0
    for message in dead.order_by("id"):
        source, _ = Queue.objects.get_or_create(instance=instance, name=message.dead_from)
        store.requeue(message=message, target=source)
        moved += 1
    return moved


def _uuids(values: list[str]) -> list[uuid.UUID]:
    try:
        return [uuid.UUID(value) for value in values]
    except (ValueError, TypeError, AttributeError):
        raise Invalid("messageIds must be a list of message ids") from None
