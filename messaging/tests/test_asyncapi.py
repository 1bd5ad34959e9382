"""`GET /api/v1/asyncapi`: the instance's live topology as an AsyncAPI 3.0.0 document.

The document is checked against the official AsyncAPI 3.0.0 JSON Schema (vendored under
schemas/, see its README), and beyond what a schema can say: every `$ref` resolves, the keys
follow the spec's key rule, it lists exactly what the instance holds, and nothing secret.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import validators

from meshsite.testing import REST, MeshClient
from messaging.asyncapi import asyncapi_document, component_key
from messaging.models import WebhookSubscription

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json").read_text())
URL = "/api/v1/asyncapi"
# The AsyncAPI 3.0.0 spec's rule for the keys of `channels` and `operations` (its JSON Schema
# leaves those maps open, so it is checked here).
KEY = re.compile(r"^[A-Za-z0-9_\-]+$")

ORDERS = "a/b/c/orders"
DEAD = "a/b/c/dead_letters"
PASSWORD = "hunter2-basic-password"
QUERY_KEY = "query-access-key-123"
SIGNING = "whsec_" + base64.b64encode(b"s" * 32).decode()


def _hook(client: MeshClient, name: str, queue: str, push: dict[str, Any]) -> None:
    body = {"name": name, "address": f"queue:{queue}", "qos": 1,
            "pushConfig": {"type": "webhook", "exemptHandshake": True, **push}}
    response = client.call("POST", f"{REST}/subscriptions", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content


@pytest.fixture
def seeded(mesh, settings) -> MeshClient:  # type: ignore[no-untyped-def]
    """Two queues, three subscriptions (one concrete), stored topic and queue messages, two webhooks."""
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    client = mesh()
    assert client.put_queue(DEAD).status_code == 201
    assert client.put_queue(ORDERS, {"maxRedeliveryCount": 3, "deadMsgQueue": DEAD}).status_code == 201
    for queue, pattern in [(ORDERS, "a/b/c/orders/*"), (ORDERS, "a/b/c/+/created"), (DEAD, "a/b/c/audit")]:
        assert client.subscribe(queue, pattern).status_code == 201
    for topic in ["a/b/c/orders/created", "a/b/c/orders/created", "a/b/c/orders/eu/paid", "a/b/c/audit"]:
        assert client.publish("topics", topic).status_code == 204
    assert client.publish("queues", ORDERS).status_code == 204  # a queue publish: no topic
    _hook(client, "orders-hook", ORDERS, {
        "endpoint": f"http://127.0.0.1:9/hook?code={QUERY_KEY}",
        "securitySchema": {"type": "basicAuth", "user": "pusher", "password": PASSWORD},
        "signatureSecrets": [SIGNING]})
    _hook(client, "a/b/c/plain", DEAD, {"endpoint": "http://127.0.0.1:9/plain"})
    return client


def _get(client: MeshClient, token: str | None = None) -> Any:
    return client.call("GET", URL, token=token)


def _document(client: MeshClient) -> dict[str, Any]:
    response = _get(client)
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_document_validates_against_the_official_asyncapi_3_schema(seeded: MeshClient) -> None:
    document = _document(seeded)
    validator_class = validators.validator_for(SCHEMA)
    assert validator_class.__name__ == "Draft7Validator"  # what the schema declares
    validator = validator_class(SCHEMA, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
    assert document["asyncapi"] == "3.0.0"
    assert all(KEY.match(key) for key in [*document["channels"], *document["operations"]])
    for ref in _refs(document):
        assert _resolve(document, ref) is not None


def test_a_document_that_breaks_the_spec_is_refused_by_the_schema(seeded: MeshClient) -> None:
    # The check above could pass vacuously (an unresolved schema accepts anything): it does not.
    document = _document(seeded)
    del document["servers"]["httprest"]["protocol"]
    validator = validators.validator_for(SCHEMA)(SCHEMA)
    assert not validator.is_valid(document)


def test_document_lists_exactly_the_instance_topology(seeded: MeshClient) -> None:
    document = _document(seeded)
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {
        f"queue:{ORDERS}", f"queue:{DEAD}",
        "topic:a/b/c/orders/*", "topic:a/b/c/+/created", "topic:a/b/c/audit",  # subscription patterns
        "topic:a/b/c/orders/created", "topic:a/b/c/orders/eu/paid",  # topics of stored messages
    }
    operations = document["operations"]
    by_action = {(op["action"], _resolve(document, op["channel"]["$ref"])["address"]) for op in operations.values()}
    assert {("send", f"queue:{q}") for q in (ORDERS, DEAD)} <= by_action
    assert {("receive", f"queue:{q}") for q in (ORDERS, DEAD)} <= by_action
    sent_topics = {address for action, address in by_action if action == "send" and address.startswith("topic:")}
    # Only concrete topics are published to; patterns select.
    assert sent_topics == {"topic:a/b/c/audit", "topic:a/b/c/orders/created", "topic:a/b/c/orders/eu/paid"}
    hooks = {op["x-meshsite-webhook"]["name"]: _resolve(document, op["channel"]["$ref"])["address"]
             for op in operations.values() if "x-meshsite-webhook" in op}
    assert hooks == {"orders-hook": f"queue:{ORDERS}", "a/b/c/plain": f"queue:{DEAD}"}
    orders = document["channels"][f"queue-{component_key(ORDERS)}"]
    assert orders["x-meshsite-queue"]["deadMsgQueue"] == DEAD
    assert orders["x-meshsite-queue"]["maxRedeliveryCount"] == 3


def test_servers_and_security_come_from_the_public_url(seeded: MeshClient, settings) -> None:  # type: ignore[no-untyped-def]
    settings.MESH_PUBLIC_URL = "https://mesh.example.com/em"
    document = _document(seeded)
    rest, amqp = document["servers"]["httprest"], document["servers"]["amqp10ws"]
    assert (rest["protocol"], rest["host"], rest["pathname"]) == ("https", "mesh.example.com", "/em")
    assert (amqp["protocol"], amqp["host"], amqp["pathname"]) == ("wss", "mesh.example.com", "/em/protocols/amqp10ws")
    flow = document["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "https://mesh.example.com/em/oauth/token"
    assert document["info"]["title"] == seeded.instance.name
    assert "a/b/c" in document["info"]["description"]


def test_the_answer_is_a_json_file_to_download(seeded: MeshClient) -> None:
    response = _get(seeded)
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="myem-asyncapi.json"'


def test_no_secret_appears_in_the_document(seeded: MeshClient) -> None:
    text = _get(seeded).content.decode()
    stored = WebhookSubscription.objects.get(name="orders-hook")
    sealed = [stored.security["password"], *stored.signing_secrets]
    for secret in [PASSWORD, SIGNING, QUERY_KEY, seeded.client_secret, seeded.token, *sealed]:
        assert secret not in text
    assert "http://127.0.0.1:9/hook" in text  # the endpoint itself is shown, without its query


def test_another_instances_token_sees_only_its_own_topology(seeded: MeshClient, mesh) -> None:  # type: ignore[no-untyped-def]
    other = mesh("otherem", "x/y/z")
    assert other.put_queue("x/y/z/inbox").status_code == 201
    assert other.subscribe("x/y/z/inbox", "x/y/z/events/*").status_code == 201
    document = _document(other)
    assert {channel["address"] for channel in document["channels"].values()} == {
        "queue:x/y/z/inbox", "topic:x/y/z/events/*"}
    assert not [op for op in document["operations"].values() if "x-meshsite-webhook" in op]
    text = json.dumps(document)
    assert "a/b/c" not in text and "orders" not in text and document["info"]["title"] == "otherem"
    # and the first instance's document is unchanged by the second instance
    assert "x/y/z" not in json.dumps(_document(seeded))


def test_request_without_a_token_is_401(seeded: MeshClient) -> None:
    response = _get(seeded, token="")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert set(json.loads(response.content)) == {"message"}
    assert _get(seeded, token="not-a-token").status_code == 401


def test_an_instance_with_the_management_api_off_is_refused(mesh) -> None:  # type: ignore[no-untyped-def]
    client = mesh(options={"management": False})
    assert _get(client).status_code == 403


def test_reads_are_one_query_per_kind_whatever_the_topology(seeded: MeshClient, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    with django_assert_num_queries(4):  # queues, subscriptions, stored topics, webhooks
        document = asyncapi_document(instance=seeded.instance)
    assert len(document["channels"]) == 7


def test_the_same_topology_gives_the_same_version_and_a_change_a_new_one(seeded: MeshClient) -> None:
    first = asyncapi_document(instance=seeded.instance)["info"]["version"]
    assert asyncapi_document(instance=seeded.instance)["info"]["version"] == first
    assert seeded.put_queue("a/b/c/more").status_code == 201
    assert asyncapi_document(instance=seeded.instance)["info"]["version"] != first


def _decode(key: str) -> str:
    return unquote(re.sub(r"_([0-9A-F]{2})", lambda match: f"%{match.group(1)}", key), errors="strict")


@settings(max_examples=300, derandomize=True, database=None)
@given(st.text(alphabet="aZ09-_./+*% ü", min_size=1, max_size=30))
def test_component_keys_are_valid_and_reversible(name: str) -> None:
    key = component_key(name)
    assert KEY.match(key)
    assert _decode(key) == name  # reversible, so two names never share a key


def test_component_keys_keep_names_that_a_readable_form_would_merge_apart() -> None:
    names = ["a/b", "a_b", "a_2Fb", "a-b", "a.b", "a+b", "a*b"]
    assert len({component_key(name) for name in names}) == len(names)


def test_the_endpoint_is_in_the_openapi_document_with_its_download_header() -> None:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    operation = json.loads(response.content)["paths"][URL]["get"]
    assert operation["operationId"] == "asyncapi_document"
    answer = operation["responses"]["200"]
    assert "application/json" in answer["content"] and set(answer["headers"]) == {"Content-Disposition"}
