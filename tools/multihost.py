"""The multi-host test: zwatch's actors on five hosts (network namespaces, tools/netlab.py) joined
by links that get delayed, lossy and cut while load runs, then every guarantee checked.

    python -m zwatch.tools.multihost [--short] [--seconds-per-step N] [--json] [--seed N]

Hosts: A runs the writer and the syncer (LMDB in a temp dir: the file system is shared, only
the network is namespaced), B and C one fan-out each, D and E a client worker each
(`python -m zwatch.tools.multihost client ...`, started with `ip netns exec`).  A worker runs
writers (tools/chaos.py's mix: puts, deletes, prefix deletes, txns on a small key space, unique
values) and watchers (keys, prefixes, ranges, from-key; from now and from the past; progress
requested every half second), its clients given BOTH fan-outs, and prints one JSON line per
acknowledged write, failed write, watch response, endpoint change, failover and goaway.

Steps, load running throughout (each: apply the fault, hold it, heal, wait for recovery):
  baseline; delay 20 ms +- 5 ms on A-B; loss 5 % on A-B; partition A-B for longer than the
  upstream timeout (B's clients must be sent to C); new clients arrive on B, then D is cut off
  from B (D's clients move to C); D cut off from B and C (D's clients wait, then resume); B's
  fan-out SIGKILLed while A-B is partitioned, healed, restarted; A isolated and its writer and
  syncer SIGKILLed and started again on A (the same address and data dir), healed.
Then quiesce (writes stopped, progress requested until every watch reached the final revision
or a deadline), stop, read the store's history from the LMDB file and run tools/checker.py:
order, duplicates, gaps, atomicity, bookmarks, every acknowledged write present.

Per step the table gives: time to detect (the first sign after the fault: a fan-out's
fanout.upstream_lost, a client's failover/goaway, a write failing), time to recover (after the
heal: writes acknowledged again on every worker and every watch at the revision the store had at
the heal), write latency p50 while faulted, failovers/goaways, packets dropped by the router,
and watches at the head after recovery.  Exit status: 0 clean, 1 violations, 2 harness failure.
Everything is torn down on any exit (Ctrl-C too): processes, namespaces, temp dir.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from zwatch.tools import chaos, checker
from zwatch.tools.cluster import Actor
from zwatch.tools.load import check_store_history
from zwatch.tools.netlab import Lab, die_with_parent

HOSTS = ("a", "b", "c", "d", "e")
WRITER_PORT, PUB_PORT, SYNCER_PORT, FANOUT_PORT = 2480, 2481, 2482, 2379
EXIT_OK, EXIT_VIOLATIONS, EXIT_HARNESS = 0, 1, 2


# ====================================================================== watch responses as JSON lines
def _s(b: bytes) -> str:
    return bytes(b).decode("latin-1")


def _b(s: str) -> bytes:
    return s.encode("latin-1")


def _kv_json(kv):
    if kv is None:
        return None
    return [_s(kv.key), _s(kv.value), kv.create_revision, kv.mod_revision, kv.version, kv.lease]


def _kv_from(x):
    from zwatch.client import KeyValue
    if x is None:
        return None
    key, value, create, mod, version, lease = x
    return KeyValue(_b(key), create, mod, version, _b(value), lease)


def response_to_json(r) -> dict:
    return {"rev": r.header.revision, "created": r.created, "canceled": r.canceled,
            "cancel_reason": r.cancel_reason, "compact_revision": r.compact_revision,
            "events": [[e.type, _kv_json(e.kv), _kv_json(e.prev_kv)] for e in r.events]}


def response_from_json(d: dict):
    from zwatch.client import Event, Header, WatchResponse
    return WatchResponse(0, Header(d["rev"]), [Event(t, _kv_from(kv), _kv_from(p)) for t, kv, p in d["events"]],
                         created=d["created"], canceled=d["canceled"], cancel_reason=d["cancel_reason"],
                         compact_revision=d["compact_revision"])


def spec_to_json(s: checker.WatchSpec) -> dict:
    return {"key": _s(s.key), "range_end": _s(s.range_end), "start_revision": s.start_revision,
            "filters": list(s.filters), "prev_kv": s.prev_kv,
            "start_bounds": None if s.start_bounds is None else [s.start_bounds[0],
                                                                  None if s.start_bounds[1] == checker.INF else s.start_bounds[1]]}


def spec_from_json(d: dict) -> checker.WatchSpec:
    sb = d["start_bounds"]
    return checker.WatchSpec(_b(d["key"]), _b(d["range_end"]), d["start_revision"], tuple(d["filters"]), d["prev_kv"],
                             None if sb is None else (sb[0], checker.INF if sb[1] is None else sb[1]))


def reached_of(d: dict) -> int:
    """The revision one response (as JSON) brings its watch to (0: none); checker.stream_reached's rule."""
    if d["canceled"]:
        return 0
    if d["events"]:
        return max(kv[3] for _t, kv, _p in d["events"])
    return 0 if d["created"] else d["rev"]


