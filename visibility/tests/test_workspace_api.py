"""The workspace JSON API (`/api/v1/pv/scenarios/{id}/instances|indicators`): answers, the
PVOperator role, the token's own instance only (cross-tenant), active versions only, and
bad filters named in the error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client as DjangoClient

from meshsite.platform.auth import forget_cached_tokens
from meshsite.platform.models import Entitlement, Service, ServiceInstance, Subaccount
from meshsite.platform.services import service_key_create
from meshsite.testing import token_for
from visibility.models import Scenario

from .test_workspace_data import SPECS, events_for, pv_fixture, pv_instance, scenario_fixture  # noqa: F401

BASE = "/api/v1/pv/scenarios/onboarding"


def bearer(instance: ServiceInstance, roles: list[str] | None, name: str = "k") -> dict[str, str]:
    new = service_key_create(instance=instance, name=name, parameters={"roles": roles} if roles else None)
    token = token_for(DjangoClient(), new.key.application.client_id, new.client_secret)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def operator(pv: ServiceInstance, fast_hashing: None) -> dict[str, str]:
    forget_cached_tokens()
    return bearer(pv, ["PVOperator"])


def get(path: str, auth: dict[str, str], **query: Any) -> tuple[int, Any]:
    response = DjangoClient().get(path, query, headers=auth)
    return response.status_code, json.loads(response.content)


def test_indicators_answer_every_tile_with_its_values(scenario: Scenario, operator: dict[str, str]) -> None:
    status, body = get(f"{BASE}/indicators", operator)
    assert status == 200
    assert [tile["id"] for tile in body] == [i["id"] for i in (scenario.active or {})["indicators"]]
    tile = body[0]
    assert tile["chart"] == "donut" and tile["dimension"] == "status"
    assert sum(v["value"] for v in tile["values"]) == sum(1 for s in SPECS if s.state == "open")
    assert [v["label"] for v in tile["values"]] == ["On Track", "At Risk", "Critical"]


def test_one_indicator(scenario: Scenario, operator: dict[str, str]) -> None:
    status, body = get(f"{BASE}/indicators/europeOpen", operator)
    count = sum(1 for s in SPECS if s.state == "open" and s.attributes.get("COUNTRY") in ("DE", "FR"))
    assert (status, body["values"]) == (200, [{"label": "Open in DE or FR", "value": count}])
    assert get(f"{BASE}/indicators/nope", operator)[0] == 404


def test_instances_page_through_with_the_cursor(scenario: Scenario, operator: dict[str, str]) -> None:
    seen: list[str] = []
    query: dict[str, Any] = {"state": "open", "attr.COUNTRY": "UK", "limit": 20}
    while True:
        status, body = get(f"{BASE}/instances", operator, **query)
        assert status == 200
        seen += [row["label"] for row in body["instances"]]
        assert all(row["state"] == "open" and row["attributes"]["COUNTRY"] == "UK" for row in body["instances"])
        if not body["nextCursor"]:
            break
        query["cursor"] = body["nextCursor"]
    expected = [s for s in sorted(SPECS, key=lambda s: s.start, reverse=True)
                if s.state == "open" and s.attributes.get("COUNTRY") == "UK"]
    assert seen == [str(s.n) for s in expected] and len(seen) > 20


def test_instance_with_its_timeline(scenario: Scenario, operator: dict[str, str]) -> None:
    instance = events_for(scenario, 1)
    status, body = get(f"{BASE}/instances/{instance.pk}", operator)
    assert status == 200
    assert (body["label"], body["status"], body["state"]) == ("1", "critical", "open")
    assert [e["name"] for e in body["events"]] == ["Application created", "Interview held", "Added to payroll",
                                                   "Candidate hired", "UNKNOWN"]
    assert body["events"][2]["participant"] == "Payroll" and body["events"][2]["processInstanceId"] == "P1"
    assert [p["id"] for p in body["phases"]] == ["screening", "interview"]
    assert get(f"{BASE}/instances/999999999", operator)[0] == 404


@pytest.mark.parametrize(("query", "parameter"), [
    ({"state": "done"}, "state"), ({"status": "late"}, "status"), ({"phase": "nope"}, "phase"),
    ({"attr.AMOUNT": "lots"}, "attr.AMOUNT"), ({"attr.NOPE": "x"}, "attr.NOPE"), ({"cursor": "zz"}, "cursor"),
    ({"limit": "many"}, "limit"), ({"limit": "1000"}, "limit"),
])
def test_bad_filter_is_400_naming_the_parameter(scenario: Scenario, operator: dict[str, str],
                                                query: dict[str, str], parameter: str) -> None:
    status, body = get(f"{BASE}/instances", operator, **query)
    assert status == 400
    assert body["code"] == "invalid" and body["extra"] == {"parameter": parameter}
    assert parameter in body["detail"]


def test_key_without_pv_operator_is_403(scenario: Scenario, pv: ServiceInstance, fast_hashing: None) -> None:
    sender = bearer(pv, None, name="sender")
    for path in (f"{BASE}/instances", f"{BASE}/indicators", f"{BASE}/indicators/openInstances"):
        status, body = get(path, sender)
        assert (status, body["code"]) == (403, "permission_denied")
        assert "PVOperator" in body["detail"]


def test_no_token_is_401(scenario: Scenario) -> None:
    response = DjangoClient().get(f"{BASE}/indicators")
    assert response.status_code == 401


def test_another_instances_scenario_is_404(scenario: Scenario, fast_hashing: None) -> None:
    elsewhere = Subaccount.objects.create(name="elsewhere")
    Entitlement.objects.create(subaccount=elsewhere, service=Service.PROCESS_VISIBILITY, plan="standard", quota=1)
    outsider = bearer(pv_instance(elsewhere, name="pv-else"), ["PVOperator"], name="outsider")
    instance = scenario.instances.first()
    assert instance is not None
    for path in (f"{BASE}/instances", f"{BASE}/instances/{instance.pk}", f"{BASE}/indicators",
                 f"{BASE}/indicators/openInstances"):
        status, body = get(path, outsider)
        assert (status, body["code"]) == (404, "not_found"), path


def test_inactive_scenario_is_404(scenario: Scenario, operator: dict[str, str]) -> None:
    Scenario.objects.filter(pk=scenario.pk).update(active=None, draft=scenario.active)
    status, body = get(f"{BASE}/indicators", operator)
    assert status == 404 and "not active" in body["detail"]
    assert get("/api/v1/pv/scenarios/nope/instances", operator)[0] == 404
