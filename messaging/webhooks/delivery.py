"""Push delivery: queues to webhook endpoints, at least once.

A webhook is one more consumer of its queue: it claims messages exactly like a REST
consumer (so the two compete and each message goes to one of them), pushes, and settles.
The database holds all state -- the claim and its expiry on the message, the retry gate,
the runner lease and the endpoint's health on the subscription -- so a lost Celery task,
a flushed Redis or a killed worker delays delivery but loses nothing: claims and leases
run out, and the periodic sweep starts a run for every subscription with work due.

A run holds the subscription's lease (one runner at a time keeps the queue's order) and
works in rounds: it claims up to MESH_WEBHOOK_PREFETCH messages in one statement, pushes
them in order over one kept-alive connection, and settles the round in one transaction
(acknowledgements, the attempt log, the endpoint's health and the lease). A crash between
a push and its settle redelivers that message, as a crash between a push and an ack would.

A failed push gives the message back with a backoff (its claim's expiry becomes the retry
time), gives back unpushed ones as they were, and closes the subscription's gate until the
same instant, so an endpoint sees at most one attempt per backoff step -- never a hot loop.
Each claim counts as a delivery, so after the first delivery and `maxRedeliveryCount`
redeliveries a poison message moves to the dead message queue with the last response as
the reason. After a resume, the backlog goes out at a controlled rate that doubles every
few seconds (slow start), so an endpoint coming back is not flooded.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID, uuid4

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from meshsite import secretbox
from meshsite.errors import Conflict
from meshsite.secretbox import SecretUnreadable

from .. import dispatch, store
from ..models import AccessType, DeliveryAttempt, Message, WebhookStatus, WebhookSubscription
from ..store import rules
from . import netguard, signing
from .auth import TokenFetchFailed, authorization_for

log = logging.getLogger(__name__)
LOCK_MARGIN = 30.0  # seconds a claim outlives the pushes it may still have to wait for
QOS0_MAX_IDLE = 1.0  # seconds idle after which a connection is not reused for a qos-0 push


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    status_code: int | None = None
    error: str = ""
    retry_after: float | None = None
    latency_ms: float = 0.0
    excerpt: str = ""


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


# --- claiming ------------------------------------------------------------------------------


@dataclass
class Round:
    claimed: list[Message]
    full: bool  # took as many as it asked for: the queue may hold more
    lost: bool = False  # the lease is no longer this run's: stop


def _claim(subscription: WebhookSubscription, limit: int, now: datetime, runner: UUID | None = None) -> Round:
    """Take up to `limit` available messages in queue order, in one statement: qos 1 locks
    them to this webhook (each with a fresh claim id), qos 0 removes them. With `runner`,
    the run's lease is renewed in the same transaction first (fenced on the runner)."""
    queue = subscription.queue
    consumer = f"webhook:{subscription.pk}"
    lock_until = now + timedelta(seconds=_lease_seconds(subscription)) if subscription.qos == 1 else None
    with _engine_transaction(subscription):
        if runner is not None and _renew_lease(subscription, runner) is None:
            return Round([], full=False, lost=True)
        try:
            store.hold_exclusive(queue, consumer, now)
        except Conflict:
            return Round([], full=False)
        taken = store.claim(
            queue=queue, qos=subscription.qos, consumer=consumer, now=now, lock_until=lock_until,
            limit=store.flow_cap(queue, limit),
        )
    return Round(taken.messages, taken.full)


def _extend_claims(subscription: WebhookSubscription, runner: UUID, claimed: Sequence[Message]) -> float | None:
    """Keep a slow round alive: extend the lease (fenced) and the claims of the whole round,
    the pushed-but-unsettled ones included, and an EXCLUSIVE queue's consumer lease. Returns
    the new expiry (monotonic), or None when the lease is no longer this run's."""
    with _engine_transaction(subscription):
        until = _renew_lease(subscription, runner)
        if until is None:
            return None
        store.extend(claim_ids=[message.claim_id for message in claimed if message.claim_id], until=until)
        try:
            store.hold_exclusive(subscription.queue, f"webhook:{subscription.pk}", timezone.now())
        except Conflict:
            return None
    return time.monotonic() + _lease_seconds(subscription)


# --- a run ---------------------------------------------------------------------------------


_local = threading.local()


def _thread_session() -> netguard.Session:
    """The worker thread's session: at low rates every message has a run of its own, and a
    connection (a TLS handshake, for https) per run would cost more than the push."""
    session: netguard.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = netguard.Session(max_idle=settings.MESH_WEBHOOK_KEEPALIVE)
    return session


