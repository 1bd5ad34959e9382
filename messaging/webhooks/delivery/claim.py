"""Claiming a round of messages for a run, and keeping a slow round's claims alive."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.utils import timezone

from meshsite.errors import Conflict

from ... import store
from ...models import Message, WebhookSubscription
from .lease import _engine_transaction, _lease_seconds, _renew_lease


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
