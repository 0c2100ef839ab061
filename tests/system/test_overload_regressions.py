"""Regression tests for the defects an overload / hostile-client audit found (issue #8).

Each test names the defect it reproduces; all count on the raw wire (what the fan-out sent),
not through the Python client, which drops duplicates as a second line of defence.
"""
from __future__ import annotations

import time

import msgpack
import pytest

from zwatch.actors.common import drain
from zwatch.actors.store import Store

from support import collect, raw_session, revs


def _create(sock, req_id: int, body: dict):
    sock.send(msgpack.packb(["watch_create", req_id, body]))


class WireRecorder:
    """Reads a raw session; records every (watch id, revision) event; acks only while allowed."""

    def __init__(self, sock):
        self.sock = sock
        self.received = getattr(sock, "hello_reply_bytes", 0)
        self.acked = 0
        self.acking = True
        self.events: dict[int, list[int]] = {}
        self.progress: dict[int, list[int]] = {}
        self.replies: list = []
        self.controls: list = []

    def pump(self, seconds: float, until=None) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and until():
                return True
            if self.acking and self.received != self.acked:
                self.sock.send(msgpack.packb(["ack", 0, {"bytes": self.received}]))
                self.acked = self.received
            if not self.sock.poll(20):
                continue
            for raw in drain(self.sock, 1 << 30, multipart=False):
                self.received += len(raw)
                kind, req_id, body = msgpack.unpackb(raw, raw=False)
                if kind == "w":
                    for r in body:
                        if isinstance(r, dict):
                            self.controls.append(r)
                            continue
                        ids, rev, evs, _fragment = r
                        for wid in ids:
                            if evs:
                                self.events.setdefault(wid, []).extend(e[1][2] for e in evs)
                            else:
                                self.progress.setdefault(wid, []).append(rev)
                else:
                    self.replies.append((kind, req_id, body))
        return until() if until is not None else True


def _victim_cluster(make_cluster, **env):
    base = {"ZWATCH_SESSION_WINDOW_BYTES": str(64 * 1024), "ZWATCH_STALL_S": "0.3", "ZWATCH_IDLE_TIMEOUT_S": "60"}
    base.update(env)
    return make_cluster(env=base)


@pytest.mark.parametrize("start", ["future", "past_through_syncer"])
def test_victimized_watch_after_future_start_or_catch_up_gets_no_duplicates(make_cluster, start):
    """Issue #8.1: a watcher that started in the future, or was caught up by the syncer, kept a
    stale next_rev once live; victimized later it was replayed from that stale revision (91
    duplicates for a future start, 83 for a watch victimized twice).  Counted on the wire:
    every revision exactly once, in order, across several victimizations."""
    cl = _victim_cluster(make_cluster, ZWATCH_RING_REVISIONS="0" if start == "past_through_syncer" else "20000")
    c = cl.client()
    for i in range(10):
        c.put("k", f"h{i}")                       # revisions 2..11
    s = raw_session(cl.fanout_eps[0])
    rec = WireRecorder(s)
    first = 14 if start == "future" else 3
    _create(s, 2, {"key": b"k", "watch_id": 1, "start_revision": first})
    assert rec.pump(5, lambda: rec.replies)
    value = "v" * 4000
    last = 11
    for rnd in range(3):                          # three rounds: victim, catch up, live again
        rec.acking = False                        # no credit: the window fills, then victim
        for _ in range(60):
            last = c.put("k", value).header.revision
        rec.pump(1.0)
        rec.acking = True
        assert rec.pump(30, lambda: rec.events.get(1, [])[-1:] == [last]), (rnd, rec.events.get(1, [])[-5:])
    got = rec.events[1]
    dups = len(got) - len(set(got))
    assert dups == 0, f"{dups} duplicate events"
    assert got == list(range(first, last + 1))
    assert cl["fanout0"].events("watch.victim"), "the test never made a victim"
    s.close()


def test_client_that_pings_but_never_reads_does_not_freeze_others_catch_up(make_cluster):
    """Issue #8.2: a client that keeps pinging but never reads had its pongs queued behind a full
    pipe forever, and while any session held frames the fan-out stopped reading the syncer: a
    catch-up on the same fan-out got 0 events in 30 s, and watch.victim was logged on every loop
    iteration (220,286 lines in 6.3 s).  Now others' catch-ups proceed, watch.victim is
    rate-limited, and the non-reader is closed once its held replies pass a bound."""
    # Credit is not what stops the staller (a big window): its full pipe is (a small ZeroMQ
    # high-water mark, once the kernel's socket buffers are full).
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "0", "ZWATCH_STALL_S": "0.3", "ZWATCH_IDLE_TIMEOUT_S": "60",
                           "ZWATCH_SESSION_WINDOW_BYTES": str(256 << 20), "ZWATCH_SESSION_HWM": "10"})
    c = cl.client()
    for i in range(200):
        c.put("hist", f"h{i}")                     # revisions 2..201: history to catch up on
    staller = raw_session(cl.fanout_eps[0], RCVHWM=1, RCVBUF=4096)
    _create(staller, 2, {"key": b"big", "watch_id": 1})
    time.sleep(0.3)
    big = "x" * 100_000
    for _ in range(250):                           # ~25 MB the staller never reads: its pipe is full
        c.put("big", big)
    for i in range(1500):                          # pongs that can never be delivered
        staller.send(msgpack.packb(["ping", 100 + i, {}]))
        if i % 100 == 0:
            time.sleep(0.05)
    other = cl.client()
    w = other.watch("hist", start_revision=2)
    got = collect(w, 200, timeout=20)              # before the fix: nothing, ever
    assert revs(got) == list(range(2, 202))
    closed = cl["fanout0"].wait_event("fanout.session_not_reading", timeout=10)
    assert closed[0]["held_replies"] > 1000
    victims = cl["fanout0"].events("watch.victim")
    assert 1 <= len(victims) <= 20, f"{len(victims)} watch.victim lines"
    staller.close()


