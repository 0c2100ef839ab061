"""A fan-out's lag figures and stuck sessions (actors/fanout/lag.py), without sockets."""
from __future__ import annotations

from zwatch.actors.fanout.lag import CommitTimes, Lag, StuckSessions, routing_label
from zwatch.actors.fanout.model import SYNCED, VICTIM, Owner, Session

S = 1_000_000          # one second in µs
T0 = 1_700_000_000 * S


class W:
    """A watcher as the backlog sees it: its state and where it resumes."""

    def __init__(self, state, next_rev):
        self.state, self.next_rev = state, next_rev


def test_commit_times_map_a_revision_to_the_commit_that_carried_it_and_stay_bounded():
    ct = CommitTimes(limit=3)
    assert ct.at(1) is None
    ct.add(5, T0)               # revisions ..5
    ct.add(5, T0 + S)           # a heartbeat: revision 5 keeps its commit's time
    ct.add(9, T0 + 2 * S)       # 6..9
    ct.add(10, 0)               # an old writer: unknown, not remembered
    assert [ct.at(r) for r in (5, 6, 9, 10)] == [T0, T0 + 2 * S, T0 + 2 * S, None]
    ct.add(12, T0 + 3 * S)
    ct.add(15, T0 + 4 * S)      # the oldest entry goes
    assert len(ct) == 3
    assert ct.at(1) == T0 + 2 * S     # older than remembered: the oldest time known (a lower bound)
    assert ct.at(13) == T0 + 4 * S
    ct.add(3, T0 + 5 * S)       # the writer went back (a restore): forget the rest
    assert len(ct) == 1 and ct.at(3) == T0 + 5 * S


def test_revision_lag_follows_publishes_and_writer_pongs():
    lag = Lag()
    lag.on_publish(10, T0, 10, T0)
    assert (lag.writer_revision, lag.revision_lag) == (10, 0)
    lag.on_writer_revision(25)            # the writer is further than what we applied
    assert lag.revision_lag == 15
    lag.on_writer_revision("junk")
    lag.on_publish(20, T0, 20, T0)
    assert (lag.writer_revision, lag.revision_lag) == (25, 5)


def test_time_lag_is_measured_when_a_publish_is_applied_and_its_max_spans_the_interval():
    lag = Lag()
    lag.on_publish(10, T0, 10, T0 + 2 * S)          # applied 2 s after its commit (a paused fan-out)
    lag.on_publish(11, T0 + 2 * S, 11, T0 + 2 * S + 1000)
    figures = lag.interval()
    assert figures["time_lag_ms"] == 1.0 and figures["time_lag_ms_max"] == 2000.0
    assert lag.interval()["time_lag_ms_max"] == 1.0       # the next interval starts from the current lag
    lag.on_publish(12, 0, 12, T0 + 9 * S)           # an old writer: no commit time, no time lag measured
    assert lag.time_lag_ms == 1.0 and lag.applied_revision == 12
    lag.on_publish(13, T0 + 10 * S, 13, T0 + 9 * S)  # clocks apart: never negative
    assert lag.time_lag_s == 0.0


def test_a_session_backlog_names_its_oldest_undelivered_revision_and_its_age():
    lag = Lag()
    for rev in range(1, 11):
        lag.on_publish(rev, T0 + rev * S, rev, T0 + rev * S)
    quiet = Session(b"q", "quiet")
    assert lag.session_backlog(quiet, T0 + 20 * S) is None
    slow = Session(b"s", "slow")
    slow.user = "alice"
    slow.sent_bytes, slow.acked_bytes = 5000, 1000
    slow.held = [(b"f", [Owner(("w",), 7)]), (b"reply", None), (b"g", [Owner(("w",), 8)])]
    slow.watches = {1: W(SYNCED, 0), 2: W(VICTIM, 6)}
    lag.victimized(b"s", 3)
    lag.victimized(b"other-session-of-the-same-process", 5)   # same name "slow", another session
    b = lag.session_backlog(slow, T0 + 20 * S)
    assert b == dict(session="slow", client="s", user="alice", unacked_bytes=4000, held_frames=3,
                     oldest_revision=6, oldest_age_s=14.0, victims=3)
    in_flight = Session(b"f", "in_flight")
    in_flight.sent_bytes = 10                      # bytes merely in flight: no backlog
    other = Session(b"o", "other")
    other.held = [(b"reply", None)]
    top = lag.backlogs([quiet, in_flight, other, slow], T0 + 20 * S)
    assert [b["session"] for b in top] == ["slow", "other"]
    assert lag.backlog_max_s == 14.0 and lag.backlog_sessions == 2
    assert lag.victims == {} and lag.victims_total == 8     # backlogs() started the next interval's counts
    assert lag.session_backlog(Session(b"\x00\x8b", "x"), 0) is None
    assert routing_label(b"\x00\x8b") == "008b" and routing_label(b"abc") == "abc"
    assert len(lag.backlogs([Session(bytes([i]), f"s{i}") for i in range(9)] + [other] * 9, T0)) == 5


def test_a_session_with_unacked_output_and_no_ack_progress_is_stuck_after_the_limit():
    stuck = StuckSessions(60.0)
    a, b, c = Session(b"a", "a"), Session(b"b", "b"), Session(b"c", "c")
    a.sent_bytes = 100                       # never acks
    b.sent_bytes = 100                       # acks now and then
    c.sent_bytes = c.acked_bytes = 100       # everything acknowledged: never stuck
    sessions = {b"a": a, b"b": b, b"c": c}
    assert stuck.check(sessions, 0.0) == []
    b.acked_bytes = 50
    assert stuck.check(sessions, 59.0) == []
    assert stuck.check(sessions, 60.0) == [(b"a", 100, 60.0)]
    assert stuck.check(sessions, 61.0) == []         # reported once (the service closes it)
    assert stuck.check(sessions, 119.0) == [(b"b", 50, 60.0)]
    del sessions[b"a"]
    stuck.check(sessions, 200.0)
    assert b"a" not in stuck.marks
