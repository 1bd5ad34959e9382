"""The Data Acquisition API's body, read and checked: pure code, no database, no clock.

A body is one event object or an array of at most MESH_PV_MAX_BATCH of them. Every event is
checked, not only up to the first bad one, so that a sender fixing a batch sees all of its
problems at once; each problem names the event (its position in the array, or None for a
single object), the field and a FailureReason. The caller stores nothing unless there is no
problem at all (the batch is all or nothing).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from meshsite import jsonlimit

from .models import FailureReason

MAX_DEFINITION_ID = 255
MAX_PROCESS_INSTANCE_ID = 255
MAX_EVENT_TYPE = 255
MAX_EVENT_ID = 200
MAX_CONTEXT_KEY = 200
MAX_CONTEXT_STRING = 10_000
# A date, "T" or a space, hours and minutes: what fromisoformat also takes but a sender
# rarely means ("2018-08-25", "20180825") is refused rather than read as midnight.
_ISO_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


@dataclass(frozen=True)
class Limits:
    max_batch: int = 1000
    max_context_keys: int = 200


@dataclass(frozen=True)
class Problem:
    index: int | None
    field: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class EventData:
    """One valid event, in the Event model's terms."""

    event_id: str | None
    definition_id: str
    process_instance_id: str
    event_type: str
    timestamp: datetime
    context: dict[str, Any]


@dataclass
class Batch:
    """What a body held: the valid events, the problems, and each event as sent (for the
    failures recorded with their raw JSON)."""

    events: list[EventData] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    is_array: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


class _Refused(Exception):
    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.field, self.reason, self.message = field, reason, message


def parse_body(body: bytes, limits: Limits) -> Batch:
    try:
        data = jsonlimit.loads(body, parse_constant=_no_constant)
    except ValueError as error:  # UnicodeDecodeError is one
        return Batch(problems=[Problem(None, "", FailureReason.INVALID_JSON, f"Body is not JSON: {error}")])
    return parse_data(data, limits)


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and PostgreSQL's jsonb refuses them.
    raise ValueError(f"{name} is not a JSON value")


def parse_data(data: Any, limits: Limits) -> Batch:
    if isinstance(data, dict):
        return _checked(Batch(items=[data]), [None], limits)
    if not isinstance(data, list):
        return Batch(problems=[Problem(None, "", FailureReason.WRONG_TYPE,
                                       "Body must be an event object or an array of events")])
    if len(data) > limits.max_batch:
        return Batch(problems=[Problem(None, "", FailureReason.TOO_LARGE,
                                       f"{len(data)} events in one body; at most {limits.max_batch}")],
                     is_array=True)
    return _checked(Batch(items=data, is_array=True), list(range(len(data))), limits)


def _checked(batch: Batch, positions: list[int | None], limits: Limits) -> Batch:
    for position, item in zip(positions, batch.items, strict=True):
        event, refusals = parse_event(item, limits)
        if event is not None:
            batch.events.append(event)
        batch.problems.extend(Problem(position, r.field, r.reason, r.message) for r in refusals)
    return batch


_FIELDS: tuple[tuple[str, Callable[[dict[str, Any], Limits], Any]], ...] = (
    ("event_id", lambda item, limits: _event_id(item.get("eventId"))),
    ("definition_id", lambda item, limits: _text(item, "processDefinitionId", MAX_DEFINITION_ID)),
    ("process_instance_id", lambda item, limits: _identifier(item, "processInstanceId", MAX_PROCESS_INSTANCE_ID)),
    ("event_type", lambda item, limits: _text(item, "eventType", MAX_EVENT_TYPE)),
    ("timestamp", lambda item, limits: _timestamp(item.get("timestamp"))),
    ("context", lambda item, limits: _context(item.get("context"), limits)),
)


def parse_event(item: Any, limits: Limits) -> tuple[EventData | None, list[_Refused]]:
    """The event, or None and every field's problem (not only the first)."""
    if not isinstance(item, dict):
        return None, [_Refused("", FailureReason.WRONG_TYPE, "An event must be a JSON object")]
    values: dict[str, Any] = {}
    refusals: list[_Refused] = []
    for name, check in _FIELDS:
        try:
            values[name] = check(item, limits)
        except _Refused as refused:
            refusals.append(refused)
    return (None, refusals) if refusals else (EventData(**values), [])


