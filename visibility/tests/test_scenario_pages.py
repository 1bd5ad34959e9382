"""The scenario pages through Django's test client: create a scenario, edit each section of
its model and see the draft change, activation blocked (problems listed) and done, the
processing monitor (process now, clear and rebuild), the roles page; who sees what: a
viewer with a PVDeveloper grant sees the modeller and cannot write, without it 403, another
subaccount's instance 404."""

from __future__ import annotations

import html
import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from meshsite.platform.models import Entitlement, ServiceInstance, Subaccount
from meshsite.platform.services import instance_create, service_key_create
from visibility.buffer import buffer_add
from visibility.models import Event, ProcessingRun, ProcessInstance, RoleGrant, Scenario
from visibility.services import instance_process, scenario_activate, scenario_create

READY = {
    "name": "Onboarding", "namespace": "hr", "instanceLabel": {"singular": "Request", "plural": "Requests"},
    "participants": [{"processDefinitionId": "hire", "name": "Hiring",
                      "events": [{"eventType": "APPLIED", "name": "Applied"},
                                 {"eventType": "HIRED", "name": "Hired"}]}],
    "context": [{"id": "COUNTRY", "name": "Country", "type": "String"}],
    "state": {"completingEvents": [{"participant": "hire", "eventType": "HIRED"}]},
    "status": {"targetDuration": {"value": 5, "unit": "days"}, "threshold": 80},
    "phases": [], "attributes": [], "indicators": [],
}


@pytest.fixture
def pv(subaccount: Subaccount) -> ServiceInstance:
    return instance_create(subaccount=subaccount, service="process-visibility", plan="standard", name="pv1")


def url(pv: ServiceInstance, rest: str = "") -> str:
    return f"/subaccounts/{pv.subaccount_id}/process-visibility/{pv.pk}/{rest}"


def text(answer: Any) -> str:
    return html.unescape(answer.content.decode())


def ref(participant: str, event_type: str) -> str:
    return json.dumps([participant, event_type])


def rows(prefix: str, entries: list[dict[str, Any]], initial: int) -> dict[str, Any]:
    """A formset's POST: the entries as its rows, `initial` of them the rows it showed."""
    data: dict[str, Any] = {f"{prefix}-TOTAL_FORMS": len(entries), f"{prefix}-INITIAL_FORMS": initial}
    for index, entry in enumerate(entries):
        data.update({f"{prefix}-{index}-{name}": value for name, value in entry.items()})
    return data


def events(pv: ServiceInstance, *specs: tuple[str, str, int]) -> None:
    start = timezone.now() - timedelta(hours=10)
    for pid, event_type, hour in specs:
        stored = Event.objects.create(instance=pv, definition_id="hire", process_instance_id=pid, event_type=event_type,
                             timestamp=start + timedelta(hours=hour), context={"COUNTRY": "DE"},
                             received_at=timezone.now())
        buffer_add(instance_id=stored.instance_id, event_ids=[stored.pk])


def test_a_scenario_is_created_from_the_form_as_a_draft(person, pv):
    admin = person("ada", "administrator")
    landing = admin.get(url(pv))
    assert landing.status_code == 200 and "No scenario yet" in text(landing)
    created = admin.post(url(pv), {"scenario_id": "onboard", "name": "Onboarding", "participants": "hire, it"})
    assert created.status_code == 302 and created["Location"] == url(pv, "scenarios/onboard/")
    scenario = Scenario.objects.get(scenario_id="onboard")
    assert [p["processDefinitionId"] for p in scenario.definition()["participants"]] == ["hire", "it"]
    assert scenario.active is None
    overview = text(admin.get(created["Location"]))
    assert "participants[0].events" in overview and "names at least one event type" in overview
    assert f'<a href="{url(pv, "scenarios/onboard/model/participants/")}"><code>participants[0].events' in overview
    again = admin.post(url(pv), {"scenario_id": "onboard", "name": "Again"})
    assert again.status_code == 400 and "already exists" in text(again)
    bad = admin.post(url(pv), {"scenario_id": "has space", "name": "x"})
    assert bad.status_code == 400 and Scenario.objects.count() == 1


