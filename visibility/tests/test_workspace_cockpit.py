"""The workspace pages: tiles with their values in tables, the instance list's filters and
pages, one instance's page, and who may see them (PVOperator, granted to a viewer or held by
an administrator; nobody from another subaccount)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from meshsite.platform.models import Entitlement, Service, ServiceInstance, Subaccount
from visibility.cockpit.workspace import duration_text, number_text
from visibility.models import RoleGrant, Scenario

from .test_workspace_data import SPECS, events_for, pv_fixture, pv_instance, scenario_fixture  # noqa: F401


def url(name: str, pv: ServiceInstance, *args: object) -> str:
    return reverse(f"pv:{name}", args=[pv.subaccount_id, pv.pk, *args])


def table_rows(html: str, indicator_id: str) -> list[tuple[str, str]]:
    tile = html.split(f'data-indicator="{indicator_id}"', 1)[1].split("</section>", 1)[0]
    return re.findall(r'<th scope="row">([^<]*)</th><td class="num">([^<]*)</td>', tile)


@pytest.fixture
def admin(person: Callable[..., Client]) -> Client:
    return person("ann", "administrator")


def test_tiles_show_their_values_in_tables(admin: Client, scenario: Scenario, pv: ServiceInstance) -> None:
    response = admin.get(url("workspace-scenario", pv, "onboarding"))
    assert response.status_code == 200
    html = response.content.decode()
    open_specs = [s for s in SPECS if s.state == "open"]
    assert table_rows(html, "openInstances") == [
        (label, str(sum(1 for s in open_specs if s.status_now == key)))
        for key, label in (("on_track", "On Track"), ("at_risk", "At Risk"), ("critical", "Critical"))]
    by_country = {c: sum(s.attributes["AMOUNT"] for s in SPECS if s.attributes.get("COUNTRY") == c)
                  for c in ("DE", "FR", "UK", "US")}
    assert table_rows(html, "amountByCountry")[:4] == [(c, number_text(v)) for c, v in by_country.items()]
    cycle = table_rows(html, "cycleTime")
    assert cycle[0][0] == "2026-01" and re.fullmatch(r"\d+ (d|h)( \d+ (h|min))?", cycle[0][1])
    # The chart's data travels as JSON beside the table.
    data = json.loads(html.split('id="tile-openInstances" type="application/json">', 1)[1].split("</script>")[0])
    assert data["chart"] == "donut" and data["labels"] == ["On Track", "At Risk", "Critical"]
    assert "cockpit/workspace.js" in html and "uPlot.iife.min.js" in html


def test_instance_list_filters_and_pages(admin: Client, scenario: Scenario, pv: ServiceInstance) -> None:
    base = url("workspace-scenario", pv, "onboarding")
    query = "?attribute=COUNTRY&value=FR"
    seen: list[str] = []
    while query:
        html = admin.get(base + query).content.decode()
        listing = html.split('class="pv-instances"', 1)[1]
        seen += re.findall(r'/instances/\d+/">([^<]+)</a>', listing)
        found = re.search(r'rel="next" href="\?([^"#]+)', html)
        query = "?" + found.group(1).replace("&amp;", "&") if found else ""
    expected = [str(s.n) for s in sorted(SPECS, key=lambda s: s.start, reverse=True)
                if s.attributes.get("COUNTRY") == "FR"]
    assert seen == expected and len(expected) > 50


def test_bad_filter_is_said_on_the_page(admin: Client, scenario: Scenario, pv: ServiceInstance) -> None:
    response = admin.get(url("workspace-scenario", pv, "onboarding") + "?attribute=AMOUNT&value=lots")
    assert response.status_code == 400
    assert "attr.AMOUNT must be a number" in response.content.decode()


def test_instance_page(admin: Client, scenario: Scenario, pv: ServiceInstance) -> None:
    instance = events_for(scenario, 3)  # completed, three phases
    html = admin.get(url("workspace-instance", pv, "onboarding", instance.pk)).content.decode()
    spec = SPECS[3]
    assert spec.cycle_time is not None
    assert duration_text(spec.cycle_time) in html and "Completed" in html
    timeline = html.split('class="pv-timeline"', 1)[1]
    names = re.findall(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td><td>([^<]+)</td><td>([^<]+)</td>", timeline)
    assert names == [("Application created", "Onboarding"), ("Interview held", "Onboarding"),
                     ("Added to payroll", "Payroll"), ("Candidate hired", "Onboarding"), ("UNKNOWN", "Onboarding")]
    assert "Screening" in html and "Offer" in html and "Country" in html


def test_workspace_redirects_to_the_only_active_scenario(admin: Client, scenario: Scenario,
                                                         pv: ServiceInstance) -> None:
    response = admin.get(url("workspace", pv))
    assert response.status_code == 302 and response["Location"] == url("workspace-scenario", pv, "onboarding")
    Scenario.objects.create(instance=pv, scenario_id="second", name="Second", active=scenario.active)
    Scenario.objects.create(instance=pv, scenario_id="draft", name="Draft only", draft={})
    html = admin.get(url("workspace", pv)).content.decode()
    assert "Second" in html and "Onboarding" in html and "Draft only" not in html


def test_inactive_scenario_is_404(admin: Client, scenario: Scenario, pv: ServiceInstance) -> None:
    Scenario.objects.filter(pk=scenario.pk).update(active=None, draft=scenario.active)
    assert admin.get(url("workspace-scenario", pv, "onboarding")).status_code == 404


def test_viewer_needs_the_pv_operator_grant(person: Callable[..., Client], scenario: Scenario,
                                            pv: ServiceInstance) -> None:
    viewer = person("vic", "viewer")
    page = url("workspace-scenario", pv, "onboarding")
    refused = viewer.get(page)
    assert refused.status_code == 403 and "PVOperator" in refused.content.decode()
    RoleGrant.objects.create(instance=pv, role="PVOperator", user=get_user_model().objects.get(username="vic"))
    assert viewer.get(page).status_code == 200
    instance = scenario.instances.first()
    assert instance is not None
    assert viewer.get(url("workspace-instance", pv, "onboarding", instance.pk)).status_code == 200


def test_other_subaccount_is_404(person: Callable[..., Client], scenario: Scenario, pv: ServiceInstance) -> None:
    elsewhere = Subaccount.objects.create(name="elsewhere")
    Entitlement.objects.create(subaccount=elsewhere, service=Service.PROCESS_VISIBILITY, plan="standard", quota=1)
    theirs = pv_instance(elsewhere, name="pv-else")
    outsider = person("olga", "administrator", in_subaccount=elsewhere)
    # Their own subaccount in the path, our instance: no such instance there.
    path = reverse("pv:workspace-scenario", args=[elsewhere.pk, pv.pk, "onboarding"])
    assert outsider.get(path).status_code == 404
    # Our subaccount in the path: not theirs.
    assert outsider.get(url("workspace-scenario", pv, "onboarding")).status_code == 404
    assert outsider.get(url("workspace", theirs)).status_code == 200


@pytest.mark.parametrize(("seconds", "text"), [(None, "—"), (12, "12 s"), (305, "5 min 5 s"), (3600, "1 h"),
                                               (3 * 3600 + 720, "3 h 12 min"), (2 * 86400 + 4 * 3600 + 59, "2 d 4 h")])
def test_duration_text(seconds: float | None, text: str) -> None:
    assert duration_text(seconds) == text
