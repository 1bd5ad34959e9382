"""The three kinds of link a client attaches, each the AMQP face of a store operation.

    Inlet        the client's sender link: each message is published (group commit) and
                 settled Accepted only after its commit, Rejected with a condition if refused
    QueueOutlet  the client's receiver link on `queue:<q>`: messages are claimed from the
                 store as the link's credit allows and settled by the client's outcome
    TopicOutlet  the client's receiver link on `topic:<pattern>`: live topic messages

Each holds its own map of unsettled deliveries (delivery tag -> claim id): the engine does
not say what a settlement referred to.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from django.conf import settings
from django.utils import timezone
from proton import Condition, Delivery, Disposition, Link

from meshsite.errors import MeshError, NotFound
from messaging import store
from messaging.hotpath.catalog import CachedQueue
from messaging.hotpath.database import run_sync, unavailable
from messaging.live import LiveMessage
from messaging.store import statements

from . import codec, conditions

if TYPE_CHECKING:
    from .connection import AmqpConnection

log = logging.getLogger(__name__)


class Handler(Protocol):
    def flow(self) -> None: ...

    def delivery(self, delivery: Delivery) -> None: ...

    def detached(self) -> None: ...


def _tags() -> itertools.count[int]:
    return itertools.count(1)


# --- the client publishes -------------------------------------------------------------------


class Inlet:
    """A client's sender link, with its target (`queue:q`, `topic:t`) or none: then each
    message's `to` says where it goes."""

    def __init__(self, connection: AmqpConnection, link: Link, target: str | None) -> None:
        self.connection = connection
        self.link = link
        self.target = target
        self.credit = settings.MESH_AMQP_LINK_CREDIT
        self.max_size = max_message_size()
        self.waiting: deque[tuple[Delivery, bytes]] = deque()
        self.draining = False
        # Submitted publishes awaiting their commit, in link order (commits finish in order).
        self.committing: deque[tuple[Delivery, Awaitable[None]]] = deque()
        self.settling = False
        self.closed = False
        link.flow(self.credit)

    def flow(self) -> None:
        return None

    def delivery(self, delivery: Delivery) -> None:
        if self.closed:
            return
        if delivery.pending > self.max_size:
            condition = Condition(conditions.MESSAGE_SIZE, f"A message may be at most {self.max_size} bytes on"
                                  " this link")
            self._settle(delivery, Disposition.REJECTED, condition)
            self.connection.detach(self.link, condition)
            return
        if delivery.partial:
            return  # the rest of the message is still on its way
        data = self.link.recv(delivery.pending) or b""
        self.link.advance()
        if self.link.credit < self.credit // 2:
            self.link.flow(self.credit - self.link.credit)
        self.waiting.append((delivery, data))
        if not self.draining:
            self.draining = True
            self.connection.spawn(self._drain())

    async def _drain(self) -> None:
        """Messages in link order through the checks and into the writer; each is settled
        by its own task once its commit returns, so the next one need not wait for it."""
        try:
            while self.waiting:
                delivery, data = self.waiting.popleft()
                try:
                    commit = await self._submit(delivery, data)
                except MeshError as error:
                    self._settle(delivery, Disposition.REJECTED, conditions.for_error(error))
                    continue
                self.committing.append((delivery, commit))
                if not self.settling:
                    self.settling = True
                    self.connection.spawn(self._settle_committed())
        finally:
            self.draining = False

    async def _settle_committed(self) -> None:
        """One task per link settles its publishes as their commits return, in order."""
        try:
            while self.committing:
                delivery, commit = self.committing.popleft()
                await self._committed(delivery, commit)
        finally:
            self.settling = False

    async def _submit(self, delivery: Delivery, data: bytes) -> Awaitable[None]:
        incoming = codec.decode(data, presettled=delivery.settled)
        kind, name = address(self.target or incoming.to or "")
        outgoing = incoming.outgoing
        operations = self.connection.operations
        instance = self.connection.client.instance
        if kind == "queue":
            return await operations.submit_to_queue(instance, name, outgoing)
        return await operations.submit_to_topic(instance, name, outgoing)

    async def _committed(self, delivery: Delivery, commit: Awaitable[None]) -> None:
        try:
            await commit
        except MeshError as error:
            self._settle(delivery, Disposition.REJECTED, conditions.for_error(error))
            return
        except Exception as error:
            if unavailable(error):
                # The store is down: nothing was stored, and the publisher may send it again.
                self._settle(delivery, Disposition.RELEASED, None)
                return
            log.exception("amqp: a publish failed")
            self._settle(delivery, Disposition.REJECTED, Condition(conditions.INTERNAL, "Internal error"))
            return
        self._settle(delivery, Disposition.ACCEPTED, None)

    def _settle(self, delivery: Delivery, outcome: int, condition: Condition | None) -> None:
        if self.closed:
            return
        if not delivery.settled:  # the client waits for the outcome (not sent pre-settled)
            if condition is not None:
                delivery.local.condition = condition
            delivery.update(outcome)
        delivery.settle()
        self.connection.flush_soon()

    def detached(self) -> None:
        self.closed = True


