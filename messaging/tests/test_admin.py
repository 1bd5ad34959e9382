"""The Django admin writes through the same services as the API: the real admin forms are
posted by a logged-in superuser, and what the API would refuse is shown as a form error with
nothing stored. The database refuses impossible values on its own (CHECK constraints)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from meshsite.testing import MANAGEMENT, REST, enc
from messaging.models import DeliveryAttempt, Message, Queue, Subscription, WebhookSubscription
from messaging.names import literal_prefix

Q = "a/b/c/q1"
QUEUE_ADD = "/admin/messaging/queue/add/"
LIMITS = {
    "max_queue_size_in_bytes": "0",
    "max_queue_message_count": "0",
    "max_message_size_in_bytes": "0",
    "max_redelivery_count": "0",
    "max_delivered_unacked_msgs_per_flow": "10000",
    "redelivery_delay_in_ms": "1000",
    "max_redelivery_delay_in_ms": "300000",
}


def queue_form(instance: Any, name: str = Q, patterns: tuple[str, ...] = (), **fields: str) -> dict[str, str]:
    """The POST the admin's Queues › Add page sends, with one inline row per pattern."""
    data = {
        "instance": str(instance.pk), "name": name, "access_type": "NON_EXCLUSIVE", "dead_msg_queue": "",
        **LIMITS,
        "subscriptions-TOTAL_FORMS": str(len(patterns)), "subscriptions-INITIAL_FORMS": "0",
        "subscriptions-MIN_NUM_FORMS": "0", "subscriptions-MAX_NUM_FORMS": "1000",
    }
    for index, pattern in enumerate(patterns):
        data[f"subscriptions-{index}-pattern"] = pattern
    data.update(fields)
    return data


def change_form(queue: Queue, **fields: str) -> dict[str, str]:
    subscriptions = list(queue.subscriptions.order_by("id"))
    data = {
        "instance": str(queue.instance_id), "name": queue.name,
        "access_type": queue.access_type, "dead_msg_queue": queue.dead_msg_queue or "",
        **{field: str(getattr(queue, field)) for field in LIMITS},
        "subscriptions-TOTAL_FORMS": str(len(subscriptions)), "subscriptions-INITIAL_FORMS": str(len(subscriptions)),
        "subscriptions-MIN_NUM_FORMS": "0", "subscriptions-MAX_NUM_FORMS": "1000",
    }
    for index, subscription in enumerate(subscriptions):
        data[f"subscriptions-{index}-id"] = str(subscription.pk)
        data[f"subscriptions-{index}-queue"] = str(queue.pk)
        data[f"subscriptions-{index}-pattern"] = subscription.pattern
    data.update(fields)
    return data


def form_errors(response) -> str:
    """The admin re-rendered the form and says why (status 200, an error list)."""
    assert response.status_code == 200, response.status_code
    html = response.content.decode()
    assert "errorlist" in html or "errornote" in html, html
    return html


def assert_not_500(mesh_client, queue: str) -> None:
    assert mesh_client.call("GET", f"{MANAGEMENT}/queues").status_code == 200
    assert mesh_client.call("GET", f"{MANAGEMENT}/queues/{enc(queue)}").status_code == 200
    assert mesh_client.consume(queue).status_code in (200, 204)


# Queues › Add with an inline subscription -------------------------------------------------


def test_adding_a_queue_with_an_inline_subscription_creates_both(mesh, admin_client):
    em = mesh()
    response = admin_client.post(QUEUE_ADD, queue_form(em.instance, patterns=("a/b/c/orders/+",)))
    assert response.status_code == 302, response.content.decode()[:3000]
    queue = Queue.objects.get(instance=em.instance, name=Q)
    subscription = Subscription.objects.get(queue=queue)
    assert subscription.pattern == "a/b/c/orders/+"
    assert subscription.subaccount_id == em.instance.subaccount_id
    assert subscription.prefix == literal_prefix("a/b/c/orders/+")  # what the publish lookup uses
    # The API sees both, and a topic publish reaches the queue through the subscription.
    listed = json.loads(em.call("GET", f"{MANAGEMENT}/queues/{enc(Q)}/subscriptions").content)
    assert listed == [{"queueName": Q, "topicPattern": "a/b/c/orders/+"}]
    assert em.publish("topics", "a/b/c/orders/new", b"one").status_code == 204
    consumed = em.consume(Q)
    assert consumed.status_code == 200 and consumed.content == b"one"


