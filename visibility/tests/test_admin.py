"""Process Visibility's admin: every model's pages render; scenarios are written through the
services (a change is a draft, activation refuses a definition with problems); the derived
data cannot be added or changed by hand."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model

from meshsite.platform.services import service_key_create

from ..models import Event, FailureReason, FailureState, ProcessingRun, ProcessInstance, RoleGrant, Scenario
from ..roles import key_roles
from ..services import failure_record, instance_process
from .factories import T0, active_scenario, event, order_to_cash, pv_instance


@pytest.fixture
def admin_client(client, subaccount):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def processed(subaccount):
    pv = pv_instance(subaccount)
    scenario = active_scenario(pv)
    event(pv, "order", "o-1", "CREATED", timedelta(0), ORDER_ID="1")
    event(pv, "order", "o-1", "APPROVED", timedelta(hours=1))
    event(pv, "nobody", "x", "SEEN", timedelta(0))  # stays in the buffer until processed
    instance_process(instance=pv, now=T0 + timedelta(days=1))
    event(pv, "order", "o-2", "CREATED", timedelta(0), ORDER_ID="2")
    return pv, scenario


def test_every_process_visibility_admin_page_renders(admin_client, processed):
    for model in apps.get_app_config("visibility").get_models():
        row = model._default_manager.first()
        base = f"/admin/visibility/{model._meta.model_name}/"
        assert admin_client.get(base).status_code == 200, base
        if row is not None:  # role grants and failures belong to other tests' fixtures
            assert admin_client.get(f"{base}{row.pk}/change/").status_code == 200, base


@pytest.mark.parametrize("model", [Event, ProcessInstance, ProcessingRun])
def test_events_and_processed_data_cannot_be_added_or_changed_in_the_admin(admin_client, processed, model):
    row = model._default_manager.first()
    base = f"/admin/visibility/{model._meta.model_name}/"
    assert admin_client.get(f"{base}add/").status_code == 403
    before = model._default_manager.count()
    assert admin_client.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert model._default_manager.count() == before


def test_a_scenario_added_in_the_admin_is_a_draft_made_by_the_service(admin_client, subaccount):
    pv = pv_instance(subaccount)
    response = admin_client.post("/admin/visibility/scenario/add/", {
        "instance": pv.pk, "scenario_id": "o2c", "name": "Order to cash", "draft": json.dumps(order_to_cash()),
    })
    assert response.status_code == 302, response.content
    scenario = Scenario.objects.get()
    assert scenario.active is None
    assert (scenario.draft or {})["participants"][0]["processDefinitionId"] == "order"


def test_the_admin_refuses_a_scenario_id_the_service_refuses(admin_client, subaccount):
    pv = pv_instance(subaccount)
    response = admin_client.post("/admin/visibility/scenario/add/", {
        "instance": pv.pk, "scenario_id": "9bad", "name": "x", "draft": "{}"})
    assert response.status_code == 200 and b"scenario id starts with a letter" in response.content
    assert not Scenario.objects.exists()


def test_changing_an_active_scenario_in_the_admin_saves_a_draft_and_activation_lists_problems(admin_client,
                                                                                               processed):
    _, scenario = processed
    broken = order_to_cash()
    broken["status"]["threshold"] = 0
    response = admin_client.post(f"/admin/visibility/scenario/{scenario.pk}/change/", {"draft": json.dumps(broken)})
    assert response.status_code == 302, response.content
    scenario.refresh_from_db()
    assert scenario.active["status"]["threshold"] == 50 and scenario.draft["status"]["threshold"] == 0
    response = admin_client.post("/admin/visibility/scenario/", {
        "action": "activate", "_selected_action": [scenario.pk]}, follow=True)
    assert b"status.threshold must be a percentage" in response.content
    scenario.refresh_from_db()
    assert scenario.version == 1


def test_process_now_in_the_admin_runs_processing(admin_client, processed):
    pv, scenario = processed
    response = admin_client.post("/admin/visibility/scenario/", {
        "action": "process_now", "_selected_action": [scenario.pk]}, follow=True)
    assert b"Processed: 1 scenario" in response.content
    assert ProcessInstance.objects.filter(scenario=scenario).count() == 2
    assert ProcessingRun.objects.filter(scenario=scenario).count() == 2


def test_discarding_failures_in_the_admin_goes_through_the_service(admin_client, processed):
    pv, _ = processed
    failure = failure_record(instance=pv, reason=FailureReason.WRONG_TYPE, detail="timestamp is not ISO 8601",
                             raw='{"timestamp": "yesterday"}', field="timestamp")
    response = admin_client.post("/admin/visibility/ingestfailure/", {
        "action": "discard", "_selected_action": [failure.pk]}, follow=True)
    assert b"Discarded: 1" in response.content
    failure.refresh_from_db()
    assert failure.state == FailureState.DISCARDED and failure.resolved_at is not None
    response = admin_client.post("/admin/visibility/ingestfailure/", {
        "action": "discard", "_selected_action": [failure.pk]}, follow=True)
    assert b"Discarded: 1" not in response.content  # the service refuses a closed failure


def test_role_grants_in_the_admin_go_through_the_services(admin_client, subaccount):
    pv = pv_instance(subaccount)
    other = pv_instance(subaccount, "other")
    key = service_key_create(instance=other, name="k").key
    refused = admin_client.post("/admin/visibility/rolegrant/add/", {
        "instance": pv.pk, "role": "PVAdmin", "service_key": key.pk})
    assert refused.status_code == 200 and not RoleGrant.objects.filter(instance=pv).exists()
    own = service_key_create(instance=pv, name="own", parameters={"roles": ["PVEventSender"]}).key
    added = admin_client.post("/admin/visibility/rolegrant/add/", {
        "instance": pv.pk, "role": "PVAdmin", "service_key": own.pk})
    assert added.status_code == 302, added.content
    grant = RoleGrant.objects.get(instance=pv, role="PVAdmin")
    assert key_roles(key_id=own.pk) == {"PVEventSender", "PVAdmin"}
    assert admin_client.post(f"/admin/visibility/rolegrant/{grant.pk}/delete/", {"post": "yes"}).status_code == 302
    assert key_roles(key_id=own.pk) == {"PVEventSender"}
