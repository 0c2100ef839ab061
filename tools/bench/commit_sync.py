"""What one durable commit costs on this disk, by the ways a commit can be made durable:
``python -m zwatch.tools.bench.commit_sync [--commits 2000] [--dir DIR]``.

One small put per commit (the sequential-put case: every commit waits for its disk flushes),
p50 / p99 in ms and flushes per commit, for:

* ``lmdb_sync``:      LMDB as the writer opens it (sync, metasync): fdatasync of the data, then the
                      meta page written through an O_DSYNC descriptor: two flushes per commit;
* ``lmdb_nometasync``: metasync=False: one flush; the meta page reaches the disk with the next
                      commit's flush, so a power loss can undo the last acknowledged commit;
* ``lmdb_nosync``:    no flush at all (a power loss can corrupt the store);
* ``wal_append``:     the floor of a write-ahead log: a 150-byte append + fdatasync (what a
                      WAL + unsynced LMDB with checkpoints would pay per commit).

Prints one JSON line per variant.  The DIR must be on the disk under test (default: a temp dir).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import lmdb


def _lmdb(path: str, commits: int, **flags) -> list[float]:
    env = lmdb.open(path, map_size=1 << 30, max_dbs=4, **flags)
    db = env.open_db(b"history")
    value = b"v" * 100
    times = []
    for i in range(commits):
        t0 = time.perf_counter()
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(16, "big"), value, db=db)
        times.append(time.perf_counter() - t0)
    env.close()
    return times


def _wal(path: str, commits: int) -> list[float]:
    fd = os.open(os.path.join(path, "wal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = b"r" * 150
    times = []
    try:
        for _ in range(commits):
            t0 = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return times


VARIANTS = {
    "lmdb_sync": (lambda p, n: _lmdb(p, n, sync=True, metasync=True), 2),
    "lmdb_nometasync": (lambda p, n: _lmdb(p, n, sync=True, metasync=False), 1),
    "lmdb_nosync": (lambda p, n: _lmdb(p, n, sync=False, metasync=False), 0),
    "wal_append": (_wal, 1),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--dir", help="a directory on the disk under test (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all variants (medians reported)")
    args = ap.parse_args(argv)
    results: dict[str, list] = {name: [] for name in VARIANTS}
    for _ in range(args.repeat):
        for name, (run, _flushes) in VARIANTS.items():
            d = tempfile.mkdtemp(prefix="zwatch-commit-", dir=args.dir)
            try:
                times = sorted(run(d, args.commits))
                results[name].append((times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000))
            finally:
                shutil.rmtree(d, ignore_errors=True)
    for name, runs in results.items():
        p50s, p99s = [r[0] for r in runs], [r[1] for r in runs]
        print(json.dumps({"variant": name, "flushes_per_commit": VARIANTS[name][1], "commits": args.commits,
                          "repeat": args.repeat, "p50_ms": round(statistics.median(p50s), 3),
                          "p50_ms_range": [round(min(p50s), 3), round(max(p50s), 3)],
                          "p99_ms": round(statistics.median(p99s), 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
