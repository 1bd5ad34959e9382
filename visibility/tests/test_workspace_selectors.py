"""The workspace's reads: indicator values against KPIs computed here by hand from the specs,
one query per indicator, the instance list's filters and keyset pages, and one instance's
timeline in business-time order."""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from meshsite.errors import Invalid, NotFound
from meshsite.platform.models import ServiceInstance
from visibility import selectors_workspace as ws
from visibility.models import Scenario

from .test_workspace_data import (  # noqa: F401
    COUNTRIES,
    NOW,
    PHASE_NAMES,
    PHASES,
    SPECS,
    events_for,
    pv_fixture,
    scenario_fixture,
    scenario_with_instances,
)

STATUS_LABELS = {"on_track": "On Track", "at_risk": "At Risk", "critical": "Critical"}


def values(scenario: Scenario, indicator_id: str) -> list[dict[str, Any]]:
    return ws.indicator_get(scenario=scenario, indicator_id=indicator_id, now=NOW).values


def by_status(specs: list) -> list[dict[str, Any]]:
    return [{"label": label, "value": sum(1 for s in specs if s.status_now == key)}
            for key, label in STATUS_LABELS.items()]


def test_open_instances_are_counted_by_their_status_now(scenario: Scenario) -> None:
    expected = by_status([s for s in SPECS if s.state == "open"])
    assert values(scenario, "openInstances") == expected
    assert sum(v["value"] for v in expected) == 200
    # A passed critical_at makes an open instance Critical before processing runs again.
    assert expected[2]["value"] > sum(1 for s in SPECS if s.state == "open" and s.status == "critical")


def test_completed_instances_keep_their_status(scenario: Scenario) -> None:
    assert values(scenario, "completedByStatus") == by_status([s for s in SPECS if s.state == "completed"])


def test_average_cycle_time_by_month_of_start(scenario: Scenario) -> None:
    months: dict[str, list[float]] = defaultdict(list)
    for s in SPECS:
        if s.cycle_time is not None:
            months[s.start.strftime("%Y-%m")].append(s.cycle_time)
    got = values(scenario, "cycleTime")
    assert [v["label"] for v in got] == sorted(months)
    assert got[0]["label"] == "2026-01"
    for entry in got:
        assert entry["value"] == pytest.approx(mean(months[entry["label"]]))


def test_average_step_cycle_time_by_phase_counts_ended_phases_only(scenario: Scenario) -> None:
    durations: dict[str, list[float]] = defaultdict(list)
    for s in SPECS:
        for phase_id, _start, _end, duration in s.phases:
            if duration is not None:
                durations[phase_id].append(duration)
    got = values(scenario, "stepCycleTime")
    assert [v["label"] for v in got] == [PHASE_NAMES[p] for p in PHASES]
    for entry, phase_id in zip(got, PHASES, strict=True):
        assert entry["value"] == pytest.approx(mean(durations[phase_id]))


@pytest.mark.parametrize(("indicator_id", "function"), [("amountByCountry", sum), ("minAmount", min),
                                                        ("maxAmount", max)])
def test_number_attribute_aggregated_by_string_attribute(scenario: Scenario, indicator_id: str, function) -> None:
    groups: dict[str, list[float]] = defaultdict(list)
    for s in SPECS:
        groups[s.attributes.get("COUNTRY", "(none)")].append(s.attributes["AMOUNT"])
    expected = [{"label": c, "value": pytest.approx(function(groups[c]))} for c in [*COUNTRIES, "(none)"]]
    assert values(scenario, indicator_id) == expected


def test_filters_and_no_dimension_give_one_value(scenario: Scenario) -> None:
    count = sum(1 for s in SPECS if s.state == "open" and s.attributes.get("COUNTRY") in ("DE", "FR"))
    assert values(scenario, "europeOpen") == [{"label": "Open in DE or FR", "value": count}]