def test_the_admin_adds_what_the_api_would_and_resolves_the_namespace_in_dead_msg_queue(mesh, admin_client):
    em = mesh()
    response = admin_client.post(QUEUE_ADD, queue_form(em.instance, dead_msg_queue="$namespace/dlq",
                                                       max_redelivery_count="3"))
    assert response.status_code == 302
    answer = json.loads(em.call("GET", f"{MANAGEMENT}/queues/{enc(Q)}").content)
    assert answer["deadMsgQueue"] == "a/b/c/dlq" and answer["maxRedeliveryCount"] == 3


@pytest.mark.parametrize("name", ["../evil name/ü", "a/b/c/has space", "a/b/c/", "a//b"])
def test_the_admin_refuses_a_queue_name_the_api_refuses(mesh, admin_client, name):
    em = mesh()
    form_errors(admin_client.post(QUEUE_ADD, queue_form(em.instance, name=name, patterns=("a/b/c/t",))))
    assert not Queue.objects.exists() and not Subscription.objects.exists()


@pytest.mark.parametrize("field", sorted(LIMITS))
def test_the_admin_refuses_a_negative_limit(mesh, admin_client, field):
    em = mesh()
    data = queue_form(em.instance, patterns=("a/b/c/t",))
    data[field] = "-1"
    form_errors(admin_client.post(QUEUE_ADD, data))
    assert not Queue.objects.exists() and not Subscription.objects.exists()


def test_the_admin_refuses_a_dead_msg_queue_in_another_instances_namespace(mesh, admin_client):
    em = mesh()
    mesh("other", "x/y/z")
    html = form_errors(admin_client.post(QUEUE_ADD, queue_form(em.instance, dead_msg_queue="x/y/z/dlq")))
    assert "queue rules do not allow consuming from deadMsgQueue" in html  # the service's own words
    assert not Queue.objects.exists()


def test_a_subscription_outside_the_topic_rules_stores_neither_queue_nor_subscription(mesh, admin_client):
    em = mesh()
    html = form_errors(admin_client.post(QUEUE_ADD, queue_form(em.instance, patterns=("x/y/z/t",))))
    assert "topic rules" in html
    assert not Queue.objects.exists() and not Subscription.objects.exists()


def test_adding_a_queue_that_exists_is_refused_and_changes_nothing(mesh, admin_client):
    em = mesh()
    assert em.put_queue(Q, {"maxRedeliveryCount": 2}).status_code == 201
    form_errors(admin_client.post(QUEUE_ADD, queue_form(em.instance, max_redelivery_count="7")))
    assert Queue.objects.get().max_redelivery_count == 2


# Queues › Change ----------------------------------------------------------------------------


def test_a_negative_unacked_limit_is_refused_on_change_and_consumption_keeps_working(mesh, admin_client):
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    queue = Queue.objects.get()
    url = f"/admin/messaging/queue/{queue.pk}/change/"
    form_errors(admin_client.post(url, change_form(queue, max_delivered_unacked_msgs_per_flow="-1")))
    assert Queue.objects.get().max_delivered_unacked_msgs_per_flow == 10000
    assert em.publish("queues", Q).status_code == 204
    assert_not_500(em, Q)


