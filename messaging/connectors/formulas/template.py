"""The formulas' templating: `${trigger.event.objectId}` in a string is replaced by the value
at that dotted path of the context `{"trigger": ..., "steps": {<name>: <result>}}`.

Deliberately tiny (a lookup, no expressions, no eval): a formula is written by a tenant and
run by our workers. A string that is exactly one reference takes the referenced value as it
is (an object stays an object); a reference inside longer text is put in as text (JSON for
anything but a string).
"""

from __future__ import annotations

import json
import re
from typing import Any

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)\}")


class TemplateError(ValueError):
    """A reference to something the context does not hold."""


def lookup(context: Any, path: str) -> Any:
    value = context
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"${{{path}}} is not in the context")
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def render_string(template: str, context: dict[str, Any]) -> Any:
    whole = REFERENCE.fullmatch(template)
    if whole:
        return lookup(context, whole.group(1))
    return REFERENCE.sub(lambda match: _text(lookup(context, match.group(1))), template)


def render(value: Any, context: dict[str, Any]) -> Any:
    """`value` (any JSON) with every reference in its strings replaced; keys are left alone."""
    if isinstance(value, str):
        return render_string(value, context)
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    return value


def placeholder(template: str) -> str:
    """`template` with every reference replaced by a neutral word: what a save-time check of a
    URL or topic can judge before the references have values."""
    return REFERENCE.sub("x", template)
