"""Publish (queue and topic), consume and acknowledge on the hot path.

Each runs the same checks as the service it stands in for (messaging.services.messages:
the same functions, so the same order and words), then the store's own statements through
the async executor: a publish through the group-commit writer, a consume as one claim
statement, an acknowledgement as one DELETE. What is rare or needs the ORM goes to the
services on a thread: publishes to queues with capacity limits (their check serializes on
the queue row), dead-lettering a message whose redeliveries are exhausted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from meshsite.errors import Conflict, NotFound
from meshsite.platform.auth import Client
from meshsite.platform.models import ServiceInstance
from messaging import live, services, store
from messaging.api import headers
from messaging.metrics import meter_count
from messaging.models import AccessType
from messaging.services.messages import (
    ack_accepted,
    ack_refused,
    consume_accepted,
    lock_until,
    publish_to_queue_accepted,
    publish_to_topic_accepted,
)
from messaging.store import statements
from messaging.webhooks.waker import wake_after_publish

from .catalog import CachedQueue, Catalog
from .database import Executor, Row, queue_gone, run_sync
from .flow import FlowGate
from .http import Answer, Request
from .writer import GroupWriter

NO_CONTENT = Answer(204)


async def _done() -> None:
    """An already-completed commit: a publish that was written, or dropped, in place."""
OK = Answer(200)


class Endpoints:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.catalog = Catalog(executor)
        self.writer = GroupWriter(executor)
        self.flow = FlowGate()

    # --- publish -------------------------------------------------------------------------------

    async def queue_publish(self, client: Client, request: Request, name: str) -> Answer:
        await self.publish_to_queue(client.instance, name, headers.outgoing(request.header, request.body))
        return NO_CONTENT

    async def topic_publish(self, client: Client, request: Request, topic: str) -> Answer:
        await self.publish_to_topic(client.instance, topic, headers.outgoing(request.header, request.body))
        return NO_CONTENT

    async def publish_to_queue(self, instance: ServiceInstance, name: str, outgoing: services.Outgoing) -> None:
        """Store a message in a queue; returns once it is committed (any transport)."""
        await (await self.submit_to_queue(instance, name, outgoing))

    async def publish_to_topic(self, instance: ServiceInstance, topic: str, outgoing: services.Outgoing) -> None:
        """Fan a message out to the queues subscribed to `topic` and to live topic consumers;
        returns once it is committed."""
        await (await self.submit_to_topic(instance, topic, outgoing))

    async def submit_to_queue(self, instance: ServiceInstance, name: str,
                              outgoing: services.Outgoing) -> Awaitable[None]:
        """A queue publish's checks (raising their refusals), then its rows handed to the
        writer; returns what completes once they are committed. Submissions commit in the
        order they were made, except to queues with capacity limits, which are written here
        through the service (each waits for its own commit before this returns)."""
        accepted = publish_to_queue_accepted(instance=instance, queue_name=name, outgoing=outgoing)
        queue = await self.catalog.queue(instance, accepted.name)
        store.check_message_size([queue], len(outgoing.payload))
        if store.has_capacity_limits(queue):
            await run_sync(services.message_publish_to_queue, instance=instance, queue_name=name, outgoing=outgoing)
            return _done()
        row = _row(queue, outgoing, f"queue:{accepted.name}", accepted.now, accepted.expires_at)
        return self._queue_committed(self.writer.submit([row], durable=not store.may_skip_flush(outgoing.qos)), queue)

    async def _queue_committed(self, commit: asyncio.Future[None], queue: CachedQueue) -> None:
        try:
            await asyncio.shield(commit)
        except Exception as error:
            if queue_gone(error):
                self.catalog.forget()
                raise NotFound("Queue does not exist") from None
            raise
        await _wake([queue])

    async def submit_to_topic(self, instance: ServiceInstance, topic: str,
                              outgoing: services.Outgoing) -> Awaitable[None]:
        """`submit_to_queue` for a topic: one row per subscribed queue, in one commit."""
        accepted = publish_to_topic_accepted(instance=instance, topic=topic, outgoing=outgoing)
        queues = await self.catalog.subscribed(instance.subaccount_id, topic)
        if not queues:
            _live(instance, topic, outgoing, accepted.now)
            return _done()  # topics are not persistent: no queue subscribed, nothing kept
        store.check_message_size(queues, len(outgoing.payload))
        if any(store.has_capacity_limits(queue) for queue in queues):
            await run_sync(services.message_publish_to_topic, instance=instance, topic=topic, outgoing=outgoing)
            return _done()
        rows = [_row(queue, outgoing, f"topic:{topic}", accepted.now, accepted.expires_at) for queue in queues]
        commit = self.writer.submit(rows, durable=not store.may_skip_flush(outgoing.qos))
        return self._topic_committed(commit, queues, instance, topic, outgoing, accepted.now)

    async def _topic_committed(self, commit: asyncio.Future[None], queues: tuple[CachedQueue, ...],
                               instance: ServiceInstance, topic: str, outgoing: services.Outgoing,
                               now: datetime) -> None:
        try:
            await asyncio.shield(commit)
        except Exception as error:
            if not queue_gone(error):
                raise
            # A subscribed queue was deleted meanwhile: the service publishes to the rest in
            # one transaction (and tells live consumers itself).
            self.catalog.forget()
            await run_sync(services.message_publish_to_topic, instance=instance, topic=topic, outgoing=outgoing)
            return
        _live(instance, topic, outgoing, now)
        await _wake(queues)

    # --- consume and acknowledge -------------------------------------------------------------

    async def consume(self, client: Client, request: Request, name: str) -> Answer:
        qos = headers.qos(request.header)
        queue_name = consume_accepted(instance=client.instance, queue_name=name, qos=qos)
        queue = await self.catalog.queue(client.instance, queue_name)
        consumer = client.identity
        while True:
            now = timezone.now()
            if queue.access_type == AccessType.EXCLUSIVE:
                await self.hold_exclusive(queue, consumer, now)
            flow_limit = await self._flow_limit(queue, consumer, qos, now)
            rows = await self.executor.fetch(statements.claim(
                postgres=self.executor.postgres, queue_id=queue.pk, respect_ttl=queue.respect_ttl, qos=qos, now=now,
                lock_until=lock_until(now, qos), consumer=consumer, flow_limit=flow_limit,
                redelivery_delay_ms=queue.redelivery_delay_in_ms,
                max_redelivery_delay_ms=queue.max_redelivery_delay_in_ms,
            ), durable=not store.claim_may_skip_flush(qos))
            if not rows:
                if flow_limit:
                    await self._check_unacked(queue, consumer, now, flow_limit)
                return NO_CONTENT
            self.flow.claimed(queue.pk, consumer)
            row = rows[0]
            # qos 0: the row is gone; the answer still counts this delivery.
            delivery_count = store.row_value(row, "delivery_count") + (1 if qos == 0 else 0)
            if not store.redeliveries_exhausted(delivery_count, queue):
                break
            message = store.message_from_row(row)
            message.delivery_count = delivery_count
            await run_sync(store.dead_letter_exhausted, message=message, queue=queue, removed=qos == 0)
        meter_count(queue.pk, "consumed")
        message_id = str(store.row_value(row, "claim_id" if qos == 1 else "uuid"))
        return Answer(200, bytes(store.row_value(row, "payload")), [
            (b"content-type", store.row_value(row, "content_type").encode("latin-1")),
            (b"x-message-id", message_id.encode()),
            (b"x-address", store.row_value(row, "address").encode("latin-1")),
            (b"x-delivery-count", str(delivery_count).encode()),
        ])

    async def hold_exclusive(self, queue: CachedQueue, consumer: str, now: datetime) -> None:
        """Take or renew an EXCLUSIVE queue's lease for `consumer` (REST or an AMQP link)."""
        until = store.exclusive_until(now)
        # A lease that runs out by itself: losing it in a crash changes nothing, so it takes
        # whatever mode the connection is in (no switch between it and the claim).
        if not await self.executor.run(statements.hold_exclusive(queue_id=queue.pk, consumer=consumer, now=now,
                                                                 until=until), durable=None):
            raise Conflict(f"Queue {queue.name} is EXCLUSIVE and another consumer is active")

    async def _flow_limit(self, queue: CachedQueue, consumer: str, qos: int, now: datetime) -> int:
        """The flow limit the claim statement must check: none while the consumer is known to
        be far below it (messaging.hotpath.flow), the queue's own near it."""
        limit = store.flow_limit(queue, qos)
        if not limit or not self.flow.needs_check(queue.pk, consumer, limit):
            return 0
        held = await self._check_unacked(queue, consumer, now, limit)
        self.flow.counted(queue.pk, consumer, held)
        return limit if self.flow.needs_check(queue.pk, consumer, limit) else 0

    async def _check_unacked(self, queue: CachedQueue, consumer: str, now: datetime, limit: int) -> int:
        """What `consumer` holds of the queue; LimitReached at `limit`."""
        rows = await self.executor.fetch(statements.held_count(queue_id=queue.pk, consumer=consumer, now=now,
                                                               limit=limit), durable=None)
        refusal = store.unacked_refusal(rows[0][0], limit)
        if refusal is not None:
            raise refusal
        return int(rows[0][0])

    async def ack(self, client: Client, request: Request, name: str, message_id: str) -> Answer:
        queue_name, claim_id = ack_accepted(queue_name=name, message_id=message_id)
        statement = statements.settle(
            postgres=self.executor.postgres, claim_ids=[claim_id], held_at=timezone.now(),
            instance_id=client.instance.pk, queue_name=queue_name,
        )
        settled = await self.executor.fetch(statement, durable=not store.settle_may_skip_flush())
        if settled:
            store.count_returned(statement, settled)
            return OK
        queue = await self.catalog.queue(client.instance, queue_name)
        held = await self.executor.fetch(statements.claim_in_queue(queue_id=queue.pk, claim_id=claim_id),
                                         durable=None)
        ack_refused(still_queued=bool(held))


def _row(queue: CachedQueue, outgoing: services.Outgoing, address: str, now: datetime, expires_at: datetime) -> Row:
    payload = outgoing.payload
    return (queue.pk, uuid.uuid4(), payload, len(payload), outgoing.content_type, address, outgoing.qos, now,
            expires_at, outgoing.properties)


def _live(instance: ServiceInstance, topic: str, outgoing: services.Outgoing, now: datetime) -> None:
    live.topic_published(live.LiveMessage.of(
        subaccount_id=instance.subaccount_id, topic=topic, payload=outgoing.payload,
        content_type=outgoing.content_type, properties=outgoing.properties, qos=outgoing.qos, now=now,
    ))


async def _wake(queues: tuple[CachedQueue, ...] | list[CachedQueue]) -> None:
    live.queues_written(queue.pk for queue in queues)
    pushed = [queue.pk for queue in queues if queue.has_webhooks]
    if not pushed:
        return
    if settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND:
        wake_after_publish(pushed)  # a hand-over to the waker thread: no waiting
    else:
        await run_sync(wake_after_publish, pushed)
