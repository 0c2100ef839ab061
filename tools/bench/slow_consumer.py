"""The `slow_consumer` measurement (issue #14, item 1): a watching application slower than the writes.

    .venv/bin/python -m zwatch.tools.bench.slow_consumer [--sleep 0.5] [--seconds 50] [--value-bytes 4096]
                                                          [--writers 2] [--max-buffered-bytes 0] [--before]

Starts a cluster (tools/cluster.py: real processes, loopback, a temp data dir) and a consumer
process: one Client, one watch on a prefix, an application that sleeps `--sleep` seconds per
response.  Writers put `--value-bytes` values under the prefix as fast as they can for
`--seconds`; then the consumer reads the rest at full speed and checks the stream.  `--before`
delivers into an application-owned queue.SimpleQueue instead of the watch's own queue: the
client cannot see those being consumed and acks on arrival (the behaviour before issue #14).
Prints one JSON line: the consumer's peak RSS (VmHWM) and RSS growth while the writers ran, the
most bytes the client held unconsumed, responses and revisions, and whether the stream was
complete, ordered and without duplicates; plus the fan-out's victims.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

from zwatch.tools.cluster import Cluster

PREFIX = "slow/"


def _vm(field: bytes) -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def child(endpoint: str, sleep_s: float, start: int, before: bool, max_buffered: int) -> int:
    """The consumer: prints {"t", "rss_kib", "held_bytes", ...} lines, then the verdict; the
    parent writes the last revision on stdin when its writers stopped."""
    from zwatch import Client
    c = Client([endpoint], timeout=30, shuffle=False, max_buffered_bytes=max_buffered)
    q = queue.SimpleQueue() if before else None
    w = c.watch(PREFIX, prefix=True, start_revision=start, queue=q)
    source = q if before else w
    rss0 = _vm(b"VmRSS:")
    print(json.dumps({"ready": True, "rss_kib": rss0}), flush=True)
    last = [None]
    threading.Thread(target=lambda: last.__setitem__(0, int(sys.stdin.readline())), daemon=True).start()
    revs: list[int] = []
    responses = 0
    held_max = 0
    rss_max_slow = rss0
    next_report = time.monotonic()
    while True:
        slow = last[0] is None
        try:
            r = source.get(timeout=0.2)
        except queue.Empty:
            r = None
        if r is not None:
            responses += 1
            revs.extend(e.kv.mod_revision for e in r.events)
            if slow:
                time.sleep(sleep_s)
        held_max = max(held_max, c.buffered_bytes)
        now = time.monotonic()
        if now >= next_report:
            rss = _vm(b"VmRSS:")
            if slow:
                rss_max_slow = max(rss_max_slow, rss)
            print(json.dumps({"t": round(now, 1), "rss_kib": rss, "held_bytes": c.buffered_bytes,
                              "responses": responses, "top": revs[-1] if revs else 0}), flush=True)
            next_report = now + 1.0
        if last[0] is not None and revs and revs[-1] >= last[0]:
            break
    expected = list(range(start, last[0] + 1))
    print(json.dumps({"verdict": True, "responses": responses, "events": len(revs),
                      "complete_and_ordered": revs == expected, "duplicates": len(revs) - len(set(revs)),
                      "held_max_bytes": held_max, "rss_start_kib": rss0, "rss_max_slow_kib": rss_max_slow,
                      "vm_hwm_kib": _vm(b"VmHWM:"), "session_window_bytes": c._session.window_bytes}), flush=True)
    c.close()
    return 0


def run(a) -> dict:
    data = tempfile.mkdtemp(prefix="zw-bench-slow-")
    env = {"ZWATCH_SESSION_WINDOW_BYTES": str(a.window)} if a.window else {}
    cl = Cluster(data, env=env).start()
    try:
        admin = cl.client(timeout=30)
        start = admin.put("begin", "1").header.revision + 1
        argv = [sys.executable, "-m", "zwatch.tools.bench.slow_consumer", "--child", cl.fanout_eps[0],
                "--sleep", str(a.sleep), "--start", str(start), "--max-buffered-bytes", str(a.max_buffered_bytes)]
        if a.before:
            argv.append("--before")
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        lines: list[dict] = []
        json.loads(proc.stdout.readline())          # ready: its watch exists
        reader = threading.Thread(target=lambda: [lines.append(json.loads(x)) for x in proc.stdout], daemon=True)
        reader.start()
        stop = threading.Event()
        puts = [0] * a.writers
        value = b"v" * a.value_bytes

        def write(i):
            c = cl.client(timeout=30)
            n = 0
            while not stop.is_set():
                c.put(f"{PREFIX}{i}/{n % 100}", value)
                n += 1
            puts[i] = n

        ts = [threading.Thread(target=write, args=(i,)) for i in range(a.writers)]
        for t in ts:
            t.start()
        time.sleep(a.seconds)
        stop.set()
        for t in ts:
            t.join()
        last = admin.get("begin").header.revision
        proc.stdin.write(f"{last}\n")
        proc.stdin.flush()
        proc.wait(timeout=max(120.0, a.seconds * 4))
        reader.join(5)
        verdict = next(x for x in lines if x.get("verdict"))
        slow_lines = [x for x in lines if "t" in x]
        victims = sum(s.get("victims", 0) for s in cl["fanout0"].events("fanout.stats"))
        return {"workload": "slow_consumer", "before": a.before, "sleep_s": a.sleep, "seconds": a.seconds,
                "value_bytes": a.value_bytes, "puts": sum(puts), "revisions": last - start + 1,
                "max_buffered_bytes": a.max_buffered_bytes, "fanout_victims": victims,
                "rss_growth_mib": round((verdict["rss_max_slow_kib"] - verdict["rss_start_kib"]) / 1024, 1),
                "vm_hwm_mib": round(verdict["vm_hwm_kib"] / 1024, 1),
                "held_max_mib": round(verdict["held_max_bytes"] / 2**20, 2),
                **{k: verdict[k] for k in ("responses", "events", "complete_and_ordered", "duplicates",
                                           "session_window_bytes")}}
    finally:
        cl.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zwatch.tools.bench.slow_consumer",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--sleep", type=float, default=0.5, help="seconds the application spends per response")
    ap.add_argument("--seconds", type=float, default=50.0, help="how long the writers write")
    ap.add_argument("--value-bytes", type=int, default=4096)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--window", type=int, default=0, help="ZWATCH_SESSION_WINDOW_BYTES (0: the default, 8 MiB)")
    ap.add_argument("--max-buffered-bytes", type=int, default=0, help="Client(max_buffered_bytes=...)")
    ap.add_argument("--before", action="store_true", help="ack on arrival (an application-owned queue)")
    ap.add_argument("--child", metavar="ENDPOINT", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child, a.sleep, a.start, a.before, a.max_buffered_bytes)
    r = run(a)
    print(json.dumps(r), flush=True)
    return 0 if r["complete_and_ordered"] and not r["duplicates"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
