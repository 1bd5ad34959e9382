"""Folding events into process instances: pure code, given a scenario's definition.

`Model` is a definition compiled for lookups; `instance_key` decides which process instance
a participant's (definition, instance id) belongs to; `fold` turns one instance's events,
sorted by business time, into the facts its row holds. Processing (services/processing.py)
always folds an instance from *all* its events, never from a delta: so events arriving out
of order, an event re-sent with its id, and a re-processing from scratch all end in the
same row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.utils.dateparse import parse_datetime

from . import scenario as scenario_module

Ref = tuple[str, str]  # (processDefinitionId, eventType)


class EventRow(NamedTuple):
    id: int
    definition_id: str
    process_instance_id: str
    event_type: str
    timestamp: datetime
    context: dict[str, Any]


@dataclass(frozen=True)
class Phase:
    id: str
    name: str
    starts: frozenset[Ref]
    ends: frozenset[Ref]


@dataclass(frozen=True)
class Calculated:
    id: str
    kind: str  # duration | month | quarter | year
    start: Ref | None = None
    end: Ref | None = None
    of: str = ""


@dataclass(frozen=True)
class Model:
    definitions: frozenset[str]
    business_keys: dict[str, str]  # processDefinitionId -> context attribute correlating across participants
    completing: frozenset[Ref]
    context: tuple[tuple[str, str, str], ...]  # (id, source key, type)
    phases: tuple[Phase, ...]
    calculated: tuple[Calculated, ...]
    target: float | None  # seconds
    threshold: float  # percent

    @classmethod
    def compile(cls, definition: dict[str, Any]) -> Model:
        participants = definition.get("participants") or []
        status = definition.get("status") or {}
        return cls(
            definitions=frozenset(p["processDefinitionId"] for p in participants),
            business_keys={p["processDefinitionId"]: p["businessKeyAttribute"]
                           for p in participants if p.get("businessKeyAttribute")},
            completing=_refs(definition.get("state", {}).get("completingEvents")),
            context=tuple((a["id"], a.get("source") or a["id"], a.get("type", "String"))
                          for a in definition.get("context") or []),
            phases=tuple(Phase(p["id"], p.get("name") or p["id"], _refs(p.get("startEvents")),
                               _refs(p.get("endEvents"))) for p in definition.get("phases") or []),
            calculated=tuple(_calculated(a) for a in definition.get("attributes") or []),
            target=scenario_module.target_seconds(definition),
            threshold=float(status.get("threshold", 80)),
        )


def _refs(refs: Iterable[dict[str, Any]] | None) -> frozenset[Ref]:
    return frozenset((str(r["participant"]), str(r["eventType"])) for r in refs or [])


def _calculated(attribute: dict[str, Any]) -> Calculated:
    if attribute["kind"] == "duration":
        start, end = attribute["from"], attribute["to"]
        return Calculated(attribute["id"], "duration", (start["participant"], start["eventType"]),
                          (end["participant"], end["eventType"]))
    return Calculated(attribute["id"], attribute["kind"], of=attribute["of"])


def pair_key(definition_id: str, process_instance_id: str) -> str:
    return f"pi:{definition_id}\x1f{process_instance_id}"


def instance_key(model: Model, definition_id: str, process_instance_id: str, events: Sequence[EventRow]) -> str:
    """The process instance a participant's instance belongs to: by the business key when its
    participant has one and an event carries it (the earliest such event decides), else its own."""
    attribute = model.business_keys.get(definition_id)
    if attribute:
        for event in events:  # sorted by business time
            value = event.context.get(attribute)
            if value not in (None, ""):
                return f"bk:{value}"
    return pair_key(definition_id, process_instance_id)


@dataclass
class Facts:
    """What an instance's row holds, folded from its events."""

    label: str
    state: str
    status: str
    start_time: datetime
    end_time: datetime | None
    last_event_at: datetime
    cycle_time: float | None
    active_phase: str
    at_risk_at: datetime | None
    critical_at: datetime | None
    attributes: dict[str, Any]
    event_count: int
    phases: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)


def sort_key(event: EventRow) -> tuple[datetime, int]:
    return event.timestamp, event.id  # business time first; arrival breaks ties


