"""The run's time budgets, its transactions, and the lease that makes it the subscription's
one runner (every write to it fenced on the runner's id)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from ... import store
from ...models import Message, Queue, WebhookSubscription

LOCK_MARGIN = 30.0  # seconds a claim outlives the pushes it may still have to wait for


# --- time budgets ------------------------------------------------------------------------


def _push_budget(subscription: WebhookSubscription) -> float:
    """The longest one push can take: with oauth2, a token fetch, the POST, a fetch again
    after a 401 and the POST again, each under the timeout."""
    return _budget_of(4 if subscription.security.get("type") == "oauth2" else 1)


def _budget_of(calls: int) -> float:
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
        if outermost and store.claim_may_skip_flush(subscription.qos):
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


def _take_runnable(subscription_id: int, now: datetime, runner: UUID) -> WebhookSubscription | None:
    """Become the runner of this subscription, if it may deliver and no run holds it, and load
    it with its queue; None otherwise. Inside the caller's transaction, which it starts.

    On PostgreSQL this is one statement, the first of the transaction, that also does what
    `_engine_transaction` does for qos 1 (a commit without the WAL flush): a run used to
    start with a SELECT of the subscription, a SET LOCAL and the lease's UPDATE, three round
    trips (and an ORM compile) before the claim. The lease is taken for one call's budget
    (the subscription is not loaded yet) and renewed at once for oauth2's four calls.
    """
    if connection.vendor != "postgresql":
        return _take_runnable_in_steps(subscription_id, now, runner)
    adapt = connection.ops.adapt_datetimefield_value
    until = now + timedelta(seconds=_budget_of(1) + LOCK_MARGIN)
    with connection.cursor() as cursor:
        cursor.execute(_take_runnable_sql(), [
            adapt(until), _runner_param(runner), subscription_id, adapt(now), adapt(now),
            *WebhookSubscription.DELIVERABLE_PARAMS,
        ])
        row = cursor.fetchone()
    if row is None:
        return None
    width = len(_loader(WebhookSubscription)[0])
    subscription = _load(WebhookSubscription, row[:width])
    subscription.queue = _load(Queue, row[width:-1])
    if _lease_seconds(subscription) != _budget_of(1) + LOCK_MARGIN and _renew_lease(subscription, runner) is None:
        return None
    return subscription


def _take_runnable_in_steps(subscription_id: int, now: datetime, runner: UUID) -> WebhookSubscription | None:
    """The same in three statements, where the one above has no equivalent (SQLite)."""
    try:  # get(), not filter().first(): no ORDER BY to compile on the path of every run
        subscription = WebhookSubscription.objects.select_related("queue").get(pk=subscription_id)
    except WebhookSubscription.DoesNotExist:
        return None
    if not subscription.may_deliver:
        return None
    if store.claim_may_skip_flush(subscription.qos):
        store.commit_without_flush()
    if not _take_lease(subscription, now, runner):
        return None
    subscription.runner = runner  # as the statement above returns it
    return subscription


Converter = Callable[[Any, Any, Any], Any]


@functools.cache
def _loader(model: type[Model]) -> tuple[list[str], list[str], list[list[Converter]]]:
    """A model's concrete columns, their attribute names and the converters the ORM would
    apply to each (JSON fields are loaded as text, for one)."""
    fields = model._meta.concrete_fields
    converters = [
        [*connection.ops.get_db_converters(field.get_col(model._meta.db_table)), *field.get_db_converters(connection)]
        for field in fields
    ]
    return [str(field.column) for field in fields], [field.attname for field in fields], converters


def _load(model: type[Model], values: tuple[Any, ...]) -> Any:
    """A row of `_loader(model)`'s columns as the model instance the ORM would have loaded."""
    _, attnames, converters = _loader(model)
    converted = []
    for value, field_converters, field in zip(values, converters, model._meta.concrete_fields, strict=True):
        for converter in field_converters:
            value = converter(value, field, connection)
        converted.append(value)
    return model.from_db(connection.alias, attnames, converted)


@functools.cache
def _take_runnable_sql() -> str:
    subscription_columns = ", ".join(f"s.{column}" for column in _loader(WebhookSubscription)[0])
    queue_columns = ", ".join(f"q.{column}" for column in _loader(Queue)[0])
    # {deliverable} names its columns unqualified: the queue table has none of those names.
    return (
        f"UPDATE {WebhookSubscription._meta.db_table} AS s SET runner_until = %s, runner = %s"  # noqa: S608
        f" FROM {Queue._meta.db_table} AS q WHERE s.id = %s AND q.id = s.queue_id"
        " AND (s.runner_until IS NULL OR s.runner_until < %s)"
        f" AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= %s) AND {WebhookSubscription.DELIVERABLE_SQL}"
        f" RETURNING {subscription_columns}, {queue_columns}, {store.commit_without_flush_sql('s.qos')}"
    )


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
