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
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.utils import timezone
from proton import Condition, Endpoint, Event, Link, Session

from meshsite.errors import MeshError
from meshsite.platform.auth import Client, client_for_token
from messaging import live, store
from messaging.hotpath import endpoints
from messaging.hotpath.database import run_sync, unavailable
from messaging.services.messages import consume_accepted
from messaging.services.queues import topic_subscribe_accepted
from messaging.store import statements

from . import conditions
from .engine import Engine
from .links import Handler, Inlet, QueueOutlet, TopicOutlet, address, max_message_size

log = logging.getLogger(__name__)

REMOTE_CLOSED = Endpoint.REMOTE_CLOSED


@dataclass
class Settlements:
    """Outcomes gathered while events are processed, written as one statement per kind."""

    accepted: list[UUID] = field(default_factory=list)
    released: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)
    dropped: list[UUID] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.accepted or self.released or self.failed or self.dropped)

    def take(self, *, postgres: bool) -> list[statements.Statement]:
        taken = []
        now = timezone.now() if self.failed or self.dropped else None
        if self.accepted:
            taken.append(statements.settle(claim_ids=self.accepted))
        if self.released:
            taken.append(statements.give_back_uncounted(claim_ids=self.released))
        if self.failed and now is not None:  # after the queue's redelivery delay
            taken.append(statements.give_back_failed(postgres=postgres, claim_ids=self.failed, now=now))
        if self.dropped and now is not None:  # counted, but at once: the link went, not the message
            taken.append(statements.give_back_at(claim_ids=self.dropped, available_at=now))
        self.accepted, self.released, self.failed, self.dropped = [], [], [], []
        return taken


class AmqpConnection:
    def __init__(self, *, client: Client, token: str, send: Callable[[bytes], Awaitable[None]],
                 close: Callable[[int], Awaitable[None]]) -> None:
        self.client = client
        self.token = token
        self._send = send
        self._close = close
        self.id = uuid.uuid4().hex[:12]
        self.operations = endpoints()
        self.hub = live.hub()
        self.engine = Engine(max_frame_size=settings.MESH_AMQP_MAX_FRAME_SIZE,
                             idle_timeout=float(settings.MESH_AMQP_IDLE_TIMEOUT), container=f"meshsite-{self.id}")
        self.handlers: dict[Link, Handler] = {}
        self.sessions = 0
        self.settlements = Settlements()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.loop = asyncio.get_running_loop()
        self._flushing = asyncio.Lock()
        self._flush_pending = False
        self._settling = False
        self._tick: asyncio.TimerHandle | None = None
        self._tick_at = 0.0
        self.finished = False
        self._housekeeping = self.loop.create_task(self._housekeep(), name=f"meshsite-amqp-{self.id}")

    # --- bytes in and out ---------------------------------------------------------------------

    async def received(self, data: bytes) -> None:
        accepting = self.engine.feed(data)
        self.process()
        await self.flush()
        if not accepting:
            await self.flush()

    def process(self) -> None:
        for event in self.engine.events():
            self._on(event)
        if self.settlements and not self._settling:
            self._settling = True
            self.spawn(self._settle_all(), quiet=True)

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

    @staticmethod
    def _engine_touched(task: asyncio.Task[Any]) -> bool:
        # Tasks that only wrote to the store (settlements) leave the engine as it was.
        return getattr(task, "meshsite_quiet", False) is False

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, quiet: bool = False) -> None:
        task = self.loop.create_task(coroutine)
        if quiet:
            task.meshsite_quiet = True  # type: ignore[attr-defined]
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None and not self._engine_touched(task):
            return
        if error is not None and not self.finished:
            if unavailable(error):
                log.warning("amqp %s: the store is unavailable; closing the connection", self.id)
                self.close(Condition("amqp:internal-error", "The message store is unavailable; retry shortly"))
            else:
                log.error("amqp %s: a task failed", self.id, exc_info=error)
                self.close(Condition(conditions.INTERNAL, "Internal error"))
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
        instance = self.client.instance
        qos = 0 if link.snd_settle_mode == Link.SND_SETTLED else 1
        queue_name = consume_accepted(instance=instance, queue_name=name, qos=qos)
        queue = await self.operations.catalog.queue(instance, queue_name)
        outlet = QueueOutlet(self, link, queue, consumer=f"amqp:{self.id}:{link.name[:64]}")
        if queue.access_type == "EXCLUSIVE":
            try:
                await outlet.hold(timezone.now())
            except MeshError:
                outlet.detached()
                raise
        return outlet

    def _topic_outlet(self, link: Link, pattern: str) -> TopicOutlet:
        return TopicOutlet(self, link, topic_subscribe_accepted(instance=self.client.instance, pattern=pattern))

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

    # --- the store --------------------------------------------------------------------------

    async def _settle_all(self) -> None:
        """Write outcomes while there are any: those that arrive while a statement runs go
        in the next one, so a client settling message by message costs a statement per
        round trip to the store, not one per message."""
        try:
            while self.settlements:
                await self._settle(self.settlements.take(postgres=self.operations.executor.postgres))
        finally:
            self._settling = False

    async def _settle(self, taken: list[statements.Statement]) -> None:
        executor = self.operations.executor
        for statement in taken:
            await executor.run(statement, durable=not store.settle_may_skip_flush())

    async def _housekeep(self) -> None:
        """Renew what this connection holds and check that its token still stands."""
        interval = min(settings.MESH_WS_HOUSEKEEPING_SECONDS, settings.MESH_ACK_TIMEOUT / 3)
        while not self.finished:
            await asyncio.sleep(interval)
            if self.finished:
                return
            if await run_sync(client_for_token, self.token) is None:
                self.close(Condition(conditions.UNAUTHORIZED, "The token expired or its service key was deleted"))
                return
            outlets = [h for h in self.handlers.values() if isinstance(h, QueueOutlet)]
            held = [claim for outlet in outlets for claim in outlet.held()]
            now = timezone.now()
            try:
                if held:
                    executor = self.operations.executor
                    until = now + timedelta(seconds=settings.MESH_ACK_TIMEOUT)
                    await executor.run(statements.extend(postgres=executor.postgres, claim_ids=held, until=until))
                for outlet in outlets:
                    if outlet.queue.access_type == "EXCLUSIVE":
                        await outlet.hold(now)
            except Exception:  # noqa: BLE001 - the store is down: try again next round
                log.warning("amqp %s: renewing claims failed", self.id, exc_info=True)

    async def finish(self) -> None:
        """The socket is gone: what the links held returns to the queue."""
        if self.finished:
            return
        self.finished = True
        self._drop_links()
        self._housekeeping.cancel()
        if self._tick is not None:
            self._tick.cancel()
        taken = self.settlements.take(postgres=self.operations.executor.postgres)
        try:
            await self._settle(taken)
        except Exception:  # noqa: BLE001 - the claims' locks run out by themselves
            log.warning("amqp %s: giving back held messages failed; their locks will expire", self.id,
                        exc_info=True)

