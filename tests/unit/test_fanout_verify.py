"""Verified streams in the fan-out's I/O-free core (SPEC.md 7.10): each verified watcher's hash
is exactly the digest sum of the events queued to it, whatever path they took (live, ring,
syncer), and goes back exactly to the first dropped revision when its frames are lost."""
from __future__ import annotations

import msgpack

from zwatch import streamhash
from zwatch.actors.fanout.model import SYNCED, UNSYNCED, VICTIM, ProgressOut, WatchOut
from zwatch.internal import SyncEvent

from test_fanout_core import KEY, joined, publish, put, session, take, watch


def digest_sum(items, wid) -> int:
    """The digest sum of the events queued for watch wid (computed from the bytes, independently)."""
    total = 0
    for item in items:
        if isinstance(item, WatchOut):
            ids, _rev, evs, _frag = msgpack.unpackb(item.data, raw=False)[:4]
            if wid in ids:
                total += sum(streamhash.digest(e[0], e[1]) for e in evs)
    return total % streamhash.MOD


def bookmarks(items) -> list:
    """[(ids, revision, ext)] of the progress notifications queued."""
    out = []
    for item in items:
        resps = []
        if isinstance(item, WatchOut):
            resps = [msgpack.unpackb(item.data, raw=False)]
        elif isinstance(item, ProgressOut) and item.frame is not None:
            resps = msgpack.unpackb(item.frame, raw=False)[2]
        for r in resps:
            if not r[2]:
                out.append((r[0], r[1], r[4] if len(r) > 4 else None))
    return out


def test_live_ring_and_syncer_events_all_count_and_bookmarks_carry_the_sum():
    core = joined(at=5, ring_revisions=3)
    publish(core, 6, 10)                      # ring: 8..10
    s = session()
    ring = watch(core, s, wid=1, start=8, verify=True)          # caught up from the ring
    old = watch(core, s, wid=2, start=3, verify=True)           # through the syncer
    assert ring.state == SYNCED and old.state == UNSYNCED
    _, (reg,) = core.take_syncer_work()
    assert reg.opts == {"verify": True}       # part of the syncer group's identity
    evs = [put(r)[:2] for r in range(3, 11)]
    extra = {"hash": streamhash.to_bytes(streamhash.sum_events(evs))}
    resp = msgpack.packb([[2], 10, evs, False], use_bin_type=True)
    core.on_sync_events([SyncEvent([(old.uid, old.epoch)], 3, 10, resp, extra)])
    core.on_synced([(old.uid, old.epoch, 10)])
    publish(core, 11, 12)                     # live, to both (one group of two verified watchers)
    core.request_progress(s, 7)
    items = take(core, s)
    marks = {tuple(ids): (rev, ext) for ids, rev, ext in bookmarks(items)}
    # No [-1]: one notification per verified watch, each with its own hash.
    assert set(marks) == {(1,), (2,)}
    assert marks[(1,)] == (12, {"hash": streamhash.to_bytes(digest_sum(items, 1))})
    assert marks[(2,)] == (12, {"hash": streamhash.to_bytes(digest_sum(items, 2))})
    assert digest_sum(items, 1) != digest_sum(items, 2)      # 8..12 vs 3..12


def test_verified_and_plain_watchers_never_share_a_group_and_plain_ones_keep_minus_one():
    core = joined(at=1)
    s = session()
    v = watch(core, s, wid=1, verify=True)
    p = watch(core, s, wid=2)
    assert v.slot is v and p.slot is p        # two lone index items: different identities
    publish(core, 2, 2)
    t = session(b"s2")
    watch(core, t, wid=1)
    core.request_progress(t, 8)
    assert bookmarks(take(core, t)) == [([-1], 2, None)]     # a session without verified watches
    core.request_progress(s, 9)
    assert sorted(bookmarks(take(core, s))) == [([1], 2, {"hash": streamhash.to_bytes(
        streamhash.digest(*put(2)[:2]))}), ([2], 2, None)]


