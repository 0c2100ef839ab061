"""The syncer's batch without I/O (actors/syncer/batch.py; docs/design.md section 9).

A Batch is driven with an in-memory history that counts the records it hands out, so "one scan
per batch" is a count, not a timing.  No process, no socket, no LMDB.
"""
from __future__ import annotations

from zwatch import internal
from zwatch.actors.syncer.batch import Batch, PendingQueue, StartPolicy, SyncWatcher

PUT, DELETE = 0, 1


class History:
    """What a ReadView gives the batch: a snapshot's revisions, history() in whole revisions,
    prev_kv(); it counts the records it returns and the prev_kv lookups."""

    def __init__(self, events: list[tuple[int, bytes, bytes]], compact: int = 0, current: int | None = None):
        """events: (type, key, value), one revision each, revisions 1, 2, ..."""
        self.records = []
        latest: dict[bytes, list] = {}
        for rev, (t, key, value) in enumerate(events, start=1):
            prev = latest.get(key)
            if t == PUT:
                kv = [key, prev[1] if prev else rev, rev, (prev[3] if prev else 0) + 1, value, 0]
                latest[key] = kv
            else:
                kv = [key, 0, rev, 0, b"", 0]
                latest.pop(key, None)
            self.records.append((rev, 0, t, kv, 16 + len(key) + len(value)))
        self.current_revision = len(events) if current is None else current
        self.compact_revision = compact
        self.read = 0
        self.prev_lookups = 0

    def history(self, from_rev, to_rev, max_records=1000, max_bytes=1 << 20):
        assert from_rev >= self.compact_revision, "the batch must never read below the compact revision"
        out = [r for r in self.records if from_rev <= r[0] <= min(to_rev, self.current_revision)][:max_records]
        self.read += len(out)
        return out

    def prev_kv(self, key, main, sub):
        self.prev_lookups += 1
        before = [r for r in self.records if r[3][0] == key and (r[0], r[1]) < (main, sub)]
        return before[-1][3] if before and before[-1][2] == PUT else None


def watcher(uid, key=b"k", end=None, next_rev=1, *, fanout=b"f1", session=b"s1", epoch=1, prev_kv=False,
            filter_bits=0, fragment=False, watch_id=None):
    return SyncWatcher(fanout, uid, epoch, key, end, next_rev, filter_bits, prev_kv,
                       uid if watch_id is None else watch_id, fragment, session)


def batch_of(watchers, chunk_revisions=10, max_watchers=512):
    return Batch(watchers, max_watchers=max_watchers, chunk_revisions=chunk_revisions, chunk_bytes=1 << 20)


def run(batch, view, max_steps=1000):
    """Step the batch to its end -> (cancels, events, handoffs, steps)."""
    cancels, events = [], []
    for steps in range(1, max_steps + 1):
        step = batch.step(view)
        cancels += step.cancels
        events += step.events
        if step.handoffs is not None:
            return cancels, events, step.handoffs, steps
    raise AssertionError("the batch never finished")


def delivered(events) -> dict[int, list[int]]:
    """watch id -> revisions of the events its responses carried, in order."""
    out: dict[int, list[int]] = {}
    for _fanout, ev in events:
        ids, _rev, evs, _fragment = internal.unpack_response(ev.response)
        for wid in ids:
            out.setdefault(wid, []).extend(e[1][2] for e in evs)
    return out


def puts(n, keys=(b"k",)):
    return [(PUT, keys[i % len(keys)], b"v%d" % i) for i in range(n)]


