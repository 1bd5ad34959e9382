"""Wake-ups for webhook delivery, sent off the publishing request's thread.

A publish to a queue with webhooks must start a delivery run, but the wake-up is only a
signal: the database holds the message, and the webhook sweep starts any run a lost
wake-up missed. So the request does not wait for it. It hands the queue ids to one
long-lived thread per process, which looks up the idle subscriptions and sends their
Celery tasks; wake-ups that pile up while it works are merged into one lookup.

Under ASGI every request runs on a fresh thread, where a wake-up would also pay for a
database connection and a broker producer of its own; this thread keeps both warm.
"""

from __future__ import annotations

import logging
import os
import queue
import threading

from django.conf import settings
from django.db import close_old_connections

from . import delivery  # delivery.wake_webhooks is looked up per call: tests replace it

log = logging.getLogger(__name__)


class _Waker:
    def __init__(self) -> None:
        self._pending: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def wake(self, queue_ids: list[int]) -> None:
        self._started()
        self._pending.put(queue_ids)

    def _started(self) -> None:
        # A forked child (prefork workers) inherits the object but not the thread.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pending = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="meshsite-webhook-waker", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            queue_ids = set(self._pending.get())
            while not self._pending.empty():  # merge what arrived meanwhile into one lookup
                queue_ids.update(self._pending.get_nowait())
            try:
                delivery.wake_webhooks(sorted(queue_ids))
            except Exception:  # noqa: BLE001 - database or broker down: the sweep takes over
                log.warning("could not wake webhook delivery for queues %s; the sweep will", queue_ids, exc_info=True)
            finally:
                close_old_connections()


_waker = _Waker()


def wake_after_publish(queue_ids: list[int]) -> None:
    """Start delivery for these queues' webhooks, without making the caller wait."""
    if settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND:
        _waker.wake(queue_ids)
        return
    try:
        delivery.wake_webhooks(queue_ids)
    except Exception:  # noqa: BLE001 - any broker failure: the publish stands, the sweep delivers
        log.warning("could not wake webhook delivery for queues %s; the sweep will", queue_ids, exc_info=True)
