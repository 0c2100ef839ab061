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
