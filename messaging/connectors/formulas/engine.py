"""Running one execution: take its lease, run the steps in order outside any transaction
(they make HTTP requests and publish, each owning its own writes), record each step, then
settle the attempt: succeeded, retrying after the schedule's wait, or failed for good.

The lease is a conditional UPDATE on `lease_until`, so two workers woken for one execution
(a wake-up and the tick's sweep) never run it at once; it also requires the execution to be
due, so a second wake-up after a failed attempt does not bring its retry forward. A worker
that dies mid-run leaves a lease that expires, and the sweep starts the execution again.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ...webhooks import netguard
from ..models import ExecutionStatus, FormulaExecution, FormulaStep
from .steps import REQUEST_TIMEOUT, StepOutcome, publish_step, request_step

log = logging.getLogger(__name__)

# Time a run may take beyond its requests' budgets before its lease lapses.
LEASE_MARGIN = 60.0
WAITING = (ExecutionStatus.PENDING, ExecutionStatus.RETRYING)


def _lease(execution_id: int, now: datetime, seconds: float) -> datetime | None:
    until = now + timedelta(seconds=seconds)
    taken = FormulaExecution.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now),
        pk=execution_id, status__in=WAITING, next_attempt_at__lte=now,
    ).update(lease_until=until)
    return until if taken else None


def _lease_seconds(execution_id: int) -> float | None:
    steps = FormulaExecution.objects.filter(pk=execution_id).values_list(
        "formula_instance__formula__steps", flat=True).first()
    return None if steps is None else len(steps) * REQUEST_TIMEOUT + LEASE_MARGIN


def _run_step(step: dict[str, Any], context: dict[str, Any], execution: FormulaExecution,
              session: netguard.Session) -> StepOutcome:
    try:
        if step["type"] == "request":
            return request_step(step["properties"], context, session)
        return publish_step(step["properties"], context, execution.formula_instance.connector_instance)
    except Exception:  # a bug of ours must fail the step, not leave the execution leased
        log.exception("formula step %s of execution %s failed unexpectedly", step["name"], execution.pk)
        return StepOutcome(False, error="internal error")


def _record(execution: FormulaExecution, attempt: int, step: dict[str, Any], started: datetime,
            duration_ms: float, outcome: StepOutcome) -> None:
    FormulaStep.objects.create(
        execution=execution, attempt=attempt, name=step["name"], step_type=step["type"], started_at=started,
        duration_ms=duration_ms, succeeded=outcome.succeeded, result=outcome.result, error=outcome.error[:500],
    )


def _run_steps(execution: FormulaExecution, attempt: int) -> str:
    """Every step in order until one fails; returns that failure's reason, or "" for success."""
    context: dict[str, Any] = {"trigger": execution.trigger, "steps": {}}
    with netguard.Session() as session:
        for step in execution.formula_instance.formula.steps:
            started, clock = timezone.now(), time.monotonic()
            outcome = _run_step(step, context, execution, session)
            _record(execution, attempt, step, started, (time.monotonic() - clock) * 1000, outcome)
            if not outcome.succeeded:
                return f"step {step['name']}: {outcome.error}"
            context["steps"][step["name"]] = outcome.result
    return ""


def retry_wait(attempts: int) -> float:
    """The wait before attempt `attempts + 1`, jittered by ±20% so that executions failed
    together (one receiver down) do not all come back in the same instant."""
    schedule = settings.MESH_CONNECTOR_FORMULA_RETRY_SCHEDULE
    wait = float(schedule[min(attempts - 1, len(schedule) - 1)])
    return wait * random.uniform(0.8, 1.2)


def _settle(execution: FormulaExecution, lease: datetime, failure: str) -> str:
    now = timezone.now()
    attempts = execution.attempts + 1
    fields: dict[str, Any] = {"attempts": attempts, "lease_until": None, "error": failure[:500]}
    if not failure:
        fields.update(status=ExecutionStatus.SUCCEEDED, finished_at=now, next_attempt_at=None)
    elif attempts >= settings.MESH_CONNECTOR_FORMULA_ATTEMPTS:
        fields.update(status=ExecutionStatus.FAILED, finished_at=now, next_attempt_at=None)
    else:
        fields.update(status=ExecutionStatus.RETRYING, next_attempt_at=now + timedelta(seconds=retry_wait(attempts)))
    # Only while the lease is still ours: one that lapsed may have passed to another worker.
    FormulaExecution.objects.filter(pk=execution.pk, lease_until=lease).update(**fields)
    return str(fields["status"])


def _run(execution_id: int, now: datetime) -> str:
    seconds = _lease_seconds(execution_id)
    lease = None if seconds is None else _lease(execution_id, now, seconds)
    if lease is None:
        return "skipped"  # gone, finished, not due, or running elsewhere
    execution = FormulaExecution.objects.select_related(
        "formula_instance__formula", "formula_instance__connector_instance__event_mesh").get(pk=execution_id)
    return _settle(execution, lease, _run_steps(execution, execution.attempts + 1))


def formula_execution_run(*, execution_id: int, now: datetime | None = None) -> str:
    """One attempt of the execution if it is due and free; returns its status afterwards, or
    "skipped". Never raises: what fails is recorded, and anything else is logged and left to
    the lease's expiry and the sweep."""
    try:
        return _run(execution_id, now or timezone.now())
    except Exception:
        log.exception("formula execution %s could not run", execution_id)
        return "error"
