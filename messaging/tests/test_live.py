"""The live layer against the real store (PostgreSQL in CI, SQLite embedded): the poll finds
the queues with available messages in one statement and wakes their waiters when no
wake-up came; a publish in this process wakes waiters and delivers live topic messages to
matching listeners only."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from meshsite.testing import make_instance
from messaging import live
from messaging.hotpath.database import executor
from messaging.live.hub import Hub, LiveMessage
from messaging.models import Message, Queue
from messaging.store import statements

pytestmark = pytest.mark.django_db(transaction=True)


def _message(queue: Queue, **fields: object) -> Message:
    now = timezone.now()
    values = {"queue": queue, "payload": b"x", "size": 1, "content_type": "text/plain", "address": "queue:q",
              "created_at": now, "expires_at": now + timedelta(days=1), **fields}
    return Message.objects.create(**values)


class Waiter:
    def __init__(self) -> None:
        self.woken = asyncio.Event()

    def wake(self) -> None:
        self.woken.set()


class Listener:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.got: list[str] = []

    def deliver(self, message: LiveMessage) -> None:
        self.got.append(message.topic)


def test_poll_statement_names_exactly_the_queues_with_available_messages():
    instance = make_instance()
    empty, held, ready, expired_lock = (Queue.objects.create(instance=instance, name=f"a/b/c/{n}")
                                        for n in ("empty", "held", "ready", "lapsed"))
    now = timezone.now()
    # As a claim leaves them: held until the lock ends, then (had it lapsed) the redelivery delay.
    _message(held, locked_until=now + timedelta(minutes=1), available_at=now + timedelta(minutes=2),
             claim_id=uuid.uuid4(), claimed_by="c")
    _message(ready)
    _message(expired_lock, locked_until=now - timedelta(seconds=2), available_at=now - timedelta(seconds=1),
             claim_id=uuid.uuid4(), claimed_by="c")

    async def poll() -> set[int]:
        store = executor()
        try:
            ids = [empty.pk, held.pk, ready.pk, expired_lock.pk]
            rows = await store.fetch(statements.queues_with_available(queue_ids=ids, now=now), durable=None)
        finally:
            await store.close()
        return {row[0] for row in rows}

    assert asyncio.run(poll()) == {ready.pk, expired_lock.pk}


def test_the_poll_wakes_a_waiter_whose_message_came_without_a_wake_up(settings):
    settings.MESH_LIVE_POLL_MS = 50
    queue = Queue.objects.create(instance=make_instance(), name="a/b/c/polled")

    async def scenario() -> bool:
        store = executor()
        hub = Hub(asyncio.get_running_loop(), store.fetch)
        waiter = Waiter()
        hub.watch_queue(queue.pk, waiter)
        try:
            await asyncio.sleep(0.2)
            assert not waiter.woken.is_set()  # nothing there: no wake-up
            await asyncio.to_thread(_message, queue)  # written behind the live layer's back
            await asyncio.wait_for(waiter.woken.wait(), 10)
            return True
        finally:
            hub.unwatch_queue(queue.pk, waiter)
            await store.close()

    assert asyncio.run(scenario())


def test_a_publish_wakes_its_queues_waiters_and_reaches_matching_topic_listeners_only():
    async def scenario() -> tuple[bool, bool, list[str], list[str]]:
        hub = live.hub()
        mine, other = Waiter(), Waiter()
        news, sport = Listener("a/b/c/news/*"), Listener("a/b/c/sport/+")
        hub.watch_queue(1, mine)
        hub.watch_queue(2, other)
        hub.listen(7, news)
        hub.listen(7, sport)
        hub.listen(8, Listener("*"))
        live.queues_written([1])
        for subaccount, topic in ((7, "a/b/c/news/today/late"), (7, "a/b/c/weather/x"), (9, "a/b/c/news/x")):
            live.topic_published(LiveMessage.of(subaccount_id=subaccount, topic=topic, payload=b"", qos=0,
                                                content_type="text/plain", properties="", now=timezone.now()))
        for unwatch in ((1, mine), (2, other)):
            hub.unwatch_queue(*unwatch)
        return mine.woken.is_set(), other.woken.is_set(), news.got, sport.got

    assert asyncio.run(scenario()) == (True, False, ["a/b/c/news/today/late"], [])
