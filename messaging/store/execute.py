"""Runs the store's statements through Django's connection (the sync path): parameters
adapted for the vendor, returned rows turned into Message objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.db import connection
from django.utils import timezone

from ..models import Message
from .statements import MESSAGE_COLUMNS, Statement

_UUID_COLUMNS = {field.column for field in Message._meta.concrete_fields if field.get_internal_type() == "UUIDField"}
_ATTNAMES = tuple(field.attname for field in Message._meta.concrete_fields)


def postgres() -> bool:
    return connection.vendor == "postgresql"


def adapt(value: Any) -> Any:
    """What the vendor's driver takes: SQLite keeps UUIDs as 32 hex digits and datetimes as
    text; psycopg takes both as they are."""
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if isinstance(value, UUID) and not connection.features.has_native_uuid_field:
        return value.hex
    return value


def run(statement: Statement) -> int:
    """Execute; returns the number of rows changed."""
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, [adapt(value) for value in statement.params])
        return cursor.rowcount


def fetch(statement: Statement) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, [adapt(value) for value in statement.params])
        return cursor.fetchall()


def message_from_row(row: tuple[Any, ...]) -> Message:
    """A row in MESSAGE_COLUMNS order as a Message (what the ORM would have loaded)."""
    values: dict[str, Any] = {}
    for column, attname, value in zip(MESSAGE_COLUMNS, _ATTNAMES, row, strict=True):
        if column in _UUID_COLUMNS and value is not None and not isinstance(value, UUID):
            value = UUID(str(value))
        elif isinstance(value, datetime) and timezone.is_naive(value):  # SQLite keeps UTC, naive
            value = timezone.make_aware(value, UTC)
        elif isinstance(value, memoryview):
            value = bytes(value)
        values[attname] = value
    return Message(**values)


_INDEX = {column: index for index, column in enumerate(MESSAGE_COLUMNS)}


def row_value(row: tuple[Any, ...], column: str) -> Any:
    """One column of a row in MESSAGE_COLUMNS order, as psycopg returned it: for the hot path,
    which answers a consume from the row and builds a Message only to dead-letter it (a
    model instance per delivery was ~8% of a consume's CPU)."""
    return row[_INDEX[column]]


def fetch_messages(statement: Statement) -> list[Message]:
    return [message_from_row(row) for row in fetch(statement)]
