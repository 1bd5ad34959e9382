"""Celery tasks: thin wrappers that take ids and call a service."""

from celery import shared_task

from .services import queues_sweep
from .webhooks.subscriptions import webhook_handshake_run


@shared_task
def sweep_queues() -> int:
    return queues_sweep()


@shared_task
def webhook_handshake(subscription_id: int) -> str:
    return webhook_handshake_run(subscription_id=subscription_id)
