"""Celery tasks: thin wrappers that take ids and call a service."""

from celery import shared_task
from django.utils import timezone

from . import dispatch
from .connectors.formulas import executions_due_start, formula_execution_run
from .connectors.intake import vendor_event_process, vendor_events_stale_start
from .connectors.polling import connector_poll_run, polls_due_start
from .connectors.retention import connector_logs_prune
from .services import queues_sweep
from .webhooks.delivery import attempts_prune, webhook_deliver_batch, webhooks_due
from .webhooks.subscriptions import webhook_handshake_run


@shared_task
def sweep_queues() -> int:
    return queues_sweep()


@shared_task
def webhook_handshake(subscription_id: int) -> str:
    return webhook_handshake_run(subscription_id=subscription_id)


# Runs in a row that may find nothing although messages looked available (rows another
# transaction holds for a moment); the sweep takes over after these.
IDLE_RUNS = 3


@shared_task
def webhook_deliver(subscription_id: int, idle_runs: int = 0) -> int:
    result = webhook_deliver_batch(subscription_id=subscription_id)
    # Continue in a fresh task while work is due: more than a run's budget was waiting,
    # the slow start paused the run, or a message arrived while this run held the lease
    # (its wake-up was not sent). A closed retry gate ends the chain; the sweep resumes it.
    if result.paced_until is not None:
        countdown = max((result.paced_until - timezone.now()).total_seconds(), 0.0)
        dispatch.webhook_deliver(subscription_id, countdown=countdown)
    elif result.more:
        idle = 0 if result.delivered else idle_runs + 1
        if idle <= IDLE_RUNS:
            dispatch.webhook_deliver(subscription_id, idle)
    return result.delivered


@shared_task
def sweep_webhooks() -> int:
    """Start a run for every subscription with work due (whatever a lost wake-up missed),
    and keep the delivery log within its retention."""
    due = webhooks_due()
    for subscription_id in due:
        dispatch.webhook_deliver(subscription_id)
    attempts_prune()
    return len(due)


@shared_task
def connector_vendor_event(vendor_event_id: int) -> int:
    return vendor_event_process(vendor_event_id=vendor_event_id)


@shared_task
def connectors_tick() -> dict[str, int]:
    """The connectors' scheduler (every MESH_CONNECTOR_TICK s): polls that are due, bodies
    and formula executions whose wake-up was lost, and the event log's retention."""
    started = {"polls": polls_due_start(), "vendor_events": vendor_events_stale_start(),
               "formula_executions": executions_due_start(timezone.now())}
    return {**started, **{f"pruned_{kind}": count for kind, count in connector_logs_prune().items()}}


@shared_task
def connector_poll(instance_id: int) -> int:
    """One poll of a connector instance; failures end up on its PollRuns, never raised here."""
    return connector_poll_run(instance_id=instance_id)


@shared_task
def formula_execute(execution_id: int) -> str:
    return formula_execution_run(execution_id=execution_id)
