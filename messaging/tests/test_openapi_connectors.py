"""The Open Connectors APIs in the OpenAPI document (`/api/schema/`): every routed path and
method is there, documented as the rest of the document is, and the answers the running
API gives validate against it.

The routed list comes from the URL resolver, so an endpoint added under /elements/api-v2/
without its documentation (or documentation of an endpoint that is not routed) fails here.
The answers are real: a connector instance made through the API, a provider webhook
processed into notifications whose callback failed until they were queued, a failed
provider body, a poll, a formula with an execution that ran against a local receiver; each
is then asked for through the WSGI application (as tests/test_openapi_conformance.py does)
and checked by schemathesis: documented status, content type, headers and body schema.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema
import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from meshsite import celery_app
from meshsite.testing import make_instance, mesh_client_for, wsgi_keeps_test_connection
from messaging.api import connector_events
from messaging.connectors import formulas
from messaging.models import (
    ConnectorInstance,
    ConnectorNotification,
    FormulaExecution,
    Message,
    PollRun,
    WebhookSubscription,
)
from messaging.tests.test_connector_instances import Api, _connectors
from messaging.webhooks.delivery import webhook_deliver_batch

PREFIX = "/elements/api-v2/"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# Plain Django views drf-spectacular cannot see, with the methods they answer; their
# documentation comes from a post-processing hook (messaging/api/connector_events_schema.py).
PLAIN_VIEWS: dict[Callable[..., Any], set[str]] = {connector_events.vendor_events: {"get", "post"}}
WEBHOOK_STATUSES = {"200", "401", "404", "405", "413", "503"}
MESH_ERROR = {"$ref": "#/components/schemas/MeshError"}
TOO_LARGE = {"$ref": "#/components/schemas/ConnectorTooLarge"}


@pytest.fixture(scope="module")
def document() -> dict:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


def _patterns(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def _openapi_path(route: str) -> str:
    """A Django route as the document writes it: `{name}` for each parameter, `pk` as `id`
    (drf-spectacular's SCHEMA_COERCE_PATH_PK); a regex route's optional slash as a slash."""
    path = "/" + route.lstrip("^").removesuffix("$").removesuffix("/?")
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)
    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
    if route.endswith("/?$"):
        path += "/"
    return path.replace("{pk}", "{id}")


def _methods(callback: Any) -> set[str]:
    view_class = getattr(callback, "view_class", None)
    if view_class is None:
        assert callback in PLAIN_VIEWS, f"{callback} is a plain view: document it in a hook and list it here"
        return PLAIN_VIEWS[callback]
    return {m for m in view_class.http_method_names if m not in ("options", "head") and hasattr(view_class, m)}


def routed_operations() -> set[tuple[str, str]]:
    routed = set()
    for route, callback in _patterns(get_resolver().url_patterns):
        path = _openapi_path(route)
        if path.startswith(PREFIX):
            routed |= {(path, method) for method in _methods(callback)}
    return routed


def _connector_operations(document: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in document["paths"].items():
        if path.startswith(PREFIX):
            for method, operation in item.items():
                yield path, method, operation


def test_route_conversion_writes_paths_as_the_document_does() -> None:
    assert _openapi_path("elements/api-v2/instances/<int:pk>/events/<segment:notification_id>") == \
        "/elements/api-v2/instances/{id}/events/{notification_id}"
    assert _openapi_path(r"^elements/api-v2/events/(?P<element_key>[A-Za-z0-9_.-]{1,100})/?$") == \
        "/elements/api-v2/events/{element_key}/"


def test_every_routed_connectors_path_and_method_is_documented_and_nothing_else(document: dict) -> None:
    routed = routed_operations()
    documented = {(path, method) for path, method, _ in _connector_operations(document)}
    assert len(routed) >= 28  # instances, configuration, event log, formulas, provider webhooks
    assert routed - documented == set(), "routed but not documented"
    assert documented - routed == set(), "documented but not routed"


def test_every_connectors_operation_has_a_tag_an_id_a_summary_and_its_path_parameters(document: dict) -> None:
    ids = [operation["operationId"] for _, _, operation in _connector_operations(document)]
    assert len(ids) == len(set(ids))
    for path, method, operation in _connector_operations(document):
        assert operation["tags"] and all(tag.startswith("Open Connectors: ") for tag in operation["tags"])
        assert operation["summary"], (path, method)
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (path, method)
        assert all(p.get("description") for p in operation.get("parameters", [])), (path, method)
        if method in ("post", "patch") and not path.endswith("/redeliver"):
            assert operation["requestBody"]["content"], (path, method)


def _error_schemas(operation: dict) -> dict[str, Any]:
    return {status: answer["content"]["application/json"]["schema"]
            for status, answer in operation["responses"].items() if status.startswith(("4", "5"))}


def test_connectors_errors_are_meshsites_own_shape(document: dict) -> None:
    assert set(document["components"]["schemas"]["MeshError"]["required"]) == {"detail", "code"}
    too_large = document["components"]["schemas"]["ConnectorTooLarge"]["oneOf"]
    assert too_large == [MESH_ERROR, {"$ref": "#/components/schemas/SapError"}]
    for path, method, operation in _connector_operations(document):
        errors = _error_schemas(operation)
        assert errors, (path, method)
        for status, schema in errors.items():
            assert schema == (TOO_LARGE if status == "413" else MESH_ERROR), (path, method, status)


def test_the_api_takes_an_open_connectors_token_and_provider_webhooks_none(document: dict) -> None:
    scheme = document["components"]["securitySchemes"]["openConnectorsToken"]
    assert scheme["flows"]["clientCredentials"]["tokenUrl"] == "/oauth/token"
    for path, method, operation in _connector_operations(document):
        if "{element_key}" in path:
            assert operation["security"] == [], (path, method)
            if method == "post":
                assert set(operation["responses"]) == WEBHOOK_STATUSES
        else:
            assert operation["security"] == [{"openConnectorsToken": []}], (path, method)
            assert {"401", "403", "503"} <= set(operation["responses"]), (path, method)


@pytest.mark.parametrize(("path", "maximum"), [
    ("/elements/api-v2/instances/{id}/events", 200),
    ("/elements/api-v2/formulas/instances/{instance_id}/executions", None),
])
def test_paged_lists_take_page_size_and_next_page_and_answer_the_next_pages_token(
        document: dict, path: str, maximum: int | None) -> None:
    operation = document["paths"][path]["get"]
    query = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
    assert set(query) == {"pageSize", "nextPage"}
    assert query["pageSize"]["minimum"] == 1 and query["pageSize"].get("maximum") == maximum
    assert "Elements-Next-Page-Token" in operation["responses"]["200"]["headers"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"


# --- real answers against the document ----------------------------------------------------

schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())


@dataclass
class Seeded:
    api: Api
    connector: dict[str, Any]
    notifications: list[str]
    formula: int
    formula_instance: int
    execution: int
    other: Api
    event_mesh_token: str


def _hubspot(count: int) -> list[dict[str, Any]]:
    return [{"eventId": n, "subscriptionType": "contact.creation", "objectId": 1000 + n, "portalId": 62515,
             "occurredAt": 1767261600000 + n} for n in range(count)]


def _deliver_until_queued(receiver: Any, pushes: int) -> None:
    """Deliver until the receiver has refused `pushes` pushes (delivery keeps order: the second
    notification is tried once the first is queued); the first ones ran at the commit."""
    for _ in range(pushes):
        if not receiver.statuses:
            break
        for webhook in WebhookSubscription.objects.all():
            while webhook_deliver_batch(subscription_id=webhook.pk).delivered:
                pass
        WebhookSubscription.objects.update(next_attempt_at=None)
        Message.objects.update(available_at=None)
    assert receiver.statuses == []


def _formula_with_execution(oc: Any, connector_id: int, receiver: Any) -> tuple[int, int, int]:
    step = {"name": "call", "type": "request", "properties": {"method": "POST", "url": receiver.url("/formula")}}
    formula = formulas.formula_create(service_instance=oc, name="f", steps=[step])
    bound = formulas.formula_instance_create(formula=formula, connector_instance=ConnectorInstance.objects.get(
        pk=connector_id), name="on crm")
    notification = ConnectorNotification.objects.filter(connector_instance_id=connector_id).first()
    assert notification is not None
    formulas.executions_start(notification=notification, events=[{"objectType": "contacts", "objectId": "1"}],
                              now=timezone.now())
    execution = FormulaExecution.objects.get()
    assert formulas.formula_execution_run(execution_id=execution.pk) == "succeeded"
    return formula.pk, bound.pk, execution.pk


@pytest.fixture
def seeded(db: None, settings: Any, monkeypatch: Any, fast_hashing: None, receiver: Any,
           django_capture_on_commit_callbacks: Any) -> Seeded:
    """One of everything the connectors APIs answer about, made the way production makes it."""
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.MESH_WEBHOOK_RETRY_SCHEDULE = [0.0]
    settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND = False
    settings.MESH_CONNECTOR_DELIVERY_ATTEMPTS = 2
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    oc = _connectors("oc1")
    api = Api(oc)
    configuration = {"event.notification.enabled": True, "event.vendor.type": "webhook",
                     "event.notification.callback.url": receiver.url("/callback"),
                     "event.notification.signature.key": "s3cret"}
    created = api("POST", "/elements/api-v2/instances", {
        "name": "crm", "element": {"key": "hubspot"}, "configuration": configuration, "providerAccount": "62515"})
    assert created.status_code == 201, created.content
    connector = created.json()
    events_path = connector["eventsUrl"].removeprefix("http://testserver")
    receiver.statuses = [500] * (2 * settings.MESH_CONNECTOR_DELIVERY_ATTEMPTS)  # two notifications, all refused
    with django_capture_on_commit_callbacks(execute=True):
        # 25 objects: two notifications (20 and 5), so the event log has a second page.
        for body, content_type in ((json.dumps(_hubspot(25)), "application/json"), (b"not json", "text/plain")):
            assert api.http.post(events_path, body, content_type=content_type).status_code == 200
    notifications = [str(n) for n in ConnectorNotification.objects.order_by("pk").values_list("notification_id",
                                                                                               flat=True)]
    assert len(notifications) == 2
    _deliver_until_queued(receiver, 2 * settings.MESH_CONNECTOR_DELIVERY_ATTEMPTS)
    PollRun.objects.create(connector_instance_id=connector["id"], object_type="contacts", started_at=timezone.now(),
                           succeeded=False, error="the provider answered 503", duration_ms=12.5)
    formula, formula_instance, execution = _formula_with_execution(oc, connector["id"], receiver)
    event_mesh = mesh_client_for(make_instance("em1"), "em-key")
    return Seeded(api, connector, notifications, formula, formula_instance, execution, other=Api(_connectors("oc2")),
                  event_mesh_token=event_mesh.token)


@pytest.fixture
def wsgi(seeded: Seeded) -> Iterator[Seeded]:
    """The seeded world, with the WSGI handler kept off the test's database connection."""
    with wsgi_keeps_test_connection():
        yield seeded


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema.raw_schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def undocumented_fields(value: Any, node: dict[str, Any], where: str = "") -> list[str]:
    """Fields of an answer its schema does not name (JSON Schema allows them; a client would
    never hear of them): an answer's new field must be documented with it."""
    node = _resolve(node)
    if isinstance(value, list) and "items" in node:
        return [f for i, item in enumerate(value) for f in undocumented_fields(item, node["items"], f"{where}[{i}]")]
    if not isinstance(value, dict) or "properties" not in node:
        return []  # free-form (a DictField, the notification as sent) or a scalar
    properties = node["properties"]
    return [f"{where}.{key}" for key in value if key not in properties] + [
        f for key, item in value.items() if key in properties
        for f in undocumented_fields(item, properties[key], f"{where}.{key}")]


def test_undocumented_fields_are_found() -> None:
    instance = {"$ref": "#/components/schemas/ConnectorInstance"}
    assert undocumented_fields([{"id": 1, "element": {"key": "generic", "secret": 1}, "new": 2}],
                               {"type": "array", "items": instance}) == ["[0].new", "[0].element.secret"]
    assert undocumented_fields({"configuration": {"any.key": 1}}, instance) == []


def _call(method: str, path: str, token: str | None, *, status: int, path_parameters: dict | None = None,
          query: dict | None = None, body: Any = None, header: str | None = None) -> Any:
    """One real call, checked against the document (and for `header`); returns its JSON body if any."""
    operation = schema[path][method]
    kwargs: dict[str, Any] = {"path_parameters": path_parameters or {}, "query": query or {}}
    if body is not None:
        kwargs.update(body=body, media_type="application/json")
    authorization = {"Authorization": f"Bearer {token}"} if token else {}
    response = operation.Case(**kwargs).call_and_validate(headers=authorization, checks=CHECKS)
    assert response.status_code == status, (method, path, response.status_code, response.text)
    headers = {name.lower(): value for name, value in response.headers.items()}
    assert header is None or header.lower() in headers, (method, path, headers)
    if not headers.get("content-type", [""])[0].startswith("application/json"):
        return None
    answer = response.json()
    documented = operation.definition.raw["responses"][str(status)]["content"]["application/json"]["schema"]
    assert undocumented_fields(answer, documented) == [], (method, path)
    return answer


INSTANCES = f"{PREFIX}instances"
INSTANCE = f"{PREFIX}instances/{{id}}"


def test_the_instance_apis_answers_match_the_document(wsgi: Seeded) -> None:
    token, pk = wsgi.api.token, {"id": wsgi.connector["id"]}
    listed = _call("GET", INSTANCES, token, status=200)
    assert listed[0]["configuration"]["event.notification.signature.key"] == "********"
    second = _call("POST", INSTANCES, token, status=201, body={"name": "box", "element": {"key": "dropbox"}})
    _call("POST", INSTANCES, token, status=409, body={"name": "box", "element": {"key": "dropbox"}})
    _call("POST", INSTANCES, token, status=400, body={"name": "x", "element": {"key": "nope"}})
    _call("GET", INSTANCE, token, status=200, path_parameters=pk)
    _call("PATCH", INSTANCE, token, status=200, path_parameters=pk, body={"topicPrefix": "crm"})
    _call("PATCH", INSTANCE, token, status=400, path_parameters=pk, body={"configuration": {"no.such.key": 1}})
    _call("GET", f"{INSTANCE}/configuration", token, status=200, path_parameters=pk)
    key = {**pk, "key": "event.notification.signature.key"}
    answer = _call("PATCH", f"{INSTANCE}/configuration/{{key}}", token, status=200, path_parameters=key,
                   body={"propertyValue": "n3w"})
    assert answer["propertyValue"] == "********"
    _call("PATCH", f"{INSTANCE}/configuration/{{key}}", token, status=400, path_parameters=key, body={})
    _call("DELETE", INSTANCE, token, status=204, path_parameters={"id": second["id"]})
    _call("GET", INSTANCE, token, status=404, path_parameters={"id": second["id"]})


def test_the_event_logs_answers_match_the_document(wsgi: Seeded) -> None:
    token, pk = wsgi.api.token, {"id": wsgi.connector["id"]}
    first = _call("GET", f"{INSTANCE}/events", token, status=200, path_parameters=pk, query={"pageSize": 1},
                  header="Elements-Next-Page-Token")
    assert first[0]["state"] == "queued" and first[0]["lastAttempt"]["statusCode"] == 500
    _call("GET", f"{INSTANCE}/events", token, status=400, path_parameters=pk, query={"pageSize": 201})
    one = {**pk, "notification_id": wsgi.notifications[0]}
    detail = _call("GET", f"{INSTANCE}/events/{{notification_id}}", token, status=200, path_parameters=one)
    assert len(detail["deliveryAttempts"]) == 2 and detail["notification"]["message"]["events"]
    _call("GET", f"{INSTANCE}/events/{{notification_id}}", token, status=404,
          path_parameters={**pk, "notification_id": str(uuid.uuid4())})
    queued = _call("GET", f"{INSTANCE}/events/queued", token, status=200, path_parameters=pk)
    assert sorted(q["id"] for q in queued) == sorted(wsgi.notifications)
    redeliver = f"{INSTANCE}/events/queued/redeliver"
    _call("POST", redeliver, token, status=400, path_parameters=pk, body={"ids": "all"})
    assert _call("POST", redeliver, token, status=200, path_parameters=pk,
                 body={"ids": [wsgi.notifications[0]]}) == {"redelivered": 1}
    failed = _call("GET", f"{INSTANCE}/vendor-events", token, status=200, path_parameters=pk,
                   query={"status": "failed"})
    assert [row["body"] for row in failed] == ["not json"] and failed[0]["reason"]
    _call("GET", f"{INSTANCE}/vendor-events", token, status=200, path_parameters=pk)
    _call("GET", f"{INSTANCE}/vendor-events", token, status=400, path_parameters=pk, query={"status": "lost"})
    polls = _call("GET", f"{INSTANCE}/polls", token, status=200, path_parameters=pk)
    assert polls[0]["succeeded"] is False


def test_the_formula_apis_answers_match_the_document(wsgi: Seeded) -> None:
    token = wsgi.api.token
    formula, formula_instance = {"id": wsgi.formula}, {"id": wsgi.formula, "instance_id": wsgi.formula_instance}
    forms = f"{PREFIX}formulas"
    _call("GET", forms, token, status=200)
    step = {"name": "out", "type": "publish", "properties": {"topic": "a/b/c/out"}}
    created = _call("POST", forms, token, status=201, body={"name": "g", "steps": [step]})
    _call("POST", forms, token, status=409, body={"name": "g", "steps": [step]})
    _call("POST", forms, token, status=400, body={"name": "h", "steps": [{"name": "x", "type": "loop"}]})
    _call("GET", f"{forms}/{{id}}", token, status=200, path_parameters=formula)
    _call("PATCH", f"{forms}/{{id}}", token, status=200, path_parameters=formula, body={"active": False})
    _call("GET", f"{forms}/{{id}}/instances", token, status=200, path_parameters=formula)
    bound = _call("POST", f"{forms}/{{id}}/instances", token, status=201, path_parameters={"id": created["id"]},
                  body={"name": "on crm", "element": {"id": wsgi.connector["id"]}})
    _call("GET", f"{forms}/{{id}}/instances/{{instance_id}}", token, status=200, path_parameters=formula_instance)
    executions = f"{forms}/instances/{{instance_id}}/executions"
    page = _call("GET", executions, token, status=200, path_parameters={"instance_id": wsgi.formula_instance},
                 query={"pageSize": 1})
    assert [e["status"] for e in page] == ["succeeded"]
    _call("GET", executions, token, status=400, path_parameters={"instance_id": wsgi.formula_instance},
          query={"pageSize": 0})
    execution = _call("GET", f"{forms}/instances/executions/{{execution_id}}", token, status=200,
                      path_parameters={"execution_id": wsgi.execution})
    assert execution["stepExecutions"][0]["status"] == "success"
    _call("DELETE", f"{forms}/{{id}}/instances/{{instance_id}}", token, status=204,
          path_parameters={"id": created["id"], "instance_id": bound["id"]})
    _call("DELETE", f"{forms}/{{id}}", token, status=204, path_parameters={"id": created["id"]})


def test_refusals_of_other_tenants_and_missing_tokens_match_the_document(wsgi: Seeded) -> None:
    pk = {"id": wsgi.connector["id"]}
    _call("GET", INSTANCE, wsgi.other.token, status=404, path_parameters=pk)
    _call("GET", f"{INSTANCE}/events", wsgi.other.token, status=404, path_parameters=pk)
    _call("GET", f"{PREFIX}formulas/{{id}}", wsgi.other.token, status=404, path_parameters={"id": wsgi.formula})
    _call("GET", INSTANCES, wsgi.event_mesh_token, status=403)
    _call("GET", INSTANCES, None, status=401)
    _call("GET", INSTANCES, "not-a-token", status=401)


def test_provider_webhook_answers_match_the_document(wsgi: Seeded, document: dict) -> None:
    token = wsgi.connector["eventsUrl"].rstrip("/").rsplit("/", 1)[1]
    at_instance = {"element_key": "hubspot", "token": token}
    received = _call("POST", f"{PREFIX}events/{{element_key}}/{{token}}/", None, status=200,
                     path_parameters=at_instance, body=_hubspot(1))
    assert received["status"] == "received"
    _call("POST", f"{PREFIX}events/{{element_key}}/{{token}}/", None, status=404,
          path_parameters={"element_key": "hubspot", "token": "unknown"}, body=_hubspot(1))
    _call("POST", f"{PREFIX}events/{{element_key}}/", None, status=200, path_parameters={"element_key": "hubspot"},
          body=_hubspot(1))
    _call("POST", f"{PREFIX}events/{{element_key}}/", None, status=404, path_parameters={"element_key": "nope"},
          body=_hubspot(1))
    _call("GET", f"{PREFIX}events/{{element_key}}/{{token}}/", None, status=200, path_parameters=at_instance,
          query={"challenge": "abc"})
    # Another method has no operation of its own to call through: its answer against the documented 405.
    refused = Client().put(f"{PREFIX}events/hubspot/{token}/", b"{}", content_type="application/json")
    documented = document["paths"][f"{PREFIX}events/{{element_key}}/{{token}}/"]["post"]["responses"]["405"]
    assert refused.status_code == 405 and refused["Allow"] == "GET, POST"
    assert set(documented["headers"]) == {"Allow"}
    jsonschema.validate(refused.json(), document["components"]["schemas"]["MeshError"])


# --- generated requests, with an open-connectors token ---------------------------------------

# Per operation, derandomized as in tests/test_openapi_conformance.py (which runs every operation
# with an Event Mesh token: for these, only the 403s and the provider webhooks).
MAX_EXAMPLES = 10


@pytest.fixture
def oc_token(db: None, fast_hashing: None) -> Iterator[str]:
    api = Api(_connectors("oc1"))
    with wsgi_keeps_test_connection():
        yield api.token


generated = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler()).include(path_regex=f"^{PREFIX}")
generated.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)


@generated.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_generated_requests_get_documented_answers(case: Any, oc_token: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {oc_token}"}, checks=CHECKS)
