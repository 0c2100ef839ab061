"""etcd's compaction bugs, end to end on a real cluster: a writer SIGKILLed in the middle of a
physical compaction, and the tombstone at the compact revision through fan-out and syncer.

* etcd #19179: a watch opened at the compact revision missed the DELETE at that revision after
  the server crashed during compaction.
* etcd #17780: the revision went backwards after a crash during compaction.
* etcd #18089: the DELETE at the compact revision was dropped for a watch starting there.
"""
from __future__ import annotations

import struct
import time

import lmdb
import pytest

from support import collect, no_more

from zwatch import errors
from zwatch.actors.store import DELETE, Store
from zwatch.client import Delete, Put

KEYS = 20_000
ROUNDS = 3           # revisions per key: physical compaction removes two records of each
PER_TXN = 128        # etcd's per-list limit: one txn, one revision, 128 events


def key(i: int) -> str:
    return f"k/{i:05d}"


def compaction_progress(env) -> tuple[int, int, bytes]:
    """(compact_rev, compact_done revision, resume key) from the writer's store, read-only."""
    with env.begin() as txn:
        meta = env.open_db(b"meta", txn=txn, create=False)
        target = struct.unpack(">Q", txn.get(b"compact_rev", db=meta))[0]
        state = txn.get(b"compact_done", db=meta)
        return target, struct.unpack_from(">Q", state)[0], state[8:]


def wait_writer(c, deadline_s=15.0) -> int:
    """The writer's revision once it answers again (the fan-out's health check pings it; status
    answers from the fan-out's last pong, so it is read after health said the writer is back)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if c.health(timeout=2.0).health:
                time.sleep(0.6)              # a writer pong after the restart reached the fan-out
                return c.status(timeout=1.0).header.revision
        except errors.ZwatchError:
            pass
        assert time.monotonic() < deadline, "the writer never came back"
        time.sleep(0.05)


def test_crash_mid_compaction_keeps_delete_at_compact_revision_and_revisions_monotonic(make_cluster):
    """etcd #19179 and #17780.  20,000 keys with 3 revisions each, then one txn deleting an early
    and a late key (revision C), compact C; the writer is SIGKILLed while physical compaction is
    half done (its resume key is stored), and restarted.  Then: the next put gets exactly C+1
    (#17780: no revision reuse or regression), status and range headers never went backwards,
    once the resumed compaction has finished, a watch from C gets both DELETEs at C and then
    everything after, and the store's own history from C (read with Store on the data dir after
    stopping) is exactly that.  No ring (ZWATCH_RING_REVISIONS=0): the watch reads the store's
    history through the syncer, not the fan-out's memory of the revisions."""
    cluster = make_cluster(env={"ZWATCH_RING_REVISIONS": "0"})
    c = cluster.client(timeout=15.0)
    for _ in range(ROUNDS):
        for start in range(0, KEYS, PER_TXN):
            c.txn(success=[Put(key(i), "v") for i in range(start, min(start + PER_TXN, KEYS))])
    early, late = key(7), key(KEYS - 7)
    compact_rev = c.txn(success=[Delete(early), Delete(late)]).header.revision
    seen = [c.status().header.revision, c.get("k/", prefix=True, count_only=True).header.revision]
    assert seen == [compact_rev, compact_rev]

    env = lmdb.open(cluster.data_dir, readonly=True, max_dbs=4, lock=True, subdir=True)
    try:
        c.compact(compact_rev)
        deadline = time.monotonic() + 30
        while True:                          # until physical compaction has done some chunks
            target, done, resume = compaction_progress(env)
            if done < target and resume > key(KEYS // 10).encode():
                break
            assert done < target, "physical compaction finished before the kill: nothing tested"
            assert time.monotonic() < deadline
        cluster["writer"].kill()             # SIGKILL, mid-compaction
        target, done, resume = compaction_progress(env)
        assert (target, done < target, resume > b"") == (compact_rev, True, True), (target, done, resume)
    finally:
        env.close()
    cluster["writer"].start()
    cluster["writer"].wait_event("writer.start", count=2)
    assert cluster["writer"].events("writer.start")[-1]["revision"] == compact_rev

    after_restart = wait_writer(c)
    put_rev = c.put("k/after", "1").header.revision
    seen += [after_restart, put_rev, c.get("k/", prefix=True, count_only=True).header.revision,
             c.status().header.revision]
    assert put_rev == compact_rev + 1, seen                          # etcd #17780
    assert seen == sorted(seen), f"a header revision went backwards: {seen}"

    # No writer.compacted at the first start (nothing was pending): only the resumed one's.
    done = cluster["writer"].wait_event("writer.compacted", count=1, timeout=60)[-1]
    resumed = cluster["writer"].events("writer.compaction_started")
    assert [(e["trigger"], e["compact_revision"]) for e in resumed] == [("request", compact_rev),
                                                                         ("resume", compact_rev)], resumed
    assert done["compact_revision"] == compact_rev and done["trigger"] == "resume", done
    w = c.watch("k/", prefix=True, start_revision=compact_rev)
    events = collect(w, 3, timeout=30)
    assert [(e.type, e.kv.key.decode(), e.kv.mod_revision) for e in events] == [
        ("DELETE", early, compact_rev), ("DELETE", late, compact_rev), ("PUT", "k/after", put_rev)]
    no_more(w)                                                       # etcd #19179
    cluster.stop()
    store = Store(cluster.data_dir)
    try:
        with store.reader() as view:
            history = view.history(compact_rev, put_rev)
            assert [(m, s, t, kv[0]) for m, s, t, kv, _ in history] == [
                (compact_rev, 0, DELETE, early.encode()), (compact_rev, 1, DELETE, late.encode()),
                (put_rev, 0, 0, b"k/after")]
            assert view.range({"key": b"k/", "range_end": b"k0", "count_only": True})["count"] == KEYS - 1
        with store.env.begin() as txn:       # compaction finished: one record per live key, + C's 2
            assert txn.stat(store._history)["entries"] == (KEYS - 2) + 2 + 1
    finally:
        store.close()


@pytest.mark.parametrize("ring_revisions", ["0", None], ids=["syncer", "ring"])
def test_delete_at_compact_revision_reaches_a_watch_from_there(make_cluster, ring_revisions):
    """etcd #18089, end to end: put k; delete k (revision C); compact C; a watch on k from C must
    get the DELETE at C, after physical compaction has finished.  Through the syncer (no ring,
    ZWATCH_RING_REVISIONS=0: the watch catches up from history) and through the default ring."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": ring_revisions} if ring_revisions else None)
    c = cl.client()
    put_rev = c.put("k", "v").header.revision
    del_rev = c.delete("k").header.revision
    c.put("other", "x")
    c.compact(del_rev)
    cl["writer"].wait_event("writer.compacted", count=1, timeout=30)    # this one (none at start)
    w = c.watch("k", start_revision=del_rev)
    events = collect(w, 1)
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [("DELETE", b"k", del_rev)]
    assert put_rev < del_rev
    no_more(w)
    with pytest.raises(errors.Compacted):
        c.get("k", revision=put_rev)