def test_count_by_phase_lists_every_phase_of_the_definition(scenario: Scenario) -> None:
    expected = [{"label": PHASE_NAMES[p], "value": sum(1 for s in SPECS if s.state == "open" and s.active_phase == p)}
                for p in PHASES]
    assert values(scenario, "countByPhase") == expected


def test_one_indicator_is_one_query(scenario: Scenario) -> None:
    for item in (scenario.active or {})["indicators"]:
        with CaptureQueriesContext(connection) as queries:
            ws.indicator_values(scenario=scenario, indicator=item, now=NOW)
        assert len(queries) == 1, item["id"]


def test_tiles_of_one_dimension_share_a_query_and_answer_as_alone(scenario: Scenario) -> None:
    scenario = Scenario.objects.get(pk=scenario.pk)
    with CaptureQueriesContext(connection) as queries:
        tiles = ws.indicators(scenario=scenario, now=NOW)
    # status (2 tiles), month, phaseDuration, COUNTRY (3 tiles), none, phase
    assert len(queries) == 6
    assert [t.id for t in tiles] == [i["id"] for i in (scenario.active or {})["indicators"]]
    for tile in tiles:
        alone = values(scenario, tile.id)
        assert [v["label"] for v in tile.values] == [v["label"] for v in alone], tile.id
        assert [v["value"] for v in tile.values] == pytest.approx([v["value"] for v in alone]), tile.id
    assert tiles[2].duration and not tiles[4].duration


def test_unknown_indicator_is_not_found(scenario: Scenario) -> None:
    with pytest.raises(NotFound):
        ws.indicator_get(scenario=scenario, indicator_id="nope", now=NOW)


def test_inactive_scenario_is_not_found(scenario: Scenario) -> None:
    Scenario.objects.filter(pk=scenario.pk).update(active=None, draft=scenario.active)
    with pytest.raises(NotFound, match="not active"):
        ws.scenario_active(instance=scenario.instance, scenario_id="onboarding")


def all_pages(scenario: Scenario, limit: int, **filters: Any) -> list[str]:
    labels: list[str] = []
    cursor = None
    while True:
        page = ws.instances_search(scenario=scenario, cursor=cursor, limit=limit, now=NOW, **filters)
        labels += [row.label for row in page.instances]
        if page.next_cursor is None:
            return labels
        cursor = page.next_cursor


def newest_first(specs: list) -> list[str]:
    return [str(s.n) for s in sorted(specs, key=lambda s: s.start, reverse=True)]


def test_pages_hold_every_instance_once_newest_first(scenario: Scenario) -> None:
    assert all_pages(scenario, 7) == newest_first(SPECS)


def test_pages_of_instances_that_started_at_the_same_moment(scenario: Scenario) -> None:
    scenario.instances.update(start_time=NOW)
    labels = all_pages(scenario, 13)
    assert sorted(labels, key=int) == [str(s.n) for s in SPECS]
    assert len(set(labels)) == len(SPECS)


@pytest.mark.parametrize("filters", [
    {"state": "open"}, {"status": "critical"}, {"phase": "interview"}, {"attributes": {"COUNTRY": "FR"}},
    {"state": "open", "status": "at_risk", "attributes": {"COUNTRY": "DE"}}, {"attributes": {"AMOUNT": "37.5"}},
])
def test_instance_filters(scenario: Scenario, filters: dict[str, Any]) -> None:
    def keep(s) -> bool:  # type: ignore[no-untyped-def]
        attributes = filters.get("attributes", {})
        return ((filters.get("state") in (None, s.state)) and (filters.get("status") in (None, s.status_now))
                and (filters.get("phase") in (None, s.active_phase))
                and all(str(s.attributes.get(k)) == v or (k == "AMOUNT" and s.attributes[k] == float(v))
                        for k, v in attributes.items()))

    expected = newest_first([s for s in SPECS if keep(s)])
    assert expected
    assert all_pages(scenario, 50, **filters) == expected


