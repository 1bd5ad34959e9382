"""meshsite's extensions around webhooks: Standard Webhooks signatures (verified with the
independent `standardwebhooks` package), the delivery log, and browsing and re-queueing a
dead message queue."""

from __future__ import annotations

import json

from standardwebhooks.webhooks import Webhook

from meshsite.testing import MANAGEMENT, REST, enc
from messaging.models import Message, WebhookSubscription
from messaging.tests.conftest import Q, hook, run
from messaging.webhooks.signing import new_secret

HOOK_URL = f"{REST}/subscriptions/{enc('a/b/c/hook')}"


def _signed_hook(client, endpoint: str, secrets: list[str]):
    body = {"name": "a/b/c/hook", "address": f"queue:{Q}", "qos": 1,
            "pushConfig": {"type": "webhook", "endpoint": endpoint, "exemptHandshake": True,
                           "signatureSecrets": secrets}}
    return client.call("POST", f"{REST}/subscriptions", json.dumps(body), content_type="application/json")


def test_signed_pushes_verify_with_the_reference_and_keep_their_id_across_retries(client, receiver):
    old, new = new_secret(), new_secret()
    response = _signed_hook(client, receiver.url(), [new, old])
    assert response.status_code == 201, response.content
    assert response.json()["pushConfig"]["signed"] is True
    assert old not in json.dumps(WebhookSubscription.objects.get().signing_secrets)
    client.publish("queues", Q, b'{"order": 7}', content_type="application/json")
    receiver.statuses = [500]
    subscription = WebhookSubscription.objects.get()
    run(subscription)
    run(subscription)
    first, retry = receiver.pushes
    assert first["headers"]["webhook-id"] == retry["headers"]["webhook-id"] == first["headers"]["x-message-id"]
    for secret in (old, new):  # a receiver holding either secret verifies, mid-rotation
        headers = {k.lower(): v for k, v in retry["headers"].items()}
        assert Webhook(secret).verify(retry["body"], headers) == {"order": 7}


def test_bad_signature_secrets_are_refused(client, receiver):
    for secrets in (["not-a-secret"], [new_secret()] * 3, "whsec_x"):
        response = _signed_hook(client, receiver.url(), secrets)  # type: ignore[arg-type]
        assert response.status_code == 400, response.content
    assert not WebhookSubscription.objects.exists()


def test_delivery_log_lists_attempts_newest_first_and_only_to_the_owner(client, receiver, mesh):
    subscription = hook(client, receiver.url())
    client.publish("queues", Q)
    receiver.statuses = [503]
    run(subscription)
    run(subscription)
    log = client.call("GET", f"{HOOK_URL}/deliveries").json()
    assert [(entry["succeeded"], entry["statusCode"]) for entry in log] == [(True, 200), (False, 503)]
    assert log[1]["error"] == "receiver answered 503"
    assert log[1]["responseExcerpt"] == "receiver says 503"
    assert client.call("GET", f"{HOOK_URL}/deliveries?limit=0").status_code == 400
    other = mesh("other", "x/y/z")
    assert other.call("GET", f"{HOOK_URL}/deliveries").status_code == 404


def test_dead_messages_can_be_browsed_and_requeued_one_or_all_then_delivered(client, receiver):
    client.put_queue(Q, {"maxRedeliveryCount": 1, "deadMsgQueue": "$namespace/dmq"})
    subscription = hook(client, receiver.url())
    for n in range(3):
        client.publish("queues", Q, f"m{n}".encode())
    receiver.statuses = [500] * 6
    for _ in range(8):
        run(subscription)
    dmq = f"{MANAGEMENT}/queues/{enc('a/b/c/dmq')}"
    dead = client.call("GET", f"{dmq}/messages").json()
    assert len(dead) == 3
    assert all(entry["deadFrom"] == Q and "500" in entry["deathReason"] for entry in dead)
    one = client.call("POST", f"{dmq}/requeue", json.dumps({"messageIds": [dead[0]["messageId"]]}),
                      content_type="application/json")
    assert one.json() == {"requeued": 1}
    assert client.call("POST", f"{dmq}/requeue").json() == {"requeued": 2}
    assert Message.objects.filter(queue__name=Q, delivery_count=0, death_reason="").count() == 3
    receiver.statuses = []
    receiver.pushes.clear()
    assert run(subscription) == 3
    assert sorted(p["body"] for p in receiver.pushes) == [b"m0", b"m1", b"m2"]


def test_requeue_refuses_a_malformed_body_and_foreign_queues(client, mesh):
    client.put_queue("a/b/c/dmq")
    dmq = f"{MANAGEMENT}/queues/{enc('a/b/c/dmq')}"
    bad = client.call("POST", f"{dmq}/requeue", json.dumps({"messageIds": "x"}), content_type="application/json")
    assert bad.status_code == 400
    garbage = client.call("POST", f"{dmq}/requeue", json.dumps({"messageIds": ["nope"]}),
                          content_type="application/json")
    assert garbage.status_code == 400
    other = mesh("other", "x/y/z")
    assert other.call("POST", f"{dmq}/requeue").status_code in (403, 404)
    assert other.call("GET", f"{dmq}/messages").status_code in (403, 404)
