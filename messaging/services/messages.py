"""Publish, consume and acknowledge: the hot path of the mesh.

A publish is one INSERT (one per matching queue for a topic) after one indexed lookup; a
consume is one `UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING ...` (qos 1) or the same DELETE (qos 0). The storage rules (available, claim,
settle, capacity, the exclusive hold, durability) live in `messaging.store`; this module
validates, authorizes and chooses the SAP answers.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from meshsite.errors import Forbidden, Gone, Invalid, NotFound, TooLarge
from meshsite.platform.models import ServiceInstance

from .. import live, store
from ..mediatype import MAX_LENGTH, is_media_type
from ..metrics import meter_count_after_commit
from ..models import Message, Queue
from ..names import InvalidName, validate_queue_name, validate_topic
from ..selectors import queue_get, queues_subscribed_to, rules_for
from ..webhooks.waker import wake_after_publish

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
    # The publisher's own message properties as stored (Message.properties): AMQP only.
    properties: str = ""


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


def _row(queue: Queue, outgoing: Outgoing, address: str, now: datetime, expires_at: datetime) -> Message:
    return Message(
        queue=queue, payload=outgoing.payload, size=len(outgoing.payload),
        content_type=outgoing.content_type, address=address, qos=outgoing.qos,
        created_at=now, expires_at=expires_at, properties=outgoing.properties,
    )


def _wake(queue_ids: list[int]) -> None:
    # A wake-up only, sent without waiting: if the broker is down the publish still stands,
    # and the periodic sweep starts the delivery instead.
    wake_after_publish(queue_ids)


def _queue_name(name: str) -> str:
    try:
        return validate_queue_name(name)
    except InvalidName as error:
        raise Invalid(str(error)) from None


@dataclass(frozen=True)
class Accepted:
    """A publish that passed every check that needs no queue: where to, and its times."""

    name: str
    now: datetime
    expires_at: datetime


def publish_to_queue_accepted(*, instance: ServiceInstance, queue_name: str, outgoing: Outgoing) -> Accepted:
    """The checks of a queue publish before the queue is looked up, in the order (and with
    the answers) every path gives: name, message, the descriptor's rules, expiration."""
    name = _queue_name(queue_name)
    _validated(outgoing)
    if not rules_for(instance).allows("queueRules", "publishFilter", name):
        raise Forbidden(f"The instance's queue rules do not allow publishing to {name!r}")
    now = timezone.now()
    return Accepted(name, now, _expires_at(now, outgoing.expiration_ms))


def message_publish_to_queue(*, instance: ServiceInstance, queue_name: str, outgoing: Outgoing) -> Message:
    accepted = publish_to_queue_accepted(instance=instance, queue_name=queue_name, outgoing=outgoing)
    name, now, expires_at = accepted.name, accepted.now, accepted.expires_at
    queue = queue_get(instance=instance, name=name)
    store.check_message_size([queue], len(outgoing.payload))
    message = _row(queue, outgoing, f"queue:{name}", now, expires_at)
    try:
        if outgoing.qos == 1 and not store.has_capacity_limits(queue):
            # The common case is one autocommit INSERT: durable when it returns, and one
            # round trip less than BEGIN ... COMMIT.
            message.save(force_insert=True)
        else:
            with transaction.atomic():
                store.relax_for_publish(outgoing.qos)
                store.check_capacity([queue], len(outgoing.payload))
                message.save(force_insert=True)
    except IntegrityError:  # the queue was deleted after it was looked up
        raise NotFound("Queue does not exist") from None
    # Registered after the row is written: outside a transaction this runs at once.
    meter_count_after_commit(queue.pk, "published")
    transaction.on_commit(lambda: live.queues_written([queue.pk]))
    if queue.has_webhooks:
        transaction.on_commit(lambda: _wake([queue.pk]))
    return message


def publish_to_topic_accepted(*, instance: ServiceInstance, topic: str, outgoing: Outgoing) -> Accepted:
    """The checks of a topic publish before its subscribers are looked up."""
    try:
        validate_topic(topic)
    except InvalidName as error:
        raise Invalid(str(error)) from None
    _validated(outgoing)
    if not rules_for(instance).allows("topicRules", "publishFilter", topic):
        raise Forbidden(f"The instance's topic rules do not allow publishing to {topic!r}")
    now = timezone.now()
    return Accepted(topic, now, _expires_at(now, outgoing.expiration_ms))


