"""A single-key watch from revision 1 on a long history is replayed through the key index: the
syncer reads that key's records, not the whole history (issue #15).  Counted with the syncer's
sync.batch line (records_scanned, key_index_reads), never timed; a prefix watch over every key
still takes one scan of the history."""
from __future__ import annotations

import zwatch

from support import collect, revs


def test_a_single_key_watch_from_revision_1_reads_that_keys_records_only(make_cluster):
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "10"})
    c = cl.client()
    mine = []
    for i in range(1500):
        if i % 500 == 7:
            mine.append(c.put("ki/mine", str(i)).header.revision)
        else:
            c.put(f"ki/other{i % 50}", "x")
    w = c.watch("ki/mine", start_revision=1)
    assert revs(collect(w, len(mine))) == mine
    batch = cl["syncer"].wait_event("sync.batch")[-1]
    assert batch["key_index_reads"] >= 1
    assert batch["records_scanned"] == len(mine), batch      # 3 records, not 1,500

    everything = c.watch("ki/", prefix=True, start_revision=1)
    assert len(collect(everything, 1500)) == 1500
    batches = cl["syncer"].wait_event("sync.batch", count=2)
    assert batches[-1]["key_index_reads"] == 0 and batches[-1]["records_scanned"] >= 1500


def test_the_key_index_off_scans_the_whole_history(make_cluster):
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "10", "ZWATCH_SYNC_KEY_INDEX_MAX_KEYS": "0"})
    c = cl.client()
    for i in range(300):
        c.put("ki/mine" if i == 5 else f"ki/o{i % 9}", "x")
    w = c.watch("ki/mine", start_revision=1)
    assert len(collect(w, 1)) == 1
    batch = cl["syncer"].wait_event("sync.batch")[-1]
    assert batch["key_index_reads"] == 0 and batch["records_scanned"] >= 300


def test_the_estimate_picks_the_scan_for_a_key_with_most_of_the_history(make_cluster):
    """ki/hot has 200 of 300 revisions: 200 records x ZWATCH_SYNC_KEY_READ_COST (4) >= 300
    revisions to scan, so the batch scans; at a cost of 1 the key index reads its 200 records."""
    for cost, by_key in (("4", False), ("1", True)):
        cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "10", "ZWATCH_SYNC_KEY_READ_COST": cost})
        c = cl.client()
        for i in range(300):
            c.put("ki/hot" if i % 3 else f"ki/o{i}", "x")
        w = c.watch("ki/hot", start_revision=1)
        assert len(collect(w, 200)) == 200
        batch = cl["syncer"].wait_event("sync.batch")[-1]
        if by_key:
            assert batch["key_index_reads"] >= 1 and batch["records_scanned"] == 200, batch
        else:
            assert batch["key_index_reads"] == 0 and batch["records_scanned"] >= 300, batch


def test_a_key_and_a_prefix_over_it_in_one_batch_get_each_event_once(make_cluster):
    """Two watches of one batch whose specs overlap (ki/a, and the prefix ki/): read through the
    key index, each gets every event of its spec once, in order."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "10", "ZWATCH_SYNC_QUIET_S": "0.5"})
    c = cl.client()
    mine = [c.put("ki/a" if i % 2 else "ki/b", str(i)).header.revision for i in range(20)]
    for i in range(1000):
        c.put(f"zz/{i % 10}", "x")
    one = c.watch("ki/a", start_revision=1)
    every = c.watch("ki/", prefix=True, start_revision=1)
    got_every, got_one = revs(collect(every, 20)), revs(collect(one, 10))
    assert got_every == mine and got_one == mine[1::2]
    batch = cl["syncer"].wait_event("sync.batch")[-1]
    assert batch["watchers"] == 2 and batch["key_index_reads"] >= 1 and batch["records_scanned"] == 20, batch
    c.put("ki/a", "live")
    assert [e.kv.value for e in collect(one, 1)] == [b"live"] and len(collect(every, 1)) == 1
