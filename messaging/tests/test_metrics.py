"""The meter and /metrics: publish, consume, acknowledge, webhook outcomes and dead letters
move the counters by exact amounts, the flush adds (never overwrites) and keeps what the
store refused, minutes are pruned, the cockpit's series are complete, and /metrics is only
for the token or the allowed networks.

Transactional: counts made inside a transaction are taken once it commits, as in production."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db import OperationalError
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from meshsite.testing import make_instance
from messaging.metrics import meter, meter_count, meter_flush
from messaging.metrics import upsert as upsert_module
from messaging.metrics.meter import KINDS, meter_discard, meter_pending
from messaging.metrics.retention import minutes_prune
from messaging.metrics.selectors import minute_of, queue_rates
from messaging.models import Connection, Queue, QueueCounter, QueueMinute, ServerProcess, WebhookSubscription
from messaging.services import queues_sweep

from .conftest import Q, hook, run
from .test_jsonws import connect, next_frame
from .test_jsonws import run as run_ws

pytestmark = pytest.mark.django_db(transaction=True)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _no_earlier_counts() -> None:
    meter_discard()  # what earlier tests counted is not this test's


def scrape(client, **extra) -> Samples:
    response = client.http.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def of(samples: Samples, name: str, queue: str = Q, namespace: str = "a/b/c") -> float:
    return samples[(name, frozenset({("namespace", namespace), ("queue", queue)}))]


def flushed_scrape(client) -> Samples:
    assert meter_flush()
    return scrape(client)


# --- publish, consume, acknowledge ---------------------------------------------------------------


def test_publish_consume_ack_move_counters_and_depth_by_exact_amounts(mesh):
    client = mesh()
    assert client.put_queue(Q).status_code == 201
    before = flushed_scrape(client)
    assert of(before, "meshsite_messages_published_total") == 0
    assert of(before, "meshsite_queue_messages") == 0

    for body in (b"one", b"two", b"three"):
        assert client.publish("queues", Q, body).status_code == 204
    after_publish = flushed_scrape(client)
    assert of(after_publish, "meshsite_messages_published_total") == 3
    assert of(after_publish, "meshsite_queue_messages") == 3
    assert of(after_publish, "meshsite_queue_bytes") == len(b"onetwothree")
    assert of(after_publish, "meshsite_queue_unacknowledged_messages") == 0

    first, second = client.consume(Q), client.consume(Q)
    assert first.status_code == second.status_code == 200
    after_consume = flushed_scrape(client)
    assert of(after_consume, "meshsite_messages_consumed_total") == 2
    assert of(after_consume, "meshsite_queue_unacknowledged_messages") == 2

    assert client.ack(Q, first["x-message-id"]).status_code == 200
    assert client.ack(Q, first["x-message-id"]).status_code == 404  # a refused ack counts nothing
    after_ack = flushed_scrape(client)
    assert of(after_ack, "meshsite_messages_acknowledged_total") == 1
    assert of(after_ack, "meshsite_queue_messages") == 2
    assert of(after_ack, "meshsite_queue_unacknowledged_messages") == 1
    assert of(after_ack, "meshsite_messages_published_total") == 3  # counters only go up


def test_qos0_consume_counts_as_consumed_without_an_ack(mesh):
    client = mesh()
    client.put_queue(Q)
    client.publish("queues", Q, qos="0")
    assert client.consume(Q, qos="0").status_code == 200
    samples = flushed_scrape(client)
    assert of(samples, "meshsite_messages_consumed_total") == 1
    assert of(samples, "meshsite_messages_acknowledged_total") == 0
    assert of(samples, "meshsite_queue_messages") == 0


def test_a_topic_publish_counts_once_per_destination_queue(mesh):
    client = mesh()
    for name in (Q, "a/b/c/q2"):
        client.put_queue(name)
        assert client.subscribe(name, "a/b/c/orders/*").status_code in (200, 201)
    client.put_queue("a/b/c/unsubscribed")
    assert client.publish("topics", "a/b/c/orders/new").status_code == 204
    samples = flushed_scrape(client)
    assert of(samples, "meshsite_messages_published_total", Q) == 1
    assert of(samples, "meshsite_messages_published_total", "a/b/c/q2") == 1
    assert of(samples, "meshsite_messages_published_total", "a/b/c/unsubscribed") == 0


def test_an_expired_message_swept_to_the_dead_message_queue_counts_as_dead_lettered(mesh):
    client = mesh()
    client.put_queue(Q, {"respectTtl": True, "deadMsgQueue": "a/b/c/dmq"})
    client.publish("queues", Q, headers={"x-message-expiration": "1"})
    time.sleep(0.01)
    assert queues_sweep() == 1
    samples = flushed_scrape(client)
    assert of(samples, "meshsite_messages_dead_lettered_total") == 1
    assert of(samples, "meshsite_queue_messages", "a/b/c/dmq") == 1


# --- webhooks -------------------------------------------------------------------------------------


def test_webhook_pushes_and_failures_are_counted_per_queue_and_subscription(client, receiver):
    subscription = hook(client, receiver.url())
    receiver.statuses = [500]  # the first push fails
    client.publish("queues", Q, b"m0")  # pushed at once (an eager delivery task): 500
    run(subscription)  # the retry: 200
    samples = flushed_scrape(client)
    assert of(samples, "meshsite_webhook_delivery_failures_total") == 1
    assert of(samples, "meshsite_webhook_deliveries_total") == 1
    assert of(samples, "meshsite_messages_acknowledged_total") == 1
    assert of(samples, "meshsite_queue_messages") == 0
    labels = frozenset({("namespace", "a/b/c"), ("subscription", "a/b/c/hook"), ("queue", Q),
                        ("status", WebhookSubscription.objects.get().status)})
    assert samples[("meshsite_webhook_consecutive_failures", labels)] == 0


def test_a_failing_webhook_shows_its_consecutive_failures(client, receiver):
    hook(client, receiver.url())
    receiver.statuses = [503]
    client.publish("queues", Q, b"m0")
    samples = flushed_scrape(client)
    failures = {labels: value for (name, labels), value in samples.items()
                if name == "meshsite_webhook_consecutive_failures"}
    assert list(failures.values()) == [1]
    assert of(samples, "meshsite_webhook_delivery_failures_total") == 1


# --- the flush -----------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    """The meter's clock, set by the test: `clock.at(datetime)`."""
    state = SimpleNamespace(now=time.time())
    monkeypatch.setattr(meter, "time", SimpleNamespace(time=lambda: state.now, sleep=time.sleep))
    state.at = lambda moment: setattr(state, "now", moment.timestamp())
    return state


