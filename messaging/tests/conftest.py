"""Shared by the webhook tests: a real local receiver (scriptable answers, a token endpoint),
a client with a queue and outbound requests to loopback allowed, and helpers to create a
subscription and run one delivery batch."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meshsite import celery_app
from meshsite.testing import REST, enc
from messaging.models import WebhookSubscription
from messaging.webhooks.delivery import webhook_deliver_batch

Q = "a/b/c/q1"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.pushes: list[dict] = []
        self.statuses: list[int] = []  # answers to the next pushes; then 200
        self.extra_headers: dict[str, str] = {}
        self.token_requests = 0
        self.valid_tokens = {"token-2"}
        self.connections = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"  # keeps connections alive, as real receivers do

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/token":
            self.server.token_requests += 1
            token = f"token-{self.server.token_requests}"
            self._answer(200, json.dumps({"access_token": token, "expires_in": 3600}).encode())
            return
        self.server.pushes.append({"headers": dict(self.headers.items()), "body": body, "path": self.path})
        if self.path == "/oauth-hook":
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
            self._answer(200 if bearer in self.server.valid_tokens else 401, b"")
            return
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self._answer(status, b"receiver says %d" % status)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        for name, value in self.server.extra_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(mesh, settings, monkeypatch):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.MESH_WEBHOOK_RETRY_SCHEDULE = [0.0]
    # Inline, so that an eager delivery task runs inside the test's transaction; the
    # background waker is exercised by tests/test_webhook_worker.py with real commits.
    settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND = False
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    client = mesh()
    assert client.put_queue(Q).status_code == 201
    return client


def hook(client, endpoint: str, *, qos: int = 1, security: dict | None = None) -> WebhookSubscription:
    push: dict = {"type": "webhook", "endpoint": endpoint, "exemptHandshake": True}
    if security:
        push["securitySchema"] = security
    body = {"name": "a/b/c/hook", "address": f"queue:{Q}", "qos": qos, "pushConfig": push}
    response = client.call("POST", f"{REST}/subscriptions", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    return WebhookSubscription.objects.get()


def publish_numbered(client, count: int) -> list[bytes]:
    """Publish m0, m1, ... to the pushed queue; returns the bodies in order."""
    bodies = [f"m{n}".encode() for n in range(count)]
    for body in bodies:
        client.publish("queues", Q, body)
    return bodies


def set_state(client, action: str) -> None:
    """Pause or resume the subscription made by `hook`, through the API."""
    url = f"{REST}/subscriptions/{enc('a/b/c/hook')}/state"
    response = client.call("PUT", url, json.dumps({"action": action}), content_type="application/json")
    assert response.status_code == 200, response.content


def run(subscription: WebhookSubscription) -> int:
    """One delivery run, in-process; returns how many messages it delivered."""
    return webhook_deliver_batch(subscription_id=subscription.pk).delivered


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


