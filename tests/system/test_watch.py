"""Watch scenarios mirroring etcd's watch integration tests, on a real cluster."""
from __future__ import annotations

import queue
import time

import pytest

from zwatch import Put, Delete, errors

from support import collect, drain_counting, no_more, pipelined_watches, revs

# Issue #8.18: with the default ring (20,000 revisions) every short scenario is caught up from
# the fan-out's memory and the syncer's semantics are never checked.  Every test of this module
# runs three times: default ring, no ring (every catch-up through the syncer), a tiny ring (a
# mix).  A test that sets ZWATCH_RING_REVISIONS itself keeps its own value.
RING_VARIANTS = {"ring_default": {}, "ring_0": {"ZWATCH_RING_REVISIONS": "0"},
                 "ring_3": {"ZWATCH_RING_REVISIONS": "3"}}


@pytest.fixture(params=list(RING_VARIANTS))
def cluster_env(request):
    return RING_VARIANTS[request.param]


def test_watch_from_current_revision(cluster):
    c = cluster.client()
    c.put("foo", "0")
    w = c.watch("foo")
    c.put("foo", "1")
    c.put("other", "x")
    c.delete("foo")
    ev = collect(w, 2)
    assert [(e.type, e.kv.value, e.kv.mod_revision) for e in ev] == [("PUT", b"1", 3), ("DELETE", b"", 5)]
    assert ev[1].kv.key == b"foo"
    no_more(w)


@pytest.mark.parametrize("spec,keys_in,keys_out", [
    (dict(key="a"), ["a"], ["ab", "b"]),
    (dict(key="a", prefix=True), ["a", "ab", "a\xff"], ["b", "`"]),
    (dict(key="b", range_end="d"), ["b", "c", "cz"], ["a", "d", "e"]),
    (dict(key="c", from_key=True), ["c", "d", "zz"], ["a", "b"]),
    (dict(key="\x00", from_key=True), ["a", "b", "\x01"], []),
])
def test_key_prefix_range_fromkey_all(cluster, spec, keys_in, keys_out):
    c = cluster.client()
    w = c.watch(**spec)
    for k in keys_out + keys_in:
        c.put(k, "v")
    ev = collect(w, len(keys_in))
    assert sorted(e.kv.key for e in ev) == sorted(k.encode() for k in keys_in)
    no_more(w)


def test_watch_from_past_revision_then_live_no_gap_no_dup(cluster):
    c = cluster.client()
    for i in range(20):
        c.put(f"p/{i % 3}", str(i))                         # revisions 2..21
    w = c.watch("p/", prefix=True, start_revision=5)
    for i in range(20, 30):
        c.put(f"p/{i % 3}", str(i))                         # 22..31
    ev = collect(w, 27)
    assert revs(ev) == list(range(5, 32))
    no_more(w)


def test_future_start_revision_waits(cluster):
    c = cluster.client()
    w = c.watch("f", start_revision=10, progress_notify=True)
    for i in range(12):
        c.put("f", str(i))                                  # revisions 2..13
    ev = collect(w, 4)
    assert revs(ev) == [10, 11, 12, 13]


def _first_response_is_compacted_cancel(w, compact_revision):
    r = w.get(timeout=5)
    assert r.canceled and not r.events and r.compact_revision == compact_revision, r
    assert w.get(timeout=1) is None


def test_compacted_start_revision_is_canceled_with_compact_revision(cluster):
    c = cluster.client()
    for i in range(10):
        c.put("k", str(i))
    c.compact(8)
    _first_response_is_compacted_cancel(c.watch("k", start_revision=3), 8)


def test_compacted_while_unsynced_in_syncer(make_cluster):
    """A watcher waiting in the syncer when a compaction passes its start is canceled, with the
    compact revision, before anything else about it advances (#17529)."""
    # A tiny ring sends the watcher to the syncer; a long batch delay keeps it waiting there.
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "5", "ZWATCH_SYNC_QUIET_S": "1",
                           "ZWATCH_SYNC_BATCH_DELAY_S": "1"})
    c = cl.client()
    for i in range(40):
        c.put("k", str(i))
    w = c.watch("k", start_revision=2)                         # now pending in the syncer
    c.compact(30)
    _first_response_is_compacted_cancel(w, 30)
    deadline = time.monotonic() + 5                            # ... and the syncer did it
    while not sum(s["compacted"] for s in cl["syncer"].events("syncer.stats")):
        assert time.monotonic() < deadline, "the cancel did not come from the syncer"
        time.sleep(0.1)


def test_empty_range_is_created_then_canceled(cluster):
    c = cluster.client()
    w = c.watch("b", "a")
    r = w.get(timeout=5)
    assert r.canceled and "range_end" in r.cancel_reason


def test_duplicate_watch_id_errors_without_disturbing_others(cluster):
    c = cluster.client()
    w = c.watch("x", watch_id=7)
    with pytest.raises(errors.FailedPrecondition):
        c.watch("y", watch_id=7)
    c.put("x", "1")
    assert revs(collect(w, 1)) == [2]


