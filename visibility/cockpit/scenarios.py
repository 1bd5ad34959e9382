"""The scenario pages: the list and the modeller (PVDeveloper), the processing monitor
(PVAdmin) and the roles page (subaccount administrators). Reads through
selectors_scenarios, writes through the services the scenarios API calls; a viewer holding
a role sees the pages and cockpit_page refuses their writes."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from meshsite import jsonlimit
from meshsite.cockpit.access import Page, cockpit_page
from meshsite.errors import Conflict, Forbidden, Invalid, MeshError, NotFound
from meshsite.platform.models import ServiceInstance

from .. import selectors_scenarios as selectors
from ..models import PVRole, RoleGrant, RunTrigger, Scenario
from ..scenario import definition_new
from ..services import (
    instance_process,
    role_grant,
    role_revoke,
    scenario_activate,
    scenario_create,
    scenario_data_clear,
    scenario_deactivate,
    scenario_delete,
    scenario_draft_discard,
    scenario_update,
)
from .common import pv_instance, pv_render, pv_scenario
from .scenario_forms import SECTIONS, Editor, GrantForm, ScenarioNewForm, section_of

DEVELOPER, ADMIN = PVRole.DEVELOPER.value, PVRole.ADMIN.value
MAX_UPLOAD = 256 * 1024
log = logging.getLogger(__name__)


def _url(page: Page, name: str, scenario: Scenario, *args: str) -> str:
    return reverse(f"pv:{name}", args=[page.subaccount.pk, scenario.instance_id, scenario.scenario_id, *args])


def _scenario_context(scenario: Scenario) -> dict[str, Any]:
    return {"scenario": scenario, "state": selectors.scenario_state(scenario), "sections": SECTIONS}


# --- the list ------------------------------------------------------------------------------


@cockpit_page()
@require_http_methods(["GET", "POST"])
def scenarios(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    instance = pv_instance(request, page, instance_id, role=DEVELOPER)
    form = ScenarioNewForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            scenario = scenario_create(instance=instance, scenario_id=data["scenario_id"], name=data["name"],
                                       definition=definition_new(name=data["name"],
                                                                 participants=form.participant_ids()))
            return redirect(_url(page, "scenario", scenario))
        except MeshError as error:
            field = (error.extra or {}).get("field") if isinstance(error.extra, dict) else None
            form.add_error(field if field in form.fields else "scenario_id", error.message)
    rows = [(scenario, selectors.scenario_state(scenario), len(selectors.scenario_problems(scenario)))
            for scenario in selectors.scenarios_list(instance=instance)]
    return pv_render(request, page, instance, "scenarios", "visibility/scenarios.html",
                     {"rows": rows, "form": form}, status=400 if request.method == "POST" else 200)


# --- one scenario: overview and lifecycle --------------------------------------------------


def _overview(request: HttpRequest, page: Page, instance: ServiceInstance, scenario: Scenario, *,
              refusal: str = "", blocking: list[dict[str, str]] | None = None, status: int = 200) -> HttpResponse:
    return pv_render(request, page, instance, "scenarios", "visibility/scenario.html", {
        **_scenario_context(scenario), "problems": _sectioned(selectors.scenario_problems(scenario)),
        "refusal": refusal, "blocking": _sectioned(blocking or []),
        "counts": selectors.scenario_counts(scenario=scenario),
    }, status=status)


def _sectioned(problems: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each problem with the section page that edits its field ("" when none does)."""
    return [{**problem, "section": section if (section := section_of(problem["path"])) in SECTIONS else ""}
            for problem in problems]


@cockpit_page()
@require_GET
def scenario(request: HttpRequest, page: Page, instance_id: str, scenario_id: str) -> HttpResponse:
    instance = pv_instance(request, page, instance_id, role=DEVELOPER)
    return _overview(request, page, instance, pv_scenario(instance, scenario_id))


