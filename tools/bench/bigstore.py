"""The zwatch-only rows of issue #15 on a big store (etcd has no equivalent run here):

* ``startup``: launch writer, syncer and a fan-out at once (as the Procfile does) on a store of
  R revisions and time, from the launch, the first served request (a client's range read) and
  its first created watch; the actors' own start marks (their ``*.start`` log lines, the
  fan-out joining the publish stream) in seconds from the launch.
* ``history_single_key``: on a running cluster over that store, a watch of ONE key from
  revision 1: time from the watch call until it has every event of that key (its version: the
  store never deletes), the syncer's records read for it (its ``stats`` op, before and after),
  and the syncer's memory right after, RssAnon and RssFile apart from /proc/PID/status (LMDB's
  map counts as file pages: mapped, reclaimable), plus VmHWM (its peak since launch).

The store is built once by ``tools/startup.build`` (one put per revision over 10,000 keys,
group-committed 10,000 per transaction) and cached under ``~/.cache/zwatch-bench/store-<R>``
(``--store-dir DIR`` to keep it elsewhere); later runs reuse it.  Nothing here writes to
it (no put: the first request is a read, the start-up watch is of a key nobody writes), so each
repetition sees the same store; an flock keeps two bench runs from building or serving it at once.
"""
from __future__ import annotations

import fcntl
import os
import time

from zwatch.tools import startup as _startup
from zwatch.tools.cluster import Cluster

from .procstat import self_cpu, snapshot

DEFAULTS = {
    "startup": dict(revisions=1_000_000),
    "history_single_key": dict(revisions=1_000_000, key="key/000042", rss_bound_mib=100),
}
QUICK = {"startup": dict(revisions=20_000), "history_single_key": dict(revisions=20_000)}
ONLY_ZWATCH = set(DEFAULTS)
OWN_CLUSTER = set(DEFAULTS)      # these launch their own actors on the cached store


STORE_DIR = None         # --store-dir: where the stores are cached (default: the bench's cache dir)


def store_dir(revisions: int) -> str:
    from .etcd_stubs import cache_root
    return os.path.join(STORE_DIR or cache_root(), f"store-{revisions}")


