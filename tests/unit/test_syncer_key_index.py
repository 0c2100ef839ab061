"""A batch on a few keys reads their records through the key index instead of scanning the
whole history from its lowest revision (issue #15; docs/design.md "Reading through the key
index"): counted records, never time.  The batch's choice (actors/syncer/batch.py) with an
in-memory view, and the store's key_history (actors/store/store.py) on a real LMDB store."""
from __future__ import annotations

import pytest

from zwatch.actors.store import Store
from zwatch.actors.syncer import batch as batch_mod
from zwatch.actors.syncer.batch import Batch

from test_syncer_batch import PUT, DELETE, History, batch_of, delivered, run, watcher


class KeyHistory(History):
    """History with the key-index reads a ReadView offers; counts what each path returns."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.key_read = 0

    def _matches(self, specs, key):
        return any(key == k if end is None else k <= key < end for k, end in specs)

    def key_records_estimate(self, specs, max_keys):
        keys = {r[3][0] for r in self.records if self._matches(specs, r[3][0])}
        if len(keys) > max_keys:
            return None
        return sum(1 for r in self.records if self._matches(specs, r[3][0]))

    def key_history(self, specs, from_rev, to_rev, max_records=1000, max_bytes=1 << 20):
        assert from_rev >= self.compact_revision
        out = [r for r in self.records if from_rev <= r[0] <= min(to_rev, self.current_revision)
               and self._matches(specs, r[3][0])]
        through = to_rev
        if len(out) > max_records:
            through = out[max_records][0] - 1     # whole revisions: cut before a revision
            out = [r for r in out if r[0] <= through]
        self.key_read += len(out)
        return out, through


def quiet_key_history(n_other=10_000, mine=(3, 500, 9_000)):
    """n_other revisions of other keys, and puts of b"k" at the revisions in `mine`."""
    events = []
    for rev in range(1, n_other + len(mine) + 1):
        events.append((PUT, b"k", b"mine%d" % rev) if rev in mine else (PUT, b"o%d" % (rev % 97), b"x"))
    return events


def test_a_single_key_watch_from_revision_1_reads_only_that_keys_records():
    view = KeyHistory(quiet_key_history())
    b = batch_of([watcher(1, key=b"k")], chunk_revisions=2000)
    b.key_index_max_keys = 64
    _, events, handoffs, steps = run(b, view)
    assert delivered(events) == {1: [3, 500, 9_000]}
    assert handoffs[0][1].revision == view.current_revision
    assert (view.read, view.key_read, steps, b.key_reads) == (0, 3, 1, 1)


def test_the_same_batch_with_the_key_index_off_scans_everything():
    view = KeyHistory(quiet_key_history())
    b = batch_of([watcher(1, key=b"k")], chunk_revisions=2000)      # key_index_max_keys = 0
    _, events, _, steps = run(b, view)
    assert delivered(events) == {1: [3, 500, 9_000]}
    assert view.read == view.current_revision and view.key_read == 0 and steps == 6


def test_a_key_with_most_of_the_history_is_scanned():
    """The estimate (its records x KEY_READ_COST) is not below the revisions to scan: scan."""
    view = KeyHistory([(PUT, b"k", b"%d" % i) for i in range(900)] + [(PUT, b"o", b"x")] * 100)
    b = batch_of([watcher(1, key=b"k")], chunk_revisions=2000)
    b.key_index_max_keys = 64
    _, events, _, _ = run(b, view)
    assert len(delivered(events)[1]) == 900
    assert view.key_read == 0 and view.read == 1000


def test_a_narrow_range_and_a_key_with_filters_and_prev_kv_get_what_the_scan_gives():
    hist = quiet_key_history(3000, mine=(10, 20)) + [(PUT, b"r1", b"a"), (DELETE, b"r1", b""), (PUT, b"r2", b"b"),
                                                       (PUT, b"k", b"last")]
    ws = lambda: [watcher(1, key=b"r", end=b"s", prev_kv=True), watcher(2, key=b"k", filter_bits=1 << DELETE),
                  watcher(3, key=b"k", filter_bits=1 << PUT)]
    by_scan, by_key = KeyHistory(hist), KeyHistory(hist)
    _, ev_scan, h_scan, _ = run(batch_of(ws(), chunk_revisions=500), by_scan)
    b = batch_of(ws(), chunk_revisions=500)
    b.key_index_max_keys = 64
    _, ev_key, h_key, _ = run(b, by_key)
    assert delivered(ev_key) == delivered(ev_scan) and delivered(ev_key)[1] and delivered(ev_key)[2]
    assert [(f, h.uid, h.revision) for f, h in h_key] == [(f, h.uid, h.revision) for f, h in h_scan]
    got_prev = [e for _f, ev in ev_key for e in __import__("zwatch").internal.unpack_response(ev.response)[2]]
    assert any(len(e) == 3 for e in got_prev), "prev_kv on the key path"
    assert by_key.key_read == 6 and by_key.read == 0      # k x3, r1 x2, r2: nothing else


def test_a_key_read_cut_by_max_records_ends_on_whole_revisions_and_goes_on():
    """Steps of at most 80 records; each step chooses again (the estimate counts all the key's
    records, so near the end the remaining revisions are scanned): every event exactly once."""
    view = KeyHistory([(PUT, b"k", b"%d" % i) if i % 10 == 0 else (PUT, b"o", b"x") for i in range(20_000)])
    b = batch_of([watcher(1, key=b"k")], chunk_revisions=20)
    b.key_index_max_keys = 64
    _, events, _, steps = run(b, view, max_steps=10_000)
    assert delivered(events)[1] == list(range(1, 20_001, 10))
    assert steps > 1 and b.key_reads > 1
    assert view.read + view.key_read < 20_000 / 2       # a scan alone reads all 20,000


def test_more_keys_than_the_limit_are_scanned():
    view = KeyHistory(quiet_key_history(2000))
    b = batch_of([watcher(u, key=b"k%d" % u) for u in range(10)] + [watcher(99, key=b"k")])
    b.key_index_max_keys = 5
    run(b, view)
    assert view.key_read == 0 and view.read == view.current_revision


# ---------------------------------------------------------------- the store's key_history
@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "db"))
    yield s
    s.close()


def test_store_key_history_equals_the_scan_filtered_to_the_keys(store):
    reqs = []
    for i in range(600):
        reqs.append(("put", {"key": b"k%d" % (i % 7), "value": b"v%d" % i}))
    store.apply_batch(reqs[:300])
    store.apply_batch([("txn", {"success": [{"request_put": {"key": b"k1", "value": b"a"}},
                                            {"request_put": {"key": b"k2", "value": b"b"}},
                                            {"request_put": {"key": b"zz", "value": b"c"}}]})])
    store.apply_batch([("delete_range", {"key": b"k3"})])
    store.apply_batch(reqs[300:])
    specs = [(b"k1", None), (b"k2", b"k4")]          # k1, and the range [k2, k4): k2, k3
    with store.reader() as view:
        cur = view.current_revision
        scan = [r for r in view.history(2, cur, max_records=10_000, max_bytes=1 << 30) if r[3][0] in (b"k1", b"k2", b"k3")]
        got, through = view.key_history(specs, 2, cur, max_records=10_000, max_bytes=1 << 30)
        assert (got, through) == (scan, cur)
        assert view.key_records_estimate(specs, 64) == len(scan)
        assert view.key_records_estimate([(b"k", b"l")], 3) is None       # 7 keys > 3
        # Cut by max_records: whole revisions (the txn's two records stay together), then on.
        part, through = view.key_history(specs, 2, cur, max_records=50, max_bytes=1 << 30)
        assert part == [r for r in scan if r[0] <= through] and len(part) <= 50
        txn_rev = next(r[0] for r in scan if r[3][4] == b"a")
        assert sum(1 for r in part if r[0] == txn_rev) in (0, 2)
        rest, through2 = view.key_history(specs, through + 1, cur, max_records=10_000, max_bytes=1 << 30)
        assert part + rest == scan and through2 == cur


def test_store_key_history_reads_a_key_once_whatever_specs_cover_it(store):
    """A key watched exactly and through a range (or two overlapping ranges) of one batch: its
    records come once, as the scan gives them (a record twice would be an event sent twice)."""
    store.apply_batch([("put", {"key": b"k%d" % (i % 5), "value": b"v%d" % i}) for i in range(200)])
    specs = [(b"k1", None), (b"k0", b"k3"), (b"k2", b"k5")]       # k1 twice, k2 twice
    with store.reader() as view:
        cur = view.current_revision
        scan = [r for r in view.history(1, cur, max_records=10_000, max_bytes=1 << 30) if r[3][0] != b"k5"]
        assert view.key_history(specs, 1, cur, max_records=10_000, max_bytes=1 << 30) == (scan, cur)
        part, through = view.key_history(specs, 1, cur, max_records=30, max_bytes=1 << 30)
        assert part == [r for r in scan if r[0] <= through] and 0 < len(part) <= 30


def test_store_key_history_holds_no_more_than_its_bound_whatever_the_keys(store):
    """A step on many keys reads about max_records records in all, not max_records a key: the
    syncer's memory during a replay is bounded by the chunk, not keys x chunk."""
    for _ in range(10):
        store.apply_batch([("put", {"key": b"k%02d" % i, "value": b"v"}) for i in range(40)])
    with store.reader() as view:
        before = store.records_scanned
        got, through = view.key_history([(b"k", b"l")], 1, view.current_revision, max_records=25,
                                         max_bytes=1 << 30)
        assert len(got) == 25 and through == got[-1][0]
        assert store.records_scanned - before <= 25 + 1


