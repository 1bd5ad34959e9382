"""From event objects to notifications: the one path polling and vendor webhooks share.

`notifications_emit` pages the events (10 per notification for polling, 20 for webhooks,
each carrying the full raw body), stores every notification exactly as it will be sent,
queues it for the callback URL (messaging.connectors.delivery), publishes its events onto the
bound Event Mesh instance's topics, and starts the instance's formulas once per event object
-- all in the caller's transaction, so a notification exists with all of its effects or not
at all. Wake-ups go after the commit.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from meshsite.errors import MeshError

from ..metrics import meter_count_after_commit
from ..models import ConnectorInstance, ConnectorNotification, Message, NotificationSource, VendorEvent
from ..services.messages import Outgoing, message_publish_to_topic
from ..webhooks.waker import wake_after_publish
from . import formulas
from .normalize import Event
from .notifications import POLLING_PAGE, WEBHOOK_PAGE, paginate

log = logging.getLogger(__name__)

JSON = "application/json"
# A topic segment is [A-Za-z0-9-_.]; anything else a provider puts in an object type becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class TooManyNotifications(MeshError):
    status_code = 413
    code = "too_large"


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _pages(source: str) -> int:
    return POLLING_PAGE if source == NotificationSource.POLLING else WEBHOOK_PAGE


def _check_size(raw: Any, pages: int) -> None:
    # Every notification repeats the whole raw body (the contract), so one body makes
    # pages x its size; refuse what would flood the store rather than write it.
    # (Not MESH_MAX_MESSAGE_SIZE: that bounds what publishers send; a notification is ours,
    # and a provider body is bounded by MESH_CONNECTOR_MAX_BODY already.)
    size = len(_encode({"raw": raw}))
    if size * pages > settings.MESH_CONNECTOR_MAX_FANOUT_BYTES:
        raise TooManyNotifications(
            f"{pages} notifications of {size} bytes each exceed MESH_CONNECTOR_MAX_FANOUT_BYTES in all")


def notifications_emit(
    *, instance: ConnectorInstance, events: Sequence[Event], raw: Any, source: str,
    vendor_event: VendorEvent | None = None,
) -> list[ConnectorNotification]:
    """Store, queue and publish the notifications of `events`; nothing for no events.
    Raises TooManyNotifications (nothing written) when the copies of raw would be too large."""
    if not events:
        return []
    now = timezone.now()
    per = _pages(source)
    _check_size(raw, -(-len(events) // per))
    bodies = paginate(events, raw, per_notification=per, element_key=instance.element_key,
                      instance_id=instance.pk, instance_name=instance.name, new_id=lambda: str(uuid.uuid4()), now=now)
    with transaction.atomic():
        rows = [_row(instance, body, source, vendor_event, now) for body in bodies]
        _enqueue(instance, rows, now)
        for row, body in zip(rows, bodies, strict=True):
            row.topic_deliveries, row.topic_error = _publish(instance, body)
        ConnectorNotification.objects.bulk_create(rows)
        for row, body in zip(rows, bodies, strict=True):
            formulas.executions_start(notification=row, events=body["message"]["events"], now=now)
    return rows


def _row(instance: ConnectorInstance, body: dict[str, Any], source: str, vendor_event: VendorEvent | None,
         now: datetime) -> ConnectorNotification:
    return ConnectorNotification(
        connector_instance=instance, notification_id=uuid.UUID(body["id"]), source=source,
        vendor_event=vendor_event, created_at=now, body=_encode(body),
        events_count=len(body["message"]["events"]),
    )


def _enqueue(instance: ConnectorInstance, rows: list[ConnectorNotification], now: datetime) -> None:
    """Each notification as a message of the instance's delivery queue (with a callback URL)."""
    queue = instance.delivery_queue
    if queue is None or not instance.callback_url():
        return
    expires_at = now + timedelta(milliseconds=settings.MESH_MAX_EXPIRATION_MS)  # respectTtl is off: never expires
    messages = [
        Message(queue=queue, payload=row.body, size=len(row.body), content_type=JSON,
                address=f"queue:{queue.name}", qos=1, created_at=now, expires_at=expires_at)
        for row in rows
    ]
    Message.objects.bulk_create(messages)
    for row, message in zip(rows, messages, strict=True):
        row.message_uuid = message.uuid
    meter_count_after_commit(queue.pk, "published", len(messages))
    transaction.on_commit(lambda: wake_after_publish([queue.pk]))


def topic_for(instance: ConnectorInstance, event: Event) -> str:
    """`<namespace>/<prefix>/<elementKey>/<objectType>/<eventType>` (empty parts left out)."""
    assert instance.event_mesh is not None
    # The namespace and prefix are valid topic segments already; what a provider names is not.
    named = [_UNSAFE.sub("_", part) for part in (instance.element_key, event["objectType"], event["eventType"])]
    parts = [instance.event_mesh.namespace, instance.topic_prefix, *named]
    return "/".join(part for part in parts if part)


def _publish(instance: ConnectorInstance, body: dict[str, Any]) -> tuple[int, str]:
    """The notification's events onto the bound Event Mesh instance: one message per topic,
    shaped as a notification carrying that topic's events. Returns the queues reached and
    why publishes were refused ("" when none was)."""
    if instance.event_mesh is None:
        return 0, ""
    by_topic: dict[str, list[Event]] = {}
    for event in body["message"]["events"]:
        by_topic.setdefault(topic_for(instance, event), []).append(event)
    reached, refused = 0, []
    for topic, events in by_topic.items():
        part = {**body, "message": {**body["message"], "events": events}}
        try:
            reached += message_publish_to_topic(
                instance=instance.event_mesh, topic=topic, outgoing=Outgoing(payload=_encode(part), content_type=JSON,
                                                                             qos=1))
        except MeshError as error:  # the descriptor's topic rules, a full queue: the callback still gets it
            log.warning("connector %s: publish to %s refused: %s", instance.pk, topic, error.message)
            refused.append(f"{topic}: {error.message}")
    return reached, "; ".join(refused)[:500]