def _required(item: dict[str, Any], name: str) -> Any:
    value = item.get(name)
    if value is None:
        raise _Refused(name, FailureReason.MISSING_FIELD, f"{name} is required")
    return value


def _text(item: dict[str, Any], name: str, limit: int) -> str:
    value = _required(item, name)
    if not isinstance(value, str):
        raise _Refused(name, FailureReason.WRONG_TYPE, f"{name} must be a string")
    return _sized(value, name, limit)


def _sized(value: str, name: str, limit: int) -> str:
    if not value:
        raise _Refused(name, FailureReason.MISSING_FIELD, f"{name} must not be empty")
    if len(value) > limit:
        raise _Refused(name, FailureReason.TOO_LARGE, f"{name} is longer than {limit} characters")
    _no_nul(value, name)
    return value


def _no_nul(value: str, name: str) -> None:
    # PostgreSQL's text and jsonb refuse NUL, and UTF-8 has no lone surrogate (JSON's "\ud800"
    # decodes to one); refused here it is the sender's 400, not our 500.
    if "\x00" in value:
        raise _Refused(name, FailureReason.WRONG_TYPE, f"{name} holds a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused(name, FailureReason.WRONG_TYPE, f"{name} is not valid Unicode") from None


def _is_number(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _identifier(item: dict[str, Any], name: str, limit: int) -> str:
    value = _required(item, name)
    if _is_number(value):
        return _sized(str(value), name, limit)
    if not isinstance(value, str):
        raise _Refused(name, FailureReason.WRONG_TYPE, f"{name} must be a string or a number")
    return _sized(value, name, limit)


def _event_id(value: Any) -> str | None:
    if value is None:
        return None
    if _is_number(value):
        return _sized(str(value), "eventId", MAX_EVENT_ID)
    if not isinstance(value, str):
        raise _Refused("eventId", FailureReason.WRONG_TYPE, "eventId must be a string or a number")
    return _sized(value, "eventId", MAX_EVENT_ID)


def _timestamp(value: Any) -> datetime:
    if value is None:
        raise _Refused("timestamp", FailureReason.MISSING_FIELD, "timestamp is required")
    if not isinstance(value, str):
        raise _Refused("timestamp", FailureReason.WRONG_TYPE, "timestamp must be an ISO 8601 string")
    try:
        if not _ISO_PREFIX.match(value):
            raise ValueError(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _Refused("timestamp", FailureReason.WRONG_TYPE,
                       f"timestamp {value[:40]!r} is not ISO 8601 (e.g. 2018-08-25T02:07:42Z)") from None
    # Without an offset the time is read as UTC, so that it means the same on every server.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _context(value: Any, limits: Limits) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Refused("context", FailureReason.WRONG_TYPE, "context must be an object of attributes")
    if len(value) > limits.max_context_keys:
        raise _Refused("context", FailureReason.TOO_LARGE,
                       f"context has {len(value)} attributes; at most {limits.max_context_keys}")
    for key, attribute in value.items():
        _context_value(key, attribute)
    return value


def _context_value(key: str, value: Any) -> None:
    name = f"context.{key[:MAX_CONTEXT_KEY]}"
    if len(key) > MAX_CONTEXT_KEY or not key:
        raise _Refused(name, FailureReason.TOO_LARGE, f"context keys are 1 to {MAX_CONTEXT_KEY} characters")
    if isinstance(value, (dict, list)):
        raise _Refused(name, FailureReason.WRONG_TYPE,
                       "context is a flat map: values are strings, numbers, booleans or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused(name, FailureReason.WRONG_TYPE, f"{name} is out of range")
    _no_nul(key, name)
    if isinstance(value, str):
        if len(value) > MAX_CONTEXT_STRING:
            raise _Refused(name, FailureReason.TOO_LARGE, f"{name} is longer than {MAX_CONTEXT_STRING} characters")
        _no_nul(value, name)


def raw_item(item: Any) -> str:
    """An event as sent, for a failure's raw payload."""
    return json.dumps(item, ensure_ascii=False)
