"""JSON from clients, with its nesting depth checked before anything recursive reads it.

Python's json decoder recurses once per `[` or `{`: a 2 KB body of `[[[...]]]` raises
RecursionError, which no caller expects (it is not a ValueError) and which surfaced as a 500.
`loads` first counts brackets outside strings in one linear pass and refuses nesting deeper
than MESH_MAX_JSON_DEPTH, then parses. Every place that parses JSON a client (or a remote
server) wrote goes through it: the DRF parser below for every API view, the CLI's
descriptors, the token answers of webhook token endpoints.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils.json import strict_constant

_STRUCTURAL = re.compile(r'[\[\]{}"]')
# The rest of a string after its opening quote. Unrolled (no alternation inside a star),
# so a failing match backtracks in linear time: an unterminated string costs one pass.
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class JSONTooDeep(ValueError):
    """A ValueError, so callers that already refuse malformed JSON refuse this too."""


def max_depth() -> int:
    return int(settings.MESH_MAX_JSON_DEPTH)


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` outside strings.

    Malformed text is never refused here (json.loads reports it better): an unterminated
    string or a stray closing bracket ends the scan, since the decoder stops there too.
    """
    depth = 0
    position = 0
    while (found := _STRUCTURAL.search(text, position)) is not None:
        char, position = found.group(), found.end()
        if char == '"':
            rest = _STRING_REST.match(text, position)
            if rest is None:
                return False
            position = rest.end()
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
            if depth < 0:
                return False
    return False


def check_depth(text: str, limit: int | None = None) -> None:
    limit = max_depth() if limit is None else limit
    if nesting_exceeds(text, limit):
        raise JSONTooDeep(f"JSON nesting is deeper than {limit} levels")


def loads(text: str | bytes, *, limit: int | None = None, **kwargs: Any) -> Any:
    """json.loads after the depth check; raises ValueError (JSONTooDeep or JSONDecodeError)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    check_depth(text, limit)
    return json.loads(text, **kwargs)


class DepthLimitedJSONParser(JSONParser):
    """DRF's JSONParser with the depth check: a ParseError (400 in the view's error shape)."""

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        parse_constant = strict_constant if self.strict else None
        try:
            text = codecs.getreader(encoding)(stream).read()
            return loads(text, parse_constant=parse_constant)
        except JSONTooDeep as error:
            raise ParseError(str(error)) from None
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None

