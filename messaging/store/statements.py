"""The store's statements as SQL text plus parameters, built from the rules and nothing
else: no connection, no cursor. `messaging.store.execute` runs them through Django today;
an async psycopg path can run the same text (psycopg takes `%s` and adapts the datetimes
and UUIDs given as parameters itself).

The texts depend on a few shape flags only (vendor, qos, respectTtl, how many rows), so each
shape is built once per process and cached: the hot path pays for no SQL compilation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

from ..models import AccessType, Message, Queue
from . import rules
from .deadletter import UNCLAIMED

MESSAGE = Message._meta.db_table
QUEUE = Queue._meta.db_table
# Every column, in model order: a claim returns whole rows, so that a qos-0 message (gone
# from the table once claimed) can be put back or dead-lettered as it was.
MESSAGE_COLUMNS: tuple[str, ...] = tuple(str(field.column) for field in Message._meta.concrete_fields)

# Lets the commit return before the WAL is flushed (PostgreSQL only; SQLite has no such
# switch): see `messaging.store.durability`.
SKIP_WAL_FLUSH = "SET LOCAL synchronous_commit TO OFF"


@dataclass(frozen=True)
class Statement:
    sql: str
    params: list[Any]
    # The meter's kind (messaging.metrics.meter.KINDS) of each row it returns, a queue id per
    # row: whoever runs it fetches the rows and counts them (messaging.store.count_returned).
    counted: str = ""


def _marks(count: int) -> str:
    return ", ".join(["%s"] * count)


def _claim_in(postgres: bool, claim_ids: list[UUID]) -> tuple[str, list[Any]]:
    """`claim_id` among `claim_ids`. On PostgreSQL one array parameter: one statement text
    whatever the count (prepared once), and one parameter to adapt instead of hundreds, which
    measured 14% of a consuming AMQP connection's CPU; SQLite has no arrays."""
    if postgres:
        return "claim_id = ANY(%s::uuid[])", [list(claim_ids)]
    return f"claim_id IN ({_marks(len(claim_ids))})", list(claim_ids)


# --- claim ---------------------------------------------------------------------------------------

# A queue's messages in queue order, read from the FIFO index `message_fifo (queue_id, id)`.
# Written as a range on one value, not `queue_id = %s ... ORDER BY id`: with equality the
# planner drops queue_id from the sort order and may walk the primary key instead, filtering
# on queue_id, whenever one queue holds most of the table; from a queue of 1,000,000 behind
# 100,000 older rows of other queues that read all 100,000 (160 ms) for every claim.
# With the range only `message_fifo` gives the order (docs/performance.md).
_IN_QUEUE = "queue_id >= %s AND queue_id <= %s"
_QUEUE_ORDER = "queue_id, id"


def _in_queue(queue_id: int) -> list[Any]:
    return [queue_id, queue_id]


@lru_cache(maxsize=64)
def _claim_text(*, postgres: bool, qos: int, respect_ttl: bool, single: bool, flow: bool) -> str:
    now = datetime.min  # a stand-in: only the text is kept, the parameters come per call
    available, _ = rules.available_sql(now, respect_ttl=respect_ttl)
    # SKIP LOCKED: concurrent consumers each take a different head row instead of queueing on
    # one lock. SQLite has one writer at a time, so there is nothing to skip.
    head = f"SELECT id FROM {MESSAGE} WHERE {_IN_QUEUE} AND {available} ORDER BY {_QUEUE_ORDER} LIMIT %s"  # noqa: S608
    head += " FOR UPDATE SKIP LOCKED" if postgres else ""
    # `id = (...)` for one row: PostgreSQL runs the subquery once as an InitPlan and then
    # touches one row by primary key; `IN` is the same for a batch.
    where = f"id = ({head})" if single else f"id IN ({head})"
    if flow:
        # maxDeliveredUnackedMsgsPerFlow in the same statement: nothing is claimed while the
        # consumer holds the limit (counting stops there). Uncorrelated, so it runs once.
        held, _ = rules.held_by_sql("", now)
        where += (
            f" AND (SELECT count(*) FROM (SELECT 1 FROM {MESSAGE} WHERE queue_id = %s AND {held} LIMIT %s)"  # noqa: S608
            " AS held) < %s"
        )
    returning = ", ".join(MESSAGE_COLUMNS)
    if qos == 0:
        return f"DELETE FROM {MESSAGE} WHERE {where} RETURNING {returning}"  # noqa: S608
    new_claim = "gen_random_uuid()" if postgres else "lower(hex(randomblob(16)))"
    # Should the claim lapse (the consumer never settles), that delivery failed: the message
    # is offered again only after its redelivery delay. Computed here, in the same UPDATE, so
    # that the available rule stays one column compared with `now` on the FIFO index.
    lapse, _ = _claim_lapse(postgres, base=("%s", []), cap=("%s", []), count="delivery_count + 1")
    return (
        f"UPDATE {MESSAGE} SET locked_until = %s, available_at = {lapse}, claim_id = {new_claim},"  # noqa: S608
        f" claimed_by = %s, delivery_count = delivery_count + 1 WHERE {where} RETURNING {returning}"
    )


