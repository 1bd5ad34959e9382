"""Event-triggered formulas: definitions checked naming the field, one execution per event
object, steps run against a real local receiver and a real Event Mesh topic, retries on the
schedule, the SSRF guard, the lease, and the API with its cross-tenant cases."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from meshsite.errors import Invalid
from meshsite.platform.models import ServiceInstance
from meshsite.testing import make_instance, mesh_client_for
from messaging.connectors import formulas
from messaging.connectors.instances import connector_instance_create
from messaging.models import (
    ConnectorInstance,
    ConnectorNotification,
    Formula,
    FormulaExecution,
    FormulaInstance,
    FormulaStep,
    Message,
    Queue,
)
from messaging.tests.test_connector_instances import Api, _connectors

API = "/elements/api-v2/formulas"


@pytest.fixture
def oc(db, settings) -> ServiceInstance:
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.MESH_CONNECTOR_FORMULA_RETRY_SCHEDULE = [5.0]
    settings.MESH_CONNECTOR_FORMULA_ATTEMPTS = 3
    return _connectors("oc1")


def _connector(oc: ServiceInstance, event_mesh: ServiceInstance | None = None) -> ConnectorInstance:
    return connector_instance_create(service_instance=oc, name="box", element_key="generic", event_mesh=event_mesh)


def _request(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "call", "type": "request",
            "properties": {"method": "POST", "url": url, "body": {"id": "${trigger.event.objectId}"}, **extra}}


def _bind(oc: ServiceInstance, connector: ConnectorInstance, steps: list[dict[str, Any]]) -> FormulaInstance:
    formula = formulas.formula_create(service_instance=oc, name="f", steps=steps)
    return formulas.formula_instance_create(formula=formula, connector_instance=connector, name="on box")


def _notify(connector: ConnectorInstance, count: int) -> list[FormulaExecution]:
    now = timezone.now()
    row = ConnectorNotification.objects.create(connector_instance=connector, notification_id=uuid.uuid4(),
                                               source="webhook", created_at=now, body=b"{}", events_count=count)
    events = [{"objectType": "files", "objectId": f"id:{n}", "eventType": "CREATED"} for n in range(count)]
    formulas.executions_start(notification=row, events=events, now=now)
    return list(FormulaExecution.objects.order_by("pk"))


def _run(execution: FormulaExecution, at: Any = None) -> str:
    return formulas.formula_execution_run(execution_id=execution.pk, now=at)


def _when_due(execution: FormulaExecution) -> Any:
    """Just after the execution's next attempt is due."""
    execution.refresh_from_db()
    assert execution.next_attempt_at is not None
    return execution.next_attempt_at + timedelta(seconds=1)


def test_a_notification_of_20_events_runs_20_executions_each_with_its_own_object(oc, receiver):
    _bind(oc, _connector(oc), [_request(receiver.url())])
    executions = _notify(_connector_get(), 20)
    assert len(executions) == 20
    assert {e.trigger["event"]["objectId"] for e in executions} == {f"id:{n}" for n in range(20)}
    assert [_run(e) for e in executions] == ["succeeded"] * 20
    assert sorted(json.loads(p["body"])["id"] for p in receiver.pushes) == sorted(f"id:{n}" for n in range(20))
    step = FormulaStep.objects.filter(execution=executions[0]).get()
    assert step.succeeded and step.result["status"] == 200 and "receiver says 200" in step.result["body"]
    assert FormulaExecution.objects.filter(status="succeeded", finished_at__isnull=False).count() == 20


def _connector_get() -> ConnectorInstance:
    return ConnectorInstance.objects.get()


def test_executions_start_wakes_each_execution_after_commit(oc, capture, monkeypatch):
    woken: list[int] = []
    monkeypatch.setattr(formulas.services.dispatch, "formula_execute", woken.append)
    _bind(oc, _connector(oc), [_request("https://example.com/x")])
    with capture(execute=True):
        executions = _notify(_connector_get(), 3)
        assert woken == []  # not before the commit
    assert woken == [e.pk for e in executions]


