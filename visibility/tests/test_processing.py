"""Processing: events folded into process instances, correlated within and across
participants, in business-time order whatever the arrival order; status as time passes;
clear + re-process gives the same instances; runs recorded; one instance never touches another's."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.db.models import Model

from meshsite.errors import Conflict, Invalid

from ..buffer import buffer_add, buffer_count
from ..models import Event, InstancePhase, ProcessingRun, ProcessInstance, RunStatus, RunTrigger, Scenario
from ..scenario import problems
from ..services import (
    instance_process,
    instances_status_refresh,
    scenario_activate,
    scenario_create,
    scenario_data_clear,
    scenario_update,
)
from ..services.processing import REBUILD_LOCK
from .factories import T0, active_scenario, event, order_to_cash, pv_instance

D = timedelta(days=1)
H = timedelta(hours=1)


def _order(pv, order_id: str, start: timedelta, *, amount: int = 100, country: str = "DE", delivered: bool = True):
    """One order across two participants: the order's own instance id is o-<id>, the delivery's d-<id>."""
    event(pv, "order", f"o-{order_id}", "CREATED", start, ORDER_ID=order_id, COUNTRY=country, AMOUNT=amount)
    event(pv, "order", f"o-{order_id}", "APPROVED", start + 2 * H)
    event(pv, "delivery", f"d-{order_id}", "SHIPPED", start + D, ORDER_ID=order_id)
    if delivered:
        event(pv, "delivery", f"d-{order_id}", "DELIVERED", start + 3 * D)


def _snapshot(scenario: Scenario) -> list[tuple]:
    fields = ("key", "label", "state", "status", "start_time", "end_time", "last_event_at", "cycle_time",
              "active_phase", "at_risk_at", "critical_at", "attributes", "event_count")
    instances = list(ProcessInstance.objects.filter(scenario=scenario).order_by("key").values_list(*fields))
    phases = list(InstancePhase.objects.filter(scenario=scenario).order_by("instance__key", "phase_id")
                  .values_list("instance__key", "phase_id", "started_at", "ended_at", "duration"))
    return instances + phases


@pytest.fixture
def pv(subaccount):
    return pv_instance(subaccount)


def test_events_of_two_participants_correlate_by_business_key_into_one_instance(pv):
    scenario = active_scenario(pv)
    _order(pv, "4711", timedelta(0), amount=250, country="FR")
    [run] = instance_process(instance=pv, trigger=RunTrigger.MANUAL, now=T0 + 10 * D)
    instance = ProcessInstance.objects.get(scenario=scenario)
    assert instance.key == "bk:4711"
    assert instance.label == "o-4711, d-4711"
    assert (instance.state, instance.event_count) == ("completed", 4)
    assert instance.start_time == T0 and instance.end_time == T0 + 3 * D
    assert instance.cycle_time == (3 * D).total_seconds()
    assert instance.attributes == {"ORDER_ID": "4711", "COUNTRY": "FR", "AMOUNT": 250, "timeToShip": 86400.0,
                                   "orderMonth": "2026-03", "orderQuarter": "2026-Q1"}
    phases = dict(InstancePhase.objects.filter(instance=instance).values_list("phase_id", "duration"))
    assert phases == {"approval": 7200.0, "shipping": 2 * 86400.0}
    assert (run.status, run.events_processed, run.instances_created, run.events_in_buffer) == (
        RunStatus.SUCCEEDED, 4, 1, 0)
    assert buffer_count(instance_id=pv.pk) == 0


def test_within_a_participant_events_correlate_by_definition_and_instance_id(pv):
    definition = order_to_cash()
    for participant in definition["participants"]:
        participant.pop("businessKeyAttribute")
    scenario = active_scenario(pv, definition)
    _order(pv, "1", timedelta(0))
    instance_process(instance=pv, now=T0 + D)
    keys = sorted(ProcessInstance.objects.filter(scenario=scenario).values_list("key", "event_count"))
    assert keys == [("pi:delivery\x1fd-1", 2), ("pi:order\x1fo-1", 2)]


def test_a_participant_instance_moves_when_its_business_key_first_arrives(pv):
    scenario = active_scenario(pv)
    event(pv, "delivery", "d-9", "SHIPPED", 5 * H)  # no ORDER_ID yet: an instance of its own
    event(pv, "order", "o-9", "CREATED", timedelta(0), ORDER_ID="9")
    instance_process(instance=pv, now=T0 + D)
    assert ProcessInstance.objects.filter(scenario=scenario).count() == 2
    event(pv, "delivery", "d-9", "DELIVERED", 2 * D, ORDER_ID="9")
    [run] = instance_process(instance=pv, now=T0 + 3 * D)
    [instance] = ProcessInstance.objects.filter(scenario=scenario)
    assert (instance.key, instance.event_count, instance.state) == ("bk:9", 3, "completed")
    assert run.instances_deleted == 1


def test_events_arriving_out_of_order_give_the_instance_in_business_time_order(pv):
    in_order, shuffled = pv, pv_instance(pv.subaccount, "pv2")
    first = active_scenario(in_order)
    second = active_scenario(shuffled)
    _order(in_order, "1", timedelta(0))
    instance_process(instance=in_order, now=T0 + 10 * D)
    # The same events, the last first, in three processing runs.
    event(shuffled, "delivery", "d-1", "DELIVERED", 3 * D)
    instance_process(instance=shuffled, now=T0 + 10 * D)
    event(shuffled, "delivery", "d-1", "SHIPPED", D, ORDER_ID="1")
    event(shuffled, "order", "o-1", "APPROVED", 2 * H)
    instance_process(instance=shuffled, now=T0 + 10 * D)
    event(shuffled, "order", "o-1", "CREATED", timedelta(0), ORDER_ID="1", COUNTRY="DE", AMOUNT=100)
    instance_process(instance=shuffled, now=T0 + 10 * D)
    assert _snapshot(first) == _snapshot(second)
    assert ProcessInstance.objects.get(scenario=second).start_time == T0


def test_status_moves_from_on_track_to_at_risk_to_critical_as_time_passes(pv):
    scenario = active_scenario(pv)  # target 10 days, threshold 50 %
    _order(pv, "1", timedelta(0), delivered=False)
    instance_process(instance=pv, now=T0 + 4 * D)

    def status() -> str:
        return ProcessInstance.objects.get(scenario=scenario).status

    assert status() == "on_track"
    assert instances_status_refresh(scenario=scenario, now=T0 + 5 * D) == 0  # exactly at the threshold
    assert instances_status_refresh(scenario=scenario, now=T0 + 5 * D + H) == 1
    assert status() == "at_risk"
    assert instances_status_refresh(scenario=scenario, now=T0 + 10 * D + H) == 1
    assert status() == "critical"
    instance = ProcessInstance.objects.get(scenario=scenario)
    assert (instance.active_phase, instance.state) == ("shipping", "open")


def test_a_completed_instance_keeps_the_status_it_completed_with(pv):
    scenario = active_scenario(pv)
    _order(pv, "1", timedelta(0))  # delivered after 3 days: on track
    instance_process(instance=pv, now=T0 + 30 * D)
    instances_status_refresh(scenario=scenario, now=T0 + 30 * D)
    instance = ProcessInstance.objects.get(scenario=scenario)
    assert (instance.state, instance.status, instance.active_phase) == ("completed", "on_track", "")


def test_resending_an_event_id_replaces_the_event_and_re_folds_the_instance(pv):
    scenario = active_scenario(pv)
    _order(pv, "1", timedelta(0), amount=100)
    instance_process(instance=pv, now=T0 + D)
    original = Event.objects.get(definition_id="order", event_type="CREATED")
    Event.objects.filter(pk=original.pk).update(context={"ORDER_ID": "1", "AMOUNT": 900, "COUNTRY": "DE"})
    buffer_add(instance_id=pv.pk, event_ids=[original.pk])
    instance_process(instance=pv, now=T0 + D)
    assert ProcessInstance.objects.get(scenario=scenario).attributes["AMOUNT"] == 900


def test_clearing_and_re_processing_rebuilds_identical_instances(pv):
    scenario = active_scenario(pv)
    for n in range(30):
        _order(pv, str(n), n * H, amount=n * 10, country=("DE", "FR", "US")[n % 3], delivered=n % 4 != 0)
    event(pv, "unknown", "x", "SOMETHING", timedelta(0))
    instance_process(instance=pv, now=T0 + 20 * D)
    before = _snapshot(scenario)
    assert len(before) > 30
    scenario_data_clear(scenario=scenario)
    assert not ProcessInstance.objects.filter(scenario=scenario).exists()
    [run] = instance_process(instance=pv, trigger=RunTrigger.MANUAL, now=T0 + 20 * D)
    assert _snapshot(scenario) == before
    assert (run.trigger, run.instances_created, run.events_processed) == (RunTrigger.REBUILD, 30, 30 * 4 - 30 // 4 - 1)
    assert not Scenario.objects.get(pk=scenario.pk).rebuild_pending


def test_events_no_active_scenario_takes_stay_stored_and_are_reported(pv):
    active_scenario(pv)
    event(pv, "payroll", "p-1", "PAID", timedelta(0))
    _order(pv, "1", timedelta(0))
    [run] = instance_process(instance=pv, now=T0 + D)
    unmatched = Event.objects.get(definition_id="payroll")
    assert unmatched.matched is False and buffer_count(instance_id=pv.pk) == 0
    assert (run.events_processed, run.events_unmatched) == (4, 1)


def test_processing_in_batches_gives_the_same_instances_as_one_batch(pv, settings):
    scenario = active_scenario(pv)
    for n in range(12):
        _order(pv, str(n), n * H)
    settings.MESH_PV_PROCESSING_BATCH = 5  # orders straddle batches
    instance_process(instance=pv, now=T0 + 20 * D)
    small = _snapshot(scenario)
    settings.MESH_PV_PROCESSING_BATCH = 5000
    scenario_data_clear(scenario=scenario)
    instance_process(instance=pv, now=T0 + 20 * D)
    assert _snapshot(scenario) == small
    assert ProcessInstance.objects.filter(scenario=scenario).count() == 12


def test_editing_an_active_scenario_makes_a_draft_while_the_active_version_serves(pv):
    scenario = active_scenario(pv)
    _order(pv, "1", timedelta(0))
    instance_process(instance=pv, now=T0 + D)
    changed = order_to_cash()
    changed["phases"] = []
    scenario = scenario_update(scenario=scenario, definition=changed)
    assert (scenario.active or {})["phases"] and (scenario.draft or {})["phases"] == []
    instance_process(instance=pv, now=T0 + D)
    assert InstancePhase.objects.filter(scenario=scenario).count() == 2  # the active version still phases
    scenario = scenario_activate(scenario=scenario)
    instance_process(instance=pv, now=T0 + D)
    assert scenario.version == 2 and scenario.draft is None
    assert not InstancePhase.objects.filter(scenario=scenario).exists()
    assert ProcessInstance.objects.filter(scenario=scenario).count() == 1


def test_a_draft_with_problems_cannot_be_activated_and_nothing_changes(pv):
    scenario = active_scenario(pv)
    broken = order_to_cash()
    broken["phases"][0]["startEvents"] = [{"participant": "order", "eventType": "NOPE"}]
    broken["status"]["threshold"] = 150
    scenario = scenario_update(scenario=scenario, definition=broken)
    with pytest.raises(Invalid) as refused:
        scenario_activate(scenario=scenario)
    paths = [problem["path"] for problem in refused.value.extra["problems"]]
    assert paths == ["status.threshold", "phases[0].startEvents[0]"]
    assert Scenario.objects.get(pk=scenario.pk).version == 1


def test_a_scenario_never_activated_has_no_processed_data_to_clear(pv):
    draft = scenario_create(instance=pv, scenario_id="new", name="New")
    with pytest.raises(Conflict):
        scenario_data_clear(scenario=draft)
    assert problems(draft.draft)  # a new scenario names no events yet: it cannot be activated


def test_processing_one_instance_never_touches_another_instances_scenarios(pv):
    mine = active_scenario(pv)
    other_pv = pv_instance(pv.subaccount, "other")
    theirs = active_scenario(other_pv)
    _order(pv, "1", timedelta(0))
    _order(other_pv, "1", timedelta(0))  # the same ids and business key in another instance
    instance_process(instance=pv, now=T0 + D)
    assert ProcessInstance.objects.filter(scenario=mine).count() == 1
    assert not ProcessInstance.objects.filter(scenario=theirs).exists()
    assert buffer_count(instance_id=other_pv.pk) == 4
    instance_process(instance=other_pv, now=T0 + D)
    assert ProcessInstance.objects.get(scenario=theirs).event_count == 4
    assert ProcessInstance.objects.get(scenario=mine).event_count == 4


def test_a_failing_run_is_recorded_with_its_error_and_the_events_stay_in_the_buffer(pv, monkeypatch):
    active_scenario(pv)
    _order(pv, "1", timedelta(0))
    from ..services import processing

    def broken(*args: object, **kwargs: object) -> Model:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(processing, "_write_instances", broken)
    with pytest.raises(RuntimeError):
        instance_process(instance=pv, now=T0 + D)
    run = ProcessingRun.objects.get()
    assert (run.status, run.events_in_buffer) == (RunStatus.FAILED, 4)
    assert buffer_count(instance_id=pv.pk) == 4
    assert "disk on fire" in run.error


def test_a_rebuild_cleared_again_meanwhile_starts_over_and_ends_complete(pv, settings, monkeypatch):
    scenario = active_scenario(pv)
    for n in range(8):
        _order(pv, str(n), n * H)
    instance_process(instance=pv, now=T0 + 20 * D)
    expected = _snapshot(scenario)
    from ..services import processing

    settings.MESH_PV_PROCESSING_BATCH = 6
    real, calls = processing._fold_pairs, []

    def clearing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # in the middle of the rebuild, someone clears the data again
            scenario_data_clear(scenario=scenario)
        return real(*args, **kwargs)

    monkeypatch.setattr(processing, "_fold_pairs", clearing_once)
    scenario_data_clear(scenario=scenario)
    instance_process(instance=pv, now=T0 + 20 * D)
    assert _snapshot(scenario) == expected
    assert not Scenario.objects.get(pk=scenario.pk).rebuild_pending


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's advisory locks (SQLite has one writer)")
def test_a_rebuild_another_run_holds_is_left_to_it(pv):

    scenario = active_scenario(pv)
    _order(pv, "1", timedelta(0))
    settings_dict = connection.settings_dict
    other = psycopg.connect(host=settings_dict["HOST"], port=settings_dict["PORT"] or 5432,
                            user=settings_dict["USER"], dbname=settings_dict["NAME"], autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [(REBUILD_LOCK << 32) | scenario.pk])
        [run] = instance_process(instance=pv, now=T0 + D)
        assert run.trigger != RunTrigger.REBUILD and Scenario.objects.get(pk=scenario.pk).rebuild_pending
        assert ProcessInstance.objects.filter(scenario=scenario).count() == 1  # the buffer is still folded
    finally:
        other.close()
    [run] = instance_process(instance=pv, now=T0 + D)
    assert run.trigger == RunTrigger.REBUILD and not Scenario.objects.get(pk=scenario.pk).rebuild_pending
