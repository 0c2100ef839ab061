"""The lease workloads (zwatch only): what keep-alives cost the writer, and how late expiry is.

* ``lease_keepalive``: `sessions` Client objects each hold `leases_per_session` leases and send
  one ``lease_keepalive`` with all their IDs every `interval_s` (TTL/3 by default, as a client
  does).  Figures: writer CPU per keep-alive (one lease renewed) and per request, from
  /proc/<writer>/stat over `seconds`, minus the writer's idle CPU rate measured just before
  (before any lease is granted); fsyncs and
  pwrite64s per keep-alive from ``strace -f -c`` attached to the writer over a separate
  `strace_s` window (strace slows the traced process, so CPU is not measured under it); the
  writer.stats figures logged during the run (summed over the 10 s stats intervals that ended
  in it: the first may still hold the end of the grants).
* ``lease_expiry``: `leases` leases with TTL `ttl` (the cluster runs with ZWATCH_LEASE_MIN_TTL=1),
  one key attached to each, a watcher on their prefix on a fan-out.  The leases are kept alive,
  then the last keep-alives go out in `groups` groups `group_gap_s` apart and stop.  For each
  lease: (reply time of its last keep-alive + TTL) -> its DELETE received by the watcher.  The
  writer's deadline is (its clock when it answered + TTL), a little before the reply arrives
  here, so the figure can only err short by one round trip (negative values count as 0; an
  expiry before the keep-alive's send time + TTL would be a real early expiry: ``early``).

Clients run as threads of this process (keep-alives are few and small; the server side is what
is measured).
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time

from zwatch.client import Client

from .procstat import cpu_seconds, percentiles, snapshot

LEASE_PREFIX = "/bench/lease/"

DEFAULTS = {
    "lease_keepalive": dict(sessions=100, leases_per_session=100, ttl=10, interval_s=10 / 3, seconds=60.0,
                            idle_s=15.0, strace_s=15.0),
    "lease_expiry": dict(leases=200, ttl=2, groups=10, group_gap_s=0.1),
}
QUICK = {
    "lease_keepalive": dict(sessions=4, leases_per_session=10, interval_s=0.5, seconds=2.0, idle_s=1.0,
                            strace_s=1.0),
    "lease_expiry": dict(leases=20, groups=4),
}
# Environment of the cluster a workload needs (merged into --zwatch-env for that workload).
ENV = {"lease_expiry": {"ZWATCH_LEASE_MIN_TTL": "1"}}


def _skip(ctx, workload, p):
    return [{"workload": workload, "variant": "", "system": ctx.system.kind, "params": p, "ok": True,
             "skipped": "zwatch only (the etcd comparison has no lease client)", "figures": {}}]


def _parallel(fn, items, threads: int):
    """fn(item) for every item on `threads` threads; the first exception is re-raised."""
    items = list(items)
    errors, lock, pos = [], threading.Lock(), [0]

    def run():
        while True:
            with lock:
                if pos[0] >= len(items) or errors:
                    return
                item = items[pos[0]]
                pos[0] += 1
            try:
                fn(item)
            except Exception as exc:       # reported by the caller
                errors.append(exc)
                return
    ts = [threading.Thread(target=run, daemon=True) for _ in range(max(1, min(threads, len(items))))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def _writer_stats(ctx) -> list[dict]:
    c = getattr(ctx.system, "cluster", None)
    return c.actors["writer"].events("writer.stats") if c is not None else []


def _strace(pid: int, seconds: float) -> dict:
    """Syscall counts of the writer (all threads) over `seconds`, or {"error": why}."""
    exe = shutil.which("strace")
    if exe is None:
        return {"error": "strace not installed (apt-get install strace)"}
    proc = subprocess.Popen([exe, "-f", "-c", "-e", "trace=fdatasync,fsync,msync,pwrite64", "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    calls = {name: 0 for name in ("fdatasync", "fsync", "msync", "pwrite64")}
    seen = False
    for line in err.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) in calls:
            calls[m.group(2)] = int(m.group(1))
            seen = True
    if not seen and "attached" not in err:        # never attached (ptrace not permitted, ...)
        return {"error": err.strip()[-300:]}
    return calls


# ---------------------------------------------------------------- lease_keepalive
def lease_keepalive(ctx, p: dict) -> list[dict]:
    from .workloads import _record, _server
    if ctx.system.kind != "zwatch":
        return _skip(ctx, "lease_keepalive", p)
    sysm = ctx.system
    eps = sysm.endpoints
    t_start = time.monotonic()
    n_sessions, per = p["sessions"], p["leases_per_session"]
    clients = [Client(eps[i % len(eps):] + eps[:i % len(eps)], timeout=10.0) for i in range(n_sessions)]
    ids: list[list[int]] = [[] for _ in range(n_sessions)]
    try:
        writer_pid = sysm.server_pids()["writer"]
        # idle baseline: the writer before any lease exists
        cpu0, t0 = cpu_seconds(writer_pid), time.monotonic()
        time.sleep(p["idle_s"])
        idle_rate = (cpu_seconds(writer_pid) - cpu0) / (time.monotonic() - t0)
        stop = threading.Event()
        counts = {"requests": 0, "renewed": 0, "lost": 0, "errors": 0}
        lock = threading.Lock()
        window = {"on": False}
        granted = threading.Semaphore(0)

        def keepalive(c, lst):
            try:
                got = c.lease_keepalive_once(lst)
                lost = sum(1 for x in lst if got.get(x, 0) <= 0)
                err = 0
            except Exception:
                got, lost, err = {}, 0, 1
            with lock:
                counts["lost"] += lost
                counts["errors"] += err
                if window["on"]:
                    counts["requests"] += 1
                    counts["renewed"] += len(got)

        def session(i):
            # Grants are writes (a commit each, group-committed across the sessions); the
            # session keeps what it has granted alive while it grants the rest.
            c, lst = clients[i], ids[i]
            nxt = time.monotonic() + p["interval_s"]
            try:
                while len(lst) < per and not stop.is_set():
                    lst.append(c.lease_grant(p["ttl"]).id)
                    if time.monotonic() >= nxt:
                        keepalive(c, lst)
                        nxt += p["interval_s"]
            except Exception:
                with lock:
                    counts["errors"] += 1
            granted.release()
            nxt = time.monotonic() + p["interval_s"] * i / n_sessions           # spread the sessions
            while not stop.is_set():
                if stop.wait(max(0.0, nxt - time.monotonic())):
                    return
                nxt += p["interval_s"]
                keepalive(c, lst)

        threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(n_sessions)]
        for t in threads:
            t.start()
        for _ in threads:
            granted.acquire(timeout=600)
        time.sleep(p["interval_s"])                           # every session in its rhythm
        stats_before = len(_writer_stats(ctx))
        before = snapshot(sysm.server_pids())
        with lock:
            window["on"] = True
        t0 = time.monotonic()
        time.sleep(p["seconds"])
        with lock:
            window["on"] = False
            requests, renewed = counts["requests"], counts["renewed"]
        run_s = time.monotonic() - t0
        after = snapshot(sysm.server_pids())
        stats = _writer_stats(ctx)[stats_before:]
        # fsyncs / writes per keep-alive, under strace, in a window of their own
        with lock:
            counts["requests"], counts["renewed"] = 0, 0
            window["on"] = True
        calls = _strace(writer_pid, p["strace_s"])
        with lock:
            window["on"] = False
            st_renewed, st_requests = counts["renewed"], counts["requests"]
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        for c in clients:
            c.close()
    server = _server(before, after)
    wcpu = server["cpu_s"].get("writer")
    net = None if wcpu is None else max(0.0, wcpu - idle_rate * run_s)
    figures = {
        "leases": n_sessions * per, "seconds": round(run_s, 3), "keepalive_requests": requests,
        "keepalives": renewed, "keepalives_per_s": round(renewed / run_s, 1) if run_s else None,
        "writer_cpu_s": wcpu, "writer_idle_cpu_s": round(idle_rate * run_s, 3),
        "writer_cpu_us_per_keepalive": round(net / renewed * 1e6, 3) if net is not None and renewed else None,
        "writer_cpu_us_per_request": round(net / requests * 1e6, 1) if net is not None and requests else None,
        "fanout_cpu_us_per_keepalive": round(sum(v for k, v in server["cpu_s"].items()
                                                 if k.startswith("fanout") and v) / renewed * 1e6, 3)
        if renewed else None,
        "lost_leases": counts["lost"], "errors": counts["errors"],
        "strace_keepalives": st_renewed, "strace_requests": st_requests,
    }
    if "error" in calls:
        figures["strace_error"] = calls["error"]
    else:
        syncs = calls["fdatasync"] + calls["fsync"] + calls["msync"]
        figures.update({f"strace_{k}": v for k, v in calls.items()})
        figures["fsyncs_per_keepalive"] = round(syncs / st_renewed, 6) if st_renewed else None
        figures["pwrite64_per_keepalive"] = round(calls["pwrite64"] / st_renewed, 6) if st_renewed else None
    if stats:
        figures["writer_stats"] = {k: sum(s.get(k, 0) for s in stats)
                                   for k in ("commits", "requests", "revisions", "keepalives", "leases_expired")}
        figures["writer_stats"]["leases"] = stats[-1].get("leases")
    ok = renewed > 0 and counts["lost"] == 0 and counts["errors"] == 0
    return [_record(ctx, "lease_keepalive", f"leases={n_sessions * per}", p, ok, figures, server,
                    {"procs": 1, "threads": n_sessions}, time.monotonic() - t_start)]


# ---------------------------------------------------------------- lease_expiry
def lease_expiry(ctx, p: dict) -> list[dict]:
    from .workloads import _record, _server
    if ctx.system.kind != "zwatch":
        return _skip(ctx, "lease_expiry", p)
    sysm = ctx.system
    eps = sysm.endpoints
    n, ttl = p["leases"], p["ttl"]
    t_start = time.monotonic()
    owner = Client(eps, timeout=10.0)
    watcher = Client(eps[-1:] + eps[:-1], timeout=10.0)
    deleted_at: dict[bytes, float] = {}
    try:
        handle = watcher.watch(LEASE_PREFIX, prefix=True)
        done = threading.Event()

        def watch_loop():
            while not done.is_set():
                try:
                    r = handle.get(timeout=0.2)
                except Exception:
                    continue
                if r is None:
                    return
                now = time.monotonic()
                for ev in r.events:
                    if ev.type in ("DELETE", 1):
                        deleted_at.setdefault(bytes(ev.kv.key), now)
        wt = threading.Thread(target=watch_loop, daemon=True)
        wt.start()
        granted: list[int] = []
        keep_stop = threading.Event()

        def keeper():                      # keeps what is granted alive while the rest is set up
            while not keep_stop.wait(ttl / 4):
                lst = list(granted)
                if lst:
                    owner.lease_keepalive_once(lst)
        kt = threading.Thread(target=keeper, daemon=True)
        kt.start()
        keys = {}

        def setup(i):
            lid = owner.lease_grant(ttl).id
            granted.append(lid)
            key = f"{LEASE_PREFIX}{i:06d}"
            owner.put(key, "v", lease=lid)
            keys[lid] = key.encode()
        _parallel(setup, range(n), threads=16)
        keep_stop.set()
        kt.join(10)
        before = snapshot(sysm.server_pids())
        # the last keep-alives, in groups: each lease's deadline = its reply time + TTL
        deadline: dict[bytes, float] = {}
        not_before: dict[bytes, float] = {}           # send time + TTL: the writer's deadline is later
        rtts = []
        groups = [granted[g::p["groups"]] for g in range(p["groups"])]
        lost = 0
        for g, lst in enumerate(groups):
            if g:
                time.sleep(p["group_gap_s"])
            t_send = time.monotonic()
            got = owner.lease_keepalive_once(lst)
            t_reply = time.monotonic()
            rtts.append(t_reply - t_send)
            for lid in lst:
                if got.get(lid, 0) <= 0:
                    lost += 1
                deadline[keys[lid]] = t_reply + got.get(lid, ttl)
                not_before[keys[lid]] = t_send + got.get(lid, ttl)
        wait_until = time.monotonic() + ttl + 15.0
        while time.monotonic() < wait_until and len(deleted_at) < n:
            time.sleep(0.05)
        done.set()
        wt.join(5)
        after = snapshot(sysm.server_pids())
    finally:
        owner.close()
        watcher.close()
    lat_ns = [int((deleted_at[k] - d) * 1e9) for k, d in deadline.items() if k in deleted_at]
    early = sum(1 for k, t in deleted_at.items() if k in not_before and t < not_before[k])
    pct = percentiles(sorted(max(0, x) for x in lat_ns))
    figures = {"leases": n, "ttl_s": ttl, "deletes_received": len(lat_ns), "early": early, "lost_before_stop": lost,
               "keepalive_rtt_ms_max": round(max(rtts) * 1e3, 3) if rtts else None,
               "min_ms": round(min(lat_ns) / 1e6, 3) if lat_ns else None,
               **{f"{k}_ms": (round(v / 1e6, 3) if v is not None else None) for k, v in pct.items()}}
    stats = _writer_stats(ctx)
    if stats:
        figures["writer_leases_expired"] = sum(s.get("leases_expired", 0) for s in stats)
    ok = len(lat_ns) == n and early == 0 and lost == 0
    return [_record(ctx, "lease_expiry", f"N={n}", p, ok, figures, _server(before, after),
                    {"procs": 1}, time.monotonic() - t_start)]
