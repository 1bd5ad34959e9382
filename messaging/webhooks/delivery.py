"""Push delivery: queues to webhook endpoints, at least once.

A webhook is one more consumer of its queue: it claims messages exactly like a REST
consumer (so the two compete and each message goes to one of them), pushes, and settles.
The database holds all state -- the claim and its expiry on the message, the retry gate,
the runner lease and the endpoint's health on the subscription -- so a lost Celery task,
a flushed Redis or a killed worker delays delivery but loses nothing: claims and leases
run out, and the periodic sweep starts a run for every subscription with work due.

A failed push gives the message back with a backoff (the claim's expiry becomes the retry
time) and closes the subscription's gate until then, so an endpoint sees at most one
attempt per backoff step -- never a hot loop. Each claim counts as a delivery, so the
queue's maxRedeliveryCount moves a poison message to the dead message queue with the last
response as the reason.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from meshsite import secretbox
from meshsite.errors import MeshError
from meshsite.secretbox import SecretUnreadable

from ..models import DeliveryAttempt, Message, WebhookStatus, WebhookSubscription
from ..services import message_ack, message_consume, message_release
from ..services.deadletter import message_dead_letter
from . import netguard, signing
from .auth import TokenFetchFailed, authorization_for

log = logging.getLogger(__name__)
LOCK_MARGIN = 30.0  # seconds a claim outlives the push's own deadline


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    status_code: int | None = None
    error: str = ""
    retry_after: float | None = None
    latency_ms: float = 0.0
    excerpt: str = ""


def _lease_seconds() -> float:
    return settings.MESH_WEBHOOK_TIMEOUT + LOCK_MARGIN


def _take_lease(subscription_id: int, now: datetime) -> bool:
    free = Q(runner_until__isnull=True) | Q(runner_until__lt=now)
    until = now + timedelta(seconds=_lease_seconds())
    return bool(WebhookSubscription.objects.filter(free, pk=subscription_id).update(runner_until=until))


def _extend_lease(subscription_id: int) -> None:
    until = timezone.now() + timedelta(seconds=_lease_seconds())
    WebhookSubscription.objects.filter(pk=subscription_id).update(runner_until=until)


def _deliverable(subscription_id: int, now: datetime) -> WebhookSubscription | None:
    subscription = (
        WebhookSubscription.objects.select_related("instance", "queue").filter(pk=subscription_id).first()
    )
    if subscription is None or not subscription.may_deliver:
        return None
    if subscription.next_attempt_at and subscription.next_attempt_at > now:
        return None
    return subscription


def webhook_deliver_batch(*, subscription_id: int) -> int:
    """Push up to MESH_WEBHOOK_BATCH messages in queue order; stop at the first failure.
    Returns the number delivered."""
    now = timezone.now()
    subscription = _deliverable(subscription_id, now)
    if subscription is None or not _take_lease(subscription_id, now):
        return 0
    delivered = 0
    try:
        for _ in range(settings.MESH_WEBHOOK_BATCH):
            delivery = message_consume(
                instance=subscription.instance, queue_name=subscription.queue.name, qos=subscription.qos,
                consumer=f"webhook:{subscription.pk}", lock_seconds=_lease_seconds(),
            )
            if delivery is None:
                break
            outcome = push(subscription, delivery.message)
            _settle(subscription, delivery.message, delivery.message_id, outcome)
            if not outcome.succeeded:
                break
            delivered += 1
            _extend_lease(subscription.pk)
    finally:
        WebhookSubscription.objects.filter(pk=subscription_id).update(runner_until=None)
    return delivered


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


def push(subscription: WebhookSubscription, message: Message) -> Outcome:
    """One POST of `message` to the endpoint; a 401 under oauth2 fetches a new token once."""
    body = bytes(message.payload)
    try:
        headers = _headers(subscription, message)
        authorization = authorization_for(subscription)
        if authorization:
            headers["Authorization"] = authorization
        response = netguard.guarded_request("POST", subscription.endpoint, headers=headers, content=body)
        if response.status_code == 401 and subscription.security.get("type") == "oauth2":
            headers["Authorization"] = authorization_for(subscription, refresh=True) or ""
            response = netguard.guarded_request("POST", subscription.endpoint, headers=headers, content=body)
    except (ValueError, netguard.DeliveryError, TokenFetchFailed, SecretUnreadable) as error:
        return Outcome(succeeded=False, error=str(error)[:500])
    succeeded = 200 <= response.status_code < 300
    return Outcome(
        succeeded=succeeded,
        status_code=response.status_code,
        error="" if succeeded else f"receiver answered {response.status_code}",
        retry_after=_retry_after(response) if response.status_code in (429, 503) else None,
        latency_ms=response.elapsed_ms,
        excerpt=response.body[:500].decode("utf-8", "replace"),
    )


def _retry_after(response: netguard.GuardedResponse) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max((parsedate_to_datetime(value) - timezone.now()).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def backoff_seconds(failures: int, retry_after: float | None) -> float:
    schedule = settings.MESH_WEBHOOK_RETRY_SCHEDULE
    if retry_after is not None:
        return min(retry_after, schedule[-1])
    step = schedule[min(failures, len(schedule)) - 1]
    return step * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security


def _settle(subscription: WebhookSubscription, message: Message, message_id: str, outcome: Outcome) -> None:
    now = timezone.now()
    DeliveryAttempt.objects.create(
        subscription=subscription, message_uuid=message.uuid, attempted_at=now, succeeded=outcome.succeeded,
        status_code=outcome.status_code, latency_ms=outcome.latency_ms, error=outcome.error,
        response_excerpt=outcome.excerpt,
    )
    if outcome.succeeded:
        _succeeded(subscription, message_id, now)
    else:
        _failed(subscription, message, message_id, outcome, now)


def _succeeded(subscription: WebhookSubscription, message_id: str, now: datetime) -> None:
    if subscription.qos == 1:
        try:
            message_ack(instance=subscription.instance, queue_name=subscription.queue.name, message_id=message_id)
        except MeshError as error:  # the claim ran out mid-push: it will be delivered again
            log.warning("webhook %s: ack after push failed: %s", subscription.pk, error)
    WebhookSubscription.objects.filter(pk=subscription.pk).update(
        last_successful_delivery=now, consecutive_failures=0, next_attempt_at=None, failing_since=None
    )
    subscription.consecutive_failures = 0
    subscription.failing_since = None


def _failed(
    subscription: WebhookSubscription, message: Message, message_id: str, outcome: Outcome, now: datetime
) -> None:
    failures = subscription.consecutive_failures + 1
    delay = backoff_seconds(failures, outcome.retry_after)
    if subscription.qos == 1:
        _give_back(subscription, message, message_id, outcome, delay)
    failing_since = subscription.failing_since or now
    paused = (now - failing_since).total_seconds() >= settings.MESH_WEBHOOK_PAUSE_AFTER
    WebhookSubscription.objects.filter(pk=subscription.pk).update(
        last_failed_delivery=now, last_failed_delivery_reason=outcome.error[:500], consecutive_failures=failures,
        next_attempt_at=now + timedelta(seconds=delay), failing_since=failing_since,
        **({"status": WebhookStatus.PAUSED} if paused else {}),
    )
    subscription.consecutive_failures = failures
    subscription.failing_since = failing_since


def _give_back(subscription: WebhookSubscription, message: Message, message_id: str, outcome: Outcome,
               delay: float) -> None:
    queue = subscription.queue
    if message.redeliveries_exhausted(queue):
        held = Message.objects.filter(claim_id=message_id).first()
        if held is not None:
            reason = f"webhook {subscription.name}: {outcome.error}; {outcome.excerpt}".strip("; ")
            message_dead_letter(message=held, queue=queue, reason=reason)
        return
    message_release(claim_id=message_id, delay_seconds=delay)


def webhook_has_work(subscription_id: int) -> bool:
    """Whether a run should start now: asked after a run ends, since a wake-up that came
    while the run still held its lease was turned away."""
    return subscription_id in webhooks_due(only=subscription_id)


def webhooks_due(now: datetime | None = None, *, only: int | None = None) -> list[int]:
    """Subscriptions with messages waiting, allowed to deliver, and no run in progress."""
    now = now or timezone.now()
    available = Message.objects.filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now), queue=OuterRef("queue"))
    due = WebhookSubscription.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        Q(runner_until__isnull=True) | Q(runner_until__lt=now),
        WebhookSubscription.deliverable(),
    ).filter(Exists(available))
    if only is not None:
        due = due.filter(pk=only)
    return list(due.values_list("pk", flat=True))


def wake_webhooks(queue_ids: list[int]) -> None:
    """After a publish commits: start a run for the active webhooks of these queues."""
    from ..tasks import webhook_deliver  # tasks import this module

    ids = WebhookSubscription.objects.filter(WebhookSubscription.deliverable(), queue_id__in=queue_ids).values_list(
        "pk", flat=True
    )
    for subscription_id in ids:
        webhook_deliver.delay(subscription_id)
