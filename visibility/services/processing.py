"""Processing: folding acquired events into process instances.

A run takes an instance's buffer (events with processed=False) in batches, and for each
active scenario that takes an event's definition re-folds every process instance the batch
touches from *all* its stored events (engine.py says why: order and replays do not matter).
Which instance a participant's (definition, instance id) belongs to is kept in Correlation,
so that an instance correlated across participants by a business key is found again when
only one participant sends new events, and moves when the key first appears.

Locks: each batch locks the instance's active scenarios (in id order) and then its buffered
events with SKIP LOCKED, so two runs of one instance (the beat job and "process now") do not
fold the same scenario at once, and a sender's re-sent event waits for the batch that holds
it, then goes back to the buffer. A rebuild (after "clear processed data" or an activation)
reads every stored event of the scenario's participants in id order, one batch per
transaction under the same scenario lock.

Cost per batch: one read of the buffer, one read of the touched instances' events and of
their correlation rows, one upsert each of instances, phases and correlation rows, two
updates of the buffer (numbers in docs/performance.md).
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from meshsite.platform.models import Service, ServiceInstance

from ..engine import EventRow, Facts, Model, fold, instance_key, sort_key
from ..models import (
    Correlation,
    Event,
    InstancePhase,
    InstanceState,
    InstanceStatus,
    ProcessingRun,
    ProcessInstance,
    RunStatus,
    RunTrigger,
    Scenario,
)

log = logging.getLogger(__name__)
Pair = tuple[str, str]  # (definition id, process instance id)
EVENT_FIELDS = ("id", "definition_id", "process_instance_id", "event_type", "timestamp", "context")
INSTANCE_FIELDS = ["label", "state", "status", "start_time", "end_time", "last_event_at", "cycle_time",
                   "active_phase", "at_risk_at", "critical_at", "attributes", "event_count", "updated_at"]


@dataclass
class Tally:
    processed: int = 0
    unmatched: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    seen: set[str] = field(default_factory=set)  # instance keys written in this run
    rebuilt_through: int = 0  # a rebuild in this run folded every event up to this id already

    def add(self, other: Tally) -> None:
        self.processed += other.processed
        self.unmatched += other.unmatched
        self.deleted += other.deleted
        self.created += other.created
        self.updated += other.updated


def instance_process(*, instance: ServiceInstance, trigger: str = RunTrigger.SCHEDULE,
                     now: datetime | None = None) -> list[ProcessingRun]:
    """Run the pending rebuilds and then the buffer of one Process Visibility instance; one
    ProcessingRun per active scenario records what it did."""
    now = now or timezone.now()
    scenarios = list(Scenario.objects.filter(instance=instance, active__isnull=False).order_by("pk"))
    runs = {scenario.pk: ProcessingRun.objects.create(scenario=scenario, trigger=trigger, started_at=timezone.now())
            for scenario in scenarios}
    tallies = {scenario.pk: Tally() for scenario in scenarios}
    try:
        for scenario in scenarios:
            if scenario.rebuild_pending:
                runs[scenario.pk].trigger = RunTrigger.REBUILD
                _rebuild(scenario, tallies[scenario.pk], now)
        while _buffer_batch(instance, tallies, now) >= settings.MESH_PV_PROCESSING_BATCH:
            pass
    except Exception as error:
        _finish(instance, runs, tallies, error=error)
        raise
    _finish(instance, runs, tallies)
    return list(runs.values())


def _finish(instance: ServiceInstance, runs: dict[int, ProcessingRun], tallies: dict[int, Tally],
            error: Exception | None = None) -> None:
    in_buffer = Event.objects.filter(instance=instance, processed=False).count()
    for scenario_id, run in runs.items():
        tally = tallies[scenario_id]
        run.status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
        run.error = f"{type(error).__name__}: {error}"[:2000] if error else ""
        run.finished_at = timezone.now()
        run.events_processed, run.events_unmatched = tally.processed, tally.unmatched
        run.instances_created, run.instances_updated = tally.created, tally.updated
        run.instances_deleted, run.events_in_buffer = tally.deleted, in_buffer
        run.save()


def _locked_models(scenario_ids: Iterable[int]) -> list[tuple[Scenario, Model]]:
    locked = Scenario.objects.select_for_update().filter(pk__in=list(scenario_ids), active__isnull=False)
    return [(scenario, Model.compile(scenario.active or {})) for scenario in locked.order_by("pk")]


def _buffer_batch(instance: ServiceInstance, tallies: dict[int, Tally], now: datetime) -> int:
    with transaction.atomic():
        models = _locked_models(tallies)
        rows = [EventRow(*row) for row in (
            Event.objects.select_for_update(skip_locked=True)
            .filter(instance=instance, processed=False).order_by("id")
            .values_list(*EVENT_FIELDS)[:settings.MESH_PV_PROCESSING_BATCH])]
        if not rows:
            return 0
        taken: set[int] = set()
        for scenario, model in models:
            mine = [row for row in rows if row.definition_id in model.definitions]
            taken.update(row.id for row in mine)
            tally = tallies[scenario.pk]
            mine = [row for row in mine if row.id > tally.rebuilt_through]
            tally.add(_fold_pairs(scenario, model, {(r.definition_id, r.process_instance_id) for r in mine}, now,
                                  processed=len(mine), seen=tally.seen))
        unmatched = [row.id for row in rows if row.id not in taken]
        for tally in tallies.values():
            tally.unmatched += len(unmatched)
        Event.objects.filter(id__in=list(taken)).update(processed=True, matched=True)
        Event.objects.filter(id__in=unmatched).update(processed=True, matched=False)
        return len(rows)


def _rebuild(scenario: Scenario, tally: Tally, now: datetime) -> None:
    after = 0
    while True:
        with transaction.atomic():
            models = _locked_models([scenario.pk])
            if not models:  # deactivated meanwhile
                return
            locked, model = models[0]
            rows = [EventRow(*row) for row in (
                Event.objects.filter(instance_id=scenario.instance_id, definition_id__in=model.definitions,
                                     id__gt=after).order_by("id").values_list(*EVENT_FIELDS)
                [:settings.MESH_PV_PROCESSING_BATCH])]
            if rows:
                tally.add(_fold_pairs(locked, model, {(r.definition_id, r.process_instance_id) for r in rows}, now,
                                      processed=len(rows), seen=tally.seen))
                after = tally.rebuilt_through = rows[-1].id
            if len(rows) < settings.MESH_PV_PROCESSING_BATCH:
                Scenario.objects.filter(pk=scenario.pk).update(rebuild_pending=False)
                return


def _events_of(instance_id: UUID, pairs: set[Pair]) -> dict[Pair, list[EventRow]]:
    found: dict[Pair, list[EventRow]] = defaultdict(list)
    if not pairs:
        return found
    pids = {pid for _, pid in pairs}
    for row in (Event.objects.filter(instance_id=instance_id, process_instance_id__in=pids)
                .values_list(*EVENT_FIELDS).iterator(chunk_size=5000)):
        event = EventRow(*row)
        pair = (event.definition_id, event.process_instance_id)
        if pair in pairs:
            found[pair].append(event)
    for events in found.values():
        events.sort(key=sort_key)
    return found


def _correlations(scenario: Scenario, pairs: set[Pair]) -> dict[Pair, str]:
    if not pairs:
        return {}
    rows = Correlation.objects.filter(scenario=scenario, process_instance_id__in={pid for _, pid in pairs})
    return {(d, p): key for d, p, key in rows.values_list("definition_id", "process_instance_id", "instance_key")
            if (d, p) in pairs}


def _fold_pairs(scenario: Scenario, model: Model, pairs: set[Pair], now: datetime, *, processed: int,
                seen: set[str]) -> Tally:
    """Re-fold every process instance these participant instances belong to, or belonged to."""
    tally = Tally(processed=processed)
    if not pairs:
        return tally
    events = _events_of(scenario.instance_id, pairs)
    old = _correlations(scenario, pairs)
    new = {pair: instance_key(model, *pair, events[pair]) for pair in pairs if events.get(pair)}
    keys = set(old.values()) | set(new.values())
    members: dict[str, list[Pair]] = defaultdict(list)
    for pair, key in new.items():
        members[key].append(pair)
    others = {(d, p): key for d, p, key in Correlation.objects.filter(scenario=scenario, instance_key__in=keys)
              .values_list("definition_id", "process_instance_id", "instance_key") if (d, p) not in pairs}
    events.update(_events_of(scenario.instance_id, set(others)))
    for pair, key in others.items():
        members[key].append(pair)
    facts = {key: fold(model, list(heapq.merge(*(events[pair] for pair in group), key=sort_key)), now=now)
             for key, group in members.items() if any(events.get(pair) for pair in group)}
    existing = set(ProcessInstance.objects.filter(scenario=scenario, key__in=keys).values_list("key", flat=True))
    gone = existing - set(facts)
    tally.deleted = ProcessInstance.objects.filter(scenario=scenario, key__in=gone).delete()[1].get(
        ProcessInstance._meta.label, 0) if gone else 0
    _write_instances(scenario, facts, now)
    _write_correlations(scenario, {pair: key for pair, key in new.items() if old.get(pair) != key})
    fresh = set(facts) - seen
    tally.created = len(fresh - existing)
    tally.updated = len(fresh & existing)
    seen.update(fresh)
    return tally


def _write_instances(scenario: Scenario, facts: dict[str, Facts], now: datetime) -> None:
    if not facts:
        return
    rows = [ProcessInstance(scenario=scenario, key=key, label=f.label, state=f.state, status=f.status,
                            start_time=f.start_time, end_time=f.end_time, last_event_at=f.last_event_at,
                            cycle_time=f.cycle_time, active_phase=f.active_phase, at_risk_at=f.at_risk_at,
                            critical_at=f.critical_at, attributes=f.attributes, event_count=f.event_count,
                            updated_at=now)
            for key, f in facts.items()]
    written = ProcessInstance.objects.bulk_create(rows, update_conflicts=True, unique_fields=["scenario", "key"],
                                                  update_fields=INSTANCE_FIELDS)
    ids = {row.key: row.pk for row in written}
    if any(pk is None for pk in ids.values()):  # a backend that does not return ids on upsert
        ids = dict(ProcessInstance.objects.filter(scenario=scenario, key__in=list(facts))
                   .values_list("key", "pk"))
    InstancePhase.objects.filter(instance_id__in=list(ids.values())).delete()
    InstancePhase.objects.bulk_create([
        InstancePhase(instance_id=ids[key], scenario=scenario, phase_id=phase_id, started_at=started,
                      ended_at=ended, duration=(ended - started).total_seconds() if ended else None)
        for key, f in facts.items() for phase_id, started, ended in f.phases
    ])


def _write_correlations(scenario: Scenario, changed: dict[Pair, str]) -> None:
    if changed:
        Correlation.objects.bulk_create(
            [Correlation(scenario=scenario, definition_id=d, process_instance_id=p, instance_key=key)
             for (d, p), key in changed.items()],
            update_conflicts=True, unique_fields=["scenario", "definition_id", "process_instance_id"],
            update_fields=["instance_key"])


def instances_status_refresh(*, scenario: Scenario, now: datetime | None = None) -> int:
    """Move open instances whose time has come to At Risk / Critical; returns how many moved.
    Completed instances keep the status they had when they completed."""
    now = now or timezone.now()
    open_ = ProcessInstance.objects.filter(scenario=scenario, state=InstanceState.OPEN)
    critical = open_.filter(critical_at__lt=now).exclude(status=InstanceStatus.CRITICAL).update(
        status=InstanceStatus.CRITICAL)
    at_risk = open_.filter(at_risk_at__lt=now, status=InstanceStatus.ON_TRACK).update(status=InstanceStatus.AT_RISK)
    return critical + at_risk


def instances_due() -> list[ServiceInstance]:
    """The Process Visibility instances a scheduled run has work for."""
    busy = set(Event.objects.filter(processed=False).values_list("instance_id", flat=True).distinct())
    active = set(Scenario.objects.filter(active__isnull=False).values_list("instance_id", flat=True))
    return list(ServiceInstance.objects.filter(pk__in=busy | active, service=Service.PROCESS_VISIBILITY))


def processing_scheduled(*, now: datetime | None = None) -> int:
    """The beat job: every instance's buffer and rebuilds, then every active scenario's status."""
    count = 0
    for instance in instances_due():
        try:
            runs = instance_process(instance=instance, trigger=RunTrigger.SCHEDULE, now=now)
        except Exception:
            log.exception("processing of %s failed; its run says why, and the next run tries again", instance.pk)
            continue
        count += len(runs)
        for scenario in Scenario.objects.filter(instance=instance, active__isnull=False):
            instances_status_refresh(scenario=scenario, now=now)
    return count
