"""What keys-only and value-predicate watches cost (issue #16 item 4; zwatch only, no cluster).

``filters_cost`` drives the fan-out's I/O-free core (actors/fanout/core.py) in this process, the
way tests/unit/test_fanout_core.py does, so that the figures are the core's own and not the
noise of sockets shared with other processes:

* memory per watcher: tracemalloc's growth while `watchers` watchers are created on distinct
  keys (each alone on its spec: the common case) in `sessions` sessions, plain and filtered
  (``value_prefix``), divided by the number of watchers;
* CPU per event: `events` publishes of one PUT to a key watched by `watchers` watchers in
  `sessions` sessions, plain / keys_only / value_prefix (half the values match) / both, with the
  plans warm; process CPU time per event, and the predicate's evaluations per event (1 for
  any number of watchers: the filter is shared and judged once per event);
* the same for publishes of `batch` events (the general path, ``_deliver``);
* the syncer's side: one ``Batch.scan`` (actors/syncer/batch.py) of `events` PUT records for
  `sessions` groups (one per session, the syncer's grouping) on a prefix: CPU per record read,
  and the predicate's evaluations per record (1 whatever the groups).

Figures go to the bench's JSON lines like every workload; docs/design.md ("Issue #16: keys-only
and predicate watches") quotes them.
"""
from __future__ import annotations

import gc
import time
import tracemalloc

DEFAULTS = {"filters_cost": dict(watchers=[1_000, 10_000], sessions=100, events=2_000, batch=10)}
QUICK = {"filters_cost": dict(watchers=[200, 1_000], sessions=20, events=300, batch=10)}
ONLY_ZWATCH = set(DEFAULTS)
OWN_CLUSTER = set(DEFAULTS)      # in-process: no actors

KINDS = {"plain": {}, "keys_only": {"keys_only": True}, "value_prefix": {"value_prefix": b"a"},
         "keys_only+value_prefix": {"keys_only": True, "value_prefix": b"a"}}


def _core():
    from zwatch.actors.fanout.core import FanoutCore
    core = FanoutCore(ring_revisions=100)
    core.on_publish(1, 1, [], 0)
    return core


def _sessions(n):
    from zwatch.actors.fanout.model import Session
    return [Session(b"s%05d" % i, "s%d" % i) for i in range(n)]


def memory_per_watcher(n: int, sessions: int, opts: dict) -> float:
    """Bytes per watcher on distinct keys (tracemalloc), the core and sessions made first."""
    core = _core()
    ss = _sessions(sessions)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        s = ss[i % sessions]
        core.watch_create(s, i, dict({"key": b"/bench/f/%07d" % i, "watch_id": i + 1}, **opts))
    core.take_output()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def cpu_per_event(n: int, sessions: int, events: int, batch: int, opts: dict) -> dict:
    """Core CPU per event for publishes to one key watched by n watchers in `sessions` sessions."""
    core = _core()
    ss = _sessions(sessions)
    for i in range(n):
        core.watch_create(ss[i % sessions], i, dict({"key": b"/bench/f/key", "watch_id": i + 1}, **opts))
    core.take_output()
    vf = ss[0].watches[1].vfilter
    rev = 2

    def put(r, j):
        value = b"a-%d" % r if j % 2 == 0 else b"b-%d" % r
        return [0, [b"/bench/f/key", 2, r, r - 1, value, 0], [b"/bench/f/key", 2, r - 1, r - 2, b"a", 0]]

    out = {}
    for label, per in (("one", 1), ("batch", batch)):
        evals0 = vf.evaluations if vf is not None else 0
        n_pub = max(1, events // per)
        cpu0 = time.process_time()
        for k in range(n_pub):
            core.on_publish(rev - 1, rev, [[rev, [put(rev, k * per + j) for j in range(per)]]], 0)
            rev += 1
            if k % 50 == 49:
                core.take_output()
        cpu = time.process_time() - cpu0
        core.take_output()
        n_ev = n_pub * per
        out[f"cpu_us_per_event_{label}"] = round(cpu / n_ev * 1e6, 2)
        out[f"cpu_ns_per_event_per_watcher_{label}"] = round(cpu / n_ev / n * 1e9, 2)
        if vf is not None and vf.has_predicate:
            out[f"predicate_evaluations_per_event_{label}"] = round((vf.evaluations - evals0) / n_ev, 3)
    return out


def syncer_cpu_per_record(groups: int, records: int, opts: dict) -> dict:
    """CPU of one Batch.scan over `records` PUT records (10 keys under a prefix, half the values
    matching a value_prefix of b"a") for `groups` groups, one per session."""
    from zwatch.actors.syncer.batch import Batch, SyncWatcher
    from zwatch.valuefilter import from_opts
    ws = [SyncWatcher(b"f", i, 1, b"/bench/s/", b"/bench/s0", 1, 0, False, i, False, b"s%05d" % i, dict(opts))
          for i in range(groups)]
    batch = Batch(ws, max_watchers=groups, chunk_revisions=records, chunk_bytes=1 << 30)
    recs = [(r, 0, 0, [b"/bench/s/%d" % (r % 10), 1, r, r, (b"a" if r % 2 else b"b") * 100, 0], 120)
            for r in range(1, records + 1)]
    vf = from_opts(opts)
    evals0 = vf.evaluations if vf is not None else 0
    cpu0 = time.process_time()
    batch.scan(recs, lambda key, main, sub: None, records, records)
    cpu = time.process_time() - cpu0
    out = {"syncer_cpu_us_per_record": round(cpu / records * 1e6, 2)}
    if vf is not None and vf.has_predicate:
        out["syncer_predicate_evaluations_per_record"] = round((vf.evaluations - evals0) / records, 3)
    return out


def filters_cost(ctx, p: dict) -> list[dict]:
    out = []
    for n in p["watchers"]:
        for kind, opts in KINDS.items():
            t0 = time.monotonic()
            figures = {"watchers": n, "sessions": p["sessions"],
                       "bytes_per_watcher_distinct_keys": round(memory_per_watcher(n, p["sessions"], opts), 1)}
            figures.update(cpu_per_event(n, p["sessions"], p["events"], p["batch"], opts))
            figures.update(syncer_cpu_per_record(p["sessions"], p["events"], opts))
            out.append({"workload": "filters_cost", "variant": f"{kind} N={n}", "system": ctx.system.kind,
                        "params": dict(p, watchers=n, kind=kind), "ok": True, "figures": figures,
                        "wall_s": round(time.monotonic() - t0, 3)})
    return out
