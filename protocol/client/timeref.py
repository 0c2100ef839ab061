"""Wall-clock times -> revisions (issue #16.6, SPEC.md "revision_at_time").

``watch(..., start_time=T)`` and ``get(..., at=T)`` ask the syncer (through the fan-out) which
revision T stands for, then work by revision as before: a watch created that way resumes after a
failover from its last revision + 1, like any other.

* a watch from T starts at the first revision committed at or after T;
* the state as of T is the range at (the first revision committed after T) - 1, i.e. after
  every revision committed at or before T and none later.

T is a ``datetime`` (naive: local time) or a number of seconds since the Unix epoch.  Commit
times are the writer's wall clock, in microseconds.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from ..errors import Compacted, FutureRevision, InvalidArgument
from .types import Header, header_of


@dataclass(slots=True)
class RevisionAtTime:
    """The syncer's answer for one time (SPEC.md "revision_at_time")."""
    header: Header
    revision: int                   # first revision committed at or after the time (or the next one)
    compact_revision: int
    compacted: bool                 # the answer needs history below the compact revision
    future: bool                    # the time is later than the server's clock
    commit_time_us: int | None      # when `revision` was committed (None: not yet)


def revision_at_time_response(b) -> RevisionAtTime:
    return RevisionAtTime(header_of(b), b["revision"], b.get("compact_revision", 0), bool(b.get("compacted")),
                          bool(b.get("future")), b.get("commit_time_us"))


def time_us_of(when) -> int:
    """Microseconds since the Unix epoch of a datetime (naive: local time) or of a number of seconds."""
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            when = when.astimezone()          # local time, as datetime.now() gives it
        delta = when - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    elif isinstance(when, (int, float)) and not isinstance(when, bool):
        if when != when or when in (float("inf"), float("-inf")):
            raise InvalidArgument(f"time {when!r} is not a finite number of seconds")
        us = round(when * 1_000_000)
    else:
        raise InvalidArgument(f"a time is a datetime or seconds since the Unix epoch, got {type(when).__name__}")
    if not 0 <= us < 1 << 63:
        raise InvalidArgument(f"time {when!r} is before the Unix epoch or too far in the future")
    return us


def _refuse(answer: RevisionAtTime, what: str, when):
    if answer.future:
        raise FutureRevision(f"{what} {when} is later than the server's clock: which revisions it "
                             f"stands for is not known yet")
    if answer.compacted:
        raise Compacted(f"{what} {when} is older than the retained history (compact revision "
                        f"{answer.compact_revision})", compact_revision=answer.compact_revision)


def start_revision_at(answer: RevisionAtTime, when) -> int:
    """The start_revision of a watch from `when`: the first revision committed at or after it."""
    _refuse(answer, "start_time", when)
    return answer.revision


def read_revision_at(answer: RevisionAtTime, when) -> int:
    """The read revision of the state as of `when`, from the answer for `when` + 1 µs (the first
    revision committed after it): one before it."""
    _refuse(answer, "at", when)
    return answer.revision - 1
