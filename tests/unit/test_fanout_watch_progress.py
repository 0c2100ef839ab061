"""Bookmarks per watch, never starved (issue #16.3, SPEC.md section 7.9), on the I/O-free core.

etcd #20242: one slow or future watch starved the session-wide progress response.  Here a watch
asks for its own progress and is answered at once whatever its siblings are doing, and the
periodic progress_notify of a live watch is never withheld by a sibling.  A bookmark is never
ahead of the events of its watch that are not queued yet.
"""
from __future__ import annotations

import msgpack

from zwatch.actors.fanout.core import WATCH_NOT_FOUND
from zwatch.actors.fanout.model import FUTURE, UNSYNCED, VICTIM, ProgressOut, ReplyOut, WatchOut

from test_fanout_core import events_of, joined, progress_of, publish, put, session, take, watch


def reply_of(items) -> tuple[str, dict]:
    """(kind, body) of the one reply among items (a ProgressOut's or a plain ReplyOut)."""
    (frame,) = [i.reply if isinstance(i, ProgressOut) else i.frame
                for i in items if isinstance(i, (ProgressOut, ReplyOut))]
    kind, _req, body = msgpack.unpackb(frame, raw=False)
    return kind, body


def _session_with_a_slow_sibling(kind: str):
    """A fan-out at L = 10 (ring 9..10); watch 1 live; watch 2 catching up from 3 through the
    syncer, waiting for a future start 50, or a victim."""
    core = joined(at=5, ring_revisions=2)
    publish(core, 6, 10)
    s = session()
    live = watch(core, s, wid=1, progress_notify=True)
    if kind == "catching_up":
        slow = watch(core, s, wid=2, start=3, progress_notify=True)
        assert slow.state == UNSYNCED
    elif kind == "future":
        slow = watch(core, s, wid=2, start=50, progress_notify=True)
        assert slow.state == FUTURE
    else:
        slow = watch(core, s, wid=2, progress_notify=True, key=b"j")   # its own response
        publish(core, 11, 11, key=b"j")
        (item,) = [i for i in take(core, s) if isinstance(i, WatchOut) and slow in i.owner.watchers]
        core.victimize(item.owner, now=0.0)             # its frame (revision 11) was dropped
        assert live.state != VICTIM
        assert slow.state == VICTIM and slow.next_rev == 11
    take(core, s)
    return core, s, live, slow


def test_a_live_watch_gets_its_bookmark_at_once_whatever_its_sibling_does():
    for kind in ("catching_up", "future", "victim"):
        core, s, live, slow = _session_with_a_slow_sibling(kind)
        core.request_progress(s, 9, 1)
        items = take(core, s)
        (p,) = items
        assert isinstance(p, ProgressOut) and p.watch_id == 1, kind
        assert progress_of(items, 1) == [core.last_seen] and progress_of(items, 2) == [], kind
        assert reply_of(items) == ("ok", {"header": {"revision": core.last_seen}, "watch_id": 1, "live": True,
                                          "state": "live", "revision": core.last_seen}), kind
        assert slow.uid not in core.owes_progress, kind     # nothing owed to the sibling


def test_a_catching_up_watch_says_where_it_is_and_its_bookmark_follows_its_events():
    core, s, live, slow = _session_with_a_slow_sibling("catching_up")
    core.request_progress(s, 9, 2)
    items = take(core, s)
    assert progress_of(items, 2) == []                      # nothing claimed before its events
    assert reply_of(items)[1] == {"header": {"revision": 10}, "watch_id": 2, "live": False,
                                  "state": "catching_up", "revision": 2}
    core.on_sync_events([([(slow.uid, slow.epoch)], 3, 8, msgpack.packb([[2], 8, [put(3)], False]), {})])
    items = take(core, s)
    assert events_of(items, 2) == [3] and progress_of(items, 2) == []   # still catching up: no bookmark
    core.request_progress(s, 10, 2)
    assert reply_of(take(core, s))[1]["revision"] == 8      # its position so far
    core.on_synced([(slow.uid, slow.epoch, 8)])             # ring 9..10, then live
    items = take(core, s)
    assert events_of(items, 2) == [9, 10]
    assert progress_of(items, 2) == [10]                    # once, after its events
    assert progress_of(items, 1) == []                      # the sibling asked nothing
    last_event = max(i for i, x in enumerate(items) if isinstance(x, WatchOut) and events_of([x], 2))
    bookmark = max(i for i, x in enumerate(items) if isinstance(x, WatchOut) and progress_of([x], 2))
    assert bookmark > last_event


def test_a_future_watch_gets_its_bookmark_at_its_start_never_below():
    core, s, live, slow = _session_with_a_slow_sibling("future")
    core.request_progress(s, 9, 2)
    assert reply_of(take(core, s))[1] == {"header": {"revision": 10}, "watch_id": 2, "live": False,
                                          "state": "future", "revision": 49}
    publish(core, 11, 48)
    items = take(core, s)
    assert progress_of(items, 2) == [] and events_of(items, 2) == []
    publish(core, 49, 51)                                   # live from 50: everything below it "delivered"
    items = take(core, s)
    assert progress_of(items, 2) == [49] and events_of(items, 2) == [50, 51]


def test_a_victim_gets_its_bookmark_once_it_replayed_what_it_lost():
    core, s, live, slow = _session_with_a_slow_sibling("victim")
    core.request_progress(s, 9, 2)
    assert reply_of(take(core, s))[1]["state"] == "slow"
    core.retry_victims(now=100.0)                           # replayed by the syncer from 11
    assert slow.state == UNSYNCED and slow.next_rev == 11
    publish(core, 12, 12, key=b"j")
    assert progress_of(take(core, s), 2) == []
    core.on_sync_events([([(slow.uid, slow.epoch)], 11, 11, msgpack.packb([[2], 11, [put(11, b"j")], False]), {})])
    core.on_synced([(slow.uid, slow.epoch, 11)])            # then 12 from the ring, then live
    items = take(core, s)
    assert events_of(items, 2) == [11, 12] and progress_of(items, 2) == [12]


def test_an_unknown_watch_id_is_a_stable_error():
    core = joined(at=5)
    s = session()
    watch(core, s, wid=1)
    core.watch_cancel(s, 2, 1)
    take(core, s)
    for wid in (1, 7):
        core.request_progress(s, 9, wid)
        kind, body = reply_of(take(core, s))
        assert kind == "err" and body["code"] == "FAILED_PRECONDITION" and body["reason"] == WATCH_NOT_FOUND


def test_progress_notify_of_a_live_watch_is_never_withheld_by_a_sibling():
    for kind in ("catching_up", "future", "victim"):
        core, s, live, slow = _session_with_a_slow_sibling(kind)
        core.progress_tick()                                # the mark
        take(core, s)
        core.on_publish(core.last_seen, core.last_seen, [], 0)   # a heartbeat: no event for either
        core.progress_tick()
        items = take(core, s)
        assert progress_of(items, 1) == [core.last_seen], kind
        assert progress_of(items, 2) == [], kind            # never a revision it has not delivered
