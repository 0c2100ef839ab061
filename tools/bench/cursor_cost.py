"""What durable cursors cost (docs/design.md, "Issue #16: Durable named cursors"): a standalone
measurement, not a bench workload (cursors are not on any event's path: nothing to compare with
etcd).

    python -m zwatch.tools.bench.cursor_cost [--n 300] [--cursors 1000]

Prints one JSON line per figure:

* through a real cluster (writer, syncer, one fan-out; sync client, one request at a time):
  latency of a `put`, of a `cursor_put` advancing a cursor, of a `cursor_get`, and of a
  `cursor_list` of --cursors cursors (with its reply size);
* in the store, no I/O besides LMDB: what a `compact` pays to find the oldest cursor among
  --cursors (Tx.compact's check), and the LMDB bytes per cursor;
* in the writer's memory: the cursor clock's bytes per cursor (tracemalloc).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc

from zwatch import messages


def _pcts(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"p50_ms": round(xs[len(xs) // 2] * 1000, 3), "p99_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000, 3)}


def cluster_figures(n: int, cursors: int) -> list[dict]:
    from zwatch.tools.cluster import Cluster
    cl = Cluster(tempfile.mkdtemp(prefix="zw-cursor-cost-") + "/data", fanouts=1).start()
    out = []
    try:
        c = cl.client()
        c.put("warm", "up")
        c.cursor_put("bench", "k/", prefix=True, ttl=3600)

        def timed(fn) -> list[float]:
            xs = []
            for i in range(n):
                t0 = time.perf_counter()
                fn(i)
                xs.append(time.perf_counter() - t0)
            return xs

        puts = timed(lambda i: c.put(f"k/{i % 10}", "v" * 100))
        rev = c.put("k/x", "v").header.revision
        advances = timed(lambda i: c.cursor_put("bench", "k/", prefix=True, ttl=3600, revision=rev))
        gets = timed(lambda i: c.cursor_get("bench"))
        out += [{"figure": "put", "n": n, **_pcts(puts)},
                {"figure": "cursor_put (advance)", "n": n, **_pcts(advances)},
                {"figure": "cursor_get", "n": n, **_pcts(gets)}]
        for i in range(cursors - 1):
            c.cursor_put(f"c{i:04d}", f"p/{i}", ttl=3600)
        lists = timed(lambda i: c._call("cursor_list", {})) if n else []
        body = c._call("cursor_list", {})
        out.append({"figure": "cursor_list", "cursors": len(body["cursors"]), "n": n, **_pcts(lists),
                    "reply_bytes": len(messages.pack(body))})
    finally:
        cl.stop()
    return out


def store_figures(cursors: int, reps: int = 200) -> list[dict]:
    from zwatch.actors.store import Store, cursors as cursors_mod
    from zwatch.actors.store.tx import Tx
    out = []
    d = tempfile.mkdtemp(prefix="zw-cursor-cost-")
    s = Store(d)
    try:
        s.apply_batch([("put", {"key": b"k", "value": b"v"})] * 10)
        for count in (0, cursors):
            if count:
                s.apply_batch([("cursor_put", {"name": f"c{i:04d}", "key": f"p/{i}".encode(), "ttl": 3600,
                                               "revision": 5}) for i in range(count)])
            txn = s.env.begin(write=True)
            try:
                tx = Tx(s, txn)
                t0 = time.perf_counter()
                for _ in range(reps):
                    cursors_mod.check_compact(tx, 6)
                took = (time.perf_counter() - t0) / reps
                stat = txn.stat(s._cursors)
            finally:
                txn.abort()
            out.append({"figure": "compact's cursor check", "cursors": count, "us": round(took * 1e6, 1)})
        pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        out.append({"figure": "LMDB bytes per cursor", "cursors": stat["entries"],
                    "bytes": round(pages * stat["psize"] / max(1, stat["entries"]), 1)})
    finally:
        s.close()
    return out


def clock_figures(cursors: int) -> list[dict]:
    from zwatch.actors.cursorclock import CursorClock
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    clock = CursorClock()
    names = [f"cursor-name-{i:06d}" for i in range(cursors)]          # the names are the store's too
    after_names = tracemalloc.take_snapshot()
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        clock.touch(name, 100 + i, 3600, 0.0)
    touch_s = (time.perf_counter() - t0) / cursors
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(st.size_diff for st in after.compare_to(after_names, "filename"))
    del before
    return [{"figure": "cursor clock bytes per cursor (writer memory)", "cursors": cursors,
             "bytes": round(size / cursors, 1)},
            {"figure": "cursor clock touch (a cursor_put's bookkeeping, at this many cursors)",
             "cursors": cursors, "us": round(touch_s * 1e6, 2)}]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zwatch.tools.bench.cursor_cost", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=300, help="requests per latency figure")
    p.add_argument("--cursors", type=int, default=1000, help="cursors for the list / compact / memory figures")
    a = p.parse_args(argv)
    for rec in store_figures(a.cursors) + clock_figures(a.cursors) + cluster_figures(a.n, a.cursors):
        print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
