"""The hot path's way to the store: async psycopg on PostgreSQL, one writer thread on SQLite.

Both run the store's own statement texts (messaging.store.statements). On PostgreSQL an
`AsyncConnectionPool` per event loop, in autocommit, sized and timed like Django's pool, its
connection attempts reported to the store breaker like Django's (meshsite.storebreaker), so
an outage is answered at once on either path. On SQLite, which has one writer at a time
anyway, every statement runs on one dedicated thread through Django's own connection.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError as DjangoIntegrityError
from django.db import InterfaceError as DjangoInterfaceError
from django.db import OperationalError as DjangoOperationalError
from django.db import close_old_connections, connection, transaction
from psycopg.pq import ExecStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from meshsite.platform.asyncdb import BreakerAsyncConnection, connect_kwargs, pool_timeout
from meshsite.storebreaker import BREAKER
from messaging.store import adapt
from messaging.store.statements import Statement, insert_message, insert_messages_unnest

T = TypeVar("T")
TUPLES_OK = ExecStatus.TUPLES_OK
Row = tuple[Any, ...]


async def run_sync(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A sync (ORM) call off the event loop, for the rare paths (a cache miss, a dead
    letter, a limited queue's checked publish); its connection goes back to the pool after."""

    def call() -> T:
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return await sync_to_async(call, thread_sensitive=False)()


class Executor(Protocol):
    postgres: bool

    async def fetch(self, statement: Statement, *, durable: bool | None = True) -> list[Row]:
        """The rows it returns; `durable` as for `run`."""

    async def run(self, statement: Statement, *, durable: bool | None = True) -> int:
        """Rows changed. `durable=False`: the commit may return before the WAL flush
        (messaging.store.durability says which writes may); `None`: either will do (a read, or
        a write whose loss changes nothing), so the connection's mode is not switched."""

    async def insert(self, rows: Sequence[Row], *, durable: bool) -> None:
        """New messages (NEW_MESSAGE_COLUMNS per row) in one transaction."""

    async def close(self) -> None: ...


# A claim must walk the queue's FIFO index from its head and stop after LIMIT rows. When the
# statistics are thin (a queue filled faster than autoanalyze looks, or any benchmark's fresh
# table) the planner preferred a bitmap scan of the whole queue plus a sort: measured at
# 21,000 queued messages, 31.7 ms per claim of 100 instead of 4.0 ms, which held AMQP consume
# below 3,500 msgs/s. No statement of this pool gains from a bitmap scan (each reads one
# queue's head, one claim, or small tables), so the plan type is off for its sessions.
CLAIM_PLAN = "-c enable_bitmapscan=off"


