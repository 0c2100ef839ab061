"""How far behind the writer a fan-out and each of its sessions are (issue #12), I/O-free.

Figures (fanout.stats, fanout.backlog, /metrics):

* revision lag: the writer's latest known revision (from its publishes, and from its pongs when
  the fan-out pings it) minus the revision the fan-out has applied;
* time lag: when a publish is applied, now minus the commit time it carries (the writer's wall
  clock after the commit was durable; heartbeats carry their send time, so an idle system keeps
  the figure fresh); the latest measure and the largest one of the stats interval;
* a session's backlog: its unacknowledged bytes, held frames, its oldest undelivered revision
  (held watch frames, watchers catching up or waiting as victims) and that revision's age (from
  a bounded revision -> commit time map kept alongside the ring), victims in the interval;
* stuck sessions (`StuckSessions`): unacknowledged watch output and no ack progress for
  ZWATCH_STUCK_SESSION_S: the service closes them (reason `stuck`).

Times are wall-clock microseconds since the epoch (the writer's and ours: one host, or NTP).
"""
from __future__ import annotations

from bisect import bisect_left
from collections import deque

from .model import CATCHING_UP

# Publishes remembered for the age of an undelivered revision (one entry per publish: a group
# commit, so many revisions each); older revisions get the oldest entry's time (a lower bound).
COMMIT_TIMES = 20_000
BACKLOG_TOP = 5                 # sessions listed by fanout.backlog


def routing_label(ident: bytes) -> str:
    """A session's routing id as text if it is, else hex: as sync.batch's session_names show it."""
    try:
        text = ident.decode("utf-8")
    except UnicodeDecodeError:
        return ident.hex()
    return text if text.isprintable() else ident.hex()


class CommitTimes:
    """Bounded map revision -> commit time (µs): one (last_revision, commit_time) per publish."""
    __slots__ = ("limit", "revs", "times")

    def __init__(self, limit: int = COMMIT_TIMES):
        self.limit = limit
        self.revs: deque[int] = deque()
        self.times: deque[int] = deque()

    def __len__(self) -> int:
        return len(self.revs)

    def add(self, last_revision: int, commit_time: int) -> None:
        if not commit_time:
            return                            # an old writer: unknown
        if self.revs and last_revision <= self.revs[-1]:
            if last_revision == self.revs[-1]:
                return                        # a heartbeat: the revision's time is its commit's
            self.clear()                      # the writer went back (a restore): start again
        self.revs.append(last_revision)
        self.times.append(commit_time)
        if len(self.revs) > self.limit:
            self.revs.popleft()
            self.times.popleft()

    def clear(self) -> None:
        self.revs.clear()
        self.times.clear()

    def at(self, revision: int) -> int | None:
        """Commit time of `revision` (that of the publish that carried it); an older revision
        than remembered gets the oldest time known (its age is at least that); None if unknown."""
        if not self.revs or revision > self.revs[-1]:
            return None
        i = bisect_left(self.revs, revision)
        return self.times[i]


