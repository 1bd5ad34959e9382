"""The JSON protocol's frames: what a client may send, checked field by field into typed
requests (Invalid names the field), and the messages the server sends back.

A body travels as text when its content type is textual and its bytes are UTF-8, and as
base64 (`"encoding": "base64"`) otherwise, so a message's bytes are the same whichever
protocol published or consumes it. docs/api.md ("JSON WebSocket") is the reference.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings

from meshsite.errors import Invalid, MeshError, TooLarge
from meshsite.jsonlimit import loads
from messaging.mediatype import is_media_type

from ..services import Outgoing

SUBPROTOCOL = "meshsite.v1"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
OCTETS = "application/octet-stream"
MAX_ID = 64
MAX_TAGS = 1000


@dataclass(frozen=True)
class Subscribe:
    sub: str
    queue: str | None
    topic: str | None
    credit: int
    qos: int


@dataclass(frozen=True)
class Credit:
    sub: str
    credit: int


@dataclass(frozen=True)
class Settle:
    op: str  # ack, nack, release
    sub: str
    tags: list[str]


@dataclass(frozen=True)
class Unsubscribe:
    sub: str


@dataclass(frozen=True)
class Publish:
    ref: str | None
    queue: str | None
    topic: str | None
    outgoing: Outgoing


@dataclass(frozen=True)
class Ping:
    ref: str | None


Request = Subscribe | Credit | Settle | Unsubscribe | Publish | Ping


class Refused(Exception):
    """A refused frame: the reason, and what the client called the request or subscription
    (so that the error frame can say which)."""

    def __init__(self, error: MeshError, *, ref: str | None = None, sub: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.ref = ref
        self.sub = sub


def max_frame() -> int:
    """The largest text frame (MESH_WS_MAX_FRAME)."""
    return int(settings.MESH_WS_MAX_FRAME)


def parse(text: str) -> Request:
    """The request a text frame holds, or Refused saying why not."""
    try:
        frame = loads(text)
    except ValueError as error:
        raise Refused(Invalid(f"The frame is not JSON: {error}")) from None
    if not isinstance(frame, dict):
        raise Refused(Invalid("A frame is a JSON object with an 'op'"))
    ref, sub = _loose_id(frame, "ref"), _loose_id(frame, "sub")
    op = frame.get("op")
    parser = _PARSERS.get(op) if isinstance(op, str) else None
    try:
        if parser is None:
            raise Invalid(f"Unknown op {op!r}; one of: {', '.join(_PARSERS)}")
        request: Request = parser(frame)
    except MeshError as error:
        raise Refused(error, ref=ref, sub=sub) from None
    return request


def _subscribe(frame: dict[str, Any]) -> Subscribe:
    sub = _id(frame, "sub")
    queue, topic = _destination(frame)
    qos = _int(frame, "qos", default=1, low=0, high=1)
    default_credit = 0 if topic is not None else 10
    credit = _int(frame, "credit", default=default_credit, low=0, high=settings.MESH_WS_MAX_CREDIT)
    return Subscribe(sub=sub, queue=queue, topic=topic, credit=credit, qos=qos)


def _credit(frame: dict[str, Any]) -> Credit:
    sub = _id(frame, "sub")
    return Credit(sub=sub, credit=_int(frame, "credit", default=None, low=1, high=settings.MESH_WS_MAX_CREDIT))


def _settle(frame: dict[str, Any]) -> Settle:
    sub = _id(frame, "sub")
    tags = frame.get("tags", [frame["tag"]] if "tag" in frame else None)
    if not isinstance(tags, list) or not tags or len(tags) > MAX_TAGS:
        raise Invalid(f"'tag' (a string) or 'tags' (1 to {MAX_TAGS} strings) is required")
    if not all(isinstance(tag, str) and 0 < len(tag) <= MAX_ID for tag in tags):
        raise Invalid("Each tag is a string of a message this subscription received")
    return Settle(op=frame["op"], sub=sub, tags=tags)


def _unsubscribe(frame: dict[str, Any]) -> Unsubscribe:
    return Unsubscribe(sub=_id(frame, "sub"))


def _publish(frame: dict[str, Any]) -> Publish:
    ref = _optional_id(frame, "ref")
    queue, topic = _destination(frame)
    payload, default_type = _body(frame)
    if len(payload) > settings.MESH_MAX_MESSAGE_SIZE:
        raise TooLarge(f"A message body may be at most {settings.MESH_MAX_MESSAGE_SIZE} bytes")
    content_type = frame.get("contentType", default_type)
    if not isinstance(content_type, str) or not is_media_type(content_type):
        raise Invalid("'contentType' is not a media type (type/subtype; name=value)")
    ttl = _int(frame, "ttl", default=0, low=0, high=2**31 - 1)
    return Publish(ref=ref, queue=queue, topic=topic, outgoing=Outgoing(
        payload=payload, content_type=content_type, qos=_int(frame, "qos", default=1, low=0, high=1),
        expiration_ms=ttl or None, properties=_properties(frame),
    ))


def _ping(frame: dict[str, Any]) -> Ping:
    return Ping(ref=_optional_id(frame, "ref"))


_PARSERS: dict[str, Callable[[dict[str, Any]], Request]] = {
    "subscribe": _subscribe, "credit": _credit, "ack": _settle, "nack": _settle, "release": _settle,
    "unsubscribe": _unsubscribe, "publish": _publish, "ping": _ping,
}


# --- fields ---------------------------------------------------------------------------------------


def _loose_id(frame: dict[str, Any], name: str) -> str | None:
    value = frame.get(name)
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID else None


def _optional_id(frame: dict[str, Any], name: str) -> str | None:
    if name not in frame:
        return None
    value = _loose_id(frame, name)
    if value is None:
        raise Invalid(f"'{name}' is a string of 1 to {MAX_ID} characters")
    return value


def _id(frame: dict[str, Any], name: str) -> str:
    value = _optional_id(frame, name)
    if value is None:
        raise Invalid(f"'{name}' is required")
    return value


def _destination(frame: dict[str, Any]) -> tuple[str | None, str | None]:
    queue, topic = frame.get("queue"), frame.get("topic")
    if (queue is None) == (topic is None):
        raise Invalid("Exactly one of 'queue' and 'topic' is required")
    value = queue if queue is not None else topic
    if not isinstance(value, str) or not value:
        raise Invalid(f"'{'queue' if queue is not None else 'topic'}' is a non-empty string")
    return queue, topic


def _int(frame: dict[str, Any], name: str, *, default: int | None, low: int, high: int) -> int:
    value = frame.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"'{name}' is an integer from {low} to {high}")
    return value


def _body(frame: dict[str, Any]) -> tuple[bytes, str]:
    if "body" not in frame:
        raise Invalid("'body' is required")
    body = frame["body"]
    encoding = frame.get("encoding")
    if encoding == "base64":
        if not isinstance(body, str):
            raise Invalid("A base64 'body' is a string")
        try:
            return base64.b64decode(body, validate=True), OCTETS
        except (binascii.Error, ValueError):
            raise Invalid("'body' is not valid base64") from None
    if encoding is not None:
        raise Invalid("'encoding' is 'base64' or absent")
    if isinstance(body, str):
        try:
            return body.encode("utf-8"), TEXT
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON but no text
            raise Invalid("'body' is not valid Unicode text; send bytes as base64") from None
    # Any other JSON value is the message: stored as its JSON.
    return json.dumps(body, separators=(",", ":")).encode(), JSON


def _properties(frame: dict[str, Any]) -> str:
    """The publisher's application properties (a flat map of scalars) and correlation id,
    stored as the AMQP endpoint stores its properties, so either protocol reads them."""
    kept: dict[str, Any] = {}
    properties = frame.get("properties")
    if properties is not None:
        if not isinstance(properties, dict) or len(properties) > 64 or not all(
                isinstance(value, (str, int, float, bool)) or value is None for value in properties.values()):
            raise Invalid("'properties' is a map of at most 64 names to strings, numbers, booleans or null")
        kept["application_properties"] = properties
    correlation = frame.get("correlationId")
    if correlation is not None:
        if not isinstance(correlation, str) or len(correlation) > 256:
            raise Invalid("'correlationId' is a string of at most 256 characters")
        kept["correlation_id"] = correlation
    return json.dumps(kept, separators=(",", ":")) if kept else ""


# --- what the server sends ---------------------------------------------------------------------


def message(*, sub: str, tag: str | None, payload: bytes, content_type: str, to: str, message_id: str,
            created_at: datetime, delivery_count: int, properties: str) -> dict[str, Any]:
    frame: dict[str, Any] = {"op": "message", "sub": sub}
    if tag is not None:
        frame["tag"] = tag
    kept: dict[str, Any] = json.loads(properties) if properties else {}
    frame.update({"to": to, "messageId": kept.get("message_id", message_id), "contentType": content_type,
                  "createdAt": created_at.isoformat(), "deliveryCount": delivery_count})
    text = _as_text(payload, content_type)
    if text is None:
        frame["body"] = base64.b64encode(payload).decode("ascii")
        frame["encoding"] = "base64"
    else:
        frame["body"] = text
    for stored, name in (("correlation_id", "correlationId"), ("subject", "subject"), ("reply_to", "replyTo")):
        if kept.get(stored) is not None:
            frame[name] = kept[stored]
    if kept.get("application_properties"):
        frame["properties"] = kept["application_properties"]
    return frame


def _as_text(payload: bytes, content_type: str) -> str | None:
    kind = content_type.split(";", 1)[0].strip().lower()
    textual = (kind.startswith("text/") or kind in ("application/json", "application/xml", "application/javascript")
               or kind.endswith(("+json", "+xml")))
    if not textual:
        return None
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def error(error: MeshError, *, ref: str | None = None, sub: str | None = None) -> dict[str, Any]:
    """A refusal, as REST would answer it: its HTTP status, a code, the message."""
    frame: dict[str, Any] = {"op": "error", "status": error.status_code, "code": error.code, "message": error.message}
    if ref is not None:
        frame["ref"] = ref
    if sub is not None:
        frame["sub"] = sub
    return frame


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