# ---------------------------------------------------------------- one scan per batch
def test_one_scan_per_batch_whatever_the_number_of_watchers():
    """Replay reads each history record once per batch: 1 watcher or 500 on 50 keys and 7
    sessions, the records read are the history's length (etcd's syncWatchers shares one scan)."""
    keys = [b"key-%02d" % i for i in range(50)]
    reads = {}
    for n in (1, 500):
        view = History(puts(100, keys))
        ws = [watcher(u, key=keys[u % 50], session=b"s%d" % (u % 7)) for u in range(n)]
        _, events, handoffs, steps = run(batch_of(ws), view)
        reads[n] = (view.read, steps)
        assert len(handoffs) == n and {h.revision for _, h in handoffs} == {100}
        got = delivered(events)
        assert all(got[w.watch_id] == [r for r in range(1, 101) if keys[(r - 1) % 50] == w.key] for w in ws)
    assert reads[1] == reads[500] == (100, 10)


def test_prev_kv_is_looked_up_once_per_record_whatever_the_number_of_groups():
    view = History(puts(20))
    ws = [watcher(u, prev_kv=True, session=b"s%d" % u) for u in range(30)]
    _, events, _, _ = run(batch_of(ws), view)
    assert view.prev_lookups == 20
    first = [ev for _, ev in events if 1 in internal.unpack_response(ev.response)[0]]
    evs = internal.unpack_response(first[0].response)[2]
    assert len(evs[0]) == 2 and evs[1][2][4] == b"v0"      # no prev for the first put, then v0


# ---------------------------------------------------------------- groups
def test_identical_watchers_get_one_response_naming_them_all():
    """Same fan-out, session, spec and next revision: one SyncEvent per chunk, listing every
    member; another session, spec or start is another group."""
    same = [watcher(u) for u in range(300)]
    others = [watcher(1000, session=b"s2"), watcher(1001, key=b"x"), watcher(1002, next_rev=3)]
    view = History(puts(10, (b"k", b"x")))
    _, events, handoffs, _ = run(batch_of(same + others, chunk_revisions=100), view)
    big = [ev for _, ev in events if len(ev.members) > 1]
    assert len(big) == 1
    assert sorted(big[0].members) == [(u, 1) for u in range(300)]
    assert sorted(internal.unpack_response(big[0].response)[0]) == list(range(300))
    assert len(events) == 4
    got = delivered(events)
    assert got[1000] == got[0] == [1, 3, 5, 7, 9] and got[1001] == [2, 4, 6, 8, 10] and got[1002] == [3, 5, 7, 9]
    assert len(handoffs) == 303


# ---------------------------------------------------------------- late joiners
def test_a_late_joiner_rewinds_the_scan_by_one_chunk_at_most():
    view = History(puts(100))
    early = watcher(1, next_rev=1)
    b = batch_of([early], chunk_revisions=10)
    steps = [b.step(view) for _ in range(4)]            # read revisions 1..40
    assert b.cursor == 41 and view.read == 40
    assert not b.try_join(watcher(2, next_rev=30))     # 11 behind the cursor: more than a chunk
    assert b.try_join(watcher(3, next_rev=31))         # one chunk behind: joins, the scan rewinds
    assert b.cursor == 31 and b.rewinds == 1 and b.min_rev == 1
    assert b.try_join(watcher(4, next_rev=60))         # ahead of the cursor: joins, no rewind
    assert b.cursor == 31 and b.rewinds == 1
    _, events, handoffs, _ = run(b, view)
    got = delivered([e for s in steps for e in s.events] + events)
    assert got[1] == list(range(1, 101))               # rewinding sent the early watcher nothing twice
    assert got[3] == list(range(31, 101)) and got[4] == list(range(60, 101))
    assert 2 not in got and {h.uid for _, h in handoffs} == {1, 3, 4}
    assert view.read == 100 + 10                        # one chunk read twice, no more


def test_a_full_batch_takes_no_late_joiner():
    b = batch_of([watcher(1), watcher(2)], max_watchers=2)
    assert not b.try_join(watcher(3))
    b.forget((b"f1", 2))
    assert b.try_join(watcher(3))


