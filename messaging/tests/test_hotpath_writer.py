"""Group commit against the real store (PostgreSQL in CI, SQLite embedded): concurrent
publishes share commits, every one is stored, and a row the store refuses fails only its
own publish."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from meshsite.testing import make_instance
from messaging.hotpath.database import executor, queue_gone
from messaging.hotpath.writer import GroupWriter
from messaging.models import Message, Queue

pytestmark = pytest.mark.django_db(transaction=True)


def _row(queue_id: int, body: bytes) -> tuple:
    now = timezone.now()
    return (queue_id, uuid.uuid4(), body, len(body), "text/plain", "queue:a/b/c/w", 1, now, now + timedelta(days=1), "")


def _run(*rows_per_publish: list[tuple], max_rows: int | None = None) -> tuple[GroupWriter, list]:
    async def publish_all() -> tuple[GroupWriter, list]:
        store = executor()
        writer = GroupWriter(store, max_rows=max_rows)
        try:
            results = await asyncio.gather(*(writer.write(rows, durable=True) for rows in rows_per_publish),
                                           return_exceptions=True)
        finally:
            await store.close()
        return writer, results

    return asyncio.run(publish_all())


def test_concurrent_publishes_share_commits_and_all_are_stored():
    queue = Queue.objects.create(instance=make_instance(), name="a/b/c/w")
    writer, results = _run(*([_row(queue.pk, f"m{n}".encode())] for n in range(60)))
    assert results == [None] * 60
    assert writer.rows == 60
    assert writer.batches < 60  # shared commits, not one per publish
    stored = sorted(bytes(p) for p in Message.objects.filter(queue=queue).values_list("payload", flat=True))
    assert stored == sorted(f"m{n}".encode() for n in range(60))
    assert all(m.size == len(bytes(m.payload)) and m.delivery_count == 0 and m.claim_id is None
               for m in Message.objects.filter(queue=queue))


def test_the_size_cap_splits_batches_but_never_a_publish():
    queue = Queue.objects.create(instance=make_instance(), name="a/b/c/w")
    fan_out = [_row(queue.pk, f"f{n}".encode()) for n in range(5)]  # one publish of five rows
    writer, results = _run(*([_row(queue.pk, f"m{n}".encode())] for n in range(8)), fan_out, max_rows=4)
    assert results == [None] * 9
    assert writer.batches >= 3  # 13 rows at most 4 per batch, the 5-row publish alone
    assert Message.objects.filter(queue=queue).count() == 13


def test_a_refused_row_fails_only_its_own_publish():
    instance = make_instance()
    kept = Queue.objects.create(instance=instance, name="a/b/c/w")
    gone = Queue.objects.create(instance=instance, name="a/b/c/gone")
    gone_id = gone.pk
    gone.delete()  # looked up before, deleted before the commit: the foreign key refuses its row
    writer, results = _run([_row(kept.pk, b"one")], [_row(kept.pk, b"two"), _row(gone_id, b"lost")],
                           [_row(kept.pk, b"three")])
    assert results[0] is None and results[2] is None
    assert queue_gone(results[1])
    # All or nothing per publish: the fan-out's good row went with its bad one.
    stored = sorted(bytes(p) for p in Message.objects.values_list("payload", flat=True))
    assert stored == [b"one", b"three"]
