"""Connector element definitions and normalization: the shipped providers' webhook bodies map
to the right event objects, a configured generic element reads its own path, and anything
else (including arbitrary bytes) is refused with NotNormalizable and a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.connectors.elements import ELEMENTS, Const, Path, element, generic
from messaging.connectors.normalize import NotNormalizable, instance_ref, normalize

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
HUBSPOT_KINDS = [
    ("contact.creation", "contacts", "CREATED"),
    ("contact.propertyChange", "contacts", "UPDATED"),
    ("contact.deletion", "contacts", "DELETED"),
    ("company.creation", "companies", "CREATED"),
    ("deal.propertyChange", "deals", "UPDATED"),
    ("deal.somethingNew", "deals", "UNKNOWN"),
]


def _hubspot_body(count: int) -> list[dict[str, object]]:
    return [
        {
            "eventId": 1000 + i,
            "subscriptionType": HUBSPOT_KINDS[i % len(HUBSPOT_KINDS)][0],
            "objectId": 500 + i,
            "portalId": 62515,
            "occurredAt": 1767261600000 + i,
        }
        for i in range(count)
    ]


def test_registry_ships_generic_dropbox_hubspot_salesforce() -> None:
    assert {"generic", "dropbox", "hubspot", "sfdc"} <= set(ELEMENTS)
    assert element("hubspot") is ELEMENTS["hubspot"]
    assert element("nope") is None


def test_hubspot_body_of_45_objects_gives_45_typed_events() -> None:
    hubspot = ELEMENTS["hubspot"]
    result = normalize(hubspot, json.dumps(_hubspot_body(45)).encode(), now=NOW)
    assert len(result.events) == 45
    for i, event in enumerate(result.events):
        _, object_type, event_type = HUBSPOT_KINDS[i % len(HUBSPOT_KINDS)]
        assert event["objectType"] == object_type
        assert event["eventType"] == event_type
        assert event["objectId"] == str(500 + i)
        assert event["elementKey"] == "hubspot"
    assert result.events[0]["date"] == "2026-01-01T10:00:00.000Z"
    assert instance_ref(hubspot, result.raw) == "62515"


def test_dropbox_notification_gives_one_updated_files_event_per_account() -> None:
    body = {"list_folder": {"accounts": ["dbid:AAA", "dbid:BBB"]}, "delta": {"users": [12345, 67890]}}
    dropbox = ELEMENTS["dropbox"]
    result = normalize(dropbox, json.dumps(body).encode(), now=NOW)
    assert [e["objectId"] for e in result.events] == ["dbid:AAA", "dbid:BBB"]
    assert {e["objectType"] for e in result.events} == {"files"}
    assert {e["eventType"] for e in result.events} == {"UPDATED"}
    # Dropbox's notification carries no date: the event is dated on receipt.
    assert {e["date"] for e in result.events} == {"2026-01-01T10:00:00.000Z"}
    assert instance_ref(dropbox, result.raw) == "dbid:AAA"


@pytest.mark.parametrize(("change", "expected"), [("CREATE", "CREATED"), ("UPDATE", "UPDATED"), ("DELETE", "DELETED")])
def test_salesforce_change_event_gives_one_event_per_record_id(change: str, expected: str) -> None:
    header = {
        "entityName": "Account",
        "changeType": change,
        "recordIds": ["001A", "001B", "001C"],
        "commitTimestamp": 1767261600000,
    }
    result = normalize(ELEMENTS["sfdc"], json.dumps({"payload": {"ChangeEventHeader": header}}).encode(), now=NOW)
    assert [e["objectId"] for e in result.events] == ["001A", "001B", "001C"]
    assert {(e["objectType"], e["eventType"], e["date"]) for e in result.events} == {
        ("Account", expected, "2026-01-01T10:00:00.000Z")
    }
    assert instance_ref(ELEMENTS["sfdc"], result.raw) is None


def test_salesforce_outbound_message_gives_one_event_per_notification() -> None:
    body = {
        "OrganizationId": "00D000000000001",
        "notifications": [{"Id": "04l1", "sObject": {"type": "Contact", "Id": "003A"}}],
    }
    outbound = ELEMENTS["sfdc-outbound"]
    result = normalize(outbound, json.dumps(body).encode(), now=NOW)
    assert [(e["objectType"], e["objectId"], e["eventType"]) for e in result.events] == [("Contact", "003A", "UNKNOWN")]
    assert instance_ref(outbound, result.raw) == "00D000000000001"


def test_generic_element_reads_objects_at_its_configured_path() -> None:
    custom = generic(objects_path="data.changes", object_type=Const("tickets"), object_id=Path("ref"))
    body = {"data": {"changes": [{"ref": "T-1", "eventType": "deleted", "date": "2026-01-01T11:00:00+01:00"}]}}
    [event] = normalize(custom, json.dumps(body).encode(), now=NOW).events
    assert event == {
        "objectId": "T-1",
        "objectType": "tickets",
        "eventType": "DELETED",
        "elementKey": "generic",
        "date": "2026-01-01T10:00:00.000Z",
    }


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        (1767261600, "2026-01-01T10:00:00.000Z"),
        ("2026-01-01T10:00:00Z", "2026-01-01T10:00:00.000Z"),
        ("2026-01-01T10:00:00", "2026-01-01T10:00:00.000Z"),
    ],
)
def test_dates_in_epoch_seconds_and_iso_become_utc_iso(date: object, expected: str) -> None:
    body = [{"objectType": "x", "objectId": 1, "eventType": "created", "date": date}]
    assert normalize(ELEMENTS["generic"], json.dumps(body).encode(), now=NOW).events[0]["date"] == expected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'"a string"', "not an object or an array"),
        (b'[{"objectType": "x", "eventType": "created", "date": 1}]', "objectId"),
        (b'[{"objectType": "x", "objectId": 1, "eventType": "created", "date": "yesterday"}]', "date"),
        (b"[[1]]", "not a JSON object"),
    ],
)
def test_bodies_that_do_not_fit_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(NotNormalizable) as caught:
        normalize(ELEMENTS["generic"], body, now=NOW)
    assert reason in caught.value.reason


def test_wrong_shape_for_the_element_is_refused() -> None:
    with pytest.raises(NotNormalizable, match="list_folder.accounts"):
        normalize(ELEMENTS["dropbox"], b'{"delta": {}}', now=NOW)


def test_more_objects_than_the_limit_are_refused() -> None:
    body = json.dumps(_hubspot_body(11)).encode()
    with pytest.raises(NotNormalizable, match="more than 10"):
        normalize(ELEMENTS["hubspot"], body, now=NOW, max_objects=10)
    assert len(normalize(ELEMENTS["hubspot"], body, now=NOW, max_objects=11).events) == 11


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "objectType",
                    "objectId",
                    "eventType",
                    "date",
                    "subscriptionType",
                    "occurredAt",
                    "list_folder",
                    "accounts",
                    "payload",
                    "ChangeEventHeader",
                    "recordIds",
                    "entityName",
                    "changeType",
                    "commitTimestamp",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(sorted(ELEMENTS)),
    body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_any_bytes_either_normalize_or_raise_not_normalizable(key: str, body: bytes) -> None:
    try:
        result = normalize(ELEMENTS[key], body, now=NOW)
    except NotNormalizable as exc:
        assert exc.reason
        return
    for event in result.events:
        assert set(event) == {"objectType", "objectId", "eventType", "elementKey", "date"}
        assert event["eventType"] in {"CREATED", "UPDATED", "DELETED", "UNKNOWN"}
    instance_ref(ELEMENTS[key], result.raw)


def test_deeply_nested_body_is_refused_not_crashed() -> None:
    with pytest.raises(NotNormalizable):
        normalize(ELEMENTS["generic"], b"[" * 100_000, now=NOW)
