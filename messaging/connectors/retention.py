"""Retention of the event log: the connectors' tick deletes what is older than
MESH_CONNECTOR_LOG_RETENTION_DAYS (0 keeps everything).

What goes: provider bodies that were processed or failed, polls, finished formula executions
(with their steps), and notifications -- but never a notification whose message its instance's
delivery queues still hold (being retried, paused, or queued for redelivery): it stays
listed and can still be redelivered however old it is. Bodies still waiting to be processed
and executions still to run stay too.

Deletes go in batches of BATCH rows, each its own short statement, at most MAX_BATCHES per
kind and tick: a backlog (the tick was off for days) is worked off over the next ticks
rather than as one long delete on tables the intake writes to.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from ..models import (
    ConnectorInstance,
    ConnectorNotification,
    ExecutionStatus,
    FormulaExecution,
    Message,
    PollRun,
    Queue,
    VendorEvent,
    VendorEventStatus,
)
from .delivery import queue_names

BATCH = 2000
MAX_BATCHES = 10


def _prune(rows: QuerySet[Model], batch: int) -> int:
    pruned = 0
    for _ in range(MAX_BATCHES):
        ids = list(rows.order_by("pk").values_list("pk", flat=True)[:batch])
        if not ids:
            break
        pruned += rows.model._default_manager.filter(pk__in=ids).delete()[1].get(rows.model._meta.label, 0)
        if len(ids) < batch:
            break
    return pruned


def _notifications_done(instance: ConnectorInstance, cutoff: datetime) -> QuerySet[ConnectorNotification]:
    """The instance's notifications older than the cutoff whose messages its delivery
    queues no longer hold (one pass over those queues, however many notifications)."""
    queues = Queue.objects.filter(instance_id=instance.service_instance_id, name__in=queue_names(instance))
    held = Message.objects.filter(queue_id__in=queues.values("pk")).values("uuid")
    old = ConnectorNotification.objects.filter(connector_instance=instance, created_at__lt=cutoff)
    return old.filter(Q(message_uuid__isnull=True) | ~Q(message_uuid__in=held))


def connector_logs_prune(*, now: datetime | None = None, batch: int = BATCH) -> dict[str, int]:
    """Delete the event log's rows past the retention; returns how many of each kind went."""
    days = settings.MESH_CONNECTOR_LOG_RETENTION_DAYS
    if not days:
        return {}
    cutoff = (now or timezone.now()) - timedelta(days=days)
    finished = [ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED]
    pruned = {"formula_executions": _prune(
        FormulaExecution.objects.filter(status__in=finished, created_at__lt=cutoff), batch)}
    # Executions first and bodies last: what refers to a row goes before it (no SET NULL updates).
    notifications = 0
    old = ConnectorNotification.objects.filter(created_at__lt=cutoff).values("connector_instance")
    for instance in ConnectorInstance.objects.filter(pk__in=old):
        notifications += _prune(_notifications_done(instance, cutoff), batch)
    pruned["notifications"] = notifications
    pruned["vendor_events"] = _prune(
        VendorEvent.objects.filter(received_at__lt=cutoff).exclude(status=VendorEventStatus.RECEIVED), batch)
    pruned["poll_runs"] = _prune(PollRun.objects.filter(started_at__lt=cutoff), batch)
    return pruned