# ====================================================================== the client worker (hosts D, E)
class _Emitter:
    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, event: str, **fields):
        line = json.dumps({"event": event, "t": time.time(), **fields})
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


class _Attempts(list):
    """chaos writers append the puts they are about to send: each becomes an `attempt` line."""

    def __init__(self, emit):
        super().__init__()
        self.emit = emit

    def append(self, kv):
        self.emit("attempt", puts=[list(kv)])

    def extend(self, kvs):
        self.emit("attempt", puts=[list(kv) for kv in kvs])


class _Counts(Counter):
    """chaos writers count outcomes: failures become `write_failed` lines."""

    def __init__(self, emit, writer: str):
        super().__init__()
        self.emit, self.writer = emit, writer

    def __setitem__(self, key, value):
        if key not in ("attempted", "acknowledged"):
            self.emit("write_failed", writer=self.writer, error=key)
        super().__setitem__(key, value)


class _Timed:
    """A Client whose writes record their latency in a thread-local (the chaos writer does not)."""

    def __init__(self, client, local):
        self._c, self._local = client, local

    def __getattr__(self, name):
        attr = getattr(self._c, name)
        if name not in ("put", "delete", "txn"):
            return attr

        def timed(*a, **kw):
            t = time.monotonic()
            try:
                return attr(*a, **kw)
            finally:
                self._local.ms = (time.monotonic() - t) * 1000.0
        return timed


class _ChaosWriter:
    """Runs tools/chaos.py's writer loop (chaos.Chaos._writer and _txn, borrowed as they are) with
    this worker's client, stop flag and JSON output in place of the chaos runner's lists."""
    _writer = chaos.Chaos._writer
    _txn = chaos.Chaos._txn

    @dataclass
    class _Cfg:
        write_pause: tuple = (0.01, 0.05)

    def __init__(self, worker: "Worker", wid: int, client):
        self.worker, self.wid = worker, wid
        self.client = client
        self.stop_load = worker.stop_load
        self.quiet = threading.Event()
        self.lock = threading.Lock()
        self.attempted = _Attempts(worker.emit)
        self.write_counts = _Counts(worker.emit, client.name)
        self.cfg = self._Cfg()
        self.local = threading.local()

    def _client(self, _i):
        return _Timed(self.client, self.local)

    def _ack(self, a: checker.AckedWrite):
        self.worker.emit("ack", writer=self.client.name, rev=a.revision, puts=[list(kv) for kv in a.puts],
                         deleted=a.deleted, deleted_keys=None if a.deleted_keys is None else list(a.deleted_keys),
                         what=a.what, ms=round(getattr(self.local, "ms", 0.0), 2), ep=self.client.endpoint)

    def run(self, seed: int):
        rng = random.Random(seed)
        restarts = 0
        while not self.stop_load.is_set():
            try:
                # writer number: unique across workers and restarts, so every value stays unique
                self._writer(self.wid + 1000 * restarts, rng)
            except Exception as exc:            # not a ZwatchError: say so, go on with new values
                self.worker.emit("writer_crashed", writer=self.client.name, error=repr(exc))
                restarts += 1
                time.sleep(0.1)


