"""Queues and their topic subscriptions (the management API's writes)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from meshsite.errors import Conflict, Forbidden, Invalid, LimitReached, NotFound
from meshsite.platform.models import ServiceInstance

from ..models import Queue, Subscription
from ..names import InvalidName, literal_prefix, validate_pattern, validate_queue_name
from ..selectors import queue_get, rules_for
from ..store import cleanup


@dataclass(frozen=True)
class QueueAttributes:
    """The writable queue attributes; None means "leave as it is" (or default on create)."""

    access_type: str | None = None
    max_queue_size_in_bytes: int | None = None
    max_queue_message_count: int | None = None
    max_message_size_in_bytes: int | None = None
    respect_ttl: bool | None = None
    max_redelivery_count: int | None = None
    dead_msg_queue: str | None = None
    clear_dead_msg_queue: bool = False
    max_delivered_unacked_msgs_per_flow: int | None = None
    redelivery_delay_in_ms: int | None = None
    max_redelivery_delay_in_ms: int | None = None

    def changes(self) -> dict[str, Any]:
        values = {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if field.name != "clear_dead_msg_queue" and getattr(self, field.name) is not None
        }
        if self.clear_dead_msg_queue:
            values["dead_msg_queue"] = None
        return values


def _name(name: str) -> str:
    try:
        return validate_queue_name(name)
    except InvalidName as error:
        raise Invalid(str(error)) from None


def _check_queue_rules(instance: ServiceInstance, name: str) -> None:
    rules = rules_for(instance)
    if not (
        rules.allows("queueRules", "subscribeFilter", name) or rules.allows("queueRules", "publishFilter", name)
    ):
        raise Forbidden(f"The instance's queue rules do not allow a queue named {name!r}")


def _dead_msg_queue(instance: ServiceInstance, queue_name: str, value: str) -> str:
    name = _name(value.replace("${namespace}", instance.namespace).replace("$namespace", instance.namespace))
    if name == queue_name:
        raise Invalid("deadMsgQueue must not be the queue itself")
    rules = rules_for(instance)
    if not rules.allows("queueRules", "subscribeFilter", name):
        raise Forbidden(f"The instance's queue rules do not allow consuming from deadMsgQueue {name!r}")
    return name


@transaction.atomic
def queue_put(*, instance: ServiceInstance, name: str, attributes: QueueAttributes) -> tuple[Queue, bool]:
    """Create the queue, or update the attributes given. Returns (queue, created)."""
    name = _name(name)
    changes = attributes.changes()
    if changes.get("dead_msg_queue"):
        changes["dead_msg_queue"] = _dead_msg_queue(instance, name, changes["dead_msg_queue"])
    queue = Queue.objects.select_for_update().filter(instance=instance, name=name).first()
    if queue is not None:
        for field, value in changes.items():
            setattr(queue, field, value)
        queue.save(update_fields=list(changes) or None)
        return queue, False
    _check_queue_rules(instance, name)
    if Queue.objects.filter(instance=instance).count() >= settings.MESH_MAX_QUEUES_PER_INSTANCE:
        raise LimitReached(f"The instance already has {settings.MESH_MAX_QUEUES_PER_INSTANCE} queues (the limit)")
    try:
        with transaction.atomic():
            return Queue.objects.create(instance=instance, name=name, **changes), True
    except IntegrityError:  # created concurrently by another request
        raise Conflict(f"Queue {name!r} was created concurrently; retry") from None


@transaction.atomic
def queue_delete(*, instance: ServiceInstance, name: str) -> None:
    deleted, _ = Queue.objects.filter(instance=instance, name=_name(name)).delete()
    if not deleted:
        raise NotFound("Queue does not exist")


PURGE_BATCH = 5_000


def queue_purge(*, instance: ServiceInstance, name: str) -> int:
    """Delete every message of the queue; returns how many. Batch by batch, each in a short
    transaction of its own, so a large queue's publishers and consumers are never blocked
    behind one long DELETE (messages published meanwhile may go too)."""
    queue = queue_get(instance=instance, name=_name(name))
    purged = 0
    while True:
        with transaction.atomic():
            deleted = cleanup.purge_batch(queue_id=queue.pk, limit=PURGE_BATCH)
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged


def topic_subscribe_accepted(*, instance: ServiceInstance, pattern: str) -> str:
    """A topic pattern the instance may subscribe to (a queue subscription or a live topic
    consumer), or Invalid / Forbidden."""
    try:
        validate_pattern(pattern)
    except InvalidName as error:
        raise Invalid(str(error)) from None
    if not rules_for(instance).allows("topicRules", "subscribeFilter", pattern):
        raise Forbidden(f"The instance's topic rules do not allow subscribing to {pattern!r}")
    return pattern


@transaction.atomic
def subscription_put(*, instance: ServiceInstance, queue_name: str, pattern: str) -> tuple[Subscription, bool]:
    queue = Queue.objects.filter(instance=instance, name=_name(queue_name)).first()
    if queue is None:
        raise NotFound("Queue does not exist")
    pattern = topic_subscribe_accepted(instance=instance, pattern=pattern)
    existing = queue.subscriptions.filter(pattern=pattern).first()
    if existing is not None:
        return existing, False
    if queue.subscriptions.count() >= settings.MESH_MAX_SUBSCRIPTIONS_PER_QUEUE:
        raise LimitReached(f"The queue already has {settings.MESH_MAX_SUBSCRIPTIONS_PER_QUEUE} subscriptions")
    subscription, created = Subscription.objects.get_or_create(
        queue=queue, pattern=pattern,
        defaults={"subaccount_id": instance.subaccount_id, "prefix": literal_prefix(pattern)},
    )
    return subscription, created


@transaction.atomic
def subscription_delete(*, instance: ServiceInstance, queue_name: str, pattern: str) -> None:
    queue = Queue.objects.filter(instance=instance, name=_name(queue_name)).first()
    if queue is None:
        raise NotFound("Queue does not exist")
    try:
        validate_pattern(pattern)
    except InvalidName as error:
        raise Invalid(str(error)) from None
    deleted, _ = queue.subscriptions.filter(pattern=pattern).delete()
    if not deleted:
        raise NotFound("Subscription does not exist")
