"""etcd's known watch bugs, replayed end to end against zwatch (zwatch issue #8).

One test per etcd (or Kubernetes) issue, named after it; its docstring says what etcd did
wrong and what the test checks.  Every test runs a real cluster (writer, syncer, fan-outs)
and watches either through ``zwatch.Client`` or through a raw wire session (``Wire`` below),
which records every frame in arrival order so that Ordered / Unique / Bookmarkable can be
checked on what the fan-out really sent, not on what a client library made of it.

Not here: #18089 (DELETE at the compact revision) and #19179 / #17780 (their own module).
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import defaultdict

import msgpack
import pytest
import zmq

from zwatch import errors

from support import collect, no_more, revs


# ---------------------------------------------------------------------------- helpers
class Wire:
    """A raw session on one fan-out that records everything it receives, in order.

    While it records it checks, per watch, what etcd broke in the issues below:
    Ordered (revisions never go back), Unique (a (key, revision) event never twice) and
    Bookmarkable (no event <= R after a progress notification at R naming the watch, by id
    or as ``[-1]`` = every watch of the session whose create reply had arrived).
    """

    def __init__(self, endpoint: str, **sockopts):
        # Not support.raw_session: the ack must count the hello reply too (SPEC: every frame
        # received since the hello reply, that reply included), else "everything sent is
        # acknowledged" never holds and a frame bigger than the window never goes.
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        for name, value in sockopts.items():
            self.sock.setsockopt(getattr(zmq, name), value)
        self.sock.connect(endpoint)
        self.sock.send(msgpack.packb(["hello", 1, {"version": 1, "client": "regression-wire"}]))
        assert self.sock.poll(5000), f"no hello reply from {endpoint}"
        self.received = len(self.sock.recv())
        self.req_ids = itertools.count(1000)
        self.replies: dict[int, tuple] = {}               # req_id -> (kind, body, log position)
        self.log: list[tuple] = []                        # every response, in arrival order
        self.events: dict[int, list] = defaultdict(list)  # watch id -> [(revision, key)]
        self.first_event_at: dict[int, int] = {}          # watch id -> log position
        self.named_progress: dict[int, list] = defaultdict(list)  # watch id -> [(R, log pos)], by id
        self.covered: dict[int, list] = defaultdict(list)  # watch id -> [(R, log pos)], by id or [-1]
        self.session_progress: list[tuple] = []           # [-1] notifications: (R, log position)
        self.live: set[int] = set()                       # created and not canceled
        self.canceled: dict[int, dict] = {}
        self.bookmark: dict[int, int] = {}
        self.violations: list[str] = []
        self._seen: dict[int, set] = defaultdict(set)
        self._last_ping = 0.0

    # -- requests
    def send(self, op: str, body: dict) -> int:
        req_id = next(self.req_ids)
        self.sock.send(msgpack.packb([op, req_id, body]))
        return req_id

    def create(self, watch_id: int, **body) -> int:
        return self.send("watch_create", dict(body, watch_id=watch_id))

    def reply(self, req_id: int, timeout: float = 10.0):
        assert self.pump(lambda: req_id in self.replies, timeout), f"no reply to request {req_id}"
        return self.replies[req_id]

    # -- receiving
    def pump(self, until=lambda: False, timeout: float = 10.0, ack: bool = True) -> bool:
        """Read (and ack) until until() holds; False on timeout.  Pings every second so a
        quiet session is not closed as idle."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            now = time.monotonic()
            if now - self._last_ping > 1.0:
                self._last_ping = now
                self.send("ping", {})
            if not self.sock.poll(min(100, int(left * 1000) + 1)):
                continue
            while self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                raw = self.sock.recv()
                self.received += len(raw)
                self._on_frame(msgpack.unpackb(raw, raw=False, strict_map_key=False))
            if ack:
                self.sock.send(msgpack.packb(["ack", 0, {"bytes": self.received}]))
        return True

    def _on_frame(self, msg):
        kind, req_id, body = msg
        if kind != "w":
            self.replies[req_id] = (kind, body, len(self.log))
            self.log.append(("reply", req_id, kind))
            if kind == "ok" and isinstance(body, dict) and "watch_id" in body:
                if body.get("created"):
                    self.live.add(body["watch_id"])
                if body.get("canceled"):
                    self._on_control(body)
            return
        for r in body:
            if isinstance(r, dict):
                self._on_control(r)
            else:
                self._on_array(*r)

    def _on_control(self, r: dict):
        wid = r["watch_id"]
        self.live.discard(wid)
        self.canceled[wid] = r
        self.log.append(("canceled", wid, r.get("compact_revision", 0)))

    def _on_array(self, ids, rev, evs, fragment):
        pos = len(self.log)
        if not evs:
            self.log.append(("progress", tuple(ids), rev))
            if ids == [-1]:
                self.session_progress.append((rev, pos))
            targets = sorted(self.live) if ids == [-1] else ids
            for wid in targets:
                if ids != [-1]:
                    self.named_progress[wid].append((rev, pos))
                self.covered[wid].append((rev, pos))
                self.bookmark[wid] = max(self.bookmark.get(wid, 0), rev)
            return
        assert not fragment, "these tests never ask for fragments"
        for wid in ids:
            self.first_event_at.setdefault(wid, pos)
            got = self.events[wid]
            for ev in evs:
                key, mod = ev[1][0], ev[1][2]
                if (key, mod) in self._seen[wid]:
                    self.violations.append(f"watch {wid}: event {key!r}@{mod} delivered twice")
                self._seen[wid].add((key, mod))
                if got and mod < got[-1][0]:
                    self.violations.append(f"watch {wid}: event {key!r}@{mod} after @{got[-1][0]}")
                if mod <= self.bookmark.get(wid, 0):
                    self.violations.append(f"watch {wid}: event {key!r}@{mod} arrived after a progress "
                                           f"notification at {self.bookmark[wid]}")
                got.append((mod, key))
            self.log.append(("events", wid, evs[0][1][2], evs[-1][1][2]))

    # -- checks
    def has_all(self, expected: dict[int, list]) -> bool:
        return all(len(self.events[wid]) >= len(exp) for wid, exp in expected.items())

    def assert_exact(self, expected: dict[int, list]):
        per_watch: dict[str, list] = defaultdict(list)
        for v in self.violations:
            per_watch[v.split(":")[0]].append(v)
        assert not self.violations, {w: (len(vs), vs[:3]) for w, vs in per_watch.items()}
        for wid, exp in expected.items():
            got = [r for r, _ in self.events[wid]]
            if got != exp:
                missing = sorted(set(exp) - set(got))
                extra = sorted(set(got) - set(exp))
                raise AssertionError(f"watch {wid}: {len(got)} events, expected {len(exp)}; "
                                     f"missing {missing[:10]}, unexpected {extra[:10]}")

    def close(self):
        self.sock.close(0)