class Lag:
    """The fan-out's lag figures; the service feeds publishes and writer pongs, reads figures."""

    def __init__(self, commit_times: int = COMMIT_TIMES):
        self.writer_revision = 0          # the writer's latest revision known to us
        self.applied_revision = 0         # the revision this fan-out has applied
        self.commit_time = 0              # commit time (µs) of the last publish applied
        self.time_lag_s = 0.0             # at the last publish applied
        self.time_lag_max_s = 0.0         # largest of the interval
        self.commit_times = CommitTimes(commit_times)
        # session routing id -> watchers victimized in the interval (not its name: the sessions of
        # one client process share their name)
        self.victims: dict[bytes, int] = {}
        self.victims_total = 0
        self.backlog_max_s = 0.0          # oldest undelivered revision's age, any session (last line)
        self.backlog_sessions = 0         # sessions with a backlog (last line)

    # ------------------------------------------------------------------ inputs
    def on_publish(self, last: int, commit_time: int, applied: int | None, now_us: int) -> None:
        """A publish was applied (applied: the fan-out's revision after it)."""
        if last > self.writer_revision:
            self.writer_revision = last
        if applied is not None:
            self.applied_revision = applied
        if not commit_time:
            return
        self.commit_times.add(last, commit_time)
        self.commit_time = commit_time
        self.time_lag_s = max(0.0, (now_us - commit_time) / 1e6)
        if self.time_lag_s > self.time_lag_max_s:
            self.time_lag_max_s = self.time_lag_s

    def on_writer_revision(self, revision) -> None:
        """The writer said its revision (a pong)."""
        if type(revision) is int and revision > self.writer_revision:
            self.writer_revision = revision

    def victimized(self, session_ident: bytes, watchers: int) -> None:
        if watchers:
            self.victims[session_ident] = self.victims.get(session_ident, 0) + watchers
            self.victims_total += watchers

    # ------------------------------------------------------------------ figures
    @property
    def revision_lag(self) -> int:
        return max(0, self.writer_revision - self.applied_revision)

    @property
    def time_lag_ms(self) -> float:
        return round(self.time_lag_s * 1000, 3)

    def interval(self) -> dict:
        """fanout.stats' lag fields; starts the next interval (its max from the current lag).
        (The interval's victims are the core's `victims` count, already on the line.)"""
        figures = dict(writer_revision=self.writer_revision, revision_lag=self.revision_lag,
                       time_lag_ms=self.time_lag_ms, time_lag_ms_max=round(self.time_lag_max_s * 1000, 3))
        self.time_lag_max_s = self.time_lag_s
        return figures

    def session_backlog(self, session, now_us: int) -> dict | None:
        """One session's backlog, None if it has none."""
        unacked = session.sent_bytes - session.acked_bytes
        oldest = None
        for _frame, tag in session.held:
            if isinstance(tag, list):
                for owner in tag:
                    if owner is not None and (oldest is None or owner.first_rev < oldest):
                        oldest = owner.first_rev
        for w in session.watches.values():
            if w.state in CATCHING_UP and (oldest is None or w.next_rev < oldest):
                oldest = w.next_rev
        victims = self.victims.get(session.ident, 0)
        # Bytes merely in flight are no backlog (every busy session has some): held frames,
        # watchers catching up or waiting as victims are.
        if not session.held and oldest is None and not victims:
            return None
        age = 0.0
        if oldest is not None:
            t = self.commit_times.at(oldest)
            if t is not None:
                age = round(max(0.0, (now_us - t) / 1e6), 3)
        return dict(session=session.name, client=routing_label(session.ident), user=session.user, unacked_bytes=unacked,
                    held_frames=len(session.held), oldest_revision=oldest, oldest_age_s=age, victims=victims)

    def backlogs(self, sessions, now_us: int, top: int = BACKLOG_TOP) -> list[dict]:
        """The `top` sessions with the oldest backlog (then the most unacked bytes); sets
        backlog_max_s and backlog_sessions; starts the next interval's victim counts."""
        found = []
        for s in sessions:
            b = self.session_backlog(s, now_us)
            if b is not None:
                found.append(b)
        found.sort(key=lambda b: (b["oldest_age_s"], b["unacked_bytes"]), reverse=True)
        self.backlog_sessions = len(found)
        self.backlog_max_s = found[0]["oldest_age_s"] if found else 0.0
        self.victims = {}
        return found[:top]


class StuckSessions:
    """Sessions with unacknowledged watch output and no ack progress for `stuck_s` seconds.

    A session that never acks would otherwise keep its watchers cycling victim -> catch-up ->
    victim for ever, each round a rescan of history by the syncer (issue #12.6)."""

    def __init__(self, stuck_s: float):
        self.stuck_s = stuck_s
        self.marks: dict[bytes, tuple[int, float]] = {}   # ident -> (acked_bytes, since)
        self.checked_at = -1e9                            # the service checks once a second

    def check(self, sessions: dict, now: float) -> list[tuple[bytes, int, float]]:
        """[(ident, unacked_bytes, stuck_s)] of the sessions to close now."""
        stuck, marks = [], self.marks
        for ident in [i for i in marks if i not in sessions]:
            del marks[ident]
        for ident, s in sessions.items():
            unacked = s.sent_bytes - s.acked_bytes
            if unacked <= 0:
                marks.pop(ident, None)
                continue
            mark = marks.get(ident)
            if mark is None or mark[0] != s.acked_bytes:
                marks[ident] = (s.acked_bytes, now)
            elif now - mark[1] >= self.stuck_s:
                stuck.append((ident, unacked, round(now - mark[1], 3)))
        for ident, _, _ in stuck:
            del marks[ident]
        return stuck


__all__ = ["CommitTimes", "Lag", "StuckSessions", "COMMIT_TIMES", "BACKLOG_TOP"]
