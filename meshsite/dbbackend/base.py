"""The PostgreSQL backend that settings select for DATABASE_URL=postgres://...: Django's
own, with every connection attempt (the pool's included) reported to the breaker, and the
breaker asked before a request waits for the pool."""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base as postgresql

from meshsite.storebreaker import BREAKER, record_connect


class BreakerConnection(psycopg.Connection):
    """A psycopg connection whose connect() tells the breaker how it went; the pool opens
    its connections through this class, so its background reconnections count too."""

    @classmethod
    def connect(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            conn = super().connect(*args, **kwargs)
        except psycopg.OperationalError as error:
            record_connect(error)
            raise
        record_connect(None)
        return conn


class DatabaseWrapper(postgresql.DatabaseWrapper):
    @property
    def pool(self) -> Any:
        options = self.settings_dict["OPTIONS"].get("pool")
        if isinstance(options, dict):
            options.setdefault("connection_class", BreakerConnection)
        return super().pool

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        BREAKER.probe_interval = settings.DATABASE_PROBE_INTERVAL_MS / 1000
        BREAKER.admit(lambda: self._probe(conn_params))
        return super().get_new_connection(conn_params)

    def _probe(self, conn_params: dict[str, Any]) -> None:
        # A connection of its own rather than one from the pool: the pool's reconnections
        # may be sleeping in their backoff, and a probe must not wait for them.
        psycopg.Connection.connect(**conn_params).close()
        if self.pool is not None:
            # The store is back: connections pooled before the outage are dead; drop them
            # now, so that requests do not meet them one 503 at a time.
            self.pool.check()
