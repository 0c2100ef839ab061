"""Start-up time on a big store: ``python -m zwatch.tools.startup [--revisions 1000000]``.

Builds a store with N revisions (one put each, on a key space of 10,000 keys, group-committed
10,000 per transaction), then measures what a restart costs: opening the Store, a whole
actor set up to its first served read, and a historical read and a replay from the middle.
Prints one JSON line.  The store keeps no in-memory index, so opening must not depend on N.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from zwatch.actors.store import Store
from zwatch.tools.cluster import Cluster


def build(path: str, revisions: int, keys: int = 10_000, per_commit: int = 10_000) -> float:
    store = Store(path, map_size=1 << 32)
    t0 = time.perf_counter()
    done = store.current_revision() - 1
    value = b"v" * 100
    while done < revisions:
        n = min(per_commit, revisions - done)
        store.apply_batch([("put", {"key": b"key/%06d" % ((done + i) % keys), "value": value})
                           for i in range(n)])
        done += n
        print(f"\rbuilding: {done:,}/{revisions:,} revisions", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    store.close()
    return time.perf_counter() - t0


def start_to_first_read(data: str) -> tuple[float, float, dict]:
    """Launch writer, syncer and a fan-out at once (as the Procfile does) and time, from the
    launch: a client's first served read, and its first live watch event (the fan-out must have
    joined the publish stream for that).  Also when each actor logged its start and when the
    fan-out joined the stream, in seconds from the launch."""
    cluster = Cluster(data)
    t0 = time.perf_counter()
    try:
        for actor in cluster.actors.values():
            actor.start()
        client = cluster.client(timeout=30)
        client.get("key/000001")
        read_s = time.perf_counter() - t0
        watch = client.watch("startup/probe")
        client.put("startup/probe", "1")
        next(iter(watch))
        watch_s = time.perf_counter() - t0
        marks = {}
        for name, actor in cluster.actors.items():
            base = name.rstrip("0123456789")
            for event in (f"{base}.start", "fanout.joined_stream"):
                found = actor.events(event) if event.startswith(base) else []
                if found:
                    marks[f"{event.replace('.', '_')}_s"] = round(_since_launch(found[0], t0), 3)
        marks.update(single_key_replay(cluster, client))
        return read_s, watch_s, marks
    finally:
        cluster.stop()


def single_key_replay(cluster: Cluster, client, key: str = "key/000042") -> dict:
    """A watch of one key from revision 1 on the big store: time until it has every event of
    that key (a range read says how many), the syncer's records read for it, and the syncer's
    memory after (anonymous and file-backed pages apart: LMDB's map counts as file pages)."""
    expected = client.get(key).kvs[0].version if client.get(key).kvs else 0
    # every put of the key since revision 1 (the build never deletes): its version
    t0 = time.perf_counter()
    w = client.watch(key, start_revision=1)
    got = 0
    while got < expected:
        got += len(w.get(timeout=60).events)
    took = time.perf_counter() - t0
    w.cancel()
    batch = cluster["syncer"].wait_event("sync.batch")[-1]
    mem = _status_kib(cluster["syncer"].proc.pid, ("VmRSS", "RssAnon", "RssFile", "VmHWM"))
    return {"single_key_events": got, "single_key_from_rev1_s": round(took, 4),
            "single_key_records_scanned": batch.get("records_scanned"),
            "single_key_key_index_reads": batch.get("key_index_reads"),
            **{f"syncer_{k.lower()}_kib": v for k, v in mem.items()}}


def _status_kib(pid: int, names) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in names:
                out[name] = int(rest.split()[0])
    return out


def _since_launch(line: dict, t0_perf: float) -> float:
    """A log line's ISO timestamp as seconds after the launch (perf_counter t0)."""
    from datetime import datetime
    at = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
    return at - (time.time() - (time.perf_counter() - t0_perf))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--revisions", type=int, default=1_000_000)
    ap.add_argument("--dir", help="keep the store here (reused if it exists)")
    args = ap.parse_args(argv)
    base = args.dir or tempfile.mkdtemp(prefix="zwatch-startup-")
    os.makedirs(base, exist_ok=True)
    data = os.path.join(base, "data")
    try:
        build_s = build(data, args.revisions)
        t0 = time.perf_counter()
        store = Store(data)
        open_ms = (time.perf_counter() - t0) * 1000
        current = store.current_revision()
        with store.reader() as view:
            t0 = time.perf_counter()
            view.range({"key": b"key/000042", "revision": current // 2})
            old_read_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            n = len(view.history(current // 2, current, max_records=10_000, max_bytes=1 << 30))
            replay_rate = n / (time.perf_counter() - t0)
        store.close()
        system_s, first_watch_s, marks = start_to_first_read(data)
        print(json.dumps({"workload": "startup", "revisions": current - 1, "build_s": round(build_s, 2),
                          "store_open_ms": round(open_ms, 3), "system_start_to_first_read_s": round(system_s, 3),
                          "system_start_to_first_watch_event_s": round(first_watch_s, 3), **marks,
                          "historical_read_ms": round(old_read_ms, 3),
                          "replay_records_per_s": round(replay_rate), "db_bytes": os.path.getsize(
                              os.path.join(data, "data.mdb"))}))
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
