"""A delivery run (lease, rounds of claim, push and settle, end), and finding the
subscriptions with work due."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from ... import dispatch
from ...models import AccessType, DeliveryAttempt, Message, WebhookSubscription
from ...store import rules
from .. import netguard
from .claim import Round, _claim, _extend_claims
from .lease import (
    _engine_transaction,
    _has_available,
    _lease_seconds,
    _push_budget,
    _runner_param,
    _sql,
    _take_runnable,
)
from .pushing import Outcome, _thread_session, push
from .settle import _settle


def resume_rate(subscription: WebhookSubscription, now: datetime) -> float | None:
    """Deliveries per second allowed now, or None for no limit: after a resume the rate
    starts at MESH_WEBHOOK_RESUME_RATE and doubles every MESH_WEBHOOK_RESUME_RAMP seconds."""
    start = settings.MESH_WEBHOOK_RESUME_RATE
    if subscription.resumed_at is None or not start:
        return None
    doublings = max((now - subscription.resumed_at).total_seconds(), 0.0) / settings.MESH_WEBHOOK_RESUME_RAMP
    rate = start * 2 ** min(doublings, 30)
    return None if rate >= settings.MESH_WEBHOOK_RESUME_FULL_RATE else rate


@dataclass
class RunResult:
    delivered: int = 0
    failed: bool = False
    lost: bool = False  # the lease was lost mid-run (paused, deleted, or outlived)
    more: bool = False  # the run stopped with messages still available (budget or pacing)
    paced_until: datetime | None = None


def webhook_deliver_batch(*, subscription_id: int) -> RunResult:
    """Push up to MESH_WEBHOOK_BATCH messages in queue order; stop at the first failure."""
    now = timezone.now()
    runner = uuid4()
    # The lease and the first claim: one commit. The statement that takes the lease also
    # loads the subscription and sets the commit's durability (_engine_transaction's rule).
    with transaction.atomic(savepoint=False):
        subscription = _take_runnable(subscription_id, now, runner)
        if subscription is None:  # gone, paused, gated, or another run holds it
            return RunResult()
        budget = settings.MESH_WEBHOOK_BATCH
        rate = resume_rate(subscription, now)
        if rate is not None:
            budget = max(1, min(budget, math.floor(rate)))  # one second's worth, then a pause
        run = _Run(subscription, budget, rate, runner)
        # qos 0 claims remove messages, so a worker dying mid-round would lose the unpushed
        # rest: it goes one message at a time, as a REST consumer does.
        prefetch = settings.MESH_WEBHOOK_PREFETCH if subscription.qos == 1 else 1
        limit = min(prefetch, budget)
        batch = _claim(subscription, limit, now)
        if not batch.claimed:
            run.end()
    session = _thread_session()  # outlives the run: its connections serve the next runs
    while batch.claimed and not run.ended:
        run.push_round(batch, session)
        if not run.ended:
            limit = min(prefetch, budget - run.result.delivered)
            batch = _claim(subscription, limit, timezone.now(), run.runner)  # renews the lease
            if batch.lost or not batch.claimed:  # lost: paused, deleted, or taken over
                run.result.lost = batch.lost
                with _engine_transaction(subscription):
                    run.end()  # fenced: releases only a lease that is still this run's
    result = run.result
    exclusive_held = subscription.queue.access_type == AccessType.EXCLUSIVE and not result.delivered
    if not result.more and not result.failed and not result.lost and not exclusive_held:
        # Asked after the lease is given up: a publish that saw this run still holding it
        # sent no wake-up, so its message is this run's to pass on. (An EXCLUSIVE queue held
        # by another consumer would make this a loop; the sweep looks there instead.)
        result.more = _has_available(subscription)
    return result


class _Run:
    """One run's rounds: push, then settle -- the last round's settle also ends the run,
    so a run of one round costs two commits. Every write to the lease is fenced on
    `runner`, so a run that outlived its lease changes nothing of its successor's."""

    def __init__(self, subscription: WebhookSubscription, budget: int, rate: float | None, runner: UUID) -> None:
        self.subscription = subscription
        self.budget = budget
        self.rate = rate
        self.runner = runner
        self.started = time.monotonic()
        self.result = RunResult()
        self.ended = False

    def push_round(self, batch: Round, session: netguard.Session) -> None:
        subscription, result, claimed = self.subscription, self.result, batch.claimed
        budget = _push_budget(subscription)
        held_until: float | None = time.monotonic() + _lease_seconds(subscription)
        outcomes: list[tuple[Message, Outcome, datetime]] = []
        in_flight: Message | None = None
        last = True
        try:
            for message in claimed:
                if held_until is not None and held_until - time.monotonic() < budget:
                    held_until = _extend_claims(subscription, self.runner, claimed)  # a slow receiver
                if held_until is None:  # the lease is gone: give back the rest, push nothing more
                    result.lost = True
                    break
                in_flight = message
                outcome = push(subscription, message, session)
                in_flight = None
                outcomes.append((message, outcome, timezone.now()))
                if not outcome.succeeded:
                    break
            result.delivered += sum(1 for _, outcome, _ in outcomes if outcome.succeeded)
            result.failed = bool(outcomes) and not outcomes[-1][1].succeeded
            result.more = not result.failed and not result.lost and result.delivered >= self.budget and batch.full
            last = result.failed or result.more or result.lost or not batch.full
        finally:
            # Settled even when something raised: what was pushed is acknowledged, the rest
            # given back. A qos-0 message that was being pushed counts as pushed: it may
            # have arrived, and it must not go out twice.
            if in_flight is not None and subscription.qos == 0:
                outcomes.append((in_flight, Outcome(succeeded=False, error="the run broke off mid-push"),
                                 timezone.now()))
            try:
                with _engine_transaction(subscription):
                    _settle(subscription, claimed, outcomes)
                    if last:
                        self.end()
            except IntegrityError:
                if WebhookSubscription.objects.filter(pk=subscription.pk).exists():
                    raise
                # Deleted mid-round: its log went with it, but what it delivered is delivered.
                with _engine_transaction(subscription):
                    _settle(subscription, claimed, outcomes, log=False)
                self.ended = result.lost = True

    def end(self) -> None:
        """Give up the lease (inside the caller's transaction); pace the next run after a resume."""
        subscription, result = self.subscription, self.result
        # Raw SQL, as for the lease's other writes: every run ends here, and the ORM's update
        # compiled the same statement each time.
        assignments, params = "runner_until = NULL, runner = NULL", []
        if result.more and self.rate is not None:
            pause = max(1.0 - (time.monotonic() - self.started), 0.0)
            result.paced_until = timezone.now() + timedelta(seconds=pause)
            assignments += ", next_attempt_at = %s"
            params.append(connection.ops.adapt_datetimefield_value(result.paced_until))
        elif subscription.resumed_at is not None and not (result.more or result.failed or result.lost):
            assignments += ", resumed_at = NULL"  # the backlog is delivered: slow start is over
        with connection.cursor() as cursor:
            cursor.execute(
                _sql(f"UPDATE {{subscription}} SET {assignments} WHERE id = %s AND runner = %s"),  # noqa: S608
                [*params, subscription.pk, _runner_param(self.runner)],
            )
        self.ended = True


