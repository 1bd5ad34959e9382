"""One hub per event loop: the consumers of this process waiting for queue messages or
subscribed to live topics, and how they are told.

A consumer (an AMQP receiver link, a JSON subscription) registers with the hub; a publish
in this process calls `wake_local` / `deliver_local` on every hub directly (no broker in
between), and one from another process arrives through the channel layer
(messaging.live.remote). Wake-ups are hints: a consumer that is woken claims from the store,
which decides. Every MESH_LIVE_POLL_MS the hub also asks the store, in one statement, which
of its watched queues hold available messages, so a wake-up lost in Redis (or never sent, a
message whose lock ran out, a redelivery delay that passed) delays a consumer but never
strands it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from django.conf import settings
from django.utils import timezone

from messaging.names import covers
from messaging.store import statements

log = logging.getLogger(__name__)

# Queues checked per poll statement (one index probe each).
POLL_CHUNK = 200


@dataclass(frozen=True)
class LiveMessage:
    """A message published to a topic, as live topic consumers get it (never stored)."""

    subaccount_id: int
    topic: str
    payload: bytes
    content_type: str
    message_id: str
    created_at: datetime
    properties: str
    qos: int

    @classmethod
    def of(cls, *, subaccount_id: int, topic: str, payload: bytes, content_type: str, properties: str, qos: int,
           now: datetime) -> LiveMessage:
        return cls(subaccount_id=subaccount_id, topic=topic, payload=payload, content_type=content_type,
                   message_id=str(uuid.uuid4()), created_at=now, properties=properties, qos=qos)


class QueueWaiter(Protocol):
    def wake(self) -> None: ...


class TopicListener(Protocol):
    pattern: str

    def deliver(self, message: LiveMessage) -> None: ...


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop, fetch: Callable[..., Awaitable[list[Any]]]) -> None:
        self.loop = loop
        self.fetch = fetch  # the hot path executor's fetch (async)
        self.waiters: dict[int, set[QueueWaiter]] = {}
        self.listeners: dict[int, set[TopicListener]] = {}
        self.interest_changed: Callable[[], None] = lambda: None  # set by messaging.live.remote
        self._poller: asyncio.Task[None] | None = None

    # --- registration ---------------------------------------------------------------------------

    def watch_queue(self, queue_id: int, waiter: QueueWaiter) -> None:
        first = queue_id not in self.waiters
        self.waiters.setdefault(queue_id, set()).add(waiter)
        if first:
            self.interest_changed()
        if self._poller is None or self._poller.done():
            self._poller = self.loop.create_task(self._poll(), name="meshsite-live-poll")

    def unwatch_queue(self, queue_id: int, waiter: QueueWaiter) -> None:
        waiting = self.waiters.get(queue_id)
        if waiting is None:
            return
        waiting.discard(waiter)
        if not waiting:
            del self.waiters[queue_id]
            self.interest_changed()

    def listen(self, subaccount_id: int, listener: TopicListener) -> None:
        first = subaccount_id not in self.listeners
        self.listeners.setdefault(subaccount_id, set()).add(listener)
        if first:
            self.interest_changed()

    def unlisten(self, subaccount_id: int, listener: TopicListener) -> None:
        listening = self.listeners.get(subaccount_id)
        if listening is None:
            return
        listening.discard(listener)
        if not listening:
            del self.listeners[subaccount_id]
            self.interest_changed()

    # --- delivery (on the hub's loop) -----------------------------------------------------------

    def wake_local(self, queue_ids: Iterable[int]) -> None:
        for queue_id in queue_ids:
            for waiter in tuple(self.waiters.get(queue_id, ())):
                waiter.wake()

    def deliver_local(self, message: LiveMessage) -> None:
        for listener in tuple(self.listeners.get(message.subaccount_id, ())):
            if covers(listener.pattern, message.topic):
                listener.deliver(message)

    # --- the poll -------------------------------------------------------------------------------

    async def _poll(self) -> None:
        interval = settings.MESH_LIVE_POLL_MS / 1000
        while self.waiters:
            await asyncio.sleep(interval)
            watched = list(self.waiters)
            if not watched:
                return
            for start in range(0, len(watched), POLL_CHUNK):
                chunk = watched[start:start + POLL_CHUNK]
                try:
                    rows = await self.fetch(statements.queues_with_available(queue_ids=chunk, now=timezone.now()),
                                            durable=None)
                except Exception:  # noqa: BLE001 - the store may be down; the next poll tries again
                    log.warning("live poll of %d queues failed", len(chunk), exc_info=True)
                    break
                self.wake_local(row[0] for row in rows)
