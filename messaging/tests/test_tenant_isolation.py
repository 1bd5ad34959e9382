"""Two instances with identical queue names: every management and REST call made with one
instance's token sees and changes only that instance's queues and messages."""

from __future__ import annotations

import json

import pytest

from meshsite.testing import MANAGEMENT, REST, enc
from messaging.models import Message, Queue, Subscription

SHARED = "shared/q1"
# Both instances may own queues under `shared/`, so the same name exists twice.
SHARED_RULES = {"queueRules": {"publishFilter": ["shared/*"], "subscribeFilter": ["shared/*"]}}


def body(response):
    return json.loads(response.content)


def payloads(instance) -> list[bytes]:
    return [bytes(m.payload) for m in Message.objects.filter(queue__instance=instance).order_by("id")]


@pytest.fixture
def pair(mesh):
    """(alice, bob): two instances, each with its own `shared/q1` holding one message."""
    alice = mesh("alice", "a/b/c", rules=SHARED_RULES)
    bob = mesh("bob", "x/y/z", rules=SHARED_RULES)
    for client, payload in ((alice, b"alice-1"), (bob, b"bob-1")):
        assert client.put_queue(SHARED).status_code == 201
        assert client.publish("queues", SHARED, payload).status_code == 204
    return alice, bob


def test_queue_list_shows_only_own_queues(pair):
    alice, bob = pair
    bob.put_queue("shared/bob-only")
    listed = body(alice.call("GET", f"{MANAGEMENT}/queues"))
    assert [queue["name"] for queue in listed] == [SHARED]
    assert listed[0]["messageCount"] == 1
    stats = body(alice.call("GET", f"{MANAGEMENT}/queuesStatistics"))
    assert [item["name"] for item in stats] == [SHARED]


def test_get_queue_and_statistics_count_only_own_messages(pair):
    alice, bob = pair
    bob.publish("queues", SHARED, b"bob-2")
    assert body(alice.call("GET", f"{MANAGEMENT}/queues/{enc(SHARED)}"))["messageCount"] == 1
    assert body(alice.call("GET", f"{MANAGEMENT}/queues/{enc(SHARED)}/statistics"))["messageCount"] == 1
    assert body(bob.call("GET", f"{MANAGEMENT}/queues/{enc(SHARED)}"))["messageCount"] == 2


def test_other_instance_queue_is_unknown(pair):
    alice, bob = pair
    bob.put_queue("shared/bob-only")
    bob.publish("queues", "shared/bob-only", b"private")
    assert alice.call("GET", f"{MANAGEMENT}/queues/{enc('shared/bob-only')}").status_code == 404
    assert alice.publish("queues", "shared/bob-only").status_code == 404
    assert alice.consume("shared/bob-only").status_code == 404
    assert alice.call("DELETE", f"{MANAGEMENT}/queues/{enc('shared/bob-only')}").status_code == 404
    assert alice.subscribe("shared/bob-only", "a/b/c/t").status_code == 404
    assert payloads(bob.instance) == [b"bob-1", b"private"]


def test_put_updates_only_own_queue(pair):
    alice, bob = pair
    assert alice.put_queue(SHARED, {"maxQueueMessageCount": 5}).status_code == 200
    assert Queue.objects.get(instance=bob.instance, name=SHARED).max_queue_message_count == 0
    assert Queue.objects.get(instance=alice.instance, name=SHARED).max_queue_message_count == 5


def test_publish_goes_to_own_queue_only(pair):
    alice, bob = pair
    assert alice.publish("queues", SHARED, b"alice-2").status_code == 204
    assert payloads(alice.instance) == [b"alice-1", b"alice-2"]
    assert payloads(bob.instance) == [b"bob-1"]


@pytest.mark.parametrize("qos", ["0", "1"])
def test_consume_never_returns_the_other_instance_message(pair, qos):
    alice, bob = pair
    first = alice.consume(SHARED, qos=qos)
    assert first.status_code == 200 and first.content == b"alice-1"
    assert alice.consume(SHARED, qos=qos).status_code == 204
    assert payloads(bob.instance) == [b"bob-1"]
    assert Message.objects.get(queue__instance=bob.instance).delivery_count == 0


def test_ack_with_other_instance_message_id_answers_404_and_keeps_it(pair):
    alice, bob = pair
    bob_id = bob.consume(SHARED)["x-message-id"]
    response = alice.ack(SHARED, bob_id)
    assert response.status_code == 404
    assert payloads(bob.instance) == [b"bob-1"]
    assert bob.ack(SHARED, bob_id).status_code == 200
    assert payloads(bob.instance) == []
    assert payloads(alice.instance) == [b"alice-1"]


def test_delete_affects_only_own_queue(pair):
    alice, bob = pair
    assert alice.call("DELETE", f"{MANAGEMENT}/queues/{enc(SHARED)}").status_code in (200, 204)
    assert not Queue.objects.filter(instance=alice.instance).exists()
    assert Queue.objects.filter(instance=bob.instance, name=SHARED).exists()
    assert payloads(bob.instance) == [b"bob-1"]
    assert bob.consume(SHARED, qos="0").content == b"bob-1"


def test_subscriptions_are_per_instance(pair):
    alice, bob = pair
    assert alice.subscribe(SHARED, "a/b/c/orders").status_code == 201
    assert bob.subscribe(SHARED, "x/y/z/orders").status_code == 201
    assert body(alice.call("GET", f"{MANAGEMENT}/queues/{enc(SHARED)}/subscriptions")) == [
        {"queueName": SHARED, "topicPattern": "a/b/c/orders"}
    ]
    url = f"{MANAGEMENT}/queues/{enc(SHARED)}/subscriptions/{enc('x/y/z/orders')}"
    assert alice.call("DELETE", url).status_code == 404
    assert Subscription.objects.filter(queue__instance=bob.instance).count() == 1


def test_topic_publish_does_not_reach_queues_that_may_not_subscribe(pair):
    alice, bob = pair
    alice.subscribe(SHARED, "a/b/c/*")
    assert alice.subscribe(SHARED, "x/y/z/*").status_code == 403
    assert bob.subscribe(SHARED, "a/b/c/*").status_code == 403
    assert bob.publish("topics", "a/b/c/orders").status_code == 403
    assert bob.publish("topics", "x/y/z/orders", b"bob-topic").status_code == 204
    assert payloads(alice.instance) == [b"alice-1"]
    assert alice.publish("topics", "a/b/c/orders", b"alice-topic").status_code == 204
    assert payloads(alice.instance) == [b"alice-1", b"alice-topic"]
    assert payloads(bob.instance) == [b"bob-1"]


def test_queue_in_other_namespace_cannot_be_created_by_default(mesh):
    alice = mesh("alice", "a/b/c")
    bob = mesh("bob", "x/y/z")
    assert bob.put_queue("x/y/z/q1").status_code == 201
    assert alice.put_queue("x/y/z/q1").status_code == 403
    assert alice.publish("queues", "x/y/z/q1").status_code == 403
    assert alice.consume("x/y/z/q1").status_code == 403
    assert Queue.objects.filter(name="x/y/z/q1").count() == 1


def test_token_of_one_instance_never_authenticates_as_the_other(pair):
    alice, bob = pair
    url = f"{REST}/queues/{enc(SHARED)}/messages/consumption"
    response = bob.call("POST", url, headers={"x-qos": "0"}, token=alice.token)
    assert response.content == b"alice-1"
    assert payloads(bob.instance) == [b"bob-1"]
