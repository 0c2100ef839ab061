"""The fan-out's I/O-free core, driven by events, checked by what it queues (no process, no socket).

Each test names the rule it checks; the handoff table is design.md section 8's.
"""
from __future__ import annotations

import msgpack
import pytest

from zwatch.actors.fanout.core import FanoutCore
from zwatch.actors.fanout.model import (FUTURE, SYNCED, UNSYNCED, VICTIM, ControlOut, ProgressOut, ReplyOut,
                                        Session, WatchOut)

KEY = b"k"


def put(rev: int, key: bytes = KEY, value: bytes = b"v", prev=None):
    return [0, [key, 2, rev, rev - 1, value, 0], prev]


def publish(core: FanoutCore, first: int, last: int, key: bytes = KEY, prev: int | None = None, compact: int = 0):
    """Revisions first..last, one put of key each, as one publish."""
    core.on_publish(first - 1 if prev is None else prev, last,
                    [[r, [put(r, key)]] for r in range(first, last + 1)], compact)


def joined(at: int = 1, **kw) -> FanoutCore:
    core = FanoutCore(**kw)
    core.on_publish(at, at, [], 0)          # a heartbeat: the fan-out joins the stream at `at`
    return core


def session(name: bytes = b"s1") -> Session:
    return Session(name, name.decode())


def watch(core, s, wid=1, start=0, **body):
    core.watch_create(s, 100 + wid, dict({"key": KEY, "watch_id": wid, "start_revision": start}, **body))
    return s.watches.get(wid)


def events_of(items, wid=None) -> list[int]:
    """Revisions of the events in the queued watch responses (for watch id wid, if given)."""
    revs = []
    for item in items:
        if isinstance(item, WatchOut):
            ids, _rev, evs, _frag = msgpack.unpackb(item.data, raw=False)
            if wid is None or wid in ids:
                revs.extend(e[1][2] for e in evs)
    return revs


def progress_of(items, wid) -> list[int]:
    out = []
    for item in items:
        if isinstance(item, WatchOut):
            ids, rev, evs, _ = msgpack.unpackb(item.data, raw=False)
            if not evs and wid in ids:
                out.append(rev)
        elif isinstance(item, ProgressOut) and item.frame is not None:
            _w, _z, (resp,) = msgpack.unpackb(item.frame, raw=False)
            if wid in resp[0] or resp[0] == [-1]:
                out.append(resp[1])
    return out


def take(core, s) -> list:
    return core.take_output().get(s.ident, [])


# ---------------------------------------------------------------- the handoff table
def _unsynced_watcher(ring_revisions=5):
    """A fan-out at L = 10 whose ring holds 6..10, and a watcher registered with the syncer from 3."""
    core = joined(at=5, ring_revisions=ring_revisions)
    publish(core, 6, 10)
    s = session()
    w = watch(core, s, start=3)
    assert w.state == UNSYNCED and w.next_rev == 3
    _, sync = core.take_syncer_work()
    assert [(r.uid, r.next_rev) for r in sync] == [(w.uid, 3)]
    take(core, s)
    return core, s, w


def test_handoff_at_the_fanouts_position_indexes_the_watcher():
    core, s, w = _unsynced_watcher()
    core.on_synced([(w.uid, w.epoch, 10)])          # R + 1 == L + 1
    assert w.state == SYNCED and w.next_rev == 0
    publish(core, 11, 11)
    assert events_of(take(core, s)) == [11]


def test_handoff_behind_the_fanout_catches_up_from_the_ring_then_indexes():
    core, s, w = _unsynced_watcher()
    core.on_synced([(w.uid, w.epoch, 7)])           # R + 1 <= L, the ring starts at 6 <= 8
    assert w.state == SYNCED
    publish(core, 11, 11)
    assert events_of(take(core, s)) == [8, 9, 10, 11]
    assert core.take_syncer_work() == ([], [])


def test_handoff_behind_the_ring_registers_again_with_a_new_epoch():
    core, s, w = _unsynced_watcher()
    epoch = w.epoch
    core.on_synced([(w.uid, epoch, 4)])             # R + 1 = 5 < ring start 6
    assert w.state == UNSYNCED and w.epoch == epoch + 1 and w.next_rev == 5
    _, sync = core.take_syncer_work()
    assert [(r.uid, r.epoch, r.next_rev) for r in sync] == [(w.uid, epoch + 1, 5)]
    assert events_of(take(core, s)) == []
    core.on_synced([(w.uid, epoch, 10)])            # the old epoch's handoff is stale: ignored
    assert w.state == UNSYNCED


def test_handoff_ahead_of_the_fanout_waits_as_future_and_joins_exactly_at_its_revision():
    core, s, w = _unsynced_watcher()
    core.on_synced([(w.uid, w.epoch, 12)])          # R + 1 > L + 1: the syncer is ahead
    assert w.state == FUTURE and w.next_rev == 13
    publish(core, 11, 14)                           # one publish: segmented at 13
    assert events_of(take(core, s)) == [13, 14]
    assert w.state == SYNCED


