"""Reads for the process workspace: indicator values, the instance list and one instance's page.

Everything reads the scenario's ACTIVE definition (a draft never serves). An indicator is one
grouped query over ProcessInstance (or InstancePhase for step cycle times): the dimension is
an expression grouped by, the measure an aggregate over it, the filters a WHERE; the tiles of
a page that share a dimension share that query (`indicators`). An open instance's status is
taken at `now` from its at_risk_at / critical_at, so tiles and lists agree with the clock
between processing runs, not only with the last run.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.models import (
    Avg,
    Case,
    Count,
    DateTimeField,
    F,
    FloatField,
    Func,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from meshsite.errors import Invalid, NotFound
from meshsite.platform.models import ServiceInstance

from .models import Correlation, Event, InstancePhase, InstanceState, InstanceStatus, ProcessInstance, Scenario
from .scenario import BUILT_IN

AGGREGATES = {"count": Count, "sum": Sum, "avg": Avg, "min": Min, "max": Max}
# Spelled into SQL by _grouped: only these names, whatever a stored definition holds.
SQL_AGGREGATES = {"count": "COUNT", "sum": "SUM", "avg": "AVG", "min": "MIN", "max": "MAX"}
# Built-in attributes that are columns of ProcessInstance.
COLUMNS = {"state": "state", "phase": "active_phase", "startTime": "start_time", "endTime": "end_time",
           "cycleTime": "cycle_time"}
NO_VALUE = "(none)"
MONTH = re.compile(r"^\d{4}-\d{2}$")
PAGE_LIMIT = 200

Value_ = dict[str, Any]


# --- the definition ---------------------------------------------------------------------------


def scenario_active(*, instance: ServiceInstance, scenario_id: str) -> Scenario:
    """The instance's scenario, if it has an active version (the only one the workspace serves)."""
    scenario = Scenario.objects.filter(instance=instance, scenario_id=scenario_id).first()
    if scenario is None:
        raise NotFound(f"No scenario {scenario_id!r} in this instance")
    if scenario.active is None:
        raise NotFound(f"Scenario {scenario_id!r} is not active")
    return scenario


def scenarios_active(*, instance: ServiceInstance) -> list[Scenario]:
    return list(Scenario.objects.filter(instance=instance, active__isnull=False).order_by("name"))


def attribute_types(definition: dict[str, Any]) -> dict[str, str]:
    """Every attribute id the definition knows, with its type (String, Number, Date)."""
    types = dict(BUILT_IN)
    for attribute in definition.get("context") or []:
        types[attribute["id"]] = attribute.get("type", "String")
    for attribute in definition.get("attributes") or []:
        types[attribute["id"]] = "Number" if attribute.get("kind") == "duration" else "String"
    return types


def attribute_names(definition: dict[str, Any]) -> dict[str, str]:
    names = {"state": "State", "status": "Status", "phase": "Phase", "month": "Month", "startTime": "Start time",
             "endTime": "End time", "cycleTime": "Cycle time", "phaseDuration": "Step cycle time"}
    for attribute in [*(definition.get("context") or []), *(definition.get("attributes") or [])]:
        names[attribute["id"]] = attribute.get("name") or attribute["id"]
    return names


def phase_names(definition: dict[str, Any]) -> dict[str, str]:
    return {phase["id"]: phase.get("name") or phase["id"] for phase in definition.get("phases") or []}


def is_duration(definition: dict[str, Any], attribute: str | None) -> bool:
    """Whether a Number attribute holds seconds (shown as "2 d 4 h")."""
    if attribute in ("cycleTime", "phaseDuration"):
        return True
    return any(a.get("id") == attribute and a.get("kind") == "duration" for a in definition.get("attributes") or [])


# --- expressions ------------------------------------------------------------------------------


class MonthStart(Func):
    """The first moment of a timestamp's month in UTC (PostgreSQL's date_trunc: measured a third
    cheaper than formatting the month as text for 100,000 rows; the label is made in Python)."""

    template = "DATE_TRUNC('month', %(expressions)s AT TIME ZONE 'UTC')"
    output_field = DateTimeField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # SQLite keeps a timestamp as UTC text; '%%%%' is a '%' once Django and the driver have read it.
        return super().as_sql(compiler, connection, template="STRFTIME('%%%%Y-%%%%m-01 00:00:00', %(expressions)s)",
                              **extra)