def test_a_publish_step_lands_in_a_queue_subscribed_on_the_bound_event_mesh(oc):
    mesh = make_instance("em1", "a/b/c")
    client = mesh_client_for(mesh)
    assert client.put_queue("a/b/c/q").status_code == 201
    assert client.subscribe("a/b/c/q", "a/b/c/oc/*").status_code == 201
    step = {"name": "pub", "type": "publish", "properties": {"topic": "a/b/c/oc/${trigger.event.objectType}"}}
    _bind(oc, _connector(oc, mesh), [step])
    [execution] = _notify(_connector_get(), 1)
    assert _run(execution) == "succeeded"
    message = Message.objects.get(queue=Queue.objects.get(name="a/b/c/q"))
    assert json.loads(bytes(message.payload))["event"]["objectId"] == "id:0"
    assert FormulaStep.objects.get().result == {"topic": "a/b/c/oc/files", "queues": 1}


def test_a_publish_step_without_a_bound_event_mesh_fails_with_the_reason(oc):
    _bind(oc, _connector(oc), [{"name": "pub", "type": "publish", "properties": {"topic": "a/b/c/x"}}])
    [execution] = _notify(_connector_get(), 1)
    assert _run(execution) == "retrying"
    assert "no Event Mesh instance" in FormulaStep.objects.get().error


def test_a_500_retries_later_then_fails_after_the_last_attempt(oc, receiver):
    receiver.statuses = [500, 500, 500]
    _bind(oc, _connector(oc), [_request(receiver.url())])
    [execution] = _notify(_connector_get(), 1)
    before = timezone.now()
    assert _run(execution) == "retrying"
    assert _when_due(execution) > before + timedelta(seconds=4)  # 5 s, jittered by at most 20%
    assert execution.attempts == 1
    step = FormulaStep.objects.get()
    assert not step.succeeded and step.result["status"] == 500 and step.attempt == 1
    assert _run(execution) == "skipped"  # not due yet
    assert _run(execution, _when_due(execution)) == "retrying"
    assert _run(execution, _when_due(execution)) == "failed"
    execution.refresh_from_db()
    assert execution.status == "failed" and execution.attempts == 3 and "500" in execution.error
    assert execution.finished_at and len(receiver.pushes) == 3


def test_a_retry_succeeds_once_the_receiver_is_back(oc, receiver):
    receiver.statuses = [503]
    _bind(oc, _connector(oc), [_request(receiver.url())])
    [execution] = _notify(_connector_get(), 1)
    assert _run(execution) == "retrying"
    assert _run(execution, _when_due(execution)) == "succeeded"
    assert list(FormulaStep.objects.order_by("attempt").values_list("attempt", "succeeded")) == [(1, False), (2, True)]


def test_a_later_step_refers_to_an_earlier_steps_result(oc, receiver):
    second = {"name": "echo", "type": "request",
              "properties": {"method": "POST", "url": receiver.url("/second"), "body": "${steps.call.status}"}}
    _bind(oc, _connector(oc), [_request(receiver.url()), second])
    [execution] = _notify(_connector_get(), 1)
    assert _run(execution) == "succeeded"
    assert receiver.pushes[1]["body"] == b"200"


def test_a_request_to_a_blocked_address_fails_the_step_without_a_request(oc, receiver, settings):
    # Saved while loopback was allowed; refused by the guard when the step runs.
    _bind(oc, _connector(oc), [_request(receiver.url())])
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = []
    [execution] = _notify(_connector_get(), 1)
    assert _run(execution) == "retrying"
    step = FormulaStep.objects.get()
    assert not step.succeeded and step.result == {"reason": "blocked address"} and "public addresses" in step.error
    assert receiver.pushes == []


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://10.0.0.1/x", "http://169.254.169.254/latest"])
def test_a_literal_private_ip_is_refused_when_saved(oc, settings, url):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = []
    with pytest.raises(Invalid, match=r"steps\[0\]\.properties\.url"):
        formulas.formula_create(service_instance=oc, name="f", steps=[_request(url)])
    assert not Formula.objects.exists()


