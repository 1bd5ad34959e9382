"""A circuit breaker for the PostgreSQL store: fail at once while the store is known down.

Without it, every request during an outage waits for the connection pool's timeout before
its 503, holding a worker thread all that while (10 s each, measured before this module).
The breaker is fed by every connection attempt, the pool's own background reconnections
included: a failed connect opens it, a successful one closes it. While it is open, callers
are refused at once with `StoreUnavailable` (an OperationalError, so every existing 503
path answers it), except that one caller per probe interval is let through to try a fresh
connection itself: the pool's own retries back off exponentially (1, 2, 4 ... s), and
waiting for them would keep a recovered store looking down for a minute or more.

Pure state, no I/O: the caller supplies the probe and the clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg


class StoreUnavailable(psycopg.OperationalError):
    """The breaker is open: the store failed its last connection attempt."""


def is_outage(error: BaseException) -> bool:
    """A connect failure that says the server is unreachable or not accepting connections,
    rather than a refusal by a running server (too many clients, bad password), which an
    open breaker would only hide."""
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(error, psycopg.OperationalError) and (sqlstate is None or sqlstate.startswith("57P"))


class Breaker:
    def __init__(self, *, probe_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.probe_interval = probe_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._open = False
        self._last_attempt = 0.0
        self._probing = False
        # How many outages ended: a pool that counted fewer holds connections of before one.
        self.recoveries = 0

    @property
    def is_open(self) -> bool:
        return self._open

    def record(self, *, ok: bool) -> None:
        with self._lock:
            if self._open and ok:
                self.recoveries += 1
            self._open = not ok
            self._last_attempt = self.clock()

    def admit(self, probe: Callable[[], None]) -> None:
        """Return if the caller may use the store; raise StoreUnavailable otherwise.

        While open, the first caller after each probe interval runs `probe` (a fresh
        connection, bounded by the connect timeout); everyone else is refused without
        waiting, so an outage costs one connect timeout per interval, not one per request.
        """
        with self._lock:
            if not self._open:
                return
            if self._probing or self.clock() - self._last_attempt < self.probe_interval:
                raise StoreUnavailable("the message store is unavailable (connection failed recently)")
            self._probing = True
        try:
            probe()
        except Exception as error:
            if not is_outage(error):
                # The server answered (too many clients, say): it is up; let the caller
                # meet that refusal on its own connection attempt.
                self.record(ok=True)
                return
            self.record(ok=False)
            raise StoreUnavailable(f"the message store is unavailable: {error}") from error
        else:
            self.record(ok=True)
        finally:
            with self._lock:
                self._probing = False


# One per process, shared by its threads: the pool it guards is per process too.
BREAKER = Breaker(probe_interval=1.0)


def record_connect(error: BaseException | None) -> None:
    """What a connection attempt tells the breaker: success closes it, an outage opens it
    (the sync and async connection classes both report through this)."""
    if error is None:
        BREAKER.record(ok=True)
    elif is_outage(error):
        BREAKER.record(ok=False)
