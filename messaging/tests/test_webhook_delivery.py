"""The push engine, driven directly (one batch at a time) against a real local receiver:
headers and auth schemes, retries and backoff, Retry-After, dead-lettering, qos 0, pause and
resume, and competition with a REST consumer."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from uuid import uuid4

import pytest
from django.utils import timezone

from meshsite.platform.auth import client_for_token
from meshsite.testing import REST, enc
from messaging.models import DeliveryAttempt, Message, WebhookSubscription
from messaging.tests.conftest import Handler, Q, hook, publish_numbered, run, set_state

# With the stage modules (lease, pushing, run): a test replaces a name where it is read.
from messaging.webhooks.delivery import backoff_seconds, lease, pushing, webhook_deliver_batch, webhooks_due
from messaging.webhooks.delivery import run as delivery_run


def test_push_carries_the_message_its_headers_and_basic_auth(client, receiver):
    subscription = hook(client, receiver.url() + "?x=1", security={"type": "basicAuth", "user": "u", "password": "p"})
    client.publish("queues", Q, b'{"n": 1}', content_type="application/json")
    assert run(subscription) == 1
    push = receiver.pushes[0]
    message_uuid = DeliveryAttempt.objects.get().message_uuid
    assert push["body"] == b'{"n": 1}'
    assert push["path"] == "/hook?x=1"
    assert push["headers"]["Content-Type"] == "application/json"
    assert push["headers"]["x-address"] == f"queue:{Q}"
    assert push["headers"]["x-qos"] == "1"
    assert push["headers"]["x-message-id"] == str(message_uuid)
    assert push["headers"]["Authorization"] == "Basic dTpw"
    assert not Message.objects.exists()
    subscription.refresh_from_db()
    assert subscription.last_successful_delivery is not None


def test_oauth2_with_meshsites_own_token_endpoint_pushes_a_valid_meshsite_token(client, receiver, settings):
    security = {"type": "oauth2", "grantType": "client_credentials", "clientId": client.client_id,
                "clientSecret": client.client_secret, "tokenUrl": settings.MESH_PUBLIC_URL + "/oauth/token"}
    subscription = hook(client, receiver.url(), security=security)
    client.publish("queues", Q)
    assert run(subscription) == 1, list(DeliveryAttempt.objects.values("error", "status_code"))
    bearer = receiver.pushes[0]["headers"]["Authorization"].removeprefix("Bearer ")
    resolved = client_for_token(bearer)
    assert resolved is not None and resolved.instance == client.instance


def test_oauth2_token_is_fetched_again_once_when_the_receiver_answers_401(client, receiver):
    security = {"type": "oauth2", "grantType": "client_credentials", "clientId": "c", "clientSecret": "s",
                "tokenUrl": receiver.url("/token")}
    subscription = hook(client, receiver.url("/oauth-hook"), security=security)
    client.publish("queues", Q)
    assert run(subscription) == 1  # token-1 refused, token-2 accepted
    assert receiver.token_requests == 2
    assert [p["headers"]["Authorization"] for p in receiver.pushes] == ["Bearer token-1", "Bearer token-2"]
    client.publish("queues", Q)
    assert run(subscription) == 1
    assert receiver.token_requests == 2  # the good token is cached


def test_failed_push_is_retried_and_then_delivered(client, receiver):
    subscription = hook(client, receiver.url())
    client.publish("queues", Q, b"retry me")
    receiver.statuses = [500]
    assert run(subscription) == 0
    message = Message.objects.get()
    assert message.delivery_count == 1
    subscription.refresh_from_db()
    assert subscription.last_failed_delivery_reason == "receiver answered 500"
    shown = client.call("GET", f"{REST}/subscriptions/{enc('a/b/c/hook')}").json()
    assert shown["consecutiveFailures"] == 1 and shown["failingSince"] is not None
    assert run(subscription) == 1
    assert [p["body"] for p in receiver.pushes] == [b"retry me", b"retry me"]
    assert [a.succeeded for a in DeliveryAttempt.objects.order_by("id")] == [False, True]


def test_poison_message_goes_to_the_dead_message_queue_after_exactly_max_redelivery_count_retries(
    client, receiver
):
    client.put_queue(Q, {"maxRedeliveryCount": 2, "deadMsgQueue": "$namespace/dmq"})
    subscription = hook(client, receiver.url())
    client.publish("queues", Q, b"poison")
    receiver.statuses = [500] * 10
    for _ in range(5):
        run(subscription)
    # As in SAP Event Mesh (Solace's max-redelivery) and for REST consumers here: the first
    # delivery, then exactly maxRedeliveryCount redeliveries, then the dead message queue.
    assert len(receiver.pushes) == 1 + 2
    assert DeliveryAttempt.objects.filter(succeeded=False).count() == 3
    dead = Message.objects.select_related("queue").get()
    assert dead.queue.name == "a/b/c/dmq"
    assert "receiver answered 500" in dead.death_reason
    assert "receiver says 500" in dead.death_reason


def test_retry_after_on_429_closes_the_gate_for_that_long(client, receiver, settings):
    settings.MESH_WEBHOOK_RETRY_SCHEDULE = [5.0, 3600.0]
    subscription = hook(client, receiver.url())
    client.publish("queues", Q)
    receiver.statuses = [429]
    receiver.extra_headers = {"Retry-After": "120"}
    run(subscription)
    subscription.refresh_from_db()
    assert subscription.next_attempt_at is not None
    wait = (subscription.next_attempt_at - timezone.now()).total_seconds()
    assert 110 < wait <= 120
    assert run(subscription) == 0
    assert len(receiver.pushes) == 1  # nothing is sent while the gate is closed
    assert subscription.pk not in webhooks_due()


def test_backoff_grows_along_the_schedule_with_jitter(settings):
    settings.MESH_WEBHOOK_RETRY_SCHEDULE = [5.0, 30.0, 3600.0]
    assert 4.0 <= backoff_seconds(1, None) <= 6.0
    assert 24.0 <= backoff_seconds(2, None) <= 36.0
    assert 2880.0 <= backoff_seconds(9, None) <= 4320.0
    assert backoff_seconds(1, 99999.0) == 3600.0


def test_qos0_push_is_attempted_once_and_the_outcome_recorded(client, receiver):
    subscription = hook(client, receiver.url(), qos=0)
    client.publish("queues", Q, b"once")
    receiver.statuses = [500]
    run(subscription)
    run(subscription)
    assert len(receiver.pushes) == 1
    assert not Message.objects.exists()
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.succeeded, attempt.status_code) == (False, 500)


def test_paused_subscription_keeps_messages_and_resume_delivers_them_in_order(client, receiver, capture):
    subscription = hook(client, receiver.url())
    set_state(client, "pause")
    publish_numbered(client, 5)
    assert run(subscription) == 0
    assert Message.objects.count() == 5
    with capture(execute=True):  # resume wakes the (eager) delivery task
        set_state(client, "resume")
    assert [p["body"] for p in receiver.pushes] == [f"m{n}".encode() for n in range(5)]


def test_failing_endpoint_pauses_itself_past_the_window(client, receiver, settings):
    settings.MESH_WEBHOOK_PAUSE_AFTER = 60
    subscription = hook(client, receiver.url())
    client.publish("queues", Q)
    receiver.statuses = [500, 500]
    run(subscription)
    WebhookSubscription.objects.update(failing_since=timezone.now() - timedelta(seconds=61))
    run(subscription)
    subscription.refresh_from_db()
    assert subscription.status == "Paused"
    assert Message.objects.count() == 1  # the message stays queued


def test_publish_wakes_delivery_after_commit(client, receiver, capture):
    hook(client, receiver.url())
    with capture(execute=True):
        client.publish("queues", Q, b"woken")
    assert [p["body"] for p in receiver.pushes] == [b"woken"]


def test_pending_handshake_blocks_delivery(client, receiver):
    subscription = hook(client, receiver.url())
    WebhookSubscription.objects.update(handshake_status="Pending")
    client.publish("queues", Q)
    assert run(subscription) == 0
    assert receiver.pushes == []


def test_webhook_and_rest_consumer_compete_and_each_message_goes_to_one(client, receiver, settings):
    settings.MESH_WEBHOOK_BATCH = 1
    subscription = hook(client, receiver.url())
    publish_numbered(client, 10)
    by_rest = []
    for _ in range(5):
        response = client.consume(Q)
        by_rest.append(response.content)
        client.ack(Q, response["x-message-id"])
        run(subscription)
    pushed = [p["body"] for p in receiver.pushes]
    assert sorted(by_rest + pushed) == sorted(f"m{n}".encode() for n in range(10))
    assert not Message.objects.exists()


def test_slow_receiver_is_cut_at_the_timeout(client, receiver, settings, monkeypatch):
    settings.MESH_WEBHOOK_TIMEOUT = 1
    subscription = hook(client, receiver.url())
    client.publish("queues", Q)
    original = Handler.do_POST

    def slow(self: Handler) -> None:
        time.sleep(2)
        original(self)

    monkeypatch.setattr(Handler, "do_POST", slow)
    started = time.monotonic()
    assert run(subscription) == 0
    assert time.monotonic() - started < 1.9
    assert DeliveryAttempt.objects.get().error.startswith("timeout")
    assert Message.objects.get().delivery_count == 1


def test_a_run_pushes_a_backlog_in_order_over_one_connection_in_rounds(client, receiver, settings):
    settings.MESH_WEBHOOK_PREFETCH = 7
    subscription = hook(client, receiver.url())
    publish_numbered(client, 30)
    assert run(subscription) == 30
    assert [p["body"] for p in receiver.pushes] == [f"m{n}".encode() for n in range(30)]
    assert receiver.connections == 1  # kept alive across pushes and rounds
    assert not Message.objects.exists()
    assert DeliveryAttempt.objects.filter(succeeded=True).count() == 30


def test_a_failure_mid_round_keeps_the_order_and_counts_only_the_attempted_message(client, receiver, settings):
    settings.MESH_WEBHOOK_PREFETCH = 10
    subscription = hook(client, receiver.url())
    publish_numbered(client, 6)
    receiver.statuses = [200, 200, 500]
    assert run(subscription) == 2
    left = list(Message.objects.order_by("id").values_list("payload", "delivery_count", "claim_id"))
    assert [bytes(payload) for payload, _, _ in left] == [b"m2", b"m3", b"m4", b"m5"]
    assert left[0][1] == 1 and left[0][2] is not None  # the failed one waits out its backoff
    assert all(count == 0 and claim is None for _, count, claim in left[1:])  # never attempted
    assert run(subscription) == 4
    assert [p["body"] for p in receiver.pushes] == [b"m0", b"m1", b"m2", b"m2", b"m3", b"m4", b"m5"]


def test_qos0_goes_one_message_at_a_time_and_a_failure_leaves_the_rest_in_place(client, receiver, settings):
    subscription = hook(client, receiver.url(), qos=0)
    publish_numbered(client, 4)
    ids = list(Message.objects.order_by("id").values_list("id", flat=True))
    receiver.statuses = [200, 500]
    assert run(subscription) == 1
    assert list(Message.objects.order_by("id").values_list("id", "payload")) == [
        (ids[2], b"m2"), (ids[3], b"m3")
    ]  # m1 had its one attempt and is gone; m2 and m3 were never taken
    assert run(subscription) == 2
    assert [p["body"] for p in receiver.pushes] == [b"m0", b"m1", b"m2", b"m3"]


def _qos0_rows():
    return list(Message.objects.order_by("id").values_list("id", "uuid", "payload", "created_at", "expires_at"))


def test_a_qos0_message_claimed_but_not_yet_pushed_goes_back_in_place_when_the_run_breaks(
    client, receiver, monkeypatch
):
    subscription = hook(client, receiver.url(), qos=0)
    publish_numbered(client, 2)
    before = _qos0_rows()

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away before the push")

    monkeypatch.setattr(lease, "LOCK_MARGIN", -3600.0)  # every push first extends the claims ...
    monkeypatch.setattr(delivery_run, "_extend_claims", broken)  # ... which breaks
    with pytest.raises(RuntimeError):
        run(subscription)
    assert _qos0_rows() == before  # removed by the claim, restored as it was, in its place
    assert receiver.pushes == [] and not DeliveryAttempt.objects.exists()
    subscription.refresh_from_db()
    assert subscription.runner_until is None  # the lease went with the settle


def test_a_qos0_message_the_run_broke_off_pushing_is_never_pushed_again(client, receiver, monkeypatch):
    subscription = hook(client, receiver.url(), qos=0)
    client.publish("queues", Q, b"once at most")
    real = delivery_run.push

    def push_then_die(*args, **kwargs):
        real(*args, **kwargs)  # it reached the receiver ...
        raise SystemExit("... and the worker is shutting down")

    monkeypatch.setattr(delivery_run, "push", push_then_die)
    with pytest.raises(SystemExit):
        run(subscription)
    monkeypatch.setattr(delivery_run, "push", real)
    assert run(subscription) == 0
    assert [p["body"] for p in receiver.pushes] == [b"once at most"]
    assert not Message.objects.exists()
    assert DeliveryAttempt.objects.get().error == "the run broke off mid-push"


def test_a_message_already_past_its_redeliveries_is_dead_lettered_not_pushed(client, receiver):
    client.put_queue(Q, {"maxRedeliveryCount": 1, "deadMsgQueue": "$namespace/dmq"})
    subscription = hook(client, receiver.url())
    client.publish("queues", Q, b"worn out by REST consumers")
    client.publish("queues", Q, b"fresh")
    Message.objects.filter(payload=b"worn out by REST consumers").update(delivery_count=2)
    assert run(subscription) == 1
    assert [p["body"] for p in receiver.pushes] == [b"fresh"]
    dead = Message.objects.select_related("queue").get()
    assert (dead.queue.name, dead.death_reason) == ("a/b/c/dmq", "maxRedeliveryCount exceeded")


def test_resume_delivers_the_backlog_in_a_slow_start(client, receiver, settings, capture):
    settings.MESH_WEBHOOK_RESUME_RATE = 3
    settings.MESH_WEBHOOK_RESUME_RAMP = 3600
    subscription = hook(client, receiver.url())
    set_state(client, "pause")
    publish_numbered(client, 7)
    set_state(client, "resume")
    result = webhook_deliver_batch(subscription_id=subscription.pk)
    assert (result.delivered, result.more) == (3, True)  # one second's worth at 3/s
    assert result.paced_until is not None
    subscription.refresh_from_db()
    assert subscription.next_attempt_at == result.paced_until  # the sweep honours the pace too
    assert webhook_deliver_batch(subscription_id=subscription.pk).delivered == 0  # not before then
    WebhookSubscription.objects.update(resumed_at=timezone.now() - timedelta(hours=2), next_attempt_at=None)
    assert run(subscription) == 4  # the ramp has doubled past the full rate: no limit
    subscription.refresh_from_db()
    assert subscription.resumed_at is None  # backlog delivered: the slow start is over
    assert [p["body"] for p in receiver.pushes] == [f"m{n}".encode() for n in range(7)]


def test_the_engines_sql_deliverable_rule_matches_the_models(client):
    from django.db import connection

    from messaging.models import HandshakeStatus, Queue, WebhookStatus

    queue = Queue.objects.get(name=Q)
    for status in WebhookStatus.values:
        for handshake in HandshakeStatus.values:
            WebhookSubscription.objects.create(
                instance=queue.instance, queue=queue, name=f"{status}-{handshake}", endpoint="http://x.example/",
                status=status, handshake_status=handshake,
            )
    by_orm = set(WebhookSubscription.objects.filter(WebhookSubscription.deliverable()).values_list("name", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT name FROM {WebhookSubscription._meta.db_table} WHERE {WebhookSubscription.DELIVERABLE_SQL}",
            list(WebhookSubscription.DELIVERABLE_PARAMS),
        )
        by_sql = {row[0] for row in cursor.fetchall()}
    assert by_sql == by_orm == {"Active-Succeeded", "Active-Exempted"}
    assert by_orm == {s.name for s in WebhookSubscription.objects.all() if s.may_deliver}


def test_the_delivery_log_keeps_attempts_for_the_retention_period(client, receiver, settings):
    from messaging.webhooks.delivery import attempts_prune

    settings.MESH_WEBHOOK_ATTEMPT_RETENTION_DAYS = 7
    subscription = hook(client, receiver.url())
    publish_numbered(client, 3)
    assert run(subscription) == 3
    old, kept, young = DeliveryAttempt.objects.order_by("id")
    DeliveryAttempt.objects.filter(pk=old.pk).update(attempted_at=timezone.now() - timedelta(days=8))
    DeliveryAttempt.objects.filter(pk=kept.pk).update(attempted_at=timezone.now() - timedelta(days=6))
    assert attempts_prune(batch=1) == 1
    assert list(DeliveryAttempt.objects.order_by("id").values_list("pk", flat=True)) == [kept.pk, young.pk]
    settings.MESH_WEBHOOK_ATTEMPT_RETENTION_DAYS = 0  # keep everything
    DeliveryAttempt.objects.update(attempted_at=timezone.now() - timedelta(days=400))
    assert attempts_prune() == 0 and DeliveryAttempt.objects.count() == 2


def test_an_exempt_subscription_on_a_queue_with_messages_starts_delivering_at_once(client, receiver, capture):
    for n in range(3):
        client.publish("queues", Q, f"waiting {n}".encode())
    with capture(execute=True):  # creation wakes the (eager) delivery task after commit
        hook(client, receiver.url())
    assert [p["body"] for p in receiver.pushes] == [f"waiting {n}".encode() for n in range(3)]


def test_an_unusable_retry_after_still_closes_the_gate_and_counts_the_attempt(client, receiver):
    subscription = hook(client, receiver.url())
    client.publish("queues", Q)
    receiver.statuses = [429]
    receiver.extra_headers = {"Retry-After": "\xb2"}  # '²': a digit to str.isdigit, not to int()
    assert run(subscription) == 0
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.succeeded, attempt.status_code) == (False, 429)
    assert Message.objects.get().delivery_count == 1
    subscription.refresh_from_db()
    assert subscription.next_attempt_at is not None and subscription.consecutive_failures == 1


def test_an_unexpected_error_in_a_push_is_a_failed_attempt_not_a_loop(client, receiver, monkeypatch):
    subscription = hook(client, receiver.url())
    client.publish("queues", Q)

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(pushing, "_headers", broken)
    assert run(subscription) == 0
    attempt = DeliveryAttempt.objects.get()
    assert not attempt.succeeded and attempt.error.startswith("internal error: KeyError")
    assert Message.objects.get().delivery_count == 1  # counted towards maxRedeliveryCount
    subscription.refresh_from_db()
    assert subscription.next_attempt_at is not None  # the gate is closed: no retry before the backoff


def _after_first_push(monkeypatch, change) -> None:
    real, calls = delivery_run.push, []

    def push(*args, **kwargs):
        outcome = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            change()
        return outcome

    monkeypatch.setattr(delivery_run, "push", push)


def test_a_run_that_lost_its_lease_stops_and_leaves_the_new_runners_lease_alone(
    client, receiver, settings, monkeypatch
):
    import uuid

    settings.MESH_WEBHOOK_PREFETCH = 2
    subscription = hook(client, receiver.url())
    publish_numbered(client, 5)
    other, until = uuid.uuid4(), timezone.now() + timedelta(minutes=5)
    _after_first_push(monkeypatch, lambda: WebhookSubscription.objects.update(runner=other, runner_until=until))
    result = webhook_deliver_batch(subscription_id=subscription.pk)
    assert (result.delivered, result.lost, result.more) == (2, True, False)  # the round in hand, then stop
    subscription.refresh_from_db()
    assert (subscription.runner, subscription.runner_until) == (other, until)  # not released by the old run
    assert Message.objects.count() == 3 and not Message.objects.filter(claim_id__isnull=False).exists()


def test_a_subscription_paused_mid_run_stops_after_the_round_in_hand(client, receiver, settings, monkeypatch):
    settings.MESH_WEBHOOK_PREFETCH = 2
    subscription = hook(client, receiver.url())
    publish_numbered(client, 5)
    _after_first_push(monkeypatch, lambda: WebhookSubscription.objects.update(status="Paused"))
    assert run(subscription) == 2
    subscription.refresh_from_db()
    assert subscription.runner is None and subscription.runner_until is None  # released: resume can start at once
    assert [p["body"] for p in receiver.pushes] == [b"m0", b"m1"]
    assert Message.objects.count() == 3


def test_runs_on_one_thread_share_a_kept_alive_connection_until_it_idles_out(client, receiver, monkeypatch):
    monkeypatch.setattr(pushing, "_local", threading.local())  # a fresh worker thread's state
    subscription = hook(client, receiver.url())
    for n in range(3):
        client.publish("queues", Q, f"m{n}".encode())
        assert run(subscription) == 1  # a run per message, as at low rates
    assert receiver.connections == 1
    pushing._thread_session().max_idle = 0.0  # from now on, every connection has idled out
    client.publish("queues", Q, b"after a pause")
    assert run(subscription) == 1
    assert receiver.connections == 2


@pytest.mark.django_db(transaction=True)  # the log's foreign key is checked at a real commit
def test_a_subscription_deleted_mid_round_keeps_what_it_delivered_delivered(client, receiver, settings, monkeypatch):
    import messaging.services.messages

    settings.MESH_WEBHOOK_PREFETCH = 3
    subscription = hook(client, receiver.url())
    monkeypatch.setattr(messaging.services.messages, "_wake", lambda queue_ids: None)  # commits are real here
    publish_numbered(client, 5)
    _after_first_push(monkeypatch, lambda: WebhookSubscription.objects.all().delete())
    result = webhook_deliver_batch(subscription_id=subscription.pk)
    assert (result.delivered, result.lost) == (3, True)
    left = list(Message.objects.order_by("id").values_list("payload", "claim_id"))
    assert left == [(b"m3", None), (b"m4", None)]  # the three pushed are acknowledged, nothing held


def test_runs_that_find_nothing_although_work_looked_available_stop_after_a_few(monkeypatch, settings):
    from messaging import tasks
    from messaging.webhooks.delivery import RunResult

    calls = []

    def empty_run(*, subscription_id):
        calls.append(subscription_id)
        return RunResult(delivered=0, more=True)  # e.g. the head row held by another transaction

    monkeypatch.setattr(tasks, "webhook_deliver_batch", empty_run)
    monkeypatch.setitem(tasks.webhook_deliver.app.conf, "task_always_eager", True)
    tasks.webhook_deliver(7)
    assert calls == [7] * (1 + tasks.IDLE_RUNS)  # then the sweep, not a loop of tasks


def test_the_end_of_run_check_leaves_waiting_messages_to_a_run_that_holds_the_lease(client, receiver):
    from messaging.webhooks.delivery import _has_available

    subscription = hook(client, receiver.url())
    subscription = WebhookSubscription.objects.select_related("queue").get(pk=subscription.pk)
    assert not _has_available(subscription)  # nothing queued
    client.publish("queues", Q)
    assert _has_available(subscription)
    WebhookSubscription.objects.update(runner_until=timezone.now() + timedelta(seconds=30))
    assert not _has_available(subscription)  # that run will see it, or look again as it ends
    WebhookSubscription.objects.update(runner_until=timezone.now() - timedelta(seconds=1))
    assert _has_available(subscription)  # an expired lease holds nothing


@pytest.mark.parametrize(("qos", "commit"), [(1, "off"), (0, "on")])
def test_taking_the_lease_loads_the_subscription_and_relaxes_only_a_qos1_commit(client, receiver, qos, commit):
    from django.db import connection, transaction

    subscription = hook(client, receiver.url(), qos=qos, security={"type": "basicAuth", "user": "u", "password": "p"})
    runner = uuid4()
    with transaction.atomic():
        taken = lease._take_runnable(subscription.pk, timezone.now(), runner)
        assert lease._take_runnable(subscription.pk, timezone.now(), uuid4()) is None  # one runner at a time
        synchronous = None
        if connection.vendor == "postgresql":  # SQLite has no such switch
            with connection.cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                synchronous = cursor.fetchone()[0]
    assert taken is not None
    assert (taken.pk, taken.qos, taken.security, taken.queue.name) == (
        subscription.pk, qos, subscription.security, subscription.queue.name)
    assert taken.runner == runner and not taken._state.adding
    assert synchronous in (commit, None)