# --- the client consumes a queue -----------------------------------------------------------


class QueueOutlet:
    """A client's receiver link on a queue. Unsettled links claim like a qos-1 consumer
    (locked to this link until settled; the lock renewed while the link lives); links whose
    sender settles (pre-settled) like qos 0."""

    def __init__(self, connection: AmqpConnection, link: Link, queue: CachedQueue, consumer: str) -> None:
        self.connection = connection
        self.link = link
        self.queue = queue
        self.consumer = consumer
        self.presettled = link.snd_settle_mode == Link.SND_SETTLED
        self.qos = 0 if self.presettled else 1
        self.flow_limit = store.flow_limit(queue, self.qos)  # maxDeliveredUnackedMsgsPerFlow
        self.unsettled: dict[str, UUID] = {}
        self.tags = _tags()
        self.pumping = False
        self.again = False
        self.closed = False
        connection.hub.watch_queue(queue.pk, self)

    # --- credit and wake-ups ----------------------------------------------------------------

    def wake(self) -> None:
        self.kick()

    def flow(self) -> None:
        self.kick()

    def _wanted(self) -> int:
        wanted = min(self.link.credit, settings.MESH_AMQP_CLAIM_BATCH)
        if self.flow_limit:
            wanted = min(wanted, self.flow_limit - len(self.unsettled))
        return max(0, wanted)

    def kick(self) -> None:
        if self.closed:
            return
        if self.pumping:
            self.again = True  # the running pump looks once more before it rests
            return
        if self._wanted() == 0:
            self._drained()
            return
        self.pumping = True
        self.connection.spawn(self._pump())

    async def _pump(self) -> None:
        try:
            while not self.closed:
                self.again = False
                wanted = self._wanted()
                if wanted == 0:
                    break
                rows = await self._claim(wanted)
                if self.closed:
                    await self._give_back([store.row_value(row, "claim_id") for row in rows])
                    return
                for row in rows:
                    self._send(row)
                self.connection.flush_soon()
                if len(rows) < wanted and not self.again:
                    self._drained()
                    break
        finally:
            self.pumping = False

    def _drained(self) -> None:
        if self.link.drain_mode and self.link.credit > 0:
            self.link.drained()
            self.connection.flush_soon()

    async def _claim(self, wanted: int) -> list[tuple[object, ...]]:
        """Up to `wanted` messages claimed for this link; exhausted ones go to the dead
        message queue (as every consumer's claim does) and the claim looks again."""
        executor = self.connection.operations.executor
        while True:
            now = timezone.now()
            if self.queue.access_type == "EXCLUSIVE":
                await self.hold(now)
            rows = await executor.fetch(statements.claim(
                postgres=executor.postgres, queue_id=self.queue.pk, respect_ttl=self.queue.respect_ttl, qos=self.qos,
                now=now, limit=wanted, lock_until=lock_until(now) if self.qos else None, consumer=self.consumer,
                redelivery_delay_ms=self.queue.redelivery_delay_in_ms,
                max_redelivery_delay_ms=self.queue.max_redelivery_delay_in_ms,
            ), durable=not store.claim_may_skip_flush(self.qos))
            live_rows = []
            for row in sorted(rows, key=lambda row: store.row_value(row, "id")):  # RETURNING has no order
                count = store.row_value(row, "delivery_count") + (1 if self.qos == 0 else 0)
                if store.redeliveries_exhausted(count, self.queue):
                    message = store.message_from_row(row)
                    message.delivery_count = count
                    await run_sync(store.dead_letter_exhausted, message=message, queue=self.queue,
                                   removed=self.qos == 0)
                else:
                    live_rows.append(row)
            if live_rows or len(rows) < wanted:
                return live_rows

    async def hold(self, now: datetime) -> None:
        """Take or renew the EXCLUSIVE queue's lease for this link (Conflict if another has it)."""
        await self.connection.operations.hold_exclusive(self.queue, self.consumer, now)

    def _send(self, row: tuple[object, ...]) -> None:
        value = store.row_value
        count = value(row, "delivery_count") + (1 if self.qos == 0 else 0)
        claim_id = value(row, "claim_id")
        tag = str(next(self.tags))
        delivery = self.link.delivery(tag)
        self.link.send(codec.encode(
            payload=bytes(value(row, "payload")), content_type=value(row, "content_type"), to=value(row, "address"),
            message_id=str(value(row, "uuid")), created_at=value(row, "created_at"), delivery_count=count,
            durable=value(row, "qos") == 1, properties=value(row, "properties"),
        ))
        if self.presettled:
            delivery.settle()
        else:
            self.unsettled[tag] = claim_id
        self.link.advance()

    # --- settlement --------------------------------------------------------------------------

    def delivery(self, delivery: Delivery) -> None:
        """The client's outcome for a delivery: Accepted acknowledges; Released gives it back
        at once, uncounted; Rejected and Modified(delivery-failed) count as a failed delivery;
        Modified without it is a release. Settled with no outcome: a release (never lost)."""
        if not (delivery.settled or delivery.remote_state):
            return
        claim_id = self.unsettled.pop(str(delivery.tag), None)
        delivery.settle()
        if claim_id is None:
            return
        # Only a link held back by maxDeliveredUnackedMsgsPerFlow needs a settlement to go on;
        # otherwise credit decides, and a claim per settlement would be a statement per message.
        at_limit = bool(self.flow_limit) and len(self.unsettled) + 1 >= self.flow_limit
        state = delivery.remote_state
        settlements = self.connection.settlements
        if state == Disposition.ACCEPTED:
            settlements.accepted.append(claim_id)
        elif state == Disposition.REJECTED or (state == Disposition.MODIFIED and delivery.remote.failed):
            settlements.failed.append(claim_id)
        else:
            settlements.released.append(claim_id)
            at_limit = True  # it is available again: someone (maybe this link) may take it
        if at_limit:
            self.kick()

    def detached(self) -> None:
        """The link or its connection went: what it holds returns to the queue at once, its
        delivery counted (it reached the client, which may have failed on it)."""
        if self.closed:
            return
        self.closed = True
        self.connection.hub.unwatch_queue(self.queue.pk, self)
        self.connection.settlements.dropped.extend(self.unsettled.values())
        self.unsettled.clear()

    def held(self) -> list[UUID]:
        return list(self.unsettled.values())

    async def _give_back(self, claim_ids: list[object]) -> None:
        ids = [UUID(str(claim_id)) for claim_id in claim_ids if claim_id]
        if ids:
            await self.connection.operations.executor.run(statements.give_back_uncounted(claim_ids=ids))


