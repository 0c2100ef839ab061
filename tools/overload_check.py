"""Issue #8's "done means" runs, counted on the raw wire (not through the client, which drops duplicates).

    python -m zwatch.tools.overload_check distinct   # 10,000 distinct-spec watchers, slow readers make victims
    python -m zwatch.tools.overload_check staller    # a slow reader catching up, a staller, healthy watchers

Each run starts a real cluster (zwatch.tools.cluster) in a tmp dir, records (watch id, revision) of
every event every raw session receives, then reads the store's history afterwards and compares,
per watch: duplicates, order violations, missing and unexpected revisions.  Server figures come
from the actors' log lines (fanout.stats victims/handoffs, watch.victim, session.close,
syncer.stats records_scanned).  One JSON line per run on stdout; exit status 1 when any stream is
wrong or incomplete.

A little over 500 lines because its one job is two scenarios that share one recorder, one
checker against the store and one report; apart, each would repeat them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from bisect import bisect_left

import zmq

from zwatch import messages
from zwatch.actors.store import Store
from zwatch.tools.cluster import Cluster, raw_session


def named_session(endpoint: str, name: str, **sockopts):
    """raw_session, but the hello names the client so that the fan-out's log lines name it too."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    for opt, value in sockopts.items():
        s.setsockopt(getattr(zmq, opt), value)
    s.connect(endpoint)
    s.send(messages.encode_request("hello", 1, {"version": 1, "client": name}))
    if not s.poll(5000):
        s.close()
        raise TimeoutError(f"no hello reply from {endpoint}")
    return s, len(s.recv())


class WireSession(threading.Thread):
    """One raw session in its own thread: creates its watches (create_chunk at a time: 0 = all pipelined),
    then reads, acks and pings.

    frame_delay_s / read_bytes_per_s slow its reading down; ack_every_s > 0 acks late (0: after every
    frame).  never_read: sends pings only (a staller).  Settings may be changed while it runs."""

    def __init__(self, endpoint: str, name: str, watches: dict[int, dict], *, frame_delay_s=0.0,
                 read_bytes_per_s=0.0, ack_every_s=0.0, ping_every_s=1.0, never_read=False, create_chunk=100,
                 **sockopts):
        super().__init__(name=name, daemon=True)
        self.sock, self.received = named_session(endpoint, name, **sockopts)
        self.watches = watches
        self.frame_delay_s, self.read_bytes_per_s, self.ack_every_s = frame_delay_s, read_bytes_per_s, ack_every_s
        self.ping_every_s, self.never_read, self.create_chunk = ping_every_s, never_read, create_chunk
        self.events: dict[int, list[int]] = {wid: [] for wid in watches}
        self.start_rev: dict[int, int] = {}        # first revision each watch must deliver
        self.controls: list[dict] = []
        self.errors: list = []
        self.frames = 0
        self.pings = 0
        self.closed_by_server = False
        self.target_rev = None                     # reached_at: seconds from start to the first event >= it
        self.reached_at = None
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.created = threading.Event()

    def run(self):
        s = self.sock
        req_of, todo, first = {}, list(self.watches.items()), 0
        next_ping = last_ack = time.monotonic()
        acked = 0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= next_ping:
                    self.pings += 1
                    s.send(messages.encode_request("ping", 1_000_000 + self.pings, {}))
                    next_ping = now + self.ping_every_s
                if todo and (not req_of or self.never_read):    # the next chunk of creates
                    chunk, todo = todo[:self.create_chunk or len(todo)], todo[self.create_chunk or len(todo):]
                    for i, (wid, body) in enumerate(chunk, first):
                        req_of[10 + i] = wid
                        s.send(messages.encode_request("watch_create", 10 + i, dict(body, watch_id=wid)))
                    first += len(chunk)
                if self.never_read:
                    if not self.created.is_set() and self.pings >= 2:
                        self.created.set()           # it cannot see the reply; it was sent
                    time.sleep(min(0.05, max(0.0, next_ping - now)))
                    continue
                if self.received != acked and (self.ack_every_s <= 0 or now - last_ack >= self.ack_every_s):
                    s.send(messages.encode_request("ack", 0, {"bytes": self.received}))
                    acked, last_ack = self.received, now
                if not s.poll(20):
                    continue
                raw = s.recv()
                self.received += len(raw)
                self.frames += 1
                kind, req_id, body = messages.decode_server_frame(raw)
                if kind == "w":
                    for r in body:
                        if isinstance(r, dict):
                            self.controls.append(r)
                            continue
                        ids, _rev, evs, _fragment = r
                        if evs:
                            got = [e[1][2] for e in evs]
                            for wid in ids:
                                self.events[wid].extend(got)
                            if self.reached_at is None and self.target_rev is not None and got[-1] >= self.target_rev:
                                self.reached_at = time.monotonic() - self.t0
                elif kind == "ok" and req_id in req_of:
                    wid = req_of.pop(req_id)
                    start = self.watches[wid].get("start_revision", 0)
                    self.start_rev[wid] = start if start > 0 else body["header"]["revision"] + 1
                    if not req_of and not todo:
                        self.created.set()
                elif kind == "err":
                    self.errors.append((req_id, body))
                    if body.get("reason") == "NO_SESSION":
                        self.closed_by_server = True
                        return
                    if req_id in req_of:
                        req_of.pop(req_id)
                        if not req_of and not todo:
                            self.created.set()
                delay = self.frame_delay_s + (len(raw) / self.read_bytes_per_s if self.read_bytes_per_s else 0.0)
                if delay:
                    time.sleep(delay)
        finally:
            s.close()

    def go_fast(self):
        self.frame_delay_s = self.read_bytes_per_s = self.ack_every_s = 0.0


