"""What a publish or consume needs to know of queues, cached per process.

(instance, name) -> the queue, and (subaccount, topic) -> the queues subscribed to it, each
loaded through the same selectors as the rest of the API on a miss. Staleness is bounded:
at most every MESH_TOPOLOGY_CHECK_MS the catalog reads the topology version
(messaging.topology) and forgets everything when it moved; a change made in this process is
forgotten at once. Unknown queues are not remembered, so a queue created anywhere serves at
once; a queue deleted elsewhere may be seen for up to that bound, and a publish to it is
then refused by the store's foreign key (404) rather than stored.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar
from uuid import UUID

from django.conf import settings

from meshsite.platform.models import ServiceInstance
from messaging import topology
from messaging.models import Queue
from messaging.selectors import queue_get, queues_subscribed_to
from messaging.store.statements import Statement

from .database import Executor, run_sync

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class CachedQueue:
    """A Queue row's attributes, as the store (StoredQueue) and a publish need them."""

    pk: int
    instance_id: UUID
    name: str
    access_type: str
    respect_ttl: bool
    max_redelivery_count: int
    dead_msg_queue: str | None
    max_delivered_unacked_msgs_per_flow: int
    max_message_size_in_bytes: int
    max_queue_size_in_bytes: int
    max_queue_message_count: int
    redelivery_delay_in_ms: int
    max_redelivery_delay_in_ms: int
    has_webhooks: bool

    @classmethod
    def of(cls, queue: Queue) -> CachedQueue:
        return cls(**{name: getattr(queue, name) for name in cls.__dataclass_fields__})


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self.entries.get(key)
        if value is not None:
            self.entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class Catalog:
    def __init__(self, executor: Executor, *, size: int = 10_000) -> None:
        self.executor = executor
        self.size = size
        self.interval = settings.MESH_TOPOLOGY_CHECK_MS / 1000
        self.version: int | None = None
        self.checked_at = float("-inf")
        self._checking: asyncio.Future[None] | None = None
        self.forget()
        topology.on_change(self.forget)

    def forget(self) -> None:
        self.queues: _Lru[tuple[UUID, str], CachedQueue] = _Lru(self.size)
        self.topics: _Lru[tuple[int, str], tuple[CachedQueue, ...]] = _Lru(self.size)

    async def queue(self, instance: ServiceInstance, name: str) -> CachedQueue:
        """The instance's queue `name`, or NotFound."""
        await self._fresh()
        key = (instance.pk, name)
        cached = self.queues.get(key)
        if cached is None:
            cached = CachedQueue.of(await run_sync(queue_get, instance=instance, name=name))
            self.queues.put(key, cached)
        return cached

    async def subscribed(self, subaccount_id: int, topic: str) -> tuple[CachedQueue, ...]:
        """The queues of the subaccount subscribed to `topic`, in id order (maybe none)."""
        await self._fresh()
        key = (subaccount_id, topic)
        cached = self.topics.get(key)
        if cached is None:
            found = await run_sync(queues_subscribed_to, subaccount_id=subaccount_id, topic=topic)
            cached = tuple(CachedQueue.of(queue) for queue in found)
            self.topics.put(key, cached)
        return cached

    async def _fresh(self) -> None:
        if time.monotonic() - self.checked_at < self.interval:
            return
        if self._checking is not None:  # one read per interval, however many requests wait
            await asyncio.shield(self._checking)
            return
        self._checking = asyncio.get_running_loop().create_future()
        try:
            rows = await self.executor.fetch(Statement(topology.VERSION_SQL, []), durable=None)
            version = rows[0][0] if rows else 0
            if version != self.version:
                self.forget()
                self.version = version
            self.checked_at = time.monotonic()
        finally:
            self._checking.set_result(None)
            self._checking = None