class _Store:
    """The cached store of `revisions` revisions, built if missing, held under an exclusive flock."""

    def __init__(self, revisions: int):
        self.revisions = revisions
        self.dir = store_dir(revisions)
        self.data = os.path.join(self.dir, "data")
        self.build_s = None

    def __enter__(self):
        os.makedirs(self.dir, exist_ok=True)
        self._lock = open(os.path.join(self.dir, "lock"), "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        done = os.path.join(self.dir, "built")
        if not os.path.exists(done):
            self.build_s = round(_startup.build(self.data, self.revisions), 2)
            with open(done, "w") as f:
                f.write(f"{self.revisions}\n")
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()


def _status_kib(pid: int) -> dict:
    m = _startup._status_kib(pid, ("VmRSS", "RssAnon", "RssFile", "VmHWM"))
    return {k.lower() + "_kib": v for k, v in m.items()}


def _env(ctx) -> dict:
    return dict(getattr(ctx.system, "env", {}) or {})


def _record(ctx, workload, p, ok, figures, server, clients, wall_s, **extra):
    from .workloads import _record as rec
    return rec(ctx, workload, f"R={p['revisions']}", p, ok, figures, server, clients, wall_s, **extra)


def startup(ctx, p: dict) -> list[dict]:
    t_wall = time.monotonic()
    with _Store(p["revisions"]) as st:
        cluster = Cluster(st.data, env=_env(ctx))
        cpu0 = self_cpu()
        t0 = time.perf_counter()
        try:
            for actor in cluster.actors.values():
                actor.start()
            pids = {name: a.proc.pid for name, a in cluster.actors.items()}
            client = cluster.client(timeout=30)
            kv = client.get("key/000001")
            read_s = time.perf_counter() - t0
            w = client.watch("/bench/startup/never-written")
            watch_s = time.perf_counter() - t0
            # CPU of each actor from its launch to the first served request (and the watch)
            server = _server_since_launch(snapshot(pids))
            client_cpu = self_cpu() - cpu0
            w.cancel()
            current = kv.header.revision
            marks = {}
            for name, actor in cluster.actors.items():
                base = name.rstrip("0123456789")
                for event in (f"{base}.start",) + (("fanout.joined_stream",) if base == "fanout" else ()):
                    found = actor.events(event)
                    if found:
                        marks[f"{name}_{event.split('.', 1)[1]}_s"] = round(_startup._since_launch(found[0], t0), 3)
        finally:
            cluster.stop()
    figures = {"revisions": current - 1, "start_to_first_read_s": round(read_s, 4),
               "start_to_first_watch_created_s": round(watch_s, 4), **marks,
               "server_cpu_s_to_first_read": server["cpu_s_total"],
               **({"store_build_s": st.build_s} if st.build_s is not None else {})}
    ok = bool(kv.kvs) and current - 1 >= p["revisions"]
    clients = {"procs": 1, "in_process": True, "cpu_s": [round(client_cpu, 3)], "cpu_s_total": round(client_cpu, 3)}
    return [_record(ctx, "startup", p, ok, figures, server, clients, time.monotonic() - t_wall)]


def _server_since_launch(after: dict) -> dict:
    from .workloads import _server
    return _server({n: {"cpu_s": 0.0} for n in after}, after)


def history_single_key(ctx, p: dict) -> list[dict]:
    from .systems import syncer_stats_at
    from .workloads import _server
    t_wall = time.monotonic()
    key = p["key"]
    with _Store(p["revisions"]) as st:
        cluster = Cluster(st.data, env=_env(ctx)).start()
        try:
            client = cluster.client(timeout=60)
            got = client.get(key)
            expected = got.kvs[0].version if got.kvs else 0
            pids = {name: a.proc.pid for name, a in cluster.actors.items()}
            syncer_pid = pids["syncer"]
            mem0 = _status_kib(syncer_pid)
            stats0 = syncer_stats_at(cluster.syncer_ep) or {}
            before = snapshot(pids)
            cpu0 = self_cpu()
            t0 = time.perf_counter()
            w = client.watch(key, start_revision=1)
            n, last, bad = 0, 0, 0
            while n < expected:
                resp = w.get(timeout=60)
                for ev in resp.events:
                    if ev.kv.mod_revision <= last:
                        bad += 1
                    last = ev.kv.mod_revision
                n += len(resp.events)
            took = time.perf_counter() - t0
            client_cpu = self_cpu() - cpu0
            after = snapshot(pids)
            mem1 = _status_kib(syncer_pid)
            stats1 = syncer_stats_at(cluster.syncer_ep) or {}
            w.cancel()
            time.sleep(0.5)                 # and once the batch is over
            mem2 = _status_kib(syncer_pid)
        finally:
            cluster.stop()
    figures = {"revisions": got.header.revision - 1, "delivered": n, "expected": expected, "order_violations": bad,
               "seconds": round(took, 4)}
    for k in ("records_scanned", "key_index_reads", "batches", "events_sent"):
        if k in stats1:
            figures[f"syncer_{k}"] = stats1[k] - stats0.get(k, 0)
    for k, v in mem1.items():
        figures[f"syncer_{k}"] = v
    figures["syncer_rssanon_kib_before"] = mem0.get("rssanon_kib")
    figures["syncer_rssfile_kib_before"] = mem0.get("rssfile_kib")
    figures["syncer_rssanon_kib_settled"] = mem2.get("rssanon_kib")
    figures["syncer_rssfile_kib_settled"] = mem2.get("rssfile_kib")
    figures["syncer_rss_mib"] = round(mem1.get("vmrss_kib", 0) / 1024, 1)
    server = _server(before, after)
    if n:
        if server["cpu_s_total"] is not None:
            figures["server_cpu_us_per_event"] = round(server["cpu_s_total"] / n * 1e6, 2)
        figures["client_cpu_us_per_event"] = round(client_cpu / n * 1e6, 2)
    ok = n == expected > 0 and bad == 0
    clients = {"procs": 1, "in_process": True, "cpu_s": [round(client_cpu, 3)], "cpu_s_total": round(client_cpu, 3)}
    return [_record(ctx, "history_single_key", p, ok, figures, server, clients, time.monotonic() - t_wall)]