class Putter(threading.Thread):
    """Pipelined puts on a raw session at a target rate; keeps (revision, key) of every acknowledged one."""

    def __init__(self, endpoint: str, keys, value_of, rate: float, seconds: float, window: int = 200):
        super().__init__(name="putter", daemon=True)
        self.sock = raw_session(endpoint)
        self.keys, self.value_of, self.rate, self.seconds, self.window = keys, value_of, rate, seconds, window
        self.acked: list[tuple[int, bytes]] = []
        self.errors: dict[str, int] = {}
        self.sent = 0
        self.elapsed = 0.0

    def run(self):
        s, pending, t0 = self.sock, {}, time.monotonic()
        end = t0 + self.seconds
        drain_until = end + 30
        while True:
            now = time.monotonic()
            if now >= drain_until or (now >= end and not pending):
                break
            due = int((now - t0) * self.rate) if now < end else self.sent
            while self.sent < due and len(pending) < self.window:
                key = self.keys(self.sent)
                pending[self.sent] = key
                s.send(messages.encode_request("put", self.sent, {"key": key, "value": self.value_of(key)}))
                self.sent += 1
            if not s.poll(5):
                continue
            while True:
                try:
                    raw = s.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                kind, req_id, body = messages.decode_server_frame(raw)
                key = pending.pop(req_id, None)
                if key is None:
                    continue
                if kind == "ok":
                    self.acked.append((body["header"]["revision"], key))
                else:
                    code = body.get("code", kind)
                    self.errors[code] = self.errors.get(code, 0) + 1
        self.elapsed = time.monotonic() - t0
        self.errors["no_reply"] = len(pending)
        s.close()


def store_truth(data_dir: str) -> list[tuple[int, bytes]]:
    """(revision, key) of every event in the store's history, in order."""
    store = Store(data_dir)
    out = []
    try:
        with store.reader() as r:
            rev, last = 1, store.current_revision()
            while rev <= last:
                recs = r.history(rev, last, max_records=20_000, max_bytes=256 << 20)
                if not recs:
                    break
                out += [(main, kv[0]) for main, _sub, _typ, kv, _n in recs]
                rev = recs[-1][0] + 1
    finally:
        store.close()
    return out


def store_truth_after(cl: Cluster, data_dir: str) -> list[tuple[int, bytes]]:
    cl.stop()                                   # idempotent: the finally clause stops it again
    return store_truth(data_dir)


