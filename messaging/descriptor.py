"""The Event Mesh service descriptor: the parameters of an `event-mesh` service instance.

It names the namespace, switches the instance's APIs on and off, and holds the topic and
queue rules that decide what the instance's keys may publish to and subscribe to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .names import InvalidName, covers, validate_pattern

NAMESPACE_RE = re.compile(r"^[a-zA-Z0-9]+/[a-zA-Z0-9]+/[a-zA-Z0-9]+$")
EMNAME_RE = re.compile(r"^[a-zA-Z0-9_\-]{1,100}$")
OPTIONS = ("management", "messagingrest", "messaging")
RULE_KINDS = ("topicRules", "queueRules")
FILTERS = ("publishFilter", "subscribeFilter")
ALLOWED_KEYS = {"emname", "version", "namespace", "options", "rules", "resources", "xs-security"}
DEFAULT_FILTER = ["${namespace}/*"]


class DescriptorError(ValueError):
    pass


def normalize_descriptor(raw: Any, instance_name: str) -> dict[str, Any]:
    """Validate a descriptor and return it with every default filled in."""
    if not isinstance(raw, dict):
        raise DescriptorError("The service descriptor must be a JSON object")
    unknown = sorted(set(raw) - ALLOWED_KEYS)
    if unknown:
        raise DescriptorError(f"Unknown descriptor attribute(s): {', '.join(unknown)}")
    emname = raw.get("emname", instance_name)
    if not isinstance(emname, str) or not EMNAME_RE.match(emname):
        raise DescriptorError("emname must be 1 to 100 characters of [a-zA-Z0-9_-]")
    if emname != instance_name:
        raise DescriptorError(f"emname {emname!r} must equal the instance name {instance_name!r}")
    namespace = _namespace(raw.get("namespace"))
    return {
        "emname": emname,
        "version": _version(raw.get("version", "1.1.0")),
        "namespace": namespace,
        "options": _options(raw.get("options", {})),
        "rules": _rules(raw.get("rules", {}), namespace),
        **{key: raw[key] for key in ("resources", "xs-security") if key in raw},
    }


def _namespace(value: Any) -> str:
    if not isinstance(value, str) or not NAMESPACE_RE.match(value) or len(value) > 24:
        raise DescriptorError(
            "namespace must be exactly three '/'-separated segments of [a-zA-Z0-9], "
            "at most 24 characters in all (e.g. 'a/b/c')"
        )
    return value


def _version(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 20:
        raise DescriptorError("version must be a string such as '1.1.0'")
    return value


def _options(value: Any) -> dict[str, bool]:
    if not isinstance(value, dict):
        raise DescriptorError("options must be an object")
    unknown = sorted(set(value) - set(OPTIONS))
    if unknown:
        raise DescriptorError(f"Unknown option(s): {', '.join(unknown)}")
    for key, flag in value.items():
        if not isinstance(flag, bool):
            raise DescriptorError(f"options.{key} must be true or false")
    return {key: value.get(key, True) for key in OPTIONS}


def _rules(value: Any, namespace: str) -> dict[str, dict[str, list[str]]]:
    if not isinstance(value, dict):
        raise DescriptorError("rules must be an object")
    unknown = sorted(set(value) - set(RULE_KINDS))
    if unknown:
        raise DescriptorError(f"Unknown rule kind(s): {', '.join(unknown)}")
    rules: dict[str, dict[str, list[str]]] = {}
    for kind in RULE_KINDS:
        section = value.get(kind, {})
        if not isinstance(section, dict) or set(section) - set(FILTERS):
            raise DescriptorError(f"rules.{kind} may only hold {' and '.join(FILTERS)}")
        rules[kind] = {
            name: _filters(section.get(name, DEFAULT_FILTER), namespace, f"rules.{kind}.{name}") for name in FILTERS
        }
    return rules


def _filters(value: Any, namespace: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DescriptorError(f"{where} must be a list of topic patterns")
    if len(value) > 100:
        raise DescriptorError(f"{where} holds more than 100 patterns")
    result = []
    for item in value:
        expanded = item.replace("${namespace}", namespace)
        try:
            result.append(validate_pattern(expanded))
        except InvalidName as error:
            raise DescriptorError(f"{where}: {error}") from None
    return result


@dataclass(frozen=True)
class Rules:
    """The descriptor's rules, asked by the messaging services before every action."""

    rules: dict[str, dict[str, list[str]]]

    def allows(self, kind: str, action: str, name: str) -> bool:
        return any(covers(pattern, name) for pattern in self.rules[kind][action])


def descriptor_template(instance_name: str) -> dict[str, Any]:
    """Where the cockpit's descriptor editor starts: the namespace `a/b/c`, every API on, and
    rules that keep the instance's keys inside its own namespace."""
    return {
        "emname": instance_name,
        "namespace": "a/b/c",
        "version": "1.1.0",
        "options": {"management": True, "messagingrest": True, "messaging": True},
        "rules": {
            "queueRules": {"publishFilter": ["${namespace}/*"], "subscribeFilter": ["${namespace}/*"]},
            "topicRules": {"publishFilter": ["${namespace}/*"], "subscribeFilter": ["${namespace}/*"]},
        },
    }
