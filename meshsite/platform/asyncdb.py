"""One async PostgreSQL pool per process and event loop, for request paths that run in the
event loop without a hop into Django's thread (the token fast path, tokenpath.py).

Django's ORM cannot run in the event loop (every query would need a thread hop), so these
paths speak psycopg's AsyncConnection directly, in autocommit, with the same connection
settings as Django's `default` database. The pool is small: a statement holds a connection
only for its round trip, and the sync pool (DATABASE_POOL_MAX_SIZE) is still there for
everything else. Connection attempts feed the store breaker as Django's own do
(meshsite/dbbackend), so an outage seen here opens it for the whole process.

A pool belongs to the loop it was opened in (its connections' sockets do): a process with
one server loop has one pool; tests that run several loops get one each.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from django.db import connections
from psycopg_pool import AsyncConnectionPool

from meshsite.storebreaker import record_connect

# One connection per statement in flight: a token waits for its commit's WAL flush (~3 ms on this
# machine's disk), and PostgreSQL flushes concurrent commits together, so more connections than
# clients buy nothing and fewer make the commits queue.
POOL_MAX_SIZE = 8

_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}


class BreakerAsyncConnection(psycopg.AsyncConnection):
    @classmethod
    async def connect(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            conn = await super().connect(*args, **kwargs)
        except psycopg.OperationalError as error:
            record_connect(error)
            raise
        record_connect(None)
        return conn


def is_postgresql() -> bool:
    return connections["default"].vendor == "postgresql"


def connect_kwargs() -> dict[str, Any]:
    db = connections["default"].settings_dict  # the test database's name under the test runner
    kwargs: dict[str, Any] = {"dbname": db["NAME"], "autocommit": True,
                              "connect_timeout": db.get("OPTIONS", {}).get("connect_timeout", 2)}
    for name, key in (("user", "USER"), ("password", "PASSWORD"), ("host", "HOST"), ("port", "PORT")):
        if db.get(key):
            kwargs[name] = db[key]
    return kwargs


def pool_timeout() -> float:
    # DATABASE_POOL_TIMEOUT, as the sync pool has it: how long a request waits for a connection.
    return float(connections["default"].settings_dict.get("OPTIONS", {}).get("pool", {}).get("timeout", 2))


async def pool() -> AsyncConnectionPool:
    """This loop's pool, opened on first use."""
    loop = asyncio.get_running_loop()
    found = _pools.get(loop)
    if found is None:
        for stale in [other for other in _pools if other.is_closed()]:
            del _pools[stale]
        found = AsyncConnectionPool(
            kwargs=connect_kwargs(), connection_class=BreakerAsyncConnection, min_size=1,
            max_size=POOL_MAX_SIZE, timeout=pool_timeout(), reconnect_timeout=5.0, open=False,
        )
        _pools[loop] = found
        await found.open(wait=False)
    return found


async def close() -> None:
    """Close this loop's pool (tests, shutdown)."""
    found = _pools.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.close()