def test_two_flushes_in_one_minute_add_to_the_same_row(clock):
    queue = Queue.objects.create(instance=make_instance(), name=Q)
    clock.at(datetime(2026, 5, 1, 12, 30, 5, tzinfo=UTC))
    meter_count(queue.pk, "published", 2)
    assert meter_flush()
    clock.at(datetime(2026, 5, 1, 12, 30, 55, tzinfo=UTC))
    meter_count(queue.pk, "published", 3)
    meter_count(queue.pk, "consumed")
    assert meter_flush()
    row = QueueMinute.objects.get()
    assert row.minute == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    assert (row.published, row.consumed, row.acknowledged) == (5, 1, 0)
    total = QueueCounter.objects.get(queue=queue)
    assert (total.published, total.consumed) == (5, 1)


def test_the_next_minute_gets_its_own_row_and_the_total_sums_both(clock):
    queue = Queue.objects.create(instance=make_instance(), name=Q)
    clock.at(datetime(2026, 5, 1, 12, 30, 59, tzinfo=UTC))
    meter_count(queue.pk, "dead_lettered")
    clock.at(datetime(2026, 5, 1, 12, 31, 0, tzinfo=UTC))
    meter_count(queue.pk, "dead_lettered", 4)
    assert meter_flush()  # both minutes in one flush
    assert list(QueueMinute.objects.order_by("minute").values_list("minute", "dead_lettered")) == [
        (datetime(2026, 5, 1, 12, 30, tzinfo=UTC), 1), (datetime(2026, 5, 1, 12, 31, tzinfo=UTC), 4)]
    assert QueueCounter.objects.get(queue=queue).dead_lettered == 5


def test_counts_of_a_deleted_queue_are_dropped_without_failing_the_flush():
    queue = Queue.objects.create(instance=make_instance(), name=Q)
    gone = Queue.objects.create(instance=queue.instance, name="a/b/c/gone")
    meter_count(queue.pk, "published")
    meter_count(gone.pk, "published")
    gone.delete()
    assert meter_flush()
    assert meter_pending() == {}
    assert list(QueueCounter.objects.values_list("queue_id", "published")) == [(queue.pk, 1)]


def test_a_flush_the_store_refuses_keeps_its_deltas_for_the_next(monkeypatch):
    queue = Queue.objects.create(instance=make_instance(), name=Q)
    meter_count(queue.pk, "acknowledged", 2)

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(upsert_module, "_upsert", down)
        assert meter_flush() is False  # logged, not raised
    assert [counts[KINDS.index("acknowledged")] for counts in meter_pending().values()] == [2]
    meter_count(queue.pk, "acknowledged")  # counted while the store was down
    assert meter_flush()
    assert QueueCounter.objects.get(queue=queue).acknowledged == 3
    assert QueueMinute.objects.get().acknowledged == 3