def _claim_lapse(postgres: bool, *, base: rules.Fragment, cap: rules.Fragment, count: str = "delivery_count",
                 start: Any = None) -> rules.Fragment:
    """When a claim whose lock ends at `start` (a placeholder) is available again."""
    return rules.redelivery_at_sql(postgres=postgres, start=("%s", [start]), count=count, base=base, cap=cap)


def _queue_column(column: str) -> rules.Fragment:
    """A column of the message's own queue, for a statement that names messages by claim id
    only (a batch may span queues). One primary-key lookup per row changed."""
    return f"SELECT {column} FROM {QUEUE} WHERE {QUEUE}.id = {MESSAGE}.queue_id", []  # noqa: S608


def claim(
    *, postgres: bool, queue_id: int, respect_ttl: bool, qos: int, now: datetime, limit: int = 1,
    redelivery_delay_ms: int, max_redelivery_delay_ms: int, lock_until: datetime | None = None,
    consumer: str = "", flow_limit: int = 0,
) -> Statement:
    """Take up to `limit` available messages in queue order, in one statement: qos 1 locks
    them to `consumer` until `lock_until` with a fresh claim id and counts the delivery;
    qos 0 removes them. With `flow_limit`, none while `consumer` holds that many. A qos-1
    claim that lapses makes its message available after the queue's redelivery delay
    (its attributes given here: the caller holds the queue, the claim reads no queue row)."""
    text = _claim_text(postgres=postgres, qos=qos, respect_ttl=respect_ttl, single=limit == 1, flow=bool(flow_limit))
    _, available = rules.available_sql(now, respect_ttl=respect_ttl)
    params: list[Any] = [*_in_queue(queue_id), *available, limit]
    if flow_limit:
        _, held = rules.held_by_sql(consumer, now)
        params += [queue_id, *held, flow_limit, flow_limit]
    if qos == 1:
        _, lapse = _claim_lapse(postgres, base=("%s", [redelivery_delay_ms]), cap=("%s", [max_redelivery_delay_ms]),
                                start=lock_until)
        params = [lock_until, *lapse, consumer, *params]
    return Statement(text, params)


# --- settle and give back --------------------------------------------------------------------


def settle(*, postgres: bool, claim_ids: list[UUID], held_at: datetime | None = None,
           instance_id: UUID | None = None, queue_name: str | None = None) -> Statement:
    """Remove settled (acknowledged) messages, returning the queue id of each. With `held_at`,
    only while the claim's lock still holds then; with an instance and queue name, only in
    that queue (tenant-safe)."""
    match, params = _claim_in(postgres, claim_ids)
    sql = f"DELETE FROM {MESSAGE} WHERE {match}"  # noqa: S608
    if held_at is not None:
        sql += " AND locked_until > %s"
        params.append(held_at)
    if instance_id is not None:
        # The tenant check as a filter on the one row found, never a join: written as
        # `queue_id IN (SELECT ...)` it let the planner come from the queue row and read the
        # queue's messages by another index (message_claimed_by, message_expiry), every entry
        # left since the last vacuum, whenever the statistics were thin (docs/performance.md).
        # `claim_id` is unique (message_claim), so this way only that index can be used.
        sql += (f" AND (SELECT instance_id = %s AND name = %s FROM {QUEUE}"  # noqa: S608
                f" WHERE {QUEUE}.id = {MESSAGE}.queue_id)")
        params += [instance_id, queue_name]
    # The queue of each settled message, for the meter: a batch may span queues.
    return Statement(f"{sql} RETURNING queue_id", params, counted="acknowledged")


def give_back_at(*, postgres: bool, claim_ids: list[UUID], available_at: datetime) -> Statement:
    """Back to the queue at `available_at`, exactly (a caller's own retry schedule, such as a
    webhook's backoff: no redelivery delay on top), the delivery still counted, so
    maxRedeliveryCount applies."""
    match, params = _claim_in(postgres, claim_ids)
    sql = f"UPDATE {MESSAGE} SET locked_until = %s, available_at = %s WHERE {match}"  # noqa: S608
    return Statement(sql, [available_at, available_at, *params])