def test_a_change_goes_through_the_service_and_the_api_sees_it(mesh, admin_client):
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    assert em.subscribe(Q, "a/b/c/old").status_code == 201
    queue = Queue.objects.get()
    data = change_form(queue, max_queue_message_count="5", dead_msg_queue="$namespace/dlq")
    data["subscriptions-0-pattern"] = "a/b/c/new/*"  # an edited row: the old pattern goes, the new one comes
    data.update({"subscriptions-TOTAL_FORMS": "2", "subscriptions-1-pattern": "a/b/c/also"})
    response = admin_client.post(f"/admin/messaging/queue/{queue.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    answer = json.loads(em.call("GET", f"{MANAGEMENT}/queues/{enc(Q)}").content)
    assert answer["maxQueueMessageCount"] == 5 and answer["deadMsgQueue"] == "a/b/c/dlq"
    subscriptions = Subscription.objects.order_by("pattern")
    assert [(s.pattern, s.prefix) for s in subscriptions] == [("a/b/c/also", literal_prefix("a/b/c/also")),
                                                             ("a/b/c/new/*", literal_prefix("a/b/c/new/*"))]
    assert all(s.subaccount_id == em.instance.subaccount_id for s in subscriptions)
    assert_not_500(em, Q)


def test_a_queue_cannot_be_renamed_or_moved_in_the_admin(mesh, admin_client):
    em = mesh()
    other = mesh("other", "x/y/z")
    assert em.put_queue(Q).status_code == 201
    queue = Queue.objects.get()
    data = change_form(queue, name="a/b/c/renamed", instance=str(other.instance.pk))
    assert admin_client.post(f"/admin/messaging/queue/{queue.pk}/change/", data).status_code == 302
    queue.refresh_from_db()
    assert (queue.name, queue.instance_id) == (Q, em.instance.pk)


def test_deleting_a_queue_in_the_admin_goes_through_the_service(mesh, admin_client):
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    assert em.publish("queues", Q).status_code == 204  # its messages go with it, though not deletable alone
    queue = Queue.objects.get()
    assert admin_client.post(f"/admin/messaging/queue/{queue.pk}/delete/", {"post": "yes"}).status_code == 302
    assert em.call("GET", f"{MANAGEMENT}/queues/{enc(Q)}").status_code == 404
    assert not Message.objects.exists()


def test_every_admin_page_renders(mesh, admin_client, settings):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    assert em.subscribe(Q, "a/b/c/t").status_code == 201
    assert em.publish("queues", Q).status_code == 204
    rows = _rows_for_pages(em)
    for model, pk in rows:
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        assert admin_client.get(base).status_code == 200, base
        assert admin_client.get(f"{base}{pk}/change/").status_code == 200, base
        assert admin_client.get(f"{base}add/").status_code in (200, 403), base


def _rows_for_pages(em) -> list[tuple[Any, Any]]:
    queue = Queue.objects.get()
    hook = WebhookSubscription.objects.create(instance=em.instance, name="a/b/c/h", queue=queue,
                                              endpoint="https://example.com/")
    attempt = DeliveryAttempt.objects.create(subscription=hook, message_uuid=Message.objects.get().uuid,
                                             attempted_at=timezone.now(), succeeded=False, error="refused")
    return [(Queue, queue.pk), (Subscription, Subscription.objects.get().pk), (Message, Message.objects.get().pk),
            (WebhookSubscription, hook.pk), (DeliveryAttempt, attempt.pk)]


# Subscriptions --------------------------------------------------------------------------


def test_adding_a_subscription_in_the_admin_goes_through_the_service(mesh, admin_client):
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    queue = Queue.objects.get()
    add = "/admin/messaging/subscription/add/"
    form_errors(admin_client.post(add, {"queue": str(queue.pk), "pattern": "x/y/z/t"}))
    form_errors(admin_client.post(add, {"queue": str(queue.pk), "pattern": "a/b/c/bad pattern"}))
    assert not Subscription.objects.exists()
    assert admin_client.post(add, {"queue": str(queue.pk), "pattern": "a/b/c/t/+"}).status_code == 302
    subscription = Subscription.objects.get()
    assert (subscription.subaccount_id, subscription.prefix) == (em.instance.subaccount_id, literal_prefix("a/b/c/t/+"))
    change = f"/admin/messaging/subscription/{subscription.pk}/change/"
    assert admin_client.post(change, {"queue": str(queue.pk), "pattern": "a/b/c/other"}).status_code == 403
    assert Subscription.objects.get().pattern == "a/b/c/t/+"


# Messages, delivery attempts: read-only -----------------------------------------------------


def test_messages_and_delivery_attempts_cannot_be_added_or_changed_in_the_admin(mesh, admin_client):
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    assert em.publish("queues", Q).status_code == 204
    message = Message.objects.get()
    assert admin_client.get("/admin/messaging/message/add/").status_code == 403
    change = f"/admin/messaging/message/{message.pk}/change/"
    assert admin_client.get(change).status_code == 200  # viewable
    assert admin_client.post(change, {"delivery_count": "-1"}).status_code == 403
    assert admin_client.post(f"/admin/messaging/message/{message.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/messaging/deliveryattempt/add/").status_code == 403
    assert_not_500(em, Q)


# Webhook subscriptions ---------------------------------------------------------------------


def webhook_form(em, queue: Queue, endpoint: str, **fields: str) -> dict[str, str]:
    return {"instance": str(em.instance.pk), "name": "a/b/c/hook", "queue": str(queue.pk), "qos": "1",
            "endpoint": endpoint, "exempt_handshake": "on", "default_content_type": "",
            # fields today's form also asks for; the fixed form does not offer them
            "status": "Active", "handshake_status": "Pending", "consecutive_failures": "0", "signing_secrets": "[]",
            **fields}


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "ftp://x/"])
def test_the_admin_applies_the_ssrf_guard_to_a_webhook_endpoint(mesh, admin_client, endpoint):
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    html = form_errors(admin_client.post("/admin/messaging/webhooksubscription/add/",
                                         webhook_form(em, Queue.objects.get(), endpoint)))
    assert "pushConfig.endpoint" in html
    assert not WebhookSubscription.objects.exists()
    assert not Queue.objects.get().has_webhooks


