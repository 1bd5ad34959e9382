"""Claiming and settling messages: the consumer side of the store, shared by REST consumers
and the webhook engine (and next by AMQP links). Every function runs in the caller's
transaction; none decides an answer's status or shape, that stays with the caller."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction

from meshsite.errors import Conflict

from ..metrics.meter import meter_count, meter_count_after_commit
from ..models import AccessType, Message
from . import rules, statements
from .capacity import check_unacked
from .deadletter import dead_letter
from .execute import fetch, fetch_messages, postgres, run
from .queues import StoredQueue

EXHAUSTED = "maxRedeliveryCount exceeded"


@dataclass(frozen=True)
class Claim:
    messages: list[Message]  # in queue order; delivery_count includes this delivery
    full: bool  # the statement took as many as asked: the queue may hold more


def claim(
    *, queue: StoredQueue, qos: int, consumer: str, now: datetime, lock_until: datetime | None = None,
    limit: int = 1, flow_limit: int = 0,
) -> Claim:
    """Take up to `limit` available messages, oldest first, in one statement per attempt.

    qos 1 locks them to `consumer` until `lock_until`, each with a fresh claim id (what an
    acknowledgement names, so an ack for an earlier delivery is refused); qos 0 removes them.
    Either way the delivery counts (for qos 0 only in the returned message). A message
    whose redeliveries were already exhausted goes to the dead message queue instead, and
    the claim looks again. With `flow_limit` (maxDeliveredUnackedMsgsPerFlow, for a consumer
    that holds messages across requests), a consumer at its limit gets LimitReached, checked
    in the claim itself: a count of its own is paid only when the claim finds nothing.
    """
    while True:
        statement = statements.claim(
            postgres=postgres(), queue_id=queue.pk, respect_ttl=queue.respect_ttl, qos=qos, now=now, limit=limit,
            lock_until=lock_until, consumer=consumer, flow_limit=flow_limit,
            redelivery_delay_ms=queue.redelivery_delay_in_ms, max_redelivery_delay_ms=queue.max_redelivery_delay_in_ms,
        )
        taken = fetch_messages(statement)
        if not taken and flow_limit:
            check_unacked(queue, consumer, now)  # at the limit, or simply nothing there
        full = len(taken) == limit
        if qos == 0:
            for message in taken:
                message.delivery_count += 1
        live = []
        for message in taken:
            if redeliveries_exhausted(message.delivery_count, queue):
                dead_letter(message=message, queue=queue, reason=EXHAUSTED, removed=qos == 0)
            else:
                live.append(message)
        if live or not full:
            live.sort(key=lambda message: message.pk)  # RETURNING promises no order
            meter_count_after_commit(queue.pk, "consumed", len(live))
            return Claim(live, full)


def redeliveries_exhausted(delivery_count: int, queue: StoredQueue) -> bool:
    """Whether a message just claimed (`delivery_count` includes this delivery) had already
    been delivered once plus maxRedeliveryCount times: it goes to the dead message queue
    instead of the consumer."""
    return rules.exhausted(delivery_count - 1, queue.max_redelivery_count)


def dead_letter_exhausted(*, message: Message, queue: StoredQueue, removed: bool) -> None:
    """For a claim made outside a transaction (the hot path): dead-letter what
    `redeliveries_exhausted` found, in a transaction of its own."""
    with transaction.atomic():
        dead_letter(message=message, queue=queue, reason=EXHAUSTED, removed=removed)


def exclusive_until(now: datetime) -> datetime:
    """How long an EXCLUSIVE queue's consumer lease lasts without a consume: MESH_ACK_TIMEOUT."""
    return now + timedelta(seconds=settings.MESH_ACK_TIMEOUT)


def settle(*, claim_ids: Sequence[UUID], held_at: datetime | None = None,
           instance_id: UUID | None = None, queue_name: str | None = None) -> int:
    """Acknowledge: remove the claimed messages. Returns how many were removed.

    REST passes `held_at` (SAP: an ack after the lock expired is refused, the message went
    back); the webhook engine does not, since its run's lease keeps its claims alive and a
    claim taken over by another consumer has a new claim id anyway."""
    if not claim_ids:
        return 0
    statement = statements.settle(postgres=postgres(), claim_ids=list(claim_ids), held_at=held_at,
                                  instance_id=instance_id, queue_name=queue_name)
    rows = fetch(statement)
    count_returned(statement, rows, after_commit=True)
    return len(rows)