# --- finding work -----------------------------------------------------------------------------


def webhooks_due(now: datetime | None = None) -> list[int]:
    """Subscriptions with messages waiting, allowed to deliver, and no run in progress."""
    now = now or timezone.now()
    available = Message.objects.filter(rules.available_in_its_queue_q(now), queue=OuterRef("queue"))
    due = WebhookSubscription.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        Q(runner_until__isnull=True) | Q(runner_until__lt=now),
        WebhookSubscription.deliverable(),
    ).filter(Exists(available))
    return list(due.values_list("pk", flat=True))


def attempts_prune(*, now: datetime | None = None, batch: int = 5000) -> int:
    """Delete delivery-log entries older than MESH_WEBHOOK_ATTEMPT_RETENTION_DAYS, a batch
    at a time (short transactions on a table every push writes to). Returns how many."""
    days = settings.MESH_WEBHOOK_ATTEMPT_RETENTION_DAYS
    if not days:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    pruned = 0
    while True:
        ids = list(DeliveryAttempt.objects.filter(attempted_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return pruned
        pruned += DeliveryAttempt.objects.filter(pk__in=ids).delete()[0]


def wake_webhooks(queue_ids: list[int]) -> None:
    """After a publish commits: start a run for the active webhooks of these queues that
    have none and whose gate is open. A run looks for work again after giving up its lease,
    so a message published while it finished is not left behind."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    marks = ", ".join(["%s"] * len(queue_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            _sql(
                f"SELECT id FROM {{subscription}} WHERE queue_id IN ({marks})"  # noqa: S608
                " AND (runner_until IS NULL OR runner_until < %s)"
                " AND (next_attempt_at IS NULL OR next_attempt_at <= %s) AND {deliverable}"
            ),
            [*queue_ids, now, now, *WebhookSubscription.DELIVERABLE_PARAMS],
        )
        idle = [row[0] for row in cursor.fetchall()]
    for subscription_id in idle:
        dispatch.webhook_deliver(subscription_id)
