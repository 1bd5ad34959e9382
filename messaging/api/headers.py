"""The messaging REST headers read as a publish or consume: x-qos, x-message-expiration and
Content-Type. Plain functions of a header lookup, so that the DRF views and the hot path
(messaging.hotpath) parse them the same way and refuse them with the same words."""

from __future__ import annotations

from collections.abc import Callable

from meshsite.errors import Invalid

from ..services import Outgoing

Header = Callable[[str], "str | None"]


def qos(header: Header) -> int:
    raw = header("x-qos")
    if raw not in ("0", "1"):
        raise Invalid("x-qos is invalid")
    return int(raw)


def expiration(header: Header) -> int | None:
    raw = header("x-message-expiration")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise Invalid("x-message-expiration is invalid")
    return int(raw)


def outgoing(header: Header, body: bytes) -> Outgoing:
    content_type = header("content-type") or ""
    if not content_type:
        raise Invalid("Content-Type is missing")
    return Outgoing(payload=body, content_type=content_type, qos=qos(header), expiration_ms=expiration(header))
