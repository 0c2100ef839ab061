"""The fan-out actor: client sessions, the synced watchers, live delivery, victims.

Watcher states (one small state machine per watcher)::

    create --start 0 / next revision--> SYNCED      (in the key index; gets every live match)
    create --start in the future------> FUTURE      (heap by next revision; enters SYNCED when
                                                     the live stream reaches it)
    create --start in the past--------> ring covers it? catch up from the ring, SYNCED
                                        : UNSYNCED (registered with the syncer)
    UNSYNCED --syncer "synced" at R---> catch up (R, last_seen] from the ring, SYNCED
                                        (or FUTURE if we lag behind R, or UNSYNCED again if
                                        the ring no longer covers R+1)
    UNSYNCED --syncer "canceled"------> gone (canceled response with compact_revision)
    SYNCED --session pipe full--------> VICTIM --backoff--> UNSYNCED from its first lost revision
    SYNCED --publish gap detected-----> UNSYNCED from the first missed revision

A SYNCED watcher's next revision is implicitly ``last_seen + 1`` (the fan-out's position in
the publish stream), so delivering an event costs nothing per watcher: identical specs share
a Group, and one Slot per (group, session) carries the session's watch ids, so a publish
costs O(events x matched slots), not O(watchers).

Sockets: ROUTER for clients (messages.py), SUB to the writer's PUB, DEALER to the writer
(forwarded writes), DEALER to the syncer (reads, unsynced watchers).

Fan-out <-> syncer messages (single frames, [op, id, body])::

    -> ["sync",   0, [[uid, epoch, key, end|nil, next_rev, filter_bits, prev_kv, watch_id, fragment,
                         session], ...]]
    -> ["unsync", 0, [[uid, epoch], ...]]
    -> ["ping",   n, {}]
    <- ["pong",   n, {"instance": str, "revision": R}]
    <- ["ev",     0, [[[[uid, epoch], ...], first_rev, last_rev, response_bytes], ...]]
                 (one response for a group of watchers of one session wanting the same events)
    <- ["synced", 0, [[uid, epoch, R], ...]]
    <- ["compacted", 0, [[uid, epoch, compact_revision], ...]]
"""
from __future__ import annotations

import heapq
import os
import time
import uuid
from collections import deque

import msgpack
import zmq

from zwatch import messages
from zwatch.errors import (FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable,
                           ZwatchError)
from zwatch.limits import MAX_SESSIONS_PER_FANOUT, MAX_WATCHES_PER_SESSION, PROTOCOL_VERSION
from .logsetup import configure

from .common import Every, chunk_by_size, RateLimitedLog, StopFlag, env, env_float, env_int, make_socket
from .index import KeyIndex

SYNCED, FUTURE, UNSYNCED, VICTIM = "synced", "future", "unsynced", "victim"
_W_HEAD = b"\x93\xa1w\x00"  # msgpack: array of 3, "w", 0 -- then the array of responses
_array_header = msgpack.Packer().pack_array_header
_pack = msgpack.Packer(use_bin_type=True).pack
NO_SESSION = "NO_SESSION"
_FRAME_BYTES = 256 * 1024  # watch frames are cut here so that credit moves in small steps
# A client that sends requests but never reads its replies (pongs pile up behind a full pipe)
# is closed once this many reply frames wait for it: held replies must stay bounded.
MAX_HELD_REPLIES = 1000
# Internal messages that grow with the number of watchers are cut at about this size (the
# syncer refuses anything above MAX_REQUEST_BYTES).
SYNC_MESSAGE_BYTES = 256 * 1024
# Per-event overhead counted in the ring's byte budget, on top of keys and values.
_RING_EVENT_OVERHEAD = 64


def revision_bytes(events) -> int:
    """What a revision costs the ring: its keys, values and previous values, plus overhead."""
    n = 0
    for _t, kv, prev in events:
        n += _RING_EVENT_OVERHEAD + len(kv[0]) + len(kv[4])
        if prev is not None:
            n += len(prev[0]) + len(prev[4])
    return n


def _registration_bytes(reg) -> int:
    """Upper bound of one sync registration's msgpack size (key, end and session dominate)."""
    return 64 + len(reg[2]) + len(reg[3] or b"") + len(reg[9])


class Watcher:
    __slots__ = ("uid", "session", "watch_id", "key", "end", "filter_bits", "prev_kv",
                 "progress_notify", "fragment", "state", "next_rev", "epoch", "slot", "owes_progress")

    def __init__(self, uid, session, watch_id, spec: messages.WatchSpec):
        self.uid = uid
        self.session = session
        self.watch_id = watch_id
        self.key = spec.key
        self.end = spec.end
        self.filter_bits = spec.filter_bits
        self.prev_kv = spec.prev_kv
        self.progress_notify = spec.progress_notify
        self.fragment = spec.fragment
        self.state = None
        self.next_rev = 0
        self.epoch = 0
        self.slot = None
        # A requested progress notification is due for this watcher once it is synced again.
        self.owes_progress = False

    def matches(self, key: bytes) -> bool:
        return key == self.key if self.end is None else self.key <= key < self.end


class Group:
    """Synced watchers with one spec; the index holds groups."""
    __slots__ = ("key", "end", "filter_bits", "prev_kv", "fragment", "slots")

    def __init__(self, key, end, filter_bits, prev_kv, fragment):
        self.key, self.end, self.filter_bits, self.prev_kv = key, end, filter_bits, prev_kv
        self.fragment = fragment
        self.slots: dict[bytes, Slot] = {}


