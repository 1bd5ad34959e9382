"""Queue and topic names, topic patterns, and how a pattern matches a topic.

Patterns use SAP Event Mesh wildcards: `+` matches exactly one segment and a trailing `*`
matches one or more further segments. The same rule decides whether a descriptor filter
(`${namespace}/*`) admits a topic, a queue name, or a subscription pattern.
"""

from __future__ import annotations

import re

_SEGMENT = r"[a-zA-Z0-9\-_.]"
QUEUE_NAME_RE = re.compile(rf"^{_SEGMENT}{{1,111}}(?:/{_SEGMENT}{{1,109}}){{0,19}}$")
PATTERN_SEGMENT_RE = re.compile(rf"^(?:{_SEGMENT}{{1,111}}|\+|\*)$")
MAX_SEGMENTS = 20
MAX_NAME_LENGTH = 111 + 19 * 110


class InvalidName(ValueError):
    pass


def _check_dots(name: str, kind: str) -> None:
    if any(segment in (".", "..") for segment in name.split("/")):
        raise InvalidName(f"{kind} name must not contain '.' or '..' segments")


def validate_queue_name(name: str) -> str:
    if not QUEUE_NAME_RE.match(name):
        raise InvalidName(
            "Queue name is invalid: 1 to 20 '/'-separated segments of [a-zA-Z0-9-_.], "
            "the first at most 111 and the others at most 109 characters"
        )
    _check_dots(name, "Queue")
    return name


def validate_topic(topic: str) -> str:
    """A concrete topic, as published to: no wildcards."""
    if not QUEUE_NAME_RE.match(topic):
        raise InvalidName(
            "Topic is invalid: 1 to 20 '/'-separated segments of [a-zA-Z0-9-_.] "
            "without wildcards"
        )
    _check_dots(topic, "Topic")
    return topic


def validate_pattern(pattern: str) -> str:
    """A subscription pattern or rule filter: segments, `+`, and `*` only at the end."""
    segments = pattern.split("/")
    if not pattern or len(pattern) > MAX_NAME_LENGTH or len(segments) > MAX_SEGMENTS:
        raise InvalidName("Topic pattern is empty or too long")
    for index, segment in enumerate(segments):
        if not PATTERN_SEGMENT_RE.match(segment):
            raise InvalidName(f"Topic pattern segment {segment!r} is invalid")
        if segment == "*" and index != len(segments) - 1:
            raise InvalidName("'*' is only allowed as the last segment of a topic pattern")
    _check_dots(pattern, "Topic pattern")
    return pattern


def covers(pattern: str, name: str) -> bool:
    """Whether `pattern` admits `name`: a concrete topic or queue, or a narrower pattern.

    For a concrete name this is ordinary wildcard matching. When `name` is itself a pattern,
    its `+` is only admitted by `+` or `*`, and its trailing `*` only by a trailing `*`, so a
    filter never admits a subscription broader than itself.
    """
    wanted = pattern.split("/")
    given = name.split("/")
    for index, segment in enumerate(wanted):
        if segment == "*" and index == len(wanted) - 1:
            return len(given) > index
        if index >= len(given):
            return False
        if segment == "+":
            if given[index] == "*":
                return False
        elif segment != given[index]:
            return False
    return len(given) == len(wanted)


def literal_prefix(pattern: str) -> str:
    """The segments before the first wildcard: the key that finds candidate subscriptions."""
    prefix: list[str] = []
    for segment in pattern.split("/"):
        if segment in ("+", "*"):
            break
        prefix.append(segment)
    return "/".join(prefix)


def prefixes(topic: str) -> list[str]:
    """Every literal prefix a matching pattern can have: '', 'a', 'a/b', ... 'a/b/c'."""
    segments = topic.split("/")
    return ["/".join(segments[:length]) for length in range(len(segments) + 1)]
