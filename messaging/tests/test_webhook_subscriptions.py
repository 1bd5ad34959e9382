"""Webhook subscriptions API: create/list/get/delete, pause/resume, and the CloudEvents
handshake against a real local receiver; bad input, secrets at rest, tenant isolation."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meshsite import celery_app
from meshsite.testing import REST, enc
from messaging.models import WebhookSubscription

HOOKS = f"{REST}/subscriptions"


class Receiver(ThreadingHTTPServer):
    allowed_origin: str | None = "*"
    handshakes: list[dict[str, str]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook?x=1"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.server.handshakes.append(dict(self.headers.items()))
        self.send_response(200)
        if self.server.allowed_origin is not None:
            self.send_header("WebHook-Allowed-Origin", self.server.allowed_origin)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.handshakes = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    """Runs on_commit callbacks (the handshake task, eager here) when the block ends."""
    return django_capture_on_commit_callbacks


@pytest.fixture
def client(mesh, settings, monkeypatch):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    client = mesh()
    assert client.put_queue("a/b/c/q1").status_code == 201
    return client


def _body(receiver_url: str, **overrides: object) -> dict:
    body: dict = {"name": "a/b/c/hook1", "address": "queue:a/b/c/q1", "qos": 1,
                  "pushConfig": {"type": "webhook", "endpoint": receiver_url}}
    body.update(overrides)
    return body


def _create(client, body: dict, capture):
    with capture(execute=True):
        return client.call("POST", HOOKS, json.dumps(body), content_type="application/json")


def test_created_subscription_passes_the_handshake_with_the_receiver(client, receiver, capture):
    response = _create(client, _body(receiver.url), capture)
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["address"] == "queue:a/b/c/q1"
    assert created["subscriptionStatus"] == "Active"
    assert created["handshakeStatus"] == "Pending"
    assert receiver.handshakes[0]["WebHook-Request-Origin"] == "127.0.0.1:8000"
    fetched = client.call("GET", f"{HOOKS}/{enc('a/b/c/hook1')}").json()
    assert fetched["handshakeStatus"] == "Succeeded"
    assert {"lastSuccessfulDelivery", "lastFailedDelivery", "lastFailedDeliveryReason"} <= set(fetched)


def test_failed_handshake_shows_its_reason_and_can_be_run_again(client, receiver, capture):
    receiver.allowed_origin = None
    _create(client, _body(receiver.url), capture)
    failed = client.call("GET", f"{HOOKS}/{enc('a/b/c/hook1')}").json()
    assert failed["handshakeStatus"] == "Failed"
    assert "WebHook-Allowed-Origin" in failed["handshakeFailureReason"]
    receiver.allowed_origin = "127.0.0.1:8000"
    with capture(execute=True):
        again = client.call("POST", f"{HOOKS}/{enc('a/b/c/hook1')}/handshake")
    assert again.status_code == 202
    assert client.call("GET", f"{HOOKS}/{enc('a/b/c/hook1')}").json()["handshakeStatus"] == "Succeeded"
    assert len(receiver.handshakes) == 2


def test_exempted_subscription_sends_no_handshake(client, receiver, capture):
    body = _body(receiver.url)
    body["pushConfig"]["exemptHandshake"] = True
    assert _create(client, body, capture).json()["handshakeStatus"] == "Exempted"
    assert receiver.handshakes == []


def test_duplicate_name_answers_sap_conflict_body(client, receiver, capture):
    _create(client, _body(receiver.url), capture)
    response = _create(client, _body(receiver.url), capture)
    assert response.status_code == 409
    assert response.json() == {"error": {"code": "CONFLICT", "message": "Subscription a/b/c/hook1 already exists"}}
    assert WebhookSubscription.objects.count() == 1


def test_other_refusals_of_the_webhooks_api_keep_sap_message_body(client, receiver, capture):
    # Only a name that exists answers in the {"error": ...} shape; a 404 or 400 there is SAP's {"message"}.
    missing = client.call("GET", f"{HOOKS}/{enc('a/b/c/none')}")
    assert (missing.status_code, missing.json()) == (404, {"message": "Subscription does not exist"})
    body = _body(receiver.url)
    body["qos"] = 7
    refused = _create(client, body, capture)
    assert (refused.status_code, refused.json()) == (400, {"message": "qos must be 0 or 1"})


def test_receiver_credentials_are_sealed_at_rest_and_never_returned(client, receiver, capture):
    body = _body(receiver.url)
    body["pushConfig"]["securitySchema"] = {"type": "basicAuth", "user": "u", "password": "pa55-word"}
    created = _create(client, body, capture).json()
    assert created["pushConfig"]["securitySchema"] == {"type": "basicAuth", "user": "u"}
    stored = WebhookSubscription.objects.get().security
    assert "pa55-word" not in json.dumps(stored)


def test_oauth2_with_meshsites_own_token_endpoint_skips_the_outbound_check(client, receiver, settings,
                                                                          capture):
    # CAP points tokenUrl at its own Event Mesh key, i.e. at meshsite: that token is issued
    # internally, so the URL is not resolved (this public name does not even resolve here).
    settings.MESH_PUBLIC_URL = "https://mesh.example.invalid"
    body = _body(receiver.url)
    body["pushConfig"]["securitySchema"] = {
        "type": "oauth2", "grantType": "client_credentials", "clientId": client.client_id,
        "clientSecret": client.client_secret, "tokenUrl": "https://mesh.example.invalid/oauth/token",
    }
    response = _create(client, body, capture)
    assert response.status_code == 201, response.content
    assert response.json()["pushConfig"]["securitySchema"] == {
        "type": "oauth2", "grantType": "client_credentials", "clientId": client.client_id,
        "tokenUrl": "https://mesh.example.invalid/oauth/token",
    }


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda b: b["pushConfig"].update(endpoint="ftp://127.0.0.1/x"), "endpoint"),
        (lambda b: b["pushConfig"].update(endpoint="http://receiver.invalid/x"), "endpoint"),
        (lambda b: b["pushConfig"].update(endpoint="http://10.0.0.1/x"), "endpoint"),
        (lambda b: b["pushConfig"].update(endpoint="http://169.254.169.254/latest"), "endpoint"),
        (lambda b: b["pushConfig"].update(securitySchema={"type": "digest"}), "securitySchema"),
        (lambda b: b["pushConfig"].update(securitySchema={"type": "basicAuth", "user": "u"}), "password"),
        (lambda b: b["pushConfig"].update(securitySchema={
            "type": "oauth2", "grantType": "client_credentials", "clientId": "c", "clientSecret": "s",
            "tokenUrl": "http://192.168.0.10/token"}), "tokenUrl"),
        (lambda b: b.update(address="queue:a/b/c/nosuch"), "address"),
        (lambda b: b.update(address="topic:a/b/c/t"), "address"),
        (lambda b: b.update(qos=2), "qos"),
        (lambda b: b.update(qos="1"), "qos"),
        (lambda b: b.update(name="a/b/c/../x"), "name"),
        (lambda b: b.update(name=""), "name"),
        (lambda b: b.update(colour="blue"), "Unknown"),
        (lambda b: b["pushConfig"].update(type="email"), "type"),
        (lambda b: b["pushConfig"].update(defaultContentType="text/plain; charset=ütf-8"), "defaultContentType"),
        (lambda b: b["pushConfig"].update(endpoint="http://127.0.0.1:0/x"), "endpoint"),
    ],
    ids=["ftp", "unresolvable", "private", "metadata", "security-type", "basic-missing", "token-url-private",
         "unknown-queue", "topic-address", "qos-2", "qos-string", "dots", "empty-name", "unknown-attr", "push-type",
         "content-type-not-ascii", "port-0"],
)
def test_bad_subscription_answers_400_and_stores_nothing(client, receiver, capture,
                                                         mutate, fragment):
    body = _body(receiver.url)
    mutate(body)
    response = _create(client, body, capture)
    assert response.status_code == 400, response.content
    assert fragment.lower() in response.json()["message"].lower()
    assert not WebhookSubscription.objects.exists()
    assert receiver.handshakes == []


def test_endpoint_on_loopback_is_refused_without_allowed_networks(client, receiver, settings,
                                                                  capture):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = []
    response = _create(client, _body(receiver.url), capture)
    assert response.status_code == 400
    assert "loopback" in response.json()["message"]
    assert receiver.handshakes == []


def test_pause_resume_and_delete(client, receiver, capture):
    _create(client, _body(receiver.url), capture)
    url = f"{HOOKS}/{enc('a/b/c/hook1')}"
    paused = client.call("PUT", f"{url}/state", json.dumps({"action": "pause"}), content_type="application/json")
    assert paused.status_code == 200 and paused.json()["subscriptionStatus"] == "Paused"
    bad = client.call("PUT", f"{url}/state", json.dumps({"action": "stop"}), content_type="application/json")
    assert bad.status_code == 400
    resumed = client.call("PUT", f"{url}/state", json.dumps({"action": "resume"}), content_type="application/json")
    assert resumed.json()["subscriptionStatus"] == "Active"
    assert [hook["name"] for hook in client.call("GET", HOOKS).json()] == ["a/b/c/hook1"]
    assert client.call("DELETE", url).status_code == 204
    assert client.call("DELETE", url).status_code == 404
    assert client.call("GET", url).status_code == 404


def test_another_instances_token_never_sees_or_touches_a_subscription(client, mesh, receiver,
                                                                      capture):
    _create(client, _body(receiver.url), capture)
    other = mesh("other", "x/y/z")
    url = f"{HOOKS}/{enc('a/b/c/hook1')}"
    assert other.call("GET", HOOKS).json() == []
    assert other.call("GET", url).status_code == 404
    assert other.call("PUT", f"{url}/state", json.dumps({"action": "pause"}),
                      content_type="application/json").status_code == 404
    assert other.call("POST", f"{url}/handshake").status_code == 404
    assert other.call("DELETE", url).status_code == 404
    stored = WebhookSubscription.objects.get()
    assert stored.status == "Active"
    assert len(receiver.handshakes) == 1
    foreign = _body(receiver.url)  # pointing at the first instance's queue
    response = _create(other, {**foreign, "name": "x/y/z/hook"}, capture)
    assert response.status_code in (400, 403)
    assert WebhookSubscription.objects.count() == 1
