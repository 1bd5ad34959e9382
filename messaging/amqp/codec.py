"""AMQP messages to and from the store's rows.

A publish keeps the body's bytes and content type exactly (REST consumers and webhooks see
what an AMQP publisher sent, and the other way round) and the message's own properties as a
small JSON object in the row (`Message.properties`): the publisher's message id, correlation
id, subject, reply-to and application properties. AMQP's typed values that JSON has no type
for (UUIDs, timestamps, binary, symbols) travel on as their text; documented in docs/api.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proton import Message

from meshsite.errors import Invalid

from ..services import Outgoing

OCTETS = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
# The AMQP properties a delivery carries again, under their names in Message.properties.
_KEPT = ("message_id", "correlation_id", "subject", "reply_to")


@dataclass(frozen=True)
class Incoming:
    """A message a client published: where to (its `to`, for a link with no target) and what
    to store."""

    to: str | None
    outgoing: Outgoing  # with the message's properties as the row keeps them


def decode(data: bytes, *, presettled: bool) -> Incoming:
    """A published message, or Invalid (amqp:decode-error) when the bytes are no message."""
    message = Message()
    try:
        message.decode(data)
    except Exception as error:  # proton raises its own DataException / MessageException
        raise Invalid(f"The message could not be decoded: {error}") from None
    payload, default_type = _payload(message.body)
    # proton 0.40 reads a missing content type as symbol("None"); no media type has that name.
    content_type = message.content_type if message.content_type not in (None, "None", "") else default_type
    ttl = message.ttl
    return Incoming(
        to=message.address or None,
        outgoing=Outgoing(
            payload=payload,
            content_type=content_type,
            # Pre-settled and not durable: the publisher asked for no guarantee (qos 0).
            qos=0 if presettled and not message.durable else 1,
            expiration_ms=max(1, round(ttl * 1000)) if ttl else None,
            properties=_properties(message),
        ),
    )


def _payload(body: Any) -> tuple[bytes, str]:
    if body is None:
        return b"", OCTETS
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), OCTETS
    if isinstance(body, str):
        return body.encode("utf-8"), TEXT
    # An AmqpValue holding a map, a list or a number: stored as its JSON.
    return json.dumps(body, default=str, separators=(",", ":")).encode(), JSON


def _properties(message: Message) -> str:
    kept: dict[str, Any] = {}
    for name in _KEPT:
        value = getattr(message, "id" if name == "message_id" else name)
        if value is not None:
            kept[name] = _plain(value)
    application = message.properties
    if application:
        kept["application_properties"] = {str(key): _plain(value) for key, value in application.items()}
    return json.dumps(kept, separators=(",", ":")) if kept else ""


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def encode(*, payload: bytes, content_type: str, to: str, message_id: str, created_at: datetime,
           delivery_count: int, durable: bool, properties: str, reuse: Message | None = None) -> bytes:
    """A delivery to a consumer: the stored bytes as one Data section, `to` = where it was
    published ("topic:<t>" or "queue:<q>"), and the publisher's properties. The header's
    delivery-count is AMQP's: earlier attempts, so 0 on the first delivery. `reuse`: a
    Message of the caller's to fill instead of a new one (making one measured ~5% of a
    consuming connection's CPU)."""
    kept: dict[str, Any] = json.loads(properties) if properties else {}
    message = reuse if reuse is not None else Message()
    message.clear()
    message.body = payload
    message.content_type = content_type
    message.address = to
    message.durable = durable
    message.id = kept.get("message_id", message_id)
    message.correlation_id = kept.get("correlation_id")
    message.subject = kept.get("subject")  # type: ignore[assignment]  # proton types these str; None clears them
    message.reply_to = kept.get("reply_to")  # type: ignore[assignment]
    message.properties = kept.get("application_properties") or None
    message.inferred = True  # bytes as a Data section, not an AmqpValue holding binary
    message.creation_time = created_at.timestamp()
    message.delivery_count = max(0, delivery_count - 1)
    message.first_acquirer = delivery_count <= 1
    return bytes(message.encode())
