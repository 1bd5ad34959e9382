"""The Prometheus collector behind /metrics: everything it exports is read from the database
at scrape time, so any server process answers for all of them (the meter's totals are
what every process flushed; depth is the store's own). A handful of queries per scrape,
none per queue.

Its own registry, without prometheus_client's default process and GC collectors: they
would describe whichever process the load balancer picked for this scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from django.db import connection
from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric

from ..models import Connection, Queue, QueueCounter, WebhookSubscription
from ..selectors import queues_stats
from ..services.connections import STALE
from .meter import KINDS

QUEUE_LABELS = ["namespace", "queue"]

# meter kind -> (counter name without _total, help)
COUNTERS = {
    "published": ("meshsite_messages_published", "Messages stored in the queue (a topic publish counts per queue)."),
    "consumed": ("meshsite_messages_consumed", "Messages handed to a consumer (REST, AMQP, WebSocket or webhook)."),
    "acknowledged": ("meshsite_messages_acknowledged", "qos-1 messages settled (acknowledged) and removed."),
    "delivered": ("meshsite_webhook_deliveries", "Webhook pushes the receiver accepted (2xx)."),
    "delivery_failed": ("meshsite_webhook_delivery_failures", "Webhook push attempts that failed."),
    "dead_lettered": ("meshsite_messages_dead_lettered",
                      "Messages moved to the dead message queue (or dropped without one)."),
}


class MeshCollector:
    def collect(self) -> Iterator[Metric]:
        queues = list(Queue.objects.select_related("instance").only("pk", "name", "instance__namespace"))
        labels = {queue.pk: [queue.instance.namespace, queue.name] for queue in queues}
        yield from _depth(queues, labels)
        yield from _counters(labels)
        yield _webhook_failures()
        yield _connections()
        yield _store_latency()


def _depth(queues: list[Queue], labels: dict[int, list[str]]) -> Iterator[Metric]:
    messages = GaugeMetricFamily("meshsite_queue_messages", "Messages in the queue.", labels=QUEUE_LABELS)
    size = GaugeMetricFamily("meshsite_queue_bytes", "Payload bytes of the messages in the queue.",
                             labels=QUEUE_LABELS)
    unacked = GaugeMetricFamily("meshsite_queue_unacknowledged_messages",
                                "Messages held by a consumer, not yet acknowledged.", labels=QUEUE_LABELS)
    for pk, stats in queues_stats(queues=queues).items():
        messages.add_metric(labels[pk], stats.message_count)
        size.add_metric(labels[pk], stats.size_in_bytes)
        unacked.add_metric(labels[pk], stats.unacknowledged)
    yield from (messages, size, unacked)


def _counters(labels: dict[int, list[str]]) -> Iterator[Metric]:
    totals = {row[0]: row[1:] for row in QueueCounter.objects.values_list("queue_id", *KINDS)}
    zero = (0,) * len(KINDS)
    for index, kind in enumerate(KINDS):
        name, documentation = COUNTERS[kind]
        family = CounterMetricFamily(name, documentation, labels=QUEUE_LABELS)
        for pk, values in labels.items():  # every queue, zero until counted
            family.add_metric(values, totals.get(pk, zero)[index])
        yield family


def _webhook_failures() -> Metric:
    family = GaugeMetricFamily("meshsite_webhook_consecutive_failures",
                               "Failed pushes since the webhook subscription's last success.",
                               labels=["namespace", "subscription", "queue", "status"])
    rows = WebhookSubscription.objects.values_list("instance__namespace", "name", "queue__name", "status",
                                                   "consecutive_failures")
    for namespace, name, queue, status, failures in rows:
        family.add_metric([namespace, name, queue, status], failures)
    return family


def _connections() -> Metric:
    family = GaugeMetricFamily("meshsite_connections", "Open WebSocket connections of live server processes.",
                               labels=["protocol"])
    alive = Connection.objects.filter(process__seen_at__gt=timezone.now() - STALE)
    for row in alive.values("protocol").annotate(count=Count("id")).order_by("protocol"):
        family.add_metric([row["protocol"]], row["count"])
    return family


def _store_latency() -> Metric:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return GaugeMetricFamily("meshsite_store_latency_seconds",
                             "Duration of a trivial query to the database, measured at this scrape.",
                             value=time.perf_counter() - started)


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(MeshCollector())  # type: ignore[arg-type]
