"""The message store: each rule's SQL selects the same rows as its ORM expression and its
predicate (over generated rows covering every edge), and consuming is one statement."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from meshsite.testing import make_instance, mesh_client_for
from messaging import store
from messaging.models import AccessType, Message, Queue
from messaging.store import rules, statements

Q1 = "a/b/c/q1"


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def rows(db, now):
    """Messages in every state that matters: lock none/past/exactly now/future, a lock that
    ended with its redelivery delay still running or ending now, expiry past/now/future,
    delivery counts around the limit, in queues with and without respectTtl and
    maxRedeliveryCount."""
    instance = make_instance()
    second = timedelta(seconds=1)
    queues = [
        Queue.objects.create(instance=instance, name=f"a/b/c/q{ttl:d}{limit}", respect_ttl=ttl,
                             max_redelivery_count=limit)
        for ttl, limit in itertools.product((False, True), (0, 2))
    ]
    # (locked_until, available_at): available_at is never before the lock's end.
    locks = [(lock, lock) for lock in (None, now - second, now, now + second)]
    locks += [(now - second, now + second), (now - second, now)]
    expiries = (now - second, now, now + second)
    for queue, (lock, at), expiry, count in itertools.product(queues, locks, expiries, (0, 2, 3)):
        Message.objects.create(queue=queue, payload=b"x", size=1, content_type="text/plain", address="queue:x",
                               created_at=now, expires_at=expiry, locked_until=lock, available_at=at,
                               delivery_count=count)
    return queues


def _ids_by_sql(sql: str, params: list, queue: Queue | None = None) -> set[int]:
    where = f"{sql} AND queue_id = %s" if queue else sql
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {Message._meta.db_table} WHERE {where}",  # noqa: S608
                       [store.adapt(value) for value in [*params, *([queue.pk] if queue else [])]])
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.parametrize("respect_ttl", [False, True])
def test_the_available_rule_is_the_same_in_sql_orm_and_python(rows, now, respect_ttl):
    for queue in rows:
        messages = Message.objects.filter(queue=queue)
        by_orm = set(messages.filter(rules.available_q(now, respect_ttl=respect_ttl)).values_list("pk", flat=True))
        by_sql = _ids_by_sql(*rules.available_sql(now, respect_ttl=respect_ttl), queue=queue)
        by_python = {m.pk for m in messages
                     if rules.is_available(m.available_at, m.expires_at, now, respect_ttl=respect_ttl)}
        assert by_sql == by_orm == by_python
        assert 0 < len(by_orm) < messages.count()  # the generated rows cover both sides


def test_the_many_queue_available_rule_applies_each_queues_own_ttl(rows, now):
    by_queue = set()
    for queue in rows:
        by_queue |= set(Message.objects.filter(rules.available_q(now, respect_ttl=queue.respect_ttl), queue=queue)
                        .values_list("pk", flat=True))
    assert set(Message.objects.filter(rules.available_in_its_queue_q(now)).values_list("pk", flat=True)) == by_queue


def test_the_expiry_and_exhaustion_rules_match_their_predicates(rows, now):
    expired = set(Message.objects.filter(rules.expired_q(now)).values_list("pk", flat=True))
    exhausted = set(Message.objects.filter(rules.exhausted_q()).values_list("pk", flat=True))
    messages = list(Message.objects.select_related("queue"))
    assert expired == {m.pk for m in messages if m.queue.respect_ttl and m.expires_at <= now
                       and rules.is_available(m.available_at, m.expires_at, now, respect_ttl=False)}
    assert exhausted == {m.pk for m in messages if rules.exhausted(m.delivery_count, m.queue.max_redelivery_count)}
    assert expired and exhausted
    held = set(Message.objects.filter(rules.held_by_q("", now)).values_list("pk", flat=True))
    assert held == _ids_by_sql(*rules.held_by_sql("", now)) == {m.pk for m in messages if m.locked_until
                                                               and m.locked_until > now}
    assert held
    # A message waiting out its redelivery delay is neither held (not in a consumer's flow
    # count) nor available, nor expired or exhausted for the sweep.
    waiting = {m.pk for m in messages if m.locked_until and m.locked_until <= now and m.available_at > now}
    assert waiting and not waiting & held and not waiting & expired
    free = set(Message.objects.filter(rules.free_q(now)).values_list("pk", flat=True))
    assert not waiting & free


@pytest.mark.parametrize("count", [1, 2, 3, 10, 31, 32, 200])
def test_the_redelivery_delay_in_sql_is_the_python_rule(db, now, count):
    """Doubling from the base, capped, 0 disabling it, on the database's own date arithmetic."""
    postgres = connection.vendor == "postgresql"
    for base, cap in itertools.product((0, 1, 1000, 86_400_000), (0, 1500, 300_000, 86_400_000)):
        # `count` is a column expression in the statements; a literal stands in for it here.
        sql, params = rules.redelivery_at_sql(postgres=postgres, start=("%s", [now]), count=str(count),
                                              base=("%s", [base]), cap=("%s", [cap]))
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {sql}", [store.adapt(value) for value in params])
            value = cursor.fetchone()[0]
        at = value if isinstance(value, datetime) else datetime.fromisoformat(value).replace(tzinfo=UTC)
        expected = now + timedelta(milliseconds=rules.redelivery_delay_ms(count, base, cap))
        # SQLite's strftime rounds to the millisecond; PostgreSQL is exact.
        assert at == expected if postgres else abs(at - expected) <= timedelta(microseconds=500), (count, base, cap)


