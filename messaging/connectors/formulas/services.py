"""The formulas' writes: definitions, their instances (the binding to a connector instance),
and the start of executions, one per event object, with their wake-ups."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q

from meshsite.errors import Conflict, Invalid, NotFound
from meshsite.platform.models import ServiceInstance

from ... import dispatch
from ..models import (
    ConnectorInstance,
    ConnectorNotification,
    ExecutionStatus,
    Formula,
    FormulaExecution,
    FormulaInstance,
)
from .definition import name_check, steps_check

log = logging.getLogger(__name__)

_UNSET: Any = object()
# Executions one sweep wakes at most; the next tick takes the rest.
SWEEP_BATCH = 500


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{field} must be a boolean")
    return value


def _description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 10_000:
        raise Invalid("description must be a string of at most 10000 characters")
    return value


def _save(row: Formula | FormulaInstance, what: str) -> Any:
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:  # the unique name, taken concurrently or already
        raise Conflict(f"A {what} named {row.name!r} already exists") from None
    return row


def formula_create(
    *, service_instance: ServiceInstance, name: Any, steps: Any, description: Any = "", active: Any = True,
) -> Formula:
    formula = Formula(service_instance=service_instance, name=name_check(name), steps=steps_check(steps),
                      description=_description(description), active=_flag(active, "active"))
    return _save(formula, "formula")


def formula_update(
    *, formula: Formula, name: Any = _UNSET, steps: Any = _UNSET, description: Any = _UNSET, active: Any = _UNSET,
) -> Formula:
    """Change the fields given; all are checked before `formula` is touched."""
    changes: dict[str, Any] = {}
    if name is not _UNSET:
        changes["name"] = name_check(name)
    if steps is not _UNSET:
        changes["steps"] = steps_check(steps)
    if description is not _UNSET:
        changes["description"] = _description(description)
    if active is not _UNSET:
        changes["active"] = _flag(active, "active")
    for field, value in changes.items():
        setattr(formula, field, value)
    return _save(formula, "formula")


def formula_delete(*, formula: Formula) -> None:
    with transaction.atomic():
        formula.delete()


def formula_instance_create(
    *, formula: Formula, connector_instance: ConnectorInstance, name: Any, active: Any = True,
) -> FormulaInstance:
    # Not found rather than refused: another tenant's instance must not be told apart from none.
    if connector_instance.service_instance_id != formula.service_instance_id:
        raise NotFound(f"Connector instance {connector_instance.pk} not found")
    instance = FormulaInstance(formula=formula, connector_instance=connector_instance,
                               name=name_check(name), active=_flag(active, "active"))
    return _save(instance, "formula instance")


def formula_instance_delete(*, instance: FormulaInstance) -> None:
    with transaction.atomic():
        instance.delete()


def _wake(execution_ids: list[int]) -> None:
    # A wake-up only: if the broker is down the executions stand, and executions_due_start
    # (the connectors' tick) starts them instead.
    try:
        for execution_id in execution_ids:
            dispatch.formula_execute(execution_id)
    except Exception:
        log.warning("formula wake-up lost for %d executions; the tick will start them", len(execution_ids),
                    exc_info=True)


def executions_start(*, notification: ConnectorNotification, events: Sequence[dict[str, Any]], now: datetime) -> int:
    """One pending execution per (active formula instance, event object) of `notification`,
    each woken once the caller's transaction commits (a task must not look for a row that
    is not committed yet)."""
    bound = list(FormulaInstance.objects.filter(
        connector_instance_id=notification.connector_instance_id, active=True, formula__active=True,
    ).values_list("pk", flat=True))
    executions = [
        FormulaExecution(formula_instance_id=pk, notification=notification, created_at=now, next_attempt_at=now,
                         trigger={"event": dict(event), "notificationId": str(notification.notification_id)})
        for pk in bound for event in events
    ]
    created = FormulaExecution.objects.bulk_create(executions)
    ids = [execution.pk for execution in created]
    if ids:
        transaction.on_commit(lambda: _wake(ids))
    return len(created)


def executions_due(now: datetime, limit: int = SWEEP_BATCH) -> list[int]:
    """Executions waiting to run (pending, or retrying and due) whose lease is free."""
    return list(FormulaExecution.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now),
        status__in=[ExecutionStatus.PENDING, ExecutionStatus.RETRYING], next_attempt_at__lte=now,
    ).order_by("next_attempt_at").values_list("pk", flat=True)[:limit])


def executions_due_start(now: datetime) -> int:
    """Send `formula_execute` for every due execution (whatever a lost wake-up missed). A
    second wake-up of one execution is harmless: the run's lease admits one worker, and a
    run that finds the execution no longer due does nothing."""
    due = executions_due(now)
    _wake(due)
    return len(due)