def judge(sessions: list[WireSession], expected_of) -> dict:
    """Per watch: received vs expected revision lists.  expected_of(session, wid) -> sorted revisions."""
    f = dict(watches=0, expected=0, delivered=0, duplicates=0, order_violations=0, missing=0, unexpected=0,
             incomplete_watches=0, canceled=0, examples=[])
    for s in sessions:
        f["canceled"] += len(s.controls)
        for wid, got in s.events.items():
            exp = expected_of(s, wid)
            f["watches"] += 1
            f["expected"] += len(exp)
            f["delivered"] += len(got)
            dups = len(got) - len(set(got))
            order = sum(1 for a, b in zip(got, got[1:]) if b <= a)
            missing = len(set(exp) - set(got))
            unexpected = len(set(got) - set(exp))
            f["duplicates"] += dups
            f["order_violations"] += order
            f["missing"] += missing
            f["unexpected"] += unexpected
            if dups or order or missing or unexpected:
                f["incomplete_watches"] += 1
                if len(f["examples"]) < 5:
                    seen, dup_revs = set(), []
                    for r in got:
                        if r in seen:
                            dup_revs.append(r)
                        seen.add(r)
                    f["examples"].append(dict(session=s.name, watch_id=wid, got=len(got), expected=len(exp),
                                              dup_revs=dup_revs[:10], missing=sorted(set(exp) - set(got))[:10],
                                              unexpected=sorted(set(got) - set(exp))[:10],
                                              first_order_violation=next(((a, b) for a, b in zip(got, got[1:])
                                                                          if b <= a), None)))
    return f


def server_figures(cl: Cluster) -> dict:
    fo = cl["fanout0"]
    stats = fo.events("fanout.stats")
    victim_lines = fo.events("watch.victim")
    per_session = {}
    for v in victim_lines:
        n = per_session.setdefault(v.get("session"), [0, 0])
        n[0] += 1
        n[1] += v.get("repeated", 0) or 0
    closes = {}
    for c in fo.events("session.close"):
        closes[f"{c.get('session')}:{c.get('reason')}"] = closes.get(f"{c.get('session')}:{c.get('reason')}", 0) + 1
    sstats = cl["syncer"].events("syncer.stats")
    scanned, total = [], 0
    for line in sstats:
        total += line.get("records_scanned", 0)
        scanned.append(total)
    return dict(victims=sum(s.get("victims", 0) for s in stats), handoffs=sum(s.get("handoffs", 0) for s in stats),
                synced_from_syncer=sum(s.get("synced_from_syncer", 0) for s in stats),
                ring_catchups=sum(s.get("ring_catchups", 0) for s in stats),
                watch_victim_lines=len(victim_lines),
                watch_victim_repeated=sum(v.get("repeated", 0) or 0 for v in victim_lines),
                watch_victim_lines_repeated_by_session={k: v for k, v in sorted(per_session.items(), key=str)},
                session_not_reading=fo.events("fanout.session_not_reading"),
                session_close=closes,
                syncer_records_scanned=total, syncer_handoffs=sum(s.get("handoffs", 0) for s in sstats),
                syncer_batches=sum(s.get("batches", 0) for s in sstats),
                syncer_scanned_cumulative_every_5s=scanned[4::5],
                fanout_log_bytes=sum(len(x) for x in fo.raw),
                fanout_log_lines=len(fo.raw))


def wait_all(sessions, cond, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.5)
    return -1.0


