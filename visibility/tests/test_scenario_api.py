"""The scenarios and processing API (`/api/v1/pv/`) with tokens from the real token endpoint:
CRUD, the draft beside the active version, activation blocked with its problems by path,
the roles each operation needs, another instance's scenarios are 404, malformed bodies are
400 in meshsite's error format, process now and clear-and-rebuild answer their runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from meshsite.platform.auth import forget_cached_tokens
from meshsite.platform.models import ServiceInstance, Subaccount
from meshsite.platform.services import entitlement_put, instance_create, service_key_create
from meshsite.testing import make_instance, token_for
from visibility.buffer import buffer_add
from visibility.models import Event, ProcessInstance, Scenario

BASE = "/api/v1/pv/scenarios"
ALL = ["PVDeveloper", "PVAdmin"]
READY = {
    "name": "Onboarding",
    "participants": [{"processDefinitionId": "hire", "name": "Hiring",
                      "events": [{"eventType": "APPLIED", "name": "Applied"},
                                 {"eventType": "HIRED", "name": "Hired"}]}],
    "state": {"completingEvents": [{"participant": "hire", "eventType": "HIRED"}]},
    "status": {"targetDuration": {"value": 5, "unit": "days"}, "threshold": 80},
    "indicators": [],
}


class Api:
    def __init__(self, instance: ServiceInstance, token: str) -> None:
        self.instance, self.token, self.http = instance, token, Client()

    def __call__(self, method: str, path: str = "", body: Any = None, *, raw: str | None = None,
                 token: str | None = None) -> Any:
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        bearer = self.token if token is None else token
        kwargs: dict[str, Any] = {"content_type": "application/json"}
        if bearer:
            kwargs["HTTP_AUTHORIZATION"] = f"Bearer {bearer}"
        if data is not None:
            kwargs["data"] = data
        return self.http.generic(method, BASE + path, **kwargs)


def _token(instance: ServiceInstance, name: str, roles: list[str] | None) -> str:
    new = service_key_create(instance=instance, name=name, parameters={"roles": roles} if roles else None)
    return token_for(Client(), new.key.application.client_id, new.client_secret)


@pytest.fixture
def api(subaccount: Subaccount, fast_hashing: None) -> Callable[..., Api]:
    """`api(roles=[...], name="pv1")`: a client of a new key of the PV instance `name`."""
    forget_cached_tokens()
    entitlement_put(subaccount=subaccount, service="process-visibility", plan="standard", quota=5)
    instances: dict[str, ServiceInstance] = {}
    count = iter(range(100))

    def factory(roles: list[str] | None = None, name: str = "pv1") -> Api:
        if name not in instances:
            instances[name] = instance_create(subaccount=subaccount, service="process-visibility",
                                              plan="standard", name=name)
        return Api(instances[name], _token(instances[name], f"key{next(count)}", roles or ALL))

    return factory


def events(instance: ServiceInstance, *specs: tuple[str, str, int]) -> None:
    start = timezone.now() - timedelta(hours=10)
    for pid, event_type, hour in specs:
        stored = Event.objects.create(instance=instance, definition_id="hire", process_instance_id=pid,
                             event_type=event_type, timestamp=start + timedelta(hours=hour), context={},
                             received_at=timezone.now())
        buffer_add(instance_id=stored.instance_id, event_ids=[stored.pk])


def body(answer: Any) -> Any:
    return json.loads(answer.content)


def test_a_scenario_is_created_edited_activated_and_deleted(api):
    dev = api()
    created = dev("POST", "", {"id": "onboard", "name": "Onboarding"})
    assert created.status_code == 201, created.content
    scenario = body(created)
    assert (scenario["id"], scenario["state"], scenario["version"], scenario["active"]) == (
        "onboard", "draft", 0, None)
    assert scenario["draft"]["indicators"] and scenario["problems"]
    assert [s["id"] for s in body(dev("GET"))] == ["onboard"]
    saved = dev("PUT", "/onboard", READY)
    assert saved.status_code == 200 and body(saved)["draft"] == READY and body(saved)["problems"] == []
    activated = dev("POST", "/onboard/activate")
    assert activated.status_code == 200, activated.content
    assert (body(activated)["state"], body(activated)["version"], body(activated)["draft"]) == ("active", 1, None)
    assert dev("DELETE", "/onboard").status_code == 204
    assert dev("GET", "/onboard").status_code == 404
    assert dev("DELETE", "/onboard").status_code == 404


def test_editing_an_active_scenario_makes_a_draft_and_get_shows_the_active_unchanged(api):
    dev = api()
    dev("POST", "", {"id": "onboard", "definition": READY})
    dev("POST", "/onboard/activate")
    edited = dev("PUT", "/onboard", {**READY, "name": "Renamed", "participants": []})
    assert edited.status_code == 200
    shown = body(dev("GET", "/onboard"))
    assert shown["state"] == "active-with-draft" and shown["version"] == 1
    assert shown["active"] == READY and shown["draft"]["name"] == "Renamed"
    assert body(dev("GET", "/onboard/problems"))["problems"][0]["path"] == "participants"
    blocked = dev("POST", "/onboard/activate")
    assert blocked.status_code == 400 and body(dev("GET", "/onboard"))["active"] == READY
    discarded = dev("POST", "/onboard/discard")
    assert discarded.status_code == 200 and body(discarded)["state"] == "active"
    assert body(discarded)["name"] == "Onboarding"
    deactivated = dev("POST", "/onboard/deactivate")
    assert body(deactivated)["state"] == "draft" and body(deactivated)["draft"] == READY
    assert dev("POST", "/onboard/deactivate").status_code == 409


def test_activation_blocked_lists_each_problem_by_path(api):
    dev = api()
    dev("POST", "", {"id": "onboard", "name": "Onboarding"})
    blocked = dev("POST", "/onboard/activate")
    assert blocked.status_code == 400
    error = body(blocked)
    assert error["code"] == "invalid" and "cannot be activated" in error["detail"]
    paths = {problem["path"] for problem in error["extra"]["problems"]}
    assert {"participants", "state.completingEvents"} <= paths
    assert Scenario.objects.get().active is None


def test_each_operation_needs_its_role(api):
    sender = api(["PVEventSender"])
    dev = api(["PVDeveloper"])
    admin = api(["PVAdmin"])
    dev("POST", "", {"id": "onboard", "definition": READY})
    for method, path in (("GET", ""), ("POST", ""), ("GET", "/onboard"), ("PUT", "/onboard"),
                         ("POST", "/onboard/activate"), ("GET", "/onboard/problems")):
        refused = sender(method, path, {})
        assert refused.status_code == 403 and "PVDeveloper" in body(refused)["detail"], (method, path)
        assert admin(method, path, {}).status_code == 403
    for method, path in (("GET", "/onboard/runs"), ("POST", "/onboard/process"), ("POST", "/onboard/clear")):
        refused = dev(method, path)
        assert refused.status_code == 403 and "PVAdmin" in body(refused)["detail"], (method, path)
    assert admin("GET", "/onboard/runs").status_code == 200


def test_tokens_of_other_services_and_no_token_are_refused(api, subaccount):
    dev = api()
    mesh = make_instance("emname", "a/b/c")
    new = service_key_create(instance=mesh, name="k")
    other = token_for(Client(), new.key.application.client_id, new.client_secret)
    refused = dev("GET", token=other)
    assert refused.status_code == 403 and body(refused)["code"] == "permission_denied"
    anonymous = dev("GET", token="")
    assert anonymous.status_code == 401 and body(anonymous)["code"] == "not_authenticated"
    assert dev("GET", token="not-a-token").status_code == 401


def test_another_instances_token_never_sees_or_touches_a_scenario(api):
    mine, theirs = api(name="pv1"), api(name="pv2")
    mine("POST", "", {"id": "onboard", "definition": READY})
    assert body(theirs("GET")) == []
    for method, path in (("GET", "/onboard"), ("PUT", "/onboard"), ("DELETE", "/onboard"),
                         ("POST", "/onboard/activate"), ("POST", "/onboard/deactivate"),
                         ("GET", "/onboard/problems"), ("GET", "/onboard/runs"), ("POST", "/onboard/process"),
                         ("POST", "/onboard/clear")):
        answer = theirs(method, path, READY if method == "PUT" else None)
        assert answer.status_code == 404 and body(answer)["code"] == "not_found", (method, path)
    assert body(mine("GET", "/onboard"))["draft"] == READY
    # the same id in the other instance is another scenario
    assert theirs("POST", "", {"id": "onboard", "name": "Theirs"}).status_code == 201
    assert Scenario.objects.filter(scenario_id="onboard").count() == 2


@pytest.mark.parametrize(("method", "path", "raw", "words"), [
    ("POST", "", "{not json", "JSON parse error"),
    ("PUT", "/onboard", '{"name": ', "JSON parse error"),
    ("PUT", "/onboard", "[1, 2]", "JSON object"),
    ("PUT", "/onboard", "[" * 100 + "]" * 100, "nesting"),
    ("POST", "", '{"name": "x"}', "id"),
    ("POST", "", '{"id": "bad id", "name": "x"}', "scenario id"),
    ("POST", "", '{"id": "x"}', "name"),
    ("POST", "", '{"id": "x", "definition": 5}', "name"),
    ("POST", "", '"onboard"', "id"),
    ("PUT", "/onboard", "", "JSON object"),
])
def test_malformed_bodies_are_400_in_meshsites_format(api, method, path, raw, words):
    dev = api()
    dev("POST", "", {"id": "onboard", "name": "Onboarding"})
    answer = dev(method, path, raw=raw)
    assert answer.status_code == 400, answer.content
    error = body(answer)
    assert set(error) == {"detail", "code", "extra"} and words in error["detail"]


def test_a_duplicate_id_is_409_and_an_oversized_definition_400(api):
    dev = api()
    dev("POST", "", {"id": "onboard", "name": "Onboarding"})
    assert dev("POST", "", {"id": "onboard", "name": "Again"}).status_code == 409
    huge = dev("PUT", "/onboard", {**READY, "namespace": "x" * 300_000})
    assert huge.status_code in (400, 413) and body(huge)["code"] in ("invalid", "too_large")


@pytest.mark.parametrize("definition", [
    {"participants": 1}, {"indicators": [{"dimension": []}]}, {"context": [{"id": ["x"]}]},
    {"status": {"targetDuration": {"value": 1, "unit": {}}}}, {"indicators": [{"filters": [{"attribute": {}}]}]},
])
def test_a_definition_of_the_wrong_shape_is_a_draft_with_problems(api, definition):
    dev = api()
    dev("POST", "", {"id": "odd", "name": "Odd"})
    saved = dev("PUT", "/odd", definition)
    assert saved.status_code == 200 and body(saved)["problems"]
    assert dev("POST", "/odd/activate").status_code == 400


def test_process_now_and_clear_answer_their_runs(api):
    client = api()
    client("POST", "", {"id": "onboard", "definition": READY})
    assert client("POST", "/onboard/process").status_code == 409  # a draft is not processed
    assert client("POST", "/onboard/clear").status_code == 409
    client("POST", "/onboard/activate")
    [rebuild] = body(client("POST", "/onboard/process"))["runs"]  # the activation's rebuild, no events yet
    assert rebuild["trigger"] == "rebuild" and rebuild["status"] == "succeeded"
    events(client.instance, ("p1", "APPLIED", 0), ("p1", "HIRED", 2), ("p2", "APPLIED", 1))
    processed = client("POST", "/onboard/process")
    assert processed.status_code == 200
    [run] = body(processed)["runs"]
    assert (run["trigger"], run["eventsProcessed"], run["instancesCreated"], run["eventsInBuffer"]) == (
        "manual", 3, 2, 0)
    keys = sorted(ProcessInstance.objects.values_list("key", "state"))
    assert len(keys) == 2
    cleared = client("POST", "/onboard/clear")
    assert cleared.status_code == 200
    [again] = body(cleared)["runs"]
    assert (again["trigger"], again["eventsProcessed"], again["instancesCreated"]) == ("rebuild", 3, 2)
    assert sorted(ProcessInstance.objects.values_list("key", "state")) == keys
    runs = body(client("GET", "/onboard/runs"))["runs"]
    assert [r["id"] for r in runs] == [again["id"], run["id"], rebuild["id"]]
    assert body(client("GET", "/onboard"))["rebuildPending"] is False


def test_the_openapi_document_lists_the_scenario_operations(db):
    document = Client().get("/api/schema/?format=json")
    paths = json.loads(document.content)["paths"]
    assert {"/api/v1/pv/scenarios", "/api/v1/pv/scenarios/{scenario_id}/activate",
            "/api/v1/pv/scenarios/{scenario_id}/clear"} <= set(paths)
    assert "400" in paths["/api/v1/pv/scenarios/{scenario_id}/activate"]["post"]["responses"]


@pytest.mark.parametrize("segment", ["%00", "bad%20id", "%C2%84", "x" * 101])
def test_an_id_that_is_no_slug_is_404_in_meshsites_format(api, segment):
    answer = api()("GET", f"/{segment}")
    assert answer.status_code == 404 and body(answer)["code"] == "not_found"


def test_a_definition_naming_no_indicators_gets_the_default_ones(api):
    dev = api()
    definition = {key: value for key, value in READY.items() if key != "indicators"}
    created = dev("POST", "", {"id": "onboard", "name": "Onboarding", "definition": definition})
    assert created.status_code == 201, created.content
    assert [i["id"] for i in body(created)["draft"]["indicators"]] == [
        "openInstances", "completedByStatus", "cycleTime", "stepCycleTime"]