def test_each_section_edits_the_draft_and_the_result_activates(person, pv):
    admin = person("ada", "administrator")
    scenario = scenario_create(instance=pv, scenario_id="onboard", name="Onboarding")
    section = url(pv, "scenarios/onboard/model/")

    def saved(slug: str, data: dict[str, Any]) -> dict[str, Any]:
        answer = admin.post(section + slug + "/", data)
        assert answer.status_code == 302, text(answer)[:3000]
        assert admin.get(section + slug + "/").status_code == 200
        scenario.refresh_from_db()
        return scenario.definition()

    draft = saved("general", {"name": "Hiring", "namespace": "hr", "singular": "Request", "plural": "Requests"})
    assert (draft["name"], draft["namespace"], draft["instanceLabel"]["plural"]) == ("Hiring", "hr", "Requests")
    draft = saved("participants", rows("participants", [
        {"processDefinitionId": "hire", "name": "Hiring", "events": "APPLIED = Applied\nOFFER = Offer made\nHIRED"},
        {"processDefinitionId": "", "name": "", "events": ""},
    ], 0))
    assert draft["participants"] == [{"processDefinitionId": "hire", "name": "Hiring", "events": [
        {"eventType": "APPLIED", "name": "Applied"}, {"eventType": "OFFER", "name": "Offer made"},
        {"eventType": "HIRED", "name": "HIRED"}]}]
    draft = saved("context", rows("context", [{"id": "COUNTRY", "name": "Country", "type": "String"},
                                              {"id": "SALARY", "type": "Number", "source": "pay"}], 0))
    assert draft["context"][1] == {"id": "SALARY", "name": "SALARY", "type": "Number", "source": "pay"}
    draft = saved("state", {"completing": [ref("hire", "HIRED")]})
    assert draft["state"] == {"completingEvents": [{"participant": "hire", "eventType": "HIRED"}]}
    draft = saved("status", {"enabled": "on", "value": "3", "unit": "days", "threshold": "75"})
    assert draft["status"] == {"targetDuration": {"value": 3, "unit": "days"}, "threshold": 75}
    draft = saved("phases", rows("phases", [{"id": "screening", "name": "Screening",
                                             "startEvents": [ref("hire", "APPLIED")],
                                             "endEvents": [ref("hire", "OFFER")]}], 0))
    assert draft["phases"][0]["endEvents"] == [{"participant": "hire", "eventType": "OFFER"}]
    draft = saved("attributes", rows("attributes", [
        {"id": "timeToOffer", "name": "Time to offer", "kind": "duration", "from": ref("hire", "APPLIED"),
         "to": ref("hire", "OFFER")},
        {"id": "hireMonth", "kind": "month", "of": "endTime"}], 0))
    assert draft["attributes"][1] == {"id": "hireMonth", "name": "hireMonth", "kind": "month", "of": "endTime"}
    indicators = len(draft["indicators"])
    draft = saved("indicators", {**rows("indicators", [
        {"id": "byCountry", "title": "By country", "aggregate": "avg", "attribute": "timeToOffer",
         "dimension": "COUNTRY", "filters": "state = open, completed", "chart": "donut"},
        *[{"DELETE": "on"} for _ in range(indicators - 1)]], indicators)})
    assert draft["indicators"] == [{"id": "byCountry", "title": "By country",
                                    "measure": {"aggregate": "avg", "attribute": "timeToOffer"},
                                    "dimension": "COUNTRY", "filters": [{"attribute": "state",
                                                                         "values": ["open", "completed"]}],
                                    "chart": "donut"}]
    activated = admin.post(url(pv, "scenarios/onboard/actions/activate"))
    assert activated.status_code == 302
    scenario.refresh_from_db()
    assert scenario.version == 1 and scenario.draft is None and scenario.active == draft


