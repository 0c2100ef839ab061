"""`--since` / `--at` times (issue #16.6): every accepted form, and a clear error otherwise."""
from __future__ import annotations

import datetime as dt

import pytest

from zwatch.cli.timeparse import parse_time

NOW = dt.datetime(2026, 12, 4, 6, 0, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("text,expected", [
    ("now", NOW),
    ("10 minutes ago", NOW - dt.timedelta(minutes=10)),
    ("2h ago", NOW - dt.timedelta(hours=2)),
    ("1.5 hours ago", NOW - dt.timedelta(minutes=90)),
    ("90s ago", NOW - dt.timedelta(seconds=90)),
    ("3 days ago", NOW - dt.timedelta(days=3)),
    ("1 week ago", NOW - dt.timedelta(weeks=1)),
    ("5 mins ago", NOW - dt.timedelta(minutes=5)),
    ("1733300000", dt.datetime(2024, 12, 4, 8, 13, 20, tzinfo=dt.timezone.utc)),
    ("@1733300000.5", dt.datetime(2024, 12, 4, 8, 13, 20, 500000, tzinfo=dt.timezone.utc)),
    ("2026-12-04T05:30:00Z", dt.datetime(2026, 12, 4, 5, 30, tzinfo=dt.timezone.utc)),
    ("2026-12-04T06:30:00+01:00", dt.datetime(2026, 12, 4, 5, 30, tzinfo=dt.timezone.utc)),
])
def test_accepted_forms(text, expected):
    assert parse_time(text, now=NOW) == expected


def test_a_time_without_zone_is_local():
    got = parse_time("2026-12-04 05:30")
    assert got.tzinfo is not None and got.replace(tzinfo=None) == dt.datetime(2026, 12, 4, 5, 30)


@pytest.mark.parametrize("text,words", [
    ("yesterday", "is not a time"), ("", "is not a time"), ("-5", "is not a time"),
    ("10 parsecs ago", "unknown unit 'parsecs'"), ("2 ms ago", "unknown unit 'ms'"),
    ("2026-13-01", "ISO 8601"),
])
def test_refused_forms_say_what_is_accepted(text, words):
    with pytest.raises(ValueError, match=words):
        parse_time(text, now=NOW)
