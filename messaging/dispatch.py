"""Event Mesh's Celery tasks, sent by name through meshsite/taskqueue.py (which says why)."""

from __future__ import annotations

from meshsite.taskqueue import send, task_named

__all__ = ["formula_execute", "send", "task_named", "webhook_deliver", "webhook_handshake"]

WEBHOOK_DELIVER = "messaging.tasks.webhook_deliver"
WEBHOOK_HANDSHAKE = "messaging.tasks.webhook_handshake"


def webhook_deliver(subscription_id: int, idle_runs: int = 0, *, countdown: float | None = None) -> str:
    """Start (or continue) a delivery run for this webhook subscription."""
    return send(WEBHOOK_DELIVER, subscription_id, idle_runs, countdown=countdown)


def webhook_handshake(subscription_id: int) -> str:
    """Run the abuse-protection handshake of this webhook subscription."""
    return send(WEBHOOK_HANDSHAKE, subscription_id)


FORMULA_EXECUTE = "messaging.tasks.formula_execute"


def formula_execute(execution_id: int) -> str:
    """Run one attempt of a formula execution (if it is still due and free)."""
    return send(FORMULA_EXECUTE, execution_id)
