"""Test data setup for the workspace tests: an active scenario and a few hundred process
instances (with phases, correlation rows and events) written straight into the tables that
processing fills, from specs that the tests also use to compute the expected KPIs in Python.

No tests here; the workspace test modules import the factory and its fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meshsite.platform.models import ServiceInstance, Subaccount
from meshsite.platform.services import instance_create
from visibility.models import Correlation, Event, InstancePhase, ProcessInstance, Scenario
from visibility.scenario import default_indicators, problems

BASE = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2027, 1, 1, tzinfo=UTC)  # every test reads at this moment
PHASES = ["screening", "interview", "offer"]
PHASE_NAMES = {"screening": "Screening", "interview": "Interview", "offer": "Offer"}
COUNTRIES = ["DE", "FR", "UK", "US"]
STATUSES = ["on_track", "at_risk", "critical"]


def definition() -> dict[str, Any]:
    ref = {"participant": "onboard", "eventType": "CREATED"}
    indicators = default_indicators("Requests") + [
        {"id": "amountByCountry", "title": "Amount by country", "measure": {"aggregate": "sum", "attribute": "AMOUNT"},
         "dimension": "COUNTRY", "filters": [], "chart": "bar"},
        {"id": "minAmount", "title": "Smallest amount", "measure": {"aggregate": "min", "attribute": "AMOUNT"},
         "dimension": "COUNTRY", "filters": [], "chart": "column"},
        {"id": "maxAmount", "title": "Largest amount", "measure": {"aggregate": "max", "attribute": "AMOUNT"},
         "dimension": "COUNTRY", "filters": [], "chart": "column"},
        {"id": "europeOpen", "title": "Open in DE or FR", "measure": {"aggregate": "count"}, "dimension": None,
         "filters": [{"attribute": "state", "values": ["open"]}, {"attribute": "COUNTRY", "values": ["DE", "FR"]}],
         "chart": "donut"},
        {"id": "countByPhase", "title": "Open by phase", "measure": {"aggregate": "count"}, "dimension": "phase",
         "filters": [{"attribute": "state", "values": ["open"]}], "chart": "bar"},
    ]
    return {
        "name": "Onboarding", "namespace": "hr", "instanceLabel": {"singular": "Request", "plural": "Requests"},
        "participants": [
            {"processDefinitionId": "onboard", "name": "Onboarding",
             "events": [{"eventType": "CREATED", "name": "Application created"},
                        {"eventType": "INTERVIEW", "name": "Interview held"},
                        {"eventType": "HIRED", "name": "Candidate hired"}]},
            {"processDefinitionId": "payroll", "name": "Payroll",
             "events": [{"eventType": "ADDED", "name": "Added to payroll"}]},
        ],
        "context": [{"id": "COUNTRY", "name": "Country", "type": "String"},
                    {"id": "AMOUNT", "name": "Amount", "type": "Number"},
                    {"id": "DUE", "name": "Due date", "type": "Date"}],
        "state": {"completingEvents": [{"participant": "onboard", "eventType": "HIRED"}]},
        "status": {"targetDuration": {"value": 5, "unit": "days"}, "threshold": 80},
        "phases": [{"id": pid, "name": PHASE_NAMES[pid], "startEvents": [ref], "endEvents": [ref]} for pid in PHASES],
        "attributes": [],
        "indicators": indicators,
    }


@dataclass
class Spec:
    """One instance as the tests see it (and as the factory writes it)."""

    n: int
    state: str
    status: str  # the stored status
    status_now: str  # the status at NOW
    start: datetime
    end: datetime | None
    active_phase: str
    attributes: dict[str, Any]
    phases: list[tuple[str, datetime, datetime | None, float | None]] = field(default_factory=list)

    @property
    def cycle_time(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.end else None


def spec(n: int) -> Spec:
    start = BASE + timedelta(hours=23 * n)
    completed = n % 3 == 0
    status = STATUSES[(n // 2) % 3]
    status_now = status
    if not completed and n % 10 == 1:
        status_now = "critical"  # its critical_at passed before NOW (processing has not run since)
    end = start + timedelta(hours=3 * (n % 17 + 1)) if completed else None
    attributes: dict[str, Any] = {"AMOUNT": (n * 37) % 1000 + 0.5, "DUE": (start + timedelta(days=30)).isoformat()}
    if n % 25 != 0:
        attributes["COUNTRY"] = COUNTRIES[n % 4]
    phases = []
    entered = 3 if completed else n % 3 + 1
    at = start
    for index, phase_id in enumerate(PHASES[:entered]):
        last_open = not completed and index == entered - 1
        duration = None if last_open else float((n % 5 + 1) * 3600 * (index + 1))
        ended = None if duration is None else at + timedelta(seconds=duration)
        phases.append((phase_id, at, ended, duration))
        at = ended or at
    active = "" if completed else PHASES[entered - 1]
    return Spec(n=n, state="completed" if completed else "open", status=status, status_now=status_now,
                start=start, end=end, active_phase=active, attributes=attributes, phases=phases)


SPECS = [spec(n) for n in range(300)]


def pv_instance(subaccount: Subaccount, name: str = "pv1") -> ServiceInstance:
    return instance_create(subaccount=subaccount, service="process-visibility", plan="standard", name=name)


def scenario_with_instances(instance: ServiceInstance, specs: list[Spec] = SPECS, *,
                            scenario_id: str = "onboarding") -> Scenario:
    """An active scenario of `instance` with one ProcessInstance (and its phases) per spec."""
    active = definition()
    assert problems(active) == [], problems(active)
    scenario = Scenario.objects.create(instance=instance, scenario_id=scenario_id, name="Onboarding",
                                       active=active, version=1, activated_at=BASE)
    rows = ProcessInstance.objects.bulk_create([_instance_row(scenario, s) for s in specs])
    InstancePhase.objects.bulk_create([
        InstancePhase(instance=row, scenario=scenario, phase_id=pid, started_at=started, ended_at=ended,
                      duration=duration)
        for row, s in zip(rows, specs, strict=True) for pid, started, ended, duration in s.phases
    ])
    return scenario


def _instance_row(scenario: Scenario, s: Spec) -> ProcessInstance:
    critical_at = None
    if s.state == "open" and s.n % 10 == 1:
        critical_at = s.start + timedelta(days=5)
    elif s.state == "open" and s.n % 10 == 2:
        critical_at = NOW + timedelta(days=365)  # not yet
    return ProcessInstance(
        scenario=scenario, key=f"pi:onboard\x1f{s.n}", label=str(s.n), state=s.state, status=s.status,
        start_time=s.start, end_time=s.end, last_event_at=s.end or s.start, cycle_time=s.cycle_time,
        active_phase=s.active_phase, critical_at=critical_at, attributes=s.attributes,
        event_count=2, updated_at=s.end or s.start,
    )


def events_for(scenario: Scenario, n: int) -> ProcessInstance:
    """Correlation rows and events for instance n: two participants joined on one key, sent
    out of order (the timeline orders by business time), plus another instance's event."""
    instance = ProcessInstance.objects.get(scenario=scenario, label=str(n))
    Correlation.objects.bulk_create([
        Correlation(scenario=scenario, definition_id="onboard", process_instance_id=str(n), instance_key=instance.key),
        Correlation(scenario=scenario, definition_id="payroll", process_instance_id=f"P{n}",
                    instance_key=instance.key),
    ])
    pv = scenario.instance
    rows = [("onboard", str(n), "INTERVIEW", 2), ("payroll", f"P{n}", "ADDED", 3), ("onboard", str(n), "CREATED", 0),
            ("onboard", str(n), "HIRED", 4), ("onboard", str(n + 1), "CREATED", 1), ("onboard", str(n), "UNKNOWN", 5)]
    Event.objects.bulk_create([
        Event(instance=pv, definition_id=d, process_instance_id=p, event_type=t, received_at=NOW,
              timestamp=instance.start_time + timedelta(hours=h), context={"step": h})
        for d, p, t, h in rows
    ])
    return instance


# Named apart from their fixture names, so that importing them does not shadow the arguments.
@pytest.fixture(name="pv")
def pv_fixture(subaccount: Subaccount) -> ServiceInstance:
    return pv_instance(subaccount)


@pytest.fixture(name="scenario")
def scenario_fixture(pv: ServiceInstance) -> Scenario:
    return scenario_with_instances(pv)