def test_the_exclusive_hold_in_sql_admits_whom_the_predicate_admits(db, now):
    instance = make_instance()
    second = timedelta(seconds=1)
    cases = itertools.product(AccessType.values, ("", "me", "other"), (None, now - second, now, now + second))
    queues = [
        Queue.objects.create(instance=instance, name=f"a/b/c/x{n}", access_type=access, exclusive_owner=owner,
                             exclusive_until=until)
        for n, (access, owner, until) in enumerate(cases)
    ]
    sql, params = rules.admits_consumer_sql(AccessType.EXCLUSIVE.value, "me", now)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {Queue._meta.db_table} WHERE {sql}", [store.adapt(p) for p in params])
        by_sql = {row[0] for row in cursor.fetchall()}
    by_python = {
        q.pk for q in queues
        if rules.admits_consumer(exclusive=q.access_type == AccessType.EXCLUSIVE, owner=q.exclusive_owner,
                                 until=q.exclusive_until, identity="me", now=now)
    }
    assert by_sql == by_python
    assert 0 < len(by_sql) < len(queues)


def test_the_claim_statement_takes_what_the_available_rule_selects_oldest_first(rows, now):
    for queue in rows:
        before = dict(Message.objects.filter(queue=queue).values_list("pk", "delivery_count"))
        available = Message.objects.filter(rules.available_q(now, respect_ttl=queue.respect_ttl), queue=queue)
        expected = sorted(available.values_list("pk", flat=True))
        taken = store.claim(queue=queue, qos=1, consumer="c", now=now, lock_until=now + timedelta(hours=1),
                            limit=len(expected) + 1)
        live = [pk for pk in expected if not rules.exhausted(before[pk], queue.max_redelivery_count)]
        assert [m.pk for m in taken.messages] == live and not taken.full
        assert all(m.delivery_count == before[m.pk] + 1 and m.claim_id for m in taken.messages)
        # The exhausted ones left the queue (no deadMsgQueue here: dropped) instead of going out.
        assert not Message.objects.filter(pk__in=set(expected) - set(live)).exists()


def _message_statements(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if Message._meta.db_table in q["sql"]]


@pytest.mark.parametrize("qos", ["0", "1"])
def test_a_consume_takes_its_message_in_one_statement(mesh, qos):
    client = mesh()
    assert client.put_queue(Q1).status_code == 201
    assert client.publish("queues", Q1, b"m").status_code == 204
    with CaptureQueriesContext(connection) as queries:
        consumed = client.consume(Q1, qos=qos)
    assert consumed.status_code == 200 and consumed.content == b"m"
    touching = _message_statements(queries)
    verb = "DELETE" if qos == "0" else "UPDATE"
    assert len(touching) == 1 and touching[0].startswith(verb) and "RETURNING" in touching[0], touching


def test_an_exclusive_consume_takes_the_hold_in_one_statement(mesh):
    client = mesh()
    assert client.put_queue(Q1, {"accessType": "EXCLUSIVE"}).status_code == 201
    with CaptureQueriesContext(connection) as queries:
        assert client.consume(Q1).status_code == 204
    on_queue = [q["sql"] for q in queries.captured_queries if Queue._meta.db_table in q["sql"]]
    # The queue's lookup, then the hold: one UPDATE that checks and takes it (no locking read).
    assert len(on_queue) == 2 and on_queue[1].startswith("UPDATE"), on_queue
    other = mesh_client_for(client.instance, key_name="second")
    assert other.consume(Q1).status_code == 409  # the hold still refuses a second consumer


def test_the_claim_text_is_built_once_per_shape():
    first = statements.claim(postgres=True, queue_id=1, respect_ttl=False, qos=1, now=timezone.now(),
                             redelivery_delay_ms=1000, max_redelivery_delay_ms=300_000)
    again = statements.claim(postgres=True, queue_id=2, respect_ttl=False, qos=1, now=timezone.now(),
                             redelivery_delay_ms=1000, max_redelivery_delay_ms=300_000)
    assert first.sql is again.sql
    assert "WHERE id = (SELECT id" in first.sql and "FOR UPDATE SKIP LOCKED" in first.sql
    sqlite = statements.claim(postgres=False, queue_id=1, respect_ttl=True, qos=0, now=timezone.now(), limit=5,
                              redelivery_delay_ms=1000, max_redelivery_delay_ms=300_000)
    assert "SKIP LOCKED" not in sqlite.sql and "id IN (SELECT id" in sqlite.sql and "expires_at > %s" in sqlite.sql


def test_the_per_queue_cleanup_rules_in_sql_match_their_orm_form(rows, now):
    for queue in rows:
        messages = Message.objects.filter(queue=queue)
        if queue.respect_ttl:
            by_orm = set(messages.filter(rules.expired_q(now)).values_list("pk", flat=True))
            assert by_orm and _ids_by_sql(*rules.expired_sql(now), queue=queue) == by_orm
        if queue.max_redelivery_count:
            by_orm = set(messages.filter(rules.exhausted_q()).values_list("pk", flat=True))
            by_sql = _ids_by_sql(*rules.exhausted_sql(queue.max_redelivery_count), queue=queue)
            assert by_orm and by_sql == by_orm