class Worker:
    """One client host's processes' worth of clients, driven by JSON commands on stdin."""

    def __init__(self, name: str, endpoints: list[str], seed: int, writers: int, watches: int):
        from zwatch import Client
        self.Client = Client
        self.name, self.endpoints, self.rng = name, endpoints, random.Random(seed)
        self.writers_per_gen, self.watches_per_gen = writers, watches
        self.emit = _Emitter()
        self.stop_load = threading.Event()
        self.stop_all = threading.Event()
        self.clients: list = []
        self.watch_clients: list = []
        self.watches: list[dict] = []      # {"name", "handle", "client", "reached"}
        self.writer_threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.wid = (ord(name[-1]) % 32) * 100
        self.gen = 0
        self.turn = ord(name[-1]) % 2
        self.sessions: dict = {}
        self.chaos_writers: list[_ChaosWriter] = []

    def client(self, label: str, endpoints: list[str], shuffle: bool):
        c = self.Client(endpoints, timeout=5.0, heartbeat=0.5, name=f"{self.name}-{label}", shuffle=shuffle)
        with self.lock:
            self.clients.append(c)
        return c

    def _order(self, first: str | None) -> list[str]:
        if first is None:               # the clients take both fan-outs first in turn
            first = self.endpoints[self.turn % len(self.endpoints)]
            self.turn += 1
        return [first] + [e for e in self.endpoints if e != first]

    def spawn(self, first: str | None):
        """A generation of clients: writers and one watch client.  first: every client tries that
        endpoint first, else they start on each fan-out in turn (so that every fan-out has clients
        when a link to it is impaired; the clients' own shuffle would leave that to chance)."""
        g = self.gen
        self.gen += 1
        shuffle = False
        for k in range(self.writers_per_gen):
            c = self.client(f"g{g}w{k}", self._order(first), shuffle)
            w = _ChaosWriter(self, self.wid + 10 * g + k, c)
            self.chaos_writers.append(w)
            th = threading.Thread(target=w.run, args=(self.rng.randrange(1 << 30),), daemon=True)
            th.start()
            self.writer_threads.append(th)
        wc = self.client(f"g{g}watch", self._order(first), shuffle)
        with self.lock:
            self.watch_clients.append(wc)
        head = wc.get("x").header.revision
        for k in range(self.watches_per_gen):
            if k == 0 and g == 0:
                spec = checker.WatchSpec(b"\x00", b"\x00", 2, prev_kv=True)       # every event from the start
            else:
                _n, key, end = self.rng.choice(chaos.RANGES)
                start = 0 if self.rng.random() < 0.5 else self.rng.randint(max(2, head - 30), max(2, head))
                spec = checker.WatchSpec(key, end, start, prev_kv=self.rng.random() < 0.3)
            kw = {"range_end": spec.range_end} if spec.range_end else {}
            h = wc.watch(spec.key, start_revision=spec.start_revision, prev_kv=spec.prev_kv, **kw)
            if spec.start_revision == 0:
                spec.start_bounds = (1, wc.get("x").header.revision + 1)
            name = f"{self.name}.g{g}.{k}"
            with self.lock:
                self.watches.append({"name": name, "handle": h, "client": wc, "reached": 0})
            self.emit("watch", name=name, client=wc.name, spec=spec_to_json(spec))
        self.emit("spawned", gen=g, clients=[c.name for c in self.clients[-self.writers_per_gen - 1:]])

    def _epoch(self, c) -> int:
        info = c.session_info or {}
        seen = self.sessions.setdefault(c.name, {})
        return seen.setdefault((info.get("fanout"), info.get("session")), len(seen))

    def _collector(self):
        while not self.stop_all.is_set():
            with self.lock:
                ws = list(self.watches)
            got = 0
            for w in ws:
                while True:
                    try:
                        r = w["handle"].get(timeout=0)
                    except queue.Empty:
                        break
                    if r is None:
                        break
                    d = response_to_json(r)
                    w["reached"] = max(w["reached"], reached_of(d))
                    self.emit("resp", w=w["name"], epoch=self._epoch(w["client"]), r=d)
                    got += 1
            if not got:
                time.sleep(0.01)

    def _monitor(self):
        """Endpoint changes, failovers and goaways of every client, as they happen."""
        last: dict = {}
        while not self.stop_all.is_set():
            with self.lock:
                cs = list(self.clients)
            for c in cs:
                now = (c.endpoint, c.failovers, c.moves, c._session.goaways)
                before = last.get(c.name)
                if before != now:
                    last[c.name] = now
                    if before is not None or c.endpoint is not None:
                        self.emit("client", client=c.name, endpoint=c.endpoint, failovers=c.failovers,
                                  moves=c.moves, goaways=now[3],
                                  kind=None if before is None else
                                  ("failover" if now[1] > before[1] else "goaway" if now[2:] != before[2:] else "endpoint"))
            time.sleep(0.05)

    def _progress(self):
        while not self.stop_all.is_set():
            self.stop_all.wait(0.5)
            with self.lock:
                cs = list(self.watch_clients)
            for c in cs:
                try:
                    c.request_progress(timeout=2)
                except Exception:
                    pass

    def final(self, rev: int, deadline_s: float):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            with self.lock:
                behind = [w["name"] for w in self.watches if w["reached"] < rev]
            if not behind:
                break
            time.sleep(0.1)
        with self.lock:
            self.emit("final", rev=rev, reached={w["name"]: w["reached"] for w in self.watches})

    def run(self) -> int:
        for fn in (self._collector, self._monitor, self._progress):
            threading.Thread(target=fn, daemon=True).start()
        self.spawn(None)
        self.emit("ready")
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            op = cmd.get("op")
            if op == "spawn":
                self.spawn(cmd.get("first"))
            elif op == "quiesce":
                self.stop_load.set()
                for th in self.writer_threads:
                    th.join(30)
                self.emit("quiesced", attempted=sum(w.write_counts["attempted"] for w in self.chaos_writers))
            elif op == "final":
                self.final(cmd["rev"], cmd.get("deadline_s", 60))
            elif op == "stop":
                break
        self.stop_load.set()
        self.stop_all.set()
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass
        self.emit("bye")
        return 0


