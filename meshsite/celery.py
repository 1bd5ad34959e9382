"""The Celery app, and the worker's consumer that survives a Redis restart.

Celery 5.7.0 kills the worker when Redis goes away while a task is unacknowledged (with
`task_acks_late`, every task in flight is): on the connection error the consumer first
`collect()`s the broken connection, then -- new in 5.7.0 -- `close()`s it again. With Redis
gone, kombu's redis `Channel.close()` fails on its first step (reading the pending BRPOP
reply) and leaves the channel open, unacknowledged message and all, while `collect()` goes
on to detach the transport from its connection. The second close then reaches the channel's
restore of unacknowledged messages, which needs a new Redis pool built from the detached
transport: `AttributeError: 'NoneType' object has no attribute 'hostname'`, not a connection
error, so it escapes the worker's error handling and the worker exits ("Unrecoverable
error", measured in 5 of 5 restarts with the prefork and threads pools;
tests/test_worker_redis_restart.py).

No release without it keeps the rest of 5.7.0 (celery 5.6.3 lacks the second close, but
is a minor version back), and no setting avoids it: the second close is unconditional.
`MeshConsumer` therefore does what 5.6.3 did -- collect the broken connection, and do not
close it again -- and leaves the rest of the reconnect to Celery. Drop it (and
CELERY_WORKER_CONSUMER) once a Celery release fixes this; the test says when.
"""

from __future__ import annotations

import contextlib
import os

from celery import Celery
from celery.utils.threads import bound_open_broker_sockets
from celery.worker.consumer import Consumer
from celery.worker.consumer.consumer import COLLECT_SOCKET_TIMEOUT
from kombu import Connection

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")

app = Celery("meshsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["messaging", "visibility", "meshsite.platform"])


class MeshConsumer(Consumer):
    """Celery's consumer, minus the second close of a broken broker connection."""

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection: Connection | None = self.connection  # type: ignore[has-type]
        if connection is not None:
            # As Celery does: bound the reads that teardown makes on already-open sockets
            # (a peer gone silent would hang them), then release what can be released.
            bound_open_broker_sockets(connection, COLLECT_SOCKET_TIMEOUT)
            with contextlib.suppress(Exception):  # teardown of a dead connection: best effort
                connection.collect(socket_timeout=COLLECT_SOCKET_TIMEOUT)
            # Celery sets this to None itself right after its close; doing it first turns
            # its collect and close of the connection into no-ops. What it does next
            # (the warning, cancelling tasks if configured, the prefetch count) is unchanged.
            self.connection = None
        super().on_connection_error_after_connected(exc)
