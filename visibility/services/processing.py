"""Processing: folding acquired events into process instances.

A run takes an instance's buffer (BufferedEvent rows) in batches, and for each
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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from meshsite.platform.models import Service, ServiceInstance

from .. import bulk
from ..buffer import buffer_count
from ..engine import EventRow, Facts, Model, fold, instance_key, sort_key
from ..models import (
    BufferedEvent,
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
REBUILD_LOCK = 0x5056  # "PV": the advisory-lock namespace of scenario rebuilds
Pair = tuple[str, str]  # (definition id, process instance id)
EVENT_FIELDS = ("id", "definition_id", "process_instance_id", "event_type", "timestamp", "context")
PHASE_FIELDS = ["instance_id", "scenario_id", "phase_id", "started_at", "ended_at", "duration"]
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
            if scenario.rebuild_pending and _rebuild(scenario, tallies[scenario.pk], now):
                runs[scenario.pk].trigger = RunTrigger.REBUILD
        while _buffer_batch(instance, tallies, now) >= settings.MESH_PV_PROCESSING_BATCH:
            pass
    except Exception as error:
        _finish(instance, runs, tallies, error=error)
        raise
    _finish(instance, runs, tallies)
    return list(runs.values())


def _finish(instance: ServiceInstance, runs: dict[int, ProcessingRun], tallies: dict[int, Tally],
            error: Exception | None = None) -> None:
    in_buffer = buffer_count(instance_id=instance.pk)
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
        # Only which participant instances the batch touches: their events are read in full
        # (buffered or not) by the fold, so the buffer's own rows need not be.
        batch = list(BufferedEvent.objects.select_for_update(skip_locked=True, of=("self",))
                     .filter(instance=instance).order_by("event_id")
                     .values_list("event_id", "event__definition_id", "event__process_instance_id")
                     [:settings.MESH_PV_PROCESSING_BATCH])
        rows = [(pk, d, p) for pk, d, p in batch]
        if not rows:
            return 0
        taken: set[int] = set()
        for scenario, model in models:
            mine = [(pk, d, p) for pk, d, p in rows if d in model.definitions]
            taken.update(pk for pk, _, _ in mine)
            tally = tallies[scenario.pk]
            mine = [row for row in mine if row[0] > tally.rebuilt_through]
            tally.add(_fold_pairs(scenario, model, {(d, p) for _, d, p in mine}, now, processed=len(mine),
                                  seen=tally.seen))
        unmatched = [pk for pk, _, _ in rows if pk not in taken]
        for tally in tallies.values():
            tally.unmatched += len(unmatched)
        if unmatched:
            Event.objects.filter(id__any=unmatched).update(matched=False)
        BufferedEvent.objects.filter(event_id__any=[pk for pk, _, _ in rows]).delete()
        return len(rows)


def _rebuild(scenario: Scenario, tally: Tally, now: datetime) -> bool:
    """Fold every stored event of the scenario's participants; False when another run holds
    the scenario's rebuild (it does the work) or none is pending any more."""
    with _rebuild_claim(scenario) as claimed:
        if not claimed:
            return False
        after, generation = 0, None
        while True:
            with transaction.atomic():
                models = _locked_models([scenario.pk])
                if not models or not models[0][0].rebuild_pending:  # deactivated, or rebuilt meanwhile
                    return generation is not None
                locked, model = models[0]
                if locked.rebuild_generation != generation:  # (cleared again meanwhile:) from the start
                    after, generation = 0, locked.rebuild_generation
                    # Events once reported as taken by no scenario: this one may take them.
                    Event.objects.filter(instance_id=scenario.instance_id, matched=False,
                                         definition_id__in=model.definitions).update(matched=None)
                rows = [EventRow(*row) for row in (
                    Event.objects.filter(instance_id=scenario.instance_id, definition_id__in=model.definitions,
                                         id__gt=after).order_by("id").values_list(*EVENT_FIELDS)
                    [:settings.MESH_PV_PROCESSING_BATCH])]
                if rows:
                    tally.add(_fold_pairs(locked, model, {(r.definition_id, r.process_instance_id) for r in rows},
                                          now, processed=len(rows), seen=tally.seen))
                    after = tally.rebuilt_through = rows[-1].id
                if len(rows) < settings.MESH_PV_PROCESSING_BATCH:
                    Scenario.objects.filter(pk=scenario.pk, rebuild_generation=generation).update(
                        rebuild_pending=False)
                    return True


@contextmanager
def _rebuild_claim(scenario: Scenario) -> Iterator[bool]:
    """One rebuild of a scenario at a time: the schedule and the wake-up after a clear often
    start together, and each would otherwise fold every stored event. On PostgreSQL a
    session advisory lock (released if the process dies); SQLite runs one writer anyway."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = (REBUILD_LOCK << 32) | (scenario.pk & 0xFFFFFFFF)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        claimed = bool(cursor.fetchone()[0])
    try:
        yield claimed
    finally:
        if claimed:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def _events_of(instance_id: UUID, pairs: set[Pair]) -> dict[Pair, list[EventRow]]:
    found: dict[Pair, list[EventRow]] = defaultdict(list)
    if not pairs:
        return found
    pids = {pid for _, pid in pairs}
    for row in (Event.objects.filter(instance_id=instance_id, process_instance_id__any=list(pids))
                .values_list(*EVENT_FIELDS)):
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
    rows = Correlation.objects.filter(scenario=scenario, process_instance_id__any=list({pid for _, pid in pairs}))
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
    others = {(d, p): key for d, p, key in Correlation.objects.filter(scenario=scenario, instance_key__any=list(keys))
              .values_list("definition_id", "process_instance_id", "instance_key") if (d, p) not in pairs}
    events.update(_events_of(scenario.instance_id, set(others)))
    for pair, key in others.items():
        members[key].append(pair)
    facts = {key: fold(model, list(heapq.merge(*(events[pair] for pair in group), key=sort_key)), now=now)
             for key, group in members.items() if any(events.get(pair) for pair in group)}
    existing = set(ProcessInstance.objects.filter(scenario=scenario, key__any=list(keys))
                   .values_list("key", flat=True))
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
    rows = [(scenario.pk, key, f.label, f.state, f.status, f.start_time, f.end_time, f.last_event_at, f.cycle_time,
             f.active_phase, f.at_risk_at, f.critical_at, f.attributes, f.event_count, now)
            for key, f in facts.items()]
    written = bulk.upsert(ProcessInstance, ["scenario_id", "key", *INSTANCE_FIELDS], rows,
                          unique=["scenario_id", "key"], returning="id")
    ids = {key: pk for pk, _, key in written}
    InstancePhase.objects.filter(instance_id__any=list(ids.values())).delete()
    bulk.insert(InstancePhase, PHASE_FIELDS, [
        (ids[key], scenario.pk, phase_id, started, ended, (ended - started).total_seconds() if ended else None)
        for key, f in facts.items() for phase_id, started, ended in f.phases
    ])


def _write_correlations(scenario: Scenario, changed: dict[Pair, str]) -> None:
    bulk.upsert(Correlation, ["scenario_id", "definition_id", "process_instance_id", "instance_key"],
                [(scenario.pk, d, p, key) for (d, p), key in changed.items()],
                unique=["scenario_id", "definition_id", "process_instance_id"])


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
    busy = set(BufferedEvent.objects.values_list("instance_id", flat=True).distinct())
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
