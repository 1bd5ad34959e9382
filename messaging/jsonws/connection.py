"""One JSON WebSocket connection: its subscriptions, its publishes and what it writes back.

Frames are handled one at a time in arrival order (the consumer awaits each), so a
`subscribe` is in place before the `credit` that follows it. Publishes do not wait for
their commit there: they go through the connection's PublishPipe and are answered in order.
What the server writes goes through one outbox, written by one task: frames leave in the
order they were made, and a slow client's backlog is visible (live topic messages beyond
MESH_WS_MAX_BACKLOG are dropped; queue messages are bounded by credit and never dropped).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from meshsite.errors import (
    STORE_UNAVAILABLE,
    Conflict,
    InternalError,
    Invalid,
    LimitReached,
    MeshError,
    NotFound,
    Unauthorized,
    Unavailable,
)
from meshsite.platform.models import ServiceInstance
from messaging import store
from messaging.hotpath.catalog import CachedQueue
from messaging.hotpath.database import unavailable
from messaging.live import LiveMessage
from messaging.live.feed import Outcome, PublishPipe, QueueFeed, Row, TopicFeed
from messaging.live.session import LiveSession, StillValid
from messaging.services.messages import consume_accepted
from messaging.services.queues import topic_subscribe_accepted

from . import frames

log = logging.getLogger(__name__)

POLICY = 1008  # the credentials no longer stand
SERVER_ERROR = 1011

_OUTCOMES = {"ack": Outcome.ACCEPTED, "nack": Outcome.FAILED, "release": Outcome.RELEASED}


class QueueSubscription(QueueFeed):
    """`subscribe` with a queue: messages as the client's credit allows; with qos 1 each
    carries a tag to ack (gone), nack (failed: counted, offered again after the queue's
    redelivery delay) or release (back at once, uncounted)."""

    def __init__(self, connection: JsonConnection, sub: str, queue: CachedQueue, *, credit: int, qos: int) -> None:
        self.connection = connection
        self.sub = sub
        self.remaining = credit
        super().__init__(connection, queue, consumer=f"ws:{connection.id}:{sub}", qos=qos)

    def credit(self) -> int:
        return self.remaining

    def grant(self, credit: int) -> None:
        self.remaining = min(settings.MESH_WS_MAX_CREDIT, self.remaining + credit)
        self.kick()

    def emit(self, row: Row, tag: str, delivery_count: int) -> None:
        self.remaining -= 1
        value = store.row_value
        self.connection.send(frames.message(
            sub=self.sub, tag=tag if self.qos else None, payload=bytes(value(row, "payload")),
            content_type=value(row, "content_type"), to=value(row, "address"), message_id=str(value(row, "uuid")),
            created_at=value(row, "created_at"), delivery_count=delivery_count, properties=value(row, "properties"),
        ))


class TopicSubscription(TopicFeed):
    """`subscribe` with a topic pattern: live messages of matching topics, never stored,
    nothing to settle."""

    def __init__(self, connection: JsonConnection, sub: str, pattern: str) -> None:
        self.connection = connection
        self.sub = sub
        super().__init__(connection, pattern)

    def deliver(self, message: LiveMessage) -> None:
        if self.closed:
            return
        sent = self.connection.send(frames.message(
            sub=self.sub, tag=None, payload=message.payload, content_type=message.content_type,
            to=f"topic:{message.topic}", message_id=message.message_id, created_at=message.created_at,
            delivery_count=1, properties=message.properties,
        ), droppable=True)
        if not sent:
            self.dropped += 1


Subscription = QueueSubscription | TopicSubscription


class JsonConnection(LiveSession):
    label = "json"

    def __init__(self, *, instance: ServiceInstance, still_valid: StillValid,
                 send: Callable[[str], Awaitable[None]], close: Callable[[int], Awaitable[None]]) -> None:
        super().__init__(instance=instance, still_valid=still_valid)
        self._send = send
        self._close = close
        self.subscriptions: dict[str, Subscription] = {}
        self.publishes = PublishPipe(self)
        self.outbox: deque[str] = deque()
        self._writing = False
        self._close_code: int | None = None

    # --- frames in ------------------------------------------------------------------------------

    async def received(self, text: str) -> None:
        try:
            request = frames.parse(text)
        except frames.Refused as refused:
            self.send(frames.error(refused.error, ref=refused.ref, sub=refused.sub))
            return
        ref, sub = getattr(request, "ref", None), getattr(request, "sub", None)
        try:
            await self._handle(request)
        except MeshError as error:
            self.send(frames.error(error, ref=ref, sub=sub))
        except Exception as error:
            # The store went away under a subscribe: refuse this request, keep the socket
            # (and what it holds, which returns by itself if the store stays away).
            if not unavailable(error):
                log.error("json %s: a %s failed", self.id, type(request).__name__, exc_info=error)
                self.send(frames.error(InternalError("Internal error"), ref=ref, sub=sub))
                return
            self.send(frames.error(Unavailable(STORE_UNAVAILABLE), ref=ref,
                                   sub=sub))

    async def _handle(self, request: frames.Request) -> None:
        if isinstance(request, frames.Publish):
            self._publish(request)
        elif isinstance(request, frames.Settle):
            self._settle_request(request)
        elif isinstance(request, frames.Credit):
            self._queue_subscription(request.sub).grant(request.credit)
        elif isinstance(request, frames.Subscribe):
            await self._subscribe(request)
        elif isinstance(request, frames.Unsubscribe):
            self._unsubscribe(request.sub)
        else:
            self.send({"op": "pong", **({"ref": request.ref} if request.ref else {})})

    async def _subscribe(self, request: frames.Subscribe) -> None:
        if request.sub in self.subscriptions:
            raise Conflict(f"Subscription {request.sub!r} exists on this connection")
        if len(self.subscriptions) >= settings.MESH_WS_MAX_SUBSCRIPTIONS:
            raise LimitReached(f"At most {settings.MESH_WS_MAX_SUBSCRIPTIONS} subscriptions per connection")
        subscription: Subscription
        if request.queue is not None:
            subscription = await self._queue_subscribe(request, request.queue)
        else:
            pattern = topic_subscribe_accepted(instance=self.instance, pattern=request.topic or "")
            subscription = TopicSubscription(self, request.sub, pattern)
        self.subscriptions[request.sub] = subscription
        where = {"queue": request.queue} if request.queue is not None else {"topic": request.topic}
        self.send({"op": "subscribed", "sub": request.sub, **where})
        if isinstance(subscription, QueueSubscription):
            subscription.kick()

    async def _queue_subscribe(self, request: frames.Subscribe, name: str) -> QueueSubscription:
        queue_name = consume_accepted(instance=self.instance, queue_name=name, qos=request.qos)
        queue = await self.operations.catalog.queue(self.instance, queue_name)
        subscription = QueueSubscription(self, request.sub, queue, credit=request.credit, qos=request.qos)
        await subscription.admit()
        return subscription

    def _queue_subscription(self, sub: str) -> QueueSubscription:
        subscription = self.subscriptions.get(sub)
        if subscription is None:
            raise NotFound(f"No subscription {sub!r} on this connection")
        if not isinstance(subscription, QueueSubscription):
            raise Invalid(f"Subscription {sub!r} is to a topic: it needs no credit and has nothing to settle")
        return subscription

    def _settle_request(self, request: frames.Settle) -> None:
        subscription = self._queue_subscription(request.sub)
        outcome = _OUTCOMES[request.op]
        unknown = [tag for tag in request.tags if not subscription.settle(tag, outcome)]
        if unknown:
            raise NotFound(f"Not held by this subscription (settled already, or never sent): {', '.join(unknown)}")

    def _unsubscribe(self, sub: str) -> None:
        subscription = self.subscriptions.pop(sub, None)
        if subscription is None:
            raise NotFound(f"No subscription {sub!r} on this connection")
        subscription.detached()
        self.send({"op": "unsubscribed", "sub": sub})

    def _publish(self, request: frames.Publish) -> None:
        if len(self.publishes) >= settings.MESH_WS_MAX_PENDING_PUBLISHES:
            raise LimitReached(f"At most {settings.MESH_WS_MAX_PENDING_PUBLISHES} publishes may wait for their"
                               " answer on one connection")
        operations, instance, outgoing = self.operations, self.instance, request.outgoing

        async def submit() -> Awaitable[None]:
            if request.queue is not None:
                return await operations.submit_to_queue(instance, request.queue, outgoing)
            return await operations.submit_to_topic(instance, request.topic or "", outgoing)

        self.publishes.put(submit, lambda error: self._published(request.ref, error))

    def _published(self, ref: str | None, error: BaseException | None) -> None:
        answer: dict[str, Any] = {"op": "published"}
        if error is None:
            pass
        elif isinstance(error, MeshError):
            answer = frames.error(error)
        elif unavailable(error):  # nothing was stored: the client may publish it again
            answer = frames.error(Unavailable("The message store is unavailable; nothing was stored"))
        else:
            log.error("json %s: a publish failed", self.id, exc_info=error)
            answer = frames.error(InternalError("Internal error"))
        if ref is not None:
            answer["ref"] = ref
        self.send(answer)

    # --- frames out -----------------------------------------------------------------------------

    def send(self, frame: dict[str, Any], *, droppable: bool = False) -> bool:
        """Queue a frame for the client; a droppable one (a live topic message) is refused
        while the client is MESH_WS_MAX_BACKLOG frames behind."""
        if self.finished or (droppable and len(self.outbox) >= settings.MESH_WS_MAX_BACKLOG):
            return False
        self.outbox.append(frames.dumps(frame))
        self.flush_soon()
        return True

    def flush_soon(self) -> None:
        if self.outbox and not self._writing and not self.finished:
            self._writing = True
            self.spawn(self._write(), quiet=True)

    async def _write(self) -> None:
        try:
            while self.outbox and not self.finished:
                await self._send(self.outbox.popleft())
            if self._close_code is not None and not self.finished:
                await self._close(self._close_code)
                await self.finish()
        finally:
            self._writing = False

    def _end(self, error: MeshError, code: int) -> None:
        """A last error frame, then the close (after what was queued before it)."""
        if self._close_code is not None:
            return
        self.send(frames.error(error))
        self.drop_all()
        self._close_code = code
        if not self._writing:
            self._writing = True
            self.spawn(self._write(), quiet=True)

    # --- what LiveSession asks of a protocol ---------------------------------------------------

    def feeds(self) -> list[QueueFeed]:
        return [sub for sub in self.subscriptions.values() if isinstance(sub, QueueSubscription)]

    def drop_all(self) -> None:
        for subscription in self.subscriptions.values():
            subscription.detached()
        self.subscriptions.clear()

    def revoke(self, reason: str) -> None:
        self._end(Unauthorized(reason), POLICY)

    def task_failed(self, error: BaseException) -> None:
        if unavailable(error):
            log.warning("json %s: the store is unavailable; closing the connection", self.id)
            self._end(Unavailable(STORE_UNAVAILABLE), SERVER_ERROR)
        else:
            log.error("json %s: a task failed", self.id, exc_info=error)
            self._end(InternalError("Internal error"), SERVER_ERROR)