def test_the_key_read_cost_decides_between_the_key_index_and_the_scan():
    """3 records of the key on 10,003 revisions: at a cost of 3,000 scan-records a record the
    key index wins (9,000 < 10,003), at 4,000 the scan does (12,000 >= 10,003)."""
    for cost, by_key in ((3000, True), (4000, False)):
        view = KeyHistory(quiet_key_history())
        b = Batch([watcher(1, key=b"k")], max_watchers=512, chunk_revisions=20_000, chunk_bytes=1 << 20,
                  key_index_max_keys=64, key_read_cost=cost)
        _, events, _, _ = run(b, view)
        assert delivered(events) == {1: [3, 500, 9_000]}
        assert (view.key_read, view.read) == ((3, 0) if by_key else (0, view.current_revision)), cost


def test_a_batch_every_watcher_left_ends_without_reading():
    view = KeyHistory(quiet_key_history())
    b = batch_of([watcher(1, key=b"k"), watcher(2, key=b"o", end=b"p")], chunk_revisions=100)
    b.step(view)
    read = view.read
    for k in list(b.keys()):
        b.forget(k)
    step = b.step(view)
    assert step.handoffs == [] and step.records == 0 and view.read == read


def test_a_batch_on_a_key_and_a_range_over_it_gets_each_event_once_from_the_store(store):
    """The batch's specs overlap (a key, a range holding it, with prev_kv and a filter): through
    the key index each event reaches each watcher once, exactly as the scan delivers it."""
    store.apply_batch([("put", {"key": b"k%d" % (i % 6), "value": b"v%d" % i}) for i in range(3000)])
    store.apply_batch([("delete_range", {"key": b"k1"})])
    store.apply_batch([("put", {"key": b"z%d" % i, "value": b"x"}) for i in range(20_000)])
    ws = lambda: [watcher(1, key=b"k1"), watcher(2, key=b"k0", end=b"k3", prev_kv=True),
                  watcher(3, key=b"k", end=b"l", filter_bits=1 << PUT, next_rev=500)]
    got = {}
    for max_keys in (0, 64):
        b = Batch(ws(), max_watchers=512, chunk_revisions=2000, chunk_bytes=1 << 20, key_index_max_keys=max_keys)
        events, handoffs, steps = [], None, 0
        while handoffs is None:
            with store.reader() as view:
                step = b.step(view)
            events += step.events
            handoffs, steps = step.handoffs, steps + 1
        got[max_keys] = (delivered(events), sorted((h.uid, h.revision) for _f, h in handoffs), b.scanned)
    assert got[64][:2] == got[0][:2]
    assert got[64][0][1] == [*range(3, 3002, 6), 3002] and got[64][0][3] == [3002]     # k1's puts, its delete
    assert got[0][2] == 23_001 and got[64][2] == 3001        # every record of k0..k5 once, no z