def test_ring_is_capped_by_bytes(make_cluster):
    """Issue #8.6: the ring of recent revisions was capped by count only and kept every value
    and previous value: 150 puts of 1.4 MB grew a fan-out by ~400 MB.  ZWATCH_RING_BYTES caps
    it; the fan-out's stats line shows what it holds."""
    cap = 4 << 20
    cl = make_cluster(env={"ZWATCH_RING_BYTES": str(cap)})
    c = cl.client()
    value = "v" * (1 << 20)
    for _ in range(20):
        c.put("big", value)                        # each revision: 1 MiB value + 1 MiB prev_kv
    n = len(cl["fanout0"].events("fanout.stats"))
    stats = cl["fanout0"].wait_event("fanout.stats", count=n + 2, timeout=5)[-1]
    assert stats["revision"] == 21
    assert 0 < stats["ring_bytes"] <= cap, stats
    assert stats["ring"] <= 2, stats
    # A watch from just behind still catches up, through the ring or the syncer.
    w = c.watch("big", start_revision=15)
    assert revs(collect(w, 7, timeout=20)) == list(range(15, 22))


@pytest.mark.parametrize("ring", ["20000", "0"])
def test_prev_kv_is_omitted_at_or_below_the_compact_revision_on_every_path(make_cluster, ring):
    """Issue #8.10: put k=v1; put k=v2; compact 3; watch k from 3 with prev_kv: etcd gives no
    prev_kv (its previous version is compacted history); zwatch's ring catch-up gave v1@2 while
    the syncer gave none.  Same answer on both paths now."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": ring})
    c = cl.client()
    c.put("k", "v1")
    c.put("k", "v2")
    c.put("k", "v3")                               # revision 4: its prev (v2@3) is not compacted
    c.compact(3)
    w = c.watch("k", start_revision=3, prev_kv=True)
    got = collect(w, 2)
    assert revs(got) == [3, 4]
    assert got[0].prev_kv is None
    assert got[1].prev_kv is not None and got[1].prev_kv.value == b"v2"


def test_watch_with_empty_key_and_from_key_end_watches_everything(cluster):
    """Issue #8.14: watch key="" range_end="\\x00": etcd creates it and watches from \\x00 (all
    keys); zwatch refused it with EMPTY_KEY / INVALID_ARGUMENT."""
    c = cluster.client()
    s = raw_session(cluster.fanout_eps[0])
    rec = WireRecorder(s)
    _create(s, 2, {"key": b"", "range_end": b"\x00", "watch_id": 7})
    assert rec.pump(5, lambda: rec.replies)
    assert rec.replies[0][0] == "ok", rec.replies
    last = [c.put(k, "x").header.revision for k in ("a", "\x01", "zzz")][-1]
    assert rec.pump(5, lambda: rec.events.get(7, [])[-1:] == [last])
    assert rec.events[7] == [last - 2, last - 1, last]
    s.close()


def test_cancel_is_idempotent_after_a_compaction_cancel(cluster):
    """Issue #8.15 and #8.16: cancelling a watch the server already canceled for compaction got
    INVALID_ARGUMENT "no watch with id N" (etcd answers canceled); and a compaction cancel's
    header revision is 0 in etcd (zwatch sent the current revision)."""
    c = cluster.client()
    for i in range(5):
        c.put("k", str(i))
    c.compact(5)
    s = raw_session(cluster.fanout_eps[0])
    rec = WireRecorder(s)
    _create(s, 2, {"key": b"k", "watch_id": 3, "start_revision": 2})
    assert rec.pump(5, lambda: rec.controls)
    cancel = rec.controls[0]
    assert cancel["canceled"] and cancel["compact_revision"] == 5
    assert cancel["header"]["revision"] == 0
    for req_id in (3, 4):                          # twice: idempotent
        s.send(msgpack.packb(["watch_cancel", req_id, {"watch_id": 3}]))
    assert rec.pump(5, lambda: len(rec.replies) == 3)
    for kind, _, body in rec.replies[1:]:
        assert kind == "ok" and body["canceled"] is True and body["watch_id"] == 3, rec.replies
    s.close()


# ---------------------------------------------------------------- 100,000 watchers
N_SESSIONS, PER_SESSION = 4, 25_000


def _sessions_with_watches(endpoint: str, body: dict) -> list[WireRecorder]:
    """N_SESSIONS raw sessions with PER_SESSION watches each (ids 1..PER_SESSION), created pipelined."""
    recs = []
    for _ in range(N_SESSIONS):
        s = raw_session(endpoint, RCVHWM=0)
        rec = WireRecorder(s)
        for i in range(PER_SESSION):
            s.send(msgpack.packb(["watch_create", 10 + i, dict(body, watch_id=i + 1)]))
        recs.append(rec)
    for rec in recs:
        assert rec.pump(60, lambda r=rec: len(r.replies) >= PER_SESSION), len(rec.replies)
        assert all(kind == "ok" for kind, _, _ in rec.replies)
    return recs


def _all_got(recs, expected: list[int]):
    return lambda: all(len(r.events) == PER_SESSION and all(len(v) >= len(expected) for v in r.events.values())
                       for r in recs)


def _pump_all(recs, seconds: float, until):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        for r in recs:
            r.pump(0.05)
    return until()


def _check_exact(recs, expected: list[int]):
    for r in recs:
        assert len(r.events) == PER_SESSION, f"{PER_SESSION - len(r.events)} watches got nothing"
        wrong = [(wid, got) for wid, got in r.events.items() if got != expected]
        assert not wrong, f"{len(wrong)} watches wrong, e.g. {wrong[0][0]}: {wrong[0][1][:10]} != {expected[:10]}"


@pytest.mark.parametrize("path", ["victims", "publish_gap", "syncer_restart"])
def test_100k_watchers_survive_mass_handoff_to_the_syncer(make_cluster, tmp_path, path):
    """Issue #8.3: more than ~45,000 watchers handed to the syncer at once were sent in ONE
    registration message, which the syncer refused (over 1.5 MiB) and nothing retried: 60,000
    victimized watches got no event for good.  100,000 watchers through each path that moves
    them all (victims, a publish gap, a syncer restart) must each get every event exactly once."""
    env = {"ZWATCH_IDLE_TIMEOUT_S": "120", "ZWATCH_STALL_S": "0.5"}
    if path == "victims":
        env["ZWATCH_SESSION_WINDOW_BYTES"] = str(256 * 1024)
    if path == "syncer_restart":
        env["ZWATCH_RING_REVISIONS"] = "0"
    cl = make_cluster(env=env)
    # This process also decodes 100,000 watchers' frames: with the test harness's 0.5 s heartbeat
    # the client's I/O thread, starved of the GIL, would take the fan-out for dead and fail over.
    c = cl.client(timeout=30, heartbeat=5.0)
    c.put("p/seed", "0")                          # revision 2
    if path == "syncer_restart":
        for i in range(3):
            c.put(f"p/{i}", "h")                   # revisions 3..5: history to catch up on
        cl["syncer"].kill()                       # the registrations wait for a new syncer
        recs = _sessions_with_watches(cl.fanout_eps[0], {"key": b"p/", "range_end": b"p0", "start_revision": 3})
        expected = [3, 4, 5]
        before = len(cl["fanout0"].events("fanout.syncer_changed"))
        cl["syncer"].start()
        cl["fanout0"].wait_event("fanout.syncer_changed", count=before + 1, timeout=20)
        last = c.put("p/live", "x").header.revision
        expected.append(last)
    else:
        recs = _sessions_with_watches(cl.fanout_eps[0], {"key": b"p/", "range_end": b"p0"})
        expected = []
        if path == "victims":
            for r in recs:
                r.acking = False                   # no credit: every session's watchers become victims
            for i in range(6):
                expected.append(c.put(f"p/{i}", "v" * 100).header.revision)
            time.sleep(1.5)
            for r in recs:
                r.pump(0.2)
            victims = sum(s["victims"] for s in cl["fanout0"].events("fanout.stats"))
            assert victims >= N_SESSIONS * PER_SESSION // 2, f"only {victims} victims"
            for r in recs:
                r.acking = True
        else:                                      # publish_gap: revisions the fan-out never saw published
            expected.append(c.put("p/0", "a").header.revision)
            cl["writer"].kill()
            store = Store(cl.data_dir)
            _, published = store.apply_batch([("put", {"key": f"p/gap{i}".encode(), "value": b"g"}) for i in range(3)])
            store.close()
            expected += [rev for rev, _ in published]
            cl["writer"].start()
            cl["fanout0"].wait_event("fanout.publish_gap", timeout=20)
        expected.append(c.put("p/live", "x").header.revision)
    assert _pump_all(recs, 120, _all_got(recs, expected)), \
        [sum(1 for v in r.events.values() if len(v) >= len(expected)) for r in recs]
    _check_exact(recs, expected)
    for r in recs:
        r.sock.close()