def count_returned(statement: statements.Statement, rows: Sequence[Sequence[Any]], *,
                   after_commit: bool = False) -> None:
    """The meter's count of a statement that returns a queue id per row it changed
    (`Statement.counted`): the sync path, the hot path and the WebSocket sessions run the same
    settle statement, and each counts its rows here. `after_commit` inside a transaction."""
    if not statement.counted:
        return
    count = meter_count_after_commit if after_commit else meter_count
    for queue_id, n in Counter(int(row[0]) for row in rows).items():
        count(queue_id, statement.counted, n)


def give_back_at(*, claim_ids: Sequence[UUID], available_at: datetime) -> int:
    """Release held messages for a later attempt at exactly `available_at` (the caller's own
    schedule, no redelivery delay), their delivery counted."""
    if not claim_ids:
        return 0
    return run(statements.give_back_at(postgres=postgres(), claim_ids=list(claim_ids), available_at=available_at))


def give_back_failed(*, claim_ids: Sequence[UUID], now: datetime) -> int:
    """Deliveries that failed (AMQP Rejected, Modified(delivery-failed), a WebSocket nack):
    each message waits out its queue's redelivery delay before it is offered again. Returns
    how many were still held. An exhausted one reaches the dead message queue at the next
    claim or sweep after its delay, as one whose lock ran out does."""
    if not claim_ids:
        return 0
    return run(statements.give_back_failed(postgres=postgres(), claim_ids=list(claim_ids), now=now))


def give_back_unattempted(*, messages: Sequence[Message], qos: int) -> None:
    """Return claimed messages that were never attempted, as they were before the claim: a
    qos-1 claim is undone (not counted); a qos-0 message, removed by its claim, is written
    again with the same id, so it keeps its place in the queue."""
    if not messages:
        return
    # Never handed to anyone: the claim's count of them is taken back.
    meter_count_after_commit(messages[0].queue_id, "consumed", -len(messages))
    if qos == 1:
        run(statements.give_back_uncounted(postgres=postgres(), claim_ids=[m.claim_id for m in messages if m.claim_id]))
        return
    for message in messages:
        message.delivery_count -= 1  # the claim counted this delivery in the returned copy only
    Message.objects.bulk_create(list(messages))


def give_back_for_retry(*, queue: StoredQueue, message: Message, retry_at: datetime, reason: str) -> None:
    """A qos-1 delivery failed and the caller keeps its own retry schedule (the webhook
    engine's backoff): dead-letter it if that was its last allowed delivery, else make it
    available again at exactly `retry_at`."""
    if rules.exhausted(message.delivery_count, queue.max_redelivery_count):
        held = Message.objects.filter(claim_id=message.claim_id).first()
        if held is not None:  # still ours: not taken over after an expired lock
            dead_letter(message=held, queue=queue, reason=reason)
        return
    give_back_at(claim_ids=[message.claim_id] if message.claim_id else [], available_at=retry_at)


def extend(*, claim_ids: Sequence[UUID], until: datetime) -> None:
    if claim_ids:
        run(statements.extend(postgres=postgres(), claim_ids=list(claim_ids), until=until))


def hold_exclusive(queue: StoredQueue, consumer: str, now: datetime) -> None:
    """Take or renew an EXCLUSIVE queue's consumer lease for `consumer`, or raise Conflict.
    Non-exclusive queues need nothing (and get no write)."""
    if queue.access_type != AccessType.EXCLUSIVE:
        return
    until = exclusive_until(now)
    if not run(statements.hold_exclusive(queue_id=queue.pk, consumer=consumer, now=now, until=until)):
        raise Conflict(f"Queue {queue.name} is EXCLUSIVE and another consumer is active")


def has_available(*, queue: StoredQueue, now: datetime, extra: tuple[str, list[object]] | None = None) -> bool:
    """Whether a claim now would find a message; `extra` adds a condition (SQL, params)."""
    statement = statements.has_available(queue_id=queue.pk, respect_ttl=queue.respect_ttl, now=now)
    if extra is not None:
        statement = statements.Statement(f"{statement.sql} AND {extra[0]}", [*statement.params, *extra[1]])
    statement = statements.Statement(f"{statement.sql} LIMIT 1", statement.params)
    return bool(fetch(statement))
