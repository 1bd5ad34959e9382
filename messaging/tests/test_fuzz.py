"""Property tests against the SAP-compatible APIs: whatever the names, headers and bodies,
the answer is never a 5xx, every 4xx carries `{"message": ...}`, and a refused publish or
queue update changes nothing."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from meshsite.testing import MANAGEMENT, REST, MeshClient, enc
from messaging.models import Message

Q1 = "a/b/c/q1"
FUZZ = hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# What an HTTP server can hand over in a header: latin-1, no control characters.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30)
names = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from("ab/.-_+*% \x00é"), max_size=20).map(lambda tail: f"a/b/c/{tail}"),
    st.from_regex(r"a/b/c/[a-zA-Z0-9._-]{1,12}(/[a-zA-Z0-9._+*-]{1,5}){0,2}", fullmatch=True),
)
raw_segments = st.text(st.sampled_from("abc0129AFz%./-_~+*:@!$&'()=,;"), min_size=1, max_size=24)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
ATTRIBUTES = [
    "accessType", "maxQueueSizeInBytes", "maxQueueMessageCount", "maxMessageSizeInBytes", "respectTtl",
    "maxRedeliveryCount", "deadMsgQueue", "maxDeliveredUnackedMsgsPerFlow", "redeliveryDelayInMs",
    "maxRedeliveryDelayInMs",
]
attribute_values = st.one_of(
    json_values, st.integers(min_value=-(2**64), max_value=2**64), st.sampled_from(["EXCLUSIVE", "$namespace/dmq"])
)
queue_bodies = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(ATTRIBUTES), attribute_values, max_size=4),
    st.dictionaries(st.sampled_from([*ATTRIBUTES, "unknown"]), attribute_values, min_size=1, max_size=3),
)


def assert_well_formed(response, what: str) -> None:
    status = response.status_code
    assert status < 500, f"{what} answered {status}: {response.content[:300]!r}"
    if 400 <= status < 500:
        try:
            payload = json.loads(response.content)
        except ValueError:
            pytest.fail(f"{what} answered {status} without a JSON body: {response.content[:300]!r}")
        assert isinstance(payload, dict) and isinstance(payload.get("message"), str), (what, payload)


@pytest.fixture
def client(mesh) -> MeshClient:
    client = mesh()
    assert client.put_queue(Q1).status_code == 201
    assert client.subscribe(Q1, "a/b/c/*").status_code == 201
    return client


@FUZZ
@given(name=names)
@example(name="a/b/c/q\x00")
@example(name="")
@example(name="a/b/c/../q")
def test_any_queue_or_topic_name_gets_a_well_formed_answer(client, name):
    segment = enc(name)
    calls = [
        ("GET", f"{MANAGEMENT}/queues/{segment}"),
        ("GET", f"{MANAGEMENT}/queues/{segment}/statistics"),
        ("GET", f"{MANAGEMENT}/queues/{segment}/subscriptions"),
        ("PUT", f"{MANAGEMENT}/queues/{enc(Q1)}/subscriptions/{segment}"),
        ("DELETE", f"{MANAGEMENT}/queues/{enc(Q1)}/subscriptions/{segment}"),
        ("POST", f"{REST}/queues/{segment}/messages/consumption"),
        ("POST", f"{REST}/queues/{enc(Q1)}/messages/{segment}/acknowledgement"),
        ("PUT", f"{MANAGEMENT}/queues/{segment}"),
        ("DELETE", f"{MANAGEMENT}/queues/{segment}"),
    ]
    for method, path in calls:
        assert_well_formed(client.call(method, path, headers={"x-qos": "0"}), f"{method} {path}")
    for kind in ("queues", "topics"):
        before = Message.objects.count()
        response = client.publish(kind, name, b"fuzz")
        assert_well_formed(response, f"publish to {kind} {name!r}")
        if response.status_code != 204:
            assert Message.objects.count() == before, "a refused publish stored a message"


@FUZZ
@given(raw=raw_segments)
@example(raw="%zz")
@example(raw="%C3")
@example(raw="%00")
@example(raw="a%2Fb%2Fc%2Fq1%2F")
def test_raw_path_segments_get_a_well_formed_answer(client, raw):
    before = Message.objects.count()
    publish = client.call("POST", f"{REST}/queues/{raw}/messages", b"raw", content_type="text/plain",
                          headers={"x-qos": "1"})
    assert_well_formed(publish, f"publish to raw segment {raw!r}")
    if publish.status_code != 204:
        assert Message.objects.count() == before
    for method, path in (("GET", f"{MANAGEMENT}/queues/{raw}"), ("POST", f"{REST}/topics/{raw}/messages")):
        assert_well_formed(client.call(method, path, b"x", content_type="text/plain", headers={"x-qos": "0"}), path)


@FUZZ
@given(qos=header_text | st.sampled_from(["0", "1"]), expiration=st.none() | header_text | st.integers().map(str))
@example(qos="1", expiration="\u00b2")
@example(qos="1", expiration="2592000001")
@example(qos="0", expiration="0")
def test_publish_headers_never_break_the_api(client, qos, expiration):
    headers = {"x-qos": qos}
    if expiration is not None:
        headers["x-message-expiration"] = expiration
    before = Message.objects.count()
    response = client.publish("queues", Q1, b"hdr", headers=headers)
    assert_well_formed(response, f"publish with {headers!r}")
    if response.status_code == 204:
        assert qos in ("0", "1")
        assert expiration is None or 1 <= int(expiration) <= 2592000000
        assert Message.objects.count() == before + 1
    else:
        assert response.status_code == 400
        assert Message.objects.count() == before
    assert_well_formed(client.consume(Q1, qos=qos), f"consume with x-qos {qos!r}")


@FUZZ
@given(content_type=header_text.filter(bool), payload=st.binary(min_size=1, max_size=64))
def test_published_content_type_and_bytes_come_back_unchanged(client, content_type, payload):
    response = client.publish("queues", Q1, payload, content_type=content_type)
    assert_well_formed(response, f"publish with Content-Type {content_type!r}")
    if response.status_code != 204:
        assert not Message.objects.exists()
        return
    delivered = client.consume(Q1, qos="0")
    assert delivered.status_code == 200
    assert delivered.content == payload
    assert delivered["Content-Type"] == content_type


@FUZZ
@given(attributes=queue_bodies)
@example(attributes={"unknown": 1})
@example(attributes=[])
@example(attributes={"deadMsgQueue": "$namespace"})
def test_any_queue_body_gets_a_well_formed_answer_and_a_refusal_changes_nothing(client, attributes):
    url = f"{MANAGEMENT}/queues/{enc(Q1)}"
    before = json.loads(client.call("GET", url).content)
    response = client.call("PUT", url, json.dumps(attributes), content_type="application/json")
    assert_well_formed(response, f"PUT {attributes!r}")
    # 403: a deadMsgQueue the instance's queue rules would not let it consume from.
    assert response.status_code in (200, 400, 403), response.content
    after = json.loads(client.call("GET", url).content)
    if response.status_code != 200:
        assert after == before
    else:
        assert after == json.loads(response.content)
        for key in set(attributes) & {"maxQueueSizeInBytes", "maxQueueMessageCount", "respectTtl", "accessType"}:
            assert after[key] == attributes[key]


@FUZZ
@given(raw=st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
@example(raw=b"\xff\xfe{")
@example(raw=b"0")
@example(raw=b'{"maxQueueMessageCount": 1')
def test_any_bytes_as_queue_body_never_break_the_api(client, raw):
    url = f"{MANAGEMENT}/queues/{enc('a/b/c/fuzzed')}"
    response = client.call("PUT", url, raw, content_type="application/json")
    assert_well_formed(response, f"PUT raw {raw!r}")
    assert response.status_code in (200, 201, 400)