def status_now(now: datetime) -> Case:
    """An instance's status at `now`: a completed instance keeps its last one."""
    return Case(
        When(state=InstanceState.OPEN, critical_at__lte=now, then=Value(InstanceStatus.CRITICAL.value)),
        When(state=InstanceState.OPEN, at_risk_at__lte=now, then=Value(InstanceStatus.AT_RISK.value)),
        default=F("status"),
    )


def _attribute(attribute: str, types: dict[str, str]) -> Any:
    """The expression of an attribute of ProcessInstance (a column or a key of `attributes`)."""
    if attribute == "status":
        return F("status_now")
    if attribute == "month":
        return MonthStart("start_time")
    if attribute in COLUMNS:
        return F(COLUMNS[attribute])
    text = KeyTextTransform(attribute, "attributes")
    return Cast(text, FloatField()) if types.get(attribute) == "Number" else text


def _filter_expression(attribute: str, types: dict[str, str]) -> Any:
    # A String key is compared as JSON (KeyTransformIn encodes the values): SQLite refuses a
    # JSON lookup's IN on the extracted text, and PostgreSQL answers the same either way.
    if attribute in COLUMNS or attribute in ("month", "status") or types.get(attribute) == "Number":
        return _attribute(attribute, types)
    return KeyTransform(attribute, "attributes")


def _filter_value(value: Any, attribute: str, types: dict[str, str], parameter: str) -> Any:
    if attribute == "month":
        if not MONTH.match(str(value)):
            raise Invalid(f"{parameter} must be a month, YYYY-MM", extra={"parameter": parameter})
        return datetime(int(str(value)[:4]), int(str(value)[5:]), 1, tzinfo=UTC)
    if types.get(attribute) == "Number":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise Invalid(f"{parameter} must be a number", extra={"parameter": parameter}) from None
    return str(value)


def _condition(attribute: str, values: list[Any], types: dict[str, str], parameter: str) -> Q:
    """`attribute` IN `values`, through an alias the caller annotates (see _filtered)."""
    return Q(**{f"{_alias(attribute)}__in": [_filter_value(v, attribute, types, parameter) for v in values]})


def _alias(attribute: str) -> str:
    return "status_now" if attribute == "status" else f"f_{attribute}".replace(".", "_").replace("-", "_")


Conditions = list[tuple[str, list[Any], str]]  # (attribute, values, the parameter to name when refused)


def _where(queryset: QuerySet, conditions: Conditions, types: dict[str, str]) -> tuple[QuerySet, Q | None]:
    """The queryset with the aliases the conditions read, and the conditions as one Q."""
    where = Q()
    for attribute, values, parameter in conditions:
        if attribute not in types:
            raise Invalid(f"{parameter}: no attribute {attribute!r} in the scenario", extra={"parameter": parameter})
        if attribute != "status":
            queryset = queryset.alias(**{_alias(attribute): _filter_expression(attribute, types)})
        where &= _condition(attribute, values, types, parameter)
    return queryset, where or None


def _filtered(queryset: QuerySet, conditions: Conditions, types: dict[str, str]) -> QuerySet:
    queryset, where = _where(queryset, conditions, types)
    return queryset.filter(where) if where else queryset


def _instances(scenario: Scenario, now: datetime) -> QuerySet[ProcessInstance]:
    return ProcessInstance.objects.filter(scenario=scenario).alias(status_now=status_now(now))


# --- indicators -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Indicator:
    id: str
    title: str
    chart: str
    measure: dict[str, Any]
    dimension: str | None
    duration: bool  # the values are seconds
    values: list[Value_] = field(default_factory=list)


def indicator_values(*, scenario: Scenario, indicator: dict[str, Any], now: datetime | None = None) -> list[Value_]:
    """[{"label", "value"}] of one indicator of the active definition: one grouped query."""
    definition = scenario.active or {}
    types = attribute_types(definition)
    measure = indicator.get("measure") or {"aggregate": "count"}
    dimension = indicator.get("dimension")
    conditions = _tile_conditions(indicator)
    if measure.get("attribute") == "phaseDuration":
        return _phase_durations(scenario, conditions, measure["aggregate"], definition, now or timezone.now())
    queryset = _filtered(_instances(scenario, now or timezone.now()), conditions, types)
    rows = _grouped(queryset, _attribute(dimension, types) if dimension else None, [(measure, None)], types)
    return _tile_values(rows, 0, indicator, definition)


Cells = list[tuple[Any, list[tuple[Any, int]]]]  # (dimension value, [(tile's value, rows it counted)])