def test_cancel_synced_and_unsynced(make_cluster):
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "5"})
    c = cl.client()
    for i in range(30):
        c.put("k", str(i))
    synced = c.watch("k")
    unsynced = c.watch("k", start_revision=2)
    unsynced.cancel()
    synced.cancel()
    c.put("k", "after")
    # Nothing after the cancel: the handle ends.
    for w in (synced, unsynced):
        while True:
            r = w.get(timeout=3)
            if r is None:
                break
            assert all(e.kv.value != b"after" for e in r.events)


def test_many_watchers_on_one_key_all_get_every_event(cluster):
    c = cluster.client()
    ws = [c.watch("hot") for _ in range(200)]
    for i in range(5):
        c.put("hot", str(i))
    for w in ws:
        assert revs(collect(w, 5)) == [2, 3, 4, 5, 6]


def test_txn_events_arrive_in_one_response(cluster):
    c = cluster.client()
    w = c.watch("t/", prefix=True)
    c.txn([], [Put(f"t/{i}", "v") for i in range(50)])
    r = w.get(timeout=5)
    while not r.events:
        r = w.get(timeout=5)
    assert len(r.events) == 50 and len(set(revs(r.events))) == 1


def test_prev_kv_and_filters(cluster):
    c = cluster.client()
    c.put("k", "old")
    w_prev = c.watch("k", prev_kv=True)
    w_noput = c.watch("k", filters=["NOPUT"])
    w_nodel = c.watch("k", filters=["NODELETE"])
    c.put("k", "new")
    c.delete("k")
    ev = collect(w_prev, 2)
    assert ev[0].prev_kv.value == b"old" and ev[1].prev_kv.value == b"new"
    assert [e.type for e in collect(w_noput, 1)] == ["DELETE"]
    assert [e.type for e in collect(w_nodel, 1)] == ["PUT"]
    no_more(w_noput)
    no_more(w_nodel)


def test_prev_kv_from_history(cluster):
    c = cluster.client()
    c.put("k", "a")
    c.put("k", "b")
    c.delete("k")
    w = c.watch("k", start_revision=2, prev_kv=True)
    ev = collect(w, 3)
    assert [e.prev_kv.value if e.prev_kv else None for e in ev] == [None, b"a", b"b"]


def test_requested_progress(cluster):
    c = cluster.client()
    w = c.watch("p")
    c.put("other", "x")
    c.put("other", "y")
    rev = c.request_progress()
    assert rev == 3
    r = w.get(timeout=5)
    assert r.is_progress_notify and r.header.revision == 3


def test_periodic_progress_notify(make_cluster):
    cl = make_cluster(env={"ZWATCH_PROGRESS_INTERVAL_S": "0.2"})
    c = cl.client()
    w = c.watch("quiet", progress_notify=True)
    silent = c.watch("quiet2")
    c.put("noise", "1")
    r = w.get(timeout=5)
    while r.header.revision < 2:
        r = w.get(timeout=5)
    assert r.is_progress_notify
    no_more(silent, wait=0.5)


def test_several_sessions_and_two_fanouts(make_cluster):
    cl = make_cluster(fanouts=2)
    a = cl.client([cl.fanout_eps[0]])
    b = cl.client([cl.fanout_eps[1]])
    wa, wb = a.watch("s", prefix=True), b.watch("s", prefix=True, start_revision=1)
    for i in range(10):
        (a if i % 2 else b).put(f"s{i}", str(i))
    assert revs(collect(wa, 10)) == revs(collect(wb, 10)) == list(range(2, 12))


def test_catch_up_through_syncer_then_live(make_cluster):
    """Past start beyond the ring: the syncer replays, hands off, live events continue exactly."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "10"})
    c = cl.client()
    for i in range(200):
        c.put(f"h/{i % 7}", str(i))                          # revisions 2..201
    ws = [c.watch("h/", prefix=True, start_revision=s) for s in (2, 50, 150)]
    for i in range(200, 230):
        c.put(f"h/{i % 7}", str(i))                          # 202..231
    for w, s in zip(ws, (2, 50, 150)):
        assert revs(collect(w, 232 - s)) == list(range(s, 232))
        no_more(w, 0.2)
    stats = cl["syncer"].wait_event("sync.batch")
    assert stats[0]["records_scanned"] >= 1


def _batches_handing_off(cl, n: int, timeout: float = 10.0) -> list[dict]:
    """The syncer's sync.batch lines once they account for n handoffs (the events can reach the
    client before the syncer's last log line is read from its stdout)."""
    deadline = time.monotonic() + timeout
    while True:
        batches = cl["syncer"].events("sync.batch")
        done = sum(b["handed_off"] for b in batches)
        if done >= n or time.monotonic() > deadline:
            assert done == n, batches
            return batches
        time.sleep(0.05)


