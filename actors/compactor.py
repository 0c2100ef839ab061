"""Automatic compaction policy, etcd 3.4's v3compactor (periodic.go, revision.go) without I/O.

The writer owns the clock and the store: it calls ``tick(now, revision, compact_revision)``
when ``now >= next_at`` and, on a decision R, compacts to R through the same path as a client
``compact`` (one commit, published), then reports the outcome with ``done(now, ok)``.  Tests
drive the classes with a fake clock (tests/unit/test_compactor.py).

Periodic (``--auto-compaction-mode=periodic``, retention a duration P): the revision is sampled
every P/10 (P capped at 1 h for this: every 6 min at most), the last P/(P/10) + 1 samples are
kept, so the oldest is the revision of about P ago.  Nothing is compacted during the first P;
then, at each sample tick at least ``min(P, 1 h)`` after the last success, the oldest sample is
the target (so a 24 h retention compacts every hour, to the revision of 24 h ago).  A failure is
retried at the next tick.  etcd's loop order is kept exactly: at a tick, first the check, then
the new sample, so in steady state the target is 1.1 P old.

Revision (``--auto-compaction-mode=revision``, retention a count N): every ``interval_s``
(etcd: 5 minutes, fixed), the target is ``revision - N``, skipped when <= 0 or equal to the last
successful target.

The writer reports a decision it could not run (a physical compaction still running, a failed
commit) as done(ok=False): retried at the next tick, as etcd retries a failed Compact.

Both: a target at or below the current compact revision counts as done (etcd treats its
ErrCompacted as success), so no empty compaction is started or logged.
"""
from __future__ import annotations

import re

from zwatch.settings import SettingError

PERIODIC, REVISION = "periodic", "revision"
REVISION_INTERVAL_S = 300.0            # etcd's revInterval
_RETRY_DIVISOR = 10                    # etcd's retryDivisor
_HOUR = 3600.0
_EPSILON_S = 1e-6                      # sums of P/10 steps fall a hair short of P in floating point
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds of a Go time.ParseDuration string (``90s``, ``30m``, ``1h30m``, ``1.5h``); ValueError."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    sign = 1.0
    if text[0] in "+-":
        sign, text = (-1.0 if text[0] == "-" else 1.0), text[1:]
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _GO_PART.match(text, pos)
        if m is None or m.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_retention(mode: str, text: str, name: str = "ZWATCH_AUTO_COMPACTION_RETENTION"):
    """etcd's parseCompactionRetention: a non-negative integer is hours (periodic) or revisions
    (revision); otherwise a Go duration, periodic mode only.  -> seconds (float) for periodic,
    a revision count (int) for revision; 0 = off.  SettingError (one line, naming the variable)."""
    text = str(text).strip()
    if text.isdigit():
        n = int(text)
        return n if mode == REVISION else n * _HOUR
    if mode == REVISION:
        raise SettingError(f"{name}={text!r} is not a revision count (ZWATCH_AUTO_COMPACTION_MODE=revision "
                           f"keeps the last N revisions: give an integer)")
    try:
        seconds = parse_go_duration(text)
    except ValueError:
        raise SettingError(f"{name}={text!r} is not a duration (`1h`, `30m`, `90s`, `1h30m`) "
                           f"nor a number of hours") from None
    if seconds < 0:
        raise SettingError(f"{name}={text!r} is negative")
    return seconds


class Periodic:
    """etcd's Periodic compactor.  All times in seconds on the caller's (monotonic) clock."""

    mode = PERIODIC

    def __init__(self, period_s: float, now: float):
        if period_s <= 0:
            raise ValueError("period must be positive")
        self.period = period_s
        base = min(period_s, _HOUR)
        self.retry_s = base / _RETRY_DIVISOR          # sample (and retry) interval
        self.compact_interval = base                  # between compactions after the first one
        self.retentions = int(period_s / self.retry_s + 1e-9) + 1
        self.revs: list[int] = []
        self.last_success = now
        self.wait = period_s                          # the first compaction waits a whole period
        self.next_at = now                            # the first sample is taken at once
        self._sampled = False
        self._pending: int | None = None

    def tick(self, now: float, revision: int, compact_revision: int = 0) -> int | None:
        """Called when now >= next_at.  Returns the revision to compact to, or None."""
        decision = None
        if self._sampled and now - self.last_success >= self.wait - _EPSILON_S:
            self.wait = self.compact_interval         # etcd: only the first wait is the period
            target = self.revs[0]
            if target <= compact_revision:
                self.last_success = now               # already compacted that far: success
            else:
                decision = self._pending = target
        self.revs.append(revision)                    # etcd samples at the top of its loop
        if len(self.revs) > self.retentions:
            self.revs = self.revs[1:]
        self._sampled = True
        self.next_at = now + self.retry_s
        return decision

    def done(self, now: float, ok: bool):
        """The outcome of the last decision (a COMPACTED error counts as ok)."""
        if ok and self._pending is not None:
            self.last_success = now
        self._pending = None


class Revision:
    """etcd's Revision compactor: keep the last `retention` revisions, checked every interval_s."""

    mode = REVISION

    def __init__(self, retention: int, now: float, interval_s: float = REVISION_INTERVAL_S):
        if retention <= 0 or interval_s <= 0:
            raise ValueError("retention and interval must be positive")
        self.retention = retention
        self.interval_s = interval_s
        self.prev = 0
        self.next_at = now + interval_s               # etcd waits one interval before the first check
        self._pending: int | None = None

    def tick(self, now: float, revision: int, compact_revision: int = 0) -> int | None:
        self.next_at = now + self.interval_s
        target = revision - self.retention
        if target <= 0 or target == self.prev:
            return None
        if target <= compact_revision:
            self.prev = target                        # etcd: ErrCompacted is a success
            return None
        self._pending = target
        return target

    def done(self, now: float, ok: bool):
        if ok and self._pending is not None:
            self.prev = self._pending
        self._pending = None


def make_policy(mode: str, retention: str, now: float, interval_s: float = REVISION_INTERVAL_S):
    """The writer's policy from its settings, or None when the retention is 0 (off).
    SettingError names the variable when the retention does not fit the mode."""
    mode = (mode or PERIODIC).lower()
    if mode not in (PERIODIC, REVISION):
        raise SettingError(f"ZWATCH_AUTO_COMPACTION_MODE={mode!r} is not one of periodic, revision")
    value = parse_retention(mode, retention)
    if not value:
        return None
    return Periodic(value, now) if mode == PERIODIC else Revision(value, now, interval_s)