def client_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m zwatch.tools.multihost client")
    p.add_argument("--name", required=True)
    p.add_argument("--endpoints", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--writers", type=int, default=2)
    p.add_argument("--watches", type=int, default=4)
    a = p.parse_args(argv)
    return Worker(a.name, a.endpoints.split(","), a.seed, a.writers, a.watches).run()


# ====================================================================== the harness
class HostActor(Actor):
    """tools/cluster.Actor run in a lab host, keeping each line's arrival time, with a stdin."""

    def __init__(self, name, argv, env, lab: Lab, host: str, stdin: bool = False):
        super().__init__(name, lab.argv(host, argv), env)
        self.host, self.stdin = host, stdin
        self.timed: list[tuple[float, dict]] = []

    def popen_options(self) -> dict:
        return {"stdin": subprocess.PIPE if self.stdin else subprocess.DEVNULL, "preexec_fn": die_with_parent}

    def on_line(self, parsed):
        if isinstance(parsed, dict):
            self.timed.append((time.time(), parsed))
            self.lines.append(parsed)

    def send(self, msg: dict):
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def since(self, name: str, t: float) -> list[tuple[float, dict]]:
        return [(ts, d) for ts, d in list(self.timed) if d.get("event") == name and ts >= t]


@dataclass
class Config:
    seconds_per_step: float = 6.0
    short: bool = False
    seed: int = 1
    recover_timeout: float = 45.0
    writers: int = 2
    watches: int = 4
    keep: bool = False


@dataclass
class StepResult:
    step: str
    fault: str
    detect_s: float | None = None
    detected_by: str = ""
    recover_s: float | None = None
    p50_ms: float | None = None
    p50_b_ms: float | None = None      # writes through fan-out B (on the impaired links)
    p50_c_ms: float | None = None
    acks: int = 0
    write_failures: int = 0
    failovers: int = 0
    goaways: int = 0
    upstream_lost: int = 0
    packets_dropped: int = 0
    packets_delayed: int = 0
    acked_lost: int = 0
    t0: float = 0.0
    t_end: float = 0.0
    watches_at_head: str = ""
    notes: list = field(default_factory=list)


class MultiHost:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.upstream_timeout = float(os.environ.get("ZWATCH_UPSTREAM_TIMEOUT_S", "3.0"))
        self.tmp = tempfile.mkdtemp(prefix="zw-multihost-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.lab = Lab(HOSTS, seed=cfg.seed)
        self.actors: dict[str, HostActor] = {}
        self.workers: dict[str, HostActor] = {}
        self.steps: list[StepResult] = []
        self.log = print

    # -------------------------------------------------------------- setup / teardown
    def ep(self, host: str, port: int) -> str:
        return f"tcp://{self.lab.ip(host)}:{port}"

    def start(self):
        self.lab.start()
        py = sys.executable
        env = dict(os.environ)
        env.update({"ZWATCH_DATA_DIR": self.data_dir, "ZWATCH_WRITER_ENDPOINT": self.ep("a", WRITER_PORT),
                    "ZWATCH_PUB_ENDPOINT": self.ep("a", PUB_PORT), "ZWATCH_SYNCER_ENDPOINT": self.ep("a", SYNCER_PORT),
                    "ZWATCH_LOG_FORMAT": "json", "ZWATCH_STATS_S": "1", "PYTHONUNBUFFERED": "1"})
        for k in ("ZWATCH_FANOUT_METRICS_PORT", "ZWATCH_WRITER_METRICS_PORT", "ZWATCH_SYNCER_METRICS_PORT",
                  "ZWATCH_ENDPOINTS", "ZWATCH_CURVE_DIR"):
            env.pop(k, None)
        self.env = env
        self.actors["writer"] = HostActor("writer", [py, "-m", "zwatch.actors.writer"], env, self.lab, "a")
        self.actors["syncer"] = HostActor("syncer", [py, "-m", "zwatch.actors.syncer"], env, self.lab, "a")
        for h in ("b", "c"):
            self.actors[f"fanout_{h}"] = HostActor(f"fanout_{h}", [py, "-m", "zwatch.actors.fanout",
                                                                  self.ep(h, FANOUT_PORT)], env, self.lab, h)
        self.actors["writer"].start()
        self.actors["writer"].wait_event("writer.start", timeout=30)
        self.actors["syncer"].start()
        self.actors["syncer"].wait_event("syncer.start", timeout=30)
        for h in ("b", "c"):
            self.actors[f"fanout_{h}"].start()
        for h in ("b", "c"):
            self.actors[f"fanout_{h}"].wait_event("fanout.joined_stream", timeout=30)
        eps = ",".join(self.ep(h, FANOUT_PORT) for h in ("b", "c"))
        for i, h in enumerate(("d", "e")):
            w = HostActor(f"client_{h}", [py, "-m", "zwatch.tools.multihost", "client", "--name", h, "--endpoints", eps,
                                          "--seed", str(self.cfg.seed * 10 + i), "--writers", str(self.cfg.writers),
                                          "--watches", str(self.cfg.watches)], env, self.lab, h, stdin=True)
            w.start()
            self.workers[h] = w
        for w in self.workers.values():
            w.wait_event("ready", timeout=60)

    def stop(self):
        for w in self.workers.values():
            if w.alive():
                w.send({"op": "stop"})
        for w in self.workers.values():
            if w.alive():
                try:
                    w.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            w.kill(signal.SIGKILL)
        for name, a in self.actors.items():
            a.kill(signal.SIGINT if name.startswith("fanout") else signal.SIGTERM, timeout=5)

    def close(self):
        try:
            self.stop()
        finally:
            self.lab.close()
            if not self.cfg.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -------------------------------------------------------------- observations
    def worker_events(self, event: str, t0: float = 0.0, t1: float = float("inf")) -> list[dict]:
        out = []
        for w in self.workers.values():
            out += [d for d in list(w.lines) if d.get("event") == event and t0 <= d["t"] < t1]
        return out

    def fanout_events(self, event: str, t0: float, t1: float = float("inf")) -> list[tuple[float, str]]:
        out = []
        for name, a in self.actors.items():
            if name.startswith("fanout"):
                out += [(ts, name) for ts, d in list(a.timed) if d.get("event") == event and t0 <= ts < t1]
        return out

    def watch_reached(self) -> dict[str, list[tuple[float, int]]]:
        """watch name -> [(worker time, reached)] of each response that moved it."""
        out: dict[str, list] = {}
        for d in self.worker_events("resp"):
            r = reached_of(d["r"])
            if r:
                out.setdefault(d["w"], []).append((d["t"], r))
        for d in self.worker_events("watch"):
            out.setdefault(d["name"], [])
        return out

    def head(self) -> int:
        from zwatch.actors.store import Store
        s = Store(self.data_dir)
        try:
            return s.current_revision()
        finally:
            s.close()

    def dropped_delayed(self) -> tuple[int, int]:
        st = [v for v in self.lab.stats().values() if isinstance(v, dict)]
        return sum(v["lost"] + v["cut"] for v in st), sum(v["delayed"] for v in st)

    def recovered(self, t0: float, t_heal: float, head: int) -> tuple[float | None, int, int]:
        """(seconds after t_heal when every worker had a write acknowledged, every watch had
        reached `head` and every fan-out cut off since t0 serves again (upstream_restored, or
        joined_stream when it was restarted), or None; watches at head; watches)."""
        acks = [min((d["t"] for d in self.worker_events("ack", t_heal) if d["writer"].startswith(h)), default=None)
                for h in self.workers]
        for ts, name in self.fanout_events("fanout.upstream_lost", t0):
            a = self.actors[name]
            back = [t for t, d in list(a.timed) if t >= ts and d.get("event") in
                    ("fanout.upstream_restored", "fanout.joined_stream")]
            acks.append(min(back) if back else None)
        when = []
        for _name, seq in self.watch_reached().items():
            when.append(next((t for t, r in seq if r >= head), None))
        at_head = sum(1 for t in when if t is not None)
        if any(a is None for a in acks) or at_head < len(when):
            return None, at_head, len(when)
        return max([a for a in acks] + [max(t_heal, t) for t in when]) - t_heal, at_head, len(when)

    def clients_on(self, worker: str, host: str) -> set:
        ep = self.ep(host, FANOUT_PORT)
        where = {}
        for d in self.workers[worker].lines:
            if d.get("event") == "client":
                where[d["client"]] = d["endpoint"]
        return {c for c, e in where.items() if e == ep}

    def wait_clients_on(self, worker: str, host: str, timeout: float) -> int:
        end = time.time() + timeout
        while time.time() < end and not self.clients_on(worker, host):
            time.sleep(0.1)
        return len(self.clients_on(worker, host))

    # -------------------------------------------------------------- steps
    def step(self, name: str, fault: str, apply, heal, hold: float) -> StepResult:
        res = StepResult(name, fault)
        dropped0 = self.dropped_delayed()
        self.log(f"--- {name}: {fault} (hold {hold:.1f} s)", flush=True)
        t0 = time.time()
        apply()
        time.sleep(hold)
        t_heal = time.time()
        head = self.head()
        heal()
        deadline = time.time() + self.cfg.recover_timeout
        while True:
            rec, at_head, n = self.recovered(t0, t_heal, head)
            if rec is not None or time.time() > deadline:
                break
            time.sleep(0.2)
        # a short settle so that late client lines of this step land in it
        time.sleep(0.3)
        t_end = time.time()
        res.recover_s = None if rec is None else round(rec, 2)
        res.watches_at_head = f"{at_head}/{n}"
        acks = self.worker_events("ack", t0, t_heal)
        res.acks = len(acks)
        lat = [d["ms"] for d in acks]
        res.p50_ms = round(statistics.median(lat), 1) if lat else None
        for h in ("b", "c"):
            lat = [d["ms"] for d in acks if d.get("ep") == self.ep(h, FANOUT_PORT)]
            setattr(res, f"p50_{h}_ms", round(statistics.median(lat), 1) if lat else None)
        res.t0, res.t_end = t0, t_end
        fails = self.worker_events("write_failed", t0, t_end)
        res.write_failures = len(fails)
        clients = self.worker_events("client", t0, t_end)
        res.failovers = sum(1 for d in clients if d["kind"] == "failover")
        res.goaways = sum(1 for d in clients if d["kind"] == "goaway")
        lost = self.fanout_events("fanout.upstream_lost", t0, t_end)
        res.upstream_lost = len(lost)
        signs = ([(ts, f"{n}: upstream_lost") for ts, n in lost]
                 + [(d["t"], f"{d['client']}: {d['kind']}") for d in clients if d["kind"] in ("failover", "goaway")]
                 + [(d["t"], f"{d['writer']}: write failed") for d in fails if d["t"] < t_heal])
        signs = [s for s in signs if s[0] >= t0]
        if signs:
            ts, by = min(signs)
            res.detect_s, res.detected_by = round(ts - t0, 2), by
        dropped1 = self.dropped_delayed()
        res.packets_dropped = dropped1[0] - dropped0[0]
        res.packets_delayed = dropped1[1] - dropped0[1]
        self.log(f"    detect {res.detect_s} s ({res.detected_by or '-'}), recover {res.recover_s} s, "
                 f"acks {res.acks} p50 {res.p50_ms} ms (via B {res.p50_b_ms}, via C {res.p50_c_ms}), write failures {res.write_failures}, failovers "
                 f"{res.failovers}, goaways {res.goaways}, upstream_lost {res.upstream_lost}, "
                 f"packets dropped {res.packets_dropped} delayed {res.packets_delayed}, watches at head {res.watches_at_head}", flush=True)
        self.steps.append(res)
        return res

    def run_steps(self):
        lab, S, T = self.lab, self.cfg.seconds_per_step, self.upstream_timeout
        part_hold = max(S, T + 3.0)
        nothing = lambda: None
        self.step("baseline", "none", nothing, nothing, S)
        self.step("delay A-B", "20 ms +- 5 ms both ways", lambda: lab.impair("a", "b", delay_ms=20, jitter_ms=5),
                  lambda: lab.heal("a", "b"), S)
        self.step("loss A-B", "5 % both ways", lambda: lab.impair("a", "b", loss_pct=5),
                  lambda: lab.heal("a", "b"), S)
        self.step("partition A|B", f"A-B cut {part_hold:.0f} s (upstream timeout {T:g} s)",
                  lambda: lab.partition("a", "b"), lambda: lab.heal("a", "b"), part_hold)
        # After that every client is on C: new ones arrive, trying B first, so that D has clients on B.
        for w in self.workers.values():
            w.send({"op": "spawn", "first": self.ep("b", FANOUT_PORT)})
        for w in self.workers.values():
            w.wait_event("spawned", count=2, timeout=60)
        d_on_b = self.wait_clients_on("d", "b", 15.0)
        self.log(f"    new clients: {d_on_b} of D's on B", flush=True)
        self.step("partition D|B", "D-B cut (D's clients move to C)", lambda: lab.partition("d", "b"),
                  lambda: lab.heal("d", "b"), max(S, 4.0))
        self.step("partition D|B,C", "D cut from both fan-outs (wait, resume)",
                  lambda: (lab.partition("d", "b"), lab.partition("d", "c")),
                  lambda: (lab.heal("d", "b"), lab.heal("d", "c")), S)
        fb = self.actors["fanout_b"]

        def kill_b():
            lab.partition("a", "b")
            time.sleep(T + 1.0)
            fb.kill(signal.SIGKILL)

        def heal_restart_b():
            lab.heal("a", "b")
            before = len(fb.events("fanout.joined_stream"))
            fb.start()
            fb.wait_event("fanout.joined_stream", count=before + 1, timeout=30)
        self.step("B killed", "A-B cut, B's fan-out SIGKILLed, heal, restart", kill_b, heal_restart_b, max(1.0, S / 2))
        wr, sy = self.actors["writer"], self.actors["syncer"]

        def kill_a():
            lab.isolate("a")
            time.sleep(1.0)
            wr.kill(signal.SIGKILL)
            sy.kill(signal.SIGKILL)
            n = len(wr.events("writer.start"))
            wr.start()
            wr.wait_event("writer.start", count=n + 1, timeout=30)
            sy.start()

        def heal_a():
            for h in HOSTS[1:]:
                lab.heal("a", h)
        self.step("A down", "A isolated, writer+syncer SIGKILLed and restarted on A, heal", kill_a, heal_a, part_hold)

    # -------------------------------------------------------------- the end
    def quiesce_and_check(self) -> dict:
        for w in self.workers.values():
            w.send({"op": "quiesce"})
        for w in self.workers.values():
            w.wait_event("quiesced", timeout=60)
        final = self.head()
        for w in self.workers.values():
            w.send({"op": "final", "rev": final, "deadline_s": 60})
        for w in self.workers.values():
            w.wait_event("final", timeout=90)
        self.stop()
        acked = [checker.AckedWrite(d["rev"], tuple((k.encode(), v.encode()) for k, v in d["puts"]), d["deleted"],
                                    None if d["deleted_keys"] is None else tuple(k.encode() if isinstance(k, str) else k
                                                                                 for k in d["deleted_keys"]),
                                    what=f"{d['writer']}: {d['what']}") for d in self.worker_events("ack")]
        specs = {d["name"]: spec_from_json(d["spec"]) for d in self.worker_events("watch")}
        resps: dict[str, list] = {n: [] for n in specs}
        epochs: dict[str, list] = {n: [] for n in specs}
        for d in self.worker_events("resp"):
            resps[d["w"]].append(response_from_json(d["r"]))
            epochs[d["w"]].append(d["epoch"])
        records = [checker.StreamRecord(n, specs[n], resps[n], epochs=epochs[n], final_revision=final) for n in specs]
        res = check_store_history(self.data_dir, records, acked=acked, first=2, final=final)
        lost = res.by_guarantee.get("Durability", 0)
        for s in self.steps:       # acknowledged writes lost, per step (by the time they were acknowledged)
            mine = [a for a, d in zip(acked, self.worker_events("ack")) if s.t0 <= d["t"] < s.t_end]
            s.acked_lost = check_store_history(self.data_dir, [], acked=mine, first=2,
                                               final=final).by_guarantee.get("Durability", 0) if mine else 0
        reached = {}
        for d in self.worker_events("final"):
            reached.update(d["reached"])
        resumed = sum(1 for r in reached.values() if r >= final)
        return {"final_revision": final, "acked_writes": len(acked),
                "attempted_writes": sum(d.get("attempted", 0) for d in self.worker_events("quiesced")),
                "watch_responses": sum(len(r) for r in resps.values()),
                "acked_lost": lost, "violations": len(res.violations), "violation_list": res.violations[:40],
                "by_guarantee": dict(res.by_guarantee), "watches": len(records), "watches_resumed": resumed,
                "summary": res.summary()}

    def run(self) -> dict:
        t = time.time()
        self.start()
        self.log(f"lab up in {time.time() - t:.1f} s: hosts {self.lab.addr}", flush=True)
        self.run_steps()
        check = self.quiesce_and_check()
        return {"steps": [s.__dict__ for s in self.steps], "check": check, "link_stats": self.lab.stats(),
                "seconds": round(time.time() - t, 1), "upstream_timeout_s": self.upstream_timeout}


def _fmt(x, unit=""):
    return "-" if x is None else f"{x}{unit}"


def format_table(rep: dict) -> str:
    rows = [("step", "fault", "detect", "detected by", "recover", "p50 write via B / C", "acks", "write fails",
             "failovers", "goaways", "upstream lost", "pkts dropped / delayed", "acked lost", "watches at head")]
    for s in rep["steps"]:
        rows.append((s["step"], s["fault"], _fmt(s["detect_s"], " s"), s["detected_by"] or "-",
                     _fmt(s["recover_s"], " s"), f"{_fmt(s['p50_b_ms'])} / {_fmt(s['p50_c_ms'])} ms", str(s["acks"]),
                     str(s["write_failures"]), str(s["failovers"]), str(s["goaways"]), str(s["upstream_lost"]),
                     f"{s['packets_dropped']} / {s['packets_delayed']}", str(s["acked_lost"]), s["watches_at_head"]))
    out = ["| " + " | ".join(r) + " |" for r in rows]
    out.insert(1, "|" + "---|" * len(rows[0]))
    c = rep["check"]
    out.append("")
    out.append(f"final revision {c['final_revision']}, {c['acked_writes']} acknowledged writes of "
               f"{c['attempted_writes']} attempted, {c['watch_responses']} watch responses: acknowledged writes "
               f"lost {c['acked_lost']}, violations {c['violations']} ({c['summary']}), watches resumed "
               f"{c['watches_resumed']}/{c['watches']}; {rep['seconds']} s")
    return "\n".join(out)


def verdict(rep: dict) -> int:
    c = rep["check"]
    ok = c["violations"] == 0 and c["acked_lost"] == 0 and c["watches_resumed"] == c["watches"]
    return EXIT_OK if ok else EXIT_VIOLATIONS


def run(cfg: Config, log=print) -> dict:
    """One run; always torn down.  Raises when the harness itself fails."""
    mh = MultiHost(cfg)
    mh.log = log
    try:
        return mh.run()
    finally:
        mh.close()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m zwatch.tools.multihost", description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="short steps (CI): 3 s per step")
    p.add_argument("--seconds-per-step", type=float, default=None, help="how long each fault is held (default 8, --short 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (LMDB) for a post-mortem")
    a = p.parse_args(argv)
    ok, why = Lab.available()
    if not ok:
        print(f"cannot run: {why}", file=sys.stderr)
        return EXIT_HARNESS
    sps = a.seconds_per_step if a.seconds_per_step is not None else (3.0 if a.short else 8.0)
    cfg = Config(seconds_per_step=sps, short=a.short, seed=a.seed, keep=a.keep)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with SIGINT ignored (`cmd &`)
    log = (lambda *x, **k: print(*x, file=sys.stderr, **k)) if a.json else print
    try:
        rep = run(cfg, log=log)
    except KeyboardInterrupt:
        print("interrupted: torn down", file=sys.stderr)
        return EXIT_HARNESS
    except Exception as exc:
        print(f"harness failure: {exc!r}", file=sys.stderr)
        return EXIT_HARNESS
    if a.json:
        print(json.dumps(rep, indent=1, default=str))
    else:
        print(format_table(rep))
        for v in rep["check"]["violation_list"]:
            print("  " + v)
    return verdict(rep)


if __name__ == "__main__":
    sys.exit(main())
