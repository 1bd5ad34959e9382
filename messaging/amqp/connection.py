"""One AMQP connection: the engine, its links, and the store work they start.

Everything here runs on the server's event loop and touches the engine only between
awaits, so no lock guards it; the only ordering rule is on output: bytes leave in the order
the engine produced them (one flush at a time). Database work never runs inside event
processing: a link starts a task, and its result goes back into the engine when it is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from django.conf import settings
from proton import Condition, Endpoint, Event, Link, Session

from meshsite.errors import STORE_UNAVAILABLE, MeshError
from meshsite.platform.models import ServiceInstance
from messaging.hotpath.database import unavailable
from messaging.live.feed import QueueFeed
from messaging.live.session import LiveSession, StillValid
from messaging.services.messages import consume_accepted
from messaging.services.queues import topic_subscribe_accepted

from . import conditions
from .engine import Engine
from .links import Handler, Inlet, QueueOutlet, TopicOutlet, address, max_message_size

log = logging.getLogger(__name__)

REMOTE_CLOSED = Endpoint.REMOTE_CLOSED
# The engine events `_on` acts on; the engine drops the rest unread.
HANDLED = (Event.LINK_FLOW, Event.DELIVERY, Event.LINK_REMOTE_OPEN, Event.LINK_REMOTE_CLOSE, Event.LINK_REMOTE_DETACH,
           Event.SESSION_REMOTE_OPEN, Event.SESSION_REMOTE_CLOSE, Event.CONNECTION_REMOTE_OPEN,
           Event.CONNECTION_REMOTE_CLOSE, Event.TRANSPORT_TAIL_CLOSED)


class AmqpConnection(LiveSession):
    label = "amqp"

    def __init__(self, *, instance: ServiceInstance, still_valid: StillValid, send: Callable[[bytes], Awaitable[None]],
                 close: Callable[[int], Awaitable[None]]) -> None:
        super().__init__(instance=instance, still_valid=still_valid)
        self._send = send
        self._close = close
        self.engine = Engine(max_frame_size=settings.MESH_AMQP_MAX_FRAME_SIZE,
                             idle_timeout=float(settings.MESH_AMQP_IDLE_TIMEOUT), container=f"meshsite-{self.id}")
        self.handlers: dict[Link, Handler] = {}
        self.sessions = 0
        self._flushing = asyncio.Lock()
        self._flush_pending = False
        self._tick: asyncio.TimerHandle | None = None
        self._tick_at = 0.0

    # --- bytes in and out ---------------------------------------------------------------------

    async def received(self, data: bytes) -> None:
        accepting = self.engine.feed(data)
        self.process()
        await self.flush()
        if not accepting:
            await self.flush()

    def process(self) -> None:
        for event in self.engine.events(HANDLED):
            self._on(event)
        self.settle_soon()

    async def flush(self) -> None:
        """Send what the engine has written, in order; close the socket once the engine is
        done (both sides closed, or an error of the peer's)."""
        self._flush_pending = False
        async with self._flushing:
            while chunk := self.engine.output():
                await self._send(chunk)
            self._schedule_tick()
            if self.engine.closed and not self.finished:
                await self.finish()
                await self._close(1002 if self.engine.transport.condition else 1000)

    def flush_soon(self) -> None:
        """A flush after the current step (many deliveries, one pass over the output)."""
        if not self._flush_pending and not self.finished:
            self._flush_pending = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self.spawn(self.flush(), quiet=True)  # a flush changes nothing a follow-up would need

    def _schedule_tick(self) -> None:
        deadline = self.engine.tick(time.monotonic())
        if deadline and (self._tick is None or deadline < self._tick_at):
            if self._tick is not None:
                self._tick.cancel()
            self._tick_at = deadline
            self._tick = self.loop.call_at(self.loop.time() + max(0.0, deadline - time.monotonic()), self._ticked)

    def _ticked(self) -> None:
        self._tick = None
        self.spawn(self.flush(), quiet=True)  # flush ticks the engine after taking its output

    # --- what LiveSession asks of a protocol -------------------------------------------------

    def feeds(self) -> list[QueueFeed]:
        return [handler for handler in self.handlers.values() if isinstance(handler, QueueOutlet)]

    def drop_all(self) -> None:
        self._drop_links()
        if self._tick is not None:
            self._tick.cancel()

    def revoke(self, reason: str) -> None:
        self.close(Condition(conditions.UNAUTHORIZED, reason))

    def task_failed(self, error: BaseException) -> None:
        if unavailable(error):
            log.warning("amqp %s: the store is unavailable; closing the connection", self.id)
            self.close(Condition(conditions.INTERNAL, STORE_UNAVAILABLE))
        else:
            log.error("amqp %s: a task failed", self.id, exc_info=error)
            self.close(Condition(conditions.INTERNAL, "Internal error"))

    def task_done(self) -> None:
        self.process()
        self.flush_soon()

    # --- events ---------------------------------------------------------------------------------

    def _on(self, event: Event) -> None:
        kind = event.type
        link, session, connection = event.link, event.session, event.connection
        if kind == Event.LINK_FLOW and link is not None:
            handler = self.handlers.get(link)
            if handler is not None:
                handler.flow()
        elif kind == Event.DELIVERY and link is not None and event.delivery is not None:
            handler = self.handlers.get(link)
            if handler is not None:
                handler.delivery(event.delivery)
        elif kind == Event.LINK_REMOTE_OPEN and link is not None:
            self._attach(link)
        elif kind in (Event.LINK_REMOTE_CLOSE, Event.LINK_REMOTE_DETACH) and link is not None:
            self._detached(link)
            link.close()
        elif kind == Event.SESSION_REMOTE_OPEN and session is not None:
            self._begin(session)
        elif kind == Event.SESSION_REMOTE_CLOSE and session is not None:
            session.close()
        elif kind == Event.CONNECTION_REMOTE_OPEN and connection is not None:
            connection.open()
        elif kind == Event.CONNECTION_REMOTE_CLOSE and connection is not None:
            self._drop_links()
            connection.close()
        elif kind == Event.TRANSPORT_TAIL_CLOSED:
            self._drop_links()

    def _begin(self, session: Session) -> None:
        self.sessions += 1
        session.open()
        if self.sessions > settings.MESH_AMQP_MAX_SESSIONS_PER_CONNECTION:
            session.condition = Condition(conditions.RESOURCE_LIMIT, "Too many sessions on this connection"
                                          f" (at most {settings.MESH_AMQP_MAX_SESSIONS_PER_CONNECTION})")
            session.close()

    def _attach(self, link: Link) -> None:
        if len(self.handlers) >= settings.MESH_AMQP_MAX_LINKS_PER_CONNECTION:
            self.refuse(link, Condition(conditions.RESOURCE_LIMIT, "Too many links on this connection"
                                        f" (at most {settings.MESH_AMQP_MAX_LINKS_PER_CONNECTION})"))
            return
        link.max_message_size = max_message_size()
        if link.is_receiver:  # the client sends
            self._attach_inlet(link)
        else:
            self.spawn(self._attach_outlet(link))

    def _attach_inlet(self, link: Link) -> None:
        raw = link.remote_target.address or ""
        target: str | None = None
        if raw:
            try:
                address(raw)
            except MeshError as error:
                self.refuse(link, conditions.for_error(error))
                return
            target = raw
        link.target.address = raw
        link.open()
        self.handlers[link] = Inlet(self, link, target)

    async def _attach_outlet(self, link: Link) -> None:
        raw = link.remote_source.address or ""
        try:
            kind, name = address(raw)
            if kind == "queue":
                handler: Handler = await self._queue_outlet(link, name)
            else:
                handler = self._topic_outlet(link, name)
        except MeshError as error:
            self.refuse(link, conditions.for_error(error))
            return
        if link.state & REMOTE_CLOSED:  # the client gave up while we looked the queue up
            handler.detached()
            return
        link.source.address = raw
        link.open()
        self.handlers[link] = handler
        handler.flow()

    async def _queue_outlet(self, link: Link, name: str) -> QueueOutlet:
        instance = self.instance
        qos = 0 if link.snd_settle_mode == Link.SND_SETTLED else 1
        queue_name = consume_accepted(instance=instance, queue_name=name, qos=qos)
        queue = await self.operations.catalog.queue(instance, queue_name)
        outlet = QueueOutlet(self, link, queue, consumer=f"amqp:{self.id}:{link.name[:64]}")
        await outlet.admit()
        return outlet

    def _topic_outlet(self, link: Link, pattern: str) -> TopicOutlet:
        return TopicOutlet(self, link, topic_subscribe_accepted(instance=self.instance, pattern=pattern))

    def refuse(self, link: Link, condition: Condition) -> None:
        """Attach and detach at once with the reason (AMQP's way to refuse a link)."""
        link.condition = condition
        link.open()
        link.close()
        self.flush_soon()

    def detach(self, link: Link, condition: Condition) -> None:
        self._detached(link)
        link.condition = condition
        link.close()
        self.flush_soon()

    def _detached(self, link: Link) -> None:
        handler = self.handlers.pop(link, None)
        if handler is not None:
            handler.detached()

    def _drop_links(self) -> None:
        for link in list(self.handlers):
            self._detached(link)

    def close(self, condition: Condition) -> None:
        if self.finished:
            return
        self._drop_links()
        self.engine.connection.condition = condition
        self.engine.connection.close()
        self.process()
        self.flush_soon()
