"""Publish, consume and acknowledge: the hot path of the mesh.

A publish is one INSERT (one per matching queue for a topic) after one indexed lookup; a
consume is one `SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1` plus an UPDATE (qos 1) or a
DELETE (qos 0). Queue counters are not kept on the queue row: a hot row would serialize
every publisher on one lock, so capacity limits are checked by counting, and only on queues
that have a limit.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from meshsite.errors import Conflict, Forbidden, Gone, Invalid, LimitReached, NotFound, TooLarge
from meshsite.platform.models import ServiceInstance

from ..mediatype import MAX_LENGTH, is_media_type
from ..models import AccessType, Message, Queue
from ..names import InvalidName, validate_queue_name, validate_topic
from ..selectors import queue_get, queues_stats, queues_subscribed_to, rules_for
from .deadletter import message_dead_letter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    message: Message
    # What the consumer acknowledges with: a fresh claim id per qos-1 delivery, so an ack
    # for an earlier delivery (lock expired, message handed to someone else) is refused.
    message_id: str


@dataclass(frozen=True)
class Outgoing:
    payload: bytes
    content_type: str
    qos: int
    expiration_ms: int | None = None


def _validated(outgoing: Outgoing) -> None:
    if outgoing.qos not in (0, 1):
        raise Invalid("x-qos is invalid")
    # It goes out again as the header of every consume and push: a receiver must parse it.
    if not is_media_type(outgoing.content_type):
        raise Invalid(f"Content-Type is missing or not a media type (type/subtype; name=value), at most {MAX_LENGTH}"
                      " characters")
    if len(outgoing.payload) > settings.MESH_MAX_MESSAGE_SIZE:
        raise TooLarge(f"Message exceeds the maximum message size of {settings.MESH_MAX_MESSAGE_SIZE} bytes")


def _expires_at(now: datetime, expiration_ms: int | None) -> datetime:
    if expiration_ms is None:
        expiration_ms = settings.MESH_DEFAULT_EXPIRATION_MS
    if not 1 <= expiration_ms <= settings.MESH_MAX_EXPIRATION_MS:
        raise Invalid(f"x-message-expiration must be between 1 and {settings.MESH_MAX_EXPIRATION_MS} ms")
    return now + timedelta(milliseconds=expiration_ms)


def commit_without_flush() -> None:
    """Let the current transaction's commit return before the WAL is flushed (PostgreSQL):
    for writes whose loss in a database crash is acceptable, never for an answered publish."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _relax_durability(qos: int) -> None:
    # qos 0 promises at-most-once: its commit need not wait for the WAL flush.
    if qos == 0:
        commit_without_flush()


def _check_message_size(queues: list[Queue], size: int) -> None:
    for queue in queues:
        if queue.max_message_size_in_bytes and size > queue.max_message_size_in_bytes:
            raise TooLarge(f"Message exceeds the maximum message size of queue {queue.name}")


def _check_capacity(queues: list[Queue], size: int) -> None:
    limited = [queue for queue in queues if queue.has_capacity_limits]
    if not limited:
        return
    # Serialize the publishers of limited queues (in id order, so fan-outs cannot deadlock);
    # NO KEY UPDATE leaves the foreign-key locks of concurrent inserts unblocked.
    list(Queue.objects.select_for_update(no_key=True).filter(pk__in=[q.pk for q in limited]).order_by("pk"))
    stats = queues_stats(queues=limited)
    for queue in limited:
        current = stats[queue.pk]
        count_full = queue.max_queue_message_count and current.message_count + 1 > queue.max_queue_message_count
        size_full = queue.max_queue_size_in_bytes and current.size_in_bytes + size > queue.max_queue_size_in_bytes
        if count_full or size_full:
            raise LimitReached(f"Queue {queue.name} is full", headers={"Retry-After": "1"})