def put_all(c, items) -> dict[int, bytes]:
    """Puts (key, value) pairs one by one; returns revision -> key."""
    history = {}
    for key, value in items:
        history[c.put(key, value).header.revision] = key.encode()
    return history


def expected_revs(history: dict[int, bytes], start: int, match) -> list[int]:
    return sorted(r for r, k in history.items() if r >= start and match(k))


def prefix(p: bytes):
    return lambda k: k.startswith(p)


class Writer(threading.Thread):
    """Puts on a few keys until stopped; history holds every acknowledged revision."""

    def __init__(self, client, keys, value=b"v", pause=0.0):
        super().__init__(daemon=True)
        self.client, self.keys, self.value, self.pause = client, keys, value, pause
        self.history: dict[int, bytes] = {}
        self.failed = 0
        self.halt = threading.Event()

    def run(self):
        for i in itertools.count():
            if self.halt.is_set():
                return
            key = self.keys[i % len(self.keys)]
            try:
                self.history[self.client.put(key, self.value).header.revision] = key.encode()
            except errors.ZwatchError:
                self.failed += 1                   # e.g. its fan-out was just killed
                time.sleep(0.05)
            if self.pause:
                time.sleep(self.pause)

    def stop(self):
        self.halt.set()
        self.join(15)


def syncer_stats(cl) -> dict:
    """The syncer's own counters (pending / batch watchers), asked over its ROUTER."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(cl.syncer_ep)
    try:
        s.send(msgpack.packb(["stats", 1, {}]))
        assert s.poll(5000), "the syncer did not answer stats"
        kind, _, body = msgpack.unpackb(s.recv(), raw=False)
        assert kind == "ok", body
        return body
    finally:
        s.close(0)


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---------------------------------------------------------------------------- progress
def test_etcd_15220_requested_progress_never_overtakes_events(make_cluster):
    """etcd #15220: RequestProgress was answered at once with the store's current revision,
    outside the watch stream's event queue, so a client could read "progress at R" while
    events <= R of one of its watches were still queued (or, for an unsynced watch, not even
    read yet): a Kubernetes watch cache then served a stale list as fresh.

    Checks on the raw wire, with writes flowing all the time: a live prefix watch, a live
    single-key watch, a watch catching up from history through the syncer (ring disabled)
    and a progress_notify watch (0.2 s interval) share one session; 25+ watch_progress
    requests are sent while the writes go on.  No event <= R of any watch may arrive after a
    progress notification at R that names it (by id or [-1]); the notification that goes
    with a reply comes right before it, at the reply's R; nothing is lost or duplicated."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "0", "ZWATCH_PROGRESS_INTERVAL_S": "0.2"})
    c = cl.client()
    keys = [f"p/{i}" for i in range(7)]
    history = put_all(c, [(keys[i % 7], f"v{i}") for i in range(200)])
    wire = Wire(cl.fanout_eps[0])
    first_live = max(history) + 1
    for req in (wire.create(1, key=b"p/", range_end=b"p0"),
                wire.create(2, key=b"p/3"),
                wire.create(4, key=b"q", progress_notify=True)):
        assert wire.reply(req)[0] == "ok"
    wire.create(3, key=b"p/", range_end=b"p0", start_revision=2)
    writer = Writer(cl.client(), keys + ["q"], pause=0.002)
    writer.start()
    answered = []
    try:
        while len(answered) < 25 or len(writer.history) < 300:
            req = wire.send("watch_progress", {})
            kind, body, pos = wire.reply(req, timeout=15)
            assert kind == "ok", body
            answered.append((body["header"]["revision"], pos))
    finally:
        writer.stop()
    history.update(writer.history)
    expected = {1: expected_revs(history, first_live, prefix(b"p/")),
                2: expected_revs(history, first_live, lambda k: k == b"p/3"),
                3: expected_revs(history, 2, prefix(b"p/")),
                4: expected_revs(history, first_live, lambda k: k == b"q")}
    assert wire.pump(lambda: wire.has_all(expected), timeout=20)
    wire.pump(timeout=0.3)
    wire.assert_exact(expected)
    # The notification that goes with a reply (by id while some watch catches up, else [-1])
    # comes right before it, at the same revision.
    paired = 0
    for rev, pos in answered:
        before = wire.log[pos - 1]
        if before[0] == "progress":
            assert before[2] == rev, f"reply at {rev} right after a notification at {before[2]}"
            paired += 1
    assert paired >= len(answered) // 2, f"only {paired} of {len(answered)} replies came with a notification"
    assert wire.named_progress[4], "the progress_notify watch never got a periodic notification"
    wire.close()


