"""Vendor webhooks to callback URLs and mesh topics: stored at once, normalized by the task,
paged 20 per notification with the whole raw body in each, signed, delivered by the webhook
engine with retries, queued after the final failure and redelivered on demand; the event
log shows it all, to the instance's own key only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from meshsite import celery_app
from meshsite.testing import make_instance, mesh_client_for
from messaging.models import ConnectorNotification, Message, VendorEvent, WebhookSubscription
from messaging.tests.test_connector_instances import API, Api, _connectors
from messaging.webhooks.delivery import webhook_deliver_batch

EVENTS = "/elements/api-v2/events"


@pytest.fixture
def eager(settings, monkeypatch, fast_hashing):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.MESH_WEBHOOK_RETRY_SCHEDULE = [0.0]
    settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND = False
    settings.MESH_CONNECTOR_DELIVERY_ATTEMPTS = 3
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)


@pytest.fixture
def api(db, eager, django_capture_on_commit_callbacks) -> Api:
    global _commits
    _commits = django_capture_on_commit_callbacks
    return Api(_connectors("oc1"))


_commits: Any = None


def _hubspot(count: int, portal: int = 62515) -> list[dict[str, Any]]:
    kinds = ["contact.creation", "contact.propertyChange", "company.deletion"]
    return [{"eventId": n, "subscriptionType": kinds[n % 3], "objectId": 1000 + n, "portalId": portal,
             "occurredAt": 1767261600000 + n} for n in range(count)]


def _instance(api: Api, receiver=None, **configuration: Any) -> dict[str, Any]:
    config = {"event.notification.enabled": True, "event.vendor.type": "webhook", **configuration}
    if receiver is not None:
        config["event.notification.callback.url"] = receiver.url("/callback")
    answer = api("POST", API, {"name": "crm", "element": {"key": "hubspot"}, "configuration": config})
    assert answer.status_code == 201, answer.content
    return answer.json()


def _post(api: Api, url: str, body: bytes, content_type: str = "application/json"):
    """POST as a provider does; what runs after the commit (the processing task) runs too."""
    with _commits(execute=True):
        return api.http.post(url, data=body, content_type=content_type)


def _events_path(created: dict[str, Any]) -> str:
    return created["eventsUrl"].removeprefix("http://testserver")


def _deliver_all() -> None:
    for webhook in WebhookSubscription.objects.all():
        while webhook_deliver_batch(subscription_id=webhook.pk).delivered:
            pass


def test_a_webhook_of_45_objects_makes_notifications_of_20_20_and_5_each_with_the_whole_raw_body(api, receiver):
    created = _instance(api, receiver)
    raw = _hubspot(45)
    answer = _post(api, _events_path(created), json.dumps(raw).encode())
    assert answer.status_code == 200, answer.content
    assert VendorEvent.objects.get().status == "processed"
    bodies = [json.loads(bytes(n.body)) for n in ConnectorNotification.objects.order_by("pk")]
    assert [len(b["message"]["events"]) for b in bodies] == [20, 20, 5]
    assert all(b["message"]["raw"] == raw for b in bodies)
    first = bodies[0]["message"]["events"][0]
    assert first == {"objectId": "1000", "objectType": "contacts", "eventType": "CREATED", "elementKey": "hubspot",
                     "date": first["date"]}
    assert bodies[0]["message"]["instanceId"] == created["id"]
    ids = [e["objectId"] for b in bodies for e in b["message"]["events"]]
    assert ids == [str(1000 + n) for n in range(45)]
    _deliver_all()
    assert [json.loads(p["body"]) for p in receiver.pushes] == bodies


def test_every_callback_carries_a_signature_a_receiver_can_verify_with_the_key(api, receiver):
    created = _instance(api, receiver, **{"event.notification.signature.key": "s3cret-key"})
    assert created["configuration"]["event.notification.signature.key"] == "********"
    _post(api, _events_path(created), json.dumps(_hubspot(3)).encode())
    _deliver_all()
    assert len(receiver.pushes) == 1
    push = receiver.pushes[0]
    expected = base64.b64encode(hmac.new(b"s3cret-key", push["body"], hashlib.sha256).digest()).decode()
    assert push["headers"]["Elements-Webhook-Signature"] == f"sha256={expected}"
    assert b"s3cret-key" not in json.dumps(api("GET", f"{API}/{created['id']}/configuration").json()).encode()


def test_a_callback_that_is_down_gets_retries_then_the_notification_is_queued_and_redelivered(api, receiver):
    created = _instance(api, receiver)
    receiver.statuses = [500, 503, 500]  # three attempts (MESH_CONNECTOR_DELIVERY_ATTEMPTS) fail
    _post(api, _events_path(created), json.dumps(_hubspot(2)).encode())
    for _ in range(3):
        _deliver_all()
        WebhookSubscription.objects.update(next_attempt_at=None)
        Message.objects.update(available_at=None)
    assert len(receiver.pushes) == 3
    log = api("GET", f"{API}/{created['id']}/events").json()
    assert [entry["state"] for entry in log] == ["queued"]
    assert log[0]["attempts"] == 3 and log[0]["lastAttempt"]["statusCode"] == 500
    queued = api("GET", f"{API}/{created['id']}/events/queued").json()
    assert [q["id"] for q in queued] == [log[0]["id"]]
    answer = api("POST", f"{API}/{created['id']}/events/queued/redeliver", {})
    assert answer.json() == {"redelivered": 1}
    _deliver_all()
    assert len(receiver.pushes) == 4 and receiver.pushes[3]["body"] == receiver.pushes[0]["body"]
    detail = api("GET", f"{API}/{created['id']}/events/{log[0]['id']}").json()
    assert detail["state"] == "delivered"
    assert [a["statusCode"] for a in detail["deliveryAttempts"]] == [500, 503, 500, 200]
    assert api("GET", f"{API}/{created['id']}/events/queued").json() == []


def test_events_arrive_on_the_bound_topics_and_in_a_subscribed_queue(api, receiver):
    mesh_instance = make_instance("em", "a/b/c")
    mesh = mesh_client_for(mesh_instance)
    assert mesh.put_queue("a/b/c/crm").status_code == 201
    assert mesh.subscribe("a/b/c/crm", "a/b/c/oc/hubspot/contacts/*").status_code in (200, 201)
    created = _instance(api, receiver)
    patched = api("PATCH", f"{API}/{created['id']}", {"eventMeshInstanceId": str(mesh_instance.pk),
                                                       "topicPrefix": "oc"})
    assert patched.status_code == 200, patched.content
    _post(api, _events_path(created), json.dumps(_hubspot(6)).encode())
    got = [json.loads(bytes(m.payload)) for m in Message.objects.filter(queue__name="a/b/c/crm").order_by("pk")]
    # contacts CREATED and contacts UPDATED (two topics); companies are not subscribed.
    assert [[e["eventType"] for e in g["message"]["events"]] for g in got] == [["CREATED"] * 2, ["UPDATED"] * 2]
    assert all(g["message"]["raw"] == _hubspot(6) for g in got)
    assert ConnectorNotification.objects.get().topic_deliveries == 2


def test_a_publish_the_topic_rules_refuse_is_shown_on_the_notification_and_the_callback_still_gets_it(
        api, receiver):
    mesh_instance = make_instance("em", "a/b/c", rules={"topicRules": {"publishFilter": ["${namespace}/allowed/*"],
                                                                       "subscribeFilter": ["${namespace}/*"]}})
    created = _instance(api, receiver)
    api("PATCH", f"{API}/{created['id']}", {"eventMeshInstanceId": str(mesh_instance.pk), "topicPrefix": "oc"})
    _post(api, _events_path(created), json.dumps(_hubspot(1)).encode())
    notification = ConnectorNotification.objects.get()
    assert notification.topic_deliveries == 0
    assert notification.topic_error.startswith("a/b/c/oc/hubspot/contacts/CREATED: ")
    entry = api("GET", f"{API}/{created['id']}/events").json()[0]
    assert entry["topicError"] == notification.topic_error
    _deliver_all()
    assert len(receiver.pushes) == 1


def test_a_body_that_is_not_json_is_stored_and_marked_failed_with_the_reason(api, receiver):
    created = _instance(api, receiver)
    answer = _post(api, _events_path(created), b"<xml/>", "application/xml")
    assert answer.status_code == 200
    row = VendorEvent.objects.get()
    assert row.status == "failed" and row.reason == "the body is not JSON" and bytes(row.body) == b"<xml/>"
    assert not ConnectorNotification.objects.exists()
    listed = api("GET", f"{API}/{created['id']}/vendor-events?status=failed").json()
    assert [(v["status"], v["reason"], v["body"]) for v in listed] == [("failed", "the body is not JSON", "<xml/>")]


def test_a_body_that_does_not_match_the_element_is_marked_failed(api, receiver):
    created = _instance(api, receiver)
    _post(api, _events_path(created), json.dumps([{"subscriptionType": "contact.creation", "occurredAt": 1}]).encode())
    row = VendorEvent.objects.get()
    assert row.status == "failed" and "objectId" in row.reason


def test_an_unknown_element_or_events_url_is_404_and_nothing_is_stored(api, receiver):
    created = _instance(api, receiver)
    assert _post(api, f"{EVENTS}/nosuch/", b"{}").status_code == 404
    assert _post(api, f"{EVENTS}/hubspot/not-a-token/", b"{}").status_code == 404
    assert _post(api, f"{EVENTS}/dropbox/{_events_path(created).rsplit('/', 2)[1]}/", b"{}").status_code == 404
    assert not VendorEvent.objects.exists()


def test_a_body_over_the_limit_is_413_and_nothing_is_stored(api, receiver, settings):
    settings.MESH_CONNECTOR_MAX_BODY = 1024
    created = _instance(api, receiver)
    answer = _post(api, _events_path(created), b"[" + b" " * 2000 + b"]")
    assert answer.status_code == 413 and answer.json()["code"] == "too_large"
    assert not VendorEvent.objects.exists()


def test_a_body_without_token_finds_its_instance_by_the_provider_account_it_names(api, receiver):
    created = _instance(api, receiver)
    api("PATCH", f"{API}/{created['id']}", {"providerAccount": "777"})
    _post(api, f"{EVENTS}/hubspot/", json.dumps(_hubspot(2, portal=777)).encode())
    _post(api, f"{EVENTS}/hubspot", json.dumps(_hubspot(2, portal=888)).encode())
    rows = list(VendorEvent.objects.order_by("pk"))
    assert [r.status for r in rows] == ["processed", "failed"]
    assert rows[0].connector_instance_id == created["id"]
    assert rows[1].reason == "no connector instance has provider account '888'"


def test_dropbox_verifies_the_url_with_a_challenge_that_is_echoed(api):
    answer = api.http.get(f"{EVENTS}/dropbox/?challenge=abc123")
    assert answer.status_code == 200 and answer.content == b"abc123"
    assert answer["Content-Type"].startswith("text/plain")


def test_a_disabled_instance_keeps_the_body_as_failed_and_sends_nothing(api, receiver):
    created = _instance(api, receiver)
    api("PATCH", f"{API}/{created['id']}/configuration/event.notification.enabled", {"propertyValue": False})
    _post(api, _events_path(created), json.dumps(_hubspot(1)).encode())
    assert VendorEvent.objects.get().reason == f"events are not enabled on connector instance {created['id']}"
    assert WebhookSubscription.objects.get().status == "Paused"


def test_another_instances_key_sees_none_of_the_event_log(api, receiver):
    created = _instance(api, receiver)
    _post(api, _events_path(created), json.dumps(_hubspot(2)).encode())
    notification = ConnectorNotification.objects.get()
    other = Api(_connectors("oc2"))
    base = f"{API}/{created['id']}"
    for path in (f"{base}/events", f"{base}/events/{notification.notification_id}", f"{base}/events/queued",
                 f"{base}/vendor-events", f"{base}/polls"):
        assert other("GET", path).status_code == 404, path
    assert other("POST", f"{base}/events/queued/redeliver", {}).status_code == 404
    mesh_key = Api(make_instance("em2", "x/y/z"))
    assert mesh_key("GET", f"{base}/events").status_code == 403


def test_deleting_the_instance_removes_its_delivery_queues(api, receiver):
    created = _instance(api, receiver)
    assert WebhookSubscription.objects.count() == 1
    assert api("DELETE", f"{API}/{created['id']}").status_code == 204
    assert not WebhookSubscription.objects.exists()
    assert not Message.objects.exists()