class PostgresExecutor:
    postgres = True

    def __init__(self) -> None:
        # A pool of its own (not the token endpoint's, meshsite.platform.asyncdb): publishes
        # waiting for their group commit must not make token requests wait, or the other way.
        self.pool = AsyncConnectionPool(
            kwargs={**connect_kwargs(), "options": CLAIM_PLAN}, connection_class=BreakerAsyncConnection, min_size=1,
            max_size=settings.MESH_HOT_PATH_POOL_SIZE, timeout=pool_timeout(), reconnect_timeout=5.0, open=False,
            name="meshsite-hotpath",
        )
        self._opened = False
        self.recoveries = BREAKER.recoveries
        # Pooled connections whose session skips the WAL flush. A session setting, not SET
        # LOCAL: that needs a transaction around the statement (BEGIN, SET, COMMIT), which
        # measured costs more PostgreSQL CPU and latency than the flush it saves. A connection
        # is switched only when the next statement wants the other mode.
        self._relaxed: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    async def _admit(self) -> None:
        if not self._opened:
            self._opened = True
            await self.pool.open(wait=False)
        if BREAKER.is_open:
            # One probe per interval, off the loop (a connect may take its whole timeout).
            await run_sync(BREAKER.admit, self._probe)
        if self.recoveries != BREAKER.recoveries:
            # The store is back (whoever noticed): connections pooled before the outage are
            # dead; drop them now rather than meeting them one 503 at a time.
            self.recoveries = BREAKER.recoveries
            await self.pool.check()

    @staticmethod
    def _probe() -> None:
        kwargs = connect_kwargs()
        kwargs.pop("autocommit")
        psycopg.Connection.connect(**kwargs).close()

    async def _mode(self, conn: psycopg.AsyncConnection[Any], *, durable: bool | None) -> None:
        if durable is None or durable == (conn not in self._relaxed):
            return
        await conn.execute(FLUSH_DEFAULT if durable else FLUSH_SKIPPED)
        if durable:
            self._relaxed.discard(conn)
        else:
            self._relaxed.add(conn)

    async def fetch(self, statement: Statement, *, durable: bool | None = True) -> list[Row]:
        await self._admit()
        async with self.pool.connection() as conn:
            await self._mode(conn, durable=durable)
            cursor = await conn.execute(statement.sql, statement.params)
            # Not `cursor.description`: it builds a Column per column on every call.
            result = cursor.pgresult
            return await cursor.fetchall() if result is not None and result.status == TUPLES_OK else []

    async def run(self, statement: Statement, *, durable: bool | None = True) -> int:
        await self._admit()
        async with self.pool.connection() as conn:
            await self._mode(conn, durable=durable)
            cursor = await conn.execute(statement.sql, statement.params)
            return cursor.rowcount

    async def insert(self, rows: Sequence[Row], *, durable: bool) -> None:
        await self._admit()
        # One statement in autocommit is its own transaction: one round trip, and (in a
        # durable session) durable when it returns. A batch of one (every publish at low
        # load) takes the plain single-row INSERT: measured ~half the client CPU and ~0.3 ms
        # less per statement than unnest() over nine one-element arrays.
        params: Sequence[Any]
        if len(rows) == 1:
            statement, params = INSERT_ONE_BINARY, rows[0]
        else:
            statement, params = INSERT_MANY, [list(column) for column in zip(*rows, strict=True)]
        async with self.pool.connection() as conn:
            await self._mode(conn, durable=durable)
            await conn.execute(statement, params)

    async def close(self) -> None:
        await self.pool.close()


INSERT_MANY = insert_messages_unnest()
# The session's own default (the server's, the database's or the role's), not a forced `on`:
# a site that runs with synchronous_commit off keeps it.
FLUSH_DEFAULT = "SET synchronous_commit TO DEFAULT"
FLUSH_SKIPPED = "SET synchronous_commit TO OFF"
INSERT_ONE = insert_message()
INSERT_ONE_BINARY = insert_message(binary=True)


class DjangoExecutor:
    """SQLite (or any other backend): Django's connection on one thread of its own."""

    def __init__(self) -> None:
        self.postgres = connection.vendor == "postgresql"
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshsite-hotpath-db")

    async def _call(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, func)

    @staticmethod
    def _execute(statement: Statement, *, fetch: bool) -> Any:
        with connection.cursor() as cursor:
            cursor.execute(statement.sql, [adapt(value) for value in statement.params])
            return cursor.fetchall() if fetch else cursor.rowcount

    async def fetch(self, statement: Statement, *, durable: bool | None = True) -> list[Row]:
        # SQLite: no such switch (and durability is the embedded default's own setting).
        return await self._call(functools.partial(self._execute, statement, fetch=True))

    async def run(self, statement: Statement, *, durable: bool | None = True) -> int:
        return await self._call(functools.partial(self._execute, statement, fetch=False))

    async def insert(self, rows: Sequence[Row], *, durable: bool) -> None:
        def write() -> None:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(INSERT_ONE, [[adapt(value) for value in row] for row in rows])

        await self._call(write)

    async def close(self) -> None:
        self.thread.shutdown(wait=False)


def unavailable(error: BaseException) -> bool:
    """A failure of the store itself (down, restarting, pool exhausted, SQLite busy): 503."""
    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout,
                              DjangoOperationalError, DjangoInterfaceError))


def queue_gone(error: BaseException) -> bool:
    """A row refused because its queue was deleted after it was looked up."""
    return isinstance(error, (psycopg.errors.ForeignKeyViolation, DjangoIntegrityError))


def executor() -> Executor:
    return PostgresExecutor() if connection.vendor == "postgresql" else DjangoExecutor()