def test_etcd_17507_watch_matching_nothing_gets_progress(make_cluster):
    """etcd #17507: a newly created watch that started unsynced (from the current or an older
    revision) and matched no event never became "synced" in the deferred-progress logic, so
    RequestProgress was never answered for it until some event arrived for it.

    Checks on the raw wire, on keys that never change: a watch from an old revision (through
    the syncer: ring disabled, quiet window 0.5 s, so it is unsynced when asked) and one from
    now get, after a watch_progress request, a notification (by id or [-1]) at >= the last
    write, and the request is answered.  Two more such watches with progress_notify (0.3 s)
    are named by periodic notifications that reach a revision written after they were
    created.  The same through zwatch.Client: request_progress() returns and the watch
    handle gets a notification at >= that revision."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "0", "ZWATCH_PROGRESS_INTERVAL_S": "0.3",
                           "ZWATCH_SYNC_QUIET_S": "0.5", "ZWATCH_SYNC_BATCH_DELAY_S": "0.5"})
    c = cl.client()
    history = put_all(c, [(f"other/{i % 5}", "x") for i in range(60)])
    wire = Wire(cl.fanout_eps[0])
    assert wire.reply(wire.create(1, key=b"never", start_revision=2))[0] == "ok"
    assert wire.reply(wire.create(2, key=b"never2"))[0] == "ok"
    kind, body, pos = wire.reply(wire.send("watch_progress", {}), timeout=10)
    assert kind == "ok" and body["header"]["revision"] >= max(history)
    # Both are told, the one still catching up once it is synced: at >= the last write.
    assert wire.pump(lambda: all(any(r >= max(history) for r, _ in wire.covered[w]) for w in (1, 2)),
                     timeout=10), f"requested progress: {dict(wire.covered)}"
    assert wire.reply(wire.create(3, key=b"never3", start_revision=2, progress_notify=True))[0] == "ok"
    assert wire.reply(wire.create(4, key=b"never4", progress_notify=True))[0] == "ok"
    later = c.put("other/0", "after").header.revision
    assert wire.pump(lambda: all(any(r >= later for r, _ in wire.named_progress[w]) for w in (3, 4)),
                     timeout=10), f"periodic progress: {dict(wire.named_progress)}"
    assert not wire.events and not wire.violations
    wire.close()

    w = c.watch("never5", start_revision=2)
    rev = c.request_progress(timeout=10)
    assert rev >= later
    deadline = time.monotonic() + 10
    while True:
        r = w.get(timeout=max(0.01, deadline - time.monotonic()))
        assert r is not None and not r.events
        if r.is_progress_notify and r.header.revision >= rev:
            break


def test_etcd_20242_slow_catch_up_does_not_starve_requested_progress(make_cluster):
    """etcd #20242: requested progress is stream-wide and only sent when every watch of the
    stream is synced, so one slow watch still catching up (or, after #20229, one waiting for a
    future start revision) starves progress for every other watch of the stream.

    zwatch had the same defect (the reply waited for every watch of the session to be synced)
    until ea75986.  Checks: one watch of the session catches up from old history and is slow (ring disabled and the syncer's
    quiet window set to 4 s, so it stays unsynced for ~4 s); a watch_progress request sent
    meanwhile is answered before that watch gets its first event, the synced watches get a
    progress notification (by id or [-1]) at >= their last event before the reply, and the
    catching-up watch is never named by a notification claiming a revision whose events it
    has not yet received (Bookmarkable); it then catches up exactly."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "0", "ZWATCH_SYNC_QUIET_S": "4",
                           "ZWATCH_SYNC_BATCH_DELAY_S": "4"})
    c = cl.client()
    history = put_all(c, [(f"old/{i % 5}", f"v{i}") for i in range(150)])
    wire = Wire(cl.fanout_eps[0])
    first_live = max(history) + 1
    assert wire.reply(wire.create(1, key=b"live/", range_end=b"live0"))[0] == "ok"
    assert wire.reply(wire.create(2, key=b"live/a"))[0] == "ok"
    history.update(put_all(c, [("live/a", "1"), ("live/b", "2"), ("live/a", "3")]))
    expected_live = {1: expected_revs(history, first_live, prefix(b"live/")),
                     2: expected_revs(history, first_live, lambda k: k == b"live/a")}
    assert wire.pump(lambda: wire.has_all(expected_live), timeout=10)
    assert wire.reply(wire.create(3, key=b"old/", range_end=b"old0", start_revision=2))[0] == "ok"
    req = wire.send("watch_progress", {})
    expected = {**expected_live, 3: expected_revs(history, 2, prefix(b"old/"))}
    wire.pump(lambda: req in wire.replies and wire.has_all(expected), timeout=15)
    assert not wire.violations, wire.violations[:10]
    assert req in wire.replies, "watch_progress never answered"
    kind, body, reply_pos = wire.replies[req]
    slow_first = wire.first_event_at.get(3)
    assert slow_first is None or reply_pos < slow_first, (
        f"the progress reply (revision {body['header']['revision']}) only came after the slow watch 3 "
        f"caught up: reply at log position {reply_pos}, watch 3's first event at {slow_first}; "
        f"log around it: {wire.log[max(0, slow_first - 2):reply_pos + 1]}")
    for wid, exp in expected_live.items():
        assert any(r >= exp[-1] and p < reply_pos for r, p in wire.covered[wid]), \
            f"synced watch {wid} (last event {exp[-1]}) got no progress at >= it before the reply"
    wire.pump(lambda: wire.has_all(expected), timeout=15)
    wire.assert_exact(expected)
    wire.close()


