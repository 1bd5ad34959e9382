"""Open WebSocket connections per service instance, across server processes: the
per-instance connection quota (MESH_MAX_CONNECTIONS_PER_INSTANCE) and what the cockpit
shows as "consumers connected".

Each process keeps a row (ServerProcess) whose `seen_at` it renews every HEARTBEAT seconds;
a connection counts while its process was seen within STALE. A process that dies without
closing its sockets thus frees its instances' quota after STALE by itself, and the sweep
deletes its rows. Admissions of one instance are serialized on the instance's row, so
concurrent upgrades cannot both take the last free place.
"""

from __future__ import annotations

import socket
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from meshsite.platform.models import ServiceInstance

from ..live.remote import PROCESS
from ..models import Connection, ServerProcess

HEARTBEAT = 10.0
STALE = timedelta(seconds=3 * HEARTBEAT)

def process_seen() -> None:
    """This process is alive (its heartbeat, every HEARTBEAT seconds while it serves sockets)."""
    now = timezone.now()
    updated = ServerProcess.objects.filter(pk=PROCESS).update(seen_at=now)
    if not updated:
        ServerProcess.objects.update_or_create(pk=PROCESS, defaults={
            "host": socket.gethostname()[:255], "started_at": now, "seen_at": now})


def _admit(instance_id: uuid.UUID, protocol: str, limit: int) -> uuid.UUID | None:
    now = timezone.now()
    with transaction.atomic():
        list(ServiceInstance.objects.select_for_update().filter(pk=instance_id).values_list("pk"))
        open_now = Connection.objects.filter(instance_id=instance_id, process__seen_at__gt=now - STALE).count()
        if open_now >= limit:
            return None
        connection = Connection.objects.create(id=uuid.uuid4(), instance_id=instance_id, process_id=PROCESS,
                                               protocol=protocol, opened_at=now)
    return connection.id


def connection_open(*, instance: ServiceInstance, protocol: str) -> uuid.UUID | None:
    """Record a new connection of the instance; None when its quota is used up."""
    process_seen()
    return _admit(instance.pk, protocol, settings.MESH_MAX_CONNECTIONS_PER_INSTANCE)


def connection_close(*, connection_id: uuid.UUID) -> None:
    Connection.objects.filter(pk=connection_id).delete()


def connections_forget_dead(*, now: datetime | None = None) -> int:
    """The sweep's part: connections (and rows) of processes not seen within STALE."""
    cutoff = (now or timezone.now()) - STALE
    deleted, _ = ServerProcess.objects.filter(seen_at__lte=cutoff).delete()
    return int(deleted)


def connection_consumes(*, connection_id: uuid.UUID, queue_ids: list[int]) -> None:
    """The queues a connection consumes from now on (what the cockpit counts per queue)."""
    Connection.objects.filter(pk=connection_id).update(queue_ids=sorted(set(queue_ids)))
