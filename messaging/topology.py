"""Telling caches that queues or subscriptions changed.

The hot path (messaging.hotpath) keeps, per process, what a publish or consume needs of a
queue and which queues a topic reaches. Every committed change to a queue, a topic
subscription or a webhook subscription raises the version in the one-row Topology table;
a process that caches reads that version at most every MESH_TOPOLOGY_CHECK_MS and forgets
what it holds when it moved. The process that made the change forgets at once.

The receivers are model signals, so every writer counts (services, admin, a shell): a
change by `QuerySet.update()` on these models sends no signal and must call `changed()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import connection, transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from .models import Queue, Subscription, Topology, WebhookSubscription

log = logging.getLogger(__name__)

TOPOLOGY = Topology._meta.db_table
# The read the caches poll: one row by primary key.
VERSION_SQL = f"SELECT version FROM {TOPOLOGY} WHERE id = 1"  # noqa: S608

_forgetters: list[Callable[[], None]] = []


def on_change(forget: Callable[[], None]) -> None:
    """Call `forget` in this process after each committed change."""
    _forgetters.append(forget)


def changed(**_: object) -> None:
    """After the current transaction commits (at once outside one): raise the version, once
    per transaction however many rows changed (an instance's cascade delete, say)."""
    if connection.in_atomic_block and any(entry[1] is _bump for entry in connection.run_on_commit):
        return
    transaction.on_commit(_bump, robust=True)


def _bump() -> None:
    for forget in _forgetters:
        forget()
    if not Topology.objects.filter(pk=1).update(version=F("version") + 1):
        Topology.objects.get_or_create(pk=1, defaults={"version": 1})


def version() -> int:
    row = Topology.objects.filter(pk=1).values_list("version", flat=True).first()
    return row or 0


def connect() -> None:
    for model in (Queue, Subscription, WebhookSubscription):
        post_save.connect(changed, sender=model, dispatch_uid=f"topology-save-{model.__name__}")
        post_delete.connect(changed, sender=model, dispatch_uid=f"topology-delete-{model.__name__}")