def test_etcd_20221_19487_future_watch_never_gets_old_events_or_progress_below_start(make_cluster):
    """etcd #20221 (and #19487): a watch on a future revision got progress notifications at
    revisions below its start; a client that failed over to another member resumed from
    that notification's revision + 1 and received old events, below the revision it asked for.

    Checks: (wire) a future watch with progress_notify (0.2 s interval) and a watch_progress
    request is never covered by a notification (by id or [-1]) below start - 1, and its first
    event is exactly at its start; (client) a zwatch.Client future watch gets no progress
    below its start after request_progress (which answers below it), then its fan-out is
    killed: after the failover to the second fan-out it gets exactly the events from its
    start, none older, none twice."""
    cl = make_cluster(fanouts=2, env={"ZWATCH_PROGRESS_INTERVAL_S": "0.2"})
    eps = cl.fanout_eps
    c = cl.client(eps, heartbeat=0.3)                      # on fanout0
    writer_c = cl.client([eps[1]])
    now = writer_c.put("f/seed", "0").header.revision
    start = now + 30
    w = c.watch("f/", prefix=True, start_revision=start, progress_notify=True)
    wire = Wire(eps[1])
    assert wire.reply(wire.create(1, key=b"f/", range_end=b"f0", start_revision=start,
                                  progress_notify=True))[0] == "ok"
    below = c.request_progress()
    assert below < start
    try:                                           # nothing, or nothing below its start
        r = w.get(timeout=0.5)
        assert not r.events and r.header.revision >= start - 1, r
    except queue.Empty:
        pass
    assert wire.reply(wire.send("watch_progress", {}))[0] == "ok"
    cl["fanout0"].kill()
    history = put_all(writer_c, [(f"f/{i % 4}", str(i)) for i in range(60)])
    exp = expected_revs(history, start, prefix(b"f/"))
    got = collect(w, len(exp), timeout=20)
    assert revs(got) == exp
    no_more(w)
    assert c.failovers >= 1 and c.endpoint == eps[1]
    assert wire.pump(lambda: wire.has_all({1: exp}), timeout=10)
    wire.pump(timeout=0.5)
    wire.assert_exact({1: exp})
    below_start = [r for r, _ in wire.covered[1] if r < start - 1]
    assert not below_start, f"future watch covered by progress notifications below its start {start}: {below_start}"
    wire.close()


