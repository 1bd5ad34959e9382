"""The OpenAPI document (`/api/schema/`) against the answers the API really gives.

schemathesis reads the document from the application, generates requests for every operation
(valid ones and, for the 4xx paths, invalid ones) and checks each answer: no server error, a
status code the document lists, the documented content type, headers and body schema. The
application is called in-process through its WSGI entry point (werkzeug passes the raw,
still percent-encoded path as REQUEST_URI, which the raw-path routing of names needs), with
a bearer token that the real /oauth/token issued for a real service key.

Bounded and deterministic for CI: MAX_EXAMPLES generated cases per operation, derandomized
(the same cases every run, no example database), which keeps the whole file at about a
minute on the CI machine. The seeded queue, subscription, message and webhook carry the
names the document gives as examples, so the explicit-examples phase reaches the 200s.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from meshsite.testing import REST, MeshClient, wsgi_keeps_test_connection

# Per operation; 27 operations. Raising it finds more, at ~0.1 s a case on the CI machine.
MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
QUEUE = "a/b/c/orders"
PATTERN = "a/b/c/orders/*"
WEBHOOK = "orders-hook"


@pytest.fixture
def api(seeded: MeshClient) -> Iterator[MeshClient]:
    """The seeded client, with the WSGI handler kept off the test's database connection (after
    the seeding, which used Django's test client)."""
    with wsgi_keeps_test_connection():
        yield seeded


@pytest.fixture
def seeded(mesh: Callable[..., MeshClient], settings: Any) -> MeshClient:
    """A key's client, with one of each object the document's examples name."""
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    client = mesh()
    assert client.put_queue(QUEUE).status_code == 201
    assert client.subscribe(QUEUE, PATTERN).status_code == 201
    assert client.publish("queues", QUEUE, b'{"id": 1}', content_type="application/json").status_code == 204
    hook = {"name": WEBHOOK, "address": f"queue:{QUEUE}", "qos": 1,
            "pushConfig": {"type": "webhook", "endpoint": "http://127.0.0.1:9/hook", "exemptHandshake": True}}
    created = client.call("POST", f"{REST}/subscriptions", json.dumps(hook), content_type="application/json")
    assert created.status_code == 201, created.content
    return client


# Loaded at collection (the document needs no database), so that each operation is a test of
# its own; schemathesis's fixture-based lazy loading does not run under this pytest.
schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_document(case: Any, api: MeshClient) -> None:
    if case.path == "/oauth/token":
        basic = base64.b64encode(f"{api.client_id}:{api.client_secret}".encode()).decode()
        authorization = f"Basic {basic}"
    else:
        authorization = f"Bearer {api.token}"
    case.call_and_validate(headers={"Authorization": authorization}, checks=CHECKS)