@pytest.mark.parametrize("n", [1, 400])
def test_syncer_scans_history_once_per_batch_not_per_watcher(make_cluster, n):
    """N unsynced watchers over H revisions cost about H records per batch of 512, not N x H."""
    # A generous batch delay: this test is about what one batch reads, not about latency.
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "10", "ZWATCH_SYNC_BATCH_DELAY_S": "1.0"})
    c = cl.client()
    history = 2000
    for i in range(history):
        c.put(f"h/{i % 50}", str(i))                             # revisions 2..2001
    sock = pipelined_watches(cl.fanout_eps[0], n, {"key": b"h/", "range_end": b"h0", "start_revision": 2})
    try:
        per_watch = drain_counting(sock, lambda pw: len(pw) == n and all(v >= history for v in pw.values()))
    finally:
        sock.close()
    assert len(per_watch) == n and set(per_watch.values()) == {history}   # each got all, exactly once
    batches = _batches_handing_off(cl, n)
    scanned = sum(b["records_scanned"] for b in batches)
    # About one scan of the window per batch of up to 512, whatever N is: a late watcher joins the
    # running batch by rewinding it (re-reading part of the window once), never by a scan per watcher.
    assert len(batches) <= max(1, n // 50) + 2, batches
    assert scanned <= 3 * history, (len(batches), scanned)


def test_big_revision_is_fragmented_on_request_and_joined_by_the_client(cluster):
    c = cluster.client()
    value = b"v" * 100_000
    whole = c.watch("big/", prefix=True)
    frag = c.watch("big/", prefix=True, fragment=True, prev_kv=True)
    c.txn([], [Put(f"big/{i}", value) for i in range(14)])      # ~1.4 MB in one revision
    c.txn([], [Put(f"big/{i}", value) for i in range(14)])      # with prev_kv: ~2.8 MB for `frag`
    ev = collect(whole, 28)
    assert revs(ev) == [2] * 14 + [3] * 14
    got = collect(frag, 28)
    assert revs(got) == [2] * 14 + [3] * 14 and all(e.prev_kv.value == value for e in got[14:])


def test_future_watch_gets_no_progress_below_its_start(make_cluster):
    """etcd #20221: a progress notification must never claim a revision below a future start."""
    cl = make_cluster(env={"ZWATCH_PROGRESS_INTERVAL_S": "0.1"})
    c = cl.client()
    w = c.watch("fut", start_revision=8, progress_notify=True)
    for i in range(3):
        c.put("noise", str(i))                                   # revisions 2..4
        time.sleep(0.25)
    try:
        r = w.get(timeout=0.5)
        raise AssertionError(f"a future watch got {r} before its start revision")
    except queue.Empty:
        pass
    for i in range(4):
        c.put("fut", str(i))                                     # 5..8
    ev = collect(w, 1)
    assert revs(ev) == [8]
    r = w.get(timeout=3)                                         # progress after it started: fine
    assert r.is_progress_notify and r.header.revision >= 8


def test_watches_sharing_a_queue_get_one_response_per_frame(cluster):
    c = cluster.client()
    shared = queue.SimpleQueue()
    a = c.watch("s", queue=shared)
    b = c.watch("s", queue=shared)
    own = c.watch("s")
    c.put("s", "1")
    r = shared.get(timeout=5)
    assert sorted(r.watch_ids) == sorted([a.watch_id, b.watch_id]) and revs(r.events) == [2]
    assert shared.empty()
    assert revs(collect(own, 1)) == [2]
    a.cancel()
    c.put("s", "2")
    r = shared.get(timeout=5)
    while not r.events:                                          # a's canceled response first
        assert r.canceled and r.watch_ids == [a.watch_id]
        r = shared.get(timeout=5)
    assert r.watch_ids == [b.watch_id] and revs(r.events) == [3]


def test_late_watchers_join_a_running_scan_without_gap_or_duplicate(make_cluster):
    """A registration that arrives mid-scan joins the batch by rewinding its cursor; the watchers
    already in the batch must not see the re-read records again."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "10", "ZWATCH_SYNC_CHUNK_REVISIONS": "500",
                           "ZWATCH_SYNC_QUIET_S": "0.001"})
    c = cl.client()
    for i in range(1500):
        c.put(f"j/{i % 10}", str(i))                               # revisions 2..1501
    first = pipelined_watches(cl.fanout_eps[0], 20, {"key": b"j/", "range_end": b"j0", "start_revision": 700})
    time.sleep(0.05)                                               # the first batch is scanning
    late = [c.watch("j/", prefix=True, start_revision=s) for s in (2, 300, 1200)]
    try:
        per_watch = drain_counting(first, lambda pw: len(pw) == 20 and all(v >= 802 for v in pw.values()))
    finally:
        first.close()
    assert set(per_watch.values()) == {802}                        # 700..1501, each exactly once
    for w, s in zip(late, (2, 300, 1200)):
        assert revs(collect(w, 1502 - s, timeout=30)) == list(range(s, 1502))
        no_more(w, 0.2)
    _batches_handing_off(cl, 23)                               # (most runs rewind once: sync.batch "rewinds")