def test_a_section_form_shows_its_problems_beside_the_fields(person, pv):
    admin = person("ada", "administrator")
    scenario_create(instance=pv, scenario_id="onboard", name="Onboarding", definition={
        **READY, "phases": [{"id": "p", "name": "P", "startEvents": [{"participant": "hire", "eventType": "NOPE"}],
                             "endEvents": []}]})
    page = text(admin.get(url(pv, "scenarios/onboard/model/phases/")))
    start_field = page.split('data-field="startEvents"', 1)[1].split("data-field=", 1)[0]
    assert "hire/NOPE is not an event of the scenario's participants" in start_field
    end_field = page.split('data-field="endEvents"', 1)[1].split("data-field=", 1)[0]
    assert "names at least one event" in end_field
    refused = admin.post(url(pv, "scenarios/onboard/model/status/"), {"enabled": "on", "unit": "days"})
    assert refused.status_code == 400 and "target duration above 0" in text(refused)
    assert admin.get(url(pv, "scenarios/onboard/model/nothing/")).status_code == 404


def test_activation_blocked_lists_the_problems_by_path(person, pv):
    admin = person("ada", "administrator")
    scenario_create(instance=pv, scenario_id="onboard", name="Onboarding")
    blocked = admin.post(url(pv, "scenarios/onboard/actions/activate"))
    assert blocked.status_code == 400
    body = text(blocked).split('id="blocking"', 1)[1]
    assert "participants" in body and "names at least one process definition" in body
    assert "state.completingEvents" in body
    assert Scenario.objects.get().active is None


def test_editing_an_active_scenario_makes_a_draft_and_the_active_keeps_serving(person, pv):
    admin = person("ada", "administrator")
    scenario = scenario_create(instance=pv, scenario_id="onboard", name="Onboarding", definition=READY)
    scenario_activate(scenario=scenario)
    edited = admin.post(url(pv, "scenarios/onboard/model/general/"),
                        {"name": "Renamed", "namespace": "hr", "singular": "Request", "plural": "Requests"})
    assert edited.status_code == 302
    scenario.refresh_from_db()
    assert (scenario.active or {})["name"] == "Onboarding" and scenario.definition()["name"] == "Renamed"
    page = text(admin.get(url(pv, "scenarios/onboard/")))
    assert "Editing a draft; version 1 stays active until you activate" in page and "active-with-draft" in page
    assert admin.post(url(pv, "scenarios/onboard/actions/discard")).status_code == 302
    scenario.refresh_from_db()
    assert scenario.draft is None and scenario.name == "Onboarding"


def test_the_json_editor_saves_imports_and_exports(person, pv):
    admin = person("ada", "administrator")
    scenario = scenario_create(instance=pv, scenario_id="onboard", name="Onboarding")
    editor = url(pv, "scenarios/onboard/json/")
    assert '"participants"' in text(admin.get(editor))
    assert admin.post(editor, {"definition": json.dumps(READY)}).status_code == 302
    scenario.refresh_from_db()
    assert scenario.draft == READY
    broken = admin.post(editor, {"definition": "{not json"})
    assert broken.status_code == 400 and "Not JSON" in text(broken) and "{not json" in text(broken)
    assert admin.post(editor, {"definition": "[1, 2]"}).status_code == 400
    exported = admin.get(url(pv, "scenarios/onboard/export"))
    assert exported["Content-Disposition"] == 'attachment; filename="onboard.json"'
    assert json.loads(exported.content) == READY
    upload = SimpleUploadedFile("s.json", json.dumps({**READY, "name": "Imported"}).encode(), "application/json")
    assert admin.post(editor, {"file": upload}).status_code == 302
    scenario.refresh_from_db()
    assert scenario.draft["name"] == "Imported"


def test_deleting_needs_the_id_typed(person, pv):
    admin = person("ada", "administrator")
    scenario_create(instance=pv, scenario_id="onboard", name="Onboarding")
    assert admin.post(url(pv, "scenarios/onboard/actions/delete"), {"confirm": "nope"}).status_code == 400
    assert Scenario.objects.exists()
    assert admin.post(url(pv, "scenarios/onboard/actions/delete"), {"confirm": "onboard"}).status_code == 302
    assert not Scenario.objects.exists()


