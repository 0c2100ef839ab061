"""Replay cost on a big store: ``python -m zwatch.tools.sync_replay --dir D [--revisions 1000000]``.

Builds (or reuses) a store as tools/startup.py does (N revisions, one put each, over 10,000
keys), then, each in a fresh cluster on that store, watches from revision 1 and measures until
every event arrived: the time from the create, the syncer's records read and key-index steps
(its sync.batch line), and the syncer's memory sampled every 5 ms during the replay, anonymous
pages (the heap) apart from file pages (LMDB's map: page cache, not the process's own).

Workloads (--only to pick some):
  key         one key from revision 1 (key index)
  key_scan    the same with ZWATCH_SYNC_KEY_INDEX_MAX_KEYS=0: a scan of the whole history
  range_key   a range of 10 keys (key index)
  range_scan  a range of 1,000 keys (more than the key index takes: a scan, 1/10 of the events)

Prints one JSON line per workload.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

from zwatch.tools.cluster import Cluster
from zwatch.tools.startup import _status_kib, build

KEYS = 10_000
FIELDS = ("RssAnon", "RssFile", "VmHWM")

WORKLOADS = {
    #            key,          range end,     env
    "key": (b"key/000042", None, {}),
    "key_scan": (b"key/000042", None, {"ZWATCH_SYNC_KEY_INDEX_MAX_KEYS": "0"}),
    "range_key": (b"key/000040", b"key/000050", {}),
    "range_scan": (b"key/000000", b"key/001000", {}),
}


class Sampler(threading.Thread):
    """The largest RssAnon / RssFile of a process while it runs (every 5 ms)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, dict.fromkeys(FIELDS, 0), threading.Event()

    def run(self):
        while not self.done.is_set():
            for k, v in _status_kib(self.pid, FIELDS).items():
                self.peak[k] = max(self.peak[k], v)
            self.done.wait(0.005)


def one(data: str, name: str, revisions: int) -> dict:
    key, end, env = WORKLOADS[name]
    cl = Cluster(data, env={"ZWATCH_RING_REVISIONS": "64", **env}).start()
    try:
        c = cl.client(timeout=30)
        time.sleep(1.5)     # the fan-out has heard the syncer: no re-registration in the middle
        expected = sum(kv.version for kv in c.get(key, end).kvs)    # never deleted: every put
        pid = cl["syncer"].proc.pid
        before = _status_kib(pid, FIELDS)
        sampler = Sampler(pid)
        sampler.start()
        t0 = time.perf_counter()
        w = c.watch(key, end, start_revision=1)
        got = 0
        while got < expected:
            got += len(w.get(timeout=120).events)
        took = time.perf_counter() - t0
        cl["syncer"].wait_event("sync.batch", timeout=30)
        batches = cl["syncer"].events("sync.batch")
        sampler.done.set()
        sampler.join()
        after = _status_kib(pid, FIELDS)
        w.cancel()
        return {"workload": f"sync_replay_{name}", "revisions": revisions, "events": got,
                "from_rev1_s": round(took, 4), "batches": len(batches),
                "records_read": sum(b["records_scanned"] for b in batches),
                "key_index_reads": sum(b["key_index_reads"] for b in batches),
                "batch_ms": round(sum(b["ms"] for b in batches), 3),
                **{f"syncer_{k.lower()}_kib_before": v for k, v in before.items() if k != "VmHWM"},
                **{f"syncer_{k.lower()}_kib_peak": v for k, v in sampler.peak.items() if k != "VmHWM"},
                **{f"syncer_{k.lower()}_kib_after": v for k, v in after.items() if k != "VmHWM"}}
    finally:
        cl.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--revisions", type=int, default=1_000_000)
    ap.add_argument("--dir", help="keep the store here (reused if it exists)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    base = args.dir or tempfile.mkdtemp(prefix="zwatch-replay-")
    data = os.path.join(base, "data")
    build(data, args.revisions, keys=KEYS)      # a no-op on a store already that long
    for _ in range(args.repeat):
        for name in args.only.split(","):
            print(json.dumps(one(data, name, args.revisions)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