def give_back_failed(*, postgres: bool, claim_ids: list[UUID], now: datetime) -> Statement:
    """A delivery failed (AMQP Rejected or Modified(delivery-failed), a WebSocket nack): the
    lock ends `now` and the message waits out its redelivery delay, computed per row from its
    delivery count and its queue's attributes; the delivery stays counted. Only claims still
    held: one whose lock already ran out is waiting, or was taken again, already."""
    lapse, lapse_params = _claim_lapse(
        postgres, base=_queue_column("redelivery_delay_in_ms"), cap=_queue_column("max_redelivery_delay_in_ms"),
        start=now,
    )
    match, params = _claim_in(postgres, claim_ids)
    return Statement(
        f"UPDATE {MESSAGE} SET locked_until = %s, available_at = {lapse}"  # noqa: S608
        f" WHERE {match} AND locked_until > %s",
        [now, *lapse_params, *params, now],
    )


def give_back_uncounted(*, postgres: bool, claim_ids: list[UUID]) -> Statement:
    """Back to the queue at once, as if never claimed: a claim that was never attempted, or
    AMQP Released."""
    match, params = _claim_in(postgres, claim_ids)
    return Statement(
        f"UPDATE {MESSAGE} SET locked_until = NULL, available_at = NULL, claim_id = NULL, claimed_by = '',"  # noqa: S608
        f" delivery_count = delivery_count - 1 WHERE {match}",
        params,
    )


def extend(*, postgres: bool, claim_ids: list[UUID], until: datetime) -> Statement:
    """Keep claims alive for a consumer that is still working on them; should they lapse
    after all, the redelivery delay follows the new lock end."""
    lapse, lapse_params = _claim_lapse(
        postgres, base=_queue_column("redelivery_delay_in_ms"), cap=_queue_column("max_redelivery_delay_in_ms"),
        start=until,
    )
    match, params = _claim_in(postgres, claim_ids)
    return Statement(
        f"UPDATE {MESSAGE} SET locked_until = %s, available_at = {lapse} WHERE {match}",  # noqa: S608
        [until, *lapse_params, *params],
    )


# --- cleanup: expired and exhausted messages, a batch at a time -------------------------------


def dead_letter_batch(
    *, postgres: bool, queue_id: int, condition: rules.Fragment, order: str, limit: int,
    target_id: int | None, reason: str, dead_from: str,
) -> Statement:
    """Move up to `limit` messages of a queue that match `condition` to the dead message queue
    `target_id` as fresh deliveries (or delete them, with none), in one statement. SKIP LOCKED:
    rows a consumer or another sweep holds are left for the next batch, nobody waits.
    `order` is a column of an index on (queue_id, column), so the batch reads only itself."""
    sql, params = condition
    head = (
        f"SELECT id FROM {MESSAGE} WHERE {_IN_QUEUE} AND {sql} ORDER BY queue_id, {order} LIMIT %s"  # noqa: S608
        + (" FOR UPDATE SKIP LOCKED" if postgres else "")
    )
    head_params = [*_in_queue(queue_id), *params, limit]
    if target_id is None:
        return Statement(f"DELETE FROM {MESSAGE} WHERE id IN ({head})", head_params)  # noqa: S608
    moved = {"queue_id": target_id, **UNCLAIMED, "death_reason": reason[:200], "dead_from": dead_from}
    assignments = ", ".join(f"{column} = %s" for column in moved)
    return Statement(
        f"UPDATE {MESSAGE} SET {assignments} WHERE id IN ({head})", [*moved.values(), *head_params]  # noqa: S608
    )


# --- the exclusive-consumer hold ---------------------------------------------------------------


def hold_exclusive(*, queue_id: int, consumer: str, now: datetime, until: datetime) -> Statement:
    """Take or renew an EXCLUSIVE queue's lease for `consumer` in one UPDATE; no row updated
    means another consumer holds it. (Non-exclusive queues are admitted by the rule too, but
    callers skip the statement for them: it would write the queue row on every consume.)"""
    admits, params = rules.admits_consumer_sql(AccessType.EXCLUSIVE.value, consumer, now)
    return Statement(
        f"UPDATE {QUEUE} SET exclusive_owner = %s, exclusive_until = %s WHERE id = %s AND {admits}",  # noqa: S608
        [consumer, until, queue_id, *params],
    )


# --- checks --------------------------------------------------------------------------------------