def test_the_admin_refuses_a_webhook_on_another_instances_queue_or_with_a_bad_qos(mesh, admin_client, settings):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    em, other = mesh(), mesh("other", "x/y/z")
    assert other.put_queue("x/y/z/q").status_code == 201
    assert em.put_queue(Q).status_code == 201
    add = "/admin/messaging/webhooksubscription/add/"
    foreign = Queue.objects.get(name="x/y/z/q")
    form_errors(admin_client.post(add, webhook_form(em, foreign, "http://127.0.0.1:9/hook")))
    form_errors(admin_client.post(add, webhook_form(em, Queue.objects.get(name=Q), "http://127.0.0.1:9/", qos="2")))
    assert not WebhookSubscription.objects.exists()


def test_a_webhook_added_and_deleted_in_the_admin_keeps_the_queue_flag_right(mesh, admin_client, settings):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    add = "/admin/messaging/webhooksubscription/add/"
    response = admin_client.post(add, webhook_form(em, Queue.objects.get(), "http://127.0.0.1:9/hook"))
    assert response.status_code == 302, response.content.decode()[:3000]
    hook = WebhookSubscription.objects.get()
    assert Queue.objects.get().has_webhooks and hook.handshake_status == "Exempted"
    listed = json.loads(em.call("GET", f"{REST}/subscriptions").content)
    assert [item["name"] for item in listed] == ["a/b/c/hook"]
    change = f"/admin/messaging/webhooksubscription/{hook.pk}/change/"
    assert admin_client.post(change, {"qos": "5", "endpoint": "http://10.0.0.1/"}).status_code == 403
    assert admin_client.post(f"/admin/messaging/webhooksubscription/{hook.pk}/delete/",
                             {"post": "yes"}).status_code == 302
    assert not WebhookSubscription.objects.exists() and not Queue.objects.get().has_webhooks


def test_pause_and_resume_in_the_admin_go_through_the_service(mesh, admin_client, settings):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    admin_client.post("/admin/messaging/webhooksubscription/add/",
                      webhook_form(em, Queue.objects.get(), "http://127.0.0.1:9/hook"))
    hook = WebhookSubscription.objects.get()
    WebhookSubscription.objects.filter(pk=hook.pk).update(consecutive_failures=4)
    changelist = "/admin/messaging/webhooksubscription/"
    admin_client.post(changelist, {"action": "pause", "_selected_action": [str(hook.pk)]})
    assert WebhookSubscription.objects.get().status == "Paused"
    admin_client.post(changelist, {"action": "resume", "_selected_action": [str(hook.pk)]})
    hook.refresh_from_db()
    assert hook.status == "Active" and hook.consecutive_failures == 0 and hook.resumed_at is not None