@cockpit_page()
@require_POST
def scenario_action(request: HttpRequest, page: Page, instance_id: str, scenario_id: str,
                    action: str) -> HttpResponse:
    instance = pv_instance(request, page, instance_id, role=DEVELOPER)
    scenario = pv_scenario(instance, scenario_id)
    if action not in ("activate", "discard", "deactivate", "delete"):
        raise NotFound("No such scenario action")
    if action == "delete":
        if request.POST.get("confirm") != scenario.scenario_id:
            return _overview(request, page, instance, scenario, refusal="Type the scenario's id to delete it",
                             status=400)
        scenario_delete(scenario=scenario)
        return redirect("pv:scenarios", page.subaccount.pk, instance.pk)
    lifecycle = {"activate": scenario_activate, "discard": scenario_draft_discard, "deactivate": scenario_deactivate}
    try:
        lifecycle[action](scenario=scenario)
    except MeshError as error:
        blocking = (error.extra or {}).get("problems", []) if isinstance(error.extra, dict) else []
        return _overview(request, page, instance, scenario, refusal=error.message, blocking=blocking, status=400)
    return redirect(_url(page, "scenario", scenario))


# --- the modeller --------------------------------------------------------------------------


@cockpit_page()
@require_http_methods(["GET", "POST"])
def scenario_section(request: HttpRequest, page: Page, instance_id: str, scenario_id: str,
                     section: str) -> HttpResponse:
    instance = pv_instance(request, page, instance_id, role=DEVELOPER)
    scenario = pv_scenario(instance, scenario_id)
    if section not in SECTIONS:
        raise NotFound("No such section of a scenario")
    definition = scenario.definition()
    editor = Editor(section, definition, request.POST if request.method == "POST" else None)
    if request.method == "POST" and editor.is_valid():
        try:
            scenario_update(scenario=scenario, definition=editor.apply(definition))
            return redirect(_url(page, "scenario-section", scenario, section))
        except MeshError as error:
            editor.refusal = error.message
    mine = [problem for problem in selectors.scenario_problems(scenario) if section_of(problem["path"]) == section]
    return pv_render(request, page, instance, "scenarios", "visibility/scenario_section.html", {
        **_scenario_context(scenario), "current": section, "title": SECTIONS[section][0],
        "lead": SECTIONS[section][1], "editor": editor, "problems": mine,
        "rows": editor.rows(mine if request.method == "GET" else []),
    }, status=400 if request.method == "POST" else 200)


def _posted_definition(request: HttpRequest) -> Any:
    upload = request.FILES.get("file")
    if upload is not None:
        if upload.size is not None and upload.size > MAX_UPLOAD:
            raise Invalid(f"A scenario file is at most {MAX_UPLOAD // 1024} KiB")
        text = upload.read().decode("utf-8", errors="replace")
    else:
        text = request.POST.get("definition", "")
    try:
        return jsonlimit.loads(text)
    except ValueError as error:
        raise Invalid(f"Not JSON: {error}") from None


@cockpit_page()
@require_http_methods(["GET", "POST"])
def scenario_json(request: HttpRequest, page: Page, instance_id: str, scenario_id: str) -> HttpResponse:
    instance = pv_instance(request, page, instance_id, role=DEVELOPER)
    scenario = pv_scenario(instance, scenario_id)
    text, refusal = json.dumps(scenario.definition(), indent=2, ensure_ascii=False), ""
    if request.method == "POST":
        if request.FILES.get("file") is None:
            text = request.POST.get("definition", "")  # shown again as typed when refused
        try:
            scenario_update(scenario=scenario, definition=_posted_definition(request))
            return redirect(_url(page, "scenario", scenario))
        except MeshError as error:
            refusal = error.message
    return pv_render(request, page, instance, "scenarios", "visibility/scenario_json.html", {
        **_scenario_context(scenario), "text": text, "refusal": refusal,
    }, status=400 if refusal else 200)


