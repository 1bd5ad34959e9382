"""A formula's definition checked once, whoever writes it: every refusal names the field it
is about (`steps[1].properties.url`), so a tenant can fix the one thing that is wrong.

URLs go through the SSRF guard without resolving them (a name may resolve differently when
the step runs, where the guard checks again): only IP literals and malformed URLs are refused
here. A reference (`${...}`) is judged as a neutral word, since its value is not known yet.
"""

from __future__ import annotations

from typing import Any

from meshsite.errors import Invalid

from ...names import InvalidName, validate_topic
from ...webhooks import netguard
from .template import placeholder

MAX_STEPS = 20
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
STEP_FIELDS = frozenset({"name", "type", "properties"})
PROPERTIES = {"request": frozenset({"method", "url", "headers", "body"}), "publish": frozenset({"topic", "payload"})}


def name_check(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise Invalid(f"{field} must be 1 to 200 characters")
    return value


def url_check(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(f"{field} must be a non-empty string")
    try:
        netguard.check_url_when_saved(placeholder(value))
    except ValueError as error:  # InvalidURL, BlockedAddress
        raise Invalid(f"{field}: {error}") from None
    return value


def _request(properties: dict[str, Any], where: str) -> None:
    method = properties.get("method")
    if method not in METHODS:
        raise Invalid(f"{where}.method must be one of {', '.join(METHODS)}")
    url_check(properties.get("url"), f"{where}.url")
    headers = properties.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise Invalid(f"{where}.headers must be an object of strings")


def _publish(properties: dict[str, Any], where: str) -> None:
    topic = properties.get("topic")
    if not isinstance(topic, str) or not topic:
        raise Invalid(f"{where}.topic must be a non-empty string")
    try:
        validate_topic(placeholder(topic))
    except InvalidName as error:
        raise Invalid(f"{where}.topic: {error}") from None


def _step(step: Any, where: str) -> dict[str, Any]:
    if not isinstance(step, dict):
        raise Invalid(f"{where} must be an object")
    unknown = sorted(set(step) - STEP_FIELDS)
    if unknown:
        raise Invalid(f"{where}.{unknown[0]} is not a step field")
    name_check(step.get("name"), f"{where}.name")
    kind = step.get("type")
    if not isinstance(kind, str) or kind not in PROPERTIES:  # a list or object is unhashable
        raise Invalid(f"{where}.type must be request or publish")
    properties = step.get("properties", {})
    if not isinstance(properties, dict):
        raise Invalid(f"{where}.properties must be an object")
    unknown = sorted(set(properties) - PROPERTIES[kind])
    if unknown:
        raise Invalid(f"{where}.properties.{unknown[0]} is not a property of a {kind} step")
    (_request if kind == "request" else _publish)(properties, f"{where}.properties")
    return {"name": step["name"], "type": kind, "properties": properties}


def steps_check(steps: Any) -> list[dict[str, Any]]:
    """The steps as stored, or Invalid naming the first field that is wrong."""
    if not isinstance(steps, list) or not steps:
        raise Invalid("steps must be a list of at least one step")
    if len(steps) > MAX_STEPS:
        raise Invalid(f"steps: a formula has at most {MAX_STEPS} steps")
    checked = [_step(step, f"steps[{index}]") for index, step in enumerate(steps)]
    seen: set[str] = set()
    for index, step in enumerate(checked):
        if step["name"] in seen:
            raise Invalid(f"steps[{index}].name {step['name']!r} is taken by an earlier step")
        seen.add(step["name"])
    return checked
