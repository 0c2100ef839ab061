"""Times on the command line (issue #16.6): `watch --since TIME`, `get --at TIME`.

Accepted, tried in this order:

* `now`;
* a duration ago: `10 minutes ago`, `2h ago`, `1.5 hours ago`, `90s ago` (units: s, sec, second,
  m, min, minute, h, hr, hour, d, day, w, week, each with or without a plural s);
* Unix seconds: `1733300000`, `1733300000.25`, `@1733300000`;
* ISO 8601: `2026-12-04T05:30:00Z`, `2026-12-04 05:30:00+01:00`, `2026-12-04T05:30` (no zone:
  local time), `2026-12-04` (local midnight).

A time parses to a timezone-aware datetime.  Anything else is a ValueError whose text says what
is accepted.
"""
from __future__ import annotations

import datetime as _dt
import re

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hr": 3600,
          "hour": 3600, "d": 86400, "day": 86400, "w": 604800, "week": 604800}
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s+ago\s*$", re.IGNORECASE)
_UNIX = re.compile(r"^\s*@?(\d{1,12}(?:\.\d{1,6})?)\s*$")
ACCEPTED = ("a time: 'now', 'N UNIT ago' (e.g. '10 minutes ago', '2h ago'), Unix seconds "
            "(e.g. 1733300000), or ISO 8601 (e.g. 2026-12-04T05:30:00Z; no zone: local time)")


def parse_time(text: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """TEXT -> an aware datetime (ValueError with ACCEPTED's words when it is none of them)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    t = text.strip()
    if t.lower() == "now":
        return now
    m = _AGO.match(t)
    if m:
        word = m.group(2).lower()
        # a plural s, but not "ms" (milliseconds, not minutes)
        unit = word if word in _UNITS else word[:-1] if word.endswith("s") and len(word) > 2 else None
        if unit not in _UNITS:
            raise ValueError(f"{text!r}: unknown unit {m.group(2)!r} (s, m, h, d, w or their names)")
        try:
            return now - _dt.timedelta(seconds=float(m.group(1)) * _UNITS[unit])
        except OverflowError:
            raise ValueError(f"{text!r}: too long ago") from None
    m = _UNIX.match(t)
    if m:
        return _dt.datetime.fromtimestamp(float(m.group(1)), _dt.timezone.utc)
    try:
        parsed = _dt.datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"{text!r} is not {ACCEPTED}") from None
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


__all__ = ["parse_time", "ACCEPTED"]


def time_option(text: str | None, rev: int, flag: str) -> _dt.datetime | None:
    """A TIME option (`get --at`, `watch --since`) as a datetime, None when absent; ValueError
    naming the flag for a bad one, or with --rev (both say where to read from)."""
    if text is None:
        return None
    if rev:
        raise ValueError(f"{flag} and --rev are mutually exclusive")
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None
