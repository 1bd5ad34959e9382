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
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from proton import Condition, Delivery, Disposition, Link, Message

from meshsite.errors import MeshError, NotFound
from messaging import store
from messaging.hotpath.catalog import CachedQueue
from messaging.hotpath.database import unavailable
from messaging.live import LiveMessage
from messaging.live.feed import Outcome, PublishPipe, QueueFeed, Row, TopicFeed

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
        self.publishes = PublishPipe(connection)
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
        self.publishes.put(lambda: self._submit(delivery, data), lambda error: self._answer(delivery, error))

    async def _submit(self, delivery: Delivery, data: bytes) -> Awaitable[None]:
        incoming = codec.decode(data, presettled=delivery.settled)
        kind, name = address(self.target or incoming.to or "")
        outgoing = incoming.outgoing
        operations = self.connection.operations
        instance = self.connection.instance
        if kind == "queue":
            return await operations.submit_to_queue(instance, name, outgoing)
        return await operations.submit_to_topic(instance, name, outgoing)

    def _answer(self, delivery: Delivery, error: BaseException | None) -> None:
        if error is None:
            self._settle(delivery, Disposition.ACCEPTED, None)
        elif isinstance(error, MeshError):
            self._settle(delivery, Disposition.REJECTED, conditions.for_error(error))
        elif unavailable(error):
            # The store is down: nothing was stored, and the publisher may send it again.
            self._settle(delivery, Disposition.RELEASED, None)
        else:
            log.error("amqp: a publish failed", exc_info=error)
            self._settle(delivery, Disposition.REJECTED, Condition(conditions.INTERNAL, "Internal error"))

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


class QueueOutlet(QueueFeed):
    """A client's receiver link on a queue: unsettled links consume like qos 1, links whose
    sender settles (pre-settled) like qos 0."""

    def __init__(self, connection: AmqpConnection, link: Link, queue: CachedQueue, consumer: str) -> None:
        self.link = link
        self.presettled = link.snd_settle_mode == Link.SND_SETTLED
        self.message = Message()  # filled anew for each delivery
        super().__init__(connection, queue, consumer=consumer, qos=0 if self.presettled else 1)

    def flow(self) -> None:
        self.kick()

    def credit(self) -> int:
        return self.link.credit

    def drained(self) -> None:
        if self.link.drain_mode and self.link.credit > 0:
            self.link.drained()
            self.session.flush_soon()

    def emit(self, row: Row, tag: str, delivery_count: int) -> None:
        value = store.row_value
        delivery = self.link.delivery(tag)
        self.link.send(codec.encode(
            payload=bytes(value(row, "payload")), content_type=value(row, "content_type"), to=value(row, "address"),
            message_id=str(value(row, "uuid")), created_at=value(row, "created_at"), delivery_count=delivery_count,
            durable=value(row, "qos") == 1, properties=value(row, "properties"), reuse=self.message,
        ))
        if self.presettled:
            delivery.settle()
        self.link.advance()

    def delivery(self, delivery: Delivery) -> None:
        """The client's outcome for a delivery: Accepted acknowledges; Released gives it back
        at once, uncounted; Rejected and Modified(delivery-failed) count as a failed delivery;
        Modified without it is a release. Settled with no outcome: a release (never lost)."""
        if not (delivery.settled or delivery.remote_state):
            return
        delivery.settle()
        state = delivery.remote_state
        if state == Disposition.ACCEPTED:
            outcome = Outcome.ACCEPTED
        elif state == Disposition.REJECTED or (state == Disposition.MODIFIED and delivery.remote.failed):
            outcome = Outcome.FAILED
        else:
            outcome = Outcome.RELEASED
        self.settle(str(delivery.tag), outcome)


# --- the client listens to a topic -----------------------------------------------------------


class TopicOutlet(TopicFeed):
    """A client's receiver link on `topic:<pattern>`: live messages, never stored. Without
    credit a few are held (MESH_LIVE_TOPIC_BUFFER), the oldest dropped first; outcomes are
    settled and otherwise ignored (there is nothing to give back)."""

    def __init__(self, connection: AmqpConnection, link: Link, pattern: str) -> None:
        self.connection = connection
        self.link = link
        self.presettled = link.snd_settle_mode == Link.SND_SETTLED
        self.held: deque[LiveMessage] = deque(maxlen=settings.MESH_LIVE_TOPIC_BUFFER or None)
        self.tags = _tags()
        super().__init__(connection, pattern)

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

