"""Content-Type must be a media type (RFC 9110 §8.3.1): on publish to a queue or a topic,
and in a webhook subscription's defaultContentType. `;;;` used to be stored and echoed back
on consume; now it answers 400 `{"message": ...}` and stores nothing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsite.testing import REST
from messaging.mediatype import is_media_type
from messaging.models import Message, WebhookSubscription

Q1 = "a/b/c/q1"
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKENS = st.text(alphabet=TCHAR, min_size=1, max_size=12)
QDTEXT = [chr(c) for c in (0x09, 0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F))]
QUOTED = st.lists(
    st.sampled_from(QDTEXT) | st.sampled_from([chr(c) for c in (0x09, *range(0x20, 0x7F))]).map(lambda c: "\\" + c),
    max_size=8,
).map(lambda parts: '"' + "".join(parts) + '"')
OWS = st.text(alphabet=" \t", max_size=2)
PARAMETER = st.one_of(st.just(""), st.tuples(TOKENS, TOKENS | QUOTED).map("=".join))
PARAMETERS = st.lists(st.tuples(OWS, OWS, PARAMETER).map(lambda p: f"{p[0]};{p[1]}{p[2]}"), max_size=3).map("".join)
MEDIA_TYPES = st.tuples(TOKENS, TOKENS, PARAMETERS).map(lambda t: f"{t[0]}/{t[1]}{t[2]}")
NOT_TCHAR = st.sampled_from(list(' \t"(),/:;<=>?@[\\]{}\x00\x7fé'))

GOOD = [
    "text/plain", "application/json", "application/cloudevents+json; charset=utf-8",
    'multipart/form-data; boundary="a b;c\\"d"', "text/plain;charset=UTF-8", "text/plain ; a=b",
    "text/plain;;;", "text/plain; ", "application/vnd.sap.x!#$%&'*^_`|~", "a/b;x=\"\"",
]
BAD = [
    ";;;", "", "text", "text/", "/plain", "text/plain/x", "text /plain", "text/ plain", "text/plain; charset",
    "text/plain; =utf-8", "text/plain; a=b c", 'text/plain; a="open', "text/plain; a=\"x\"y", "tëxt/plain",
    "text/plain\x00", "text/plain; a=b\r\nx: y", "text(plain)/x", "a/b;" + "c" * 252,
]


@given(MEDIA_TYPES)
def test_every_media_type_the_grammar_builds_is_accepted(value):
    assert is_media_type(value) == (len(value) <= 255)


@given(TOKENS, TOKENS, PARAMETERS, NOT_TCHAR, st.integers(min_value=0))
def test_a_character_outside_token_in_the_type_or_subtype_is_refused(kind, sub, params, bad, where):
    word = kind + "/" + sub
    at = where % len(word)  # before the last character at most: after it, `;` and spaces start parameters
    assert not is_media_type(word[:at] + bad + word[at:] + params)


@pytest.mark.parametrize("value", GOOD)
def test_good_media_types(value):
    assert is_media_type(value)


@pytest.mark.parametrize("value", BAD)
def test_bad_media_types(value):
    assert not is_media_type(value)


@pytest.fixture
def client(mesh, settings):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    client = mesh()
    assert client.put_queue(Q1).status_code == 201
    assert client.subscribe(Q1, "a/b/c/t").status_code == 201
    return client


@pytest.mark.parametrize("kind,name", [("queues", Q1), ("topics", "a/b/c/t")])
@pytest.mark.parametrize("content_type", [";;;", "text", "text/plain; charset"])
def test_publish_with_an_invalid_content_type_is_400_and_stores_nothing(client, kind, name, content_type):
    response = client.publish(kind, name, b"x", content_type=content_type)
    assert response.status_code == 400, response.content
    assert "Content-Type" in json.loads(response.content)["message"]
    assert not Message.objects.exists()


def test_a_valid_content_type_with_parameters_is_stored_and_echoed(client):
    content_type = 'application/cloudevents+json; charset=utf-8; profile="a;b"'
    assert client.publish("queues", Q1, b"{}", content_type=content_type).status_code == 204
    consumed = client.consume(Q1)
    assert consumed.status_code == 200 and consumed["Content-Type"] == content_type


def _webhook(client, default_content_type: str):
    push = {"type": "webhook", "endpoint": "http://127.0.0.1:9/hook", "exemptHandshake": True,
            "defaultContentType": default_content_type}
    body = json.dumps({"name": "a/b/c/hook", "address": f"queue:{Q1}", "qos": 1, "pushConfig": push})
    return client.call("POST", f"{REST}/subscriptions", body, content_type="application/json")


def test_webhook_default_content_type_must_be_a_media_type(client):
    response = _webhook(client, ";;;")
    assert response.status_code == 400, response.content
    assert "defaultContentType" in json.loads(response.content)["message"]
    assert not WebhookSubscription.objects.exists()
    assert _webhook(client, "application/json; charset=utf-8").status_code == 201
    assert WebhookSubscription.objects.get().default_content_type == "application/json; charset=utf-8"


def test_another_tenant_publishing_a_bad_content_type_stores_nothing_anywhere(client, mesh):
    other = mesh("other", "x/y/z")
    assert other.put_queue("x/y/z/q").status_code == 201
    assert other.publish("queues", "x/y/z/q", b"x", content_type=";;;").status_code == 400
    assert client.publish("queues", Q1, b"mine", content_type="text/plain").status_code == 204
    assert [bytes(m.payload) for m in Message.objects.all()] == [b"mine"]