def test_process_now_creates_instances_and_a_run_and_clear_rebuilds_them(person, pv):
    admin = person("ada", "administrator")
    scenario = scenario_create(instance=pv, scenario_id="onboard", name="Onboarding", definition=READY)
    scenario_activate(scenario=scenario)
    instance_process(instance=pv)  # the activation's rebuild, before any event
    events(pv, ("p1", "APPLIED", 0), ("p1", "HIRED", 2), ("p2", "APPLIED", 1))
    monitor = url(pv, "scenarios/onboard/monitor/")
    assert "<b data-buffer>3</b>" in text(admin.get(monitor))
    assert admin.post(monitor, {"action": "process"}).status_code == 302
    instances = sorted(ProcessInstance.objects.filter(scenario=scenario).values_list("key", "state"))
    assert len(instances) == 2 and {state for _, state in instances} == {"open", "completed"}
    run = ProcessingRun.objects.filter(scenario=scenario).latest("started_at")
    assert run.events_processed == 3 and run.status == "succeeded"
    page = text(admin.get(monitor))
    assert f'data-run="{run.pk}"' in page and "<b data-instances>2</b>" in page and "<b data-buffer>0</b>" in page
    assert admin.post(monitor, {"action": "clear", "confirm": "wrong"}).status_code == 400
    assert admin.post(monitor, {"action": "clear", "confirm": "onboard"}).status_code == 302
    assert sorted(ProcessInstance.objects.filter(scenario=scenario).values_list("key", "state")) == instances
    rebuilt = ProcessingRun.objects.filter(scenario=scenario).order_by("-pk").first()
    assert rebuilt is not None and rebuilt.trigger == "rebuild" and rebuilt.events_processed == 3
    scenario.refresh_from_db()
    assert not scenario.rebuild_pending


def test_process_now_on_a_draft_is_refused_on_the_page(person, pv):
    admin = person("ada", "administrator")
    scenario_create(instance=pv, scenario_id="onboard", name="Onboarding")
    refused = admin.post(url(pv, "scenarios/onboard/monitor/"), {"action": "process"})
    assert refused.status_code == 400 and "activate it first" in text(refused)


def test_roles_are_granted_to_members_and_keys_and_revoked(person, pv, subaccount):
    admin = person("ada", "administrator")
    viewer = person("val", "viewer")
    person("olga")  # no member
    scenario_create(instance=pv, scenario_id="onboard", name="Onboarding")
    assert viewer.get(url(pv)).status_code == 403
    assert viewer.get(url(pv, "roles/")).status_code == 403
    assert admin.post(url(pv, "roles/"), {"action": "grant", "role": "PVDeveloper", "user": "val"}).status_code == 302
    assert viewer.get(url(pv)).status_code == 200
    shown = viewer.get(url(pv, "scenarios/onboard/model/phases/"))
    assert shown.status_code == 200 and "Save phases" not in text(shown)  # a viewer reads, does not write
    assert "Save phases" in text(admin.get(url(pv, "scenarios/onboard/model/phases/")))
    assert viewer.get(url(pv, "scenarios/onboard/monitor/")).status_code == 403  # PVAdmin
    assert viewer.post(url(pv), {"scenario_id": "x", "name": "x"}).status_code == 403
    assert viewer.post(url(pv, "scenarios/onboard/model/general/"), {"name": "x"}).status_code == 403
    outsider = admin.post(url(pv, "roles/"), {"action": "grant", "role": "PVDeveloper", "user": "olga"})
    assert outsider.status_code == 400 and "No member" in text(outsider)
    twice = admin.post(url(pv, "roles/"), {"action": "grant", "role": "PVDeveloper", "user": "val"})
    assert twice.status_code == 400 and "already holds" in text(twice)
    key = service_key_create(instance=pv, name="reporting").key
    assert admin.post(url(pv, "roles/"), {"action": "grant", "role": "PVAdmin",
                                          "service_key": str(key.pk)}).status_code == 302
    assert RoleGrant.objects.filter(service_key=key, role="PVAdmin").exists()
    listing = text(admin.get(url(pv, "roles/")))
    assert "user <b>val</b>" in listing and "service key <b>reporting</b>" in listing
    grant = RoleGrant.objects.get(user__username="val")
    assert viewer.post(url(pv, "roles/"), {"action": "revoke", "grant": grant.pk}).status_code == 403
    assert admin.post(url(pv, "roles/"), {"action": "revoke", "grant": "x"}).status_code == 404
    assert admin.post(url(pv, "roles/"), {"action": "revoke", "grant": grant.pk}).status_code == 302
    assert viewer.get(url(pv)).status_code == 403


