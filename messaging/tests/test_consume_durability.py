"""What a consume and an acknowledgement cost PostgreSQL: which commits wait for the WAL
flush (messaging.store.durability) and which index an acknowledgement reads, whatever the
planner's statistics say. PostgreSQL only: SQLite has neither switch nor planner choice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from meshsite.testing import make_instance
from messaging import store
from messaging.hotpath.database import PostgresExecutor
from messaging.models import Queue
from messaging.store import statements
from messaging.store.statements import Statement

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's synchronous_commit and planner"),
]

SHOW = Statement("SHOW synchronous_commit", [])


def test_qos1_claims_and_acks_may_skip_the_flush_but_a_qos0_consume_may_not():
    assert store.claim_may_skip_flush(1) and store.settle_may_skip_flush()
    assert not store.claim_may_skip_flush(0)  # a lost removal would deliver it a second time
    assert not store.may_skip_flush(1)  # an answered qos-1 publish is durable


def test_a_relaxed_statement_does_not_leave_its_connection_relaxed_for_a_durable_one(settings):
    settings.MESH_HOT_PATH_POOL_SIZE = 1  # one connection: each statement meets the last one's mode
    async def modes() -> list[str]:
        executor = PostgresExecutor()
        try:
            seen = []
            for durable in (True, False, None, True, None):
                rows = await executor.fetch(SHOW, durable=durable)
                seen.append(rows[0][0])
            return seen
        finally:
            await executor.close()

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        default = cursor.fetchone()[0]
    # None (a read) keeps whatever mode the connection is in; True restores the default.
    assert asyncio.run(modes()) == [default, "off", "off", default, default]


def _reset_statistics_and_fill(queue: Queue, count: int) -> None:
    """The state the benchmarks start from: the table emptied and vacuumed (so the planner
    believes it empty and has no column statistics), then a queue filled faster than
    autovacuum looks at it."""
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE messaging_message CASCADE")
        cursor.execute("VACUUM ANALYZE messaging_message")
        cursor.execute(
            "INSERT INTO messaging_message (queue_id, uuid, payload, size, content_type, address, qos, created_at,"
            " expires_at, delivery_count, claimed_by, death_reason, dead_from)"
            " SELECT %s, gen_random_uuid(), '\\x00', 1, 'a', 'q', 1, now(), now() + interval '1 day', 0, '', '', ''"
            " FROM generate_series(1, %s)", [queue.pk, count])


def test_an_ack_reads_one_claim_by_its_index_even_on_a_table_never_analyzed():
    instance = make_instance()
    queue = Queue.objects.create(instance=instance, name="a/b/c/plan")
    _reset_statistics_and_fill(queue, 3000)
    now = timezone.now()
    claim = statements.claim(postgres=True, queue_id=queue.pk, respect_ttl=False, qos=1, now=now,
                             lock_until=now + timedelta(minutes=1), consumer="c",
                             redelivery_delay_ms=queue.redelivery_delay_in_ms,
                             max_redelivery_delay_ms=queue.max_redelivery_delay_in_ms)
    settle = statements.settle(postgres=True, claim_ids=[uuid.uuid4()], held_at=now, instance_id=instance.pk,
                               queue_name=queue.name)
    with connection.cursor() as cursor:
        cursor.execute(claim.sql, [store.adapt(value) for value in claim.params])
        claim_id = cursor.fetchone()[statements.MESSAGE_COLUMNS.index("claim_id")]
        params = [[claim_id], *settle.params[1:]]
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + settle.sql, [store.adapt(v) for v in params])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # Before message_claim was unique, the planner ANDed it with a bitmap of the whole queue
    # (every one of the 3,000 entries of message_expiry or message_claimed_by) on every ack.
    assert "Index Scan using message_claim" in plan, plan
    assert "BitmapAnd" not in plan and "message_expiry" not in plan and "message_claimed_by" not in plan, plan
