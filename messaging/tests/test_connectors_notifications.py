"""Connector notifications: pagination at the contract's page sizes with the full raw body
on every page, the notification's shape, and the signature header checked against an
independent HMAC and a fixed RFC 4231 vector."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from messaging.connectors.elements import ELEMENTS
from messaging.connectors.normalize import normalize
from messaging.connectors.notifications import POLLING_PAGE, WEBHOOK_PAGE, paginate, signature

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def _ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id-{next(counter)}"


def _paginate(events: list[dict[str, str]], raw: object, per: int) -> list[dict[str, object]]:
    return paginate(
        events, raw, per_notification=per, element_key="hubspot", instance_id=42,
        instance_name="crm", new_id=_ids(), now=NOW,
    )  # fmt: skip


def test_page_sizes_are_the_contracts() -> None:
    assert (POLLING_PAGE, WEBHOOK_PAGE) == (10, 20)


def test_45_webhook_objects_give_3_notifications_each_with_all_45_raw_objects() -> None:
    raw = [
        {"eventId": i, "subscriptionType": "contact.creation", "objectId": i, "portalId": 1, "occurredAt": 0}
        for i in range(45)
    ]
    normalized = normalize(ELEMENTS["hubspot"], json.dumps(raw).encode(), now=NOW)
    notifications = _paginate(normalized.events, normalized.raw, WEBHOOK_PAGE)
    assert [len(n["message"]["events"]) for n in notifications] == [20, 20, 5]  # type: ignore[index]
    assert all(n["message"]["raw"] == raw for n in notifications)  # type: ignore[index]
    ids = [e["objectId"] for n in notifications for e in n["message"]["events"]]  # type: ignore[index]
    assert ids == [str(i) for i in range(45)]


def test_25_polling_events_give_pages_of_10_10_5() -> None:
    events = [{"objectId": str(i)} for i in range(25)]
    notifications = _paginate(events, {"rows": 25}, POLLING_PAGE)
    assert [len(n["message"]["events"]) for n in notifications] == [10, 10, 5]  # type: ignore[index]


def test_notification_has_the_contracts_shape_with_caller_ids_and_clock() -> None:
    [notification] = _paginate([{"objectId": "1"}], {"x": 1}, WEBHOOK_PAGE)
    assert notification == {
        "id": "id-2",
        "createdDate": "2026-01-01T10:00:00.000Z",
        "action": "create",
        "message": {
            "elementKey": "hubspot",
            "instanceId": 42,
            "instance_id": 42,
            "instanceName": "crm",
            "eventId": "id-1",
            "events": [{"objectId": "1"}],
            "raw": {"x": 1},
        },
    }


def test_no_events_give_no_notifications_and_a_zero_page_is_refused() -> None:
    assert _paginate([], {}, WEBHOOK_PAGE) == []
    with pytest.raises(ValueError):
        _paginate([{"objectId": "1"}], {}, 0)


@pytest.mark.parametrize("key", [b"secret", "secret", b"\x00\xff" * 40])
def test_signature_matches_an_independently_computed_hmac(key: bytes | str) -> None:
    body = b'{"id": "n-1", "message": {}}'
    raw_key = key.encode() if isinstance(key, str) else key
    expected = base64.b64encode(hmac.new(raw_key, body, hashlib.sha256).digest()).decode()
    assert signature(key, body) == f"sha256={expected}"


def test_signature_matches_rfc_4231_test_case_2() -> None:
    # HMAC-SHA256("Jefe", "what do ya want for nothing?") = 5bdcc146...64ec3843, in base64.
    assert signature("Jefe", b"what do ya want for nothing?") == "sha256=W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
