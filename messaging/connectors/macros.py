"""Date macros in poller URLs: `${gmtDate:<format>}`, `${date:<format>}`, `${epoch}`, `${epoch:s}`.

Each expands to one moment the caller supplies (the last poll time minus `pollDelay`), so a
poll asks the provider for what changed since then. Formats are Java SimpleDateFormat
patterns, as the framework's users write them; the common letters are translated here.
`gmtDate` is always UTC; `date` is in the `timezone` the caller passes (the poller
configuration's timezone), UTC when none is given. `epoch` is milliseconds, `epoch:s`
seconds. A format cannot contain `}`, which ends the macro.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MACRO = re.compile(r"\$\{([^}]*)\}")
# A run of one pattern letter, a quoted literal ('' is a quote), or one other character.
_TOKEN = re.compile(r"([A-Za-z])\1*|'(?:[^']|'')*'|''|.", re.DOTALL)


def _offset(moment: datetime, colon: bool) -> str:
    seconds = int(moment.utcoffset().total_seconds())  # type: ignore[union-attr]
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"


def _iso_offset(moment: datetime) -> str:
    # Java's X letters write Z for UTC, where Z writes +0000.
    return "Z" if moment.utcoffset() == UTC.utcoffset(None) else _offset(moment, colon=True)


_LETTERS: dict[str, Callable[[datetime], str]] = {
    "yyyy": lambda m: f"{m.year:04d}",
    "yy": lambda m: f"{m.year % 100:02d}",
    "MM": lambda m: f"{m.month:02d}",
    "M": lambda m: str(m.month),
    "dd": lambda m: f"{m.day:02d}",
    "d": lambda m: str(m.day),
    "HH": lambda m: f"{m.hour:02d}",
    "H": lambda m: str(m.hour),
    "mm": lambda m: f"{m.minute:02d}",
    "ss": lambda m: f"{m.second:02d}",
    "SSS": lambda m: f"{m.microsecond // 1000:03d}",
    "XXX": _iso_offset,
    "X": lambda m: _iso_offset(m).replace(":", "")[:3],
    "XX": lambda m: _iso_offset(m).replace(":", ""),
    "Z": lambda m: _offset(m, colon=False),
}


def format_java(moment: datetime, pattern: str) -> str:
    """`moment` written with a Java SimpleDateFormat pattern; unknown letters raise ValueError."""
    out = []
    for match in _TOKEN.finditer(pattern):
        token = match.group(0)
        if token.startswith("'"):
            out.append("'" if token == "''" else token[1:-1].replace("''", "'"))
        elif token[0].isascii() and token[0].isalpha():
            if token not in _LETTERS:
                raise ValueError(f"date format {pattern!r}: unsupported letters {token!r}")
            out.append(_LETTERS[token](moment))
        else:
            out.append(token)
    return "".join(out)


def _expand_one(body: str, at: datetime, timezone: tzinfo) -> str:
    name, _, arg = body.partition(":")
    if name == "gmtDate" and arg:
        return format_java(at.astimezone(UTC), arg)
    if name == "date" and arg:
        return format_java(at.astimezone(timezone), arg)
    # Integer arithmetic: timestamp() is a float and can round a millisecond away.
    if name == "epoch" and arg in ("", "ms"):
        return str((at - _EPOCH) // timedelta(milliseconds=1))
    if name == "epoch" and arg == "s":
        return str((at - _EPOCH) // timedelta(seconds=1))
    raise ValueError(f"unknown or malformed macro ${{{body}}}")


def expand(url: str, *, at: datetime, timezone: tzinfo = UTC) -> str:
    """`url` with every date macro replaced by `at` (which must carry a timezone)."""
    if at.tzinfo is None:
        raise ValueError("the poll moment must be timezone-aware")
    expanded = _MACRO.sub(lambda m: _expand_one(m.group(1), at, timezone), url)
    if "${" in expanded:
        raise ValueError(f"unterminated macro in {url!r}")
    return expanded