class Slot:
    """One session's synced watchers of one group."""
    __slots__ = ("group", "session", "ids", "watchers", "last_event_rev")

    def __init__(self, group, session):
        self.group, self.session = group, session
        self.ids: list[int] | None = None   # built when first needed, dropped on change
        self.watchers: list[Watcher] = []
        self.last_event_rev = 0


class Session:
    __slots__ = ("ident", "name", "watches", "last_heard", "unsynced", "futures", "next_auto_id",
                 "sent_bytes", "acked_bytes", "backoff", "held", "held_bytes", "held_since")

    def __init__(self, ident: bytes, name: str):
        self.ident = ident
        self.name = name
        self.watches: dict[int, Watcher] = {}
        self.last_heard = time.monotonic()
        self.unsynced = 0     # watchers UNSYNCED or VICTIM (catching up on history)
        self.futures = 0      # watchers FUTURE (waiting for their start revision)
        self.next_auto_id = 1
        # Credit-based flow control: the client acks the bytes it received; watch frames are
        # only sent while sent - acked stays within the session window.
        self.sent_bytes = 0
        self.acked_bytes = 0
        self.backoff = 0.0
        # Frames waiting for credit, in order; bounded by the window and a stall deadline.
        self.held: list = []
        self.held_bytes = 0
        self.held_since = 0.0


