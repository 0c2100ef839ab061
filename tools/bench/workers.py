"""What runs inside the bench's client processes (multiprocessing, spawn).

Every worker talks to the parent through two queues: ``results`` (shared, messages
``(kind, worker_index, payload)``) and its own ``cmd`` queue (``"go"`` / ``"stop"``), and
publishes a running count in a shared integer for the terminal counter.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from array import array

from . import drivers
from .procstat import self_cpu, self_max_rss_kib

_monotonic_ns = time.monotonic_ns
STAMP_DIGITS = 19      # a value starts with the sender's time.monotonic_ns(), zero-padded


def make_key(prefix: str, i: int, key_len: int) -> bytes:
    k = prefix + str(i).zfill(max(1, key_len - len(prefix)))
    return k.encode()


def make_value(size: int, stamp: bool, filler: bytes) -> bytes:
    if stamp:
        head = str(_monotonic_ns()).zfill(STAMP_DIGITS).encode()
        return head + filler[: max(0, size - len(head))]
    return filler[:size]


class Recorder:
    """Application code of one connection: counts, order checks, latencies per watch."""
    __slots__ = ("expected", "latency", "multi", "state", "lat", "events", "done", "done_ns", "first_ns",
                 "bad", "canceled")

    def __init__(self, expected_per_watch: int, latency: bool, multi_ids: bool = True):
        self.expected = expected_per_watch
        self.latency = latency
        self.multi = multi_ids      # responses may list several watch ids (zwatch); etcd's never do
        self.state: dict[int, list] = {}     # watch_id -> [events, last revision]
        self.lat = array("q")
        self.events = 0
        self.done = 0
        self.done_ns = 0
        self.first_ns = 0
        self.bad = 0
        self.canceled = 0

    def on(self, resp, now: int):
        evs = resp.events
        if not evs:
            if resp.canceled:
                self.canceled += 1
            return
        # A zwatch response on a shared queue is for every watch in resp.watch_ids at once (the
        # same events, received at the same instant): order is checked per watch, and each
        # event's latency is recorded once for the group (groups are equal-sized per connection).
        ids = (resp.watch_ids or (resp.watch_id,)) if self.multi else (resp.watch_id,)
        revs = [ev.kv.mod_revision for ev in evs]
        bad = sum(1 for a, b in zip(revs, revs[1:]) if b <= a)
        if self.latency:
            lat = self.lat.append
            for ev in evs:
                lat(now - int(ev.kv.value[:STAMP_DIGITS]))
        n = len(evs)
        first, final = revs[0], revs[-1]
        state = self.state
        for wid in ids:
            st = state.get(wid)
            if st is None:
                st = state[wid] = [0, 0]
            if first <= st[1]:
                bad += 1
            before = st[0]
            st[0] = before + n
            st[1] = final
            if before < self.expected <= before + n:
                self.done += 1
                self.done_ns = now
        if bad:
            self.bad += bad
        if not self.first_ns:
            self.first_ns = now
        self.events += n * len(ids)


def _progress(value, read, stop: threading.Event):
    def run():
        while not stop.wait(0.2):
            value.value = read()
        value.value = read()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _profile_threads(out_dir: str, tag: str):
    """ZWATCH_BENCH_PROFILE_CLIENTS=DIR: every thread of this client process (the client library's
    I/O thread included) runs under its own cProfile; DIR/<tag>-<pid>-<thread>.prof at exit."""
    import cProfile
    os.makedirs(out_dir, exist_ok=True)
    orig_run = threading.Thread.run

    def run(self):
        prof = cProfile.Profile()
        prof.enable()
        try:
            orig_run(self)
        finally:
            prof.disable()
            prof.dump_stats(os.path.join(out_dir, f"{tag}-{os.getpid()}-{self.name}-{threading.get_ident()}.prof"))
    threading.Thread.run = run
    prof = cProfile.Profile()
    prof.enable()
    return prof


def main(kind: str, index: int, task: dict, system: dict, results, cmd, progress):
    prof_dir = os.environ.get("ZWATCH_BENCH_PROFILE_CLIENTS")
    prof = _profile_threads(prof_dir, f"{kind}{index}") if prof_dir else None
    try:
        _main(kind, index, task, system, results, cmd, progress)
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(os.path.join(prof_dir, f"{kind}{index}-{os.getpid()}-main.prof"))


def _main(kind: str, index: int, task: dict, system: dict, results, cmd, progress):
    try:
        fn = {"putter": putter, "watcher": watcher}[kind]
        fn(index, task, system, results, cmd, progress)
    except BaseException as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"))
        raise SystemExit(1)


# ---------------------------------------------------------------- putter
def putter(index, task, system, results, cmd, progress):
    """Puts task["n"] keys (one request in flight) at task["rate"]/s (0: as fast as possible)."""
    conn = drivers.connect(system, task["endpoint"])
    n, rate = task["n"], task.get("rate", 0)
    prefix, key_len, key_count = task["key_prefix"], task.get("key_len", 16), task.get("key_count", 0)
    stride, offset = task.get("stride", 1), task.get("offset", 0)
    size, stamp = task.get("value_size", 100), task.get("stamp", False)
    filler = (os.urandom(size // 2 + 1).hex().encode() * 2)[:size]
    # Keys precomputed: the loop then costs what the client costs.
    idx = [offset + k * stride for k in range(n)]
    keys = [make_key(prefix, (i % key_count) if key_count else i, key_len) for i in idx]
    conn.put(b"/warmup/%d" % index, b"w")   # outside every watched prefix
    done = [0]
    stop = threading.Event()
    _progress(progress, lambda: done[0], stop)
    results.put(("ready", index, {}))
    if cmd.get() != "go":
        conn.close()
        return
    lat = array("q")
    cpu0 = self_cpu()
    revs = []
    t_first = _monotonic_ns()
    period = 1e9 / rate if rate else 0
    errors = 0
    err_text = ""
    if hasattr(conn, "put_loop"):        # the client's own loop (etcd's grpc.aio: in its event loop)
        state = {"k": 0, "errors": 0, "err": ""}

        def on_put(rev, ns):
            k = state["k"]
            state["k"] = k + 1
            if isinstance(rev, Exception):
                state["errors"] += 1
                state["err"] = state["err"] or f"{type(rev).__name__}: {rev}"[:300]
                return
            lat.append(ns)
            if k == 0 or k == n - 1:
                revs.append(rev)
            done[0] += 1
        conn.put_loop(keys, lambda: make_value(size, stamp, filler), int(period), on_put)
        errors, err_text = state["errors"], state["err"]
    else:
        put = conn.put
        for k in range(n):
            if period:
                due = t_first + int(k * period)
                wait = due - _monotonic_ns()
                if wait > 0:
                    time.sleep(wait / 1e9)
            value = make_value(size, stamp, filler)
            t0 = _monotonic_ns()
            try:
                rev = put(keys[k], value)
            except Exception as exc:
                errors += 1
                err_text = err_text or f"{type(exc).__name__}: {exc}"[:300]
                continue
            lat.append(_monotonic_ns() - t0)
            if k == 0 or k == n - 1:
                revs.append(rev)
            done[0] += 1
    t_last = _monotonic_ns()
    cpu = self_cpu() - cpu0
    stop.set()
    results.put(("done", index, {"puts": done[0], "errors": errors, "error": err_text, "lat_ns": lat.tobytes(),
                                 "t_first": t_first, "t_last": t_last, "first_rev": revs[0] if revs else 0,
                                 "last_rev": revs[-1] if revs else 0, "cpu_s": cpu, "cpu_total_s": self_cpu(),
                                 "max_rss_kib": self_max_rss_kib(), "pid": os.getpid()}))
    cmd.get()          # stay alive (and connected) until the parent has measured
    conn.close()


# ---------------------------------------------------------------- watcher
def watcher(index, task, system, results, cmd, progress):
    """Opens watches on several connections; records what the application receives.

    task: conns = [{"endpoint", "specs": [[(watch_id, key, end, start_rev), ...] per phase]}],
          expected (events per watch), latency (bool), create_on_go (bool), timeout_s.
    Phases (memory workload): after creating each phase's watches, report "phase" and wait
    for the next "go".
    """
    expected, latency = task["expected"], task.get("latency", False)
    conns, recorders = [], []
    for c in task["conns"]:
        conn = drivers.connect(system, c["endpoint"])
        rec = Recorder(expected, latency, getattr(conn, "multi_ids", True))
        conn.start_reader(rec.on)
        conns.append(conn)
        recorders.append(rec)
    stop = threading.Event()
    _progress(progress, lambda: sum(r.events for r in recorders), stop)
    n_watches = sum(len(s) for c in task["conns"] for s in c["specs"])
    n_phases = max(len(c["specs"]) for c in task["conns"]) if task["conns"] else 0

    def create(phase):
        errs = []

        def one(conn, specs):
            try:
                conn.create_watches(specs)
            except Exception as exc:
                errs.append(f"{type(exc).__name__}: {exc}"[:300])
        threads = [threading.Thread(target=one, args=(conn, c["specs"][phase]))
                   for conn, c in zip(conns, task["conns"]) if phase < len(c["specs"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errs:
            raise RuntimeError("watch create failed: " + "; ".join(errs[:3]))

    cpu0 = self_cpu()
    t_go = 0
    if task.get("create_on_go"):
        results.put(("ready", index, {"watches": 0}))
        if cmd.get() != "go":
            return _close(conns)
        t_go = _monotonic_ns()
        cpu0 = self_cpu()
        create(0)
        t_created = _monotonic_ns()
    else:
        for phase in range(n_phases):
            create(phase)
            if phase < n_phases - 1:
                results.put(("phase", index, {"phase": phase, "cpu_total_s": self_cpu()}))
                if cmd.get() != "go":
                    return _close(conns)
        t_created = _monotonic_ns()
        results.put(("ready", index, {"watches": n_watches, "cpu_total_s": self_cpu()}))
        if cmd.get() != "go":
            return _close(conns)
        t_go = _monotonic_ns()
        cpu0 = self_cpu()
    deadline = time.monotonic() + task.get("timeout_s", 60)
    want = n_watches if expected > 0 else 0
    while time.monotonic() < deadline and sum(r.done for r in recorders) < want:
        time.sleep(0.005)
    if task.get("linger_s"):
        time.sleep(task["linger_s"])     # anything beyond the expected count would be a bug
    cpu = self_cpu() - cpu0
    stop.set()
    lat = array("q")
    for r in recorders:
        lat.extend(r.lat)
    per_watch = [st[0] for r in recorders for st in r.state.values()]
    results.put(("done", index, {
        "watches": n_watches, "watches_with_events": len(per_watch),
        "delivered": sum(per_watch), "complete": sum(r.done for r in recorders),
        "over": sum(1 for x in per_watch if x > expected) if expected else 0,
        "order_violations": sum(r.bad for r in recorders), "canceled": sum(r.canceled for r in recorders),
        "first_ns": min((r.first_ns for r in recorders if r.first_ns), default=0),
        "done_ns": max((r.done_ns for r in recorders), default=0), "t_go": t_go, "t_created": t_created,
        "lat_ns": lat.tobytes(), "cpu_s": cpu, "cpu_total_s": self_cpu(), "max_rss_kib": self_max_rss_kib(),
        "errors": [e for c in conns for e in getattr(c, "errors", [])][:5], "pid": os.getpid()}))
    cmd.get()
    _close(conns)


def _close(conns):
    for c in conns:
        try:
            c.close()
        except Exception:
            pass