def message_publish_to_topic(*, instance: ServiceInstance, topic: str, outgoing: Outgoing) -> int:
    """Fan a message out to every queue of the subaccount subscribed to `topic`.

    Topics are not persistent: with no matching subscription the message is dropped. The
    fan-out is all or nothing, so a publish answered 2xx is in every matching queue.
    Returns the number of queues it went to.
    """
    accepted = publish_to_topic_accepted(instance=instance, topic=topic, outgoing=outgoing)
    now, expires_at = accepted.now, accepted.expires_at
    with transaction.atomic():
        store.relax_for_publish(outgoing.qos)
        queues = queues_subscribed_to(subaccount_id=instance.subaccount_id, topic=topic)
        transaction.on_commit(lambda: _live(instance.subaccount_id, topic, outgoing, now, [q.pk for q in queues]))
        if queues:
            store.check_message_size(queues, len(outgoing.payload))
            store.check_capacity(queues, len(outgoing.payload))
            pushed = [q.pk for q in queues if q.has_webhooks]
            if pushed:
                transaction.on_commit(lambda: _wake(pushed))
            try:
                with transaction.atomic():
                    Message.objects.bulk_create([_row(q, outgoing, f"topic:{topic}", now, expires_at) for q in queues])
                for queue in queues:  # after the insert stood: a retry below counts its own
                    meter_count_after_commit(queue.pk, "published")
            except IntegrityError:  # a subscribed queue was deleted meanwhile: publish to the rest
                return message_publish_to_topic(instance=instance, topic=topic, outgoing=outgoing)
    return len(queues)


def _live(subaccount_id: int, topic: str, outgoing: Outgoing, now: datetime, queue_ids: list[int]) -> None:
    live.queues_written(queue_ids)
    live.topic_published(live.LiveMessage.of(
        subaccount_id=subaccount_id, topic=topic, payload=outgoing.payload, content_type=outgoing.content_type,
        properties=outgoing.properties, qos=outgoing.qos, now=now,
    ))


def consume_accepted(*, instance: ServiceInstance, queue_name: str, qos: int) -> str:
    """The checks of a consume before the queue is looked up; returns the queue name."""
    if qos not in (0, 1):
        raise Invalid("x-qos is invalid")
    name = _queue_name(queue_name)
    if not rules_for(instance).allows("queueRules", "subscribeFilter", name):
        raise Forbidden(f"The instance's queue rules do not allow consuming from {name!r}")
    return name


def lock_until(now: datetime, qos: int, lock_seconds: float | None = None) -> datetime | None:
    """Until when a consumed message is held: qos 1 for MESH_ACK_TIMEOUT, qos 0 not at all."""
    return now + timedelta(seconds=lock_seconds or settings.MESH_ACK_TIMEOUT) if qos == 1 else None


def message_consume(
    *, instance: ServiceInstance, queue_name: str, qos: int, consumer: str, lock_seconds: float | None = None
) -> Delivery | None:
    """Take the oldest available message: qos 0 removes it, qos 1 locks it to `consumer`
    until acknowledged or until `lock_seconds` (default MESH_ACK_TIMEOUT) pass."""
    name = consume_accepted(instance=instance, queue_name=queue_name, qos=qos)
    now = timezone.now()
    with transaction.atomic():
        if store.claim_may_skip_flush(qos):
            store.commit_without_flush()
        queue = queue_get(instance=instance, name=name)
        store.hold_exclusive(queue, consumer, now)
        taken = store.claim(queue=queue, qos=qos, consumer=consumer, now=now,
                            lock_until=lock_until(now, qos, lock_seconds), flow_limit=store.flow_limit(queue, qos))
    if not taken.messages:
        return None
    message = taken.messages[0]
    message.queue = queue
    return Delivery(message=message, message_id=str(message.claim_id if qos == 1 else message.uuid))


def message_release(*, claim_id: str, delay_seconds: float) -> bool:
    """Give a held qos-1 message back: available again after `delay_seconds` (a retry
    backoff), its delivery count kept, so maxRedeliveryCount still applies."""
    until = timezone.now() + timedelta(seconds=delay_seconds)
    return bool(store.give_back_at(claim_ids=[uuid.UUID(claim_id)], available_at=until))


def message_ack(*, instance: ServiceInstance, queue_name: str, message_id: str) -> None:
    name, claim_id = ack_accepted(queue_name=queue_name, message_id=message_id)
    now = timezone.now()
    # One DELETE settles the common case; only a refusal pays for finding out why.
    with transaction.atomic():
        if store.settle_may_skip_flush():
            store.commit_without_flush()
        settled = store.settle(claim_ids=[claim_id], held_at=now, instance_id=instance.pk, queue_name=name)
    if settled:
        return
    queue = queue_get(instance=instance, name=name)
    ack_refused(still_queued=Message.objects.filter(queue=queue, claim_id=claim_id).exists())


NOT_HELD = "Message does not exist or is not held by a consumer"


def ack_accepted(*, queue_name: str, message_id: str) -> tuple[str, uuid.UUID]:
    """The checks of an acknowledgement before the store: the queue name and the claim id."""
    name = _queue_name(queue_name)
    try:
        return name, uuid.UUID(message_id)
    except ValueError:
        raise NotFound(NOT_HELD) from None


def ack_refused(*, still_queued: bool) -> NoReturn:
    """Why an acknowledgement settled nothing: the lock ran out (the message is back in the
    queue under its old claim id) or there is no such held message."""
    if still_queued:
        raise Gone("The message lock expired and the message returned to the queue")
    raise NotFound(NOT_HELD)
