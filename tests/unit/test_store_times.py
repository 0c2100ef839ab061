"""The time index (actors/store/times.py) on real LMDB files in temp dirs: recorded with each
group commit, looked up by revision and by time, pruned by compaction, absent in an old store."""
from __future__ import annotations

import time

import lmdb

from zwatch.actors.store import Store, layout, times


def put(store, n=1, key=b"k"):
    store.apply_batch([("put", {"key": key, "value": b"v"})] * n)
    return store.current_revision()


def test_lookups_by_revision_and_by_time(tmp_path):
    store = Store(str(tmp_path))
    try:
        t0 = time.time_ns() // 1000
        r1 = put(store, 3)                   # revisions 2..4 in one commit
        time.sleep(0.01)
        t1 = time.time_ns() // 1000
        r2 = put(store, 2)                   # 5..6
        t_after = time.time_ns() // 1000
        assert (r1, r2) == (4, 6)
        first, second = store.commit_time_of(2), store.commit_time_of(5)
        assert t0 <= first == store.commit_time_of(4) < t1 <= second == store.commit_time_of(6) <= t_after
        assert store.commit_time_of(7) is None                # not committed yet
        assert store.first_revision_at_or_after(t0) == 4      # nothing before the first entry is known
        assert store.first_revision_at_or_after(first + 1) == 5
        assert store.first_revision_at_or_after(second) == 5
        assert store.first_revision_at_or_after(second + 1) is None
        store.apply_batch([("range", {"key": b"k"})])         # a read-only batch dates nothing new
        assert store.commit_time_of(7) is None
    finally:
        store.close()


def test_the_search_by_time_over_many_commits(tmp_path):
    store = Store(str(tmp_path))
    try:
        stamps = []
        for _ in range(40):
            rev = put(store)
            stamps.append((rev, store.commit_time_of(rev)))
        for rev, t in stamps[1:]:
            earlier = [r for r, tt in stamps if tt >= t][0]       # equal stamps: the first of them
            assert store.first_revision_at_or_after(t) == earlier
    finally:
        store.close()


def test_compaction_prunes_the_index_below_the_compact_revision(tmp_path):
    store = Store(str(tmp_path))
    try:
        for _ in range(20):
            put(store)                       # revisions 2..21, one entry each
        store.apply_batch([("compact", {"revision": 15})])
        while store.compact_step(1000):
            pass
        with store.env.begin() as txn:
            revs = [layout.Q.unpack(k)[0] for k, _ in txn.cursor(db=store._times)]
        assert revs[0] == 15 and revs[-1] == 21            # the entries at and above the compact revision stay
        assert store.commit_time_of(3) == store.commit_time_of(15)   # older: a lower bound on its age
    finally:
        store.close()


def test_prune_is_bounded_per_call(tmp_path):
    store = Store(str(tmp_path))
    try:
        for _ in range(10):
            put(store)
        with store.env.begin(write=True) as txn:
            assert times.prune(txn, store._times, 100, limit=4) == 4
            assert times.prune(txn, store._times, 100) == 6
            assert times.prune(txn, store._times, 100) == 0
    finally:
        store.close()


def test_a_store_written_before_the_index_works_and_dates_nothing_old(tmp_path):
    store = Store(str(tmp_path))
    put(store, 2)
    store.close()
    env = lmdb.open(str(tmp_path), max_dbs=10)             # as an old writer left it: no times db
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(layout.TIMES, txn=txn), delete=True)
    env.close()
    store = Store(str(tmp_path))
    try:
        assert store.commit_time_of(2) is None and store.first_revision_at_or_after(0) is None
        rev = put(store)
        assert store.commit_time_of(rev) is not None
        assert times.commit_time_of(None, None, 2) is None and times.prune(None, None, 5) == 0
    finally:
        store.close()
