"""The process workspace (PVOperator): the instance's active scenarios, one scenario's tiles
(one per performance indicator, drawn in the browser from JSON embedded in the page, with a
table of the same values beside it) and its instance list, and one instance's page."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.urls import path, reverse

from meshsite.cockpit.access import Page, cockpit_page
from meshsite.errors import Invalid

from .. import selectors_workspace as ws
from ..models import InstanceState, InstanceStatus, PVRole, Scenario
from .common import pv_instance, pv_render

ROLE = PVRole.OPERATOR.value
FILTERS = ("state", "status", "phase", "attribute", "value")


def duration_text(seconds: float | None) -> str:
    """Seconds as people read them: "2 d 4 h", "3 h 12 min", "4 min 5 s", "12 s"."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    for big, big_unit, small, small_unit in ((days, "d", hours, "h"), (hours, "h", minutes, "min"),
                                             (minutes, "min", secs, "s")):
        if big:
            return f"{big} {big_unit} {small} {small_unit}" if small else f"{big} {big_unit}"
    return f"{secs} s"


def number_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def tile(indicator: ws.Indicator) -> dict[str, Any]:
    show = duration_text if indicator.duration else number_text
    return {
        "id": indicator.id, "title": indicator.title, "chart": indicator.chart, "json_id": f"tile-{indicator.id}",
        "rows": [(v["label"], show(v["value"])) for v in indicator.values],
        "data": {"chart": indicator.chart, "duration": indicator.duration,
                 "labels": [v["label"] for v in indicator.values], "values": [v["value"] for v in indicator.values]},
    }


@cockpit_page()
def workspace_home(request: HttpRequest, page: Page, instance_id: UUID) -> HttpResponse:
    pv = pv_instance(request, page, instance_id, role=ROLE)
    scenarios = ws.scenarios_active(instance=pv)
    if len(scenarios) == 1:
        return HttpResponseRedirect(reverse("pv:workspace-scenario",
                                            args=[page.subaccount.pk, pv.pk, scenarios[0].scenario_id]))
    return pv_render(request, page, pv, "workspace", "visibility/workspace.html", {"scenarios": scenarios})


def _search(scenario: Scenario, query: QueryDict) -> tuple[ws.InstancePage | None, str]:
    attribute, value = query.get("attribute") or "", query.get("value") or ""
    try:
        return ws.instances_search(
            scenario=scenario, state=query.get("state") or None, status=query.get("status") or None,
            phase=query.get("phase") or None, attributes={attribute: value} if attribute else None,
            cursor=query.get("cursor") or None), ""
    except Invalid as error:
        return None, error.message


def _query(query: QueryDict, **changes: str) -> str:
    kept = QueryDict(mutable=True)
    kept.update({name: query.get(name, "") for name in FILTERS if query.get(name)})
    kept.update(changes)
    return kept.urlencode()


def _rows(found: ws.InstancePage | None, definition: dict[str, Any]) -> list[dict[str, Any]]:
    phases = ws.phase_names(definition)
    statuses = dict(InstanceStatus.choices)
    return [{"item": row, "status": row.current_status,  # type: ignore[attr-defined]
             "status_name": statuses.get(row.current_status, row.current_status),  # type: ignore[attr-defined]
             "phase": phases.get(row.active_phase, row.active_phase), "cycle_time": duration_text(row.cycle_time)}
            for row in (found.instances if found else [])]


@cockpit_page()
def workspace_scenario(request: HttpRequest, page: Page, instance_id: UUID, scenario_id: str) -> HttpResponse:
    pv = pv_instance(request, page, instance_id, role=ROLE)
    scenario = ws.scenario_active(instance=pv, scenario_id=scenario_id)
    definition = scenario.active or {}
    found, error = _search(scenario, request.GET)
    filters = {name: request.GET.get(name, "") for name in FILTERS}
    context = {
        "scenario": scenario, "tiles": [tile(i) for i in ws.indicators(scenario=scenario)],
        "rows": _rows(found, definition), "error": error, "filters": filters,
        "next_query": _query(request.GET, cursor=found.next_cursor) if found and found.next_cursor else "",
        "first_query": _query(request.GET) if request.GET.get("cursor") else None,
        "states": InstanceState.choices, "statuses": InstanceStatus.choices,
        "phases": list(ws.phase_names(definition).items()),
        "attributes": [(a, n) for a, n in ws.attribute_names(definition).items()
                       if a not in ("state", "status", "phase", "phaseDuration")],
        "plural": (definition.get("instanceLabel") or {}).get("plural") or "Instances",
    }
    return pv_render(request, page, pv, "workspace", "visibility/workspace_scenario.html", context,
                     status=400 if error else 200)


@cockpit_page()
def workspace_instance(request: HttpRequest, page: Page, instance_id: UUID, scenario_id: str,
                       pk: int) -> HttpResponse:
    pv = pv_instance(request, page, instance_id, role=ROLE)
    scenario = ws.scenario_active(instance=pv, scenario_id=scenario_id)
    detail = ws.instance_detail(scenario=scenario, instance_id=pk)
    definition = scenario.active or {}
    context = {
        "scenario": scenario, "detail": detail, "item": detail.instance,
        "status_name": dict(InstanceStatus.choices).get(detail.status, detail.status),
        "cycle_time": duration_text(detail.instance.cycle_time),
        "active_phase": ws.phase_names(definition).get(detail.instance.active_phase, detail.instance.active_phase),
        "phases": [(p, duration_text(p.duration) if p.duration is not None else "running") for p in detail.phases],
        "context_rows": [(c, duration_text(c.value) if ws.is_duration(definition, c.id) and c.value is not None
                          else c.value) for c in detail.context],
        "singular": (definition.get("instanceLabel") or {}).get("singular") or "Instance",
    }
    return pv_render(request, page, pv, "workspace", "visibility/workspace_instance.html", context)


urlpatterns = [
    path("", workspace_home, name="workspace"),
    path("<slug:scenario_id>/", workspace_scenario, name="workspace-scenario"),
    path("<slug:scenario_id>/instances/<int:pk>/", workspace_instance, name="workspace-instance"),
]