def test_another_subaccounts_instance_is_not_found(person, pv):
    admin = person("ada", "administrator")
    other = Subaccount.objects.create(name="other")
    Entitlement.objects.create(subaccount=other, service="process-visibility", plan="standard", quota=1)
    theirs = instance_create(subaccount=other, service="process-visibility", plan="standard", name="pv2")
    scenario_create(instance=theirs, scenario_id="onboard", name="Onboarding")
    assert admin.get(url(theirs)).status_code == 404
    assert admin.get(f"/subaccounts/{pv.subaccount_id}/process-visibility/{theirs.pk}/").status_code == 404
    assert admin.get(url(pv, "scenarios/onboard/")).status_code == 404
    assert admin.post(url(theirs, "scenarios/onboard/actions/delete"), {"confirm": "onboard"}).status_code == 404
    assert Scenario.objects.filter(instance=theirs).exists()


def test_an_administrator_sees_every_tab_and_a_viewer_only_those_of_their_roles(person, pv):
    page = text(person("ada", "administrator").get(url(pv, "workspace/")))
    for tab in ("", "acquisition/", "workspace/", "roles/"):
        assert f'href="{url(pv, tab)}"' in page, tab
    viewer = person("vic", "viewer")
    RoleGrant.objects.create(instance=pv, role="PVOperator", user=get_user_model().objects.get(username="vic"))
    page = text(viewer.get(url(pv, "workspace/")))
    assert f'href="{url(pv, "workspace/")}"' in page
    assert all(f'href="{url(pv, tab)}"' not in page for tab in ("", "acquisition/", "roles/"))


@pytest.mark.parametrize("definition", [
    {"participants": 1, "phases": "x", "state": [], "status": 3, "instanceLabel": "x"},
    {"participants": [{"processDefinitionId": 5, "events": [{"eventType": ["x"]}, 7]}], "context": [{"id": []}],
     "attributes": [{"kind": "duration", "from": "x"}], "indicators": [{"measure": 1, "filters": [{"values": 3}]}]},
])
def test_every_section_shows_a_definition_of_the_wrong_shape(person, pv, definition):
    admin = person("ada", "administrator")
    scenario_create(instance=pv, scenario_id="odd", name="Odd", definition=definition)
    assert admin.get(url(pv, "scenarios/odd/")).status_code == 200
    for slug in ("general", "participants", "context", "state", "status", "phases", "attributes", "indicators"):
        assert admin.get(url(pv, f"scenarios/odd/model/{slug}/")).status_code == 200, slug


def test_a_failed_processing_run_is_shown_on_the_monitor(person, pv, monkeypatch):
    admin = person("ada", "administrator")
    scenario = scenario_create(instance=pv, scenario_id="onboard", name="Onboarding", definition=READY)
    scenario_activate(scenario=scenario)
    events(pv, ("p1", "APPLIED", 0))

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the fold broke")

    monkeypatch.setattr("visibility.services.processing._fold_pairs", broken)
    failed = admin.post(url(pv, "scenarios/onboard/monitor/"), {"action": "process"})
    assert failed.status_code == 500
    page = text(failed)
    assert "Processing failed" in page and "RuntimeError: the fold broke" in page
