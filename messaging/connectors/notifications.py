"""Event notification bodies (the contract's shape) and their signature header.

Pure: the caller supplies the ids and the clock, so a retry can resend the same bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from messaging.connectors.normalize import Event, to_iso
from messaging.webhooks.signing import ELEMENTS_HEADER, elements_signature

# The contract's page sizes: a notification carries at most this many event objects.
POLLING_PAGE = 10
WEBHOOK_PAGE = 20
SIGNATURE_HEADER = ELEMENTS_HEADER


def paginate(
    events: Sequence[Event],
    raw: Any,
    *,
    per_notification: int,
    element_key: str,
    instance_id: int,
    instance_name: str,
    new_id: Callable[[], str],
    now: datetime,
) -> list[dict[str, Any]]:
    """Split events into notifications; each carries the full raw body, as the contract says."""
    if per_notification < 1:
        raise ValueError("per_notification must be at least 1")
    pages = [events[i : i + per_notification] for i in range(0, len(events), per_notification)]
    return [_notification(list(page), raw, element_key, instance_id, instance_name, new_id, now) for page in pages]


def _notification(
    page: list[Event],
    raw: Any,
    element_key: str,
    instance_id: int,
    instance_name: str,
    new_id: Callable[[], str],
    now: datetime,
) -> dict[str, Any]:
    message = {
        "elementKey": element_key,
        # Both spellings: the framework's clients read either.
        "instanceId": instance_id,
        "instance_id": instance_id,
        "instanceName": instance_name,
        "eventId": new_id(),
        "events": page,
        "raw": raw,
    }
    return {"id": new_id(), "createdDate": to_iso(now), "action": "create", "message": message}


def signature(key: bytes | str, body: bytes) -> str:
    """The `Elements-Webhook-Signature` value: sha256=<base64 HMAC-SHA256(key, body)>."""
    return elements_signature(key, body)