# ---------------------------------------------------------------- the publish stream
def test_publish_gap_moves_every_live_watcher_to_the_syncer_from_the_first_missed_revision():
    core = joined(at=5)
    s = session()
    w = watch(core, s)
    publish(core, 6, 7)
    publish(core, 11, 12, prev=10)                  # 8..10 never arrived
    assert w.state == UNSYNCED and w.next_rev == 8
    _, sync = core.take_syncer_work()
    assert [r.next_rev for r in sync] == [8]
    assert core.last_seen == 12 and [r for r, _ in core.ring] == [11, 12]   # the ring restarted after the gap
    assert core.st["gaps"] == 1


def test_future_watcher_gets_exactly_the_revisions_from_its_start_within_one_publish():
    core = joined(at=5)
    s = session()
    early = watch(core, s, wid=1)
    late = watch(core, s, wid=2, start=9)
    assert late.state == FUTURE
    publish(core, 6, 12)
    items = take(core, s)
    assert events_of(items, 1) == [6, 7, 8, 9, 10, 11, 12]
    assert events_of(items, 2) == [9, 10, 11, 12]
    assert early.state == late.state == SYNCED


def test_ring_is_bounded_by_bytes_as_well_as_revisions():
    core = joined(at=1, ring_revisions=1000, ring_bytes=10_000)
    core.on_publish(1, 20, [[r, [put(r, value=b"x" * 1000)]] for r in range(2, 21)], 0)
    assert core.ring.bytes <= 10_000 and len(core.ring) < 19
    assert core.ring[-1][0] == 20 and [r for r, _ in core.ring] == list(range(core.ring[0][0], 21))


def test_ring_catch_up_omits_prev_kv_at_or_below_the_compact_revision():
    core = joined(at=1)
    prev = [KEY, 2, 2, 1, b"v1", 0]
    core.on_publish(1, 3, [[2, [put(2)]], [3, [[0, [KEY, 2, 3, 2, b"v2", 0], prev]]]], 0)
    core.on_publish(3, 4, [[4, [[0, [KEY, 2, 4, 3, b"v3", 0], [KEY, 2, 3, 2, b"v2", 0]]]]], 3)   # compact 3
    s = session()
    watch(core, s, start=3, prev_kv=True)
    (item,) = [i for i in take(core, s) if isinstance(i, WatchOut)]
    _ids, _rev, evs, _ = msgpack.unpackb(item.data, raw=False)
    assert [len(e) for e in evs] == [2, 3]          # no prev_kv at 3 (compacted), prev_kv at 4


# ---------------------------------------------------------------- victims
def _victim_resume(core, s, w, wid=1):
    """Drop every queued watch response of the session, as a stuck session would; where does w resume?"""
    for item in take(core, s):
        if isinstance(item, WatchOut):
            core.victimize(item.owner, now=0.0)
    return w.next_rev


def test_victim_after_a_future_start_resumes_at_its_first_lost_revision_not_its_start():
    """Issue #8.1: the stale next_rev of a future start replayed revisions the client had."""
    core = joined(at=1)
    s = session()
    w = watch(core, s, start=5)
    publish(core, 2, 20)
    take(core, s)                                    # 5..20 delivered
    publish(core, 21, 21)
    assert _victim_resume(core, s, w) == 21
    assert w.state == VICTIM


def test_victim_after_a_syncer_catch_up_resumes_at_its_first_lost_revision():
    """Issue #8.1: a watcher caught up by the syncer kept the next_rev of that catch-up."""
    core, s, w = _unsynced_watcher()
    core.on_sync_events([([(w.uid, w.epoch)], 3, 5, msgpack.packb([[1], 10, [put(4)], False]), {})])
    core.on_synced([(w.uid, w.epoch, 10)])
    take(core, s)
    publish(core, 11, 15)
    take(core, s)
    publish(core, 16, 16)
    assert _victim_resume(core, s, w) == 16


def test_victim_resumes_at_the_first_of_several_lost_frames_and_each_part_owns_its_revision():
    core = joined(at=1)
    s = session()
    w = watch(core, s)
    big = b"x" * 700_000
    core.on_publish(1, 5, [[r, [put(r, value=big)]] for r in range(2, 6)], 0)
    items = [i for i in take(core, s) if isinstance(i, WatchOut)]
    assert [i.owner.first_rev for i in items] == [2, 4]   # two parts of one list: each its own start
    core.victimize(items[1].owner, now=0.0)               # the first part was sent, the second lost
    assert w.next_rev == 4


def test_lost_owed_progress_is_owed_again_and_sent_once_synced():
    core, s, w = _unsynced_watcher()
    core.request_progress(s, 7)
    (p,) = take(core, s)
    assert isinstance(p, ProgressOut) and p.frame is None     # no live watch: nothing claimed
    core.on_synced([(w.uid, w.epoch, 10)])
    items = take(core, s)
    assert progress_of(items, 1) == [10]
    core.victimize(items[-1].owner, now=0.0)                  # that notification was dropped
    assert w.uid in core.owes_progress and w.state == VICTIM
    core.retry_victims(now=10.0)
    core.on_synced([(w.uid, w.epoch, 10)])
    assert progress_of(take(core, s), 1) == [10]


