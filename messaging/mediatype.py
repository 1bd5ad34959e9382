"""Media types (RFC 9110 §8.3.1): a message's Content-Type and a webhook's default one.

The value is stored and sent again as a header of every consume and push, so it must be a
media type a receiver can parse: `type/subtype` (tokens), then `; name=value` parameters
(value a token or a quoted string), with optional whitespace around each `;` and empty
parameters allowed (`text/plain;;` is valid; `;;;` is not). Only ASCII: obs-text is obsolete
and headers go out as ASCII.
"""

from __future__ import annotations

import re

MAX_LENGTH = 255

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_PARAMETER = rf"{_TOKEN}=(?:{_TOKEN}|{_QUOTED})"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*(?:{_PARAMETER})?)*")


def is_media_type(value: str) -> bool:
    # The length is checked first: it also bounds the regex's backtracking over whitespace.
    return len(value) <= MAX_LENGTH and _MEDIA_TYPE.fullmatch(value) is not None
