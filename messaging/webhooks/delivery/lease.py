"""The run's time budgets, its transactions, and the lease that makes it the subscription's
one runner (every write to it fenced on the runner's id)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ... import store
from ...models import Message, WebhookSubscription

LOCK_MARGIN = 30.0  # seconds a claim outlives the pushes it may still have to wait for


# --- time budgets ------------------------------------------------------------------------


def _push_budget(subscription: WebhookSubscription) -> float:
    """The longest one push can take: with oauth2, a token fetch, the POST, a fetch again
    after a 401 and the POST again, each under the timeout."""
    calls = 4 if subscription.security.get("type") == "oauth2" else 1
    return calls * settings.MESH_WEBHOOK_TIMEOUT + 5.0


def _lease_seconds(subscription: WebhookSubscription) -> float:
    return _push_budget(subscription) + LOCK_MARGIN


# --- transactions ----------------------------------------------------------------------------


@contextmanager
def _engine_transaction(subscription: WebhookSubscription) -> Iterator[None]:
    """A transaction of the engine; nested ones join it (no savepoint).

    With qos 1 its commit does not wait for the WAL flush: the engine's writes are claims,
    acknowledgements, the attempt log and health, and if a database crash loses the last
    few hundred milliseconds of them, messages are delivered again -- at least once still
    holds, and no published message is lost. A qos-0 claim removes the message, so it
    stays durable: it must never be pushed twice.
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic(savepoint=False):
        if outermost and subscription.qos == 1:
            store.commit_without_flush()
        yield


# --- the lease and the gate ---------------------------------------------------------------


def _sql(statement: str) -> str:
    """Table names filled into an engine statement."""
    return statement.format(
        message=Message._meta.db_table, subscription=WebhookSubscription._meta.db_table,
        deliverable=WebhookSubscription.DELIVERABLE_SQL,
    )


def _take_lease(subscription: WebhookSubscription, now: datetime, runner: UUID) -> bool:
    """Become the subscription's one runner, if it may deliver and no run holds it."""
    adapt = connection.ops.adapt_datetimefield_value
    until = now + timedelta(seconds=_lease_seconds(subscription))
    with connection.cursor() as cursor:
        cursor.execute(
            _sql(
                "UPDATE {subscription} SET runner_until = %s, runner = %s WHERE id = %s"
                " AND (runner_until IS NULL OR runner_until < %s)"
                " AND (next_attempt_at IS NULL OR next_attempt_at <= %s) AND {deliverable}"
            ),
            [adapt(until), _runner_param(runner), subscription.pk, adapt(now), adapt(now),
             *WebhookSubscription.DELIVERABLE_PARAMS],
        )
        return cursor.rowcount == 1


def _renew_lease(subscription: WebhookSubscription, runner: UUID) -> datetime | None:
    """Extend this run's lease; None when it is no longer this run's, or the subscription was
    paused or deleted meanwhile (the run then stops after what it holds)."""
    until = timezone.now() + timedelta(seconds=_lease_seconds(subscription))
    with connection.cursor() as cursor:
        cursor.execute(
            _sql("UPDATE {subscription} SET runner_until = %s WHERE id = %s AND runner = %s AND {deliverable}"),
            [connection.ops.adapt_datetimefield_value(until), subscription.pk, _runner_param(runner),
             *WebhookSubscription.DELIVERABLE_PARAMS],
        )
        return until if cursor.rowcount == 1 else None


def _runner_param(runner: UUID) -> Any:
    return WebhookSubscription._meta.get_field("runner").get_db_prep_value(runner, connection)


def _has_available(subscription: WebhookSubscription) -> bool:
    """Whether the queue holds a message the next claim would take, and no other run holds
    the lease (a run that does will see the message itself, or look again as it ends)."""
    now = timezone.now()
    lease_held = _sql("NOT EXISTS (SELECT 1 FROM {subscription} WHERE id = %s AND runner_until >= %s)")
    return store.has_available(queue=subscription.queue, now=now, extra=(lease_held, [subscription.pk, now]))