def has_available(*, queue_id: int, respect_ttl: bool, now: datetime) -> Statement:
    """Whether the next claim would find a message. A plain read: locking the head row, even
    for a moment, would make a concurrent claim skip it and deliver out of order."""
    available, params = rules.available_sql(now, respect_ttl=respect_ttl)
    # The head in queue order, as the claim reads it: a bare `SELECT 1 ... LIMIT 1` lets the
    # planner scan the table from its start when one queue holds most of it (114 ms at 1M).
    # Callers may append `AND <condition>` and `LIMIT 1`.
    head = f"SELECT id FROM {MESSAGE} WHERE {_IN_QUEUE} AND {available} ORDER BY {_QUEUE_ORDER} LIMIT 1"  # noqa: S608
    return Statement(f"SELECT 1 FROM {MESSAGE} WHERE id = ({head})", [*_in_queue(queue_id), *params])  # noqa: S608


def queues_with_available(*, queue_ids: list[int], now: datetime) -> Statement:
    """Which of these queues hold a message the next claim could take (ignoring respectTtl:
    a hint for waiting consumers, whose claim decides). One index probe per queue, each read
    like the claim's head in queue order."""
    available, params = rules.available_sql(now, respect_ttl=False)
    probe = (f"SELECT %s AS queue WHERE EXISTS (SELECT 1 FROM {MESSAGE} WHERE {_IN_QUEUE} AND {available}"  # noqa: S608
             f" ORDER BY {_QUEUE_ORDER} LIMIT 1)")
    parts, values = [], []
    for queue_id in queue_ids:
        parts.append(probe)
        values += [queue_id, *_in_queue(queue_id), *params]
    return Statement(" UNION ALL ".join(parts), values)


def held_count(*, queue_id: int, consumer: str, now: datetime, limit: int) -> Statement:
    """How many messages of the queue `consumer` holds unacknowledged, counting up to `limit`."""
    held, params = rules.held_by_sql(consumer, now)
    return Statement(
        f"SELECT count(*) FROM (SELECT 1 FROM {MESSAGE} WHERE queue_id = %s AND {held} LIMIT %s) AS held",  # noqa: S608
        [queue_id, *params, limit],
    )


def claim_in_queue(*, queue_id: int, claim_id: UUID) -> Statement:
    """Whether a claim id is still on a message of the queue (its lock ran out, say)."""
    return Statement(f"SELECT 1 FROM {MESSAGE} WHERE queue_id = %s AND claim_id = %s", [queue_id, claim_id])  # noqa: S608


# --- publish -----------------------------------------------------------------------------------

# What a publish supplies per row, in this order; every other column starts empty: not held,
# never delivered, not dead.
NEW_MESSAGE_COLUMNS = ("queue_id", "uuid", "payload", "size", "content_type", "address", "qos", "created_at",
                       "expires_at", "properties")
_FRESH = {"delivery_count": "0", "claimed_by": "''", "death_reason": "''", "dead_from": "''"}
_TYPES = ("bigint", "uuid", "bytea", "integer", "text", "text", "smallint", "timestamptz", "timestamptz", "text")


def insert_message(*, binary: bool = False) -> str:
    """One new message: NEW_MESSAGE_COLUMNS as parameters (run once per row, or executemany).
    `binary`: the parameters travel in PostgreSQL's binary format (%b; psycopg only)."""
    columns = ", ".join((*NEW_MESSAGE_COLUMNS, *_FRESH))
    mark = "%b" if binary else "%s"
    values = ", ".join((*[mark] * len(NEW_MESSAGE_COLUMNS), *_FRESH.values()))
    return f"INSERT INTO {MESSAGE} ({columns}) VALUES ({values})"  # noqa: S608


def insert_messages_unnest() -> str:
    """Any number of new messages in one PostgreSQL statement: one array parameter per
    column of NEW_MESSAGE_COLUMNS, rows in array order (the group commit's batch insert; one
    text whatever the batch size, so it is prepared once per connection). The arrays travel
    in PostgreSQL's binary format (%b): as text, every payload byte would be escaped into the
    array literal and parsed back, which took half the client's CPU for a batch."""
    columns = ", ".join((*NEW_MESSAGE_COLUMNS, *_FRESH))
    arrays = ", ".join(f"%b::{kind}[]" for kind in _TYPES)
    names = ", ".join(f"c{n}" for n in range(len(NEW_MESSAGE_COLUMNS)))
    return (
        f"INSERT INTO {MESSAGE} ({columns}) SELECT {names}, {', '.join(_FRESH.values())}"  # noqa: S608
        f" FROM unnest({arrays}) AS r({names})"
    )