# ---------------------------------------------------------------- compaction (etcd #17529)
def test_compaction_cancels_come_before_any_event_and_carry_the_compact_revision():
    """etcd #17529: a watcher below the compact revision is canceled first, with the compact
    revision, and gets no event and no handoff; the others go on from the compact revision."""
    view = History(puts(30), compact=10)
    doomed, survivor, ahead = watcher(1, next_rev=2), watcher(2, next_rev=5), watcher(3, next_rev=12)
    b = batch_of([doomed, survivor, ahead])
    first = b.step(view)
    assert sorted(c for _, c in first.cancels) == [internal.CompactedCancel(1, 1, 10),
                                                   internal.CompactedCancel(2, 1, 10)]
    assert all(uid not in (1, 2) for _, ev in first.events for uid, _ in ev.members)
    _, events, handoffs, _ = run(b, view)
    got = delivered(first.events + events)
    assert set(got) == {3} and got[3] == list(range(12, 31))
    assert [h for _, h in handoffs] == [internal.Handoff(3, 1, 30)]


def test_a_batch_canceled_whole_by_compaction_ends_at_once():
    view = History(puts(30), compact=20)
    step = batch_of([watcher(1, next_rev=3), watcher(2, next_rev=4)]).step(view)
    assert len(step.cancels) == 2 and step.events == [] and step.handoffs == [] and view.read == 0


# ---------------------------------------------------------------- handoff
def test_handoff_revision_is_max_of_current_and_next_rev_minus_one():
    view = History(puts(7))
    caught_up, ahead = watcher(1, next_rev=3), watcher(2, next_rev=10, key=b"other")
    _, _, handoffs, _ = run(batch_of([caught_up, ahead]), view)
    assert sorted(h for _, h in handoffs) == [internal.Handoff(1, 1, 7), internal.Handoff(2, 1, 9)]


def test_a_batch_entirely_ahead_of_the_snapshot_hands_off_without_reading():
    view = History(puts(7))
    step = batch_of([watcher(1, next_rev=12)]).step(view)
    assert step.handoffs == [(b"f1", internal.Handoff(1, 1, 11))] and view.read == 0


# ---------------------------------------------------------------- waiting for a batch
def test_pending_watchers_are_taken_lowest_next_revision_first():
    q = PendingQueue()
    for uid, rev in [(1, 50), (2, 5), (3, 20), (4, 5), (5, 70)]:
        q.add((b"f1", uid), watcher(uid, next_rev=rev))
    q.discard((b"f1", 3))
    assert [w.uid for w in q.take(3)] == [2, 4, 1]
    assert len(q) == 1 and [w.uid for w in q.take(10)] == [5] and q.heap == []


def test_registrations_canceled_before_any_batch_leave_no_heap_entries_behind():
    """A fan-out registering and canceling watchers in a loop, with no batch ever taken in
    between, must not grow the pending heap without bound (its entries are pruned on discard)."""
    q = PendingQueue()
    q.add((b"f1", 0), watcher(0, next_rev=1))              # one stays: the queue is never empty
    for uid in range(1, 10_001):
        q.add((b"f1", uid), watcher(uid, next_rev=uid))
        q.discard((b"f1", uid))
    assert len(q) == 1 and len(q.heap) <= 2 * len(q) + 1024 + 1


def test_a_batch_starts_after_a_quiet_window_or_the_delay_or_when_full():
    p = StartPolicy(batch_size=3, quiet_s=0.01, batch_delay_s=0.1)
    assert not p.due(0.0, 0)
    p.registered(100.0, first=True)
    assert not p.due(100.005, 1) and p.due(100.011, 1)        # registrations paused: quiet window
    for t in range(1, 20):                                      # a steady trickle, 5 ms apart
        p.registered(100.0 + t * 0.005, first=False)
    assert not p.due(100.099, 1) and p.due(100.1001, 1)        # ...starts by the delay anyway
    assert p.due(100.0951, 3)                                   # a full batch starts at once
    p.started(200.0)
    p.registered(200.0, first=False)
    assert not p.due(200.005, 1)