def test_counting_costs_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        for _ in range(1000):
            meter_count(1, "published")
    assert sum(counts[0] for counts in meter_pending().values()) == 1000


# --- retention ------------------------------------------------------------------------------------


def test_the_sweep_deletes_minutes_past_the_retention_and_keeps_the_totals(settings):
    settings.MESH_METER_RETENTION_HOURS = 48
    queue = Queue.objects.create(instance=make_instance(), name=Q)
    now = datetime(2026, 5, 3, 12, 0, tzinfo=UTC)
    for hours in (49, 48.5, 47, 1):
        QueueMinute.objects.create(queue=queue, minute=now - timedelta(hours=hours), published=1)
    QueueCounter.objects.create(queue=queue, published=4)
    queues_sweep(now=now)
    kept = sorted(now - minute for minute in QueueMinute.objects.values_list("minute", flat=True))
    assert kept == [timedelta(hours=1), timedelta(hours=47)]
    assert QueueCounter.objects.get(queue=queue).published == 4


def test_pruning_works_in_batches_until_done():
    queue = Queue.objects.create(instance=make_instance(), name=Q)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    QueueMinute.objects.bulk_create([QueueMinute(queue=queue, minute=old + timedelta(minutes=n)) for n in range(7)])
    assert minutes_prune(batch=3) == 7
    assert not QueueMinute.objects.exists()


# --- the cockpit's series -------------------------------------------------------------------------


def test_queue_rates_cover_every_queue_and_fill_missing_minutes_with_zeros(django_assert_num_queries):
    instance = make_instance()
    other = make_instance("other", "d/e/f")
    busy, idle, last = (Queue.objects.create(instance=instance, name=name)
                        for name in ("a/b/c/busy", "a/b/c/idle", "a/b/c/zzz"))
    foreign = Queue.objects.create(instance=other, name="d/e/f/q")
    now = datetime(2026, 5, 1, 12, 30, 42, tzinfo=UTC)
    QueueMinute.objects.create(queue=busy, minute=datetime(2026, 5, 1, 12, 30, tzinfo=UTC), published=7,
                               consumed=2)
    QueueMinute.objects.create(queue=busy, minute=datetime(2026, 5, 1, 12, 27, tzinfo=UTC), delivered=3,
                               delivery_failed=1, dead_lettered=4, acknowledged=5)
    QueueMinute.objects.create(queue=busy, minute=datetime(2026, 5, 1, 12, 20, tzinfo=UTC), published=99)  # too old
    QueueMinute.objects.create(queue=foreign, minute=datetime(2026, 5, 1, 12, 30, tzinfo=UTC), published=1)

    with django_assert_num_queries(2):  # the queues, then all their minutes
        series = queue_rates(instance=instance, minutes=5, now=now)

    assert [s.queue for s in series] == [busy.name, idle.name, last.name]
    axis = [datetime(2026, 5, 1, 12, minute, tzinfo=UTC) for minute in range(26, 31)]
    assert all(s.minutes == axis for s in series)
    first = series[0]
    assert first.published == [0, 0, 0, 0, 7]
    assert first.consumed == [0, 0, 0, 0, 2]
    assert (first.delivered, first.delivery_failed) == ([0, 3, 0, 0, 0], [0, 1, 0, 0, 0])
    assert (first.dead_lettered, first.acknowledged) == ([0, 4, 0, 0, 0], [0, 5, 0, 0, 0])
    for quiet in series[1:]:
        assert all(getattr(quiet, kind) == [0] * 5 for kind in KINDS)


def test_queue_rates_default_to_the_last_hour_ending_now():
    instance = make_instance()
    Queue.objects.create(instance=instance, name=Q)
    [series] = queue_rates(instance=instance)
    assert len(series.minutes) == len(series.published) == 60
    assert series.minutes[-1] == minute_of(datetime.now(UTC)) or series.minutes[-1] == minute_of(
        datetime.now(UTC) - timedelta(minutes=1))  # the minute may have turned since


def test_the_flushed_meter_feeds_the_cockpit_series(mesh):
    client = mesh()
    client.put_queue(Q)
    client.publish("queues", Q)
    assert meter_flush()
    [series] = queue_rates(instance=client.instance, minutes=2)
    assert sum(series.published) == 1


# --- access ---------------------------------------------------------------------------------------


def error_of(response) -> dict:
    return json.loads(response.content)


