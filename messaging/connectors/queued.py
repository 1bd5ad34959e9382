"""Queued notifications (their delivery failed for good) back into delivery, on demand."""

from __future__ import annotations

import uuid

from django.db import transaction

from meshsite.errors import Invalid

from ..models import ConnectorInstance
from ..services.deadletters import dead_letters_requeue
from .delivery import delivery_resume, queue_names
from .selectors import notifications_queued


def notifications_redeliver(*, instance: ConnectorInstance, notification_ids: list[str] | None = None) -> int:
    """Queued notifications (all, or these) back to the delivery queue as fresh deliveries,
    with the retry gate opened. Returns how many went back."""
    queued = notifications_queued(instance)
    if notification_ids is not None:
        queued = queued.filter(notification_id__in=_uuids(notification_ids))
    uuids = [str(u) for u in queued.values_list("message_uuid", flat=True)]
    if not uuids:
        return 0
    with transaction.atomic():
        moved = dead_letters_requeue(instance=instance.service_instance, queue_name=queue_names(instance)[1],
                                     message_ids=uuids)
        delivery_resume(instance=instance)
    return moved


def _uuids(values: list[str]) -> list[uuid.UUID]:
    try:
        return [uuid.UUID(str(value)) for value in values]
    except ValueError:
        raise Invalid("ids must be notification ids") from None
