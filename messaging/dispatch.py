"""Event Mesh's Celery tasks, sent by name through meshsite/taskqueue.py (which says why)."""

from __future__ import annotations

from meshsite.taskqueue import send, task_named

__all__ = ["connector_poll", "connector_vendor_event", "formula_execute", "send", "task_named", "webhook_deliver",
           "webhook_handshake"]

WEBHOOK_DELIVER = "messaging.tasks.webhook_deliver"
WEBHOOK_HANDSHAKE = "messaging.tasks.webhook_handshake"
CONNECTOR_VENDOR_EVENT = "messaging.tasks.connector_vendor_event"
CONNECTOR_POLL = "messaging.tasks.connector_poll"
FORMULA_EXECUTE = "messaging.tasks.formula_execute"


def webhook_deliver(subscription_id: int, idle_runs: int = 0, *, countdown: float | None = None) -> str:
    """Start (or continue) a delivery run for this webhook subscription."""
    return send(WEBHOOK_DELIVER, subscription_id, idle_runs, countdown=countdown)


def webhook_handshake(subscription_id: int) -> str:
    """Run the abuse-protection handshake of this webhook subscription."""
    return send(WEBHOOK_HANDSHAKE, subscription_id)


def connector_vendor_event(vendor_event_id: int) -> str:
    """Normalize a provider's stored webhook body into notifications."""
    return send(CONNECTOR_VENDOR_EVENT, vendor_event_id)


def connector_poll(instance_id: int) -> str:
    """Poll this connector instance once (it holds the poll lease)."""
    return send(CONNECTOR_POLL, instance_id)


def formula_execute(execution_id: int) -> str:
    """Run one attempt of a formula execution (if it is still due and free)."""
    return send(FORMULA_EXECUTE, execution_id)