# ------------------------------------------------------------------------------------ distinct
def run_distinct(a) -> dict:
    """a.watchers watches with distinct ranges [k_i, k_{i+width}) over a.sessions sessions (watch i
    in session i % sessions); a third start now, a third from revision 2 (history), a third in the
    future; a.slow sessions read slowly and ack late while a.rate puts/s go on for a.seconds."""
    data_dir = tempfile.mkdtemp(prefix="zw_overload_")
    env = {"ZWATCH_SESSION_WINDOW_BYTES": str(a.window), "ZWATCH_STALL_S": str(a.stall),
           "ZWATCH_IDLE_TIMEOUT_S": "60", **dict(e.split("=", 1) for e in a.env)}
    if a.ring is not None:
        env["ZWATCH_RING_REVISIONS"] = str(a.ring)
    cl = Cluster(data_dir, env=env).start()
    n = a.watchers
    key = [f"d/{i:05d}".encode() for i in range(n + a.width)]
    order = list(range(n))
    order = order[::7] + [i for i in range(n) if i % 7]     # spread the puts over the key space
    value = b"v" * a.value_size
    try:
        # history: a.history puts before the watches exist
        pre = Putter(cl.fanout_eps[0], lambda j: key[order[j % n]], lambda k: value,
                     rate=a.history / 2.0, seconds=2.0, window=500)
        pre.start()
        pre.join()
        now_rev = max(r for r, _ in pre.acked)
        future = now_rev + int(a.rate * a.seconds / 4)
        sessions = []
        for si in range(a.sessions):
            watches = {}
            for i in range(si, n, a.sessions):
                body = {"key": key[i], "range_end": key[i + a.width]}
                if i % 3 == 1:
                    body["start_revision"] = 2
                elif i % 3 == 2:
                    body["start_revision"] = future
                watches[i + 1] = body
            slow = si < a.slow
            opts = dict(RCVHWM=a.slow_rcvhwm, RCVBUF=4096) if slow and a.slow_rcvhwm else dict(RCVHWM=0)
            sessions.append(WireSession(cl.fanout_eps[0], f"s{si}{'-slow' if slow else ''}", watches,
                                        create_chunk=a.create_chunk, **opts))
        for s in sessions:
            s.start()
        for s in sessions:
            assert s.created.wait(60), f"{s.name}: watches not created"
        for s in sessions[:a.slow]:              # slow once created (1,000 create replies read slowly
            s.frame_delay_s, s.ack_every_s = a.frame_delay, a.ack_every   # would be a non-reader)
        putter = Putter(cl.fanout_eps[0], lambda j: key[order[(j + len(pre.acked)) % n]], lambda k: value,
                        rate=a.rate, seconds=a.seconds)
        putter.start()
        putter.join()
        for s in sessions:
            s.go_fast()
        acked = sorted(pre.acked + putter.acked)
        revs_of_key: dict[bytes, list[int]] = {}
        for r, k in acked:
            revs_of_key.setdefault(k, []).append(r)

        def expected_of(s, wid):
            start, out = s.start_rev.get(wid, 1 << 62), []
            for i in range(wid - 1, wid - 1 + a.width):
                rs = revs_of_key.get(key[i], [])
                out += rs[bisect_left(rs, start):]
            return sorted(out)

        expected = {(s.name, wid): len(expected_of(s, wid)) for s in sessions for wid in s.watches}
        drain_s = wait_all(sessions, lambda: all(len(s.events[w]) >= expected[(s.name, w)]
                                                 for s in sessions for w in s.watches), a.drain)
        time.sleep(1.0)                               # late duplicates, if any, arrive now
        for s in sessions:
            s.stop.set()
        for s in sessions:
            s.join(5)
        server = server_figures(cl)
        truth = store_truth_after(cl, data_dir)
    finally:
        cl.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    truth_set = set(truth)
    fig = judge(sessions, expected_of)
    fig.update(scenario="distinct", watchers=n, sessions=a.sessions, slow_sessions=a.slow, env=env,
               slow_rcvhwm=a.slow_rcvhwm, create_chunk=a.create_chunk,
               puts=len(putter.acked), puts_per_s=round(len(putter.acked) / max(putter.elapsed, 1e-9), 1),
               put_errors={k: v for k, v in putter.errors.items() if v}, history_puts=len(pre.acked),
               acked_not_in_store=sum(1 for x in acked if x not in truth_set),
               store_revisions_not_acked=len(truth_set) - len(set(acked) & truth_set),
               drain_s=round(drain_s, 1), session_errors=sum(len(s.errors) for s in sessions), **server)
    return fig