def _runnable(subscription_id: int) -> WebhookSubscription | None:
    try:  # get(), not filter().first(): no ORDER BY to compile on the path of every run
        subscription = WebhookSubscription.objects.select_related("queue").get(pk=subscription_id)
    except WebhookSubscription.DoesNotExist:
        return None
    return subscription if subscription.may_deliver else None


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
    subscription = _runnable(subscription_id)
    if subscription is None:
        return RunResult()
    budget = settings.MESH_WEBHOOK_BATCH
    rate = resume_rate(subscription, now)
    if rate is not None:
        budget = max(1, min(budget, math.floor(rate)))  # one second's worth, then a pause
    run = _Run(subscription, budget, rate)
    # qos 0 claims remove messages, so a worker dying mid-round would lose the unpushed
    # rest: it goes one message at a time, as a REST consumer does.
    prefetch = settings.MESH_WEBHOOK_PREFETCH if subscription.qos == 1 else 1
    limit = min(prefetch, budget)
    session = _thread_session()  # outlives the run: its connections serve the next runs
    with _engine_transaction(subscription):  # the lease and the first claim: one commit
        if not _take_lease(subscription, now, run.runner):
            return run.result
        batch = _claim(subscription, limit, now)
        if not batch.claimed:
            run.end()
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

    def __init__(self, subscription: WebhookSubscription, budget: int, rate: float | None) -> None:
        self.subscription = subscription
        self.budget = budget
        self.rate = rate
        self.runner = uuid4()
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
        fields: dict[str, Any] = {"runner_until": None, "runner": None}
        if result.more and self.rate is not None:
            pause = max(1.0 - (time.monotonic() - self.started), 0.0)
            result.paced_until = fields["next_attempt_at"] = timezone.now() + timedelta(seconds=pause)
        elif subscription.resumed_at is not None and not (result.more or result.failed or result.lost):
            fields["resumed_at"] = None  # the backlog is delivered: slow start is over
        WebhookSubscription.objects.filter(pk=subscription.pk, runner=self.runner).update(**fields)
        self.ended = True


# --- the push ------------------------------------------------------------------------------


def _headers(subscription: WebhookSubscription, message: Message) -> dict[str, str]:
    headers = {
        "Content-Type": message.content_type or subscription.default_content_type or "application/octet-stream",
        "x-address": message.address,
        "x-qos": str(subscription.qos),
        "x-message-id": str(message.uuid),
    }
    if subscription.signing_secrets:
        # webhook-id is the message's own id, so it stays the same on every retry.
        headers.update(signing.signature_headers(
            message_id=str(message.uuid), timestamp=int(time.time()), body=bytes(message.payload),
            secrets=[secretbox.unseal(sealed) for sealed in subscription.signing_secrets],
        ))
    return headers


def push(subscription: WebhookSubscription, message: Message, session: netguard.Session | None = None) -> Outcome:
    """One POST of `message` to the endpoint; a 401 under oauth2 fetches a new token once.

    Never raises: whatever goes wrong is an attempt that failed, so it is logged, counted
    towards maxRedeliveryCount and closes the retry gate -- an unexpected error must not
    turn into a message pushed again on every sweep.
    """
    if session is None:
        with netguard.Session() as own:
            return push(subscription, message, own)
    # A kept-alive connection found closed is retried once for qos 1 (at least once); a
    # qos-0 message is never sent twice, so it only reuses a connection that was busy a
    # moment ago, before a receiver's idle timeout could close it under the request.
    retry_stale = subscription.qos == 1
    max_idle = None if retry_stale else QOS0_MAX_IDLE
    try:
        headers = _headers(subscription, message)
        authorization = authorization_for(subscription)
        if authorization:
            headers["Authorization"] = authorization
        response = session.request(
            "POST", subscription.endpoint, headers=headers, content=bytes(message.payload), retry_stale=retry_stale,
            max_idle=max_idle,
        )
        if response.status_code == 401 and subscription.security.get("type") == "oauth2":
            headers["Authorization"] = authorization_for(subscription, refresh=True) or ""
            response = session.request(
                "POST", subscription.endpoint, headers=headers, content=bytes(message.payload), retry_stale=retry_stale,
                max_idle=max_idle,
            )
        succeeded = 200 <= response.status_code < 300
        return Outcome(
            succeeded=succeeded,
            status_code=response.status_code,
            error="" if succeeded else f"receiver answered {response.status_code}",
            retry_after=_retry_after(response) if response.status_code in (429, 503) else None,
            latency_ms=response.elapsed_ms,
            excerpt=response.body[:500].decode("utf-8", "replace"),
        )
    except (ValueError, netguard.DeliveryError, TokenFetchFailed, SecretUnreadable) as error:
        return Outcome(succeeded=False, error=str(error)[:500])
    except Exception as error:  # noqa: BLE001 - a bug must not become a hot loop; see above
        log.exception("webhook %s: push of %s failed unexpectedly", subscription.pk, message.uuid)
        return Outcome(succeeded=False, error=f"internal error: {type(error).__name__}: {error}"[:500])


def _retry_after(response: netguard.GuardedResponse) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when unusable."""
    value = response.headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        return float(int(value)) if len(value) <= 10 else 1e10  # int() refuses 4,300+ digits
    try:
        return max((parsedate_to_datetime(value) - timezone.now()).total_seconds(), 0.0)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def backoff_seconds(failures: int, retry_after: float | None) -> float:
    schedule = settings.MESH_WEBHOOK_RETRY_SCHEDULE
    if retry_after is not None:
        return min(retry_after, schedule[-1])
    step = schedule[min(failures, len(schedule)) - 1]
    return step * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security


# --- settling a round ------------------------------------------------------------------------


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
        store.give_back_failed(queue=subscription.queue, message=message, retry_at=retry_at, reason=reason)
    failing_since = subscription.failing_since or at
    paused = (at - failing_since).total_seconds() >= settings.MESH_WEBHOOK_PAUSE_AFTER
    WebhookSubscription.objects.filter(pk=subscription.pk).update(
        last_failed_delivery=at, last_failed_delivery_reason=outcome.error[:500], consecutive_failures=failures,
        next_attempt_at=retry_at, failing_since=failing_since,
        **({"status": WebhookStatus.PAUSED} if paused else {}),
    )
    subscription.consecutive_failures = failures
    subscription.failing_since = failing_since


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