class Fanout:
    def __init__(self, endpoint: str, writer_endpoint: str, pub_endpoint: str, syncer_endpoint: str, *,
                 idle_timeout_s: float = 10.0, progress_interval_s: float = 600.0,
                 ring_revisions: int = 20_000, ring_bytes: int = 64 << 20, victim_backoff_s: float = 0.1,
                 max_sessions: int = MAX_SESSIONS_PER_FANOUT, max_watches: int = MAX_WATCHES_PER_SESSION,
                 session_hwm: int = 1000, session_window: int = 8 << 20, stall_s: float = 2.0,
                 stats_s: float = 10.0):
        self.endpoint = endpoint
        self.writer_endpoint = writer_endpoint
        self.pub_endpoint = pub_endpoint
        self.syncer_endpoint = syncer_endpoint
        self.idle_timeout_s = idle_timeout_s
        self.progress_interval_s = max(0.1, progress_interval_s)
        self.ring_revisions = ring_revisions
        self.ring_max_bytes = ring_bytes
        self.victim_backoff_s = victim_backoff_s
        self.max_sessions = max_sessions
        self.max_watches = max_watches
        self.session_hwm = session_hwm
        self.session_window = session_window
        self.stall_s = stall_s
        self.max_inflight = 0
        self.holding: set[bytes] = set()   # sessions with held frames, retried at every flush
        self.stats_s = stats_s
        self.instance = f"fanout-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.log = configure("fanout").bind(instance=self.instance)
        self.log_limited = RateLimitedLog(1.0)
        self.stop = StopFlag()

        self.sessions: dict[bytes, Session] = {}
        self.watchers: dict[int, Watcher] = {}
        self.index = KeyIndex()
        self.futures: list[tuple[int, int]] = []          # heap of (next_rev, uid)
        self.victims: deque[tuple[float, Watcher]] = deque()
        self.progress_watchers: set[Watcher] = set()
        self.ring: deque[tuple[int, list]] = deque()       # contiguous recent revisions
        self.ring_sizes: deque[int] = deque()              # revision_bytes() of each ring entry
        self.ring_bytes = 0
        self.last_seen: int | None = None                  # last revision processed, contiguously
        self.compact_revision = 0
        self.out: dict[bytes, list] = {}                   # ident -> [(kind, bytes, owners)]
        self.to_sync: list[list] = []
        self.waiting_creates: list[tuple] = []
        self.to_unsync: list[list] = []
        self.next_uid = 1
        self.syncer_instance = None
        self.ping_seq = 0
        self.st = dict(publishes=0, revisions=0, events=0, deliveries=0, frames=0, gaps=0, victims=0,
                       handoffs=0, ring_catchups=0, requests=0, bad_requests=0, synced_from_syncer=0)

    @classmethod
    def from_env(cls, endpoint: str | None = None) -> "Fanout":
        from zwatch import settings         # the declarations: protocol/settings.py
        return cls(**settings.actor_kwargs("fanout", cls, endpoint=endpoint))

    # ================================================================== main loop
    def run(self) -> int:
        ctx = zmq.Context()
        self.router = make_socket(ctx, zmq.ROUTER, sndhwm=self.session_hwm, rcvhwm=10_000)
        self.sub = make_socket(ctx, zmq.SUB, max_msg=None, rcvhwm=100_000)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.writer = make_socket(ctx, zmq.DEALER, max_msg=None, sndhwm=10_000, rcvhwm=100_000)
        self.syncer = make_socket(ctx, zmq.DEALER, max_msg=None, sndhwm=100_000, rcvhwm=100_000)
        # Reads get their own connection to the syncer: while a stuck session holds frames the
        # fan-out stops reading the sync connection (backpressure), and reads must not wait.
        self.reader = make_socket(ctx, zmq.DEALER, max_msg=None, sndhwm=10_000, rcvhwm=100_000)
        self.reader.setsockopt(zmq.IMMEDIATE, 1)
        # IMMEDIATE: a forwarded request fails at once (UNAVAILABLE) when the peer is down,
        # instead of waiting in a queue and being applied after the client gave up.
        self.writer.setsockopt(zmq.IMMEDIATE, 1)
        self.syncer.setsockopt(zmq.ROUTING_ID, self.instance.encode())
        self.router.bind(self.endpoint)
        self.sub.connect(self.pub_endpoint)
        self.writer.connect(self.writer_endpoint)
        self.syncer.connect(self.syncer_endpoint)
        self.reader.connect(self.syncer_endpoint)
        self.log.info("fanout.start", endpoint=self.endpoint, writer=self.writer_endpoint,
                      pub=self.pub_endpoint, syncer=self.syncer_endpoint, idle_timeout_s=self.idle_timeout_s,
                      progress_interval_s=self.progress_interval_s, ring_revisions=self.ring_revisions,
                      max_sessions=self.max_sessions, max_watches=self.max_watches)
        poller = zmq.Poller()
        for s in (self.router, self.sub, self.writer, self.syncer, self.reader):
            poller.register(s, zmq.POLLIN)
        housekeeping = Every(0.1)
        ping = Every(1.0)
        progress = Every(self.progress_interval_s)
        stats = Every(self.stats_s)
        self.progress_mark = 0
        try:
            while not self.stop:
                ready = dict(poller.poll(100))
                if self.sub in ready:
                    self._drain_publishes()
                if self.syncer in ready:
                    # Always read the syncer: one session waiting for credit must never delay
                    # another session's catch-up.  Its own frames are bounded by its window
                    # and its watchers become victims (etcd's victims) if it stays stuck.
                    self._drain_syncer()
                if self.writer in ready:
                    self._drain_replies(self.writer)
                if self.reader in ready:
                    self._drain_replies(self.reader)
                if self.router in ready:
                    self._drain_clients()
                now = time.monotonic()
                if housekeeping.due(now):
                    self._retry_victims(now)
                    self._expire_sessions(now)
                if ping.due(now):
                    self.ping_seq += 1
                    self._send_syncer(["ping", self.ping_seq, {}])
                if progress.due(now):
                    self._progress_tick()
                self._flush()
                if stats.due(now):
                    self._log_stats()
        finally:
            self.log.info("fanout.stop", sessions=len(self.sessions), watchers=len(self.watchers),
                          revision=self.last_seen, signal=self.stop.signal)
            for s in (self.router, self.sub, self.writer, self.syncer, self.reader):
                s.close()
            ctx.term()
        return 0

    # ================================================================== publishes
    def _drain_publishes(self):
        for _ in range(256):
            if not self.sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return  # drained (cheaper than ending on a zmq.Again exception)
            raw = self.sub.recv(zmq.NOBLOCK)
            try:
                tag, prev, last, revs, compact_rev = msgpack.unpackb(raw, raw=False, use_list=True)
                assert tag == "pub"
            except Exception as exc:
                self.log.error("fanout.bad_publish", error=str(exc)[:200])
                continue
            self._on_publish(prev, last, revs, compact_rev)

    def _on_publish(self, prev: int, last: int, revs: list, compact_rev: int):
        self.compact_revision = compact_rev
        if self.last_seen is None:
            self.last_seen = prev
            self.log.info("fanout.joined_stream", revision=prev, waiting_creates=len(self.waiting_creates))
            waiting, self.waiting_creates = self.waiting_creates, []
            for ident, req_id, body in waiting:
                session = self.sessions.get(ident)
                if session is None:
                    continue
                try:
                    self._watch_create(session, req_id, body)
                except ZwatchError as err:
                    self._queue_reply(ident, messages.encode_error(req_id, err))
        if last <= self.last_seen:
            return
        if prev > self.last_seen:
            self._gap(prev)
        self.st["publishes"] += 1
        revs = [r for r in revs if r[0] > self.last_seen]
        i = 0
        while i < len(revs):
            first = revs[i][0]
            self._activate_futures(first)
            # A segment runs until the next future watcher's start, so that every watcher in
            # the index wants every revision of the segment.
            nxt = self.futures[0][0] if self.futures else None
            j = i + 1
            while j < len(revs) and (nxt is None or revs[j][0] < nxt):
                j += 1
            self._deliver(revs[i:j], last)
            i = j
        ring, sizes = self.ring, self.ring_sizes
        for r in revs:
            n = revision_bytes(r[1])
            ring.append(r)
            sizes.append(n)
            self.ring_bytes += n
            self.st["events"] += len(r[1])
        self.st["revisions"] += len(revs)
        # Bounded by count and by bytes (big values must not make the ring grow without bound).
        while ring and (len(ring) > self.ring_revisions or self.ring_bytes > self.ring_max_bytes):
            ring.popleft()
            self.ring_bytes -= sizes.popleft()
        self.last_seen = last
        self._activate_futures(last + 1)

    def _deliver(self, seg: list, header_rev: int):
        """Match a run of revisions against the index; queue one response per matched slot."""
        matched: dict[Group, list] = {}
        match = self.index.match
        for _rev, events in seg:
            for ev in events:
                t, kv, prev = ev
                groups_lists = match(kv[0])
                if not groups_lists:
                    continue
                short = [t, kv]
                long = short if prev is None else [t, kv, prev]
                bit = 1 << t
                for groups in groups_lists:
                    for g in groups:
                        if g.filter_bits & bit:
                            continue
                        lst = matched.get(g)
                        if lst is None:
                            matched[g] = [long if g.prev_kv else short]
                        else:
                            lst.append(long if g.prev_kv else short)
        if not matched:
            return
        out = self.out
        for g, evs in matched.items():
            first_rev = evs[0][1][2]
            for slot in g.slots.values():
                slot.last_event_rev = header_rev
                ids = slot.ids
                if ids is None:
                    ids = slot.ids = [w.watch_id for w in slot.watchers]
                self.st["deliveries"] += len(evs) * len(ids)
                items = out.setdefault(slot.session.ident, [])
                # The owner snapshots who was in the slot: a watcher that joins later must not be
                # victimized for events from before its start.
                owner = (tuple(slot.watchers), first_rev)
                for resp in messages.pack_watch_responses(ids, header_rev, evs, g.fragment):
                    items.append(("w", resp, owner))

    def _gap(self, prev: int):
        """We missed (last_seen, prev]: every watcher that wanted those revisions goes to the syncer."""
        self.st["gaps"] += 1
        missed_from = self.last_seen + 1
        moved = 0
        for g in list(self.index.all_items()):
            for slot in list(g.slots.values()):
                for w in list(slot.watchers):
                    self._unindex(w)
                    self._to_syncer(w, missed_from)
                    moved += 1
        while self.futures and self.futures[0][0] <= prev:
            next_rev, uid = heapq.heappop(self.futures)
            w = self.watchers.get(uid)
            if w is not None and w.state == FUTURE and w.next_rev == next_rev:
                self._to_syncer(w, next_rev)
                moved += 1
        self.log.warning("fanout.publish_gap", last_seen=self.last_seen, publish_prev=prev, watchers_moved=moved)
        self.ring.clear()
        self.ring_sizes.clear()
        self.ring_bytes = 0
        self.last_seen = prev

    # ================================================================== watcher placement
    def _index(self, w: Watcher):
        # The groups of one (key, end) differ only by filters, prev_kv and fragment: at most 16,
        # so they are found in the index's own list instead of a dict of spec tuples.
        g = None
        for cand in self.index.items(w.key, w.end):
            if cand.filter_bits == w.filter_bits and cand.prev_kv == w.prev_kv and cand.fragment == w.fragment:
                g = cand
                break
        if g is None:
            g = Group(w.key, w.end, w.filter_bits, w.prev_kv, w.fragment)
            self.index.add(w.key, w.end, g)
        slot = g.slots.get(w.session.ident)
        if slot is None:
            slot = g.slots[w.session.ident] = Slot(g, w.session)
        slot.ids = None
        slot.watchers.append(w)
        w.slot = slot
        # Position: everything before it is queued to the session.  A future watcher activated
        # in the middle of a publish has everything before its start; any other, up to last_seen.
        pos = w.next_rev - 1 if w.state == FUTURE else self.last_seen
        self._set_state(w, SYNCED)
        # A SYNCED watcher's next revision is implicitly last_seen + 1: a value kept here would
        # go stale, and a later victimization would replay from it (duplicates, issue #8.1).
        w.next_rev = 0
        if w.owes_progress:
            w.owes_progress = False
            self.out.setdefault(w.session.ident, []).append(
                ("w", _pack([[w.watch_id], pos, [], False]), ((w,), pos + 1, True)))

    def _unindex(self, w: Watcher):
        slot = w.slot
        w.slot = None
        slot.ids = None  # responses already built keep the list they were packed with
        slot.watchers.remove(w)
        if not slot.watchers:
            self._remove_slot(slot)

    def _remove_slot(self, slot: Slot):
        g = slot.group
        del g.slots[slot.session.ident]
        if not g.slots:
            self.index.remove(g.key, g.end, g)

    def _make_synced(self, w: Watcher, next_rev: int):
        """Place a watcher that has everything before next_rev."""
        last = self.last_seen
        if next_rev > last + 1:
            self._set_state(w, FUTURE)
            w.next_rev = next_rev
            heapq.heappush(self.futures, (next_rev, w.uid))
        elif next_rev == last + 1:
            self._index(w)
        elif self.ring and self.ring[0][0] <= next_rev:
            self._ring_catch_up(w, next_rev)
            self._index(w)
        else:
            self._to_syncer(w, next_rev)

    def _ring_catch_up(self, w: Watcher, next_rev: int):
        self.st["ring_catchups"] += 1
        ring = self.ring
        base = ring[0][0]
        evs = []
        bit_filter = w.filter_bits
        # This is a read of history: like the syncer (and etcd), no prev_kv for an event at or
        # below the compact revision, whose previous version is compacted (issue #8.10).
        compact = self.compact_revision
        for i in range(next_rev - base, len(ring)):
            for t, kv, prev in ring[i][1]:
                if bit_filter & (1 << t) or not w.matches(kv[0]):
                    continue
                evs.append([t, kv, prev] if (w.prev_kv and prev is not None and kv[2] > compact) else [t, kv])
        if evs:
            self.st["deliveries"] += len(evs)
            items = self.out.setdefault(w.session.ident, [])
            for resp in messages.pack_watch_responses([w.watch_id], self.last_seen, evs, w.fragment):
                items.append(("w", resp, ((w,), next_rev)))

    def _activate_futures(self, upto: int):
        fut = self.futures
        while fut and fut[0][0] <= upto:
            next_rev, uid = heapq.heappop(fut)
            w = self.watchers.get(uid)
            if w is not None and w.state == FUTURE and w.next_rev == next_rev:
                self._index(w)

    def _set_state(self, w: Watcher, state):
        """The one place a watcher changes state: keeps the session's counters exact."""
        old = w.state
        if old is state:
            return
        session = w.session
        if old in (UNSYNCED, VICTIM):
            session.unsynced -= 1
        elif old is FUTURE:
            session.futures -= 1
        if state in (UNSYNCED, VICTIM):
            session.unsynced += 1
        elif state is FUTURE:
            session.futures += 1
        w.state = state

    def _to_syncer(self, w: Watcher, next_rev: int):
        self._set_state(w, UNSYNCED)
        w.epoch += 1
        w.next_rev = next_rev
        self.to_sync.append([w.uid, w.epoch, w.key, w.end, next_rev, w.filter_bits, w.prev_kv, w.watch_id,
                             w.fragment, w.session.ident])

    # ================================================================== syncer
    def _send_syncer(self, msg):
        try:
            self.syncer.send(messages.pack(msg), zmq.NOBLOCK)
        except zmq.Again:
            # The syncer is gone or swamped; the instance check re-registers everything.
            self.log_limited(self.log.warning, "fanout.syncer_send_failed", op=msg[0])
            self.syncer_instance = None

    def _drain_syncer(self):
        for _ in range(1024):
            if not self.syncer.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return  # drained (cheaper than ending on a zmq.Again exception)
            frames = self.syncer.recv_multipart(zmq.NOBLOCK)
            if len(frames) == 2:  # a reply to a forwarded client read: [client_id, reply]
                self._route_reply(frames)
                continue
            try:
                op, _, body = msgpack.unpackb(frames[-1], raw=False)
            except Exception as exc:
                self.log.error("fanout.bad_syncer_message", error=str(exc)[:200])
                continue
            if op == "ev":
                self._on_sync_events(body)
            elif op == "synced":
                for uid, epoch, rev in body:
                    w = self._current(uid, epoch)
                    if w is not None:
                        self.st["handoffs"] += 1
                        self._make_synced(w, rev + 1)
            elif op == "compacted":
                for uid, epoch, compact_rev in body:
                    w = self._current(uid, epoch)
                    if w is not None:
                        self._cancel_compacted(w, compact_rev)
            elif op == "pong":
                self._on_syncer_pong(body)
            else:
                self.log_limited(self.log.error, "fanout.syncer_error", op=op, body=str(body)[:300])

    def _current(self, uid, epoch):
        w = self.watchers.get(uid)
        if w is None or w.epoch != epoch or w.state != UNSYNCED:
            return None
        return w

    def _on_sync_events(self, body):
        out = self.out
        for members, first_rev, last_rev, resp in body:
            current = [w for w in (self._current(uid, epoch) for uid, epoch in members) if w is not None]
            if not current:
                continue
            if len(current) != len(members):
                # Some were canceled or re-registered meanwhile: they must not get these events.
                ids, rev, evs, fragment = msgpack.unpackb(resp, raw=False)
                resp = _pack([[w.watch_id for w in current], rev, evs, fragment])
            for w in current:
                w.next_rev = last_rev + 1
            self.st["synced_from_syncer"] += len(current)
            out.setdefault(current[0].session.ident, []).append(("w", resp, (tuple(current), first_rev)))

    def _on_syncer_pong(self, body):
        instance = body.get("instance") if isinstance(body, dict) else None
        if instance != self.syncer_instance:
            if self.syncer_instance is not None or any(w.state == UNSYNCED for w in self.watchers.values()):
                # A new syncer (restart) knows nothing of our unsynced watchers: register them again.
                again = [w for w in self.watchers.values() if w.state == UNSYNCED]
                for w in again:
                    self._to_syncer(w, w.next_rev)   # a new epoch: late messages of the old one are ignored
                self.log.info("fanout.syncer_changed", instance=instance, reregistered=len(again))
            self.syncer_instance = instance

    # ================================================================== victims
    def _victimize(self, owner):
        """The frame owned by owner = (watchers, first_rev[, owed_progress]) was dropped unsent.

        Invariant: frames of a session are dropped only together with every frame after them,
        and owners are visited in queue order, so the first owner a watcher is met in names the
        first revision it did not get.  That is where it resumes: exactly, never earlier (a
        duplicate) and never later (a gap)."""
        watchers, first_rev = owner[0], owner[1]
        now = time.monotonic()
        session = watchers[0].session if watchers else None
        if session is not None:
            # Back off exponentially while the session stays stuck, so that a dead client does
            # not make the syncer replay for it ten times a second.
            session.backoff = min(max(session.backoff * 2, self.victim_backoff_s), 5.0)
        for w in watchers:
            if len(owner) > 2:
                w.owes_progress = True     # a requested progress notification was dropped
            state = w.state
            if state == SYNCED:
                # Its position is implicit (last_seen + 1): the dropped frame's first revision
                # is the first one it did not get.
                self._unindex(w)
                resume = first_rev
            elif state == UNSYNCED or state == FUTURE:
                # next_rev is how far the syncer has sent (or where a future watcher starts):
                # an earlier dropped frame comes first.
                if state == UNSYNCED:
                    self.to_unsync.append([w.uid, w.epoch])
                resume = min(w.next_rev, first_rev)
            elif state == VICTIM:
                w.next_rev = min(w.next_rev, first_rev)
                continue
            else:
                continue           # canceled meanwhile
            self._set_state(w, VICTIM)
            w.epoch += 1
            w.next_rev = resume
            self.victims.append((now + session.backoff, w))
            self.st["victims"] += 1

    def _retry_victims(self, now):
        if not self.victims:
            return
        keep = deque()
        for due, w in self.victims:
            if w.state != VICTIM or self.watchers.get(w.uid) is not w:
                continue
            if due <= now:
                self._to_syncer(w, w.next_rev)
            else:
                keep.append((due, w))
        self.victims = keep

    # ================================================================== output
    def _flush(self):
        # Both lists grow with the number of watchers (a gap or a syncer restart moves them all):
        # they travel in bounded messages, never one that the syncer would refuse (issue #8.3).
        if self.to_unsync:
            for chunk in chunk_by_size(self.to_unsync, lambda item: 24, SYNC_MESSAGE_BYTES):
                self._send_syncer(["unsync", 0, chunk])
            self.to_unsync = []
        if self.to_sync:
            for chunk in chunk_by_size(self.to_sync, _registration_bytes, SYNC_MESSAGE_BYTES):
                self._send_syncer(["sync", 0, chunk])
            self.to_sync = []
        if not self.out and not self.holding:
            return
        out, self.out = self.out, {}
        for ident in self.holding:
            out.setdefault(ident, [])
        self.holding = set()
        now = time.monotonic()
        for ident, items in out.items():
            session = self.sessions.get(ident)
            frames = session.held if session is not None else []
            run = []
            owners = []
            run_bytes = 0
            for kind, data, owner in items:
                if kind == "w":
                    if run and run_bytes + len(data) > _FRAME_BYTES:
                        frames.append((_W_HEAD + _array_header(len(run)) + b"".join(run), owners))
                        run, owners, run_bytes = [], [], 0
                    run.append(data)
                    owners.append(owner)
                    run_bytes += len(data)
                    continue
                if run:
                    frames.append((_W_HEAD + _array_header(len(run)) + b"".join(run), owners))
                    run, owners, run_bytes = [], [], 0
                if kind == "r":
                    frames.append((data, None))
                elif kind == "c":
                    frames.append((_W_HEAD + _array_header(1) + data, None))
                else:  # "p": requested progress, then its reply; both stand or fall with the events before
                    if data[0] is not None:
                        frames.append((data[0], ("progress", owner)))
                    frames.append((data[1], ("progress", owner)))
            if run:
                frames.append((_W_HEAD + _array_header(len(run)) + b"".join(run), owners))
            self._send_frames(ident, session, frames, now)

    def _send_frames(self, ident, session, frames, now):
        """Send in order while the session has credit; hold the rest; victimize a stuck session."""
        router = self.router
        sent = 0
        for frame, owners in frames:
            if session is not None and isinstance(owners, list) and session.sent_bytes > session.acked_bytes and \
                    session.sent_bytes - session.acked_bytes + len(frame) > self.session_window:
                break  # no credit: hold this and everything after it (one frame may always go)
            try:
                router.send_multipart((ident, frame), zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            except zmq.ZMQError:  # EHOSTUNREACH: the client is gone
                self._close_session(ident, "unreachable")
                return
            sent += 1
            self.st["frames"] += 1
            if session is not None:
                session.sent_bytes += len(frame)
                inflight = session.sent_bytes - session.acked_bytes
                if inflight > self.max_inflight:
                    self.max_inflight = inflight
        rest = frames[sent:]
        if session is None:
            return
        if not rest:
            session.held, session.held_bytes = [], 0
            return
        if not session.held or sent:
            session.held_since = now
        session.held = rest
        session.held_bytes = sum(len(f) for f, _ in rest)
        if session.held_bytes > self.session_window or now - session.held_since > self.stall_s:
            # The session stays stuck: its matched watchers become victims from the first
            # revision they did not get; nobody else waits for it any longer.  Replies and
            # control responses stay queued; a requested progress notification that would
            # follow dropped events is asked again (answered at once for the watches that are
            # synced, owed to the others until they are).
            keep, lost, progress = [], 0, set()
            for frame, fowners in rest:
                if isinstance(fowners, list):
                    lost += 1
                    for o in fowners:
                        if o is not None:
                            self._victimize(o)
                elif isinstance(fowners, tuple):
                    progress.add(fowners[1])
                else:
                    keep.append((frame, fowners))
            session.held = keep
            session.held_bytes = sum(len(f) for f, _ in keep)
            if lost:
                self.log_limited(self.log.info, "watch.victim", key=ident, session=session.name,
                                 frames_lost=lost, inflight_bytes=session.sent_bytes - session.acked_bytes)
            if len(keep) > MAX_HELD_REPLIES or session.held_bytes > self.session_window:
                # It sends requests (pings) but reads nothing: its replies would pile up forever.
                self.log.warning("fanout.session_not_reading", session=session.name, held_replies=len(keep),
                                 held_bytes=session.held_bytes)
                self._close_session(ident, "not_reading")
                return
            if keep:
                self.holding.add(ident)
            for req_id in sorted(progress):
                self._request_progress(session, req_id)
        else:
            self.holding.add(ident)

    def _queue_reply(self, ident: bytes, frame: bytes):
        self.out.setdefault(ident, []).append(("r", frame, None))

    # ================================================================== clients
    def _drain_clients(self):
        router = self.router
        for _ in range(1024):
            if not router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return  # drained (cheaper than ending on a zmq.Again exception)
            frames = router.recv_multipart(zmq.NOBLOCK)
            self.st["requests"] += 1
            ident = frames[0]
            if len(frames) != 2:
                self.st["bad_requests"] += 1
                self._queue_reply(ident, messages.encode_error(None, InvalidArgument("a request is one frame")))
                continue
            raw = frames[1]
            req_id = None
            try:
                op, req_id, body = messages.decode_request(raw)
                self._dispatch(ident, raw, op, req_id, body)
            except ZwatchError as err:
                self.st["bad_requests"] += 1
                rid = req_id if req_id is not None else messages.error_req_id(err)
                self._queue_reply(ident, messages.encode_error(rid, err))
            except Exception as exc:  # a bug must cost one request, never the process
                self.log.exception("fanout.request_failed")
                self._queue_reply(ident, messages.encode_error(req_id, ZwatchError(f"{type(exc).__name__}: {exc}")))

    def _dispatch(self, ident, raw, op, req_id, body):
        session = self.sessions.get(ident)
        if op == "hello":
            self._hello(ident, req_id, body)
            return
        if session is None:
            raise FailedPrecondition("no session: send hello first", reason=NO_SESSION)
        session.last_heard = time.monotonic()
        if op == "ack":
            acked = messages.get_int(body, "bytes")
            if acked > session.acked_bytes:
                # Clamp: a client may count a frame or two from before its session existed.
                session.acked_bytes = min(acked, session.sent_bytes)
                session.backoff = 0.0
        elif op == "ping":
            self._queue_reply(ident, messages.pack(["pong", req_id, {"revision": self.last_seen or 0}]))
        elif op in messages.WRITE_OPS or op == "status":
            self._forward(self.writer, ident, raw, req_id, "writer")
        elif op in messages.READ_OPS:
            self._forward(self.reader, ident, raw, req_id, "syncer")
        elif op == "watch_create":
            self._watch_create(session, req_id, body)
        elif op == "watch_cancel":
            wid = messages.get_int(body, "watch_id", 0, -1, 1 << 62)
            w = session.watches.get(wid)
            # Idempotent, as etcd: cancelling a watch the server already ended (compaction, an
            # earlier cancel) or never had still answers "canceled" (issue #8.15).
            self._queue_reply(ident, messages.encode_ok(req_id, messages.control_response(
                wid, self.last_seen or 0, canceled=True, cancel_reason="canceled by client")))
            if w is not None:
                self._drop(w)
        elif op == "watch_progress":
            self._request_progress(session, req_id)
        elif op == "bye":
            self._close_session(ident, "bye")
            try:
                self.router.send_multipart((ident, messages.encode_ok(req_id, {})), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _hello(self, ident, req_id, body):
        version = messages.get_int(body, "version", 0, 0, 1 << 31)
        if version != PROTOCOL_VERSION:
            raise FailedPrecondition(f"protocol version {version} is not supported; this fan-out speaks {PROTOCOL_VERSION}")
        if ident in self.sessions:
            self._close_session(ident, "rehello")
        elif len(self.sessions) >= self.max_sessions:
            raise ResourceExhausted(f"this fan-out holds its maximum of {self.max_sessions} sessions")
        name = str(body.get("client", ""))[:64]
        self.sessions[ident] = Session(ident, name or ident.hex())
        self._queue_reply(ident, messages.encode_ok(req_id, {
            "version": PROTOCOL_VERSION, "session": ident.hex(), "fanout": self.instance,
            "heartbeat_s": 1.0, "idle_timeout_s": self.idle_timeout_s,
            "revision": self.last_seen or 0,
            "limits": {"max_watches": self.max_watches, "max_request_bytes": messages.MAX_REQUEST_BYTES,
                       "max_key_bytes": messages.MAX_KEY_BYTES}}))
        self.log.info("session.open", session=name or ident.hex(), sessions=len(self.sessions))

    def _forward(self, sock, ident, raw, req_id, peer):
        try:
            sock.send_multipart((ident, raw), zmq.NOBLOCK)
        except zmq.Again:
            raise Unavailable(f"the {peer} is not reachable") from None

    def _drain_replies(self, sock):
        # Publishes first: the writer announces a compaction before it replies to it.
        self._drain_publishes()
        for _ in range(4096):
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return  # drained (cheaper than ending on a zmq.Again exception)
            frames = sock.recv_multipart(zmq.NOBLOCK)
            if len(frames) == 2:
                self._route_reply(frames)

    def _route_reply(self, frames):
        ident, reply = frames
        if ident in self.sessions:
            self._queue_reply(ident, reply)

    def _watch_create(self, session: Session, req_id, body):
        spec = messages.WatchSpec(body)
        if len(session.watches) >= self.max_watches:
            raise ResourceExhausted(f"a session holds at most {self.max_watches} watches")
        if self.last_seen is None:
            # Just started: the first publish (at most one writer heartbeat away) tells us the
            # current revision; until then creates wait here instead of failing.
            if len(self.waiting_creates) >= 100_000:
                raise Unavailable("this fan-out has not joined the writer's stream yet; retry")
            self.waiting_creates.append((session.ident, req_id, body))
            return
        wid = spec.watch_id
        if wid == 0:
            while session.next_auto_id in session.watches:
                session.next_auto_id += 1
            wid = session.next_auto_id
            session.next_auto_id += 1
        elif wid in session.watches:
            raise FailedPrecondition(f"watch_id {wid} already exists in this session")
        created = messages.control_response(wid, self.last_seen, created=True)
        self._queue_reply(session.ident, messages.encode_ok(req_id, created))
        if spec.empty_range:
            self.out[session.ident].append(("c", _pack(messages.control_response(
                wid, self.last_seen, canceled=True,
                cancel_reason="etcdserver: key >= range_end: the range is empty")), None))
            return
        uid = self.next_uid
        self.next_uid += 1
        w = Watcher(uid, session, wid, spec)
        self.watchers[uid] = w
        session.watches[wid] = w
        if spec.progress_notify:
            self.progress_watchers.add(w)
        start = spec.start_revision
        if start == 0:
            start = self.last_seen + 1
        if start <= self.last_seen and start < self.compact_revision:
            # Cancel with compact_revision, as etcd, without a trip to the syncer.
            self._cancel_compacted(w, self.compact_revision)
            return
        self._make_synced(w, start)

    def _cancel(self, w: Watcher, reason: str, compact_revision: int = 0, header_revision: int | None = None):
        if header_revision is None:
            header_revision = self.last_seen or 0
        self.out.setdefault(w.session.ident, []).append(("c", _pack(messages.control_response(
            w.watch_id, header_revision, canceled=True, cancel_reason=reason,
            compact_revision=compact_revision)), None))
        self._drop(w)

    def _cancel_compacted(self, w: Watcher, compact_revision: int):
        # etcd sends a compaction cancel with header revision 0 (the watcher's response carries
        # no revision); so do we, on both paths (creation and catch-up) (issue #8.16).
        self._cancel(w, "mvcc: required revision has been compacted", compact_revision, header_revision=0)

    def _drop(self, w: Watcher):
        """Forget a watcher in whatever state it is."""
        session = w.session
        if w.state == SYNCED and w.slot is not None:
            self._unindex(w)
        elif w.state == UNSYNCED:
            self.to_unsync.append([w.uid, w.epoch])
        self._set_state(w, None)
        self.watchers.pop(w.uid, None)
        session.watches.pop(w.watch_id, None)
        self.progress_watchers.discard(w)

    def _close_session(self, ident, reason: str):
        session = self.sessions.pop(ident, None)
        if session is None:
            return
        # Take the session's slots out whole first: removing watchers one by one would rebuild
        # each slot's id list once per watcher (quadratic for a session with many watches).
        for w in session.watches.values():
            slot = w.slot
            if slot is not None and slot.group.slots.get(ident) is slot:
                self._remove_slot(slot)
            if w.state == SYNCED:
                w.slot = None
                w.state = None
        for w in list(session.watches.values()):
            self._drop(w)
        self.out.pop(ident, None)
        self.holding.discard(ident)
        self.log.info("session.close", session=session.name, reason=reason, sessions=len(self.sessions))

    def _expire_sessions(self, now):
        limit = now - self.idle_timeout_s
        for ident in [i for i, s in self.sessions.items() if s.last_heard < limit]:
            self._close_session(ident, "idle_timeout")

    # ================================================================== progress
    def _request_progress(self, session: Session, req_id: int):
        """Answer watch_progress at once (etcd #20242: one slow watch must not starve the others).

        Every watch synced now gets a progress notification at R = last_seen, queued behind its
        events; the reply follows.  When all the session's watches are synced the notification
        names them all as [-1].  A watch still catching up (or waiting for a future start) is
        owed its own notification, sent when it becomes synced, at its position then: never a
        revision it has not delivered."""
        rev = self.last_seen or 0
        if session.unsynced == 0 and session.futures == 0:
            ids = [-1]
        else:
            ids = []
            for w in session.watches.values():
                if w.state == SYNCED:
                    ids.append(w.watch_id)
                else:
                    w.owes_progress = True
        frame = _W_HEAD + _array_header(1) + _pack([ids, rev, [], False]) if ids else None
        self.out.setdefault(session.ident, []).append(
            ("p", (frame, messages.encode_ok(req_id, {"header": {"revision": rev}})), req_id))

    def _progress_tick(self):
        """etcd's progress_notify: synced watchers that had no events since the last tick."""
        if self.last_seen is None:
            return
        mark, self.progress_mark = self.progress_mark, self.last_seen
        per_session: dict[bytes, list[Watcher]] = {}
        for w in self.progress_watchers:
            # Only synced watchers, never a future one (it would claim a revision below its start).
            if w.state == SYNCED and w.slot.last_event_rev <= mark:
                per_session.setdefault(w.session.ident, []).append(w)
        for ident, ws in per_session.items():
            resp = _pack([[w.watch_id for w in ws], self.last_seen, [], False])
            self.out.setdefault(ident, []).append(("w", resp, (tuple(ws), self.last_seen + 1)))

    def _log_stats(self):
        self.log.info("fanout.stats", sessions=len(self.sessions), watchers=len(self.watchers),
                      groups=len(self.index), futures=len(self.futures), victims_pending=len(self.victims),
                      unsynced=sum(1 for w in self.watchers.values() if w.state == UNSYNCED),
                      revision=self.last_seen, ring=len(self.ring), ring_bytes=self.ring_bytes, interval_s=self.stats_s,
                      max_inflight_bytes=self.max_inflight, session_window=self.session_window, **self.st)
        for k in self.st:
            self.st[k] = 0
        self.max_inflight = 0


def main(endpoint: str | None = None) -> int:
    return Fanout.from_env(endpoint).run()


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
