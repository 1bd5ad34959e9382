"""Event-triggered formulas: a formula (steps: HTTP requests and Event Mesh publishes) bound
to a connector instance by a formula instance runs once per event object of each of that
instance's notifications.

`executions_start` is what the notification path calls, inside its transaction; the run of
one execution is `formula_execution_run` (engine.py), woken after commit and by the
connectors' tick through `executions_due_start`.
"""

from .engine import formula_execution_run
from .services import (
    executions_due_start,
    executions_start,
    formula_create,
    formula_delete,
    formula_instance_create,
    formula_instance_delete,
    formula_update,
)

__all__ = [
    "executions_due_start", "executions_start", "formula_create", "formula_delete", "formula_execution_run",
    "formula_instance_create", "formula_instance_delete", "formula_update",
]