@cockpit_page()
@require_GET
def scenario_export(request: HttpRequest, page: Page, instance_id: str, scenario_id: str) -> HttpResponse:
    instance = pv_instance(request, page, instance_id, role=DEVELOPER)
    scenario = pv_scenario(instance, scenario_id)
    version = request.GET.get("version")
    definition = scenario.active if version == "active" and scenario.active else scenario.definition()
    response = HttpResponse(json.dumps(definition, indent=2, ensure_ascii=False),
                            content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{scenario.scenario_id}.json"'
    return response


# --- the processing monitor ----------------------------------------------------------------


def _monitor(request: HttpRequest, page: Page, instance: ServiceInstance, scenario: Scenario, *,
             refusal: str = "", status: int = 200) -> HttpResponse:
    return pv_render(request, page, instance, "scenarios", "visibility/scenario_monitor.html", {
        **_scenario_context(scenario), "runs": selectors.scenario_runs(scenario=scenario),
        "counts": selectors.scenario_counts(scenario=scenario), "refusal": refusal,
    }, status=status)


@cockpit_page()
@require_http_methods(["GET", "POST"])
def scenario_monitor(request: HttpRequest, page: Page, instance_id: str, scenario_id: str) -> HttpResponse:
    instance = pv_instance(request, page, instance_id, role=ADMIN)
    scenario = pv_scenario(instance, scenario_id)
    if request.method == "GET":
        return _monitor(request, page, instance, scenario)
    try:
        _processing_action(instance, scenario, request.POST.get("action"), request.POST.get("confirm"))
    except MeshError as error:
        return _monitor(request, page, instance, scenario, refusal=error.message, status=400)
    except Exception:
        # instance_process has recorded the failed run, with its error, before re-raising it.
        log.exception("processing %s of %s failed", scenario.scenario_id, instance.pk)
        return _monitor(request, page, instance, scenario, refusal="Processing failed; the run below says why",
                        status=500)
    return redirect(_url(page, "scenario-monitor", scenario))


def _processing_action(instance: ServiceInstance, scenario: Scenario, action: str | None,
                       confirm: str | None) -> None:
    if action == "clear":
        if confirm != scenario.scenario_id:
            raise Invalid("Type the scenario's id to clear its processed data")
        scenario_data_clear(scenario=scenario)
        instance_process(instance=instance, trigger=RunTrigger.REBUILD)
    elif action == "process":
        if not scenario.is_active:
            raise Invalid("Only an active scenario is processed; activate it first")
        instance_process(instance=instance, trigger=RunTrigger.MANUAL)
    else:
        raise Invalid("No such processing action")


# --- roles ---------------------------------------------------------------------------------


def _grant_form(instance: ServiceInstance, data: Any = None) -> GrantForm:
    keys = [(str(key.pk), key.name) for key in selectors.keys_of(instance=instance)]
    return GrantForm(data, roles=list(PVRole.choices), keys=keys)


def _grant(page: Page, instance: ServiceInstance, form: GrantForm) -> None:
    data = form.cleaned_data
    user, key = None, None
    if data["user"].strip():
        user = selectors.member_find(subaccount=page.subaccount, name=data["user"])
        if user is None:
            raise Invalid(f"No member of {page.subaccount.name} is called {data['user'].strip()!r}")
    else:
        key = selectors.keys_of(instance=instance).filter(pk=data["service_key"]).first()
    role_grant(instance=instance, role=data["role"], user=user, service_key=key)


def _grant_of(instance: ServiceInstance, raw: str) -> RoleGrant:
    grant = RoleGrant.objects.filter(instance=instance, pk=int(raw)).first() if raw.isdigit() else None
    if grant is None:
        raise NotFound("No such role grant in this instance")
    return grant


@cockpit_page()
@require_http_methods(["GET", "POST"])
def roles(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    if not page.can_write:
        raise Forbidden("Only the subaccount's administrators grant Process Visibility roles")
    instance = pv_instance(request, page, instance_id, role=ADMIN)
    form = _grant_form(instance, request.POST if request.POST.get("action") == "grant" else None)
    if request.method == "POST":
        try:
            if request.POST.get("action") == "revoke":
                role_revoke(grant=_grant_of(instance, request.POST.get("grant", "")))
                return redirect("pv:roles", page.subaccount.pk, instance.pk)
            if form.is_valid():
                _grant(page, instance, form)
                return redirect("pv:roles", page.subaccount.pk, instance.pk)
        except (Invalid, Conflict) as error:
            form.add_error(None, error.message)
    return pv_render(request, page, instance, "roles", "visibility/roles.html", {
        "grants": selectors.grants_of(instance=instance), "form": form,
    }, status=400 if request.method == "POST" else 200)


SCENARIO = "scenarios/<slug:scenario_id>/"
urlpatterns = [
    path("", scenarios, name="scenarios"),
    path(SCENARIO, scenario, name="scenario"),
    path(f"{SCENARIO}actions/<slug:action>", scenario_action, name="scenario-action"),
    path(f"{SCENARIO}model/<slug:section>/", scenario_section, name="scenario-section"),
    path(f"{SCENARIO}json/", scenario_json, name="scenario-json"),
    path(f"{SCENARIO}export", scenario_export, name="scenario-export"),
    path(f"{SCENARIO}monitor/", scenario_monitor, name="scenario-monitor"),
    path("roles/", roles, name="roles"),
]
