"""Reads of connector events: the event log (notifications with their delivery state and
attempts), the queued notifications, providers' bodies, polls.

A notification's delivery state is read from the delivery engine's own rows rather than
copied: its message in the instance's queue (pending, or retrying after a failed attempt),
in the dead message queue (queued, waiting for a redelivery), or gone (delivered).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from ..models import (
    ConnectorInstance,
    ConnectorNotification,
    DeliveryAttempt,
    Message,
    PollRun,
    Queue,
    VendorEvent,
)
from .delivery import queue_names

PENDING, RETRYING, QUEUED, DELIVERED, NOT_DELIVERED = "pending", "retrying", "queued", "delivered", "no callback"


@dataclass
class LogEntry:
    notification: ConnectorNotification
    state: str
    attempts: list[DeliveryAttempt] = field(default_factory=list)
    next_attempt_at: Any = None

    @property
    def body(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(bytes(self.notification.body))
        return loaded

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.body["message"]["events"])


def _queues(instance: ConnectorInstance) -> dict[str, int]:
    names = queue_names(instance)
    found = dict(Queue.objects.filter(instance_id=instance.service_instance_id, name__in=names)
                 .values_list("name", "pk"))
    return {"main": found.get(names[0], 0), "queued": found.get(names[1], 0)}


def log_entries(instance: ConnectorInstance, notifications: Sequence[ConnectorNotification]) -> list[LogEntry]:
    """Each notification with its state and its attempts (oldest first)."""
    uuids = [n.message_uuid for n in notifications if n.message_uuid]
    queues = _queues(instance)
    held = {m["uuid"]: m for m in Message.objects.filter(queue_id__in=queues.values(), uuid__in=uuids)
            .values("uuid", "queue_id", "delivery_count", "available_at")}
    attempts: dict[uuid.UUID, list[DeliveryAttempt]] = {}
    if instance.delivery_webhook_id and uuids:
        for attempt in DeliveryAttempt.objects.filter(subscription_id=instance.delivery_webhook_id,
                                                      message_uuid__in=uuids).order_by("attempted_at", "pk"):
            attempts.setdefault(attempt.message_uuid, []).append(attempt)
    entries = []
    for notification in notifications:
        message = held.get(notification.message_uuid) if notification.message_uuid else None
        entries.append(LogEntry(notification, _state(notification, message, queues),
                                attempts.get(notification.message_uuid, []) if notification.message_uuid else [],
                                message["available_at"] if message and message["delivery_count"] else None))
    return entries


def _state(notification: ConnectorNotification, message: Any, queues: dict[str, int]) -> str:
    if notification.message_uuid is None:
        return NOT_DELIVERED
    if message is None:
        return DELIVERED
    if message["queue_id"] == queues["queued"]:
        return QUEUED
    return RETRYING if message["delivery_count"] else PENDING


def notifications_of(instance: ConnectorInstance, *, before: int | None = None) -> QuerySet[ConnectorNotification]:
    """Newest first; `before` (a notification's row id) pages on."""
    found = ConnectorNotification.objects.filter(connector_instance=instance).order_by("-pk")
    return found.filter(pk__lt=before) if before else found


def notification_get(instance: ConnectorInstance, notification_id: str) -> ConnectorNotification | None:
    try:
        key = uuid.UUID(notification_id)
    except ValueError:
        return None
    return ConnectorNotification.objects.filter(connector_instance=instance, notification_id=key).first()


def notifications_queued(instance: ConnectorInstance) -> QuerySet[ConnectorNotification]:
    """The notifications whose delivery failed for good and that wait for a redelivery."""
    queued = Message.objects.filter(queue_id=_queues(instance)["queued"]).values("uuid")
    return ConnectorNotification.objects.filter(connector_instance=instance, message_uuid__in=queued).order_by("pk")


def vendor_events_of(instance: ConnectorInstance, *, status: str | None = None) -> QuerySet[VendorEvent]:
    found = VendorEvent.objects.filter(connector_instance=instance).order_by("-pk")
    return found.filter(status=status) if status else found


def poll_runs_of(instance: ConnectorInstance) -> QuerySet[PollRun]:
    return PollRun.objects.filter(connector_instance=instance).order_by("-pk")
