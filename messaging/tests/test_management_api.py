"""The SAP management API (`/hub/rest/api/v1/management/messaging`): queues, subscriptions,
statistics and readiness, with the status codes and shapes of the contract table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshsite.testing import MANAGEMENT, enc
from messaging.models import Queue, Subscription

Q1 = "a/b/c/q1"
QUEUE_KEYS = {
    "name", "messageCount", "queueSizeInBytes", "unacknowledgedMessageCount", "maxQueueSizeInBytes",
    "maxQueueMessageCount", "maxMessageSizeInBytes", "accessType", "respectTtl", "maxRedeliveryCount",
    "deadMsgQueue", "maxDeliveredUnackedMsgsPerFlow", "redeliveryDelayInMs", "maxRedeliveryDelayInMs",
}
STATISTICS_KEYS = {"name", "messageCount", "queueSizeInBytes", "unacknowledgedMessageCount"}


def body(response) -> Any:
    return json.loads(response.content)


def queue_url(name: str, tail: str = "") -> str:
    return f"{MANAGEMENT}/queues/{enc(name)}{tail}"


def put_raw(client, name: str, raw: str, content_type: str = "application/json"):
    return client.call("PUT", queue_url(name), raw, content_type=content_type)


def assert_sap_error(response, status: int) -> None:
    assert response.status_code == status, response.content
    payload = body(response)
    assert isinstance(payload, dict) and isinstance(payload.get("message"), str) and payload["message"]


# --- queues -------------------------------------------------------------------------------


def test_put_creates_queue_with_201_and_contract_shape(mesh):
    client = mesh()
    response = client.put_queue(Q1)
    assert response.status_code == 201
    assert body(response) == {
        "name": Q1, "messageCount": 0, "queueSizeInBytes": 0, "unacknowledgedMessageCount": 0,
        "maxQueueSizeInBytes": 0, "maxQueueMessageCount": 0, "maxMessageSizeInBytes": 0,
        "accessType": "NON_EXCLUSIVE", "respectTtl": False, "maxRedeliveryCount": 0,
        "deadMsgQueue": None, "maxDeliveredUnackedMsgsPerFlow": 10000,
        "redeliveryDelayInMs": 1000, "maxRedeliveryDelayInMs": 300000,
    }
    assert Queue.objects.filter(instance=client.instance, name=Q1).exists()


def test_put_existing_queue_answers_200(mesh):
    client = mesh()
    assert client.put_queue(Q1).status_code == 201
    response = client.put_queue(Q1)
    assert response.status_code == 200
    assert body(response)["name"] == Q1
    assert Queue.objects.filter(instance=client.instance, name=Q1).count() == 1


def test_put_with_attributes_creates_queue_with_them(mesh):
    client = mesh()
    attributes = {
        "accessType": "EXCLUSIVE", "maxQueueSizeInBytes": 5000, "maxQueueMessageCount": 7,
        "maxMessageSizeInBytes": 300, "respectTtl": True, "maxRedeliveryCount": 3,
        "deadMsgQueue": "a/b/c/dmq", "maxDeliveredUnackedMsgsPerFlow": 12,
    }
    response = client.put_queue(Q1, attributes)
    assert response.status_code == 201
    assert {key: body(response)[key] for key in attributes} == attributes


def test_partial_update_changes_only_the_given_attributes(mesh):
    client = mesh()
    client.put_queue(Q1, {"maxQueueMessageCount": 7, "respectTtl": True, "deadMsgQueue": "a/b/c/dmq"})
    response = client.put_queue(Q1, {"maxRedeliveryCount": 4})
    assert response.status_code == 200
    queue = body(client.call("GET", queue_url(Q1)))
    assert queue["maxRedeliveryCount"] == 4
    assert queue["maxQueueMessageCount"] == 7
    assert queue["respectTtl"] is True
    assert queue["deadMsgQueue"] == "a/b/c/dmq"
    assert queue["accessType"] == "NON_EXCLUSIVE"


def test_put_without_body_keeps_existing_attributes(mesh):
    client = mesh()
    client.put_queue(Q1, {"maxQueueMessageCount": 7})
    assert client.put_queue(Q1).status_code == 200
    assert body(client.call("GET", queue_url(Q1)))["maxQueueMessageCount"] == 7


@pytest.mark.parametrize("spelling", ["$namespace/dmq", "${namespace}/dmq"])
def test_dead_msg_queue_namespace_placeholder_is_replaced(mesh, spelling):
    client = mesh()
    response = client.put_queue(Q1, {"deadMsgQueue": spelling})
    assert response.status_code == 201
    assert body(response)["deadMsgQueue"] == "a/b/c/dmq"


def test_dead_msg_queue_null_clears_it(mesh):
    client = mesh()
    client.put_queue(Q1, {"deadMsgQueue": "a/b/c/dmq"})
    assert client.put_queue(Q1, {"deadMsgQueue": None}).status_code == 200
    assert body(client.call("GET", queue_url(Q1)))["deadMsgQueue"] is None


def test_get_queue_returns_the_queue_object(mesh):
    client = mesh()
    client.put_queue(Q1, {"maxRedeliveryCount": 2})
    response = client.call("GET", queue_url(Q1))
    assert response.status_code == 200
    assert set(body(response)) == QUEUE_KEYS
    assert body(response)["name"] == Q1 and body(response)["maxRedeliveryCount"] == 2


def test_get_unknown_queue_answers_404(mesh):
    client = mesh()
    response = client.call("GET", queue_url("a/b/c/nope"))
    assert_sap_error(response, 404)
    assert body(response)["message"] == "Queue does not exist"


def test_list_queues_returns_every_queue_of_the_instance(mesh):
    client = mesh()
    assert body(client.call("GET", f"{MANAGEMENT}/queues")) == []
    for name in ("a/b/c/q2", "a/b/c/q1"):
        client.put_queue(name)
    response = client.call("GET", f"{MANAGEMENT}/queues")
    assert response.status_code == 200
    queues = body(response)
    assert sorted(queue["name"] for queue in queues) == ["a/b/c/q1", "a/b/c/q2"]
    assert all(set(queue) == QUEUE_KEYS for queue in queues)


def test_delete_queue_answers_204_and_removes_it_with_its_subscriptions(mesh):
    client = mesh()
    client.put_queue(Q1)
    client.subscribe(Q1, "a/b/c/t")
    client.publish("queues", Q1)
    response = client.call("DELETE", queue_url(Q1))
    assert response.status_code in (200, 204)
    assert client.call("GET", queue_url(Q1)).status_code == 404
    assert not Subscription.objects.filter(queue__instance=client.instance).exists()


def test_delete_unknown_queue_answers_404(mesh):
    client = mesh()
    assert_sap_error(client.call("DELETE", queue_url("a/b/c/nope")), 404)


def test_invalid_queue_name_answers_400(mesh):
    client = mesh()
    assert_sap_error(client.put_queue("a/b/c/bad name!"), 400)
    assert_sap_error(client.put_queue("a/b/c/.."), 400)
    assert not Queue.objects.filter(instance=client.instance).exists()


@pytest.mark.parametrize(
    ("method", "tail"),
    [("GET", ""), ("GET", "/statistics"), ("GET", "/subscriptions"), ("DELETE", ""), ("PUT", "")],
)
def test_queue_name_with_nul_byte_answers_4xx(mesh, method, tail):
    client = mesh()
    response = client.call(method, queue_url("a/b/c/q\x00", tail))
    assert 400 <= response.status_code < 500
    assert body(response)["message"]


def test_subscription_delete_with_nul_byte_answers_4xx(mesh):
    client = mesh()
    client.put_queue(Q1)
    response = client.call("DELETE", queue_url(Q1, "/subscriptions/" + enc("a/b/c/t\x00")))
    assert 400 <= response.status_code < 500
    assert body(response)["message"]


# --- attribute validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        {"colour": "blue"},
        {"maxQueueMessageCount": 3, "unknownAttribute": 1},
        {"maxQueueMessageCount": "5"},
        {"maxMessageSizeInBytes": 1.5},
        {"maxRedeliveryCount": True},
        {"respectTtl": 1},
        {"respectTtl": "true"},
        {"accessType": "SHARED"},
        {"accessType": 1},
        {"maxQueueSizeInBytes": -1},
        {"maxRedeliveryCount": -5},
        {"maxQueueMessageCount": 2**63},
        {"maxRedeliveryCount": 2**31},
        {"maxDeliveredUnackedMsgsPerFlow": 2**31},
        {"deadMsgQueue": "not a queue name"},
        {"deadMsgQueue": 5},
        {"deadMsgQueue": Q1},
        {"redeliveryDelayInMs": -1},
        {"redeliveryDelayInMs": 86_400_001},
        {"redeliveryDelayInMs": "1000"},
        {"redeliveryDelayInMs": 1.5},
        {"maxRedeliveryDelayInMs": False},
        {"maxRedeliveryDelayInMs": 2**31},
    ],
    ids=lambda attributes: json.dumps(attributes),
)
def test_invalid_attributes_answer_400_and_change_nothing(mesh, attributes):
    client = mesh()
    client.put_queue(Q1, {"maxQueueMessageCount": 9})
    before = body(client.call("GET", queue_url(Q1)))
    assert_sap_error(client.put_queue(Q1, attributes), 400)
    assert body(client.call("GET", queue_url(Q1))) == before


def test_invalid_attributes_on_create_create_nothing(mesh):
    client = mesh()
    assert_sap_error(client.put_queue(Q1, {"maxQueueMessageCount": -1}), 400)
    assert not Queue.objects.filter(instance=client.instance).exists()


@pytest.mark.parametrize("raw", ["{", "{'maxQueueMessageCount': 1}", "not json", '{"a": }'])
def test_malformed_json_answers_400(mesh, raw):
    client = mesh()
    assert_sap_error(put_raw(client, Q1, raw), 400)
    assert not Queue.objects.filter(instance=client.instance).exists()


@pytest.mark.parametrize("raw", ["[]", "5", '"text"', "null", "true"])
def test_body_that_is_not_an_object_answers_400(mesh, raw):
    client = mesh()
    assert_sap_error(put_raw(client, Q1, raw), 400)


def test_limits_at_their_maximum_are_accepted(mesh):
    client = mesh()
    attributes = {"maxQueueSizeInBytes": 2**63 - 1, "maxRedeliveryCount": 2**31 - 1}
    response = client.put_queue(Q1, attributes)
    assert response.status_code == 201
    assert body(client.call("GET", queue_url(Q1)))["maxQueueSizeInBytes"] == 2**63 - 1


# --- subscriptions ------------------------------------------------------------------------


def test_subscription_put_answers_201_then_200(mesh):
    client = mesh()
    client.put_queue(Q1)
    first = client.subscribe(Q1, "a/b/c/orders/+")
    assert first.status_code == 201
    assert body(first) == {"queueName": Q1, "topicPattern": "a/b/c/orders/+"}
    again = client.subscribe(Q1, "a/b/c/orders/+")
    assert again.status_code == 200
    assert body(again) == {"queueName": Q1, "topicPattern": "a/b/c/orders/+"}
    assert Subscription.objects.filter(queue__name=Q1).count() == 1


def test_subscription_list_shows_the_queue_patterns(mesh):
    client = mesh()
    client.put_queue(Q1)
    client.put_queue("a/b/c/q2")
    client.subscribe(Q1, "a/b/c/t1")
    client.subscribe(Q1, "a/b/c/*")
    client.subscribe("a/b/c/q2", "a/b/c/other")
    response = client.call("GET", queue_url(Q1, "/subscriptions"))
    assert response.status_code == 200
    assert sorted(body(response), key=lambda item: item["topicPattern"]) == [
        {"queueName": Q1, "topicPattern": "a/b/c/*"},
        {"queueName": Q1, "topicPattern": "a/b/c/t1"},
    ]


def test_subscription_list_of_unknown_queue_answers_404(mesh):
    client = mesh()
    assert_sap_error(client.call("GET", queue_url("a/b/c/nope", "/subscriptions")), 404)


def test_subscription_on_unknown_queue_answers_404(mesh):
    client = mesh()
    assert_sap_error(client.subscribe("a/b/c/nope", "a/b/c/t"), 404)


def test_subscription_delete_answers_204_then_404(mesh):
    client = mesh()
    client.put_queue(Q1)
    client.subscribe(Q1, "a/b/c/t")
    url = queue_url(Q1, f"/subscriptions/{enc('a/b/c/t')}")
    assert client.call("DELETE", url).status_code in (200, 204)
    assert body(client.call("GET", queue_url(Q1, "/subscriptions"))) == []
    assert_sap_error(client.call("DELETE", url), 404)


def test_subscription_delete_on_unknown_queue_answers_404(mesh):
    client = mesh()
    assert_sap_error(client.call("DELETE", queue_url("a/b/c/nope", f"/subscriptions/{enc('a/b/c/t')}")), 404)


@pytest.mark.parametrize("pattern", ["a/b/c/*/x", "a/b/c/t#", "a/b/c//t", "a/b/c/ t"])
def test_invalid_subscription_pattern_answers_400(mesh, pattern):
    client = mesh()
    client.put_queue(Q1)
    assert_sap_error(client.subscribe(Q1, pattern), 400)
    assert not Subscription.objects.exists()


# --- statistics and readiness -------------------------------------------------------------


def test_queue_statistics_count_messages_bytes_and_unacknowledged(mesh):
    client = mesh()
    client.put_queue(Q1)
    client.publish("queues", Q1, b"12345")
    client.publish("queues", Q1, b"123")
    assert client.consume(Q1, qos="1").status_code == 200
    response = client.call("GET", queue_url(Q1, "/statistics"))
    assert response.status_code == 200
    assert body(response) == {
        "name": Q1, "messageCount": 2, "queueSizeInBytes": 8, "unacknowledgedMessageCount": 1,
    }
    queue = body(client.call("GET", queue_url(Q1)))
    assert (queue["messageCount"], queue["queueSizeInBytes"], queue["unacknowledgedMessageCount"]) == (2, 8, 1)


def test_queue_statistics_of_unknown_queue_answers_404(mesh):
    client = mesh()
    assert_sap_error(client.call("GET", queue_url("a/b/c/nope", "/statistics")), 404)


def test_queues_statistics_lists_every_queue(mesh):
    client = mesh()
    client.put_queue(Q1)
    client.put_queue("a/b/c/q2")
    client.publish("queues", "a/b/c/q2", b"abcd")
    response = client.call("GET", f"{MANAGEMENT}/queuesStatistics")
    assert response.status_code == 200
    stats = {item["name"]: item for item in body(response)}
    assert set(stats) == {Q1, "a/b/c/q2"}
    assert all(set(item) == STATISTICS_KEYS for item in stats.values())
    assert stats["a/b/c/q2"]["messageCount"] == 1 and stats["a/b/c/q2"]["queueSizeInBytes"] == 4
    assert stats[Q1]["messageCount"] == 0


def test_readiness_check_answers_200(mesh):
    client = mesh()
    assert client.call("GET", f"{MANAGEMENT}/readinessCheck").status_code == 200


# --- authentication, options and descriptor rules ----------------------------------------


@pytest.mark.parametrize("token", ["", "garbage"])
def test_management_without_valid_token_answers_401(mesh, token):
    client = mesh()
    assert_sap_error(client.call("GET", f"{MANAGEMENT}/queues", token=token), 401)
    assert_sap_error(client.call("PUT", queue_url(Q1), token=token), 401)
    assert not Queue.objects.exists()


def test_management_option_off_answers_403(mesh):
    client = mesh(options={"management": False})
    assert_sap_error(client.call("GET", f"{MANAGEMENT}/queues"), 403)
    assert_sap_error(client.put_queue(Q1), 403)
    assert_sap_error(client.call("GET", f"{MANAGEMENT}/readinessCheck"), 403)
    assert not Queue.objects.exists()


def test_queue_name_outside_queue_rules_answers_403(mesh):
    client = mesh()
    assert_sap_error(client.put_queue("x/y/z/q1"), 403)
    assert_sap_error(client.put_queue("q1"), 403)
    assert not Queue.objects.exists()


def test_queue_rules_from_the_descriptor_admit_other_names(mesh):
    client = mesh(rules={"queueRules": {"publishFilter": ["shared/*"], "subscribeFilter": ["${namespace}/*"]}})
    assert client.put_queue("shared/q1").status_code == 201
    assert client.put_queue(Q1).status_code == 201
    assert_sap_error(client.put_queue("other/q1"), 403)


def test_subscription_outside_topic_subscribe_filter_answers_403(mesh):
    client = mesh()
    client.put_queue(Q1)
    assert_sap_error(client.subscribe(Q1, "x/y/z/orders"), 403)
    # A pattern broader than the filter is refused too: `*` covers more than `a/b/c/*`.
    assert_sap_error(client.subscribe(Q1, "a/b/+/orders"), 403)
    assert not Subscription.objects.exists()


def test_subscription_pattern_narrower_than_filter_is_allowed(mesh):
    client = mesh(rules={"topicRules": {"publishFilter": ["${namespace}/*"], "subscribeFilter": ["a/b/c/+"]}})
    client.put_queue(Q1)
    assert client.subscribe(Q1, "a/b/c/orders").status_code == 201
    assert client.subscribe(Q1, "a/b/c/+").status_code == 201
    assert_sap_error(client.subscribe(Q1, "a/b/c/*"), 403)