# The database's own CHECK constraints -------------------------------------------------------


def _rows(mesh) -> dict[str, Any]:
    em = mesh()
    assert em.put_queue(Q).status_code == 201
    assert em.publish("queues", Q).status_code == 204
    queue = Queue.objects.get()
    hook = WebhookSubscription.objects.create(instance=em.instance, name="a/b/c/h", queue=queue,
                                              endpoint="https://example.com/")
    attempt = DeliveryAttempt.objects.create(subscription=hook, message_uuid=Message.objects.get().uuid,
                                             attempted_at=timezone.now(), succeeded=True)
    return {"queue": queue, "message": Message.objects.get(), "webhook": hook, "attempt": attempt}


@pytest.mark.parametrize(("row", "field", "value"), [
    ("queue", "max_queue_size_in_bytes", -1),
    ("queue", "max_queue_message_count", -1),
    ("queue", "max_message_size_in_bytes", -1),
    ("queue", "max_redelivery_count", -1),
    ("queue", "max_delivered_unacked_msgs_per_flow", -1),
    ("queue", "redelivery_delay_in_ms", -1),
    ("queue", "max_redelivery_delay_in_ms", 86_400_001),
    ("queue", "access_type", "SHARED"),
    ("message", "size", -1),
    ("message", "delivery_count", -1),
    ("message", "qos", 2),
    ("webhook", "qos", -1),
    ("webhook", "consecutive_failures", -1),
    ("webhook", "status", "Sleeping"),
    ("webhook", "handshake_status", "Maybe"),
    ("attempt", "latency_ms", -0.5),
])
def test_the_database_refuses_an_impossible_value_written_past_validation(mesh, row, field, value):
    obj = _rows(mesh)[row]
    with pytest.raises(IntegrityError), transaction.atomic():
        type(obj).objects.filter(pk=obj.pk).update(**{field: value})


# The migration, on a database that already holds rows ----------------------------------------

BEFORE = [("messaging", "0003_webhook_runs_and_log_retention"), ("platform", "0001_initial")]


@pytest.mark.django_db(transaction=True)
def test_the_constraint_migrations_apply_to_a_database_with_rows():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps
        subaccount = old.get_model("platform", "Subaccount").objects.create(name="s")
        old.get_model("platform", "Entitlement").objects.create(subaccount=subaccount, service="event-mesh",
                                                                plan="default", quota=3)
        instance = old.get_model("platform", "ServiceInstance").objects.create(
            subaccount=subaccount, service="event-mesh", plan="default", name="em", namespace="a/b/c")
        queue = old.get_model("messaging", "Queue").objects.create(instance=instance, name=Q, max_redelivery_count=2)
        now = timezone.now()
        old.get_model("messaging", "Message").objects.create(
            queue=queue, payload=b"x", size=1, content_type="text/plain", address=f"queue:{Q}", qos=0,
            created_at=now, expires_at=now, delivery_count=1)
        old.get_model("messaging", "WebhookSubscription").objects.create(
            instance=instance, name="h", queue=queue, qos=1, endpoint="https://example.com/")
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    queue = Queue.objects.get()
    assert queue.max_redelivery_count == 2 and queue.messages.get().qos == 0
    with pytest.raises(IntegrityError), transaction.atomic():
        Queue.objects.update(max_redelivery_count=-1)


def test_every_model_of_meshsite_is_in_the_admin_and_its_list_renders(db, admin_client):
    from django.apps import apps
    from django.contrib import admin

    ours = [model for model in apps.get_models() if model._meta.app_label in ("platform", "messaging", "visibility")]
    assert len(ours) >= 16
    missing = [model.__name__ for model in ours if model not in admin.site._registry]
    assert missing == []
    for model in ours:
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        assert admin_client.get(url).status_code == 200, url