def test_victims_of_a_session_without_credit_wait_for_its_ack_before_the_syncer_replays():
    """Issue #12.6: a session that never acks made its victims re-register with the syncer every
    back-off, each a rescan of history that stalled again on no credit."""
    core = joined(at=1)
    s = session()
    w = watch(core, s)
    publish(core, 2, 5)
    s.sent_bytes, s.acked_bytes = 1000, 0         # its earlier frames are not acknowledged
    assert _victim_resume(core, s, w) == 2
    core.take_syncer_work()
    core.retry_victims(now=100.0)
    assert core.take_syncer_work() == ([], []) and w.state == VICTIM     # no ack: no replay
    s.acked_bytes = 400                            # it acked: its victims replay
    core.retry_victims(now=100.1)
    _, sync = core.take_syncer_work()
    assert [r.uid for r in sync] == [w.uid] and w.state == UNSYNCED
    assert not core.stalled


def test_victims_of_a_session_with_everything_acknowledged_replay_after_the_back_off():
    """A full pipe (not credit) made the victims: nothing to wait for but the back-off."""
    core = joined(at=1)
    s = session()
    w = watch(core, s)
    publish(core, 2, 5)
    _victim_resume(core, s, w)
    core.retry_victims(now=100.0)
    assert [r.uid for r in core.take_syncer_work()[1]] == [w.uid]


# ---------------------------------------------------------------- progress (etcd #20242)
def test_progress_request_is_answered_at_once_for_live_watches_and_owed_to_the_others():
    core = joined(at=5, ring_revisions=2)
    publish(core, 6, 10)
    s = session()
    live = watch(core, s, wid=1)
    slow = watch(core, s, wid=2, start=3)                     # behind the ring: through the syncer
    assert slow.state == UNSYNCED
    take(core, s)
    core.request_progress(s, 9)
    items = take(core, s)
    assert progress_of(items, 1) == [10] and progress_of(items, 2) == []
    assert isinstance(items[-1], ProgressOut) and msgpack.unpackb(items[-1].reply)[0] == "ok"
    core.on_sync_events([([(slow.uid, slow.epoch)], 3, 8, msgpack.packb([[2], 8, [put(3)], False]), {})])
    core.on_synced([(slow.uid, slow.epoch, 8)])               # behind L = 10: ring 9..10, then live
    items = take(core, s)
    assert events_of(items, 2) == [3, 9, 10]
    assert progress_of(items, 2) == [10]                      # after its events, never before
    core.request_progress(s, 10)
    (p,) = take(core, s)
    assert msgpack.unpackb(p.frame, raw=False)[2][0][0] == [-1]   # every watch live again


# ---------------------------------------------------------------- watch requests
def test_cancel_is_idempotent_and_compaction_cancel_has_header_zero():
    core = joined(at=10)
    core.compact_revision = 5
    s = session()
    watch(core, s, start=2)                                   # below the compact revision
    items = take(core, s)
    (control,) = [i for i in items if isinstance(i, ControlOut)]
    body = msgpack.unpackb(control.data, raw=False)
    assert body["canceled"] and body["compact_revision"] == 5 and body["header"]["revision"] == 0
    for req in (1, 2):
        core.watch_cancel(s, req, 1)
    replies = [msgpack.unpackb(i.frame, raw=False) for i in take(core, s) if isinstance(i, ReplyOut)]
    assert [(r[0], r[2]["canceled"]) for r in replies] == [("ok", True), ("ok", True)]


def test_canceled_far_future_watches_do_not_stay_in_the_heap():
    """etcd #11850 (lazy cancellation leaking watches): a far-future watch that is canceled stayed
    in the futures heap until the stream reached its start revision."""
    core = joined(at=1)
    s = session()
    for wid in range(1, 5001):
        watch(core, s, wid=wid, start=10 ** 9)
        core.watch_cancel(s, 1, wid)
    assert core.live_futures == 0
    assert len(core.futures) <= 1024 + 1


def test_empty_key_watches_from_the_smallest_key():
    core = joined(at=1)
    s = session()
    core.watch_create(s, 1, {"key": b"", "range_end": b"\x00", "watch_id": 3})
    publish(core, 2, 2, key=b"\x01")
    assert events_of(take(core, s), 3) == [2]


def test_a_closed_session_leaves_nothing_behind():
    core = joined(at=5, ring_revisions=2)
    publish(core, 6, 10)
    s = session()
    for wid, start in ((1, 0), (2, 3), (3, 100)):
        watch(core, s, wid=wid, start=start)
    core.drop_session(s)
    assert not core.watchers and not len(core.index) and core.live_futures == 0
    unsync, _ = core.take_syncer_work()
    assert len(unsync) == 1                                    # the one registered with the syncer


@pytest.mark.parametrize("created_before_join", [True])
def test_creates_wait_until_the_fanout_joins_the_stream(created_before_join):
    core = FanoutCore()
    s = session()
    core.watch_create(s, 1, {"key": KEY, "watch_id": 1})
    assert not s.watches
    core.on_publish(7, 7, [], 0)
    assert s.watches[1].state == SYNCED
