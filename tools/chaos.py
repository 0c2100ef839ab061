"""Chaos runner: a real cluster, concurrent writers and watchers, SIGKILLed actors, then the checker.

    python -m zwatch.tools.chaos --seconds 60 --seed 1 [--fanouts 2] [--json] [--logs DIR]

What runs, for --seconds (all choices from one seeded RNG; timing is the OS's):

* writers: puts, single-key and prefix deletes, txns (compare + several puts / a delete) on a
  small key space with prefixes; every value is unique, every acknowledged reply is kept;
* watchers on several clients, each client given EVERY fan-out endpoint (so it fails over):
  single keys, prefixes, ranges, from-key; start revisions now / past / compacted / future /
  1; prev_kv, NOPUT/NODELETE and progress_notify sometimes; random client cancels, some of them
  followed by an explicit resume from the last revision + 1; every other watch is a verified
  stream (SPEC.md 7.10): the client checks each bookmark's hash live, and the checker checks
  it again against the history (its "Verified" guarantee);
* two "history watchers" (every key from revision 1, prev_kv) checked like any stream;
* a store reader in this process that copies the store's history (the ground truth) before
  anything is compacted, and a compactor that keeps a window behind the head, never past the
  copied history nor past the history watchers;
* progress requests at random moments;
* leases (unless --no-leases): a lease worker grants long leases that a keeper keeps alive to
  the end (every second, through failovers and writer restarts: they must never expire) and
  short ones (TTL 2 s, ZWATCH_LEASE_MIN_TTL=1) kept alive for a while and then left to expire
  or revoked; it puts keys l/0..l/7 under them and moves keys between leases (or to none).
  Nothing else writes or deletes l/ keys, so every DELETE of one is a revoke or an expiry and
  the checker checks each as one revision of exactly the attached keys;
* a killer: SIGKILL + restart of the writer, the syncer and each fan-out at random moments
  (every kind at least once when the run is long enough).

Then it quiesces (all actors up, writes stopped, progress requested on every client until
every live watch reached the final revision or a deadline), reads the final state, and runs
zwatch.tools.checker over everything.  Exit status: 0 clean, 1 violations, 2 harness failure.
Every loop is bounded in time, and the cluster is torn down on any exit (Ctrl-C included).

Why one module of ~750 lines: its one job is one run (workers, killers, collection, report),
whose parts share one seeded RNG and one stop flag; the checking itself is tools/checker.py.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from zwatch import Delete, Put, Value, Version
from zwatch.client import DeleteRangeResponse
from zwatch.errors import Unavailable, ZwatchError
from zwatch.tools import checker
from zwatch.tools.cluster import Cluster

PREFIXES = ("a/", "b/", "c/")
KEYS = [f"{p}{i}" for p in PREFIXES for i in range(5)] + ["ab", "x", "y"]
# (name, key, range_end) as the checker's WatchSpec takes them; b"\x00" = from key
RANGES = (
    [(f"key {k}", k.encode(), b"") for k in KEYS]
    + [(f"prefix {p}", p.encode(), p[:-1].encode() + bytes([p.encode()[-1] + 1])) for p in PREFIXES]
    + [("prefix a", b"a", b"b"), ("range a/2..b/3", b"a/2", b"b/3"), ("from b/", b"b/", b"\x00"),
       ("all", b"\x00", b"\x00"), ("from x", b"x", b"\x00")]
)


@dataclass
class Config:
    seconds: float = 60.0
    seed: int = 1
    fanouts: int = 2
    writers: int = 3
    watch_clients: int = 4
    max_active_watches: int = 30
    kill_every: tuple = (2.0, 5.0)        # seconds between kills, uniform
    down_time: tuple = (0.0, 0.8)         # seconds an actor stays dead
    compact_every: tuple = (2.0, 4.0)
    compact_window: int = 200             # revisions kept behind the head
    ring_revisions: int = 100             # small: catch-ups go through the syncer often
    progress_interval_s: float = 1.0
    write_pause: tuple = (0.0, 0.03)
    double_kill: float = 0.25             # share of kills that take two actors down together
    quiet_every: tuple = (4.0, 10.0)      # seconds between quiet periods (no writes)
    quiet_for: tuple = (1.0, 3.0)
    quiesce_timeout: float = 30.0
    leases: bool = True
    verify: bool = True                   # every other watch a verified stream (SPEC.md 7.10)
    lease_ttl_kept: int = 10
    lease_ttl_short: int = 2
    logs: str | None = None
    extra_env: dict = field(default_factory=dict)   # more actor environment (ZWATCH_...)
    dump: str | None = None               # pickle everything the checker saw into this file
    keep: bool = False
    verbose: bool = False
    # Share of the created watches that read a state (issue #16, SPEC.md 7.7): initial_state
    # (from now), or on_compacted resync (any start), or both with digest; checked by the
    # checker's State rule (the state equals the history's at R) and from R + 1 on.
    state_watches: float = 0.0


@dataclass
class Tracked:
    """One watch handle and what it received."""
    name: str
    client: int
    spec: checker.WatchSpec
    handle: object = None
    responses: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    times: list = field(default_factory=list)
    canceled_by_client: bool = False
    ended: bool = False
    resume_of: str | None = None
    history: bool = False
    state_opts: dict = field(default_factory=dict)    # initial_state / on_compacted it was created with
    verify: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Chaos:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.tmp = tempfile.mkdtemp(prefix="zwatch-chaos-")
        self.cluster: Cluster | None = None
        self.store = None
        self.lock = threading.Lock()
        self.stop_all = threading.Event()
        self.stop_load = threading.Event()      # writers, watch manager, compactor, progress
        self.stop_kills = threading.Event()
        self.threads: list[threading.Thread] = []
        # records
        self.acked: list[checker.AckedWrite] = []
        self.attempted: list[tuple] = []
        self.write_counts = Counter()
        self.top_rev = 1                         # highest revision acknowledged
        self.compact_acked = 0                   # highest compaction acknowledged
        self.compactions = Counter()
        self.history: list[checker.HEvent] = []  # copied from the store
        self.store_pos = 1                       # history copied up to here
        self.store_errors: list[str] = []
        self.streams: list[Tracked] = []
        self.watch_counts = Counter()
        self.kills = Counter()
        self.kills_by_actor = Counter()
        self.kill_log: list[tuple] = []
        self.harness_errors: list[str] = []
        self.progress_counts = Counter()
        self.sessions: dict[int, dict] = {}
        self.quiet = threading.Event()
        self.quiet_periods = 0
        self.t0 = time.monotonic()
        # leases: ID -> checker.LeaseLife; short leases kept alive until a monotonic time
        self.lease_lives: dict[int, checker.LeaseLife] = {}
        self.kept_leases: list[int] = []
        self.short_leases: dict[int, float] = {}
        self.lease_stopped_at = 0.0              # last time keep-alives of a short lease stopped
        self.lease_counts = Counter()
        self.lease_problems: list[str] = []

    # ------------------------------------------------------------------ plumbing
    def _thread(self, name, fn, *args):
        t = threading.Thread(target=self._guard, args=(name, fn, *args), name=name, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def _guard(self, name, fn, *args):
        try:
            fn(*args)
        except Exception as exc:  # a harness bug must not look like a clean run
            self.harness_errors.append(f"{name}: {type(exc).__name__}: {exc}")
            import traceback
            traceback.print_exc()

    def _now(self):
        return round(time.monotonic() - self.t0, 3)

    def _client(self, i):
        eps = list(self.cluster.fanout_eps)
        k = i % len(eps)
        eps = eps[k:] + eps[:k]
        return self.cluster.client(eps, timeout=3.0, heartbeat=0.5)

    def _note_rev(self, rev):
        with self.lock:
            if rev > self.top_rev:
                self.top_rev = rev

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        cfg = self.cfg
        env = {"ZWATCH_RING_REVISIONS": str(cfg.ring_revisions),
               "ZWATCH_PROGRESS_INTERVAL_S": str(cfg.progress_interval_s),
               "ZWATCH_STATS_S": "5"}
        if cfg.leases:
            env["ZWATCH_LEASE_MIN_TTL"] = "1"
        env.update(cfg.extra_env)
        self.cluster = Cluster(os.path.join(self.tmp, "data"), fanouts=cfg.fanouts, env=env)
        try:
            self.cluster.start()
            from zwatch.actors.store import Store
            self.store = Store(self.cluster.data_dir)
            self.wclients = [self._client(i) for i in range(cfg.watch_clients)]
            for i in range(min(2, cfg.watch_clients)):
                self._create_watch(i, checker.WatchSpec(b"\x00", b"\x00", 1, prev_kv=True), history=True)
            self._thread("store-reader", self._store_reader)
            for i in range(cfg.watch_clients):
                self._thread(f"collector{i}", self._collector, i)
            for i in range(cfg.writers):
                self._thread(f"writer{i}", self._writer, i, random.Random(cfg.seed * 1000 + i))
            self._thread("watch-manager", self._watch_manager, random.Random(cfg.seed * 1000 + 100))
            self._thread("compactor", self._compactor, random.Random(cfg.seed * 1000 + 200))
            self._thread("progress", self._progress_requester, random.Random(cfg.seed * 1000 + 300))
            self._thread("pacer", self._pacer, random.Random(cfg.seed * 1000 + 500))
            if cfg.leases:
                self._thread("lease-worker", self._lease_worker, random.Random(cfg.seed * 1000 + 600))
                self._thread("lease-keeper", self._lease_keeper)
            killer = self._thread("killer", self._killer, random.Random(cfg.seed * 1000 + 400))
            deadline = time.monotonic() + cfg.seconds
            while time.monotonic() < deadline and not self.stop_all.is_set():
                time.sleep(0.2)
            return self._quiesce_and_check(killer)
        finally:
            self.stop_all.set()
            self.stop_load.set()
            self.stop_kills.set()
            for t in self.threads:
                t.join(timeout=5)
            self._save_logs()
            try:
                self.cluster.stop()
            except Exception:
                pass
            for a in self.cluster.actors.values():      # belt and braces: nothing may survive us
                try:
                    if a.alive():
                        a.proc.kill()
                        a.proc.wait(5)
                except Exception:
                    pass
            if self.store is not None:
                try:
                    self.store.close()
                except Exception:
                    pass
            if not cfg.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ writers
    def _writer(self, i, rng: random.Random):
        c = self._client(100 + i)
        seq = 0
        while not self.stop_load.is_set():
            seq += 1
            r = rng.random()
            try:
                if r < 0.55:
                    k = rng.choice(KEYS)
                    v = f"w{i}.{seq}"
                    with self.lock:
                        self.attempted.append((k, v))
                    self.write_counts["attempted"] += 1
                    resp = c.put(k, v)
                    self._ack(checker.AckedWrite(resp.header.revision, ((k, v),), what=f"put {k}={v}"))
                elif r < 0.70:
                    k = rng.choice(KEYS)
                    self.write_counts["attempted"] += 1
                    resp = c.delete(k)
                    self._ack(checker.AckedWrite(resp.header.revision, (), resp.deleted,
                                                 (k,) if resp.deleted else (), what=f"delete {k}"))
                elif r < 0.75:
                    p = rng.choice(PREFIXES + ("a",))
                    self.write_counts["attempted"] += 1
                    resp = c.delete(p, prefix=True, prev_kv=True)
                    self._ack(checker.AckedWrite(resp.header.revision, (), resp.deleted,
                                                 tuple(kv.key for kv in resp.prev_kvs), what=f"delete prefix {p}"))
                else:
                    self._txn(c, i, seq, rng)
            except Unavailable:
                self.write_counts["unavailable"] += 1
            except ZwatchError as e:
                self.write_counts[f"error {e.code}"] += 1
            time.sleep(rng.uniform(*self.cfg.write_pause))
            while self.quiet.is_set() and not self.stop_load.is_set():
                time.sleep(0.05)

    def _txn(self, c, i, seq, rng):
        keys = rng.sample(KEYS, rng.randint(2, 4))
        puts = [(k, f"w{i}.{seq}.{n}") for n, k in enumerate(keys[:-1])]
        dkey = keys[-1]
        do_delete = rng.random() < 0.5
        cmp_key = rng.choice(KEYS)
        compare = [Version(cmp_key) > 0] if rng.random() < 0.7 else [Value(cmp_key) == "nope"]
        fkey = rng.choice(KEYS)
        fput = (fkey, f"w{i}.{seq}.f")
        success = [Put(k, v) for k, v in puts] + ([Delete(dkey)] if do_delete else [])
        failure = [Put(*fput)] if rng.random() < 0.8 else []
        with self.lock:
            self.attempted.extend(puts + [fput])
        self.write_counts["attempted"] += 1
        resp = c.txn(compare, success, failure)
        if resp.succeeded:
            deleted = sum(r.deleted for r in resp.responses if isinstance(r, DeleteRangeResponse))
            self._ack(checker.AckedWrite(resp.header.revision, tuple(puts), deleted, (dkey,) if deleted else (),
                                         what=f"txn w{i}.{seq} (success)"))
        else:
            self._ack(checker.AckedWrite(resp.header.revision, (fput,) if failure else (),
                                         what=f"txn w{i}.{seq} (failure)"))

    def _ack(self, a: checker.AckedWrite):
        with self.lock:
            self.acked.append(a)
        self.write_counts["acknowledged"] += 1
        self._note_rev(a.revision)

    # ------------------------------------------------------------------ leases
    def _lease_worker(self, rng: random.Random):
        cfg = self.cfg
        c = self._client(200)
        seq = 0
        while not self.stop_load.is_set():
            seq += 1
            r = rng.random()
            with self.lock:
                short = list(self.short_leases)
                live = self.kept_leases + short
            try:
                if r < 0.1 or not live:
                    kept = len(self.kept_leases) < 3 and rng.random() < 0.3
                    ttl = cfg.lease_ttl_kept if kept else cfg.lease_ttl_short
                    lease_id = c.lease_grant(ttl).id
                    self.lease_counts["granted"] += 1
                    with self.lock:
                        if kept:
                            self.kept_leases.append(lease_id)
                            self.lease_lives[lease_id] = checker.LeaseLife(lease_id, "alive", what="kept alive")
                        else:
                            self.short_leases[lease_id] = time.monotonic() + rng.uniform(0.0, 4.0)
                            self.lease_lives[lease_id] = checker.LeaseLife(lease_id, "expired", what="left to expire")
                elif r < 0.2 and short:
                    lease_id = rng.choice(short)
                    with self.lock:
                        self.short_leases.pop(lease_id, None)     # no more keep-alives: expires if not revoked
                        self.lease_stopped_at = time.monotonic()
                    self.lease_counts["revoke_attempted"] += 1
                    hdr = c.lease_revoke(lease_id)
                    self.lease_counts["revoked"] += 1
                    with self.lock:
                        self.lease_lives[lease_id] = checker.LeaseLife(lease_id, "revoked", hdr.revision,
                                                                       what="revoked")
                    self._note_rev(hdr.revision)
                else:
                    k = f"l/{rng.randrange(8)}"
                    lease_id = 0 if r > 0.9 else rng.choice(live)  # sometimes detach it (no lease)
                    v = f"l.{seq}"
                    with self.lock:
                        self.attempted.append((k, v))
                    self.lease_counts["puts_attempted"] += 1
                    resp = c.put(k, v, lease=lease_id)
                    self._ack(checker.AckedWrite(resp.header.revision, ((k, v),), what=f"put {k}={v} lease {lease_id:#x}"))
            except Unavailable:
                self.lease_counts["unavailable"] += 1
            except ZwatchError as e:
                self.lease_counts[f"error {e.code}"] += 1      # LEASE_NOT_FOUND: a short lease expired
            time.sleep(rng.uniform(0.02, 0.1))
            while self.quiet.is_set() and not self.stop_load.is_set():
                time.sleep(0.05)

    def _lease_keeper(self):
        """One keep-alive a second for the kept leases and the short ones still in their time."""
        c = self._client(201)
        while not self.stop_all.wait(1.0):
            now = time.monotonic()
            with self.lock:
                for lease_id, until in list(self.short_leases.items()):
                    if until <= now:
                        del self.short_leases[lease_id]
                        self.lease_stopped_at = now
                ids = self.kept_leases + list(self.short_leases)
            if not ids:
                continue
            try:
                got = c.lease_keepalive_once(ids)
            except ZwatchError:
                self.lease_counts["keepalive_failed"] += 1
                continue
            self.lease_counts["keepalives"] += 1
            for lease_id in self.kept_leases:
                if lease_id in got and got[lease_id] <= 0:
                    self.lease_problems.append(f"[LeaseAlive] leases: kept lease {lease_id:#x} answered TTL 0 "
                                               f"at {self._now()}s")

    def _wait_for_short_leases(self, kills_stopped: float):
        """Every short lease's TTL ran out (a writer restart gives each its full TTL again)."""
        with self.lock:
            for lease_id in list(self.short_leases):
                del self.short_leases[lease_id]
            self.lease_stopped_at = time.monotonic()
        until = max(self.lease_stopped_at, kills_stopped) + self.cfg.lease_ttl_short + 1.5
        time.sleep(max(0.0, until - time.monotonic()))

    # ------------------------------------------------------------------ store reader (ground truth)
    def _store_reader(self):
        from zwatch.errors import Compacted
        while not self.stop_all.is_set():
            try:
                self._read_store()
            except Compacted as e:
                self.store_errors.append(f"store history compacted under the reader at {self.store_pos}: {e}")
                return
            time.sleep(0.2)

    def _read_store(self, upto: int | None = None):
        with self.store.reader() as v:
            cur = v.current_revision if upto is None else min(upto, v.current_revision)
            nxt = self.store_pos + 1
            while nxt <= cur:
                recs = v.history(nxt, cur, max_records=5000, max_bytes=8 << 20)
                if not recs:
                    self.store_errors.append(f"store history has no records for revisions {nxt}..{cur}")
                    nxt = cur + 1
                    break
                evs = checker.history_from_store_records(recs)
                with self.lock:
                    self.history.extend(evs)
                nxt = recs[-1][0] + 1
            with self.lock:
                self.store_pos = max(self.store_pos, nxt - 1)

    # ------------------------------------------------------------------ watches
    def _create_watch(self, ci: int, spec: checker.WatchSpec, *, history=False, resume_of=None,
                      progress_notify=False, state_opts=None, verify=None) -> Tracked | None:
        c = self.wclients[ci]
        with self.lock:
            spec.compact_at_create = self.compact_acked
            n = len(self.streams) + 1
        name = ("hist" if history else "w") + f"{n}@c{ci}"
        if verify is None:
            verify = self.cfg.verify and n % 2 == 0      # every other watch: a verified stream
        kw = {}
        if spec.range_end:
            kw["range_end"] = spec.range_end
        t = Tracked(name, ci, spec, history=history, resume_of=resume_of, state_opts=dict(state_opts or {}),
                    verify=verify)
        try:
            h = c.watch(spec.key, start_revision=spec.start_revision, prev_kv=spec.prev_kv,
                        filters=list(spec.filters), progress_notify=progress_notify, verify=verify, **kw,
                        **t.state_opts, **spec.value_filter())
        except ZwatchError as e:
            self.watch_counts[f"create failed ({e.code})"] += 1
            return None
        if spec.start_revision == 0:
            try:
                hi = c.get("x").header.revision + 1
            except ZwatchError:
                hi = checker.INF
            spec.start_bounds = (1, hi)
        t.handle = h
        with self.lock:
            self.streams.append(t)
        self.watch_counts["created"] += 1
        return t

    def _drain(self, t: Tracked, wait: float = 0.0) -> None:
        """Move what the handle received into the record (collector and manager both call it)."""
        with t.lock:
            if t.ended:
                return
            c = self.wclients[t.client]
            end = time.monotonic() + wait
            while True:
                try:
                    r = t.handle.get(timeout=max(0.0, end - time.monotonic()) if wait else 0)
                except queue.Empty:
                    return
                if r is None:
                    t.ended = True
                    return
                t.responses.append(r)
                t.epochs.append(self._session_no(t.client, c))
                t.times.append(self._now())

    def _session_no(self, ci, c) -> int:
        """Which session of client ci this is (0, 1, ...): a failover or a fan-out restart opens a new one."""
        info = c.session_info or {}
        key = (info.get("fanout"), info.get("session"))
        seen = self.sessions.setdefault(ci, {})
        if key not in seen:
            seen[key] = len(seen)
        return seen[key]

    def _collector(self, ci):
        while not self.stop_all.is_set():
            with self.lock:
                mine = [t for t in self.streams if t.client == ci and not t.ended]
            for t in mine:
                self._drain(t)
            time.sleep(0.01)

    def _random_spec(self, rng: random.Random) -> tuple[checker.WatchSpec, bool]:
        _name, key, end = rng.choice(RANGES)
        with self.lock:
            cur, comp = self.top_rev, self.compact_acked
        r = rng.random()
        if r < 0.35:
            start = 0
        elif r < 0.65:
            start = rng.randint(max(2, cur - 300), max(2, cur))
        elif r < 0.75 and comp > 2:
            start = rng.randint(2, comp - 1)
        elif r < 0.90:
            start = cur + rng.randint(1, 60)
        else:
            start = 1
        filters = ()
        f = rng.random()
        if f < 0.12:
            filters = ("NOPUT",)
        elif f < 0.24:
            filters = ("NODELETE",)
        spec = checker.WatchSpec(key, end, start, filters, prev_kv=rng.random() < 0.3)
        v = rng.random()
        if v < 0.08:                   # keys-only and value predicates (SPEC.md 7.8); values are w{i}.{seq}
            spec.keys_only = True
        elif v < 0.16:
            spec.value_prefix = f"w{rng.randrange(2)}.".encode()
        elif v < 0.20:
            spec.max_value_bytes = 5
        if v < 0.20:
            self.watch_counts["value_filtered"] += 1
        return spec, rng.random() < 0.3

    def _watch_manager(self, rng: random.Random):
        while not self.stop_load.is_set():
            time.sleep(rng.uniform(0.05, 0.3))
            with self.lock:
                active = [t for t in self.streams if not t.ended and not t.history and not t.canceled_by_client]
            if len(active) < self.cfg.max_active_watches and rng.random() < 0.6:
                spec, pn = self._random_spec(rng)
                self._create_watch(rng.randrange(len(self.wclients)), spec, progress_notify=pn,
                                   state_opts=self._random_state_opts(rng, spec))
            elif active and rng.random() < 0.5:
                t = rng.choice(active)
                t.canceled_by_client = True
                try:
                    t.handle.cancel(timeout=3)
                except ZwatchError:
                    self.watch_counts["cancel unavailable"] += 1
                self.watch_counts["canceled_by_client"] += 1
                self._drain(t, wait=1.0)
                if rng.random() < 0.4:
                    self._resume(t)

    def _random_state_opts(self, rng: random.Random, spec: checker.WatchSpec) -> dict:
        """initial_state / on_compacted for a share cfg.state_watches of the watches.  A digest
        only for an initial-state watch: only it holds the whole range a digest is against."""
        if rng.random() >= self.cfg.state_watches or spec.value_filter():
            return {}          # (the state checks know no value predicates)
        if spec.start_revision == 0 and rng.random() < 0.6:
            self.watch_counts["initial_state"] += 1
            return {"initial_state": True, "on_compacted": rng.choice(("cancel", "resync", "digest"))}
        self.watch_counts["on_compacted_resync"] += 1
        return {"on_compacted": "resync"}

    def _resume(self, t: Tracked):
        """The application's resume: a new watch from the old one's last revision + 1."""
        if any(getattr(r, "canceled", False) for r in t.responses) or t.state_opts:
            return
        reached = checker.stream_reached(checker.StreamRecord(t.name, t.spec, t.responses))
        old = t.spec
        if reached == 0:
            if old.start_revision == 0:
                return
            start = old.start_revision
        else:
            start = max(reached + 1, old.start_revision)
        spec = checker.WatchSpec(old.key, old.range_end, start, old.filters, old.prev_kv, **old.value_filter())
        if self._create_watch(t.client, spec, resume_of=t.name, verify=t.verify) is not None:
            self.watch_counts["resumed_by_app"] += 1

    # ------------------------------------------------------------------ compaction, progress
    def _hist_reached(self) -> int:
        with self.lock:
            hs = [t for t in self.streams if t.history]
        vals = []
        for t in hs:
            with t.lock:
                vals.append(checker.stream_reached(checker.StreamRecord(t.name, t.spec, list(t.responses))))
        return min(vals) if vals else 1 << 62

    def _compactor(self, rng: random.Random):
        c = self._client(200)
        while not self.stop_load.is_set():
            self.stop_load.wait(rng.uniform(*self.cfg.compact_every))
            if self.stop_load.is_set():
                return
            with self.lock:
                target = min(self.top_rev - self.cfg.compact_window, self.store_pos)
                last = self.compact_acked
            target = min(target, self._hist_reached())
            if target <= last + 10:
                continue
            self.compactions["attempted"] += 1
            try:
                c.compact(target)
                with self.lock:
                    self.compact_acked = max(self.compact_acked, target)
                self.compactions["acknowledged"] += 1
            except Unavailable:
                self.compactions["unavailable"] += 1
            except ZwatchError as e:
                self.compactions[f"error {e.code}"] += 1

    def _progress_requester(self, rng: random.Random):
        while not self.stop_load.is_set():
            self.stop_load.wait(rng.uniform(0.5, 2.0))
            ci = rng.randrange(len(self.wclients))
            c = self.wclients[ci]
            try:
                c.request_progress(timeout=3)
                self.progress_counts["requested"] += 1
            except ZwatchError:
                self.progress_counts["unavailable"] += 1

    # ------------------------------------------------------------------ killer
    def _killer(self, rng: random.Random):
        names = list(self.cluster.actors)
        first_round = names[:]
        rng.shuffle(first_round)
        if self.stop_kills.wait(1.5):
            return
        while not self.stop_kills.is_set():
            if first_round:
                victims = [first_round.pop(0)]
            elif rng.random() < self.cfg.double_kill:
                victims = rng.sample(names, 2)           # e.g. the writer and a fan-out together
            else:
                victims = [rng.choice(names)]
            down = rng.uniform(*self.cfg.down_time)
            self._kill_restart(victims, down)
            if self.stop_kills.wait(rng.uniform(*self.cfg.kill_every)):
                return

    def _pacer(self, rng: random.Random):
        """Quiet periods: no writes, so a restarted fan-out waits for a heartbeat to join the stream."""
        while not self.stop_load.is_set():
            if self.stop_load.wait(rng.uniform(*self.cfg.quiet_every)):
                return
            self.quiet.set()
            self.quiet_periods += 1
            self.stop_load.wait(rng.uniform(*self.cfg.quiet_for))
            self.quiet.clear()

    def _kill_restart(self, names, down: float):
        actors = []
        for name in names:
            a = self.cluster.actors[name]
            kind = name.rstrip("0123456789")
            actors.append((name, a, kind, len(a.events(f"{kind}.start"))))
        self.kill_log.append((self._now(), "+".join(names), round(down, 3)))
        for name, a, kind, _ in actors:
            a.kill(signal.SIGKILL)
            self.kills[kind] += 1
            self.kills_by_actor[name] += 1
        time.sleep(down)
        for name, a, kind, before in actors:
            a.start()
        for name, a, kind, before in actors:
            for attempt in range(3):
                try:
                    a.wait_event(f"{kind}.start", timeout=20, count=before + 1)
                    break
                except (RuntimeError, TimeoutError) as e:
                    self.harness_errors.append(f"restart of {name} (attempt {attempt + 1}): {str(e)[:300]}")
                    a.kill(signal.SIGKILL)
                    before = len(a.events(f"{kind}.start"))
                    a.start()

    # ------------------------------------------------------------------ the end
    def _quiesce_and_check(self, killer) -> dict:
        cfg = self.cfg
        self.stop_kills.set()
        killer.join(timeout=60)
        for name, a in self.cluster.actors.items():
            if not a.alive():
                self.harness_errors.append(f"{name} was down at the end; restarted")
                self._kill_restart([name], 0)
        kills_stopped = time.monotonic()
        self.stop_load.set()
        for t in self.threads:
            if t.name.startswith(("writer", "watch-manager", "compactor", "progress", "pacer", "lease-worker")):
                t.join(timeout=15)
        if cfg.leases:
            self._wait_for_short_leases(kills_stopped)
        time.sleep(1.0)                          # writes still in a queue land now
        deadline = time.monotonic() + cfg.quiesce_timeout
        # every client back on a fan-out that serves
        for c in self.wclients:
            while time.monotonic() < deadline:
                try:
                    c.get("x", timeout=3)
                    break
                except ZwatchError:
                    time.sleep(0.2)
        final_rev = self.store.current_revision()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.store.current_revision()
            if now == final_rev:
                break
            final_rev = now
        self._read_store(final_rev)
        final_compact = self.store.compact_revision()
        # progress until every live stream reached the final revision
        stuck = []
        while time.monotonic() < deadline:
            for c in self.wclients:
                try:
                    c.request_progress(timeout=3)
                except ZwatchError:
                    pass
            with self.lock:
                streams = list(self.streams)
            for t in streams:
                self._drain(t)
            stuck = [t for t in streams if not t.ended and not t.canceled_by_client and self._live_top(t) < final_rev]
            if not stuck:
                break
            time.sleep(0.5)
        final_kvs = None
        try:
            final_kvs = self.wclients[0].get(b"\x00", from_key=True, timeout=5).kvs
        except ZwatchError as e:
            self.harness_errors.append(f"final get failed: {e}")
        moved = self.store.current_revision()
        if moved != final_rev:
            self.harness_errors.append(f"the store moved after quiescing: {final_rev} -> {moved}")
        self.stop_all.set()
        for t in self.threads:
            t.join(timeout=5)
        with self.lock:
            streams = list(self.streams)
        for t in streams:
            self._drain(t)
        # ---- check
        records = []
        for t in streams:
            records.append(checker.StreamRecord(
                t.name, t.spec, list(t.responses), list(t.epochs), canceled_by_client=t.canceled_by_client,
                final_revision=final_rev if not t.canceled_by_client else None, resume_of=t.resume_of))
        result = checker.check_all(self.history, records, acked=self.acked, final_kvs=final_kvs,
                                   attempted=self.attempted, final_revision=final_rev,
                                   compact_revision=final_compact,
                                   leases=list(self.lease_lives.values()) if cfg.leases else None,
                                   client_deletes_lease_keys=False)
        if cfg.dump:
            import pickle
            with open(cfg.dump, "wb") as f:
                pickle.dump({"history": self.history, "streams": records, "acked": self.acked,
                             "final_kvs": final_kvs, "final_revision": final_rev, "compact_revision": final_compact,
                             "kill_log": self.kill_log, "t0": self.t0,
                             "times": {t.name: t.times for t in streams}}, f)
        violations = list(self.store_errors) + self.lease_problems + result.violations
        # the history watchers must be complete histories themselves
        for t in streams:
            if t.history and not any(getattr(r, "canceled", False) for r in t.responses):
                evs, problems = checker.history_from_stream(t.responses, 2, final_rev)
                violations += [f"{p} ({t.name})" for p in problems]
                violations += checker.compare_histories(self.history, evs, names=("store", t.name))
        by_g = Counter(result.by_guarantee)
        by_g["History"] += len(violations) - len(result.violations) - len(self.lease_problems)
        by_g["LeaseAlive"] += len(self.lease_problems)
        by_g = +by_g
        failovers = sum(c.failovers for c in self.cluster.clients)
        sessions = sum(len(v) - 1 for v in self.sessions.values())
        rep = {
            "seconds": cfg.seconds, "seed": cfg.seed, "fanouts": cfg.fanouts,
            "env": cfg.extra_env,
            "revisions": final_rev, "compact_revision": final_compact,
            "writes": dict(self.write_counts),
            "leases": dict(self.lease_counts, kept=len(self.kept_leases),
                           revocations_seen=result.counts["lease_revocations"],
                           expiries_seen=result.counts["lease_revocations_expired"],
                           checked=result.counts["leases_checked"]),
            "compactions": dict(self.compactions),
            "watches": dict(self.watch_counts, streams=len(streams),
                            canceled_compacted=result.counts["canceled_compacted"],
                            canceled_other=result.counts["canceled_other"]),
            "responses": result.counts["responses"],
            "events_delivered": result.counts["events_delivered"],
            "states_checked": result.counts["states"],
            "progress_notifications": result.counts["progress_notifications"],
            "verified_bookmarks": result.counts["verified_bookmarks"],
            "progress_requests": dict(self.progress_counts),
            "history_events": len(self.history),
            "kills": dict(self.kills),
            "kills_by_actor": dict(self.kills_by_actor),
            "quiet_periods": self.quiet_periods,
            "kill_log": self.kill_log,
            "client_failovers": failovers,
            "watch_client_new_sessions": sessions,
            "stream_failover_resumes": result.counts["failover_resumes"],
            "stuck_at_end": [t.name for t in stuck],
            "violations": violations,
            "by_guarantee": dict(by_g),
            "harness_errors": self.harness_errors,
            "logs": cfg.logs,
        }
        return rep

    def _live_top(self, t: Tracked) -> int:
        with t.lock:
            reached = checker.stream_reached(checker.StreamRecord(t.name, t.spec, list(t.responses)))
        if t.spec.start_revision > 0:
            reached = max(reached, t.spec.start_revision - 1)
        if any(getattr(r, "canceled", False) for r in t.responses):
            return 1 << 62
        return reached

    def _save_logs(self):
        if not self.cfg.logs or self.cluster is None:
            return
        os.makedirs(self.cfg.logs, exist_ok=True)
        for name, a in self.cluster.actors.items():
            with open(os.path.join(self.cfg.logs, f"{name}.log"), "w") as f:
                f.writelines(a.raw)
        with open(os.path.join(self.cfg.logs, "kills.json"), "w") as f:
            json.dump(self.kill_log, f)