# ---------------------------------------------------------------------------- duplicates
@pytest.mark.parametrize("ring", ["0", "20000"], ids=["victims_via_syncer", "victims_via_ring"])
def test_etcd_15248_15275_17247_victimized_watches_get_no_duplicate(make_cluster, ring):
    """etcd #15248/#15275 (a watcher moved between the synced/unsynced/victim sets was sent
    revisions it already had: duplicated events) and #17247 (duplicated events seen by the
    robustness tests around restores).

    zwatch's closest shape: one raw session that stops reading and acking (window 64 KiB,
    stall 0.3 s) while writes go on, three times, so its watches become victims and are
    replayed from their first lost revision (through the syncer, or from the ring).  The
    session holds a live prefix watch, a single-key watch, a prev_kv watch, a watch that
    caught up from history (through the syncer or the ring), the same with prev_kv, and a
    watch started in the future (victimized after its start).  The prev_kv watches' catch-ups
    and replays are bigger than MAX_RESPONSE_BYTES (3.2 MB of history with prev_kv), so they
    are cut into several responses, some sent and some lost when the session stalls.
    Checked on the raw wire (not through the client, which de-duplicates): every watch gets
    every event from its start exactly once, in order."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": ring, "ZWATCH_SESSION_WINDOW_BYTES": "65536",
                           "ZWATCH_STALL_S": "0.3"})
    c = cl.client()
    keys = [f"d/{i}" for i in range(5)]
    history = put_all(c, [(keys[i % 5], "h" * 20_000) for i in range(80)])   # 1.6 MB of history
    now = max(history)
    wire = Wire(cl.fanout_eps[0], RCVHWM=4, RCVBUF=8192)
    specs = {1: dict(key=b"d/", range_end=b"d0"), 2: dict(key=b"d/1"),
             3: dict(key=b"d/", range_end=b"d0", prev_kv=True),
             4: dict(key=b"d/", range_end=b"d0", start_revision=2),
             5: dict(key=b"d/", range_end=b"d0", start_revision=now + 40),
             6: dict(key=b"d/", range_end=b"d0", start_revision=2, prev_kv=True)}
    for wid, body in specs.items():
        assert wire.reply(wire.create(wid, **body))[0] == "ok"
    writer = Writer(cl.client(), keys, value=b"x" * 2000, pause=0.001)
    writer.start()
    try:
        for _ in range(3):
            time.sleep(0.9)                       # stalled: no read, no ack
            wire.pump(timeout=0.8)
    finally:
        writer.stop()
    history.update(writer.history)
    expected = {1: expected_revs(history, now + 1, prefix(b"d/")),
                2: expected_revs(history, now + 1, lambda k: k == b"d/1"),
                3: expected_revs(history, now + 1, prefix(b"d/")),
                4: expected_revs(history, 2, prefix(b"d/")),
                5: expected_revs(history, now + 40, prefix(b"d/")),
                6: expected_revs(history, 2, prefix(b"d/"))}
    assert wire.pump(lambda: wire.has_all(expected), timeout=30), \
        {w: (len(wire.events[w]), len(e)) for w, e in expected.items()}
    wire.pump(timeout=0.5)
    assert cl["fanout0"].events("watch.victim"), "the session never became a victim: the test proves nothing"
    wire.assert_exact(expected)
    wire.close()


# ---------------------------------------------------------------------------- sync batches
def test_etcd_20655_20693_one_bad_watch_does_not_spoil_its_sync_batch(make_cluster):
    """etcd #20655: creating many watches fast broke the Reliable guarantee (watches of one
    sync batch dropped events); #20693: the fix, where one watcher of a syncWatchers batch
    being compacted / failing must not change what the others of the batch get.

    Checks: 120 watches from various old revisions are pipelined on one raw session (ring
    disabled, syncer quiet window 0.5 s: they all wait in one sync batch), together with bad
    ones: a start revision that gets compacted before the batch runs (the syncer cancels it
    with compact_revision), an invalid key, a too long range_end, a duplicate id, an empty
    range, one canceled right after its create.  Every good watch gets exactly its history
    and then the live events; each bad one gets exactly its own error or cancel."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "0", "ZWATCH_SYNC_QUIET_S": "0.5",
                           "ZWATCH_SYNC_BATCH_DELAY_S": "0.5"})
    c = cl.client()
    history = put_all(c, [(f"b/{i % 10}", str(i)) for i in range(300)])   # revisions 2..301
    wire = Wire(cl.fanout_eps[0])
    good = {}
    for i in range(1, 121):
        start = 10 + (i * 7) % 290
        body = dict(key=b"b/", range_end=b"b0") if i % 2 else dict(key=f"b/{i % 10}".encode())
        good[i] = (start, body)
    reqs = {}
    for i, (start, body) in good.items():
        reqs[i] = wire.create(i, start_revision=start, **body)
        if i == 60:                                  # the bad ones sit in the middle of the batch
            reqs["compacted"] = wire.create(200, key=b"b/", range_end=b"b0", start_revision=3)
            reqs["bad_key"] = wire.create(201, key="b/1", start_revision=12)
            reqs["dup"] = wire.create(5, key=b"b/", range_end=b"b0", start_revision=20)
            reqs["empty"] = wire.create(203, key=b"z", range_end=b"a", start_revision=20)
            reqs["to_cancel"] = wire.create(204, key=b"b/", range_end=b"b0", start_revision=15)
            reqs["cancel"] = wire.send("watch_cancel", {"watch_id": 204})
            reqs["long_end"] = wire.create(205, key=b"b/", range_end=b"c" * 513, start_revision=12)
    assert wire.pump(lambda: all(r in wire.replies for r in reqs.values()), timeout=10)
    c.compact(5)                                     # before the syncer's batch starts (quiet 0.5 s)
    history.update(put_all(c, [(f"b/{i % 10}", "live") for i in range(20)]))
    expected = {i: expected_revs(history, start, prefix(b"b/") if "range_end" in body
                                 else (lambda k, key=body["key"]: k == key))
                for i, (start, body) in good.items()}
    assert wire.pump(lambda: wire.has_all(expected) and 200 in wire.canceled, timeout=30), \
        [(i, len(wire.events[i]), len(e)) for i, e in expected.items() if len(wire.events[i]) < len(e)][:5]
    wire.pump(timeout=0.5)
    wire.assert_exact(expected)
    for name, code in (("bad_key", "INVALID_ARGUMENT"), ("long_end", "INVALID_ARGUMENT"),
                       ("dup", "FAILED_PRECONDITION")):
        kind, body, _ = wire.replies[reqs[name]]
        assert kind == "err" and body["code"] == code, (name, body)
    assert wire.canceled[200]["compact_revision"] == 5 and not wire.events[200]
    assert "range is empty" in wire.canceled[203]["cancel_reason"] and not wire.events[203]
    cancel_pos = wire.replies[reqs["cancel"]][2]
    assert not [e for e in wire.log[cancel_pos:] if e[0] == "events" and e[1] == 204]
    assert set(wire.canceled) == {200, 203, 204}, sorted(wire.canceled)
    batches = cl["syncer"].events("sync.batch")
    assert max(b["watchers"] for b in batches) >= 100, [b["watchers"] for b in batches]
    wire.close()