def test_executions_due_start_wakes_only_due_and_unleased_executions(oc, monkeypatch):
    woken: list[int] = []
    monkeypatch.setattr(formulas.services.dispatch, "formula_execute", woken.append)
    _bind(oc, _connector(oc), [_request("https://example.com/x")])
    due, later, leased, done = _notify(_connector_get(), 4)
    now = timezone.now()
    FormulaExecution.objects.filter(pk=later.pk).update(status="retrying", next_attempt_at=now + timedelta(minutes=1))
    FormulaExecution.objects.filter(pk=leased.pk).update(lease_until=now + timedelta(minutes=1))
    FormulaExecution.objects.filter(pk=done.pk).update(status="succeeded")
    assert formulas.executions_due_start(now) == 1 and woken == [due.pk]


def test_a_leased_execution_is_not_run_by_a_second_worker(oc, receiver):
    _bind(oc, _connector(oc), [_request(receiver.url())])
    [execution] = _notify(_connector_get(), 1)
    FormulaExecution.objects.filter(pk=execution.pk).update(lease_until=timezone.now() + timedelta(minutes=1))
    assert _run(execution) == "skipped" and receiver.pushes == []


def test_a_run_of_an_unknown_execution_does_not_raise(oc):
    assert formulas.formula_execution_run(execution_id=999_999) == "skipped"


# --- the API --------------------------------------------------------------------------------


@pytest.fixture
def api(oc) -> Api:
    return Api(oc)


def _formula_body(**extra: Any) -> dict[str, Any]:
    return {"name": "f", "steps": [_request("https://example.com/hook")], **extra}


