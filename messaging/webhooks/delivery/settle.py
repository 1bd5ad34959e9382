"""Settling a round in one transaction: acknowledgements, the attempt log, the backoff of a
failed message and the endpoint's health."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection

from ... import store
from ...metrics import meter_count_after_commit
from ...models import DeliveryAttempt, Message, WebhookStatus, WebhookSubscription
from .lease import _engine_transaction, _sql
from .pushing import Outcome


def backoff_seconds(failures: int, retry_after: float | None) -> float:
    schedule = settings.MESH_WEBHOOK_RETRY_SCHEDULE
    if retry_after is not None:
        return min(retry_after, schedule[-1])
    step = schedule[min(failures, len(schedule)) - 1]
    return step * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security


def _settle(
    subscription: WebhookSubscription,
    claimed: list[Message],
    outcomes: list[tuple[Message, Outcome, datetime]],
    *,
    log: bool = True,
) -> None:
    """One transaction: acknowledge what was delivered, log every attempt, give back the
    failed message (with its backoff) and the unpushed ones (as they were), and record the
    endpoint's health."""
    pushed = {message.id for message, _, _ in outcomes}
    unpushed = [message for message in claimed if message.id not in pushed]
    delivered = [message for message, outcome, _ in outcomes if outcome.succeeded]
    failure = next(((m, o, at) for m, o, at in outcomes if not o.succeeded), None)
    with _engine_transaction(subscription):  # joins the caller's
        if subscription.qos == 1:
            store.settle(claim_ids=[message.claim_id for message in delivered if message.claim_id])
        if log:
            _log_attempts(subscription, outcomes)
        store.give_back_unattempted(messages=unpushed, qos=subscription.qos)
        if failure is not None:
            _failed(subscription, *failure)
        elif delivered:
            _succeeded(subscription, outcomes[-1][2])
        # With the round's commit: a round rolled back and settled again counts once.
        meter_count_after_commit(subscription.queue_id, "delivered", len(delivered))
        meter_count_after_commit(subscription.queue_id, "delivery_failed", 1 if failure is not None else 0)


_ATTEMPT_COLUMNS = (
    "subscription_id", "message_uuid", "attempted_at", "succeeded", "status_code", "latency_ms", "error",
    "response_excerpt",
)


def _log_attempts(subscription: WebhookSubscription, outcomes: list[tuple[Message, Outcome, datetime]]) -> None:
    """One multi-row INSERT into the delivery log (the ORM's bulk_create costs more than the
    database does here)."""
    if not outcomes:
        return
    prepare_uuid = DeliveryAttempt._meta.get_field("message_uuid").get_db_prep_value
    adapt = connection.ops.adapt_datetimefield_value
    params: list[Any] = []
    for message, outcome, at in outcomes:
        params += [
            subscription.pk, prepare_uuid(message.uuid, connection), adapt(at), outcome.succeeded,
            outcome.status_code, outcome.latency_ms, outcome.error, outcome.excerpt,
        ]
    row = "(" + ", ".join(["%s"] * len(_ATTEMPT_COLUMNS)) + ")"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {DeliveryAttempt._meta.db_table} ({', '.join(_ATTEMPT_COLUMNS)})"  # noqa: S608
            f" VALUES {', '.join([row] * len(outcomes))}",
            params,
        )


def _succeeded(subscription: WebhookSubscription, at: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _sql(
                "UPDATE {subscription} SET last_successful_delivery = %s, consecutive_failures = 0,"
                " next_attempt_at = NULL, failing_since = NULL WHERE id = %s"
            ),
            [connection.ops.adapt_datetimefield_value(at), subscription.pk],
        )
    subscription.consecutive_failures = 0
    subscription.failing_since = None


def _failed(subscription: WebhookSubscription, message: Message, outcome: Outcome, at: datetime) -> None:
    failures = subscription.consecutive_failures + 1
    # One instant for the message's lock and the subscription's gate, so that the retry
    # finds the failed message available and takes it before the ones behind it.
    retry_at = at + timedelta(seconds=backoff_seconds(failures, outcome.retry_after))
    if subscription.qos == 1:
        reason = f"webhook {subscription.name}: {outcome.error}; {outcome.excerpt}".strip("; ")
        store.give_back_for_retry(queue=subscription.queue, message=message, retry_at=retry_at, reason=reason)
    failing_since = subscription.failing_since or at
    paused = (at - failing_since).total_seconds() >= settings.MESH_WEBHOOK_PAUSE_AFTER
    WebhookSubscription.objects.filter(pk=subscription.pk).update(
        last_failed_delivery=at, last_failed_delivery_reason=outcome.error[:500], consecutive_failures=failures,
        next_attempt_at=retry_at, failing_since=failing_since,
        **({"status": WebhookStatus.PAUSED} if paused else {}),
    )
    subscription.consecutive_failures = failures
    subscription.failing_since = failing_since