def test_the_right_token_reads_metrics_from_anywhere(mesh, settings):
    settings.MESH_METRICS_TOKEN = "s3cret-token"
    settings.MESH_METRICS_ALLOW = []
    client = mesh()
    response = client.http.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200
    assert b"meshsite_store_latency_seconds" in response.content


def test_a_wrong_token_is_401_in_the_meshsite_error_shape(mesh, settings):
    settings.MESH_METRICS_TOKEN = "s3cret-token"
    client = mesh()
    response = client.http.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong")  # even from an allowed address
    assert response.status_code == 401
    body = error_of(response)
    assert body["code"] == "unauthorized" and set(body) == {"detail", "code", "extra"}


def test_without_a_token_a_client_outside_the_allowed_networks_gets_403(mesh, settings):
    settings.MESH_METRICS_TOKEN = "s3cret-token"
    settings.MESH_METRICS_ALLOW = ["10.0.0.0/8"]
    client = mesh()
    response = client.http.get("/metrics", REMOTE_ADDR="192.0.2.1")
    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    assert client.http.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_the_default_allows_loopback_only(mesh):
    client = mesh()
    assert client.http.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.http.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.http.get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200
    assert client.http.get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 403


def test_a_service_key_token_is_no_metrics_token(mesh, settings):
    settings.MESH_METRICS_TOKEN = "s3cret-token"
    client = mesh()
    assert client.http.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {client.token}").status_code == 401


def test_metrics_cover_every_tenant_with_its_namespace(mesh):
    mine, theirs = mesh(), mesh("other", "d/e/f")
    mine.put_queue(Q)
    theirs.put_queue("d/e/f/q")
    theirs.publish("queues", "d/e/f/q")
    samples = flushed_scrape(mine)
    assert of(samples, "meshsite_messages_published_total", "d/e/f/q", "d/e/f") == 1
    assert of(samples, "meshsite_messages_published_total") == 0


def test_open_connections_are_counted_by_protocol_for_live_processes_only(mesh):
    client = mesh()
    now = timezone.now()
    alive = ServerProcess.objects.create(id="alive", started_at=now, seen_at=now)
    dead = ServerProcess.objects.create(id="dead", started_at=now, seen_at=now - timedelta(hours=1))
    for process, protocol in ((alive, "amqp"), (alive, "amqp"), (alive, "json"), (dead, "json")):
        Connection.objects.create(id=uuid.uuid4(), instance=client.instance, process=process, protocol=protocol,
                                  opened_at=now)
    samples = scrape(client)
    assert samples[("meshsite_connections", frozenset({("protocol", "amqp")}))] == 2
    assert samples[("meshsite_connections", frozenset({("protocol", "json")}))] == 1
    assert samples[("meshsite_store_latency_seconds", frozenset())] > 0


def test_the_admin_shows_the_meters_rows_read_only(admin_client):
    queue = Queue.objects.create(instance=make_instance(), name=Q)
    QueueMinute.objects.create(queue=queue, minute=datetime(2026, 5, 1, 12, 30, tzinfo=UTC), published=3)
    QueueCounter.objects.create(queue=queue, published=3)
    for model in ("queueminute", "queuecounter"):
        assert admin_client.get(f"/admin/messaging/{model}/").status_code == 200
        assert admin_client.get(f"/admin/messaging/{model}/add/").status_code == 403


def test_json_websocket_publish_delivery_and_ack_count_once(mesh):
    client = mesh()
    client.put_queue(Q)

    async def scenario() -> None:
        ws = await connect(client.token)
        for ref in ("1", "2"):
            await ws.send_json_to({"op": "publish", "ref": ref, "queue": Q, "body": "x"})
            await next_frame(ws, "published")
        await ws.send_json_to({"op": "subscribe", "sub": "s", "queue": Q, "credit": 2})
        first, _ = await next_frame(ws, "message"), await next_frame(ws, "message")
        await ws.send_json_to({"op": "ack", "sub": "s", "tag": first["tag"]})
        for _ in range(100):  # the ack is written (and counted) in the connection's next settle batch
            if acknowledged() == 1:
                break
            await asyncio.sleep(0.05)
        await ws.disconnect()  # the second goes back to the queue: still one consumption

    def acknowledged() -> int:
        return sum(counts[KINDS.index("acknowledged")] for counts in meter_pending().values())

    run_ws(scenario)
    samples = flushed_scrape(client)
    assert of(samples, "meshsite_messages_published_total") == 2
    assert of(samples, "meshsite_messages_consumed_total") == 2
    assert of(samples, "meshsite_messages_acknowledged_total") == 1
    assert of(samples, "meshsite_queue_messages") == 1
