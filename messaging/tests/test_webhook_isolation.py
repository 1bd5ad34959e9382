"""A slow endpoint costs only its own subscription: while one run waits out its receiver's
timeout, another subscription's run delivers."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connection

from meshsite.testing import REST, make_instance, mesh_client_for
from messaging.models import WebhookSubscription
from messaging.tests.conftest import Handler, Receiver
from messaging.webhooks.delivery import webhook_deliver_batch


def _subscribe(client, name: str, queue: str, endpoint: str) -> int:
    client.put_queue(queue)
    body = {"name": name, "address": f"queue:{queue}", "qos": 1,
            "pushConfig": {"type": "webhook", "endpoint": endpoint, "exemptHandshake": True}}
    response = client.call("POST", f"{REST}/subscriptions", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    return WebhookSubscription.objects.get(name=name).pk


@pytest.mark.django_db(transaction=True)
def test_slow_receiver_is_cut_at_the_timeout_while_another_subscription_keeps_flowing(settings, fast_hashing,
                                                                                     monkeypatch):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.MESH_WEBHOOK_TIMEOUT = 2
    settings.MESH_WEBHOOK_RETRY_SCHEDULE = [60.0]
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    original = Handler.do_POST

    def maybe_slow(self: Handler) -> None:
        if self.path == "/slow":
            time.sleep(4)
        original(self)

    monkeypatch.setattr(Handler, "do_POST", maybe_slow)
    try:
        client = mesh_client_for(make_instance())
        slow = _subscribe(client, "a/b/c/slow", "a/b/c/q-slow", receiver.url("/slow"))
        fast = _subscribe(client, "a/b/c/fast", "a/b/c/q-fast", receiver.url("/fast"))
        client.publish("queues", "a/b/c/q-slow", b"slow one")
        for n in range(5):
            client.publish("queues", "a/b/c/q-fast", f"fast {n}".encode())
        finished: dict[str, float] = {}

        def run(name: str, subscription_id: int) -> None:
            try:
                webhook_deliver_batch(subscription_id=subscription_id)
                finished[name] = time.monotonic()
            finally:
                connection.close()

        started = time.monotonic()
        threads = [threading.Thread(target=run, args=("slow", slow)), threading.Thread(target=run, args=("fast", fast))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert finished["fast"] - started < 1.5  # not held up by the slow endpoint
        assert 1.8 < finished["slow"] - started < 3.5  # cut at MESH_WEBHOOK_TIMEOUT, not after 4 s
        assert sorted(p["body"] for p in receiver.pushes if p["path"] == "/fast") == [
            f"fast {n}".encode() for n in range(5)
        ]
        assert WebhookSubscription.objects.get(pk=slow).last_failed_delivery_reason.startswith("timeout")
    finally:
        receiver.shutdown()
        receiver.server_close()
