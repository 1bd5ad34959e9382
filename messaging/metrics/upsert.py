"""The meter's flush: deltas added to QueueMinute and QueueCounter, one upsert statement per
table, both in one transaction (so a minute and the totals never disagree).

`INSERT ... ON CONFLICT (...) DO UPDATE SET col = table.col + excluded.col` on PostgreSQL and
SQLite alike. The rows come through `SELECT ... FROM (VALUES ...) WHERE EXISTS (queue)`: a
queue deleted since it was counted would otherwise fail the whole flush on its foreign key,
and the flush would fail again with the same deltas forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction

from ..models import Queue, QueueCounter, QueueMinute
from .meter import KINDS, Pending

# Rows per statement: 8 parameters each, well under SQLite's 32,766 and PostgreSQL's 65,535.
CHUNK = 1000


def counts_add(pending: Pending) -> None:
    """Add `pending` (queue id, epoch minute) -> counts to the minutes and the totals."""
    # Sorted, so two processes flushing the same rows lock them in the same order (no deadlock).
    minutes = [(queue_id, _minute(epoch_minute), *counts) for (queue_id, epoch_minute), counts
               in sorted(pending.items())]
    totals: dict[int, list[int]] = {}
    for (queue_id, _), counts in pending.items():
        total = totals.setdefault(queue_id, [0] * len(KINDS))
        for index, n in enumerate(counts):
            total[index] += n
    with transaction.atomic():
        _upsert(QueueMinute._meta.db_table, ("queue_id", "minute"), minutes)
        _upsert(QueueCounter._meta.db_table, ("queue_id",), [(key, *counts) for key, counts in sorted(totals.items())])


def _minute(epoch_minute: int) -> datetime:
    return datetime.fromtimestamp(epoch_minute * 60, UTC)


def _upsert(table: str, keys: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        params = [_adapt(value) for row in chunk for value in row]
        with connection.cursor() as cursor:
            cursor.execute(upsert_sql(table, keys, len(chunk)), params)


def upsert_sql(table: str, keys: tuple[str, ...], count: int) -> str:
    """The statement for `count` rows of (keys..., KINDS...). VALUES names its columns
    column1, column2, ... on both PostgreSQL and SQLite; the WHERE is also what SQLite needs
    to parse an INSERT ... SELECT followed by ON CONFLICT."""
    columns = (*keys, *KINDS)
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    selected = ", ".join(f"v.column{index}" for index in range(1, len(columns) + 1))
    added = ", ".join(f"{kind} = {table}.{kind} + excluded.{kind}" for kind in KINDS)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selected}"  # noqa: S608 - names are ours
        f" FROM (VALUES {', '.join([row] * count)}) AS v"
        f" WHERE EXISTS (SELECT 1 FROM {Queue._meta.db_table} WHERE id = v.column1)"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}"
    )


def _adapt(value: Any) -> Any:
    return connection.ops.adapt_datetimefield_value(value) if isinstance(value, datetime) else value