BAD = [
    ({"steps": []}, "steps"),
    ({"steps": [_request("https://example.com")] * 2}, "steps[1].name"),
    ({"steps": [{**_request("https://e.com"), "name": f"s{n}"} for n in range(21)]}, "steps"),
    ({"steps": [{"name": "a", "type": "loop", "properties": {}}]}, "steps[0].type"),
    ({"steps": [_request("ftp://example.com/x")]}, "steps[0].properties.url"),
    ({"steps": [_request("https://example.com", method="TRACE")]}, "steps[0].properties.method"),
    ({"steps": [_request("https://example.com", headers={"X": 1})]}, "steps[0].properties.headers"),
    ({"steps": [_request("https://example.com", query="x")]}, "steps[0].properties.query"),
    ({"steps": [{"name": "p", "type": "publish", "properties": {"topic": "a/#/b"}}]}, "steps[0].properties.topic"),
    ({"name": ""}, "name"),
    ({"active": "yes"}, "active"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_a_bad_definition_is_refused_naming_the_field_and_nothing_is_stored(api, change, field):
    answer = api("POST", API, _formula_body(**change))
    assert answer.status_code == 400, answer.content
    assert set(answer.json()) == {"detail", "code", "extra"} and answer.json()["detail"].startswith(field)
    assert not Formula.objects.exists()


def test_a_formula_is_created_listed_read_patched_and_deleted(api):
    created = api("POST", API, _formula_body(description="d"))
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    assert created.json()["steps"][0]["properties"]["url"] == "https://example.com/hook"
    assert [f["id"] for f in api("GET", API).json()] == [pk]
    assert api("GET", f"{API}/{pk}").json()["description"] == "d"
    patched = api("PATCH", f"{API}/{pk}", {"name": "g", "active": False})
    assert patched.status_code == 200 and patched.json()["name"] == "g" and patched.json()["active"] is False
    assert api("PATCH", f"{API}/{pk}", {"steps": []}).status_code == 400
    assert Formula.objects.get().steps[0]["name"] == "call"
    assert api("POST", API, _formula_body(name="g")).status_code == 409
    assert api("DELETE", f"{API}/{pk}").status_code == 204
    assert api("GET", f"{API}/{pk}").status_code == 404


def _instance(api: Api, oc: ServiceInstance) -> tuple[int, int]:
    formula = api("POST", API, _formula_body()).json()["id"]
    connector = _connector(oc)
    answer = api("POST", f"{API}/{formula}/instances", {"name": "on box", "element": {"id": connector.pk}})
    assert answer.status_code == 201, answer.content
    return formula, answer.json()["id"]


def test_formula_instances_and_their_executions_through_the_api(api, oc, receiver):
    formula, instance = _instance(api, oc)
    assert api("GET", f"{API}/{formula}/instances").json()[0]["element"]["id"] == _connector_get().pk
    assert api("GET", f"{API}/{formula}/instances/{instance}").json()["name"] == "on box"
    Formula.objects.update(steps=[_request(receiver.url())])
    executions = _notify(_connector_get(), 3)
    _run(executions[0])
    page = api("GET", f"{API}/instances/{instance}/executions?pageSize=2")
    assert [e["id"] for e in page.json()] == [executions[2].pk, executions[1].pk]
    token = page["Elements-Next-Page-Token"]
    rest = api("GET", f"{API}/instances/{instance}/executions?pageSize=2&nextPage={token}").json()
    assert [e["id"] for e in rest] == [executions[0].pk]
    detail = api("GET", f"{API}/instances/executions/{executions[0].pk}").json()
    assert detail["status"] == "succeeded" and detail["trigger"]["event"]["objectId"] == "id:0"
    assert detail["stepExecutions"][0]["result"]["status"] == 200 and detail["stepExecutions"][0]["status"] == "success"
    assert api("DELETE", f"{API}/{formula}/instances/{instance}").status_code == 204
    assert not FormulaInstance.objects.exists()


def test_a_connector_instance_of_another_tenant_is_not_bound(api, oc):
    formula = api("POST", API, _formula_body()).json()["id"]
    elsewhere = _connector(_connectors("oc2"))
    answer = api("POST", f"{API}/{formula}/instances", {"name": "x", "element": {"id": elsewhere.pk}})
    assert answer.status_code == 404 and not FormulaInstance.objects.exists()


def _paths(formula: int, instance: int, execution: int) -> list[tuple[str, str]]:
    return [("GET", API), ("POST", API), ("GET", f"{API}/{formula}"), ("PATCH", f"{API}/{formula}"),
            ("DELETE", f"{API}/{formula}"), ("GET", f"{API}/{formula}/instances"),
            ("POST", f"{API}/{formula}/instances"), ("GET", f"{API}/{formula}/instances/{instance}"),
            ("DELETE", f"{API}/{formula}/instances/{instance}"), ("GET", f"{API}/instances/{instance}/executions"),
            ("GET", f"{API}/instances/executions/{execution}")]


def test_another_connectors_instance_sees_404_and_an_event_mesh_key_403_on_every_endpoint(api, oc):
    formula, instance = _instance(api, oc)
    [execution] = _notify(_connector_get(), 1)
    other, mesh = Api(_connectors("oc2"), "other"), Api(make_instance(), "em")
    for method, path in _paths(formula, instance, execution.pk):
        body = {"name": "x", "element": {"id": _connector_get().pk}} if method in ("POST", "PATCH") else None
        assert mesh(method, path, body).status_code == 403, (method, path)
        if path == API:
            continue  # the list and create are the caller's own
        answer = other(method, path, body)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", (method, path, answer.content)
    assert other("GET", API).json() == []
    assert Formula.objects.count() == 1 and FormulaInstance.objects.count() == 1


def test_a_reference_to_nothing_fails_the_step_naming_it_without_a_request(oc, receiver):
    _bind(oc, _connector(oc), [_request(receiver.url(), body={"id": "${trigger.event.missing}"})])
    [execution] = _notify(_connector_get(), 1)
    assert _run(execution) == "retrying"
    assert "${trigger.event.missing}" in FormulaStep.objects.get().error and receiver.pushes == []


def test_an_inactive_formula_instance_starts_no_executions(oc):
    instance = _bind(oc, _connector(oc), [_request("https://example.com/x")])
    FormulaInstance.objects.filter(pk=instance.pk).update(active=False)
    assert _notify(_connector_get(), 5) == []
