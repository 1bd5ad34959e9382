"""The meter: what happened to each queue, counted in memory and written to the database
every MESH_METER_FLUSH_SECONDS by a daemon thread of the process.

Counting is a dict increment under a lock, no I/O, so the hot path can afford it on every
message. The flush (messaging.metrics.upsert) adds the deltas to the per-minute rows and to
the queue's totals. Counters are monitoring data, not messages: what a process counted
since its last flush is lost when it crashes or is killed (at most a few seconds' worth);
a flush that fails (the store down) keeps the deltas for the next one.

One flusher per process, started by the first count, so it runs wherever counting happens
(uvicorn, Daphne, runserver, Celery workers) and nowhere else. A forked child (Celery's
prefork pool) starts with no deltas and no flusher of its own until it counts.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from django.conf import settings
from django.db import connections, transaction

log = logging.getLogger(__name__)

KINDS = ("published", "consumed", "acknowledged", "delivered", "delivery_failed", "dead_lettered")
_INDEX = {kind: index for index, kind in enumerate(KINDS)}
# A flush that keeps failing keeps its deltas; past this many (queue, minute) pairs the
# oldest minutes are dropped rather than letting an outage grow the process without bound.
MAX_PENDING = 100_000

Key = tuple[int, int]  # (queue id, minutes since the epoch, UTC)
Pending = dict[Key, list[int]]  # counts in KINDS order

_lock = threading.Lock()
_pending: Pending = {}
_flusher: threading.Thread | None = None
_started = False  # a flusher was started, or is not wanted (MESH_METER_FLUSH_SECONDS=0)
_start_lock = threading.Lock()


def meter_count(queue_id: int, kind: str, n: int = 1) -> None:
    """Count `n` events of `kind` (one of KINDS) for a queue, in the current minute; a
    negative `n` takes back what turned out not to have happened (a claim given back unused)."""
    if not n:
        return
    index = _INDEX[kind]
    key = (queue_id, int(time.time()) // 60)
    with _lock:
        counts = _pending.get(key)
        if counts is None:
            counts = _pending[key] = [0] * len(KINDS)
        counts[index] += n
    if not _started:
        _start()


def meter_count_after_commit(queue_id: int, kind: str, n: int = 1) -> None:
    """Count once the caller's transaction commits (at once outside one): a rolled-back
    claim or settle happened to nobody."""
    if n:
        transaction.on_commit(lambda: meter_count(queue_id, kind, n))


def meter_flush() -> bool:
    """Write what was counted; False when the store refused it (the deltas are kept for the
    next flush). Never raises: it runs under the hot path's feet."""
    taken = _take()
    if not taken:
        return True
    from .upsert import counts_add  # the models load after the apps; the meter before

    try:
        counts_add(taken)
    except Exception:  # noqa: BLE001 - any failure keeps the deltas; the next flush retries
        log.warning("meter: writing %d counts failed; kept for the next flush", len(taken), exc_info=True)
        _put_back(taken)
        return False
    return True


def meter_pending() -> Pending:
    """A copy of the deltas not yet written (for tests)."""
    with _lock:
        return {key: list(counts) for key, counts in _pending.items()}


def meter_discard() -> None:
    """Forget the deltas not yet written (for tests: what earlier tests counted)."""
    with _lock:
        _pending.clear()


def _take() -> Pending:
    global _pending
    with _lock:
        taken, _pending = _pending, {}
    return taken


def _put_back(taken: Pending) -> None:
    with _lock:
        for key, counts in taken.items():
            mine = _pending.setdefault(key, [0] * len(KINDS))
            for index, n in enumerate(counts):
                mine[index] += n
        if len(_pending) > MAX_PENDING:
            oldest = sorted(_pending, key=lambda key: key[1])[: len(_pending) - MAX_PENDING]
            log.warning("meter: dropping %d unwritten counts (the store has refused them for long)", len(oldest))
            for key in oldest:
                del _pending[key]


def _start() -> None:
    global _flusher, _started
    with _start_lock:
        if _started:
            return
        _started = True
        atexit.register(_flush_at_exit)
        interval = settings.MESH_METER_FLUSH_SECONDS
        if interval:
            _flusher = threading.Thread(target=_run, args=(interval,), name="meshsite-meter", daemon=True)
            _flusher.start()


def _run(interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            meter_flush()
        finally:
            # This thread's own connection: held between flushes it would be one more idle
            # connection per process, and a dead one after a store restart.
            connections.close_all()


def _flush_at_exit() -> None:
    try:
        meter_flush()
    finally:
        connections.close_all()


def _forget_after_fork() -> None:
    # The child got a copy of the parent's deltas (the parent writes them) and no thread.
    global _lock, _pending, _flusher, _started, _start_lock
    _lock, _start_lock = threading.Lock(), threading.Lock()
    _pending, _flusher, _started = {}, None, False


os.register_at_fork(after_in_child=_forget_after_fork)
