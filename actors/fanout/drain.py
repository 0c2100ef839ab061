"""Graceful drain of a fan-out (SIGTERM): the goaway's suggested delay and when to stop.

A draining fan-out refuses new sessions (UNAVAILABLE, reason DRAINING), sends every session
``["goaway", 0, {"reason": "draining", "delay_ms": D, "endpoint": nil}]`` and keeps serving
until its sessions have all left or ``drain_s`` passed.  Each client waits a uniform random
delay in [0, D] before it moves (protocol/client/session.py), so the watch creates its
sessions bring to the surviving fan-outs are spread over D instead of arriving at once.

Choosing D.  With W watches on the draining fan-out and uniform delays, the creates arrive at
about W x 100 / D per 100 ms *in total* over the survivors (the fan-out does not know how many
survive, so the bound is taken as if one survivor got them all: conservative).  To keep that
under a budget B creates per 100 ms, D = W x 100 / B ms.  D is capped at half the drain time,
so that even the last client to move is gone with drain_s / 2 to spare (its reconnect, hello
and resumes); past the cap the budget cannot be held and the creates are as spread as the
drain time allows.  A fan-out with few watches gets a small D: nothing to spread.

Everything here is I/O-free (tests/unit/test_fanout_drain.py).
"""
from __future__ import annotations

import math

from zwatch import messages

DRAINING = "DRAINING"
# Creates per 100 ms that the moving sessions may bring (all survivors together), by default.
DEFAULT_CREATES_PER_100MS = 250


def goaway_delay_ms(watchers: int, sessions: int, drain_s: float,
                    creates_per_100ms: int = DEFAULT_CREATES_PER_100MS) -> int:
    """The goaway's delay_ms: W x 100 / B ms (sessions count as one create each: a hello costs
    about as much as a create), at most drain_s / 2; 0 when nothing is to move or no budget."""
    load = max(0, watchers) + max(0, sessions)
    if load == 0 or creates_per_100ms <= 0:
        return 0
    wanted = math.ceil(load * 100 / creates_per_100ms)
    return int(min(wanted, max(0.0, drain_s) * 500))


def goaway_frame(delay_ms: int, endpoint: str | None = None, reason: str = "draining") -> bytes:
    """["goaway", 0, {"reason": "draining" | "upstream_lost", "delay_ms": int, "endpoint": str | nil}]
    (SPEC.md §3)."""
    return messages.pack(["goaway", 0, {"reason": reason, "delay_ms": int(delay_ms), "endpoint": endpoint}])


class Drain:
    """The drain's clock: started once (the first SIGTERM), done when no session is left or
    drain_s passed."""

    def __init__(self, drain_s: float):
        self.drain_s = max(0.0, drain_s)
        self.started_at: float | None = None
        self.sessions_at_start = 0
        self.delay_ms = 0

    @property
    def active(self) -> bool:
        return self.started_at is not None

    def start(self, now: float, sessions: int, watchers: int, creates_per_100ms: int) -> int:
        """Enter draining; returns delay_ms for the goaways."""
        self.started_at = now
        self.sessions_at_start = sessions
        self.delay_ms = goaway_delay_ms(watchers, sessions, self.drain_s, creates_per_100ms)
        return self.delay_ms

    def done(self, now: float, sessions: int) -> bool:
        return self.active and (sessions == 0 or now - self.started_at >= self.drain_s)

    def took_s(self, now: float) -> float:
        return round(now - self.started_at, 3) if self.active else 0.0


class CreateRate:
    """The most watch creates received in one 100 ms bucket since the last stats line
    (fanout.stats `creates_max_100ms`): what a drain elsewhere brings to this fan-out."""

    def __init__(self):
        self.bucket = -1
        self.count = 0
        self.max = 0

    def note(self, now: float):
        b = int(now * 10)
        if b != self.bucket:
            self.bucket, self.count = b, 0
        self.count += 1
        if self.count > self.max:
            self.max = self.count

    def take_max(self) -> int:
        m, self.max = self.max, 0
        return m
