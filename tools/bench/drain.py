"""The `drain` measurement (issue #12, item 7): 3 fan-outs, 3,000 watchers, one fan-out drained.

    .venv/bin/python -m zwatch.tools.bench.drain [--watchers 3000] [--clients 60] [--budget 250 0]

Starts a cluster (tools/cluster.py: real processes, loopback, a temp data dir), spreads the
watchers over `--clients` Client objects (each shuffles the endpoint list, so about a third land
on each fan-out), keeps a writer putting, then sends SIGTERM to fan-out 0 and reports, per
budget (ZWATCH_DRAIN_CREATES_PER_100MS; 0 = every client moves at once, the "before"):
- `move_s`: from the SIGTERM until the last of its clients is on another fan-out (client side),
  and `drained_took_s` (the fan-out's own fanout.drained) and its exit code;
- `max_creates_per_100ms`: the most watch creates one surviving fan-out received in one 100 ms
  bucket (fanout.stats `creates_max_100ms`, stats every second) after the SIGTERM;
- `lost` / `duplicated`: tools/checker.py over the store's history (must be 0 / 0).
One JSON line per budget on stdout.
"""
from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
import time

from zwatch.tools.checker import StreamRecord, WatchSpec
from zwatch.tools.cluster import Cluster
from zwatch.tools.load import PutAllAlong, check_store_history, read_stream, take_queued

GROUPS = 20


def run_once(watchers: int, clients: int, budget: int, drain_s: float, fanouts: int = 3) -> dict:
    data = tempfile.mkdtemp(prefix="zw-bench-drain-")
    cl = Cluster(data, fanouts=fanouts, env={"ZWATCH_DRAIN_S": str(drain_s),
                                             "ZWATCH_DRAIN_CREATES_PER_100MS": str(budget)}).start()
    try:
        admin = cl.client([cl.fanout_eps[-1]], timeout=30)
        start = admin.put("b/begin", "1").header.revision + 1
        per = [watchers // clients + (1 if i < watchers % clients else 0) for i in range(clients)]
        cs, streams = [], []
        for i in range(clients):
            c = cl.client(cl.fanout_eps, timeout=60, heartbeat=1.0, name=f"bench-drain-{i}",
                          shuffle=True)
            cs.append(c)
            for j in range(per[i]):
                g = (i + j) % GROUPS
                prefix = f"b/{g:02d}/"
                w = c.watch(prefix, prefix=True, start_revision=start)
                streams.append((StreamRecord(f"c{i}.w{j}", WatchSpec(prefix.encode(), f"b/{g:02d}0".encode(), start),
                                             []), w, g))
        victim_ep = cl.fanout_eps[0]
        on_victim = [c for c in cs if c.endpoint == victim_ep]
        moved_watches = sum(per[i] for i, c in enumerate(cs) if c.endpoint == victim_ep)
        stop = threading.Event()
        # Read the watch queues all along (3,000 watchers x ~200 events/s would pile up otherwise).
        def reader():
            while not stop.is_set():
                if not sum(take_queued(w, rec) for rec, w, _ in streams):
                    time.sleep(0.02)

        # Counted, reported: the measurement must not stop on a failed put.
        writer = PutAllAlong(admin, lambda n: f"b/{n % GROUPS:02d}/{n:07d}", 0.005)
        rt = threading.Thread(target=reader, daemon=True)
        writer.start()
        rt.start()
        time.sleep(2.0)
        victim = cl["fanout0"]
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGTERM)
        move_s = None
        while time.monotonic() - t0 < drain_s + 30:
            if all(c.endpoint not in (None, victim_ep) and c._connected.is_set() for c in on_victim):
                move_s = time.monotonic() - t0
                break
            time.sleep(0.005)
        code = victim.proc.wait(drain_s + 30)
        time.sleep(1.5)                      # one more stats line on the survivors
        stop.set()
        writer.stop()
        rt.join(60)
        finals = {g: admin.put(f"b/{g:02d}/end", "1").header.revision for g in range(GROUPS)}
        deadline = time.monotonic() + 30          # for all streams: a lost event must not hang the run
        for rec, w, g in streams:
            rec.final_revision = finals[g]
            read_stream(w, rec, finals[g], deadline)
        drained = victim.events("fanout.drained")
        draining = victim.events("fanout.draining")
        t_sig = draining[0]["timestamp"] if draining else 0
        peaks = {name: max([s.get("creates_max_100ms", 0) for s in cl[name].events("fanout.stats")
                            if s["timestamp"] >= t_sig] or [0])
                 for name in cl.actors if name.startswith("fanout") and name != "fanout0"}
        for c in cs:
            c.close()
        admin.close()
        cl.stop()
        res = check_store_history(data, [r for r, _, _ in streams], acked=writer.acked, first=start,
                                  final=max(finals.values()))
        lost = res.by_guarantee.get("Reliable", 0)            # events missing from a stream
        duplicated = res.by_guarantee.get("Unique", 0)        # events delivered twice
        return {"workload": "drain", "budget_creates_per_100ms": budget, "watchers": watchers, "clients": clients,
                "fanouts": fanouts, "drain_s": drain_s, "clients_moved": len(on_victim),
                "watches_moved": moved_watches,
                "delay_ms": draining[0].get("delay_ms") if draining else None,
                "move_s": None if move_s is None else round(move_s, 3),
                "drained_took_s": drained[0]["took_s"] if drained else None,
                "sessions_left": drained[0]["sessions_left"] if drained else None, "exit_code": code,
                "max_creates_per_100ms": peaks, "put_failures": len(writer.failures),
                "guarantees_ok": res.ok, "violations": res.summary() if not res.ok else "",
                "lost": lost, "duplicated": duplicated, "duplicates_dropped_by_client": sum(w.duplicates_dropped for _, w, _ in streams)}
    finally:
        cl.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zwatch.tools.bench.drain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--watchers", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=60)
    ap.add_argument("--fanouts", type=int, default=3)
    ap.add_argument("--drain-s", type=float, default=10.0)
    ap.add_argument("--budget", type=int, nargs="+", default=[250, 0],
                    help="ZWATCH_DRAIN_CREATES_PER_100MS values to run (0: no spreading, every client at once)")
    a = ap.parse_args(argv)
    ok = True
    for b in a.budget:
        r = run_once(a.watchers, a.clients, b, a.drain_s, a.fanouts)
        print(json.dumps(r), flush=True)
        ok = ok and r["guarantees_ok"] and r["exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