def format_report(rep: dict) -> str:
    w = rep["writes"]
    lines = [
        f"zwatch chaos: {rep['seconds']:.0f}s seed {rep['seed']} fanouts {rep['fanouts']}",
        f"  writes: {w.get('attempted', 0)} attempted, {w.get('acknowledged', 0)} acknowledged, "
        f"{w.get('unavailable', 0)} unavailable"
        + "".join(f", {n} {k}" for k, n in w.items() if k.startswith("error")),
        f"  store: revision {rep['revisions']}, compact revision {rep['compact_revision']}, "
        f"{rep['history_events']} events; compactions {rep['compactions']}",
        f"  leases: {rep.get('leases')}",
        f"  watches: {rep['watches']}",
        f"  delivered: {rep['events_delivered']} events in {rep['responses']} responses, "
        f"{rep['progress_notifications']} progress notifications (requests {rep['progress_requests']}), "
        f"{rep['verified_bookmarks']} verified bookmarks checked against the history",
        f"  kills: {rep['kills']}; client failovers {rep['client_failovers']}, watch-client new sessions "
        f"{rep['watch_client_new_sessions']}, "
        f"stream resumes after failover {rep['stream_failover_resumes']}",
    ]
    if rep["stuck_at_end"]:
        lines.append(f"  stuck at the end: {rep['stuck_at_end'][:20]}")
    if rep["harness_errors"]:
        lines.append(f"  harness errors: {rep['harness_errors']}")
    lines.append(f"  violations: {len(rep['violations'])} {rep['by_guarantee'] or ''}")
    for v in rep["violations"][:60]:
        lines.append(f"    {v}")
    if len(rep["violations"]) > 60:
        lines.append(f"    ... {len(rep['violations']) - 60} more")
    if rep.get("logs"):
        lines.append(f"  actor logs: {rep['logs']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zwatch.tools.chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fanouts", type=int, default=2)
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--watch-clients", type=int, default=4)
    ap.add_argument("--kill-every", type=float, nargs=2, default=(2.0, 5.0), metavar=("MIN", "MAX"))
    ap.add_argument("--ring-revisions", type=int, default=100)
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra actor environment, e.g. ZWATCH_SESSION_WINDOW_BYTES=16384 (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--logs", help="write every actor's log lines into this directory")
    ap.add_argument("--dump", help="pickle the history, acknowledged writes and streams into this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    ap.add_argument("--no-leases", action="store_true", help="no lease worker (leases, expiry, revokes)")
    ap.add_argument("--state-watches", type=float, default=0.0, metavar="SHARE",
                    help="share of the watches created with initial_state and/or on_compacted resync|digest (issue #16)")
    ap.add_argument("--no-verify", action="store_true", help="no verified streams (every watch plain)")
    args = ap.parse_args(argv)
    cfg = Config(seconds=args.seconds, seed=args.seed, fanouts=args.fanouts, writers=args.writers,
                 watch_clients=max(2, args.watch_clients), kill_every=tuple(args.kill_every),
                 ring_revisions=args.ring_revisions, logs=args.logs, dump=args.dump, keep=args.keep,
                 leases=not args.no_leases, state_watches=args.state_watches,
                 verify=not args.no_verify,
                 extra_env=dict(kv.split("=", 1) for kv in args.env))

    def on_term(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        rep = Chaos(cfg).run()
    except KeyboardInterrupt:
        print("interrupted; cluster stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    if args.json:
        print(json.dumps(rep, default=str))
    else:
        print(format_report(rep))
    if rep["violations"]:
        return 1
    return 2 if rep["harness_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
