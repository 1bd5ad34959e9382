"""visibility/ingest.py as a table: bodies in, events or named problems out (no database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from visibility.ingest import Limits, parse_body

LIMITS = Limits(max_batch=5, max_context_keys=3)
BASE = {"processDefinitionId": "onboard", "processInstanceId": "p1", "eventType": "CREATED",
        "timestamp": "2018-08-25T02:07:42Z"}


def parsed(body: object, limits: Limits = LIMITS):
    return parse_body(body if isinstance(body, bytes) else json.dumps(body).encode(), limits)


def one_problem(body: object) -> tuple[int | None, str, str]:
    problems = parsed(body).problems
    assert len(problems) == 1, problems
    return problems[0].index, problems[0].field, problems[0].reason


@pytest.mark.parametrize(("change", "expected"), [
    ({"processInstanceId": 3567}, ("process_instance_id", "3567")),
    ({"processInstanceId": 2.5}, ("process_instance_id", "2.5")),
    ({"eventId": 17}, ("event_id", "17")),
    ({"eventId": "e-1"}, ("event_id", "e-1")),
    ({}, ("event_id", None)),
    ({"context": None}, ("context", {})),
    ({"context": {"a": 1, "b": "x", "c": None}}, ("context", {"a": 1, "b": "x", "c": None})),
    ({"timestamp": "2018-08-25T02:07:42"}, ("timestamp", datetime(2018, 8, 25, 2, 7, 42, tzinfo=UTC))),
    ({"timestamp": "2018-08-25 02:07:42.5+01:00"},
     ("timestamp", datetime(2018, 8, 25, 2, 7, 42, 500000, tzinfo=timezone(timedelta(hours=1))))),
    ({"unknownField": 1}, ("definition_id", "onboard")),
])
def test_valid_events_read_as(change, expected):
    batch = parsed({**BASE, **change})
    assert batch.ok and not batch.is_array
    name, value = expected
    assert getattr(batch.events[0], name) == value


@pytest.mark.parametrize(("change", "field", "reason"), [
    ({"processDefinitionId": None}, "processDefinitionId", "missing_field"),
    ({"processDefinitionId": ""}, "processDefinitionId", "missing_field"),
    ({"processDefinitionId": "x" * 256}, "processDefinitionId", "too_large"),
    ({"processDefinitionId": ["a"]}, "processDefinitionId", "wrong_type"),
    ({"processInstanceId": False}, "processInstanceId", "wrong_type"),
    ({"processInstanceId": {"id": 1}}, "processInstanceId", "wrong_type"),
    ({"eventType": 3}, "eventType", "wrong_type"),
    ({"eventId": "e" * 201}, "eventId", "too_large"),
    ({"eventId": True}, "eventId", "wrong_type"),
    ({"timestamp": None}, "timestamp", "missing_field"),
    ({"timestamp": "2018-08-25"}, "timestamp", "wrong_type"),
    ({"timestamp": "2018-13-45T00:00:00Z"}, "timestamp", "wrong_type"),
    ({"timestamp": "tomorrow"}, "timestamp", "wrong_type"),
    ({"context": "flat"}, "context", "wrong_type"),
    ({"context": {"a": {"b": 1}}}, "context.a", "wrong_type"),
    ({"context": {"a": [1, 2]}}, "context.a", "wrong_type"),
    ({"context": {"a": 1, "b": 2, "c": 3, "d": 4}}, "context", "too_large"),
    ({"context": {"k" * 201: 1}}, "context." + "k" * 200, "too_large"),
    ({"eventType": "a\x00b"}, "eventType", "wrong_type"),
    ({"context": {"a": "x\x00"}}, "context.a", "wrong_type"),
    ({"eventType": "\ud800"}, "eventType", "wrong_type"),
    ({"context": {"a": "\udfff"}}, "context.a", "wrong_type"),
])
def test_refused_events_name_their_field_and_reason(change, field, reason):
    assert one_problem({**BASE, **change}) == (None, field, reason)


@pytest.mark.parametrize(("body", "reason"), [
    (b"{", "invalid_json"),
    (b"", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b'{"a": NaN}', "invalid_json"),
    (b"[" * 100 + b"]" * 100, "invalid_json"),
    (b"42", "wrong_type"),
    (b'"event"', "wrong_type"),
])
def test_bodies_that_are_not_events(body, reason):
    assert one_problem(body) == (None, "", reason)


def test_a_batch_names_each_failing_position_and_keeps_the_items():
    batch = parsed([BASE, 7, {**BASE, "eventType": None}, BASE])
    assert [(p.index, p.field) for p in batch.problems] == [(1, ""), (2, "eventType")]
    assert len(batch.items) == 4 and len(batch.events) == 2 and batch.is_array


def test_every_problem_of_one_event_is_named():
    assert [p.field for p in parsed({"context": {"a": [1]}}).problems] == [
        "processDefinitionId", "processInstanceId", "eventType", "timestamp", "context.a"]


def test_a_batch_over_the_limit_is_refused_whole():
    assert one_problem([BASE] * 6) == (None, "", "too_large")
    assert parsed([BASE] * 5).ok


def test_a_surrogate_pair_is_one_character():
    batch = parse_body(b'{"processDefinitionId": "\\ud83d\\ude00", "processInstanceId": 1, "eventType": "A", '
                       b'"timestamp": "2018-08-25T02:07:42Z"}', LIMITS)
    assert batch.ok and batch.events[0].definition_id == "\U0001F600"


def test_an_empty_array_is_no_events():
    batch = parsed([])
    assert batch.ok and batch.events == []