@pytest.mark.parametrize(("filters", "parameter"), [
    ({"state": "done"}, "state"), ({"status": "late"}, "status"), ({"phase": "nope"}, "phase"),
    ({"attributes": {"NOPE": "x"}}, "attr.NOPE"), ({"attributes": {"AMOUNT": "lots"}}, "attr.AMOUNT"),
    ({"cursor": "!!"}, "cursor"), ({"limit": 0}, "limit"),
])
def test_bad_filters_name_their_parameter(scenario: Scenario, filters: dict[str, Any], parameter: str) -> None:
    with pytest.raises(Invalid) as refused:
        ws.instances_search(scenario=scenario, now=NOW, **filters)
    assert refused.value.extra == {"parameter": parameter}


def test_instance_detail_timeline_in_business_time_order(scenario: Scenario) -> None:
    instance = events_for(scenario, 1)
    detail = ws.instance_detail(scenario=scenario, instance_id=instance.pk, now=NOW)
    assert [(e.name, e.participant, e.process_instance_id) for e in detail.events] == [
        ("Application created", "Onboarding", "1"), ("Interview held", "Onboarding", "1"),
        ("Added to payroll", "Payroll", "P1"), ("Candidate hired", "Onboarding", "1"), ("UNKNOWN", "Onboarding", "1"),
    ]
    assert [(p.name, p.duration) for p in detail.phases] == [("Screening", 7200.0), ("Interview", None)]
    # Stored On Track, but its critical_at passed before NOW.
    assert (detail.instance.status, detail.status, detail.instance.state) == ("on_track", "critical", "open")
    assert {c.id: c.value for c in detail.context}["COUNTRY"] == "FR"


def test_instance_of_another_scenario_is_not_found(scenario: Scenario) -> None:
    other = Scenario.objects.create(instance=scenario.instance, scenario_id="other", name="Other", active={})
    instance = scenario.instances.first()
    assert instance is not None
    with pytest.raises(NotFound):
        ws.instance_detail(scenario=other, instance_id=instance.pk, now=NOW)
    with pytest.raises(NotFound):
        ws.instance_detail(scenario=scenario, instance_id="x", now=NOW)


def test_month_filter_and_dimension_agree_on_utc_months(scenario: Scenario) -> None:
    indicator = {"id": "feb", "title": "February", "measure": {"aggregate": "count"}, "dimension": "month",
                 "filters": [{"attribute": "month", "values": ["2026-02", "2026-03"]}]}
    got = ws.indicator_values(scenario=scenario, indicator=indicator, now=NOW)
    expected = [{"label": m, "value": sum(1 for s in SPECS if s.start.strftime("%Y-%m") == m)}
                for m in ("2026-02", "2026-03")]
    assert got == expected
    with pytest.raises(Invalid):
        ws.indicator_values(scenario=scenario, indicator={**indicator, "filters": [
            {"attribute": "month", "values": ["Feb"]}]}, now=NOW)


def test_an_aggregate_outside_the_known_five_never_reaches_sql(scenario: Scenario) -> None:
    indicator = {"id": "x", "title": "x", "measure": {"aggregate": "count(*)); DROP TABLE x; --"}, "dimension": None}
    with pytest.raises(Invalid):
        ws.indicator_values(scenario=scenario, indicator=indicator, now=NOW)


def test_a_scenario_without_instances_has_empty_tiles(pv: ServiceInstance) -> None:
    empty = scenario_with_instances(pv, [], scenario_id="empty")
    tiles = {t.id: t.values for t in ws.indicators(scenario=empty, now=NOW)}
    assert tiles["openInstances"] == [{"label": label, "value": 0} for label in STATUS_LABELS.values()]
    assert tiles["cycleTime"] == [] and tiles["amountByCountry"] == []
    assert tiles["stepCycleTime"] == [{"label": name, "value": None} for name in PHASE_NAMES.values()]
    assert tiles["europeOpen"] == [{"label": "Open in DE or FR", "value": 0}]
    assert ws.instances_search(scenario=empty, now=NOW).instances == []