def _row(queue: Queue, outgoing: Outgoing, address: str, now: datetime, expires_at: datetime) -> Message:
    return Message(
        queue=queue, payload=outgoing.payload, size=len(outgoing.payload),
        content_type=outgoing.content_type, address=address, qos=outgoing.qos,
        created_at=now, expires_at=expires_at,
    )


def _wake(queue_ids: list[int]) -> None:
    # A wake-up only, sent without waiting: if the broker is down the publish still stands,
    # and the periodic sweep starts the delivery instead.
    from ..webhooks.waker import wake_after_publish

    wake_after_publish(queue_ids)


def _queue_name(name: str) -> str:
    try:
        return validate_queue_name(name)
    except InvalidName as error:
        raise Invalid(str(error)) from None


def message_publish_to_queue(*, instance: ServiceInstance, queue_name: str, outgoing: Outgoing) -> Message:
    name = _queue_name(queue_name)
    _validated(outgoing)
    if not rules_for(instance).allows("queueRules", "publishFilter", name):
        raise Forbidden(f"The instance's queue rules do not allow publishing to {name!r}")
    now = timezone.now()
    expires_at = _expires_at(now, outgoing.expiration_ms)
    queue = queue_get(instance=instance, name=name)
    _check_message_size([queue], len(outgoing.payload))
    message = _row(queue, outgoing, f"queue:{name}", now, expires_at)
    try:
        if outgoing.qos == 1 and not queue.has_capacity_limits:
            # The common case is one autocommit INSERT: durable when it returns, and one
            # round trip less than BEGIN ... COMMIT.
            message.save(force_insert=True)
        else:
            with transaction.atomic():
                _relax_durability(outgoing.qos)
                _check_capacity([queue], len(outgoing.payload))
                message.save(force_insert=True)
    except IntegrityError:  # the queue was deleted after it was looked up
        raise NotFound("Queue does not exist") from None
    if queue.has_webhooks:
        # Registered after the row is written: outside a transaction this runs at once.
        transaction.on_commit(lambda: _wake([queue.pk]))
    return message


def message_publish_to_topic(*, instance: ServiceInstance, topic: str, outgoing: Outgoing) -> int:
    """Fan a message out to every queue of the subaccount subscribed to `topic`.

    Topics are not persistent: with no matching subscription the message is dropped. The
    fan-out is all or nothing, so a publish answered 2xx is in every matching queue.
    Returns the number of queues it went to.
    """
    try:
        validate_topic(topic)
    except InvalidName as error:
        raise Invalid(str(error)) from None
    _validated(outgoing)
    if not rules_for(instance).allows("topicRules", "publishFilter", topic):
        raise Forbidden(f"The instance's topic rules do not allow publishing to {topic!r}")
    now = timezone.now()
    expires_at = _expires_at(now, outgoing.expiration_ms)
    with transaction.atomic():
        _relax_durability(outgoing.qos)
        queues = queues_subscribed_to(subaccount_id=instance.subaccount_id, topic=topic)
        if queues:
            _check_message_size(queues, len(outgoing.payload))
            _check_capacity(queues, len(outgoing.payload))
            pushed = [q.pk for q in queues if q.has_webhooks]
            if pushed:
                transaction.on_commit(lambda: _wake(pushed))
            try:
                with transaction.atomic():
                    Message.objects.bulk_create([_row(q, outgoing, f"topic:{topic}", now, expires_at) for q in queues])
            except IntegrityError:  # a subscribed queue was deleted meanwhile: publish to the rest
                return message_publish_to_topic(instance=instance, topic=topic, outgoing=outgoing)
    return len(queues)


def hold_exclusive(queue: Queue, consumer: str, now: datetime) -> None:
    """Take or renew an EXCLUSIVE queue's consumer lease for `consumer`, or raise Conflict."""
    locked = Queue.objects.select_for_update(no_key=True).get(pk=queue.pk)
    if not locked.admits_consumer(consumer, now):
        raise Conflict(f"Queue {queue.name} is EXCLUSIVE and another consumer is active")
    lease = now + timedelta(seconds=settings.MESH_ACK_TIMEOUT)
    Queue.objects.filter(pk=queue.pk).update(exclusive_owner=consumer, exclusive_until=lease)


