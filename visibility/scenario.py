"""A scenario's definition: its JSON shape, its validation and its defaults. Pure code.

The shape (docs/process-visibility.md has it for users)::

    {"name": "Onboarding", "namespace": "hr", "instanceLabel": {"singular": "Request", "plural": "Requests"},
     "participants": [{"processDefinitionId": "onboard", "name": "Onboarding",
                       "businessKeyAttribute": "ORDER_ID",          # optional: correlates across participants
                       "events": [{"eventType": "CREATED", "name": "Application created"}]}],
     "context": [{"id": "COUNTRY", "name": "Country", "type": "String"}],   # String | Number | Date
     "state": {"completingEvents": [{"participant": "onboard", "eventType": "HIRED"}]},
     "status": {"targetDuration": {"value": 5, "unit": "days"}, "threshold": 80},
     "phases": [{"id": "screening", "name": "Screening", "startEvents": [ref], "endEvents": [ref]}],
     "attributes": [{"id": "timeToOffer", "name": "Time to offer", "kind": "duration", "from": ref, "to": ref},
                    {"id": "hireMonth", "name": "Month", "kind": "month", "of": "endTime"}],
     "indicators": [{"id": "open", "title": "Open requests", "measure": {"aggregate": "count"},
                     "dimension": "status", "filters": [{"attribute": "state", "values": ["open"]}],
                     "chart": "donut"}]}

`ref` is {"participant": <processDefinitionId>, "eventType": <event type>}. A draft may hold
anything that is a JSON object; `problems()` lists what keeps it from being activated, each
with the path of the field it concerns, and `normalized()` is the definition processing uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ATTRIBUTE_TYPES = ("String", "Number", "Date")
DURATION_UNITS = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
PERIODS = ("month", "quarter", "year")
AGGREGATES = ("count", "sum", "avg", "min", "max")
CHARTS = ("bar", "column", "donut")
# Attributes every instance has, beside the scenario's own.
BUILT_IN = {
    "state": "String", "status": "String", "phase": "String", "month": "String",
    "startTime": "Date", "endTime": "Date", "cycleTime": "Number", "phaseDuration": "Number",
}
DIMENSIONS_BUILT_IN = ("state", "status", "phase", "month")
FILTERS_BUILT_IN = ("state", "status", "phase")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
LIMITS = {"participants": 50, "events": 200, "context": 200, "phases": 50, "attributes": 100, "indicators": 50}


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class _Check:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def text(self, value: Any, path: str, *, required: bool = True, limit: int = 255) -> str:
        if value is None or value == "":
            if required:
                self.add(path, "is required")
            return ""
        if not isinstance(value, str) or len(value) > limit:
            self.add(path, f"must be text of at most {limit} characters")
            return ""
        return value

    def identifier(self, value: Any, path: str) -> str:
        text = self.text(value, path, limit=100)
        if text and not IDENTIFIER.match(text):
            self.add(path, "must start with a letter or _ and hold only letters, digits, _ . -")
        return text

    def items(self, value: Any, path: str, limit: int) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(path, "must be a list")
            return []
        if len(value) > limit:
            self.add(path, f"holds at most {limit} entries")
        good = []
        for index, item in enumerate(value[:limit]):
            if isinstance(item, dict):
                good.append(item)
            else:
                self.add(f"{path}[{index}]", "must be an object")
        return good

    def unique(self, ids: list[str], path: str) -> None:
        seen: set[str] = set()
        for index, value in enumerate(ids):
            if value and value in seen:
                self.add(f"{path}[{index}].id", f"{value!r} is used twice")
            seen.add(value)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _events_known(definition: dict[str, Any]) -> set[tuple[str, str]]:
    known = set()
    for participant in _list(definition.get("participants")):
        if isinstance(participant, dict):
            for event in _list(participant.get("events")):
                if isinstance(event, dict):
                    known.add((str(participant.get("processDefinitionId")), str(event.get("eventType"))))
    return known


def _refs(check: _Check, value: Any, path: str, known: set[tuple[str, str]], *, required: bool) -> None:
    refs = check.items(value, path, LIMITS["events"])
    if required and not refs and (value is None or value == []):
        check.add(path, "names at least one event")
    for index, ref in enumerate(refs):
        pair = (str(ref.get("participant")), str(ref.get("eventType")))
        if pair not in known:
            check.add(f"{path}[{index}]", f"{pair[0]}/{pair[1]} is not an event of the scenario's participants")


def _ref(check: _Check, value: Any, path: str, known: set[tuple[str, str]]) -> None:
    if not isinstance(value, dict):
        check.add(path, "must name an event: {participant, eventType}")
        return
    _refs(check, [value], path, known, required=True)


def _participants(check: _Check, definition: dict[str, Any], context_ids: set[str]) -> None:
    participants = check.items(definition.get("participants"), "participants", LIMITS["participants"])
    if not participants:
        check.add("participants", "names at least one process definition")
    definitions = []
    for index, participant in enumerate(participants):
        path = f"participants[{index}]"
        definitions.append(check.text(participant.get("processDefinitionId"), f"{path}.processDefinitionId"))
        check.text(participant.get("name"), f"{path}.name", required=False)
        key = participant.get("businessKeyAttribute")
        if key is not None:
            check.text(key, f"{path}.businessKeyAttribute", limit=100)
        events = check.items(participant.get("events"), f"{path}.events", LIMITS["events"])
        if not events:
            check.add(f"{path}.events", "names at least one event type")
        types = [check.text(event.get("eventType"), f"{path}.events[{n}].eventType") for n, event in enumerate(events)]
        for n, event in enumerate(events):
            check.text(event.get("name"), f"{path}.events[{n}].name", required=False)
        if len(set(types)) != len(types):
            check.add(f"{path}.events", "names an event type twice")
    if len(set(definitions)) != len(definitions):
        check.add("participants", "names a process definition twice")


def _context(check: _Check, definition: dict[str, Any]) -> set[str]:
    attributes = check.items(definition.get("context"), "context", LIMITS["context"])
    ids = []
    for index, attribute in enumerate(attributes):
        path = f"context[{index}]"
        ids.append(check.identifier(attribute.get("id"), f"{path}.id"))
        check.text(attribute.get("name"), f"{path}.name", required=False)
        check.text(attribute.get("source"), f"{path}.source", required=False)
        if attribute.get("type") not in ATTRIBUTE_TYPES:
            check.add(f"{path}.type", f"must be one of {', '.join(ATTRIBUTE_TYPES)}")
        if ids[-1] in BUILT_IN:
            check.add(f"{path}.id", f"{ids[-1]!r} is a built-in attribute")
    check.unique(ids, "context")
    return set(ids)


def _status(check: _Check, definition: dict[str, Any]) -> None:
    status = definition.get("status")
    if status is None:
        return
    if not isinstance(status, dict):
        check.add("status", "must be an object")
        return
    target = status.get("targetDuration")
    if not isinstance(target, dict) or not isinstance(target.get("unit"), str) or target["unit"] not in DURATION_UNITS:
        check.add("status.targetDuration", f"must be {{value, unit}} with unit one of {', '.join(DURATION_UNITS)}")
    elif not _positive_number(target.get("value")):
        check.add("status.targetDuration.value", "must be a number above 0")
    threshold = status.get("threshold", 80)
    if not _positive_number(threshold) or threshold >= 100:
        check.add("status.threshold", "must be a percentage above 0 and below 100")


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _phases(check: _Check, definition: dict[str, Any], known: set[tuple[str, str]]) -> None:
    phases = check.items(definition.get("phases"), "phases", LIMITS["phases"])
    ids = []
    for index, phase in enumerate(phases):
        path = f"phases[{index}]"
        ids.append(check.identifier(phase.get("id"), f"{path}.id"))
        check.text(phase.get("name"), f"{path}.name")
        _refs(check, phase.get("startEvents"), f"{path}.startEvents", known, required=True)
        _refs(check, phase.get("endEvents"), f"{path}.endEvents", known, required=True)
    check.unique(ids, "phases")


def _attributes(check: _Check, definition: dict[str, Any], known: set[tuple[str, str]],
                types: dict[str, str]) -> None:
    attributes = check.items(definition.get("attributes"), "attributes", LIMITS["attributes"])
    ids = []
    for index, attribute in enumerate(attributes):
        path = f"attributes[{index}]"
        ids.append(check.identifier(attribute.get("id"), f"{path}.id"))
        check.text(attribute.get("name"), f"{path}.name", required=False)
        if ids[-1] in types:
            check.add(f"{path}.id", f"{ids[-1]!r} is already an attribute")
        kind = attribute.get("kind")
        if kind == "duration":
            _ref(check, attribute.get("from"), f"{path}.from", known)
            _ref(check, attribute.get("to"), f"{path}.to", known)
            types[ids[-1]] = "Number"
        elif kind in PERIODS:
            source = str(attribute.get("of"))
            if types.get(source) != "Date":
                check.add(f"{path}.of", "must name a Date attribute (startTime, endTime or a Date context attribute)")
            types[ids[-1]] = "String"
        else:
            check.add(f"{path}.kind", f"must be one of duration, {', '.join(PERIODS)}")
    check.unique(ids, "attributes")


def _indicators(check: _Check, definition: dict[str, Any], types: dict[str, str]) -> None:
    indicators = check.items(definition.get("indicators"), "indicators", LIMITS["indicators"])
    ids = []
    for index, indicator in enumerate(indicators):
        path = f"indicators[{index}]"
        ids.append(check.identifier(indicator.get("id"), f"{path}.id"))
        check.text(indicator.get("title"), f"{path}.title", limit=200)
        measure = indicator.get("measure")
        if not isinstance(measure, dict) or measure.get("aggregate") not in AGGREGATES:
            check.add(f"{path}.measure",
                      f"must be {{aggregate, attribute}} with aggregate one of {', '.join(AGGREGATES)}")
        elif measure["aggregate"] != "count" and types.get(str(measure.get("attribute"))) != "Number":
            check.add(f"{path}.measure.attribute", "must name a Number attribute")
        elif measure.get("attribute") == "phaseDuration" and indicator.get("dimension") != "phase":
            check.add(f"{path}.dimension", "phaseDuration is measured by phase: the dimension must be phase")
        dimension = indicator.get("dimension")
        if dimension is not None and (not isinstance(dimension, str) or (
                dimension not in DIMENSIONS_BUILT_IN and types.get(dimension) != "String")):
            check.add(f"{path}.dimension", "must be state, status, phase, month or a String attribute")
        for n, condition in enumerate(check.items(indicator.get("filters"), f"{path}.filters", 20)):
            attribute = condition.get("attribute")
            if not isinstance(attribute, str) or (attribute not in FILTERS_BUILT_IN and attribute not in types):
                check.add(f"{path}.filters[{n}].attribute", "must be state, status, phase or an attribute")
            values = condition.get("values")
            if not isinstance(values, list) or not values or len(values) > 100:
                check.add(f"{path}.filters[{n}].values", "must be a list of 1 to 100 values")
        if indicator.get("chart", "bar") not in CHARTS:
            check.add(f"{path}.chart", f"must be one of {', '.join(CHARTS)}")
    check.unique(ids, "indicators")


def problems(definition: Any) -> list[Problem]:
    """What keeps the definition from being activated; empty when it can be."""
    check = _Check()
    if not isinstance(definition, dict):
        check.add("", "a scenario definition is a JSON object")
        return check.problems
    check.text(definition.get("name"), "name", limit=200)
    check.text(definition.get("namespace"), "namespace", required=False, limit=100)
    label = definition.get("instanceLabel")
    if label is not None and not isinstance(label, dict):
        check.add("instanceLabel", "must be {singular, plural}")
    context_ids = _context(check, definition)
    _participants(check, definition, context_ids)
    known = _events_known(definition)
    state = definition.get("state")
    if not isinstance(state, dict):
        check.add("state", "must be an object naming the completingEvents")
    else:
        _refs(check, state.get("completingEvents"), "state.completingEvents", known, required=True)
    _status(check, definition)
    _phases(check, definition, known)
    types = dict(BUILT_IN)
    for attribute in check.items(definition.get("context"), "context", LIMITS["context"]):
        if isinstance(attribute.get("id"), str) and attribute["id"] in context_ids:
            types[attribute["id"]] = attribute.get("type", "String")
    _attributes(check, definition, known, types)
    _indicators(check, definition, types)
    return check.problems


def target_seconds(definition: dict[str, Any]) -> float | None:
    status = definition.get("status")
    if not status:
        return None
    target = status["targetDuration"]
    return float(target["value"]) * DURATION_UNITS[target["unit"]]


def label(definition: dict[str, Any], *, plural: bool = False) -> str:
    labels = definition.get("instanceLabel")
    text = labels.get("plural" if plural else "singular") if isinstance(labels, dict) else None
    return text if isinstance(text, str) and text else ("Instances" if plural else "Instance")


def default_indicators(plural: str) -> list[dict[str, Any]]:
    """The contract's defaults: open instances, completed by status, cycle time, step cycle time."""
    return [
        {"id": "openInstances", "title": f"Open {plural.lower()}", "measure": {"aggregate": "count"},
         "dimension": "status", "filters": [{"attribute": "state", "values": ["open"]}], "chart": "donut"},
        {"id": "completedByStatus", "title": f"Completed {plural.lower()} by status", "measure": {"aggregate": "count"},
         "dimension": "status", "filters": [{"attribute": "state", "values": ["completed"]}], "chart": "column"},
        {"id": "cycleTime", "title": "Cycle time (average)", "measure": {"aggregate": "avg", "attribute": "cycleTime"},
         "dimension": "month", "filters": [{"attribute": "state", "values": ["completed"]}], "chart": "column"},
        {"id": "stepCycleTime", "title": "Step cycle time (average)",
         "measure": {"aggregate": "avg", "attribute": "phaseDuration"}, "dimension": "phase", "filters": [],
         "chart": "bar"},
    ]


def definition_new(*, name: str, participants: list[str] | None = None) -> dict[str, Any]:
    """A starting definition for a new scenario (a draft: it names no events yet)."""
    return {
        "name": name, "namespace": "", "instanceLabel": {"singular": "Instance", "plural": "Instances"},
        "participants": [{"processDefinitionId": pid, "name": pid, "events": []} for pid in participants or []],
        "context": [], "state": {"completingEvents": []},
        "status": {"targetDuration": {"value": 5, "unit": "days"}, "threshold": 80},
        "phases": [], "attributes": [], "indicators": default_indicators("Instances"),
    }
