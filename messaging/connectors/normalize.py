"""Normalize a provider's webhook body into event objects, as its element definition says.

Anything a provider (or an attacker posing as one) can send either normalizes or raises
`NotNormalizable` with a reason fit to show the sender: the inbound endpoint answers 400
with it, so no other exception may escape.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from messaging.connectors.elements import Const, Element, EventType, Source

DEFAULT_MAX_OBJECTS = 10_000
# Epoch numbers above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 100_000_000_000

Event = dict[str, str]


class NotNormalizable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Normalized:
    events: list[Event]
    raw: Any


_MISSING = object()


def lookup(value: Any, path: str) -> Any:
    """The value at a dotted path, or _MISSING; digit segments index arrays."""
    for part in path.split(".") if path else ():
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _scalar(value: Any, what: str) -> str:
    # bool is an int subclass, but `true` is no id or type.
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise NotNormalizable(f"{what} is missing or not a string or integer")


def _resolve(source: Source, obj: Any, what: str) -> str:
    if isinstance(source, Const):
        return source.value
    text = _scalar(lookup(obj, source.path), what)
    if source.segment is not None:
        parts = text.split(".")
        if not -len(parts) <= source.segment < len(parts):
            raise NotNormalizable(f"{what} {text!r} has no part {source.segment}")
        text = parts[source.segment]
    return dict(source.names).get(text, text + source.append)


def iso_date(value: Any) -> str:
    """ISO 8601 UTC (`...Z`) from epoch seconds or milliseconds or an ISO string."""
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise ValueError
            seconds = value / 1000 if abs(value) >= _MS_THRESHOLD else value
            moment = datetime.fromtimestamp(seconds, UTC)
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value)
        else:
            raise ValueError
        # Inside the try: moving year 1 or 9999 to UTC can overflow.
        return to_iso(moment)
    except (ValueError, OverflowError, OSError) as exc:
        raise NotNormalizable(f"date {value!r:.40} is not an epoch or ISO 8601 date") from exc


def to_iso(moment: datetime) -> str:
    # A date without an offset is taken as UTC, the only zone a webhook body can assume.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_type(element: Element, obj: Any) -> str:
    word = _resolve(element.event_type, obj, "eventType")
    if word in EventType.__members__:
        return word
    return element.event_types.get(word.lower(), EventType.UNKNOWN).value


def _date(element: Element, obj: Any, now: datetime) -> str:
    if element.date is None:
        return to_iso(now)
    if isinstance(element.date, Const):
        return iso_date(element.date.value)
    found = lookup(obj, element.date.path)
    if found is _MISSING:
        raise NotNormalizable(f"date ({element.date.path}) is missing")
    return iso_date(found)


def _ids(element: Element, obj: Any) -> list[str]:
    if not element.fan_out:
        return [_resolve(element.object_id, obj, "objectId")]
    ids = lookup(obj, element.fan_out)
    if not isinstance(ids, list):
        raise NotNormalizable(f"{element.fan_out!r} is not an array of ids")
    return [_scalar(i, "objectId") for i in ids]


def _objects(element: Element, raw: Any) -> list[Any]:
    found = lookup(raw, element.objects_path)
    if isinstance(found, dict):
        return [found]
    if isinstance(found, list):
        return found
    where = repr(element.objects_path) if element.objects_path else "the body"
    raise NotNormalizable(f"{where} is not an object or an array of objects")


def parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    # UnicodeDecodeError and JSONDecodeError are ValueErrors; deep nesting is a RecursionError.
    except (ValueError, RecursionError) as exc:
        raise NotNormalizable("the body is not JSON") from exc


def normalize(element: Element, body: bytes, *, now: datetime, max_objects: int = DEFAULT_MAX_OBJECTS) -> Normalized:
    raw = parse(body)
    events: list[Event] = []
    for obj in _objects(element, raw):
        if not isinstance(obj, dict | str | int) or isinstance(obj, bool):
            raise NotNormalizable("a changed object is not a JSON object or an id")
        common = {
            "objectType": _resolve(element.object_type, obj, "objectType"),
            "eventType": _event_type(element, obj),
            "elementKey": element.key,
            "date": _date(element, obj, now),
        }
        for object_id in _ids(element, obj):
            events.append({"objectId": object_id, **common})
            # Checked as we go so that a huge body costs no more than max_objects events.
            if len(events) > max_objects:
                raise NotNormalizable(f"more than {max_objects} changed objects")
    return Normalized(events=events, raw=raw)


def instance_ref(element: Element, raw: Any) -> str | None:
    """The provider account the body belongs to, when the element knows where it is."""
    if not element.instance_ref:
        return None
    found = lookup(raw, element.instance_ref)
    if found is _MISSING:
        return None
    try:
        return _scalar(found, "instance ref")
    except NotNormalizable:
        return None
