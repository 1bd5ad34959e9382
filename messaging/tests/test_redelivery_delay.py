"""Poison messages are contained: a delivery that failed (a REST claim never acknowledged, an
explicit failed give-back) waits a redelivery delay that doubles with each attempt, up to the
queue's cap, before the message is offered again; the rest of the queue keeps flowing, and
an exhausted message still reaches the dead message queue once its delay is over. Times are
passed to the store explicitly: nothing here sleeps."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from uuid import UUID

import pytest
from django.utils import timezone

from meshsite.testing import MANAGEMENT, enc, make_instance, mesh_client_for
from messaging import store
from messaging.models import Message, Queue
from messaging.store import cleanup, rules, statements
from messaging.store.execute import fetch

Q1 = "a/b/c/q1"
DMQ = "a/b/c/dmq"
LOCK = timedelta(seconds=30)
MS = timedelta(milliseconds=1)


@pytest.fixture
def now() -> datetime:
    # Whole milliseconds: SQLite adds the delay to millisecond precision (rules.redelivery_at_sql).
    moment = timezone.now()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _queue(name: str = Q1, **attributes) -> Queue:
    instance = make_instance()
    return Queue.objects.create(instance=instance, name=name, **attributes)


def _publish(queue: Queue, count: int = 1, *, delivery_count: int = 0) -> list[Message]:
    now = timezone.now()
    return [
        Message.objects.create(queue=queue, payload=f"m{n}".encode(), size=2, content_type="text/plain",
                               address=f"queue:{queue.name}", created_at=now, expires_at=now + timedelta(days=1),
                               delivery_count=delivery_count)
        for n in range(count)
    ]


def _claim(queue: Queue, at: datetime, limit: int = 1) -> list[Message]:
    return store.claim(queue=queue, qos=1, consumer="c", now=at, lock_until=at + LOCK, limit=limit).messages


def _times(message: Message) -> tuple[datetime, datetime]:
    """(lock end, available again at) of a message given up by its consumer."""
    assert message.locked_until is not None and message.available_at is not None
    return message.locked_until, message.available_at


def _ids(messages: list[Message]) -> list[UUID]:
    return [message.claim_id for message in messages if message.claim_id]


def _available(queue: Queue, at: datetime) -> bool:
    return store.has_available(queue=queue, now=at)


def _held(queue: Queue, at: datetime) -> int:
    return int(fetch(statements.held_count(queue_id=queue.pk, consumer="c", now=at, limit=100))[0][0])


def test_an_unacknowledged_rest_claim_returns_after_its_lock_and_then_its_delay(mesh):
    client = mesh()
    assert client.put_queue(Q1).status_code == 201
    assert client.publish("queues", Q1, b"poison").status_code == 204
    consumed = client.consume(Q1)
    assert consumed.status_code == 200
    message = Message.objects.get()
    queue = Queue.objects.get(name=Q1)
    lock_end, available_at = _times(message)
    # delay(1) = the default base (SQLite rounds the sum to the millisecond)
    assert abs(available_at - (lock_end + 1000 * MS)) <= MS / 2
    assert not _available(queue, lock_end)  # the lock ran out: a failure, so its delay runs
    assert not _available(queue, lock_end + 998 * MS)
    assert _held(queue, lock_end) == 0  # nor is it counted against the consumer's flow any more
    assert _available(queue, lock_end + 1001 * MS)  # (SQLite: to the millisecond, either way)
    # The acknowledgement rule is unchanged: refused once the lock ran out, delay or not.
    assert not store.settle(claim_ids=_ids([message]), held_at=lock_end)
    assert store.settle(claim_ids=_ids([message]), held_at=lock_end - MS) == 1


def test_the_delay_doubles_with_each_failed_delivery_up_to_its_cap(db, now):
    queue = _queue(redelivery_delay_in_ms=1000, max_redelivery_delay_in_ms=5000)
    _publish(queue)
    at = now
    delays = []
    for _ in range(6):
        [message] = _claim(queue, at)
        lock_end = at + LOCK
        _, available_at = _times(Message.objects.get())
        delays.append((available_at - lock_end) // MS)
        assert not _claim(queue, available_at - MS)  # not a millisecond early
        at = available_at
    assert delays == [1000, 2000, 4000, 5000, 5000, 5000]
    assert Message.objects.get().delivery_count == 6


@pytest.mark.parametrize("attributes", [{"redelivery_delay_in_ms": 0}, {"max_redelivery_delay_in_ms": 0}])
def test_a_zero_delay_makes_the_message_available_at_its_lock_end(db, now, attributes):
    queue = _queue(**attributes)
    _publish(queue)
    for _ in range(3):
        _claim(queue, now)
        stored = Message.objects.get()
        assert stored.available_at == stored.locked_until == now + LOCK
        assert not _available(queue, now + LOCK - MS)
        now += LOCK


def test_give_back_failed_delays_a_batch_each_by_its_own_count_and_queue(db, now):
    slow = _queue(redelivery_delay_in_ms=1000, max_redelivery_delay_in_ms=300_000)
    fast = Queue.objects.create(instance=slow.instance, name="a/b/c/fast", redelivery_delay_in_ms=10,
                                max_redelivery_delay_in_ms=30)
    _publish(slow, delivery_count=0)
    _publish(slow, delivery_count=2)
    _publish(fast, delivery_count=4)
    claimed = [*_claim(slow, now, limit=2), *_claim(fast, now)]
    counts = sorted(m.delivery_count for m in claimed)
    assert counts == [1, 3, 5]
    failed_at = now + timedelta(seconds=2)
    assert store.give_back_failed(claim_ids=_ids(claimed), now=failed_at) == 3
    for message in Message.objects.select_related("queue"):
        q = message.queue
        expected = rules.redelivery_delay_ms(message.delivery_count, q.redelivery_delay_in_ms,
                                             q.max_redelivery_delay_in_ms)
        assert message.available_at == failed_at + expected * MS, message.delivery_count
        assert message.locked_until == failed_at and message.claim_id  # given back, still counted
    assert [m.delivery_count for m in Message.objects.order_by("id")] == [1, 3, 5]
    assert _held(slow, failed_at) == 0
    # An ack after the give-back is refused; a second give-back changes nothing.
    assert not store.settle(claim_ids=_ids([claimed[0]]), held_at=failed_at)
    assert store.give_back_failed(claim_ids=_ids([claimed[0]]), now=failed_at + MS) == 0


def test_give_back_failed_leaves_a_claim_whose_lock_already_ran_out(db, now):
    queue = _queue()
    _publish(queue)
    [message] = _claim(queue, now)
    before = Message.objects.get().available_at
    assert store.give_back_failed(claim_ids=_ids([message]), now=now + LOCK) == 0
    assert Message.objects.get().available_at == before
    assert store.give_back_failed(claim_ids=[], now=now) == 0


def test_a_released_message_is_back_at_once_and_not_counted(db, now):
    queue = _queue()
    _publish(queue)
    [message] = _claim(queue, now)
    store.give_back_unattempted(messages=[message], qos=1)
    stored = Message.objects.get()
    assert stored.available_at is None and stored.delivery_count == 0 and _available(queue, now)


def test_a_webhook_retry_is_available_exactly_at_its_own_retry_time(db, now):
    queue = _queue(redelivery_delay_in_ms=60_000)
    _publish(queue)
    [message] = _claim(queue, now)
    retry_at = now + timedelta(seconds=7)
    store.give_back_for_retry(queue=queue, message=message, retry_at=retry_at, reason="webhook: 500")
    stored = Message.objects.get()
    assert stored.available_at == stored.locked_until == retry_at  # its backoff, no delay on top
    assert not _available(queue, retry_at - MS) and _available(queue, retry_at)


@pytest.mark.parametrize("by", ["claim", "sweep"])
def test_an_exhausted_message_waits_out_its_delay_then_reaches_the_dead_message_queue(db, now, by):
    queue = _queue(max_redelivery_count=2, dead_msg_queue=DMQ, redelivery_delay_in_ms=1000)
    [poison] = _publish(queue)
    _publish(queue)  # behind it: keeps flowing meanwhile
    at = now
    for delivery in (1, 2, 3):
        [message] = _claim(queue, at)
        assert message.pk == poison.pk and message.delivery_count == delivery
        assert store.give_back_failed(claim_ids=_ids([message]), now=at + timedelta(seconds=1)) == 1
        at = Message.objects.get(pk=poison.pk).available_at
    waiting = at - MS
    # In its delay the exhausted message is neither dead-lettered early nor handed out.
    assert cleanup.exhaust_batch(queue=queue, now=waiting, limit=10) == 0
    [other] = _claim(queue, waiting)
    assert other.pk != poison.pk
    assert not _claim(queue, waiting)
    assert Message.objects.get(pk=poison.pk).queue_id == queue.pk
    if by == "sweep":
        assert cleanup.exhaust_batch(queue=queue, now=at, limit=10) == 1
    else:
        assert not _claim(queue, at)  # the claim met it exhausted and moved it instead
    dead = Message.objects.get(pk=poison.pk)
    assert dead.queue.name == DMQ and dead.death_reason == store.EXHAUSTED
    assert dead.available_at is None and dead.locked_until is None and dead.delivery_count == 0


def test_a_message_in_its_delay_does_not_block_the_ones_behind_it(db, now):
    queue = _queue()
    first, second, third = _publish(queue, 3)
    [taken] = _claim(queue, now)
    assert taken.pk == first.pk
    store.give_back_failed(claim_ids=_ids([taken]), now=now)
    assert [m.pk for m in _claim(queue, now)] == [second.pk]
    assert [m.pk for m in _claim(queue, now)] == [third.pk]
    assert not _claim(queue, now + 999 * MS)
    assert [m.pk for m in _claim(queue, now + 1000 * MS)] == [first.pk]


def test_over_rest_the_next_message_flows_while_an_abandoned_one_waits(mesh):
    client = mesh()
    assert client.put_queue(Q1, {"redeliveryDelayInMs": 60_000}).status_code == 201
    for body in (b"first", b"second"):
        assert client.publish("queues", Q1, body).status_code == 204
    assert client.consume(Q1).content == b"first"
    # The first one's lock runs out (as after MESH_ACK_TIMEOUT); its minute's delay has not.
    Message.objects.filter(locked_until__isnull=False).update(locked_until=timezone.now() - timedelta(seconds=1))
    again = client.consume(Q1)
    assert again.status_code == 200 and again.content == b"second"
    assert client.consume(Q1).status_code == 204


# --- the management API ------------------------------------------------------------------------


def _queue_url(name: str) -> str:
    return f"{MANAGEMENT}/queues/{enc(name)}"


def test_the_management_api_sets_and_returns_the_delay_attributes(mesh):
    client = mesh()
    created = client.put_queue(Q1)
    assert json.loads(created.content)["redeliveryDelayInMs"] == 1000
    assert json.loads(created.content)["maxRedeliveryDelayInMs"] == 300_000
    changed = client.put_queue(Q1, {"redeliveryDelayInMs": 0, "maxRedeliveryDelayInMs": 86_400_000})
    assert changed.status_code == 200
    got = json.loads(client.call("GET", _queue_url(Q1)).content)
    assert (got["redeliveryDelayInMs"], got["maxRedeliveryDelayInMs"]) == (0, 86_400_000)
    assert client.put_queue(Q1, {"maxRedeliveryCount": 2}).status_code == 200  # others untouched
    queue = Queue.objects.get(name=Q1)
    assert (queue.redelivery_delay_in_ms, queue.max_redelivery_delay_in_ms) == (0, 86_400_000)


def test_an_invalid_delay_on_create_creates_nothing(mesh):
    client = mesh()
    response = client.put_queue(Q1, {"redeliveryDelayInMs": -1})
    assert response.status_code == 400 and "redeliveryDelayInMs" in json.loads(response.content)["message"]
    assert not Queue.objects.exists()


def test_another_tenants_queue_of_the_same_name_keeps_its_own_delay(mesh):
    mine = mesh()
    theirs = mesh_client_for(make_instance("theirs", namespace="x/y/z"))
    assert mine.put_queue(Q1, {"redeliveryDelayInMs": 5}).status_code == 201
    assert theirs.call("GET", _queue_url(Q1)).status_code == 404
    listed = json.loads(theirs.call("GET", f"{MANAGEMENT}/queues").content)
    assert all(queue["name"] != Q1 for queue in listed)
    assert Queue.objects.get(instance=mine.instance).redelivery_delay_in_ms == 5