def fold(model: Model, events: Sequence[EventRow], *, now: datetime) -> Facts:
    """`events` sorted by sort_key, at least one."""
    start, last = events[0].timestamp, events[-1].timestamp
    first_seen: dict[Ref, datetime] = {}
    end_time = None
    for event in events:
        ref = (event.definition_id, event.event_type)
        first_seen.setdefault(ref, event.timestamp)
        if end_time is None and ref in model.completing:
            end_time = event.timestamp
    phases = _phases(model, events)
    at_risk_at = critical_at = None
    if model.target is not None:
        at_risk_at = start + timedelta(seconds=model.target * model.threshold / 100)
        critical_at = start + timedelta(seconds=model.target)
    attributes = _context(model, events)
    attributes.update(_calculated_values(model, first_seen, start, end_time, attributes))
    completed = end_time is not None
    return Facts(
        label=_label(events), state="completed" if completed else "open",
        status=status_at(end_time or now, at_risk_at, critical_at),
        start_time=start, end_time=end_time, last_event_at=last,
        cycle_time=(end_time - start).total_seconds() if end_time is not None else None,
        active_phase="" if completed else _active_phase(phases),
        at_risk_at=at_risk_at, critical_at=critical_at, attributes=attributes, event_count=len(events),
        phases=phases,
    )


def status_at(moment: datetime, at_risk_at: datetime | None, critical_at: datetime | None) -> str:
    if critical_at is not None and moment > critical_at:
        return "critical"
    if at_risk_at is not None and moment > at_risk_at:
        return "at_risk"
    return "on_track"


def _label(events: Sequence[EventRow]) -> str:
    ids = list(dict.fromkeys(event.process_instance_id for event in events))
    return ", ".join(ids)[:300]


def _phases(model: Model, events: Sequence[EventRow]) -> list[tuple[str, datetime, datetime | None]]:
    """Each phase from the first of its start events to the first of its end events after it."""
    entered = []
    for phase in model.phases:
        started = ended = None
        for event in events:
            ref = (event.definition_id, event.event_type)
            if started is None and ref in phase.starts:
                started = event.timestamp
            elif started is not None and ref in phase.ends:
                ended = event.timestamp
                break
        if started is not None:
            entered.append((phase.id, started, ended))
    return entered


def _active_phase(phases: list[tuple[str, datetime, datetime | None]]) -> str:
    running = [(started, phase_id) for phase_id, started, ended in phases if ended is None]
    return max(running)[1] if running else ""


def _context(model: Model, events: Sequence[EventRow]) -> dict[str, Any]:
    """The scenario's context attributes, the latest event's value winning, in their types;
    a value that does not fit its type is left out rather than failing the instance."""
    values: dict[str, Any] = {}
    for event in events:
        for attribute_id, source, kind in model.context:
            if source in event.context:
                typed = _typed(event.context[source], kind)
                if typed is not None:
                    values[attribute_id] = typed
    return values


def _typed(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "Number":
        if isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "Date":
        moment = parse_datetime(str(value)) if not isinstance(value, datetime) else value
        if moment is None:
            return None
        return moment.isoformat()
    return str(value)


def _calculated_values(model: Model, first_seen: dict[Ref, datetime], start: datetime, end: datetime | None,
                       attributes: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in model.calculated:
        if attribute.kind == "duration":
            begin = first_seen.get(attribute.start) if attribute.start else None
            finish = first_seen.get(attribute.end) if attribute.end else None
            if begin is not None and finish is not None and finish >= begin:
                values[attribute.id] = (finish - begin).total_seconds()
            continue
        moment = _moment(attribute.of, start, end, attributes)
        if moment is not None:
            values[attribute.id] = period(moment, attribute.kind)
    return values


def _moment(source: str, start: datetime, end: datetime | None, attributes: dict[str, Any]) -> datetime | None:
    if source == "startTime":
        return start
    if source == "endTime":
        return end
    value = attributes.get(source)
    return parse_datetime(value) if isinstance(value, str) else None


def period(moment: datetime, kind: str) -> str:
    if kind == "year":
        return f"{moment.year:04d}"
    if kind == "quarter":
        return f"{moment.year:04d}-Q{(moment.month - 1) // 3 + 1}"
    return f"{moment.year:04d}-{moment.month:02d}"
