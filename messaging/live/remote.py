"""Live traffic between server processes, through the channel layer (Redis in production).

Each hub has one channel on the layer and joins one group per queue it watches
(`meshsite.queue.<id>`) and per subaccount whose topics it listens to
(`meshsite.topics.<id>`). A process that writes to a queue, or publishes to a topic, sends a
wake-up or the live message to that group, but only when some *other* process is in it:
which processes are interested is kept in Redis beside the groups (a sorted set per group,
process id -> expiry), refreshed by each hub and read by publishers at most every
MESH_LIVE_INTEREST_MS. Without that check every publish would cost a Redis round trip
whether anyone listened or not. A consumer that attaches in another process may therefore
miss the first MESH_LIVE_INTEREST_MS of live topic messages; queue messages it finds anyway
(its first claim, then the poll).

With the in-memory channel layer (`make run`) there is one process: nothing goes remote.
Redis failures are logged and dropped: a wake-up is a hint, and a live topic message is
not persistent by definition.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from redis.asyncio import Redis

from .hub import Hub, LiveMessage

log = logging.getLogger(__name__)

PROCESS = uuid.uuid4().hex
INTEREST_SECONDS = 30  # a process's entry outlives it by at most this long


def queue_group(queue_id: int) -> str:
    return f"meshsite.queue.{queue_id}"


def topics_group(subaccount_id: int) -> str:
    return f"meshsite.topics.{subaccount_id}"


def _interest_key(group: str) -> str:
    return f"meshsite:live:{group}"


def enabled() -> bool:
    layer = get_channel_layer()
    return layer is not None and not isinstance(layer, InMemoryChannelLayer)


class Interest:
    """Which groups another process is in, as last read (per process, bounded staleness)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.ttl = settings.MESH_LIVE_INTEREST_MS / 1000
        self.known: dict[str, tuple[float, bool]] = {}

    async def others_in(self, group: str) -> bool:
        now = time.monotonic()
        cached = self.known.get(group)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        members = await self.redis.zrangebyscore(_interest_key(group), time.time(), "+inf")
        others = any(bytes(member).decode() != PROCESS for member in members)  # type: ignore[arg-type]
        self.known[group] = (now, others)
        if len(self.known) > 100_000:
            self.known.clear()
        return others


class Remote:
    """One per hub: its channel, its groups, and sending to other processes."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.layer: Any = get_channel_layer()
        self.redis = Redis.from_url(settings.REDIS_URL)
        self.interest = Interest(self.redis)
        self.channel: str | None = None
        self.groups: set[str] = set()
        self._syncing: asyncio.Task[None] | None = None
        self._resync = False
        hub.interest_changed = self.groups_changed
        self._listener = hub.loop.create_task(self._listen(), name="meshsite-live-listen")
        self._refresher = hub.loop.create_task(self._refresh(), name="meshsite-live-interest")

    def wanted(self) -> set[str]:
        return {*(queue_group(q) for q in self.hub.waiters), *(topics_group(s) for s in self.hub.listeners)}

    def groups_changed(self) -> None:
        self._resync = True
        if self._syncing is None or self._syncing.done():
            self._syncing = self.hub.loop.create_task(self._sync())

    async def _sync(self) -> None:
        while self._resync:
            self._resync = False
            channel = await self._channel()
            wanted = self.wanted()
            try:
                for group in wanted - self.groups:
                    await self.layer.group_add(group, channel)
                    await self.redis.zadd(_interest_key(group), {PROCESS: time.time() + INTEREST_SECONDS})
                    self.groups.add(group)
                for group in self.groups - wanted:
                    self.groups.discard(group)
                    await self.layer.group_discard(group, channel)
                    await self.redis.zrem(_interest_key(group), PROCESS)
            except Exception:  # noqa: BLE001 - Redis down: the poll keeps consumers going
                log.warning("live: could not update the channel layer groups", exc_info=True)
                await asyncio.sleep(1)
                self._resync = True

    async def _channel(self) -> str:
        if self.channel is None:
            self.channel = await self.layer.new_channel("meshsite-hub")
        return self.channel

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(INTEREST_SECONDS / 3)
            try:
                for group in tuple(self.groups):
                    await self.redis.zadd(_interest_key(group), {PROCESS: time.time() + INTEREST_SECONDS})
                    await self.layer.group_add(group, await self._channel())  # the layer's own expiry
            except Exception:  # noqa: BLE001
                log.warning("live: could not refresh this process's interest", exc_info=True)

    async def _listen(self) -> None:
        channel = await self._channel()
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis down: try again shortly
                log.warning("live: receiving from the channel layer failed", exc_info=True)
                await asyncio.sleep(1)
                continue
            if message.get("origin") == PROCESS:
                continue  # this process delivered it locally already
            if message["type"] == "live.wake":
                self.hub.wake_local(message["queues"])
            elif message["type"] == "live.topic":
                self.hub.deliver_local(_live_from(message))

    # --- sending ----------------------------------------------------------------------------

    async def send_wakes(self, queue_ids: Iterable[int]) -> None:
        try:
            for queue_id in queue_ids:
                group = queue_group(queue_id)
                if await self.interest.others_in(group):
                    await self.layer.group_send(group, wakes_message([queue_id]))
        except Exception:  # noqa: BLE001
            log.warning("live: could not send wake-ups", exc_info=True)

    async def send_topic(self, message: LiveMessage) -> None:
        group = topics_group(message.subaccount_id)
        try:
            if await self.interest.others_in(group):
                await self.layer.group_send(group, topic_message(message))
        except Exception:  # noqa: BLE001
            log.warning("live: could not send a live topic message", exc_info=True)


def wakes_message(queue_ids: list[int]) -> dict[str, Any]:
    return {"type": "live.wake", "origin": PROCESS, "queues": queue_ids}


async def send_directly(message: dict[str, Any], groups: list[str]) -> None:
    layer: Any = get_channel_layer()
    for group in groups:
        await layer.group_send(group, message)


def topic_message(message: LiveMessage) -> dict[str, Any]:
    return {"type": "live.topic", "origin": PROCESS, "subaccount": message.subaccount_id, "topic": message.topic,
            "payload": message.payload, "content_type": message.content_type, "message_id": message.message_id,
            "created_at": message.created_at.isoformat(), "properties": message.properties, "qos": message.qos}


def _live_from(data: dict[str, Any]) -> LiveMessage:
    return LiveMessage(subaccount_id=data["subaccount"], topic=data["topic"], payload=data["payload"],
                       content_type=data["content_type"], message_id=data["message_id"],
                       created_at=datetime.fromisoformat(data["created_at"]), properties=data["properties"],
                       qos=data["qos"])