def _grouped(queryset: QuerySet, dimension: Any, tiles: list[tuple[dict[str, Any], Q | None]],
             types: dict[str, str]) -> Cells:
    """Tiles' values from ONE grouped query: the inner query (the ORM's) gives each row's
    dimension and each tile's input, NULL where the tile's filters leave the row out; the outer
    one aggregates. Measured at 100,000 instances, the ORM's own GROUP BY sorted every row with
    its whole attributes JSON (the planner cannot know a JSON key holds few values), 2-3x slower
    than hashing these narrow rows; OFFSET 0 keeps PostgreSQL from folding the inner query in."""
    columns: dict[str, Any] = {"d": dimension} if dimension is not None else {}
    outer = ["d"] if dimension is not None else []
    for index, (measure, where) in enumerate(tiles):
        if measure.get("aggregate") not in SQL_AGGREGATES:
            raise Invalid(f"measure.aggregate must be one of {', '.join(SQL_AGGREGATES)}")
        value = Value(1) if measure["aggregate"] == "count" else _attribute(measure["attribute"], types)
        columns[f"v{index}"] = Case(When(where, then=value)) if where else value
        columns[f"n{index}"] = Case(When(where, then=Value(1))) if where else Value(1)
        outer += [f"{SQL_AGGREGATES[measure['aggregate']]}(v{index})", f"COUNT(n{index})"]
    inner, params = queryset.order_by().values(**columns).query.sql_with_params()
    connection = connections[queryset.db]
    fence = " OFFSET 0" if connection.vendor == "postgresql" else ""
    grouping = " GROUP BY d ORDER BY d" if dimension is not None else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(outer)} FROM ({inner}{fence}) tiles{grouping}", params)
        rows = cursor.fetchall()
    first = 1 if dimension is not None else 0
    return [(row[0] if first else None, [(row[first + 2 * i], row[first + 2 * i + 1]) for i in range(len(tiles))])
            for row in rows]


def _tile_values(rows: Cells, index: int, item: dict[str, Any], definition: dict[str, Any]) -> list[Value_]:
    dimension = item.get("dimension")
    if dimension is None:
        return [{"label": item.get("title") or "", "value": rows[0][1][index][0]}]
    aggregate = (item.get("measure") or {"aggregate": "count"})["aggregate"]
    return _labelled({key: cells[index][0] for key, cells in rows if cells[index][1]}, dimension, aggregate,
                     definition)


def _tile_conditions(indicator: dict[str, Any]) -> Conditions:
    return [(c["attribute"], c["values"], f"filters.{c['attribute']}") for c in indicator.get("filters") or []]


def _phase_durations(scenario: Scenario, conditions: Conditions, aggregate: str,
                     definition: dict[str, Any], now: datetime) -> list[Value_]:
    """Step cycle time: the ended phases' durations by phase. A phase filter picks phases;
    the other filters pick the instances whose phases count."""
    phases = InstancePhase.objects.filter(scenario=scenario, ended_at__isnull=False)
    others = [c for c in conditions if c[0] != "phase"]
    for _attribute_id, values, _parameter in (c for c in conditions if c[0] == "phase"):
        phases = phases.filter(phase_id__in=[str(v) for v in values])
    if others:
        instances = _filtered(_instances(scenario, now), others, attribute_types(definition))
        phases = phases.filter(instance__in=instances.values("id"))
    function = Count("id") if aggregate == "count" else AGGREGATES[aggregate]("duration")
    rows = phases.values("phase_id").annotate(v=function).order_by("phase_id").values_list("phase_id", "v")
    return _labelled(dict(rows), "phase", aggregate, definition)


def _labelled(values: dict[Any, Any], dimension: str, aggregate: str, definition: dict[str, Any]) -> list[Value_]:
    """Values in the dimension's own order, known categories included at zero (count, sum)."""
    empty = 0 if aggregate in ("count", "sum") else None
    known: dict[Any, str] = {}
    if dimension == "status":
        known = dict(InstanceStatus.choices)
    elif dimension == "state":
        known = dict(InstanceState.choices)
    elif dimension == "phase":
        known = phase_names(definition)
    out = [{"label": label, "value": values.get(key, empty)} for key, label in known.items()]
    for key in sorted((k for k in values if k not in known), key=lambda k: (k is None, k)):
        out.append({"label": _label(key, dimension), "value": values[key]})
    return out


def _label(key: Any, dimension: str) -> str:
    if key is None or key == "":
        return NO_VALUE
    if dimension == "month":  # a datetime (PostgreSQL) or its text (SQLite): "2026-03-01 00:00:00"
        return str(key)[:7]
    return str(key)