# ------------------------------------------------------------------------------------ staller
def run_staller(a) -> dict:
    """a.history revisions written before; then on one fan-out: a staller (watch on a hot key with big
    values, never reads, pings every 0.5 s), a slow reader from revision 2 (bounded bytes/s, acks),
    a fast catch-up from revision 2, a healthy live watcher, while a.rate puts/s go on."""
    data_dir = tempfile.mkdtemp(prefix="zw_overload_")
    hkeys = [f"h/{i:04d}".encode() for i in range(1000)]
    hvalue = b"h" * a.value_size
    big, bigvalue = b"big", b"B" * a.big_size
    store = Store(data_dir)
    for start in range(0, a.history, 5000):
        store.apply_batch([("put", {"key": hkeys[j % 1000], "value": hvalue})
                           for j in range(start, min(a.history, start + 5000))])
    store.close()
    env = {"ZWATCH_RING_REVISIONS": str(a.ring), "ZWATCH_SESSION_WINDOW_BYTES": str(a.window),
           "ZWATCH_STALL_S": str(a.stall), "ZWATCH_IDLE_TIMEOUT_S": "60", "ZWATCH_SESSION_HWM": str(a.hwm),
           **dict(e.split("=", 1) for e in a.env)}
    cl = Cluster(data_dir, env=env).start()
    client = None
    try:
        ep = cl.fanout_eps[0]
        hot = {"key": b"h/", "range_end": b"h0"}
        staller = WireSession(ep, "staller", {1: {"key": big}}, never_read=True, ping_every_s=0.5,
                              RCVHWM=1, RCVBUF=4096)
        slow = WireSession(ep, "slow_reader", {1: dict(hot, start_revision=2)},
                           read_bytes_per_s=a.slow_bps, RCVHWM=0)
        catchup = WireSession(ep, "fast_catchup", {1: dict(hot, start_revision=2)}, RCVHWM=0)
        slow.target_rev = catchup.target_rev = a.history + 1   # the end of the history written before
        healthy = WireSession(ep, "healthy", {1: dict(hot), 2: {"key": big}}, RCVHWM=0)
        sessions = [slow, catchup, healthy]
        staller.start()
        staller.created.wait(5)
        for s in sessions:
            s.start()
        for s in sessions:
            assert s.created.wait(30), f"{s.name}: watches not created"
        client_events, client_last = [0], [0]
        if a.client:
            from zwatch import Client
            client = Client([ep], timeout=10, heartbeat=0.5)
            cw = client.watch(b"h/", range_end=b"h0", start_revision=2)

            def consume():
                for resp in cw:
                    client_events[0] += len(resp.events)
                    if resp.events:
                        client_last[0] = resp.events[-1].kv.mod_revision
            threading.Thread(target=consume, daemon=True).start()
        every = max(1, int(a.rate / a.big_per_s))
        putter = Putter(ep, lambda j: big if j % every == every - 1 else hkeys[j % 1000],
                        lambda k: bigvalue if k == big else hvalue, rate=a.rate, seconds=a.seconds)
        putter.start()
        putter.join()
        hot_revs = list(range(2, a.history + 2)) + sorted(r for r, k in putter.acked if k != big)
        big_revs = sorted(r for r, k in putter.acked if k == big)
        last_hot = hot_revs[-1]
        slow_drain = wait_all([slow], lambda: bool(slow.events[1]) and slow.events[1][-1] >= last_hot, a.drain)
        time.sleep(1.0)
        for s in sessions + [staller]:
            s.stop.set()
        for s in sessions + [staller]:
            s.join(5)
        server = server_figures(cl)
        client_figures = {}
        if client is not None:
            client_figures = dict(client_events=client_events[0], client_last_revision=client_last[0],
                                  client_duplicates_dropped=client.duplicates_dropped)
        if client is not None:
            client.close()
            client = None
        truth = store_truth_after(cl, data_dir)
    finally:
        if client is not None:
            client.close()
        cl.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    truth_hot = [r for r, k in truth if k.startswith(b"h/")]
    truth_big = [r for r, k in truth if k == big]

    def expected_of(s, wid):
        body, start = s.watches[wid], s.start_rev.get(wid, 1 << 62)
        src = truth_big if body["key"] == big else truth_hot
        return src[bisect_left(src, start):]

    per = {s.name: judge([s], expected_of) for s in sessions}
    fig = dict(scenario="staller", env=env, history=a.history, puts=len(putter.acked),
               puts_per_s=round(len(putter.acked) / max(putter.elapsed, 1e-9), 1),
               big_puts=len(big_revs), put_errors={k: v for k, v in putter.errors.items() if v},
               acked_hot_matches_store=(hot_revs == truth_hot), acked_big_matches_store=(big_revs == truth_big),
               slow_reader_done_after_writes_s=round(slow_drain, 1),
               fast_catchup_history_s=catchup.reached_at and round(catchup.reached_at, 1),
               slow_reader_history_s=slow.reached_at and round(slow.reached_at, 1),
               staller_pings=staller.pings, staller_closed=staller.closed_by_server,
               writes_s=round(putter.elapsed, 1), **client_figures, **server)
    for name, f in per.items():
        f.pop("watches")
        fig[name] = f
    fig.update(duplicates=sum(f["duplicates"] for f in per.values()),
               missing=sum(f["missing"] for f in per.values()),
               order_violations=sum(f["order_violations"] for f in per.values()),
               unexpected=sum(f["unexpected"] for f in per.values()),
               canceled=sum(f["canceled"] for f in per.values()),
               incomplete_watches=sum(f["incomplete_watches"] for f in per.values()))
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="scenario", required=True)
    d = sub.add_parser("distinct", help="10,000 distinct-spec watchers, slow readers, ~200 puts/s")
    d.add_argument("--watchers", type=int, default=10_000)
    d.add_argument("--sessions", type=int, default=10)
    d.add_argument("--slow", type=int, default=3, help="sessions that read slowly and ack late")
    d.add_argument("--width", type=int, default=5, help="keys per watch range")
    d.add_argument("--rate", type=float, default=200.0)
    d.add_argument("--seconds", type=float, default=60.0)
    d.add_argument("--history", type=int, default=2000, help="puts before the watches exist")
    d.add_argument("--value-size", type=int, default=100)
    d.add_argument("--frame-delay", type=float, default=0.02, help="slow sessions: sleep per frame")
    d.add_argument("--ack-every", type=float, default=3.0, help="slow sessions: ack at most this often")
    d.add_argument("--slow-rcvhwm", type=int, default=0,
                   help="slow sessions' ZMQ RCVHWM (with a 4 KiB RCVBUF): their pipe fills (default: unlimited)")
    d.add_argument("--create-chunk", type=int, default=100, help="watch_creates in flight per session (0: all)")
    d.add_argument("--window", type=int, default=16 * 1024, help="ZWATCH_SESSION_WINDOW_BYTES")
    d.add_argument("--stall", type=float, default=0.5, help="ZWATCH_STALL_S")
    d.add_argument("--ring", type=int, default=None, help="ZWATCH_RING_REVISIONS (default: the server's)")
    d.add_argument("--drain", type=float, default=120.0)
    s = sub.add_parser("staller", help="slow reader + staller + healthy watchers, ~750 puts/s")
    s.add_argument("--history", type=int, default=50_000)
    s.add_argument("--rate", type=float, default=750.0)
    s.add_argument("--seconds", type=float, default=45.0)
    s.add_argument("--value-size", type=int, default=200)
    s.add_argument("--big-size", type=int, default=100_000)
    s.add_argument("--big-per-s", type=float, default=5.0)
    s.add_argument("--slow-bps", type=float, default=400_000, help="slow reader: bytes read per second")
    s.add_argument("--window", type=int, default=1 << 20, help="ZWATCH_SESSION_WINDOW_BYTES")
    s.add_argument("--stall", type=float, default=2.0, help="ZWATCH_STALL_S")
    s.add_argument("--hwm", type=int, default=10, help="ZWATCH_SESSION_HWM (small: the staller's pipe fills)")
    s.add_argument("--ring", type=int, default=100, help="ZWATCH_RING_REVISIONS")
    s.add_argument("--client", action="store_true", help="also a zwatch.Client watch from 2 (duplicates_dropped)")
    s.add_argument("--drain", type=float, default=120.0)
    for sp in (d, s):
        sp.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    a = p.parse_args(argv)
    fig = run_distinct(a) if a.scenario == "distinct" else run_staller(a)
    print(json.dumps(fig, default=str))
    bad = fig["duplicates"] or fig["missing"] or fig["order_violations"] or fig["unexpected"] \
        or fig["incomplete_watches"] or fig["canceled"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
