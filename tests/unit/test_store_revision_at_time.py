"""revision_at_time (issue #16.6, SPEC.md "revision_at_time") on real LMDB files in temp dirs:
the first revision committed at or after T, before the oldest dated commit, after the newest,
in the future, and below the compact revision."""
from __future__ import annotations

import time

from zwatch.actors.store import Store


def put(store, n=1, key=b"k"):
    store.apply_batch([("put", {"key": key, "value": b"v"})] * n)
    return store.current_revision()


def at(store, t_us, now_us=None):
    with store.reader() as v:
        return v.revision_at_time(t_us, time.time_ns() // 1000 if now_us is None else now_us)


def test_first_revision_committed_at_or_after_a_time(tmp_path):
    store = Store(str(tmp_path))
    try:
        t0 = time.time_ns() // 1000
        put(store, 3)                                   # 2..4 in one commit
        time.sleep(0.01)
        put(store, 2)                                   # 5..6
        first, second = store.commit_time_of(2), store.commit_time_of(5)
        # At or before the oldest dated commit, never compacted: from the first revision, exact
        # (the index alone would say 4, the last of that commit's group).
        assert at(store, t0) == {"revision": 2, "compact_revision": 0, "compacted": False, "future": False,
                                 "commit_time_us": first}
        assert at(store, first)["revision"] == 2
        assert at(store, first + 1)["revision"] == 5 and at(store, second)["commit_time_us"] == second
        after = at(store, second + 1)                   # nothing committed at or after it yet
        assert after["revision"] == 7 and after["commit_time_us"] is None and not after["future"]
        future = at(store, second + 1, now_us=second)   # later than the server's clock
        assert future["future"] and future["revision"] == 7
    finally:
        store.close()


def test_times_older_than_the_retained_history_say_compacted(tmp_path):
    store = Store(str(tmp_path))
    try:
        t0 = time.time_ns() // 1000
        stamps = []
        for _ in range(10):
            rev = put(store)                            # 2..11, one commit each
            stamps.append((rev, store.commit_time_of(rev)))
            time.sleep(0.002)
        store.apply_batch([("compact", {"revision": 6})])
        while store.compact_step(1000):
            pass
        old = at(store, t0)                             # before everything: the history is gone
        assert old["compacted"] and old["revision"] == 6 and old["compact_revision"] == 6
        t3 = dict(stamps)[3]
        assert at(store, t3)["compacted"]               # answer 3 < 6
        t6, t7 = dict(stamps)[6], dict(stamps)[7]
        r = at(store, t6 + 1)
        assert r["revision"] == 7 and not r["compacted"] and r["commit_time_us"] == t7
    finally:
        store.close()


def test_an_empty_store_answers_the_next_revision(tmp_path):
    store = Store(str(tmp_path))
    try:
        r = at(store, 0)
        assert r["revision"] == store.current_revision() + 1 and not r["compacted"] and r["commit_time_us"] is None
    finally:
        store.close()