def test_etcd_4191_9086_unsynced_prefix_watchers_become_synced(make_cluster):
    """etcd #4191 (and #9086): a prefix (range) watcher created from an old revision was put in
    the unsynced set and never moved to synced, so after its history it never got another
    event.

    Checks: prefix, from-key, range and prev_kv prefix watches from old revisions (ring
    disabled, so all go through the syncer) get their history, become synced (the fan-out's
    stats show no unsynced watcher) and then get every live event, exactly."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "0"})
    c = cl.client()
    history = put_all(c, [((f"a/{i % 4}" if i % 3 else f"b/{i % 4}"), str(i)) for i in range(200)])
    specs = [(dict(key="a/", prefix=True), 2, prefix(b"a/")),
             (dict(key="b/", prefix=True), 100, prefix(b"b/")),
             (dict(key="a/", from_key=True), 50, lambda k: k >= b"a/"),
             (dict(key="a/1", range_end="b/2"), 150, lambda k: b"a/1" <= k < b"b/2"),
             (dict(key="a/", prefix=True, prev_kv=True), 2, prefix(b"a/"))]
    ws = [c.watch(start_revision=start, **spec) for spec, start, _ in specs]
    for w, (spec, start, match) in zip(ws, specs):
        assert revs(collect(w, len(expected_revs(history, start, match)), timeout=15)) == \
            expected_revs(history, start, match)
    before = len(cl["fanout0"].events("fanout.stats"))
    cl["fanout0"].wait_event("fanout.stats", count=before + 2)
    last = cl["fanout0"].events("fanout.stats")[-1]
    assert last["unsynced"] == 0 and last["watchers"] == len(ws), last
    live = put_all(c, [((f"a/{i % 4}" if i % 2 else f"b/{i % 4}"), "live") for i in range(30)])
    for w, (spec, start, match) in zip(ws, specs):
        exp = expected_revs(live, 0, match)
        got = collect(w, len(exp), timeout=10)
        assert revs(got) == exp
        if spec.get("prev_kv"):
            assert all(e.prev_kv is not None for e in got)
        no_more(w, 0.2)


# ---------------------------------------------------------------------------- create / cancel
def test_etcd_14296_14562_failed_create_disturbs_no_other_watch(make_cluster):
    """etcd #14296 / #14562: a watch create that failed (permission denied, bad request) was
    answered with a canceled response carrying the request's watch_id, 0 for an auto id, and
    the client then canceled ITS watch 0: a failed create killed an unrelated live watch.

    Checks on the raw wire: a session with an auto-id watch (id 1) and an explicit one (5)
    sends failing creates: invalid key type with auto id, duplicate id 5, too long range_end
    with id 1, unknown filter, an id out of range, a non-bin key, a compacted start (created then
    canceled: only its own id), an empty range (same), a cancel of an unknown id (answered
    "canceled" for that id only).  Errors name no watch;
    no cancel names 1 or 5; both still get every later event; the next auto id skips ids in use."""
    cl = make_cluster()
    c = cl.client()
    put_all(c, [("k", str(i)) for i in range(10)])
    c.compact(8)
    wire = Wire(cl.fanout_eps[0])
    kind, body, _ = wire.reply(wire.create(0, key=b"k"))
    assert kind == "ok" and body["watch_id"] == 1
    assert wire.reply(wire.create(5, key=b"k"))[0] == "ok"
    failing = {"auto_bad_key": (wire.create(0, key="k"), "INVALID_ARGUMENT"),
               "dup_5": (wire.create(5, key=b"k"), "FAILED_PRECONDITION"),
               "dup_1_bad_end": (wire.create(1, key=b"k", range_end=b"z" * 513), "INVALID_ARGUMENT"),
               "bad_filter": (wire.create(0, key=b"k", filters=["NOPE"]), "INVALID_ARGUMENT"),
               "id_range": (wire.create((1 << 62) + 1, key=b"k"), "INVALID_ARGUMENT"),
               "key_not_bin": (wire.create(0, key=7), "INVALID_ARGUMENT")}
    compacted = wire.create(9, key=b"k", start_revision=2)
    empty = wire.create(10, key=b"z", range_end=b"a")
    cancel_unknown = wire.send("watch_cancel", {"watch_id": 77})   # idempotent: "canceled" 77 only
    for name, (req, code) in failing.items():
        kind, body, _ = wire.reply(req)
        assert kind == "err" and body["code"] == code, (name, body)
        assert "watch_id" not in body, (name, body)
    assert wire.reply(compacted)[0] == "ok" and wire.reply(empty)[0] == "ok"
    assert wire.reply(cancel_unknown)[0] == "ok"
    assert wire.pump(lambda: {9, 10, 77} <= set(wire.canceled), timeout=5)
    assert wire.canceled[9]["compact_revision"] == 8
    kind, body, _ = wire.reply(wire.create(0, key=b"k"))
    assert kind == "ok" and body["watch_id"] not in (1, 5)
    auto = body["watch_id"]
    live = put_all(c, [("k", f"after{i}") for i in range(10)])
    expected = {1: sorted(live), 5: sorted(live), auto: sorted(live)}
    assert wire.pump(lambda: wire.has_all(expected), timeout=10)
    wire.pump(timeout=0.3)
    wire.assert_exact(expected)
    assert set(wire.canceled) == {9, 10, 77}, sorted(wire.canceled)
    wire.close()


def test_etcd_11850_canceled_watches_do_not_leak(make_cluster):
    """etcd #11850 (fixing #9416): a canceled watch was only canceled on the server lazily,
    when the next event for it arrived, so watches on keys that never changed again leaked
    on the server for the stream's lifetime.

    Checks: one session creates 100 synced, 100 unsynced (from history; the syncer's quiet
    window is 3 s, so they are still pending in the syncer) and 50 future watches, then
    cancels all of them without any event having reached them.  The fan-out's fanout.stats
    must show only the one watch kept (no unsynced, no future left) and the syncer's stats
    op must show nothing pending and no batch; later writes reach only the kept watch."""
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "0", "ZWATCH_SYNC_QUIET_S": "3",
                           "ZWATCH_SYNC_BATCH_DELAY_S": "3"})
    c = cl.client()
    history = put_all(c, [(f"n/{i % 5}", str(i)) for i in range(40)])
    now = max(history)
    wire = Wire(cl.fanout_eps[0])
    creates = [wire.create(1, key=b"keep")]
    for i in range(250):
        start = 0 if i < 100 else (2 + i % 30 if i < 200 else now + 1000 + i)
        creates.append(wire.create(10 + i, key=f"n/{i % 5}".encode(), start_revision=start))
    assert wire.pump(lambda: all(r in wire.replies for r in creates), timeout=10)
    assert all(wire.replies[r][0] == "ok" for r in creates)
    wait_for(lambda: syncer_stats(cl)["pending"] == 100, 5, "100 watchers pending in the syncer")
    cancels = [wire.send("watch_cancel", {"watch_id": 10 + i}) for i in range(250)]
    assert wire.pump(lambda: all(r in wire.replies for r in cancels), timeout=10)
    assert all(wire.replies[r][0] == "ok" for r in cancels)
    stats_before = len(cl["fanout0"].events("fanout.stats"))
    cl["fanout0"].wait_event("fanout.stats", count=stats_before + 1)
    last = cl["fanout0"].events("fanout.stats")[-1]
    assert (last["watchers"], last["unsynced"], last["futures"]) == (1, 0, 0), \
        f"after canceling all but one watch: fanout.stats watchers={last['watchers']} " \
        f"unsynced={last['unsynced']} futures={last['futures']} (futures = entries left in the " \
        f"fan-out's heap of future watchers)"
    s = syncer_stats(cl)
    assert (s["pending"], s["batch"]) == (0, 0), s
    live = put_all(c, [(f"n/{i % 5}", "live") for i in range(10)] + [("keep", "1")])
    wire.pump(lambda: 1 in wire.events, timeout=10)
    wire.pump(timeout=0.5)
    assert set(wire.events) == {1}, sorted(wire.events)
    wire.assert_exact({1: [max(live)]})
    wire.close()


# ---------------------------------------------------------------------------- shared connection
def test_etcd_15402_heavy_reads_on_a_shared_session_do_not_starve_its_watch(make_cluster):
    """etcd #15402: large range responses and watch events shared one HTTP/2 connection
    (gRPC's write scheduling, worst with TLS), and heavy reads starved the watch stream:
    watch events were delayed for minutes.

    Checks, by count: one zwatch.Client session loops over ~1 MiB range reads while another
    client writes 150 events to a key range its watch (same session) follows; every event
    arrives while the read loop runs: the loop stops as soon as all arrived, far below its
    cap of 400 reads."""
    cl = make_cluster()
    loader = cl.client()
    for i in range(40):
        loader.put(f"big/{i:03}", "x" * 25_000)
    c = cl.client()
    w = c.watch("ev/", prefix=True)
    writer = Writer(cl.client(), [f"ev/{i}" for i in range(10)])
    writer.start()
    events, reads, cap = [], 0, 400
    try:
        while reads < cap and len(events) < 150:
            r = c.get("big/", prefix=True, timeout=10)
            assert len(r.kvs) == 40
            reads += 1
            while True:
                try:
                    resp = w.get(timeout=0)
                except queue.Empty:
                    break
                events.extend(resp.events)
            if len(writer.history) >= 150:
                writer.halt.set()
    finally:
        writer.stop()
    assert len(events) >= 150, f"{len(events)} of 150 events after {reads} reads of 1 MiB"
    assert reads < cap
    exp = sorted(writer.history)
    events.extend(collect(w, len(exp) - len(events), timeout=10) if len(exp) > len(events) else [])
    assert revs(events) == exp


# ---------------------------------------------------------------------------- failover
def test_k8s_100745_107133_failover_between_fanouts_converges_exactly(make_cluster):
    """Kubernetes #100745 / #107133: clients moving between etcd members at different
    positions looped (a member behind answered "too old" / served older data, the client
    moved again) or resumed with a gap or repeat.

    Checks: a zwatch.Client with two fan-outs and a prefix watch from an old revision, writes
    going on; its fan-out is killed, it moves to the other; the first one is restarted and
    the second killed, it moves back to the restarted one (which has just rejoined the
    stream and has an empty ring, the closest to "behind" we can force).  It converges
    (one failover per kill, no loop) and its stream is exactly the store's history from its
    start: no gap, no duplicate."""
    cl = make_cluster(fanouts=2)
    eps = cl.fanout_eps
    c = cl.client(eps, heartbeat=0.3)
    wc = cl.client(eps, heartbeat=0.3)
    history = put_all(wc, [(f"f/{i % 5}", str(i)) for i in range(50)])
    start = 10
    w = c.watch("f/", prefix=True, start_revision=start)
    writer = Writer(wc, [f"f/{i}" for i in range(5)], pause=0.003)
    writer.start()
    try:
        time.sleep(0.3)
        assert c.endpoint == eps[0]
        cl["fanout0"].kill()
        wait_for(lambda: c.endpoint == eps[1] and c.failovers == 1, 10, "failover to fanout1")
        starts = len(cl["fanout0"].events("fanout.joined_stream"))
        cl["fanout0"].start()
        cl["fanout0"].wait_event("fanout.joined_stream", count=starts + 1, timeout=15)
        time.sleep(0.3)
        cl["fanout1"].kill()
        wait_for(lambda: c.endpoint == eps[0] and c.failovers == 2, 10, "failover back to fanout0")
        time.sleep(0.3)
    finally:
        writer.stop()
    final = wc.get("f/0").header.revision
    history.update(writer.history)
    # Every revision is a put on f/ (acknowledged or not: a put whose reply was lost in a
    # failover may still have been applied), so the stream must be every revision from start.
    exp = list(range(start, final + 1))
    got = collect(w, len(exp), timeout=20)
    assert revs(got) == exp
    no_more(w)
    assert c.failovers == 2, f"{c.failovers} failovers for 2 kills"
