"""Initial state and resync (issue #16 items 1-2, SPEC.md section 7.7): what one state costs (zwatch only).

* ``initial_state``: `keys` keys of `value_bytes` under one prefix; then `watches` watches with
  ``initial_state=True`` on the prefix, one after the other, each read to its state_end.
  Figures: ms to state_end, kvs the syncer read per state (its ``state_kvs`` counter: the
  records read, one keyrev step and one history get each), state responses (pieces) and the
  largest one's events, syncer CPU per state and per kv, syncer and fan-out RSS after.
* ``resync_digest``: the same keys; a client 'holds' revision B, then `changed_pct` % of the
  keys are rewritten and the history compacted past B; a watch from B + 1 with
  on_compacted "resync", then one with "digest": bytes of values each sent (the digest sends
  only the changed kvs and names the rest) and the kvs each read (both read every key).

The watch client is a thread of this process; the server side is what is measured.
"""
from __future__ import annotations

import time

from zwatch.client import Client

from .procstat import snapshot

PREFIX = "/bench/state/"
DEFAULTS = {
    "initial_state": dict(keys=100_000, value_bytes=100, watches=3),
    "resync_digest": dict(keys=100_000, value_bytes=100, changed_pct=1),
}
QUICK = {
    "initial_state": dict(keys=2_000, watches=2),
    "resync_digest": dict(keys=2_000),
}
ONLY_ZWATCH = set(DEFAULTS)


def _skip(ctx, workload, p):
    return [{"workload": workload, "variant": "", "system": ctx.system.kind, "params": p, "ok": True,
             "skipped": "zwatch only (etcd has no initial state or resync)", "figures": {}}]


def _fill(c: Client, n: int, value: bytes, start: int = 0, step: int = 1) -> int:
    """Puts of keys start, start+step, ... < n, 128 per txn; -> the last revision."""
    from zwatch import Put
    rev = 0
    idx = list(range(start, n, step))
    for i in range(0, len(idx), 128):
        r = c.txn([], [Put(f"{PREFIX}{k:08d}", value) for k in idx[i:i + 128]], [])
        rev = r.header.revision
    return rev


def _read_state(w, timeout: float = 600.0) -> tuple[list, float]:
    t0 = time.monotonic()
    got = []
    while True:
        r = w.get(timeout=max(0.01, t0 + timeout - time.monotonic()))
        if r is None or r.canceled:
            raise RuntimeError(f"watch ended during its state: {r}")
        got.append(r)
        if r.state_complete:
            return got, time.monotonic() - t0


def _syncer(ctx, name: str) -> int:
    st = ctx.system.syncer_stats() or {}
    return int(st.get(name, 0))


def initial_state(ctx, p: dict) -> list[dict]:
    from .workloads import _record, _server
    if ctx.system.kind != "zwatch":
        return _skip(ctx, "initial_state", p)
    t_start = time.monotonic()
    c = Client(ctx.system.endpoints, timeout=30.0)
    out = []
    try:
        _fill(c, p["keys"], b"v" * p["value_bytes"])
        before = snapshot(ctx.system.server_pids())
        kvs0 = _syncer(ctx, "state_kvs")
        times, pieces, largest, ok = [], [], 0, True
        for _ in range(p["watches"]):
            w = c.watch(PREFIX, prefix=True, initial_state=True)
            got, secs = _read_state(w)
            w.cancel()
            times.append(secs)
            states = [r for r in got if r.initial_state]
            pieces.append(len(states))
            largest = max([largest] + [len(r.events) for r in states])
            ok = ok and sum(len(r.events) for r in states) == p["keys"]
        after = snapshot(ctx.system.server_pids())
        kvs = _syncer(ctx, "state_kvs") - kvs0
        server = _server(before, after)
        syncer_cpu = (server["cpu_s"] or {}).get("syncer")
        n = p["watches"]
        figures = {"keys": p["keys"], "ms_to_state_end_p50": round(sorted(times)[len(times) // 2] * 1e3, 1),
                   "ms_to_state_end_max": round(max(times) * 1e3, 1), "kvs_read_per_state": kvs / n,
                   "pieces_per_state": sum(pieces) / n, "largest_piece_kvs": largest,
                   "syncer_cpu_ms_per_state": round(syncer_cpu / n * 1e3, 1) if syncer_cpu is not None else None,
                   "syncer_cpu_us_per_kv": round(syncer_cpu / max(1, kvs) * 1e6, 2) if syncer_cpu is not None else None}
        out.append(_record(ctx, "initial_state", f"keys={p['keys']}", p, ok and kvs == n * p["keys"], figures,
                           server, {"procs": 1}, time.monotonic() - t_start))
    finally:
        c.close()
    return out


def resync_digest(ctx, p: dict) -> list[dict]:
    from .workloads import _record, _server
    if ctx.system.kind != "zwatch":
        return _skip(ctx, "resync_digest", p)
    t_start = time.monotonic()
    c = Client(ctx.system.endpoints, timeout=30.0)
    out = []
    try:
        n = p["keys"]
        base = _fill(c, n, b"a" * p["value_bytes"])
        step = max(1, round(100 / max(0.001, p["changed_pct"])))
        _fill(c, n, b"b" * p["value_bytes"], 0, step)
        top = c.put("/bench/other", "x").header.revision
        c.compact(top)
        for mode in ("resync", "digest"):
            before = snapshot(ctx.system.server_pids())
            kvs0 = _syncer(ctx, "state_kvs")
            w = c.watch(PREFIX, prefix=True, start_revision=base + 1, on_compacted=mode)
            got, secs = _read_state(w)
            w.cancel()
            after = snapshot(ctx.system.server_pids())
            sent = [e for r in got for e in r.events]
            same = sum(len(r.unchanged_keys) for r in got)
            figures = {"keys": n, "changed": len(range(0, n, step)), "ms_to_state_end": round(secs * 1e3, 1),
                       "kvs_sent": len(sent), "value_bytes_sent": sum(len(e.kv.value) for e in sent),
                       "unchanged_keys_named": same, "kvs_read": _syncer(ctx, "state_kvs") - kvs0}
            ok = got[0].reset and len(sent) + same == n
            out.append(_record(ctx, "resync_digest", mode, p, ok, figures, _server(before, after), {"procs": 1},
                               time.monotonic() - t_start))
    finally:
        c.close()
    return out
