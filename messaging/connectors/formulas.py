"""Event-triggered formulas: a formula instance bound to a connector instance runs once per
event object of each notification.

`executions_start` is what the notification path calls, inside its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..models import ConnectorNotification, FormulaExecution, FormulaInstance


def executions_start(*, notification: ConnectorNotification, events: Sequence[dict[str, Any]], now: datetime) -> int:
    """One pending execution per (active formula instance, event object) of `notification`."""
    bound = list(FormulaInstance.objects.filter(
        connector_instance_id=notification.connector_instance_id, active=True, formula__active=True,
    ).values_list("pk", flat=True))
    executions = [
        FormulaExecution(formula_instance_id=pk, notification=notification, created_at=now, next_attempt_at=now,
                         trigger={"event": dict(event), "notificationId": str(notification.notification_id)})
        for pk in bound for event in events
    ]
    FormulaExecution.objects.bulk_create(executions)
    return len(executions)
