"""Where a sequential put's cost goes, per process: ``python -m zwatch.tools.bench.put_path
[--puts 3000] [--no-direct]``.

Starts a cluster (writer, syncer, one fan-out; temp dir), then a client process that puts
sequentially (the put_seq shape), twice:

1. plain: puts/s, p50, and CPU microseconds per put of every process (from /proc, user +
   system, all threads);
2. under ``strace -f -c`` (writer, fan-out and client attached): system calls per put by
   process and kind, and disk flushes per put (fsync, fdatasync, msync, and pwrite64 calls on
   the writer: LMDB writes its pages and, with metasync, its meta page through an O_DSYNC
   descriptor, so each pwrite64 of a meta page is a flush too).

strace slows every call down: use the second pass for the counts, the first for time and CPU.
Prints one JSON line per pass.  ``--no-direct``: the client writes through the fan-out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from zwatch.tools.cluster import Cluster

from .procstat import cpu_seconds

CLIENT = r"""
import json, sys, time
import zwatch
eps, n, direct = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
c = zwatch.Client(eps, direct_writes=direct)
c.wait_connected(10)
c.put("warm", "x"); c.put("warm", "x")
print("ready", flush=True)
sys.stdin.readline()
lat = []
t0 = time.perf_counter()
for i in range(n):
    s = time.perf_counter()
    c.put("put_path/k%d" % (i % 100), "v" * 100)
    lat.append(time.perf_counter() - s)
took = time.perf_counter() - t0
lat.sort()
print(json.dumps({"seconds": took, "p50_ms": lat[len(lat) // 2] * 1000,
                  "direct": c._direct.sent if c._direct else 0}), flush=True)
c.close()
"""

STRACE_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def _client(cluster: Cluster, n: int, direct: bool, strace_out: str | None):
    argv = [sys.executable, "-c", CLIENT, json.dumps(cluster.fanout_eps), str(n), "1" if direct else "0"]
    if strace_out:
        argv = ["strace", "-f", "-c", "-o", strace_out] + argv
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _strace_counts(path: str) -> dict[str, int]:
    counts = {}
    with open(path) as f:
        for line in f:
            m = STRACE_LINE.match(line)
            if m and m.group(2) != "total":
                counts[m.group(2)] = int(m.group(1))
    return counts


def run(n: int, direct: bool, use_strace: bool) -> dict:
    base = tempfile.mkdtemp(prefix="zwatch-putpath-")
    cluster = Cluster(os.path.join(base, "data")).start()
    tracers = {}
    try:
        pids = {name: a.proc.pid for name, a in cluster.actors.items()}
        client = _client(cluster, n, direct, os.path.join(base, "client.strace") if use_strace else None)
        assert client.stdout.readline().strip() == "ready"
        cpid = client.pid
        if use_strace:
            for name in ("writer", "fanout0"):
                tracers[name] = subprocess.Popen(["strace", "-f", "-c", "-p", str(pids[name]), "-o",
                                                  os.path.join(base, f"{name}.strace")],
                                                 stderr=subprocess.DEVNULL)
            time.sleep(1.0)                 # attached
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        before_client = _tree_cpu(cpid)
        client.stdin.write("go\n")
        client.stdin.flush()
        result = json.loads(client.stdout.readline())
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        after_client = _tree_cpu(cpid)
        client.wait(30)
        out = {"workload": "put_path", "direct": direct, "strace": use_strace, "puts": n,
               "puts_per_s": round(n / result["seconds"]), "p50_ms": round(result["p50_ms"], 3),
               "direct_puts": result["direct"],
               "cpu_us_per_put": {name: round((after[name] - before[name]) / n * 1e6, 1) for name in pids}}
        if after_client is not None and before_client is not None:
            out["cpu_us_per_put"]["client"] = round((after_client - before_client) / n * 1e6, 1)
        if use_strace:
            for t in tracers.values():
                t.send_signal(signal.SIGINT)
                t.wait(10)
            calls = {name: _strace_counts(os.path.join(base, f"{name}.strace")) for name in tracers}
            calls["client"] = _strace_counts(os.path.join(base, "client.strace"))
            out["syscalls_per_put"] = {name: {k: round(v / n, 2) for k, v in sorted(c.items(), key=lambda kv: -kv[1])
                                              if v / n >= 0.05} for name, c in calls.items()}
            w = calls["writer"]
            out["writer_flushes_per_put"] = round(sum(w.get(k, 0) for k in ("fsync", "fdatasync", "msync")) / n, 2)
            out["writer_pwrite64_per_put"] = round(w.get("pwrite64", 0) / n, 2)
        return out
    finally:
        for t in tracers.values():
            if t.poll() is None:
                t.kill()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _tree_cpu(pid: int) -> float | None:
    """CPU of pid, or of its only child when pid is strace (the client runs under it)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        kids = []
    return cpu_seconds(kids[0]) if kids else cpu_seconds(pid)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--puts", type=int, default=3000)
    ap.add_argument("--no-direct", action="store_true", help="write through the fan-out")
    ap.add_argument("--no-strace", action="store_true", help="skip the strace pass")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.puts, not args.no_direct, False)), flush=True)
    if not args.no_strace and shutil.which("strace"):
        print(json.dumps(run(args.puts, not args.no_direct, True)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