def test_a_dropped_frame_rolls_the_hash_back_to_its_first_revision_and_the_replay_adds_up_again():
    core = joined(at=1, victim_backoff_s=0.0)
    s = session()
    w = watch(core, s, verify=True)
    other = watch(core, s, wid=2, verify=True)            # a group of two: Owner hashes per watcher
    publish(core, 2, 3)
    take(core, s)                                         # sent
    h3 = w.vhash
    assert h3 == streamhash.sum_events([put(2)[:2], put(3)[:2]]) and other.vhash == h3
    publish(core, 4, 4)
    publish(core, 5, 5)
    lost = take(core, s)                                  # revisions 4 and 5, never sent
    for item in lost:
        core.victimize(item.owner, now=0.0)
    assert w.state == VICTIM and w.next_rev == 4
    assert w.vhash == h3 and other.vhash == h3            # back to the events before revision 4
    core.retry_victims(now=1.0)
    _, regs = core.take_syncer_work()
    assert {r.opts.get("verify") for r in regs} == {True}
    evs = [put(4)[:2], put(5)[:2]]
    resp = msgpack.packb([[1, 2], 5, evs, False], use_bin_type=True)
    core.on_sync_events([SyncEvent([(w.uid, w.epoch), (other.uid, other.epoch)], 4, 5, resp,
                                   {"hash": streamhash.to_bytes(streamhash.sum_events(evs))})])
    assert w.vhash == other.vhash == streamhash.sum_events([put(r)[:2] for r in (2, 3, 4, 5)]) % streamhash.MOD


def test_a_lost_bookmark_restores_the_hash_it_claimed():
    core = joined(at=1, victim_backoff_s=0.0)
    s = session()
    w = watch(core, s, verify=True, progress_notify=True)
    publish(core, 2, 2)
    take(core, s)
    core.progress_tick()                      # marks revision 2 (an event since the last tick)
    core.progress_tick()                      # a bookmark at 2: it resumes at 3 if dropped
    publish(core, 3, 3, key=b"elsewhere")
    publish(core, 4, 4)                       # its next frame starts at 4, after the bookmark's 3
    lost = take(core, s)
    assert [b[1] for b in bookmarks(lost)] == [2]
    for item in lost:
        core.victimize(item.owner, now=0.0)
    assert w.next_rev == 3 and w.vhash == streamhash.digest(*put(2)[:2])


def test_plain_watchers_pay_nothing():
    core = joined(at=1)
    s = session()
    w = watch(core, s)
    publish(core, 2, 5)
    assert w.vhash == 0 and all(i.owner.hashes is None for i in take(core, s) if isinstance(i, WatchOut))


def test_a_dropped_fragment_of_a_revision_from_the_syncer_rolls_the_hash_back_to_before_that_revision():
    """Pieces of one revision from the syncer: the second is dropped, so the watcher resumes at
    the revision, replayed whole: its hash must go back to before the revision (the carry),
    not to after the first piece (that counted the piece twice)."""
    core = joined(at=5, ring_revisions=3, victim_backoff_s=0.0)
    publish(core, 6, 10)
    s = session()
    w = watch(core, s, wid=1, start=3, verify=True, fragment=True)
    core.take_syncer_work()
    h0 = w.vhash
    a, b = [0, [b"a", 4, 4, 1, b"x", 0]], [0, [b"b", 4, 4, 1, b"y", 0]]
    p1 = msgpack.packb([[1], 10, [a], True], use_bin_type=True)
    p2 = msgpack.packb([[1], 10, [b], False], use_bin_type=True)
    core.on_sync_events([
        SyncEvent([(w.uid, w.epoch)], 4, 10, p1, {"hash": streamhash.to_bytes(streamhash.sum_events([a]))}),
        SyncEvent([(w.uid, w.epoch)], 4, 10, p2, {"hash": streamhash.to_bytes(streamhash.sum_events([b])),
                                                  "carry": streamhash.to_bytes(streamhash.sum_events([a]))})])
    lost = [i for i in take(core, s) if isinstance(i, WatchOut)][-1]      # the second piece
    core.victimize(lost.owner, now=0.0)
    assert w.state == VICTIM and w.next_rev == 4
    assert w.vhash == h0                      # before revision 4: the replay adds a and b again
