"""Which requests the hot path serves: POST to the four messaging REST addresses, matched on
the raw path as messaging/urls.py matches them (one percent-encoded segment per name).
Anything else, or anything unusual about these (a name with control characters), is left to
Django, which answers it as it always has."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from .http import Scope

PREFIX = "/messagingrest/v1/"


@dataclass(frozen=True)
class Route:
    action: str  # "queue_publish", "topic_publish", "consume" or "ack"
    name: str
    message_id: str = ""


def _segment(raw: str) -> str | None:
    decoded = unquote(raw)
    return decoded if raw and decoded.isprintable() else None


def _shape(parts: list[str]) -> Route | None:
    match parts:
        case ["queues", name, "messages"]:
            action, message_id = "queue_publish", ""
        case ["topics", name, "messages"]:
            action, message_id = "topic_publish", ""
        case ["queues", name, "messages", "consumption"]:
            action, message_id = "consume", ""
        case ["queues", name, "messages", message_id, "acknowledgement"]:
            action = "ack"
            decoded_id = _segment(message_id)
            if decoded_id is None:
                return None
            message_id = decoded_id
        case _:
            return None
    decoded = _segment(name)
    return None if decoded is None else Route(action, decoded, message_id)


def match(scope: Scope) -> Route | None:
    raw = scope.get("raw_path")
    if not raw:  # the decoded path cannot tell a%2Fb from a/b
        return None
    path = raw.decode("latin-1")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if not path.startswith(PREFIX):
        return None
    return _shape(path[len(PREFIX):].split("/"))
