"""Compaction as etcd operators know it, end to end (real processes, real LMDB):

* automatic compaction in revision and periodic mode (etcd's --auto-compaction-mode/-retention),
  each run logged writer.compaction_started (trigger auto) and writer.compacted with figures,
  and seen by clients exactly as a client's compact (reads and watches below it: COMPACTED);
* writer.compaction_progress at most once a second during a long physical compaction, and a
  `compact` with physical=true answered only once the records are gone;
* no compaction line at a start with nothing to do (the old misleading writer.compacted);
* a retention that does not fit the mode stops the writer with one line naming the variable.
"""
from __future__ import annotations

import datetime
import os
import struct
import subprocess
import sys
import time

import lmdb
import pytest

from zwatch import errors
from zwatch.client import Put


def _ts(event) -> float:
    return datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def compaction_done(data_dir) -> tuple[int, int]:
    """(compact_rev, physical compaction done up to) read from the store, read-only."""
    env = lmdb.open(data_dir, readonly=True, lock=False, max_dbs=16, subdir=True)
    try:
        with env.begin() as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            return (struct.unpack(">Q", txn.get(b"compact_rev", db=meta))[0],
                    struct.unpack_from(">Q", txn.get(b"compact_done", db=meta))[0])
    finally:
        env.close()


def test_revision_mode_keeps_the_last_n_revisions_and_logs_figures(make_cluster):
    cl = make_cluster(env={"ZWATCH_AUTO_COMPACTION_MODE": "revision", "ZWATCH_AUTO_COMPACTION_RETENTION": "20",
                           "ZWATCH_AUTO_COMPACTION_INTERVAL_S": "0.3"})
    c = cl.client()
    first = c.put("k0", "v").header.revision
    w = c.watch("k", prefix=True, start_revision=first)
    for i in range(1, 120):
        last = c.put(f"k{i % 7}", "x" * 100).header.revision
    done = cl["writer"].wait_event("writer.compacted", timeout=30)[0]
    started = cl["writer"].events("writer.compaction_started")
    assert started and all(e["trigger"] == "auto" for e in started), started
    s = started[-1]
    assert 0 < s["compact_revision"] <= s["revision"] - 20, s                  # keeps the last 20
    assert done["trigger"] == "auto" and done["records_removed"] > 0 and done["keys_scanned"] >= 7, done
    assert 0 < done["db_size_in_use"] <= done["db_size"] and done["duration_s"] >= 0, done
    print("compacted:", {k: done[k] for k in ("compact_revision", "duration_s", "keys_scanned",
                                                "records_removed", "db_size", "db_size_in_use")})
    # Clients see it as any compaction: old reads refused, the history up to it gone.
    with pytest.raises(errors.Compacted):
        c.get("k1", revision=first)
    assert c.get("k1", revision=last).kvs                                         # recent ones kept
    # the watch opened before it still got every revision in order (it was fast enough)
    revs = []
    while len(revs) < last - first + 1:
        resp = w.get(timeout=10)
        assert resp is not None and not resp.canceled, resp
        revs += [e.kv.mod_revision for e in resp.events]
    assert revs == list(range(first, last + 1))
    # a watch from before the compaction is refused with the compact revision
    w2 = c.watch("k", prefix=True, start_revision=first)
    resp = w2.get(timeout=10)
    while resp is not None and not resp.canceled:
        resp = w2.get(timeout=10)
    assert resp is not None and resp.canceled and resp.compact_revision >= s["compact_revision"] - 1


def test_periodic_mode_compacts_to_the_revision_of_the_retention_ago(make_cluster):
    cl = make_cluster(env={"ZWATCH_AUTO_COMPACTION_MODE": "periodic", "ZWATCH_AUTO_COMPACTION_RETENTION": "2s"})
    c = cl.client()
    t0 = time.monotonic()
    marks = []                                     # (time since start, revision)
    while time.monotonic() - t0 < 3.5:
        marks.append((time.monotonic() - t0, c.put("p", "v").header.revision))
        time.sleep(0.02)
    s = cl["writer"].wait_event("writer.compaction_started", timeout=20)[0]
    assert s["trigger"] == "auto"
    # It names a revision sampled at least one retention before the compaction ran: older
    # than every revision written in the last 2 s before it, so not the newest ones.
    assert 0 < s["compact_revision"] < s["revision"], s
    assert s["compact_revision"] <= marks[-1][1] - 50, (s, marks[-1])   # ~1.5 s of puts newer than it
    cl["writer"].wait_event("writer.compacted", timeout=20)


def test_long_physical_compaction_reports_progress_and_physical_waits(make_cluster, tmp_path):
    # Chunks of 4 keys + records (one fsync each): a compaction of some seconds.
    cl = make_cluster(env={"ZWATCH_AUTO_COMPACTION_RETENTION": "0", "ZWATCH_COMPACTION_BATCH_LIMIT": "4"})
    c = cl.client()
    # 20,000 keys, 2 revisions each, in txns of 128 puts: 40,000 records, half removable.
    for rnd in range(2):
        for start in range(0, 20_000, 128):
            c.txn(success=[Put(f"big/{i:05d}", f"{rnd}" * 64) for i in range(start, min(start + 128, 20_000))])
    rev = c.get("big/", prefix=True, count_only=True).header.revision
    c.compact(rev, physical=True, timeout=120)
    # Answered only now: the store says the physical compaction is done up to rev.
    assert compaction_done(cl.data_dir) == (rev, rev)
    done = cl["writer"].wait_event("writer.compacted", timeout=30)[0]
    assert done["compact_revision"] == rev and done["trigger"] == "request"
    assert done["records_removed"] == 20_000 and done["keys_scanned"] >= 20_000, done
    progress = cl["writer"].events("writer.compaction_progress")
    print(f"compaction of 20,000 records: {done['duration_s']} s, {len(progress)} progress lines")
    gaps = [_ts(b) - _ts(a) for a, b in zip(progress, progress[1:])]
    assert all(g >= 0.99 for g in gaps), gaps                                  # at most one a second
    assert [p["records_removed"] for p in progress] == sorted(p["records_removed"] for p in progress)
    if done["duration_s"] >= 2.0:              # long enough that it must have reported progress
        assert progress and progress[0]["keys_scanned"] > 0 and progress[0]["elapsed_s"] >= 0.99


def test_no_compaction_line_at_a_start_with_nothing_pending(make_cluster):
    cl = make_cluster()
    c = cl.client()
    c.put("a", "1")
    cl.restart("writer")
    cl["writer"].wait_event("writer.start", count=2)
    time.sleep(0.5)
    assert cl["writer"].events("writer.compacted") == []
    assert cl["writer"].events("writer.compaction_started") == []


@pytest.mark.parametrize("mode,retention", [("revision", "1h"), ("periodic", "soon"), ("revision", "-1")])
def test_a_retention_that_does_not_fit_stops_the_writer_with_one_line(tmp_path, mode, retention):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZWATCH_")}
    env.update(ZWATCH_DATA_DIR=str(tmp_path / "d"), ZWATCH_AUTO_COMPACTION_MODE=mode,
               ZWATCH_AUTO_COMPACTION_RETENTION=retention, ZWATCH_WRITER_ENDPOINT="tcp://127.0.0.1:0",
               ZWATCH_PUB_ENDPOINT="tcp://127.0.0.1:0")
    r = subprocess.run([sys.executable, "-m", "zwatch.actors", "writer"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "ZWATCH_AUTO_COMPACTION_RETENTION" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