def _check_unacked(queue: Queue, consumer: str, now: datetime) -> None:
    limit = queue.max_delivered_unacked_msgs_per_flow
    if not limit:
        return
    held = Message.objects.filter(queue=queue, claimed_by=consumer, locked_until__gt=now)[:limit].count()
    if held >= limit:
        raise LimitReached(
            f"{held} messages are delivered and unacknowledged (maxDeliveredUnackedMsgsPerFlow); "
            "acknowledge some first"
        )


def _claim_next(queue: Queue, now: datetime) -> Message | None:
    available = Message.objects.select_for_update(skip_locked=True).filter(
        Q(locked_until__isnull=True) | Q(locked_until__lte=now), queue=queue
    )
    if queue.respect_ttl:
        available = available.filter(expires_at__gt=now)
    while True:
        message = available.order_by("id").first()
        if message is None or not message.redeliveries_exhausted(queue):
            return message
        message_dead_letter(message=message, queue=queue, reason="maxRedeliveryCount exceeded")


def message_consume(
    *, instance: ServiceInstance, queue_name: str, qos: int, consumer: str, lock_seconds: float | None = None
) -> Delivery | None:
    """Take the oldest available message: qos 0 removes it, qos 1 locks it to `consumer`
    until acknowledged or until `lock_seconds` (default MESH_ACK_TIMEOUT) pass."""
    if qos not in (0, 1):
        raise Invalid("x-qos is invalid")
    name = _queue_name(queue_name)
    if not rules_for(instance).allows("queueRules", "subscribeFilter", name):
        raise Forbidden(f"The instance's queue rules do not allow consuming from {name!r}")
    now = timezone.now()
    with transaction.atomic():
        queue = queue_get(instance=instance, name=name)
        if queue.access_type == AccessType.EXCLUSIVE:
            hold_exclusive(queue, consumer, now)
        if qos == 1:
            _check_unacked(queue, consumer, now)
        message = _claim_next(queue, now)
        if message is None:
            return None
        message.queue = queue
        # This delivery counts, with either qos (a first delivery is 1); for qos 0 only in
        # the answer, since the row is gone.
        message.delivery_count += 1
        if qos == 0:
            Message.objects.filter(pk=message.pk).delete()
            return Delivery(message=message, message_id=str(message.uuid))
        message.locked_until = now + timedelta(seconds=lock_seconds or settings.MESH_ACK_TIMEOUT)
        message.claim_id = uuid.uuid4()
        message.claimed_by = consumer
        message.save(update_fields=["locked_until", "claim_id", "claimed_by", "delivery_count"])
        return Delivery(message=message, message_id=str(message.claim_id))


def message_release(*, claim_id: str, delay_seconds: float) -> bool:
    """Give a held qos-1 message back: available again after `delay_seconds` (a retry
    backoff), its delivery count kept, so maxRedeliveryCount still applies."""
    until = timezone.now() + timedelta(seconds=delay_seconds)
    return bool(Message.objects.filter(claim_id=claim_id).update(locked_until=until))


def message_ack(*, instance: ServiceInstance, queue_name: str, message_id: str) -> None:
    name = _queue_name(queue_name)
    try:
        claim_id = uuid.UUID(message_id)
    except ValueError:
        raise NotFound("Message does not exist or is not held by a consumer") from None
    now = timezone.now()
    # One DELETE settles the common case; only a refusal pays for finding out why.
    held = Message.objects.filter(
        queue__instance=instance, queue__name=name, claim_id=claim_id, locked_until__gt=now
    )
    deleted, _ = held.delete()
    if deleted:
        return
    queue = queue_get(instance=instance, name=name)
    if Message.objects.filter(queue=queue, claim_id=claim_id).exists():
        raise Gone("The message lock expired and the message returned to the queue")
    raise NotFound("Message does not exist or is not held by a consumer")
