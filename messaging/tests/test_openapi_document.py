"""The OpenAPI document's name rules are the service's own, and its shapes are the answers'.

tests/test_openapi_conformance.py checks answers against the document by generated requests;
these check what generation alone would rarely reach: that the documented patterns accept
exactly the names messaging/names.py accepts, and a few shapes a client codes against.
"""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from hypothesis import example, given, settings
from hypothesis import strategies as st

from messaging import names
from messaging.api.openapi import NAME_PATTERN, TOPIC_PATTERN_PATTERN

# Characters at the rules' edges: the allowed set's corners, dots, wildcards, a slash, outsiders.
NAMEISH = st.text(alphabet="aZ09-_./+*% ü", max_size=30)


def _accepted(validate, value: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        validate(value)
    except names.InvalidName:
        return False
    return True


@settings(max_examples=400, derandomize=True, database=None)
@given(NAMEISH)
@example("." * 3)
@example("a/.")
@example("a/../b")
@example("a" * 111 + "/" + "b" * 109)
@example("a" * 112)
@example("a" * 111 + "/" + "b" * 110)
@example("/".join(["a"] * 20))
@example("/".join(["a"] * 21))
def test_documented_name_pattern_accepts_what_the_service_accepts(name: str) -> None:
    documented = re.search(NAME_PATTERN, name) is not None and len(name) <= names.MAX_NAME_LENGTH
    assert documented == _accepted(names.validate_queue_name, name)
    assert documented == _accepted(names.validate_topic, name)


@settings(max_examples=400, derandomize=True, database=None)
@given(NAMEISH)
@example("*")
@example("a/*/b")
@example("a/+/*")
@example("+")
@example("a/**")
@example("a/..")
@example("/".join(["+"] * 20))
@example("/".join(["+"] * 21))
def test_documented_topic_pattern_accepts_what_the_service_accepts(pattern: str) -> None:
    documented = re.search(TOPIC_PATTERN_PATTERN, pattern) is not None and len(pattern) <= names.MAX_NAME_LENGTH
    assert documented == _accepted(names.validate_pattern, pattern)


@pytest.fixture(scope="module")
def document() -> dict:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


def _operation(document: dict, method: str, path: str) -> dict:
    return document["paths"][path][method]


@pytest.mark.parametrize("path", [
    "/messagingrest/v1/subscriptions",
    "/messagingrest/v1/subscriptions/{name}/deliveries",
    "/hub/rest/api/v1/management/messaging/queues/{queue}/messages",
])
def test_list_answers_are_documented_as_arrays(document: dict, path: str) -> None:
    operation = _operation(document, "get", path)
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    if "{" in path:
        limit = next(p for p in operation["parameters"] if p["name"] == "limit")
        assert limit["in"] == "query"
        assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)


def test_path_names_carry_the_naming_rules(document: dict) -> None:
    operation = _operation(document, "post", "/messagingrest/v1/queues/{queue}/messages/consumption")
    queue = next(p for p in operation["parameters"] if p["name"] == "queue")
    assert queue["schema"]["pattern"] == NAME_PATTERN
    assert queue["schema"]["maxLength"] == names.MAX_NAME_LENGTH
    assert "%2F" in queue["description"]
    schemas = [p["schema"] for item in document["paths"].values() for op in item.values()
               for p in op.get("parameters", []) if p["in"] == "path"]
    assert schemas and all(s.get("pattern") != "^[^/]+$" for s in schemas)


def test_consumption_documents_its_body_and_headers(document: dict) -> None:
    answer = _operation(document, "post", "/messagingrest/v1/queues/{queue}/messages/consumption")["responses"]["200"]
    assert "*/*" in answer["content"]
    assert set(answer["headers"]) == {"x-message-id", "x-address", "x-delivery-count"}


def test_sap_errors_are_documented_in_their_shape(document: dict) -> None:
    error = document["components"]["schemas"]["SapError"]
    assert error["required"] == ["message"]
    ref = {"$ref": "#/components/schemas/SapError"}
    # meshsite's own endpoints answer meshsite's own shape
    native = {"ws_ticket_create"}
    assert set(document["components"]["schemas"]["MeshError"]["required"]) == {"detail", "code"}
    for path, item in document["paths"].items():
        if path.startswith("/elements/api-v2/"):
            continue  # Open Connectors: meshsite's shape, checked in test_openapi_connectors.py
        for operation in item.values():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")) and operation["operationId"] not in ("oauth_token_get",
                                                                                       "oauth_token_post"):
                    schema = answer["content"]["application/json"]["schema"]
                    if operation["operationId"] in native or operation["operationId"].startswith("pv_"):
                        assert schema == {"$ref": "#/components/schemas/MeshError"}
                        continue
                    conflict = (operation["operationId"], status) == ("webhook_subscription_create", "409")
                    assert schema == ({"$ref": "#/components/schemas/WebhookConflict"} if conflict else ref)


def test_token_endpoint_is_documented_in_both_forms(document: dict) -> None:
    assert set(document["paths"]["/oauth/token"]) == {"get", "post"}
