"""The sweep's cleanup on real PostgreSQL: expired and exhausted messages leave in batches of
MESH_SWEEP_BATCH (more than one batch's worth all go, nothing else does), and a cleanup
batch that is still open blocks no consumer or publisher of the same queue."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from meshsite.testing import make_instance
from messaging import store
from messaging.models import Message, Queue
from messaging.services import queues_sweep
from messaging.store import cleanup

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

BATCH = 40


def _fill(queue: Queue, count: int, *, expires_in: timedelta, delivery_count: int = 0) -> None:
    now = timezone.now()
    Message.objects.bulk_create(
        Message(queue=queue, payload=b"x", size=1, content_type="text/plain", address="queue:x", created_at=now,
                expires_at=now + expires_in, delivery_count=delivery_count)
        for _ in range(count)
    )


def _batches(queries: CaptureQueriesContext) -> int:
    table = Message._meta.db_table
    return sum(1 for q in queries.captured_queries
               if q["sql"].startswith((f"UPDATE {table}", f"DELETE FROM {table}")) and "SKIP LOCKED" in q["sql"])


def test_the_sweep_moves_every_expired_message_in_batches_and_nothing_else():
    instance = make_instance()
    ttl = Queue.objects.create(instance=instance, name="a/b/c/ttl", respect_ttl=True, dead_msg_queue="a/b/c/dmq")
    plain = Queue.objects.create(instance=instance, name="a/b/c/plain")
    _fill(ttl, 3 * BATCH + 7, expires_in=-timedelta(seconds=1))
    _fill(ttl, 11, expires_in=timedelta(hours=1))
    _fill(plain, 13, expires_in=-timedelta(seconds=1))  # without respectTtl the expiry is only a header
    with CaptureQueriesContext(connection) as queries:
        assert queues_sweep(batch=BATCH) == 3 * BATCH + 7
    assert _batches(queries) == 4  # three full batches and the rest
    dead = Message.objects.filter(queue__name="a/b/c/dmq")
    assert dead.count() == 3 * BATCH + 7 and set(dead.values_list("death_reason", flat=True)) == {cleanup.EXPIRED}
    now = timezone.now()
    assert Message.objects.filter(queue=ttl).count() == 11 and not Message.objects.filter(
        queue=ttl, expires_at__lte=now).exists()
    assert Message.objects.filter(queue=plain).count() == 13


def test_the_sweep_drops_exhausted_messages_in_batches_and_keeps_held_and_fresh_ones():
    instance = make_instance()
    queue = Queue.objects.create(instance=instance, name="a/b/c/q", max_redelivery_count=2)
    _fill(queue, 2 * BATCH + 1, expires_in=timedelta(hours=1), delivery_count=3)
    _fill(queue, 5, expires_in=timedelta(hours=1), delivery_count=2)  # one redelivery left
    held = Message.objects.filter(queue=queue, delivery_count=3).order_by("id")[:1].get()
    until = timezone.now() + timedelta(minutes=1)
    Message.objects.filter(pk=held.pk).update(locked_until=until, available_at=until)
    assert queues_sweep(batch=BATCH) == 2 * BATCH
    assert set(Message.objects.filter(queue=queue).values_list("delivery_count", flat=True)) == {2, 3}
    assert Message.objects.filter(queue=queue).count() == 6 and Message.objects.filter(pk=held.pk).exists()


def test_a_dead_msg_queue_is_not_created_while_nothing_expired():
    instance = make_instance()
    queue = Queue.objects.create(instance=instance, name="a/b/c/ttl", respect_ttl=True, dead_msg_queue="a/b/c/dmq")
    _fill(queue, 3, expires_in=timedelta(hours=1))
    assert queues_sweep(batch=BATCH) == 0
    assert not Queue.objects.filter(name="a/b/c/dmq").exists()


def test_an_open_cleanup_batch_blocks_no_consumer_or_publisher_of_the_queue():
    instance = make_instance()
    queue = Queue.objects.create(instance=instance, name="a/b/c/ttl", respect_ttl=True)
    _fill(queue, BATCH + 5, expires_in=-timedelta(seconds=1))  # ahead of the fresh one in queue order
    _fill(queue, 1, expires_in=timedelta(hours=1))
    opened, release = threading.Event(), threading.Event()
    moved: list[int] = []

    def cleanup_in_open_transaction() -> None:
        try:
            with transaction.atomic():
                moved.append(cleanup.expire_batch(queue=queue, now=timezone.now(), limit=BATCH))
                opened.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    worker = threading.Thread(target=cleanup_in_open_transaction)
    worker.start()
    try:
        assert opened.wait(timeout=10)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")  # blocked would raise, not hang
            now = timezone.now()
            taken = store.claim(queue=queue, qos=1, consumer="c", now=now, lock_until=now + timedelta(minutes=1))
            _fill(queue, 1, expires_in=timedelta(hours=1))
        assert [m.expires_at > now for m in taken.messages] == [True]
    finally:
        release.set()
        worker.join(timeout=30)
    assert moved == [BATCH]
    assert Message.objects.filter(queue=queue).count() == 5 + 2
