"""The SAP messaging REST API (`/messagingrest/v1`): publish to queues and topics, consume,
acknowledge, locks and redelivery, dead-lettering, TTL, limits and authentication."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from oauth2_provider.models import AccessToken

from meshsite.platform.auth import forget_cached_tokens
from meshsite.platform.models import ServiceKey
from meshsite.platform.services import service_key_delete
from meshsite.testing import REST, enc, mesh_client_for
from messaging.models import Message, Queue
from messaging.services import queues_sweep

Q1 = "a/b/c/q1"


def body(response) -> dict:
    return json.loads(response.content)


def assert_sap_error(response, status: int, message: str | None = None) -> None:
    assert response.status_code == status, response.content
    payload = body(response)
    assert isinstance(payload.get("message"), str) and payload["message"]
    if message is not None:
        assert payload["message"] == message


def stored(queue: str) -> list[Message]:
    return list(Message.objects.filter(queue__name=queue).order_by("id"))


def expire_locks(queue: str) -> None:
    """Let every qos-1 lock on `queue` run out, and its redelivery delay after it, as if
    MESH_ACK_TIMEOUT and the delay had passed."""
    past = timezone.now() - timedelta(seconds=1)
    Message.objects.filter(queue__name=queue, locked_until__isnull=False).update(locked_until=past, available_at=past)


@pytest.fixture
def client(mesh):
    client = mesh()
    assert client.put_queue(Q1).status_code == 201
    return client


# --- publish to a queue -------------------------------------------------------------------


def test_publish_to_queue_stores_the_message(client):
    response = client.publish("queues", Q1, b"\x00binary\xff", content_type="application/octet-stream")
    assert response.status_code == 204
    [message] = stored(Q1)
    assert bytes(message.payload) == b"\x00binary\xff"
    assert message.content_type == "application/octet-stream"
    assert message.address == f"queue:{Q1}"


def test_every_publish_answered_2xx_is_in_the_store(client):
    statuses = [client.publish("queues", Q1, f"m{n}".encode(), qos=str(n % 2)).status_code for n in range(12)]
    assert statuses == [204] * 12
    assert [bytes(m.payload) for m in stored(Q1)] == [f"m{n}".encode() for n in range(12)]


def test_publish_to_unknown_queue_answers_404(client):
    assert_sap_error(client.publish("queues", "a/b/c/nope"), 404, "Queue does not exist")
    assert not Message.objects.exists()


@pytest.mark.parametrize("qos", [None, "", "2", "-1", "01", "one", "1.0"])
def test_publish_with_missing_or_invalid_qos_answers_400(client, qos):
    headers = {} if qos is None else {"x-qos": qos}
    response = client.call("POST", f"{REST}/queues/{enc(Q1)}/messages", b"x", content_type="text/plain",
                           headers=headers)
    assert_sap_error(response, 400, "x-qos is invalid")
    assert not Message.objects.exists()


def test_publish_without_content_type_answers_400(client):
    response = client.call("POST", f"{REST}/queues/{enc(Q1)}/messages", b"x", content_type="",
                           headers={"x-qos": "1"})
    assert_sap_error(response, 400)
    assert not Message.objects.exists()


def test_publish_with_a_non_ascii_content_type_answers_400_and_stores_nothing(client):
    # It would go out again as a header of every push; HTTP header values are ASCII.
    response = client.publish("queues", Q1, b"x", content_type="text/plain; charset=ütf-8")
    assert response.status_code == 400
    assert "Content-Type" in response.json()["message"]
    assert not Message.objects.exists()


# "\u00b2" (superscript two, one latin-1 byte on the wire) passes str.isdigit() but not int().
@pytest.mark.parametrize("expiration", ["0", "2592000001", "abc", "-5", "1e3", "99999999999999999999", "\u00b2"])
def test_publish_with_expiration_out_of_range_answers_400(client, expiration):
    response = client.publish("queues", Q1, headers={"x-message-expiration": expiration})
    assert_sap_error(response, 400)
    assert not Message.objects.exists()


@pytest.mark.parametrize("expiration", ["1", "2592000000"])
def test_publish_with_expiration_at_the_bounds_is_accepted(client, expiration):
    assert client.publish("queues", Q1, headers={"x-message-expiration": expiration}).status_code == 204
    assert len(stored(Q1)) == 1


def test_publish_over_queue_max_message_size_answers_413(client):
    client.put_queue(Q1, {"maxMessageSizeInBytes": 10})
    assert client.publish("queues", Q1, b"x" * 10).status_code == 204
    assert_sap_error(client.publish("queues", Q1, b"x" * 11), 413)
    assert len(stored(Q1)) == 1


def test_publish_over_global_max_message_size_answers_413(client):
    limit = 1024 * 1024
    assert client.publish("queues", Q1, b"x" * limit).status_code == 204
    assert_sap_error(client.publish("queues", Q1, b"x" * (limit + 1)), 413)
    assert len(stored(Q1)) == 1


def test_configured_max_message_size_is_enforced(client, settings):
    settings.MESH_MAX_MESSAGE_SIZE = 100
    assert_sap_error(client.publish("queues", Q1, b"x" * 101), 413)
    assert client.publish("queues", Q1, b"x" * 100).status_code == 204
    assert len(stored(Q1)) == 1


def test_queue_message_count_limit_answers_429_and_stores_nothing(client):
    client.put_queue(Q1, {"maxQueueMessageCount": 2})
    assert [client.publish("queues", Q1).status_code for _ in range(2)] == [204, 204]
    assert_sap_error(client.publish("queues", Q1), 429)
    assert len(stored(Q1)) == 2


def test_queue_size_limit_answers_429_and_stores_nothing(client):
    client.put_queue(Q1, {"maxQueueSizeInBytes": 10})
    assert client.publish("queues", Q1, b"123456").status_code == 204
    assert_sap_error(client.publish("queues", Q1, b"12345"), 429)
    assert client.publish("queues", Q1, b"1234").status_code == 204
    assert [m.size for m in stored(Q1)] == [6, 4]


def test_queue_outside_publish_rules_answers_403(mesh):
    client = mesh(rules={"queueRules": {"publishFilter": ["a/b/c/in/*"], "subscribeFilter": ["${namespace}/*"]}})
    assert client.put_queue(Q1).status_code == 201
    assert_sap_error(client.publish("queues", Q1), 403)
    assert not Message.objects.exists()


# --- publish to a topic -------------------------------------------------------------------


def test_topic_publish_fans_out_to_every_matching_subscription(client):
    patterns = {
        "a/b/c/exact": "a/b/c/orders/eu",
        "a/b/c/plus": "a/b/c/orders/+",
        "a/b/c/star": "a/b/c/*",
        "a/b/c/plusmid": "a/b/c/+/eu",
        "a/b/c/other": "a/b/c/orders/us",
        "a/b/c/short": "a/b/c/+",
        "a/b/c/deeper": "a/b/c/orders/eu/+",
    }
    for queue, pattern in patterns.items():
        client.put_queue(queue)
        assert client.subscribe(queue, pattern).status_code == 201
    assert client.publish("topics", "a/b/c/orders/eu", b"evt", content_type="application/json").status_code == 204
    received = {name for name in patterns if stored(name)}
    assert received == {"a/b/c/exact", "a/b/c/plus", "a/b/c/star", "a/b/c/plusmid"}
    assert {m.address for m in Message.objects.all()} == {"topic:a/b/c/orders/eu"}


def test_trailing_star_matches_one_or_more_segments_but_not_none(client):
    client.subscribe(Q1, "a/b/c/orders/*")
    for topic in ("a/b/c/orders", "a/b/c/orders/eu", "a/b/c/orders/eu/de/berlin"):
        assert client.publish("topics", topic, topic.encode()).status_code == 204
    assert [bytes(m.payload) for m in stored(Q1)] == [b"a/b/c/orders/eu", b"a/b/c/orders/eu/de/berlin"]


def test_topic_without_subscriber_is_dropped(client):
    client.subscribe(Q1, "a/b/c/orders")
    assert client.publish("topics", "a/b/c/invoices").status_code == 204
    assert not Message.objects.exists()


def test_topic_publish_reaches_queues_of_another_instance_that_may_subscribe(mesh):
    publisher = mesh("em1", "a/b/c")
    listener = mesh("em2", "x/y/z", rules={
        "topicRules": {"publishFilter": ["${namespace}/*"], "subscribeFilter": ["${namespace}/*", "a/b/c/*"]},
    })
    outsider = mesh("em3", "k/l/m")
    listener.put_queue("x/y/z/in")
    outsider.put_queue("k/l/m/in")
    assert listener.subscribe("x/y/z/in", "a/b/c/+").status_code == 201
    assert outsider.subscribe("k/l/m/in", "a/b/c/+").status_code == 403
    publisher.put_queue(Q1)
    publisher.subscribe(Q1, "a/b/c/orders")
    assert publisher.publish("topics", "a/b/c/orders", b"evt").status_code == 204
    assert [bytes(m.payload) for m in stored("x/y/z/in")] == [b"evt"]
    assert len(stored(Q1)) == 1
    assert not stored("k/l/m/in")
    delivery = listener.consume("x/y/z/in")
    assert delivery.status_code == 200 and delivery["x-address"] == "topic:a/b/c/orders"


def test_topic_outside_publish_rules_answers_403(client):
    client.subscribe(Q1, "a/b/c/*")
    assert_sap_error(client.publish("topics", "x/y/z/orders"), 403)
    assert not Message.objects.exists()


def test_topic_publish_over_a_subscribed_queue_message_size_stores_nothing(client):
    client.put_queue("a/b/c/small", {"maxMessageSizeInBytes": 3})
    for queue in (Q1, "a/b/c/small"):
        client.subscribe(queue, "a/b/c/orders")
    assert_sap_error(client.publish("topics", "a/b/c/orders", b"1234"), 413)
    assert not Message.objects.exists()


def test_topic_publish_is_all_or_nothing_when_a_queue_is_full(client):
    client.put_queue("a/b/c/full", {"maxQueueMessageCount": 1})
    for queue in (Q1, "a/b/c/full"):
        client.subscribe(queue, "a/b/c/orders")
    assert client.publish("topics", "a/b/c/orders").status_code == 204
    assert_sap_error(client.publish("topics", "a/b/c/orders"), 429)
    assert (len(stored(Q1)), len(stored("a/b/c/full"))) == (1, 1)


# --- consume and acknowledge --------------------------------------------------------------


def test_consume_qos0_removes_the_message(client):
    client.publish("queues", Q1, b"once")
    response = client.consume(Q1, qos="0")
    assert response.status_code == 200 and response.content == b"once"
    assert not stored(Q1)
    assert client.consume(Q1, qos="0").status_code == 204


def test_consume_qos1_locks_the_message_with_its_headers(client):
    client.publish("queues", Q1, b'{"a": 1}', content_type="application/json; charset=utf-8")
    response = client.consume(Q1, qos="1")
    assert response.status_code == 200
    assert response.content == b'{"a": 1}'
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["x-address"] == f"queue:{Q1}"
    assert response["x-message-id"]
    [message] = stored(Q1)
    assert message.locked_until is not None and message.delivery_count == 1
    assert client.consume(Q1, qos="1").status_code == 204


def test_consume_is_fifo(client):
    for n in range(3):
        client.publish("queues", Q1, f"m{n}".encode())
    assert [client.consume(Q1, qos="0").content for _ in range(3)] == [b"m0", b"m1", b"m2"]


def test_ack_removes_the_message(client):
    client.publish("queues", Q1)
    message_id = client.consume(Q1)["x-message-id"]
    assert client.ack(Q1, message_id).status_code in (200, 204)
    assert not stored(Q1)
    assert client.ack(Q1, message_id).status_code in (404, 410)


def test_consume_empty_queue_answers_204(client):
    assert client.consume(Q1).status_code == 204


@pytest.mark.parametrize("qos", [None, "", "2", "x"])
def test_consume_with_missing_or_invalid_qos_answers_400(client, qos):
    client.publish("queues", Q1)
    headers = {} if qos is None else {"x-qos": qos}
    response = client.call("POST", f"{REST}/queues/{enc(Q1)}/messages/consumption", headers=headers)
    assert_sap_error(response, 400, "x-qos is invalid")
    assert stored(Q1)[0].delivery_count == 0


def test_consume_and_ack_on_unknown_queue_answer_404(client):
    assert_sap_error(client.consume("a/b/c/nope"), 404, "Queue does not exist")
    assert_sap_error(client.ack("a/b/c/nope", "00000000-0000-0000-0000-000000000000"), 404)


@pytest.mark.parametrize("message_id", ["garbage", "00000000-0000-0000-0000-000000000000", "1"])
def test_ack_with_unknown_id_answers_404_and_keeps_the_message(client, message_id):
    client.publish("queues", Q1)
    assert client.consume(Q1).status_code == 200
    assert_sap_error(client.ack(Q1, message_id), 404)
    assert len(stored(Q1)) == 1


def test_unacked_message_returns_after_lock_expiry_with_higher_delivery_count(client):
    client.publish("queues", Q1, b"again")
    first = client.consume(Q1)
    assert client.consume(Q1).status_code == 204
    expire_locks(Q1)
    second = client.consume(Q1)
    assert second.status_code == 200 and second.content == b"again"
    assert second["x-message-id"] != first["x-message-id"]
    assert second["x-delivery-count"] == "2"
    assert stored(Q1)[0].delivery_count == 2


def test_lock_expires_after_ack_timeout(client, settings):
    settings.MESH_ACK_TIMEOUT = 1
    # The lock alone: the redelivery delay after it has tests of its own (test_redelivery_delay).
    assert client.put_queue(Q1, {"redeliveryDelayInMs": 0}).status_code == 200
    client.publish("queues", Q1)
    assert client.consume(Q1).status_code == 200
    time.sleep(1.1)
    assert client.consume(Q1).status_code == 200


def test_ack_with_stale_id_after_redelivery_is_refused(client):
    client.publish("queues", Q1)
    stale = client.consume(Q1)["x-message-id"]
    expire_locks(Q1)
    fresh = client.consume(Q1)["x-message-id"]
    assert_sap_error(client.ack(Q1, stale), 404)
    assert len(stored(Q1)) == 1
    assert client.ack(Q1, fresh).status_code == 200
    assert not stored(Q1)


def test_ack_after_lock_expired_answers_410_and_message_returns(client):
    client.publish("queues", Q1, b"late")
    message_id = client.consume(Q1)["x-message-id"]
    expire_locks(Q1)
    assert_sap_error(client.ack(Q1, message_id), 410)
    again = client.consume(Q1)
    assert again.status_code == 200 and again.content == b"late"


def test_message_moves_to_dead_msg_queue_after_max_redeliveries(client):
    client.put_queue(Q1, {"maxRedeliveryCount": 1, "deadMsgQueue": "$namespace/dmq"})
    client.publish("queues", Q1, b"poison")
    for _ in range(2):  # the first delivery plus one redelivery
        assert client.consume(Q1).status_code == 200
        expire_locks(Q1)
    assert client.consume(Q1).status_code == 204
    assert not stored(Q1)
    [dead] = stored("a/b/c/dmq")
    assert bytes(dead.payload) == b"poison" and dead.death_reason and dead.dead_from == Q1
    assert Queue.objects.filter(instance=client.instance, name="a/b/c/dmq").exists()
    response = client.consume("a/b/c/dmq", qos="0")
    assert response.status_code == 200 and response.content == b"poison"


def test_message_without_dead_msg_queue_is_dropped_after_max_redeliveries(client):
    client.put_queue(Q1, {"maxRedeliveryCount": 1})
    client.publish("queues", Q1)
    for _ in range(2):
        assert client.consume(Q1).status_code == 200
        expire_locks(Q1)
    assert client.consume(Q1).status_code == 204
    assert not Message.objects.exists()


def test_sweep_dead_letters_exhausted_messages_nobody_consumes(client):
    client.put_queue(Q1, {"maxRedeliveryCount": 1, "deadMsgQueue": "a/b/c/dmq"})
    client.publish("queues", Q1, b"poison")
    for _ in range(2):
        assert client.consume(Q1).status_code == 200
        expire_locks(Q1)
    assert queues_sweep() == 1
    assert not stored(Q1)
    assert [bytes(m.payload) for m in stored("a/b/c/dmq")] == [b"poison"]


def test_expired_message_on_respect_ttl_queue_is_not_delivered_and_is_swept(client):
    client.put_queue(Q1, {"respectTtl": True, "deadMsgQueue": "a/b/c/dmq"})
    client.put_queue("a/b/c/dmq")
    client.publish("queues", Q1, b"stale", headers={"x-message-expiration": "60000"})
    client.publish("queues", Q1, b"fresh", headers={"x-message-expiration": "60000"})
    Message.objects.filter(payload=b"stale").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.consume(Q1, qos="0").content == b"fresh"
    assert client.consume(Q1).status_code == 204
    assert queues_sweep() == 1
    [dead] = stored("a/b/c/dmq")
    assert bytes(dead.payload) == b"stale" and dead.death_reason
    assert not stored(Q1)


def test_expired_message_without_dead_msg_queue_is_dropped_by_the_sweep(client):
    client.put_queue(Q1, {"respectTtl": True})
    client.publish("queues", Q1, headers={"x-message-expiration": "1"})
    Message.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.consume(Q1).status_code == 204
    queues_sweep()
    assert not Message.objects.exists()


def test_expiration_is_ignored_without_respect_ttl(client):
    client.publish("queues", Q1, b"kept", headers={"x-message-expiration": "1"})
    Message.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    queues_sweep()
    assert client.consume(Q1, qos="0").content == b"kept"


def test_exclusive_queue_refuses_a_second_consumer_with_409(client):
    client.put_queue(Q1, {"accessType": "EXCLUSIVE"})
    other = mesh_client_for(client.instance, "key2")
    client.publish("queues", Q1, b"one")
    client.publish("queues", Q1, b"two")
    assert client.consume(Q1).status_code == 200
    assert_sap_error(other.consume(Q1), 409)
    assert client.consume(Q1).content == b"two"
    Queue.objects.filter(name=Q1).update(exclusive_until=timezone.now() - timedelta(seconds=1))
    expire_locks(Q1)
    assert other.consume(Q1).status_code == 200
    assert_sap_error(client.consume(Q1), 409)


def test_max_delivered_unacked_reached_answers_429(client):
    client.put_queue(Q1, {"maxDeliveredUnackedMsgsPerFlow": 2})
    for n in range(3):
        client.publish("queues", Q1, f"m{n}".encode())
    ids = [client.consume(Q1)["x-message-id"] for _ in range(2)]
    assert_sap_error(client.consume(Q1), 429)
    assert client.ack(Q1, ids[0]).status_code == 200
    assert client.consume(Q1).content == b"m2"


# --- options, names and authentication ----------------------------------------------------


def test_messagingrest_option_off_answers_403(mesh):
    client = mesh(options={"messagingrest": False})
    assert client.put_queue(Q1).status_code == 201
    assert_sap_error(client.publish("queues", Q1), 403)
    assert_sap_error(client.publish("topics", "a/b/c/t"), 403)
    assert_sap_error(client.consume(Q1), 403)
    assert_sap_error(client.ack(Q1, "00000000-0000-0000-0000-000000000000"), 403)
    assert not Message.objects.exists()


def test_percent_encoded_slashes_make_one_segment(client):
    assert client.call("POST", f"{REST}/queues/a%2Fb%2Fc%2Fq1/messages", b"enc", content_type="text/plain",
                       headers={"x-qos": "1"}).status_code == 204
    assert [bytes(m.payload) for m in stored(Q1)] == [b"enc"]


def test_unencoded_path_does_not_reach_the_queue(client):
    response = client.call("POST", f"{REST}/queues/a/b/c/q1/messages", b"raw", content_type="text/plain",
                           headers={"x-qos": "1"})
    assert response.status_code == 404
    assert not Message.objects.exists()
    consume = client.call("POST", f"{REST}/queues/a/b/c/q1/messages/consumption", headers={"x-qos": "0"})
    assert consume.status_code == 404


@pytest.mark.parametrize("token", ["", "garbage", "a b"])
def test_missing_or_garbage_token_answers_401(client, token):
    publish = client.call("POST", f"{REST}/queues/{enc(Q1)}/messages", b"x", content_type="text/plain",
                          headers={"x-qos": "1"}, token=token)
    assert_sap_error(publish, 401)
    consume = client.call("POST", f"{REST}/queues/{enc(Q1)}/messages/consumption", headers={"x-qos": "0"},
                          token=token)
    assert_sap_error(consume, 401)
    assert not Message.objects.exists()


def test_expired_token_answers_401(client):
    AccessToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    forget_cached_tokens()  # changed in the database directly; see platform/tests/test_token_cache.py
    assert_sap_error(client.publish("queues", Q1), 401)
    assert not Message.objects.exists()


def test_deleted_service_key_token_answers_401(client):
    assert client.publish("queues", Q1).status_code == 204
    service_key_delete(key=ServiceKey.objects.get(instance=client.instance))
    assert_sap_error(client.publish("queues", Q1), 401)
    assert_sap_error(client.consume(Q1), 401)
    assert len(stored(Q1)) == 1


def test_body_over_the_request_limit_answers_413_json(client, settings):
    too_big = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
    assert_sap_error(client.publish("queues", Q1, b"x" * too_big), 413)
    assert not Message.objects.exists()


def test_token_request_with_nul_in_client_id_is_refused(client):
    basic = base64.b64encode(b"sb-\x00:secret").decode()
    response = client.http.post("/oauth/token", {"grant_type": "client_credentials"},
                                HTTP_AUTHORIZATION=f"Basic {basic}")
    assert response.status_code in (400, 401)
