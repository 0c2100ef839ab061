"""The workloads (parent side): start client processes, time the phases, build the records.

Every workload returns a list of records (one per variant), each a dict that becomes one
JSON line: workload, variant, system, params, ok, figures, server (CPU seconds per process
over the measured window, RSS), clients (per-process CPU seconds over the window, max RSS).
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import time
from array import array

from zwatch.messages import prefix_end

from . import workers
from .procstat import Counter, delta_cpu, percentiles, snapshot

_ns = time.monotonic_ns

# Defaults = the parameters; --quick = tiny ones for smoke tests.
DEFAULTS = {
    "put_seq": dict(puts=5000, key_len=16, value_size=100),
    "put_conc": dict(puts=20000, clients=8, key_len=16, value_size=100),
    "watch_latency": dict(watchers=[100, 1000, 10000], conns=10, procs=2, puts=500, rate=200.0, value_size=100),
    "watch_latency_distinct": dict(watchers=[1000, 10000], conns=10, procs=2, puts=500, rate=200.0, value_size=100),
    "fanout": dict(watchers=1000, conns=10, procs=2, puts=10000, writers=8, value_size=100),
    "catchup": dict(revisions=50000, keys=1000, watchers=[1, 100, 1000], conns=10, procs=2, writers=8,
                    value_size=100),
    "memory": dict(watchers=[10000, 50000, 100000], conns=10, procs=2, same_key=False),
}
QUICK = {
    "put_seq": dict(puts=200),
    "put_conc": dict(puts=800, clients=4),
    "watch_latency": dict(watchers=[10, 40], conns=4, procs=2, puts=40, rate=200.0),
    "watch_latency_distinct": dict(watchers=[40], conns=4, procs=2, puts=40, rate=200.0),
    "fanout": dict(watchers=20, conns=4, procs=2, puts=400, writers=4),
    "catchup": dict(revisions=2000, keys=100, watchers=[1, 10], conns=4, procs=2, writers=4),
    "memory": dict(watchers=[200, 1000], conns=4, procs=2),
}
ORDER = list(DEFAULTS)


class BenchError(RuntimeError):
    pass


class Pool:
    """Client processes of one workload phase (spawned: no inherited sockets or threads)."""

    def __init__(self, system, label: str):
        self.ctx = mp.get_context("spawn")
        self.system = system
        self.spec = system.client_spec()
        self.results = self.ctx.Queue()
        self.label = label
        self.procs, self.cmds, self.progress, self.kinds = [], [], [], []
        self.msgs: dict[int, dict] = {}

    def add(self, kind: str, task: dict) -> int:
        i = len(self.procs)
        cmd = self.ctx.Queue()
        prog = self.ctx.Value("q", 0, lock=False)
        p = self.ctx.Process(target=workers.main, args=(kind, i, task, self.spec, self.results, cmd, prog),
                             name=f"bench-{kind}-{i}", daemon=True)
        p.start()
        self.procs.append(p)
        self.cmds.append(cmd)
        self.progress.append(prog)
        self.kinds.append(kind)
        return i

    def idx(self, kind=None) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if kind is None or k == kind]

    def wait(self, what: str, idxs: list[int], timeout: float, counter: Counter | None = None) -> dict[int, dict]:
        """Wait for message `what` from each worker in idxs; an "error" from any fails the phase."""
        got = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(idxs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.label}: {len(got)}/{len(idxs)} workers reported {what!r} "
                                 f"within {timeout:.0f}s")
            try:
                kind, i, payload = self.results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [i for i in idxs if i not in got and not self.procs[i].is_alive()]
                if dead:
                    # It may have reported an error just before it exited.
                    try:
                        kind, i, payload = self.results.get(timeout=1.0)
                    except queue.Empty:
                        raise BenchError(f"{self.label}: worker(s) {dead} died") from None
                else:
                    if not self.system.alive():
                        raise BenchError(f"{self.label}: a server process died")
                    continue
            if kind == "error":
                raise BenchError(f"{self.label}: worker {i} ({self.kinds[i]}) failed: {payload}")
            if kind == what and i in idxs:
                got[i] = payload
            else:
                self.msgs.setdefault(i, {})[kind] = payload
        return got

    def send(self, msg: str, idxs: list[int]):
        for i in idxs:
            self.cmds[i].put(msg)

    def count(self, idxs) -> int:
        return sum(self.progress[i].value for i in idxs)

    def close(self):
        for i, p in enumerate(self.procs):
            if p.is_alive():
                try:
                    self.cmds[i].put("stop")
                except Exception:
                    pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _spread(n: int, parts: int) -> list[int]:
    parts = max(1, min(parts, n)) if n else 1
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _lat_ms(payloads) -> tuple[dict, int]:
    lat = array("q")
    for p in payloads:
        lat.frombytes(p["lat_ns"])
    pct = percentiles(lat)
    return {f"{k}_ms": (round(v / 1e6, 3) if v is not None else None) for k, v in pct.items()}, len(lat)


def _clients(payloads: list[dict]) -> dict:
    cpu = [round(p["cpu_s"], 3) for p in payloads]
    return {"procs": len(payloads), "cpu_s": cpu, "cpu_s_total": round(sum(cpu), 3),
            "max_rss_kib": max((p["max_rss_kib"] for p in payloads), default=None)}


def _server(before: dict, after: dict) -> dict:
    cpu = delta_cpu(before, after)
    known = [v for v in cpu.values() if v is not None]
    return {"cpu_s": cpu, "cpu_s_total": round(sum(known), 3) if known else None,
            "rss_kib": {n: a.get("rss_kib") for n, a in after.items()},
            "rss_kib_total": sum(a.get("rss_kib") or 0 for a in after.values()) or None}


def _record(ctx, workload, variant, params, ok, figures, server, clients, wall_s, **extra) -> dict:
    rec = {"workload": workload, "variant": variant, "system": ctx.system.kind, "params": params, "ok": ok,
           "figures": figures, "server": server, "clients": clients, "wall_s": round(wall_s, 3)}
    rec.update(extra)
    return rec


def _watch_conns(endpoints, n_watches: int, conns: int, procs: int, spec_for) -> list[list[dict]]:
    """Distribute n_watches over `conns` connections in `procs` processes (round-robin on
    fan-out endpoints); spec_for(conn_index, k) -> (watch_id, key, end, start)."""
    conns = max(1, min(conns, n_watches)) if n_watches else 1
    procs = max(1, min(procs, conns))
    per_conn = _spread(n_watches, conns)
    out = [[] for _ in range(procs)]
    for c in range(conns):
        specs = [spec_for(c, k) for k in range(per_conn[c])]
        out[c % procs].append({"endpoint": endpoints[c % len(endpoints)], "specs": [specs]})
    return out


class Ctx:
    def __init__(self, system, quick: bool, progress: bool | None):
        self.system = system
        self.quick = quick
        self.progress = progress

    def counter(self, label, total, read):
        return Counter(f"{self.system.kind} {label}", total, read, enabled=self.progress)


# ---------------------------------------------------------------- put_seq / put_conc
def _puts(ctx: Ctx, workload: str, p: dict, clients: int) -> list[dict]:
    sysm = ctx.system
    eps = sysm.endpoints
    n = p["puts"]
    shares = _spread(n, clients)
    with Pool(sysm, workload) as pool:
        for c, share in enumerate(shares):
            prefix = "/bench/s/" if clients == 1 else f"/bench/c{c}/"
            pool.add("putter", {"endpoint": eps[c % len(eps)], "n": share, "key_prefix": prefix,
                                "key_len": p["key_len"], "value_size": p["value_size"]})
        idx = pool.idx()
        pool.wait("ready", idx, 60)
        before = snapshot(sysm.server_pids())
        t0 = time.monotonic()
        with ctx.counter(workload, n, lambda: pool.count(idx)):
            pool.send("go", idx)
            done = pool.wait("done", idx, 120 + n / 100)
        wall = time.monotonic() - t0
        after = snapshot(sysm.server_pids())
    res = list(done.values())
    puts = sum(r["puts"] for r in res)
    errors = sum(r["errors"] for r in res)
    span = (max(r["t_last"] for r in res) - min(r["t_first"] for r in res)) / 1e9
    lat, _ = _lat_ms(res)
    figures = {"puts": puts, "errors": errors, "seconds": round(span, 3),
               "puts_per_s": round(puts / span, 1) if span > 0 else None, **lat}
    server = _server(before, after)
    if server["cpu_s_total"] is not None and puts:
        figures["server_cpu_us_per_put"] = round(server["cpu_s_total"] / puts * 1e6, 2)
    if puts:
        figures["client_cpu_us_per_put"] = round(sum(r["cpu_s"] for r in res) / puts * 1e6, 2)
    err = next((r["error"] for r in res if r["error"]), "")
    return [_record(ctx, workload, "", p, puts == n and errors == 0, figures, server, _clients(res), wall,
                    **({"error": err} if err else {}))]


def put_seq(ctx: Ctx, p: dict) -> list[dict]:
    return _puts(ctx, "put_seq", p, 1)


def put_conc(ctx: Ctx, p: dict) -> list[dict]:
    return _puts(ctx, "put_conc", p, p["clients"])


# ---------------------------------------------------------------- watch_latency
def watch_latency(ctx: Ctx, p: dict) -> list[dict]:
    out = []
    for i, w in enumerate(p["watchers"]):
        out.append(_watch_latency_one(ctx, p, w, i))
    return out


def watch_latency_distinct(ctx: Ctx, p: dict) -> list[dict]:
    """watch_latency with a DIFFERENT spec per watcher that still matches every put: watcher i
    of connection c watches the range [K, K + 0xff + c,i as 8 bytes) around the one key K the
    putter writes.  Nothing can be shared by spec (etcd and zwatch index each range alone);
    what can be shared is the events they all matched."""
    out = []
    for i, w in enumerate(p["watchers"]):
        out.append(_watch_latency_one(ctx, p, w, 100 + i, distinct=True))
    return out


def _watch_latency_one(ctx: Ctx, p: dict, n_watchers: int, run: int, distinct: bool = False) -> dict:
    sysm = ctx.system
    eps = sysm.endpoints
    kprefix = f"/bench/wl{run}/k"
    key = workers.make_key(kprefix, 0, 16)
    puts, rate = p["puts"], p["rate"]
    params = dict(p, watchers=n_watchers)
    workload = "watch_latency_distinct" if distinct else "watch_latency"
    if distinct:
        spec_for = lambda c, k: (k + 1, key, key + b"\xff" + c.to_bytes(4, "big") + k.to_bytes(4, "big"), 0)  # noqa: E731
    else:
        spec_for = lambda c, k: (k + 1, key, None, 0)  # noqa: E731
    groups = _watch_conns(eps, n_watchers, p["conns"], p["procs"], spec_for)
    duration = puts / rate if rate else puts / 1000
    # Ceilings, not expectations: etcd with 10,000 distinct watchers slows its putter to ~5 puts/s
    # (500 puts: ~100 s), and that must end as figures, not as a timeout.
    timeout = duration + 60 + n_watchers * puts / 50_000
    t0 = time.monotonic()
    with Pool(sysm, f"{workload} W={n_watchers}") as pool:
        widx = [pool.add("watcher", {"conns": g, "expected": puts, "latency": True, "timeout_s": timeout,
                                     "linger_s": 0.2}) for g in groups]
        pidx = pool.add("putter", {"endpoint": eps[0], "n": puts, "rate": rate, "key_prefix": kprefix,
                                   "key_count": 1, "key_len": 16, "value_size": p["value_size"],
                                   "stamp": True})
        pool.wait("ready", widx + [pidx], 120 + n_watchers / 200)
        before = snapshot(sysm.server_pids())
        expected = n_watchers * puts
        with ctx.counter(f"{workload} W={n_watchers}", expected, lambda: pool.count(widx)):
            pool.send("go", widx + [pidx])
            putres = pool.wait("done", [pidx], timeout + 60)[pidx]
            res = list(pool.wait("done", widx, timeout + 30).values())
        after = snapshot(sysm.server_pids())
    wall = time.monotonic() - t0
    delivered = sum(r["delivered"] for r in res)
    violations = sum(r["order_violations"] for r in res)
    lat, samples = _lat_ms(res)
    span = (putres["t_last"] - putres["t_first"]) / 1e9
    figures = {"watchers": n_watchers, "delivered": delivered, "expected": expected,
               "order_violations": violations, "complete_watchers": sum(r["complete"] for r in res),
               "put_errors": putres["errors"], "puts_per_s": round(putres["puts"] / span, 1) if span > 0 else None,
               **lat}
    server = _server(before, after)
    if delivered:       # CPU per event delivered to a watcher: both sides of the wire
        if server["cpu_s_total"] is not None:
            figures["server_cpu_us_per_event"] = round(server["cpu_s_total"] / delivered * 1e6, 3)
        figures["client_cpu_us_per_event"] = round(sum(r["cpu_s"] for r in res) / delivered * 1e6, 3)
    ok = delivered == expected and violations == 0 and putres["errors"] == 0 and putres["puts"] == puts
    errs = [e for r in res for e in r["errors"]]
    return _record(ctx, workload, f"W={n_watchers}", params, ok, figures, server,
                   _clients(res + [putres]), wall, **({"errors": errs[:5]} if errs else {}))


# ---------------------------------------------------------------- fanout
def fanout(ctx: Ctx, p: dict) -> list[dict]:
    sysm = ctx.system
    eps = sysm.endpoints
    prefix = b"/bench/f/"
    end = prefix_end(prefix)
    n_w, puts, writers = p["watchers"], p["puts"], p["writers"]
    groups = _watch_conns(eps, n_w, p["conns"], p["procs"], lambda c, k: (k + 1, prefix, end, 0))
    expected = n_w * puts
    timeout = 60 + expected / 100_000
    t0 = time.monotonic()
    with Pool(sysm, "fanout") as pool:
        widx = [pool.add("watcher", {"conns": g, "expected": puts, "timeout_s": timeout, "linger_s": 0.2})
                for g in groups]
        pidx = [pool.add("putter", {"endpoint": eps[j % len(eps)], "n": share, "key_prefix": f"/bench/f/w{j}/",
                                    "key_len": 16, "value_size": p["value_size"]})
                for j, share in enumerate(_spread(puts, writers))]
        pool.wait("ready", widx + pidx, 120 + n_w / 200)
        before = snapshot(sysm.server_pids())
        with ctx.counter("fanout deliveries", expected, lambda: pool.count(widx)):
            pool.send("go", widx + pidx)
            putres = list(pool.wait("done", pidx, 300).values())
            res = list(pool.wait("done", widx, timeout + 30).values())
        after = snapshot(sysm.server_pids())
    wall = time.monotonic() - t0
    delivered = sum(r["delivered"] for r in res)
    violations = sum(r["order_violations"] for r in res)
    t_first = min(r["t_first"] for r in putres)
    t_puts_done = max(r["t_last"] for r in putres)
    t_last_delivery = max(r["done_ns"] or 0 for r in res)
    span = (t_last_delivery - t_first) / 1e9 if t_last_delivery > t_first else None
    server = _server(before, after)
    figures = {"watchers": n_w, "delivered": delivered, "expected": expected, "order_violations": violations,
               "seconds": round(span, 3) if span else None,
               "deliveries_per_s": round(delivered / span) if span else None,
               "puts_per_s": round(sum(r["puts"] for r in putres) / ((t_puts_done - t_first) / 1e9), 1),
               "put_errors": sum(r["errors"] for r in putres)}
    if server["cpu_s_total"] is not None and delivered:
        figures["server_cpu_us_per_delivery"] = round(server["cpu_s_total"] / delivered * 1e6, 4)
    clients = _clients(res + putres)
    if delivered:
        figures["client_cpu_us_per_delivery"] = round(sum(r["cpu_s"] for r in res) / delivered * 1e6, 4)
    ok = delivered == expected and violations == 0 and figures["put_errors"] == 0
    errs = [e for r in res for e in r["errors"]]
    return [_record(ctx, "fanout", "", p, ok, figures, server, clients, wall, **({"errors": errs[:5]} if errs else {}))]


# ---------------------------------------------------------------- catchup
def catchup(ctx: Ctx, p: dict) -> list[dict]:
    sysm = ctx.system
    eps = sysm.endpoints
    R, K, writers = p["revisions"], p["keys"], p["writers"]
    digits = len(str(K))
    kprefix = "/bench/u/k"
    key_len = len(kprefix) + digits
    wprefix = (kprefix + "00").encode()
    wend = prefix_end(wprefix)
    # Writer j puts revisions j, j+writers, ... on key index (i % K).
    per_watch = sum(1 for i in range(R) if workers.make_key(kprefix, i % K, key_len).startswith(wprefix))
    t0 = time.monotonic()
    with Pool(sysm, "catchup preload") as pool:
        idx = [pool.add("putter", {"endpoint": eps[j % len(eps)], "n": share, "key_prefix": kprefix,
                                   "key_len": key_len, "key_count": K, "stride": writers, "offset": j,
                                   "value_size": p["value_size"]})
               for j, share in enumerate(_spread(R, writers))]
        pool.wait("ready", idx, 60)
        with ctx.counter("catchup preload", R, lambda: pool.count(idx)):
            pool.send("go", idx)
            pre = list(pool.wait("done", idx, 120 + R / 200).values())
    preload_s = time.monotonic() - t0
    if sum(r["errors"] for r in pre):
        raise BenchError(f"catchup preload: {sum(r['errors'] for r in pre)} put errors: "
                         + next(r["error"] for r in pre if r["error"]))
    start_rev = min(r["first_rev"] for r in pre)
    last_rev = max(r["last_rev"] for r in pre)
    out = []
    for n_w in p["watchers"]:
        params = dict(p, watchers=n_w)
        groups = _watch_conns(eps, n_w, p["conns"], p["procs"], lambda c, k: (k + 1, wprefix, wend, start_rev))
        expected = n_w * per_watch
        timeout = 120 + expected / 50_000
        t1 = time.monotonic()
        with Pool(sysm, f"catchup N={n_w}") as pool:
            widx = [pool.add("watcher", {"conns": g, "expected": per_watch, "create_on_go": True,
                                         "timeout_s": timeout, "linger_s": 0.2}) for g in groups]
            pool.wait("ready", widx, 120)
            stats0 = sysm.syncer_stats()
            before = snapshot(sysm.server_pids())
            with ctx.counter(f"catchup N={n_w}", expected, lambda: pool.count(widx)):
                t_go = _ns()
                pool.send("go", widx)
                res = list(pool.wait("done", widx, timeout + 30).values())
            after = snapshot(sysm.server_pids())
            stats1 = sysm.syncer_stats()
        wall = time.monotonic() - t1
        delivered = sum(r["delivered"] for r in res)
        violations = sum(r["order_violations"] for r in res)
        t_done = max(r["done_ns"] for r in res)
        figures = {"watchers": n_w, "events_per_watcher": per_watch, "delivered": delivered,
                   "expected": expected, "order_violations": violations,
                   "seconds": round((t_done - t_go) / 1e9, 3) if t_done else None,
                   "create_seconds": round((max(r["t_created"] for r in res) - t_go) / 1e9, 3),
                   "history_revisions": last_rev - start_rev + 1}
        if stats0 is not None and stats1 is not None:
            for k in ("records_scanned", "batches", "events_sent", "handoffs"):
                if k in stats1:
                    figures[f"syncer_{k}"] = stats1[k] - stats0.get(k, 0)
        server = _server(before, after)
        if delivered:       # CPU per event delivered to a watcher, both sides of the wire
            if server["cpu_s_total"] is not None:
                figures["server_cpu_us_per_event"] = round(server["cpu_s_total"] / delivered * 1e6, 3)
            figures["client_cpu_us_per_event"] = round(sum(r["cpu_s"] for r in res) / delivered * 1e6, 3)
        ok = delivered == expected and violations == 0
        errs = [e for r in res for e in r["errors"]]
        out.append(_record(ctx, "catchup", f"N={n_w}", params, ok, figures, server, _clients(res), wall,
                           preload_s=round(preload_s, 3), **({"errors": errs[:5]} if errs else {})))
    return out


# ---------------------------------------------------------------- memory
def memory(ctx: Ctx, p: dict) -> list[dict]:
    """RSS growth of all server processes per watcher, watchers on distinct keys (or one key)."""
    sysm = ctx.system
    eps = sysm.endpoints
    levels = sorted(p["watchers"])
    conns = max(1, min(p["conns"], levels[0]))
    procs = max(1, min(p["procs"], conns))
    same = p.get("same_key", False)
    # Phase 0 creates nothing (baseline with every connection open), phase k tops up to levels[k-1].
    per_conn_levels = [_spread(n, conns) for n in levels]
    groups = [[] for _ in range(procs)]
    for c in range(conns):
        phases, have = [[]], 0
        for lv in per_conn_levels:
            specs = []
            for k in range(have, lv[c]):
                key = b"/bench/m/same" if same else b"/bench/m/%03d/%07d" % (c, k)
                specs.append((k + 1, key, None, 0))
            phases.append(specs)
            have = lv[c]
        groups[c % procs].append({"endpoint": eps[c % len(eps)], "specs": phases})
    t0 = time.monotonic()
    out = []
    with Pool(sysm, "memory") as pool:
        widx = [pool.add("watcher", {"conns": g, "expected": 0, "timeout_s": 1}) for g in groups]
        ph = pool.wait("phase", widx, 120)
        client_cpu = sum(m.get("cpu_total_s", 0) for m in ph.values())
        time.sleep(1.0)
        base = snapshot(sysm.server_pids())
        base_total = sum(v["rss_kib"] or 0 for v in base.values())
        for k, n in enumerate(levels):
            t1 = time.monotonic()
            lvl_before = snapshot(sysm.server_pids())
            pool.send("go", widx)
            last = k == len(levels) - 1
            ph = pool.wait("ready" if last else "phase", widx, 300 + n / 100)
            lvl_after = snapshot(sysm.server_pids())
            client_now = sum(m.get("cpu_total_s", 0) for m in ph.values())
            added = n - (levels[k - 1] if k else 0)
            time.sleep(1.0)
            snap = snapshot(sysm.server_pids())
            total = sum(v["rss_kib"] or 0 for v in snap.values())
            growth = {name: (snap[name]["rss_kib"] or 0) - (base.get(name, {}).get("rss_kib") or 0) for name in snap}
            figures = {"watchers": n, "kib_per_watcher": round((total - base_total) / n, 3),
                       "rss_growth_kib": total - base_total, "rss_growth_kib_by_process": growth,
                       "rss_kib_baseline": base_total, "rss_kib": total,
                       "create_seconds": round(time.monotonic() - t1 - 1.0, 3)}
            # CPU per watch created at this level (the watchers added since the previous level)
            lvl_cpu = _server(lvl_before, lvl_after)["cpu_s_total"]
            if added > 0:
                if lvl_cpu is not None:
                    figures["server_cpu_us_per_watcher"] = round(lvl_cpu / added * 1e6, 2)
                figures["client_cpu_us_per_watcher"] = round((client_now - client_cpu) / added * 1e6, 2)
            client_cpu = client_now
            server = _server(base, snap)
            out.append(_record(ctx, "memory", f"N={n}", dict(p, watchers=n, same_key=same), bool(base_total),
                               figures, server, {"procs": len(widx)}, time.monotonic() - t0))
        pool.send("go", widx)
        res = list(pool.wait("done", widx, 60).values())
    clients = _clients(res)
    for r in out:
        r["clients"] = clients
    if sum(r["watches"] for r in res) != levels[-1]:
        for r in out:
            r["ok"] = False
    return out


RUNNERS = {"put_seq": put_seq, "put_conc": put_conc, "watch_latency": watch_latency,
           "watch_latency_distinct": watch_latency_distinct, "fanout": fanout, "catchup": catchup, "memory": memory}

# The lease workloads live in lease_workloads.py (zwatch only; see its docstring).
from . import lease_workloads  # noqa: E402  (it imports _record/_server from here lazily)

DEFAULTS.update(lease_workloads.DEFAULTS)
QUICK.update(lease_workloads.QUICK)
ENV = dict(lease_workloads.ENV)    # workload -> environment its cluster needs
ORDER += list(lease_workloads.DEFAULTS)
RUNNERS.update(lease_keepalive=lease_workloads.lease_keepalive, lease_expiry=lease_workloads.lease_expiry)
ONLY_ZWATCH = set(lease_workloads.DEFAULTS)      # etcd gets a "skipped" record, not a server

# The big-store rows (bigstore.py: zwatch only, each launching its own actors on a cached store).
from . import bigstore  # noqa: E402

DEFAULTS.update(bigstore.DEFAULTS)
QUICK.update(bigstore.QUICK)
ORDER += list(bigstore.DEFAULTS)
RUNNERS.update(startup=bigstore.startup, history_single_key=bigstore.history_single_key)
ONLY_ZWATCH |= bigstore.ONLY_ZWATCH
OWN_CLUSTER = set(bigstore.OWN_CLUSTER)          # no cluster started for them by the bench

# Initial state and resync (kinds_state.py: zwatch only, issue #16 items 1-2).
from . import kinds_state  # noqa: E402

DEFAULTS.update(kinds_state.DEFAULTS)
QUICK.update(kinds_state.QUICK)
ORDER += list(kinds_state.DEFAULTS)
RUNNERS.update(initial_state=kinds_state.initial_state, resync_digest=kinds_state.resync_digest)
ONLY_ZWATCH |= kinds_state.ONLY_ZWATCH

# What keys-only and value-predicate watches cost (kinds_filters.py: zwatch only, in-process core).
from . import kinds_filters  # noqa: E402

DEFAULTS.update(kinds_filters.DEFAULTS)
QUICK.update(kinds_filters.QUICK)
ORDER += list(kinds_filters.DEFAULTS)
RUNNERS.update(filters_cost=kinds_filters.filters_cost)
ONLY_ZWATCH |= kinds_filters.ONLY_ZWATCH
OWN_CLUSTER |= kinds_filters.OWN_CLUSTER
IN_PROCESS = set(kinds_filters.DEFAULTS)         # measured inside the bench process: no server figures

# What verified streams cost per event (kinds_verify.py: zwatch only, in-process core and client).
from . import kinds_verify  # noqa: E402

DEFAULTS.update(kinds_verify.DEFAULTS)
QUICK.update(kinds_verify.QUICK)
ORDER += list(kinds_verify.DEFAULTS)
RUNNERS.update(verify_cost=kinds_verify.verify_cost_workload)
ONLY_ZWATCH |= kinds_verify.ONLY_ZWATCH
OWN_CLUSTER |= kinds_verify.OWN_CLUSTER
IN_PROCESS |= set(kinds_verify.DEFAULTS)
