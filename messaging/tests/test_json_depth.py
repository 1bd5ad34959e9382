"""Deeply nested JSON bodies: every JSON endpoint refuses nesting deeper than
MESH_MAX_JSON_DEPTH with a 400 in its own error shape, before anything recursive parses
it (a 2 KB `[[[...]]]` used to end in a RecursionError and a 500), and stores nothing."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from meshsite import celery_app
from meshsite.jsonlimit import DepthLimitedJSONParser
from meshsite.testing import MANAGEMENT, REST, enc
from messaging.models import Message, Queue, WebhookStatus, WebhookSubscription
from messaging.services.deadletter import message_dead_letter
from messaging.webhooks.delivery import webhook_deliver_batch

Q1 = "a/b/c/q1"
DMQ = "a/b/c/dmq"
DEEP_LIST = "[" * 1000 + "]" * 1000  # 2 KB
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000


def assert_sap_400(response) -> str:
    assert response.status_code == 400, response.content
    message = json.loads(response.content)["message"]
    assert "nest" in message
    return message


@pytest.fixture
def client(mesh, settings):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    client = mesh()
    assert client.put_queue(Q1, {"deadMsgQueue": DMQ}).status_code == 201
    return client


@pytest.mark.parametrize("deep", [DEEP_LIST, DEEP_OBJECT])
def test_put_queue_with_deep_json_is_400_and_creates_nothing(client, deep):
    url = f"{MANAGEMENT}/queues/{enc('a/b/c/new')}"
    assert_sap_400(client.call("PUT", url, deep, content_type="application/json"))
    assert not Queue.objects.filter(name="a/b/c/new").exists()


def test_put_queue_with_deep_json_leaves_the_existing_queue_unchanged(client):
    before = Queue.objects.get(name=Q1)
    body = json.dumps({"maxRedeliveryCount": 3, "x": json.loads("[" * 40 + "]" * 40)})
    assert_sap_400(client.call("PUT", f"{MANAGEMENT}/queues/{enc(Q1)}", body, content_type="application/json"))
    after = Queue.objects.get(name=Q1)
    assert (after.max_redelivery_count, after.dead_msg_queue) == (before.max_redelivery_count, DMQ)


def test_nesting_at_the_limit_reaches_the_endpoint(client, settings):
    settings.MESH_MAX_JSON_DEPTH = 3
    at_limit = json.dumps({"maxRedeliveryCount": 2, "deadMsgQueue": None, "x": [[]]})  # depth 3
    response = client.call("PUT", f"{MANAGEMENT}/queues/{enc(Q1)}", at_limit, content_type="application/json")
    # Past the parser: the serializer answers, and names the attribute, not the nesting.
    assert response.status_code == 400 and "nest" not in json.loads(response.content)["message"]
    over = json.dumps({"x": [[[]]]})  # depth 4
    assert_sap_400(client.call("PUT", f"{MANAGEMENT}/queues/{enc(Q1)}", over, content_type="application/json"))


def test_brackets_and_escaped_quotes_inside_strings_do_not_count(client, settings):
    settings.MESH_MAX_JSON_DEPTH = 3  # the body, its pushConfig and the securitySchema
    password = 'p[[[[{{{{\\"[[\\'  # brackets, an escaped quote and a trailing backslash
    security = {"type": "basicAuth", "user": "u", "password": password}
    push = {"type": "webhook", "endpoint": "http://127.0.0.1:9/h?a=[[[[{{{{", "exemptHandshake": True,
            "securitySchema": security}
    body = json.dumps({"name": "a/b/c/hook", "address": f"queue:{Q1}", "qos": 1, "pushConfig": push})
    response = client.call("POST", f"{REST}/subscriptions", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert WebhookSubscription.objects.get().endpoint == push["endpoint"]


def test_post_webhook_subscription_with_deep_json_is_400_and_stores_nothing(client):
    push = {"type": "webhook", "endpoint": "http://127.0.0.1:9/hook", "exemptHandshake": True}
    body = json.dumps({"name": "a/b/c/hook", "address": f"queue:{Q1}", "qos": 1, "pushConfig": push})
    deep = body[:-1] + ', "extra": ' + DEEP_LIST + "}"
    assert_sap_400(client.call("POST", f"{REST}/subscriptions", deep, content_type="application/json"))
    assert_sap_400(client.call("POST", f"{REST}/subscriptions", DEEP_LIST, content_type="application/json"))
    assert not WebhookSubscription.objects.exists()


def test_put_webhook_state_with_deep_json_is_400_and_changes_nothing(client):
    push = {"type": "webhook", "endpoint": "http://127.0.0.1:9/hook", "exemptHandshake": True}
    body = json.dumps({"name": "a/b/c/hook", "address": f"queue:{Q1}", "qos": 1, "pushConfig": push})
    assert client.call("POST", f"{REST}/subscriptions", body, content_type="application/json").status_code == 201
    url = f"{REST}/subscriptions/{enc('a/b/c/hook')}/state"
    deep = '{"action": "pause", "x": ' + DEEP_LIST + "}"
    assert_sap_400(client.call("PUT", url, deep, content_type="application/json"))
    assert WebhookSubscription.objects.get().status == WebhookStatus.ACTIVE


def test_requeue_with_deep_json_is_400_and_moves_nothing(client):
    assert client.publish("queues", Q1, b"dead").status_code == 204
    message = Message.objects.get()
    message_dead_letter(message=message, queue=Queue.objects.get(name=Q1), reason="test")
    url = f"{MANAGEMENT}/queues/{enc(DMQ)}/requeue"
    assert_sap_400(client.call("POST", url, '{"messageIds": ' + DEEP_LIST + "}", content_type="application/json"))
    assert Message.objects.get().queue.name == DMQ


def test_deep_json_of_another_tenant_does_not_touch_my_queue(client, mesh):
    other = mesh("other", "x/y/z")
    url = f"{MANAGEMENT}/queues/{enc(Q1)}"
    assert_sap_400(other.call("PUT", url, DEEP_LIST, content_type="application/json"))
    assert Queue.objects.filter(name=Q1).count() == 1
    assert Queue.objects.get(name=Q1).instance == client.instance


def _views(patterns: list) -> list[type[APIView]]:
    found: list[type[APIView]] = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            found += _views(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
            if isinstance(view, type) and issubclass(view, APIView):
                found.append(view)
    return found


def test_every_api_view_parses_json_through_the_depth_limit():
    views = _views(get_resolver().url_patterns)
    assert len(views) > 10
    for view in views:
        parsers = view().get_parsers()
        json_parsers = [p for p in parsers if "json" in p.media_type]
        assert all(isinstance(p, DepthLimitedJSONParser) for p in json_parsers), view


class DeepTokenHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = ('{"access_token": "t", "x": ' + DEEP_LIST + "}").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_token_endpoint_answering_deep_json_is_a_failed_push_not_a_crash(client, settings, monkeypatch):
    settings.MESH_WEBHOOK_RETRY_SCHEDULE = [0.0]
    settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND = False
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), DeepTokenHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        token_url = f"http://127.0.0.1:{server.server_address[1]}/token"
        security = {"type": "oauth2", "grantType": "client_credentials", "clientId": "c", "clientSecret": "s",
                    "tokenUrl": token_url}
        push = {"type": "webhook", "endpoint": "http://127.0.0.1:9/hook", "exemptHandshake": True,
                "securitySchema": security}
        body = json.dumps({"name": "a/b/c/hook", "address": f"queue:{Q1}", "qos": 1, "pushConfig": push})
        assert client.call("POST", f"{REST}/subscriptions", body, content_type="application/json").status_code == 201
        client.publish("queues", Q1)
        subscription = WebhookSubscription.objects.get()
        assert webhook_deliver_batch(subscription_id=subscription.pk).delivered == 0
    finally:
        server.shutdown()
        server.server_close()
    subscription.refresh_from_db()
    assert "access_token" in subscription.last_failed_delivery_reason
    assert Message.objects.get(queue__name=Q1).delivery_count == 1  # kept for the retry
