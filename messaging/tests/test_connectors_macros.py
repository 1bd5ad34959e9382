"""Poller URL date macros: each macro at a given moment, the Java format letters, the
timezone rule for ${date}, and errors that name the bad macro or format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from messaging.connectors.macros import expand, format_java

AT = datetime(2026, 3, 7, 9, 5, 4, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/contacts?since=${epoch}", "/contacts?since=1772874304123"),
        ("/contacts?since=${epoch:ms}", "/contacts?since=1772874304123"),
        ("/contacts?since=${epoch:s}", "/contacts?since=1772874304"),
        ("/q?d=${gmtDate:yyyy-MM-dd'T'HH:mm:ss.SSSXXX}", "/q?d=2026-03-07T09:05:04.123Z"),
        ("/q?d=${gmtDate:yyyy-MM-dd'T'HH:mm:ssZ}", "/q?d=2026-03-07T09:05:04+0000"),
        ("/q?d=${date:yyyyMMdd}", "/q?d=20260307"),
        ("/q?a=${epoch:s}&b=${gmtDate:yy/M/d H}", "/q?a=1772874304&b=26/3/7 9"),
        ("/q?no=macros", "/q?no=macros"),
    ],
)
def test_macros_expand_to_the_given_moment(url: str, expected: str) -> None:
    assert expand(url, at=AT) == expected


def test_date_uses_the_given_timezone_and_gmt_date_ignores_it() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    url = "${date:HH:mmXXX}|${gmtDate:HH:mmXXX}"
    assert expand(url, at=AT, timezone=berlin) == "10:05+01:00|09:05Z"


def test_moment_in_another_zone_is_the_same_instant() -> None:
    local = AT.astimezone(timezone(timedelta(hours=-5)))
    assert expand("${gmtDate:HH}|${epoch}", at=local) == "09|1772874304123"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("'at' HH 'o''clock'", "at 09 o'clock"),
        ("''yyyy''", "'2026'"),
        ("X|XX|XXX|Z", "Z|Z|Z|+0000"),
        ("dd.MM.yyyy", "07.03.2026"),
    ],
)
def test_java_format_letters_and_quoted_literals(pattern: str, expected: str) -> None:
    assert format_java(AT, pattern) == expected


def test_negative_offsets_are_written_with_their_sign() -> None:
    moment = AT.astimezone(timezone(-timedelta(hours=3, minutes=30)))
    assert format_java(moment, "XXX Z") == "-03:30 -0330"


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("/q?d=${now}", "${now}"),
        ("/q?d=${epoch:minutes}", "${epoch:minutes}"),
        ("/q?d=${gmtDate}", "${gmtDate}"),
        ("/q?d=${gmtDate:EEE yyyy}", "'EEE'"),
        ("/q?d=${gmtDate:yyyy", "unterminated"),
    ],
)
def test_unknown_macros_and_bad_formats_raise_value_error_naming_them(url: str, named: str) -> None:
    with pytest.raises(ValueError) as caught:
        expand(url, at=AT)
    assert named in str(caught.value)


def test_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        expand("${epoch}", at=datetime(2026, 1, 1))