def lock_until(now: datetime) -> datetime:
    """A link's claims are held for MESH_ACK_TIMEOUT and renewed by the connection's
    housekeeping while the link lives: if the server dies, they come back by themselves."""
    return now + timedelta(seconds=settings.MESH_ACK_TIMEOUT)


# --- the client listens to a topic -----------------------------------------------------------


class TopicOutlet:
    """A client's receiver link on `topic:<pattern>`: live messages, never stored. Without
    credit a few are held (MESH_LIVE_TOPIC_BUFFER), the oldest dropped first; outcomes are
    settled and otherwise ignored (there is nothing to give back)."""

    def __init__(self, connection: AmqpConnection, link: Link, pattern: str) -> None:
        self.connection = connection
        self.link = link
        self.pattern = pattern
        self.presettled = link.snd_settle_mode == Link.SND_SETTLED
        self.held: deque[LiveMessage] = deque(maxlen=settings.MESH_LIVE_TOPIC_BUFFER or None)
        self.tags = _tags()
        self.dropped = 0
        self.closed = False
        connection.hub.listen(connection.client.instance.subaccount_id, self)

    def deliver(self, message: LiveMessage) -> None:
        if self.closed:
            return
        if self.link.credit > 0 and not self.held:
            self._send(message)
            self.connection.flush_soon()
            return
        if self.held.maxlen == 0:
            self.dropped += 1
            return
        if self.held.maxlen is not None and len(self.held) == self.held.maxlen:
            self.dropped += 1
        self.held.append(message)

    def flow(self) -> None:
        while self.held and self.link.credit > 0:
            self._send(self.held.popleft())
        if self.link.drain_mode and self.link.credit > 0:
            self.link.drained()
        self.connection.flush_soon()

    def _send(self, message: LiveMessage) -> None:
        delivery = self.link.delivery(str(next(self.tags)))
        self.link.send(codec.encode(
            payload=message.payload, content_type=message.content_type, to=f"topic:{message.topic}",
            message_id=message.message_id, created_at=message.created_at, delivery_count=1, durable=False,
            properties=message.properties,
        ))
        if self.presettled:
            delivery.settle()
        self.link.advance()

    def delivery(self, delivery: Delivery) -> None:
        if delivery.settled or delivery.remote_state:
            delivery.settle()

    def detached(self) -> None:
        if not self.closed:
            self.closed = True
            self.connection.hub.unlisten(self.connection.client.instance.subaccount_id, self)


def address(raw: str) -> tuple[str, str]:
    """`queue:<name>` or `topic:<name>` -> (kind, name); anything else is refused."""
    kind, _, name = raw.partition(":")
    if kind not in ("queue", "topic") or not name:
        raise NotFound(f"Address {raw!r} is not queue:<name> or topic:<name>")
    return kind, name


def max_message_size() -> int:
    """The most a message may take on the wire: the body limit plus room for its
    properties and the AMQP sections around it."""
    return settings.MESH_MAX_MESSAGE_SIZE + 64 * 1024