def indicators(*, scenario: Scenario, now: datetime | None = None) -> list[Indicator]:
    """Every tile of the active definition, with its values. Tiles over the instances that
    share a dimension are ONE grouped query, each tile's filters in its aggregates' FILTER, so a
    page of tiles costs a scan per dimension, not per tile (the default tiles: three queries)."""
    moment = now or timezone.now()
    items = indicators_defined(scenario)
    values: dict[int, list[Value_]] = {}
    shared: dict[str | None, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        if (item.get("measure") or {}).get("attribute") == "phaseDuration":
            values[index] = indicator_values(scenario=scenario, indicator=item, now=moment)
        else:
            shared[item.get("dimension")].append(index)
    for dimension, indexes in shared.items():
        if len(indexes) == 1:  # alone, its filters stay a WHERE that can use an index
            values[indexes[0]] = indicator_values(scenario=scenario, indicator=items[indexes[0]], now=moment)
        else:
            values.update(_shared_dimension(scenario, dimension, {i: items[i] for i in indexes}, moment))
    return [_indicator(scenario, item, values[index]) for index, item in enumerate(items)]


def _shared_dimension(scenario: Scenario, dimension: str | None, items: dict[int, dict[str, Any]],
                      now: datetime) -> dict[int, list[Value_]]:
    """Tiles of one dimension from one grouped query, each as its own query would answer."""
    definition = scenario.active or {}
    types = attribute_types(definition)
    queryset = _instances(scenario, now)
    tiles = []
    for item in items.values():
        queryset, where = _where(queryset, _tile_conditions(item), types)
        tiles.append((item.get("measure") or {"aggregate": "count"}, where))
    rows = _grouped(queryset, _attribute(dimension, types) if dimension else None, tiles, types)
    return {i: _tile_values(rows, n, item, definition) for n, (i, item) in enumerate(items.items())}


def indicator_get(*, scenario: Scenario, indicator_id: str, now: datetime | None = None) -> Indicator:
    for item in indicators_defined(scenario):
        if item.get("id") == indicator_id:
            return _indicator(scenario, item, indicator_values(scenario=scenario, indicator=item, now=now))
    raise NotFound(f"No indicator {indicator_id!r} in the scenario")


def indicators_defined(scenario: Scenario) -> list[dict[str, Any]]:
    return list((scenario.active or {}).get("indicators") or [])


def _indicator(scenario: Scenario, item: dict[str, Any], values: list[Value_]) -> Indicator:
    measure = item.get("measure") or {"aggregate": "count"}
    return Indicator(id=item["id"], title=item.get("title") or item["id"], chart=item.get("chart", "bar"),
                     measure=measure, dimension=item.get("dimension"),
                     duration=is_duration(scenario.active or {}, measure.get("attribute")), values=values)


# --- the instance list ------------------------------------------------------------------------


@dataclass(frozen=True)
class InstancePage:
    instances: list[ProcessInstance]  # each with .status_now
    next_cursor: str | None


def cursor_encode(instance: ProcessInstance) -> str:
    raw = f"{instance.start_time.astimezone(UTC).isoformat()}|{instance.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[datetime, int]:
    try:
        moment, pk = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        start = parse_datetime(moment)
        if start is None:
            raise ValueError(moment)
        return start, int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid("cursor is not one this API gave", extra={"parameter": "cursor"}) from None


def instances_search(*, scenario: Scenario, state: str | None = None, status: str | None = None,
                     phase: str | None = None, attributes: dict[str, str] | None = None,
                     cursor: str | None = None, limit: int = 50, now: datetime | None = None) -> InstancePage:
    """A page of instances, newest start first; the cursor continues after the page's last row
    (keyset on (start_time, id), so rows that arrive meanwhile neither repeat nor hide one)."""
    if not 1 <= limit <= PAGE_LIMIT:
        raise Invalid(f"limit must be 1 to {PAGE_LIMIT}", extra={"parameter": "limit"})
    definition = scenario.active or {}
    conditions = _search_conditions(definition, state, status, phase, attributes or {})
    queryset = _filtered(_instances(scenario, now or timezone.now()), conditions, attribute_types(definition))
    if cursor:
        start, pk = cursor_decode(cursor)
        queryset = queryset.filter(Q(start_time__lt=start) | Q(start_time=start, id__lt=pk))
    rows = list(queryset.annotate(current_status=F("status_now")).order_by("-start_time", "-id")[: limit + 1])
    more = len(rows) > limit
    return InstancePage(instances=rows[:limit], next_cursor=cursor_encode(rows[limit - 1]) if more else None)


def _search_conditions(definition: dict[str, Any], state: str | None, status: str | None, phase: str | None,
                       attributes: dict[str, str]) -> list[tuple[str, list[Any], str]]:
    conditions: list[tuple[str, list[Any], str]] = []
    for name, value, allowed in (("state", state, InstanceState.values), ("status", status, InstanceStatus.values),
                                 ("phase", phase, [*phase_names(definition), ""])):
        if value is None:
            continue
        if value not in allowed:
            choices = ", ".join(v or '""' for v in allowed)
            raise Invalid(f"{name} must be one of {choices}", extra={"parameter": name})
        conditions.append((name, [value], name))
    types = attribute_types(definition)
    for attribute, value in attributes.items():
        if attribute not in types or attribute in ("state", "status", "phase", "phaseDuration"):
            raise Invalid(f"attr.{attribute}: no such attribute in the scenario",
                          extra={"parameter": f"attr.{attribute}"})
        conditions.append((attribute, [value], f"attr.{attribute}"))
    return conditions


# --- one instance -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEvent:
    timestamp: datetime
    event_type: str
    name: str
    participant: str
    definition_id: str
    process_instance_id: str
    context: dict[str, Any]


@dataclass(frozen=True)
class PhaseRow:
    id: str
    name: str
    started_at: datetime
    ended_at: datetime | None
    duration: float | None


@dataclass(frozen=True)
class ContextRow:
    id: str
    name: str
    type: str
    value: Any


@dataclass(frozen=True)
class InstanceDetail:
    instance: ProcessInstance  # with .current_status
    status: str
    phases: list[PhaseRow]
    events: list[TimelineEvent]
    context: list[ContextRow]


def instance_detail(*, scenario: Scenario, instance_id: Any, now: datetime | None = None) -> InstanceDetail:
    """One instance with its phases, its attributes and its events in business-time order."""
    instance = _instance(scenario, instance_id, now or timezone.now())
    definition = scenario.active or {}
    return InstanceDetail(instance=instance, status=instance.current_status,  # type: ignore[attr-defined]
                          phases=_phases(instance, definition), events=_timeline(scenario, instance, definition),
                          context=_context(instance, definition))


def _instance(scenario: Scenario, instance_id: Any, now: datetime) -> ProcessInstance:
    try:
        pk = int(instance_id)
    except (TypeError, ValueError):
        raise NotFound("No such instance in the scenario") from None
    instance = (_instances(scenario, now).annotate(current_status=F("status_now")).filter(pk=pk).first())
    if instance is None:
        raise NotFound("No such instance in the scenario")
    return instance


def _phases(instance: ProcessInstance, definition: dict[str, Any]) -> list[PhaseRow]:
    names = phase_names(definition)
    return [PhaseRow(id=p.phase_id, name=names.get(p.phase_id, p.phase_id), started_at=p.started_at,
                     ended_at=p.ended_at, duration=p.duration)
            for p in instance.phases.order_by("started_at", "id")]


def _timeline(scenario: Scenario, instance: ProcessInstance, definition: dict[str, Any]) -> list[TimelineEvent]:
    pairs = Correlation.objects.filter(scenario=scenario, instance_key=instance.key).values_list(
        "definition_id", "process_instance_id")
    match = Q()
    for definition_id, process_instance_id in pairs:
        match |= Q(definition_id=definition_id, process_instance_id=process_instance_id)
    if not match:
        return []
    participants = {p["processDefinitionId"]: p for p in definition.get("participants") or []}
    names = {(pid, e["eventType"]): e.get("name") or e["eventType"]
             for pid, p in participants.items() for e in p.get("events") or []}
    events = Event.objects.filter(match, instance_id=scenario.instance_id).order_by("timestamp", "id")
    return [TimelineEvent(timestamp=e.timestamp, event_type=e.event_type,
                          name=names.get((e.definition_id, e.event_type), e.event_type),
                          participant=(participants.get(e.definition_id) or {}).get("name") or e.definition_id,
                          definition_id=e.definition_id, process_instance_id=e.process_instance_id,
                          context=e.context)
            for e in events]


def _context(instance: ProcessInstance, definition: dict[str, Any]) -> list[ContextRow]:
    rows = [*(definition.get("context") or []), *(definition.get("attributes") or [])]
    types = attribute_types(definition)
    return [ContextRow(id=a["id"], name=a.get("name") or a["id"], type=types.get(a["id"], "String"),
                       value=instance.attributes.get(a["id"]))
            for a in rows]
