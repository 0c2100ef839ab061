"""The operator's scenario of issue #12, end to end, on a real cluster: what `zwatch logs` and the metrics show.

    python -m zwatch.tools.ops_scenario --seconds 180 --out DIR [--rate 400] [--value-bytes 4096]

What runs, for --seconds:

* a writer, a syncer and three fan-outs (random loopback ports, LMDB in DIR/data) with
  auto-compaction on (revision mode, --retention revisions kept), a short stuck-session bound
  (--stuck-s), stats lines every --stats-s and Prometheus metrics on random ports;
* --putters clients putting --value-bytes values at --rate puts/s in all over --keys keys;
* healthy watchers: --watchers prefix watches spread over the three fan-outs (one client each);
* a stuck client: a raw session that watches everything from revision 1 and never acks;
* a slow client: a watcher whose application takes --slow-s per response.

Every actor's log lines are written to DIR/<actor>.log (JSON lines, as in production).  At the
end of the load, everything still running, it copies the logs so far to DIR/live/ and runs
`zwatch logs DIR/live/*.log` (DIR/summary.txt, DIR/summary.json, DIR/timeline.png); then it
scrapes each actor's /metrics into DIR/metrics-<actor>.txt, checks `zwatch endpoint health` with
the writer up and then SIGSTOPped (exit codes and seconds), stops the cluster and prints the
summary and a report (DIR/report.json).  The figures are for a human to read.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from zwatch import messages
from zwatch.tools.cluster import Cluster, free_port, raw_session


def _putter(client, stop: threading.Event, rate: float, keys: int, value_bytes: int, counts: dict):
    value = os.urandom(value_bytes // 2).hex().encode()[:value_bytes]
    period = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            client.put(f"load/{random.randrange(keys):06d}".encode(), value)
            counts["puts"] += 1
        except Exception as exc:  # keep going: the scenario shows errors in the logs
            counts["errors"] += 1
            counts["last_error"] = repr(exc)
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()


def _watcher(watch, stop: threading.Event, counts: dict, name: str, sleep_s: float = 0.0):
    while not stop.is_set():
        resp = watch.get(timeout=0.5)
        if resp is None:
            continue
        counts[name] += len(resp.events)
        if sleep_s:
            time.sleep(sleep_s)


def summarize(out: str, logs: list[str]):
    """`zwatch logs` over the live logs: summary.txt, summary.json, timeline.png in out."""
    zwatch = [sys.executable, "-m", "zwatch.cli", "logs"]
    summary = subprocess.run(zwatch + logs + ["-w", "json"], capture_output=True, text=True)
    open(os.path.join(out, "summary.json"), "w").write(summary.stdout)
    text = subprocess.run(zwatch + logs + ["--png", os.path.join(out, "timeline.png")], capture_output=True,
                          text=True)
    open(os.path.join(out, "summary.txt"), "w").write(text.stdout + text.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--out", required=True, help="directory for logs, metrics, summary and PNG (created)")
    ap.add_argument("--rate", type=float, default=400, help="puts per second (in all)")
    ap.add_argument("--putters", type=int, default=4, help="client threads sharing --rate (one put in flight each)")
    ap.add_argument("--value-bytes", type=int, default=4096)
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--watchers", type=int, default=30)
    ap.add_argument("--retention", type=int, default=20000, help="revisions kept by auto-compaction")
    ap.add_argument("--stuck-s", type=float, default=30)
    ap.add_argument("--slow-s", type=float, default=0.5)
    ap.add_argument("--stats-s", type=float, default=5)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    data_dir = os.path.join(a.out, "data")
    ports = {"writer": free_port(), "syncer": free_port()}
    env = {"ZWATCH_STATS_S": str(a.stats_s), "ZWATCH_AUTO_COMPACTION_MODE": "revision",
           "ZWATCH_AUTO_COMPACTION_RETENTION": str(a.retention), "ZWATCH_AUTO_COMPACTION_INTERVAL_S": "15", "ZWATCH_STUCK_SESSION_S": str(a.stuck_s),
           "ZWATCH_WRITER_METRICS_PORT": str(ports["writer"]), "ZWATCH_SYNCER_METRICS_PORT": str(ports["syncer"])}
    cluster = Cluster(data_dir, fanouts=3, env=env)
    for i in range(3):   # each fan-out its own metrics port
        name = f"fanout{i}"
        ports[name] = free_port()
        cluster.actors[name].env = dict(cluster.env, ZWATCH_FANOUT_METRICS_PORT=str(ports[name]))
    stop = threading.Event()
    counts = {"puts": 0, "errors": 0, "healthy_events": 0, "slow_events": 0}
    threads = []
    stuck = None
    t0 = time.monotonic()
    try:
        cluster.start()
        writer_client = cluster.client(cluster.fanout_eps)
        for i in range(a.watchers):
            c = cluster.client([cluster.fanout_eps[i % 3]])
            w = c.watch(b"load/", prefix=True)
            threads.append(threading.Thread(target=_watcher, args=(w, stop, counts, "healthy_events"), daemon=True))
        slow = cluster.client([cluster.fanout_eps[1]], name="slow-app")
        threads.append(threading.Thread(target=_watcher, args=(slow.watch(b"load/", prefix=True), stop, counts,
                                                               "slow_events", a.slow_s), daemon=True))
        stuck = raw_session(cluster.fanout_eps[2])     # never acks, never reads
        stuck.send(messages.encode_request("watch_create", 2, {"key": b"\x00", "range_end": b"\x00",
                                                                "start_revision": 1}))
        for i in range(a.putters):
            putter = writer_client if i == 0 else cluster.client(cluster.fanout_eps)
            threads.append(threading.Thread(target=_putter, args=(putter, stop, a.rate / a.putters, a.keys,
                                                                  a.value_bytes, counts), daemon=True))
        for t in threads:
            t.start()
        while time.monotonic() - t0 < a.seconds:
            time.sleep(1)
            stuck.send(messages.encode_request("ping", 3, {}))   # alive, but reads nothing
        # What an operator sees now, with everything running: the logs so far, summarized.
        live = os.path.join(a.out, "live")
        os.makedirs(live, exist_ok=True)
        for name, actor in cluster.actors.items():
            with open(os.path.join(live, f"{name}.log"), "w") as f:
                f.writelines(list(actor.raw))
        summarize(a.out, sorted(os.path.join(live, f) for f in os.listdir(live)))
        stop.set()
        for name, port in ports.items():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    open(os.path.join(a.out, f"metrics-{name}.txt"), "wb").write(r.read())
            except OSError as exc:
                print(f"metrics of {name}: {exc}", file=sys.stderr)
        zwatch = [sys.executable, "-m", "zwatch.cli"]
        eps = ",".join(cluster.fanout_eps)
        health = {}
        for label in ("writer_up", "writer_stopped"):
            if label == "writer_stopped":
                cluster["writer"].proc.send_signal(signal.SIGSTOP)
            t = time.monotonic()
            r = subprocess.run(zwatch + ["--endpoints", eps, "endpoint", "health"], capture_output=True, text=True,
                               env=cluster.env, timeout=60)
            health[label] = {"exit": r.returncode, "seconds": round(time.monotonic() - t, 2),
                             "out": (r.stdout + r.stderr).strip().splitlines()}
        cluster["writer"].proc.send_signal(signal.SIGCONT)
    finally:
        stop.set()
        if stuck is not None:
            stuck.close()
        cluster.stop()
        for name, actor in cluster.actors.items():
            with open(os.path.join(a.out, f"{name}.log"), "w") as f:
                f.writelines(actor.raw)
    report = {"seconds": round(time.monotonic() - t0, 1), "client_counts": counts, "health": health,
              "data_mdb_bytes": os.path.getsize(os.path.join(data_dir, "data.mdb"))}
    json.dump(report, open(os.path.join(a.out, "report.json"), "w"), indent=1)
    print(open(os.path.join(a.out, "summary.txt")).read())
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
