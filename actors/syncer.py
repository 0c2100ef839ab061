"""The syncer actor: serves reads, and replays history to unsynced watchers in batches.

Why the syncer serves Range: it is a reader of LMDB already, LMDB readers never wait for the
writer's fsync (MVCC snapshots), and a fan-out on another host than the LMDB file reaches it
over ZeroMQ like any other peer.  Replay runs in bounded chunks, so a read waits at most one
chunk behind a catch-up.

State machine::

    IDLE --unsynced watchers pending--> BATCH: take up to batch_size watchers (lowest next
         revision first), min_rev = their lowest next revision; cancel those below the
         compact revision (etcd #17529: before anything else about them advances)
    BATCH --chunk: ONE history scan from the cursor, bounded by revisions and bytes--> match
         each record against the batch's own KeyIndex, send per-watcher responses
         (whole revisions only) to the owning fan-outs
    BATCH --cursor passed the snapshot's current revision R--> "synced" at R for every watcher
         of the batch, back to IDLE

Between chunks it serves reads and takes new registrations (they join the next batch), and
stops scanning while a fan-out's pipe is full (its messages wait in an outbox).

Socket: ROUTER (ZWATCH_SYNCER_ENDPOINT).  Fan-outs speak the messages of zwatch.internal
(SPEC.md section 12); a forwarded client read arrives as [fanout, client_id, request].  A direct peer
may also send ["stats", id, {}] (counters for tests and operators).
"""
from __future__ import annotations

import heapq
import os
import time
import uuid
from collections import deque

import zmq

from zwatch import internal, messages
from zwatch.errors import InvalidArgument, ZwatchError
from zwatch.limits import MAX_RESPONSE_BYTES

from .common import Every, StopFlag, make_socket
from .index import KeyIndex
from .store import Store
from .logsetup import configure

SYNCER_OPS = frozenset({"sync", "unsync", "ping", "stats", "range", "status"})
_LIST_BODY_OPS = frozenset({"sync", "unsync"})


class SyncWatcher:
    __slots__ = ("fanout", "uid", "epoch", "key", "end", "next_rev", "filter_bits", "prev_kv", "watch_id",
                 "fragment", "session", "group")

    def __init__(self, fanout, uid, epoch, key, end, next_rev, filter_bits, prev_kv, watch_id, fragment,
                 session):
        self.fanout, self.uid, self.epoch = fanout, uid, epoch
        self.key, self.end, self.next_rev = key, end, next_rev
        self.filter_bits, self.prev_kv, self.watch_id = filter_bits, prev_kv, watch_id
        self.fragment, self.session = fragment, session
        self.group = None


class SyncGroup:
    """Watchers of one batch that want the very same events: same fan-out and session, same
    spec, same next revision.  A chunk is matched and packed once per group, and the response
    lists every watch id of the group (the client hands it to each)."""
    __slots__ = ("gkey", "key", "end", "filter_bits", "prev_kv", "fragment", "next_rev", "fanout", "members")

    def __init__(self, gkey, w: SyncWatcher):
        self.gkey = gkey
        self.key, self.end, self.filter_bits, self.prev_kv = w.key, w.end, w.filter_bits, w.prev_kv
        self.fragment, self.next_rev, self.fanout = w.fragment, w.next_rev, w.fanout
        self.members: dict[int, SyncWatcher] = {}


class Syncer:
    def __init__(self, data_dir: str, endpoint: str, *, batch_size: int = 512, chunk_revisions: int = 2000,
                 chunk_bytes: int = 1 << 20, batch_delay_s: float = 0.1, quiet_s: float = 0.01,
                 fanout_timeout_s: float = 10.0,
                 stats_s: float = 10.0):
        self.data_dir = data_dir
        self.endpoint = endpoint
        self.batch_size = batch_size
        self.chunk_revisions = chunk_revisions
        self.chunk_bytes = min(chunk_bytes, MAX_RESPONSE_BYTES)
        self.fanout_timeout_s = fanout_timeout_s
        # Watchers created together should share one history scan: a batch starts once
        # registrations pause for quiet_s, or at the latest batch_delay_s after the first one
        # (etcd's syncWatchers runs every 100 ms).
        self.batch_delay_s = batch_delay_s
        self.quiet_s = quiet_s
        self.pending_since = 0.0
        self.last_registration = 0.0
        self.stats_s = stats_s
        self.instance = f"syncer-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.log = configure("syncer").bind(instance=self.instance)
        self.stop = StopFlag()
        self.pending: dict[tuple[bytes, int], SyncWatcher] = {}   # waiting for a batch
        # Lowest next revision first, without sorting every pending watcher at every batch
        # (100,000 re-registered watchers make ~200 batches): (next_rev, seq, key, watcher),
        # entries whose watcher left `pending` are skipped when popped.
        self.pending_heap: list[tuple[int, int, tuple, SyncWatcher]] = []
        self.pending_seq = 0
        self.batch: dict[tuple[bytes, int], SyncWatcher] | None = None
        # (fan-out, session, spec) -> the batch's groups for it, which differ by next revision.
        self.batch_groups: dict[tuple, list[SyncGroup]] = {}
        self.batch_index: KeyIndex | None = None
        self.cursor = 0          # next revision the batch scan reads
        self.outbox: deque[tuple[bytes, bytes]] = deque()
        self.fanout_heard: dict[bytes, float] = {}
        self.totals = dict(batches=0, records_scanned=0, events_sent=0, handoffs=0, compacted=0, reads=0)
        self.st = dict(self.totals)

    @classmethod
    def from_env(cls) -> "Syncer":
        from zwatch import settings         # the declarations: protocol/settings.py
        return cls(**settings.actor_kwargs("syncer", cls))

    def _count(self, name, n=1):
        self.totals[name] += n
        self.st[name] += n

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        os.makedirs(self.data_dir, exist_ok=True)
        self.store = Store(self.data_dir)
        ctx = zmq.Context()
        self.router = make_socket(ctx, zmq.ROUTER, sndhwm=1000, rcvhwm=100_000)
        self.router.bind(self.endpoint)
        self.log.info("syncer.start", data_dir=os.path.abspath(self.data_dir), endpoint=self.endpoint,
                      batch_size=self.batch_size, chunk_revisions=self.chunk_revisions,
                      chunk_bytes=self.chunk_bytes, quiet_s=self.quiet_s, batch_delay_s=self.batch_delay_s,
                      revision=self.store.current_revision())
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        stats = Every(self.stats_s)
        reap = Every(1.0)
        try:
            while not self.stop:
                self._flush_outbox()
                now = time.monotonic()
                # bool(): `self.pending and ...` would be the (empty) dict itself, which the drain
                # below can fill, making a stale `due` true and skipping the quiet window.
                due = bool(self.pending) and (len(self.pending) >= self.batch_size
                                        or now - self.last_registration >= self.quiet_s
                                        or now - self.pending_since >= self.batch_delay_s)
                busy = (self.batch is not None or due) and not self.outbox
                # Busy: just look for input between chunks.  Outbox full: the fan-out's pipe
                # drains fast, retry soon (not after a full idle wait: that stalled every chunk).
                timeout = 0 if busy else (2 if self.outbox else (5 if self.pending else 50))
                if poller.poll(timeout):
                    self._drain()
                self._flush_outbox()
                if not self.outbox:
                    if self.batch is None and due:
                        self._start_batch()
                    if self.batch is not None:
                        self._scan_chunk()
                now = time.monotonic()
                if reap.due(now):
                    self._reap_fanouts(now)
                if stats.due(now):
                    self.log.info("syncer.stats", pending=len(self.pending),
                                  batch=len(self.batch or ()), outbox=len(self.outbox),
                                  interval_s=self.stats_s, **self.st)
                    self.st = dict.fromkeys(self.st, 0)
        finally:
            self.log.info("syncer.stop", signal=self.stop.signal, **self.totals)
            self.router.close()
            ctx.term()
            self.store.close()
        return 0

    def _drain(self):
        for _ in range(1024):
            if not self.router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return  # drained (cheaper than ending on a zmq.Again exception)
            frames = self.router.recv_multipart(zmq.NOBLOCK)
            if not 2 <= len(frames) <= 3:
                self.log.warning("syncer.bad_envelope", frames=len(frames))
                continue
            envelope, raw = frames[:-1], frames[-1]
            peer = frames[0]
            req_id = None
            try:
                op, req_id, body = messages.decode_request(raw, SYNCER_OPS, _LIST_BODY_OPS)
                reply = self._handle(peer, envelope, op, req_id, body)
            except ZwatchError as err:
                rid = req_id if req_id is not None else messages.error_req_id(err)
                reply = messages.encode_error(rid, err)
            except Exception as exc:
                self.log.exception("syncer.request_failed")
                reply = messages.encode_error(req_id, ZwatchError(f"{type(exc).__name__}: {exc}"))
            if reply is not None:
                self._send(envelope, reply)

    def _handle(self, peer, envelope, op, req_id, body):
        if op == "range":
            self._count("reads")
            return messages.encode_ok(req_id, self.store.range(body))
        if op == "status":
            return messages.encode_ok(req_id, {"header": {"revision": self.store.current_revision()},
                                               "compact_revision": self.store.compact_revision(),
                                               "actor": "syncer", "instance": self.instance})
        if op == "stats":
            return internal.encode_stats_reply(req_id, dict(self.totals, pending=len(self.pending),
                                                            batch=len(self.batch or ()), instance=self.instance))
        if len(envelope) != 1:
            raise InvalidArgument(f"{op} is a fan-out message")
        self.fanout_heard[peer] = time.monotonic()
        if op == "ping":
            return internal.Pong(req_id, self.instance, self.store.current_revision()).encode()
        if op == "sync":
            for reg in internal.decode_sync(body):     # all checked before any is taken
                k = (peer, reg.uid)
                self._forget(k)
                w = SyncWatcher(peer, *reg._replace(next_rev=max(1, reg.next_rev)))
                if self.batch is not None and len(self.batch) < self.batch_size and \
                        w.next_rev >= self.cursor - self.chunk_revisions:
                    # Join the running batch instead of costing a scan of its own.  If the scan
                    # has just passed this watcher's start (by one chunk at most), the cursor
                    # goes back to it: the groups already in the batch skip records below their
                    # next revision, so little is read twice.  Deeper rewinds are not done: a
                    # stream of late watchers would keep the whole batch from ever finishing.
                    self._join_batch(k, w)
                    self.batch_size_now += 1
                    if w.next_rev < self.cursor:
                        self.batch_rewinds += 1
                        self.cursor = w.next_rev
                        self.batch_min_rev = min(self.batch_min_rev, w.next_rev)
                else:
                    now = time.monotonic()
                    if not self.pending:
                        self.pending_since = now
                    self.last_registration = now
                    self.pending[k] = w
                    self.pending_seq += 1
                    heapq.heappush(self.pending_heap, (w.next_rev, self.pending_seq, k, w))
        elif op == "unsync":
            for uid, epoch in internal.decode_unsync(body):
                w = self.pending.get((peer, uid)) or (self.batch or {}).get((peer, uid))
                if w is not None and w.epoch == epoch:
                    self._forget((peer, uid))
        return None

    def _forget(self, k):
        self.pending.pop(k, None)
        if self.batch is not None:
            w = self.batch.pop(k, None)
            if w is not None:
                g = w.group
                del g.members[w.uid]
                if not g.members:
                    same = self.batch_groups[g.gkey]
                    same.remove(g)
                    if not same:
                        del self.batch_groups[g.gkey]
                    self.batch_index.remove(g.key, g.end, g)

    def _reap_fanouts(self, now):
        dead = [f for f, t in self.fanout_heard.items() if now - t > self.fanout_timeout_s]
        for fanout in dead:
            self._drop_fanout(fanout, "silent")

    def _drop_fanout(self, fanout: bytes, reason: str):
        self.fanout_heard.pop(fanout, None)
        gone = [k for k in list(self.pending) + list(self.batch or ()) if k[0] == fanout]
        for k in gone:
            self._forget(k)
        self.outbox = deque((f, m) for f, m in self.outbox if f != fanout)
        self.log.info("syncer.fanout_dropped", fanout=fanout.decode(errors="replace"), reason=reason, watchers=len(gone))

    # ------------------------------------------------------------------ output
    def _send(self, envelope, frame) -> bool:
        try:
            self.router.send_multipart(envelope + [frame], zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError:  # EHOSTUNREACH: the peer is gone
            if len(envelope) == 1:
                self._drop_fanout(envelope[0], "unreachable")
            return True

    def _post_by_fanout(self, encode, pairs):
        """Frames per fan-out for (fanout, item) pairs; encode (internal.encode_events, ...)
        cuts them to a bounded size.

        Everything posted here grows with the number of watchers (or of groups x events): one
        message for all of them would be unbounded (issue #8.3)."""
        by_fanout: dict[bytes, list] = {}
        for fanout, item in pairs:
            by_fanout.setdefault(fanout, []).append(item)
        for fanout, items in by_fanout.items():
            for frame in encode(items):
                self.outbox.append((fanout, frame))

    def _flush_outbox(self):
        while self.outbox:
            fanout, frame = self.outbox[0]
            if not self._send([fanout], frame):
                return  # that fan-out's pipe is full: stop scanning until it drains
            if self.outbox and self.outbox[0][1] is frame:
                self.outbox.popleft()

    # ------------------------------------------------------------------ batches
    def _start_batch(self):
        chosen = []
        heap, pending = self.pending_heap, self.pending
        while heap and len(chosen) < self.batch_size:
            _, _, k, w = heapq.heappop(heap)
            if pending.get(k) is w:
                chosen.append(w)
        if not pending:
            heap.clear()
        elif len(heap) > 2 * len(pending) + 1024:   # mostly stale entries (cancels): rebuild
            self.pending_heap = heap = [e for e in heap if pending.get(e[2]) is e[3]]
            heapq.heapify(heap)
        self.batch = {}
        self.batch_groups = {}
        self.batch_index = KeyIndex()
        for w in chosen:
            k = (w.fanout, w.uid)
            del self.pending[k]
            self._join_batch(k, w)
        self.pending_since = time.monotonic()  # whoever is left waits one more delay at most
        self.cursor = chosen[0].next_rev
        self.batch_started = time.perf_counter()
        self.batch_scanned = 0
        self.batch_size_now = len(chosen)
        self.batch_min_rev = self.cursor
        self.batch_rewinds = 0
        self._count("batches")

    def _join_batch(self, k, w: SyncWatcher):
        self.batch[k] = w
        # A group's next revision advances with the scan: a watcher joins only a group at
        # exactly its own next revision (never one that has read past its start).
        gkey = (w.fanout, w.session, w.key, w.end, w.filter_bits, w.prev_kv, w.fragment)
        same = self.batch_groups.setdefault(gkey, [])
        g = next((c for c in same if c.next_rev == w.next_rev), None)
        if g is None:
            g = SyncGroup(gkey, w)
            same.append(g)
            self.batch_index.add(g.key, g.end, g)
        g.members[w.uid] = w
        w.group = g

    def _scan_chunk(self):
        store = self.store
        with store.reader() as view:
            current, compact = view.current_revision, view.compact_revision
            if self.cursor < compact:
                # Every watcher still wanting revisions below the compact revision is canceled
                # first, with compact_revision, before anything else about it advances.
                doomed = [w for w in self.batch.values() if w.group.next_rev < compact]
                self._post_by_fanout(internal.encode_compacted,
                                     ((w.fanout, internal.CompactedCancel(w.uid, w.epoch, compact)) for w in doomed))
                for w in doomed:
                    self._forget((w.fanout, w.uid))
                self._count("compacted", len(doomed))
                self.cursor = compact
                if not self.batch:
                    self._finish_batch(current)
                    return
            if self.cursor > current:
                self._finish_batch(current)
                return
            to_rev = min(current, self.cursor + self.chunk_revisions - 1)
            records = view.history(self.cursor, to_rev, max_records=self.chunk_revisions * 4,
                                   max_bytes=self.chunk_bytes)
            self._count("records_scanned", len(records))
            self.batch_scanned += len(records)
            per_group: dict[SyncGroup, list] = {}
            match = self.batch_index.match
            for main, sub, t, kv, _nbytes in records:
                hits = match(kv[0])
                if not hits:
                    continue
                bit = 1 << t
                prev = None
                prev_done = False
                for gs in hits:
                    for g in gs:
                        if g.next_rev > main or g.filter_bits & bit:
                            continue
                        if g.prev_kv:
                            if not prev_done:
                                prev = view.prev_kv(kv[0], main, sub)
                                prev_done = True
                            ev = [t, kv, prev] if prev is not None else [t, kv]
                        else:
                            ev = [t, kv]
                        lst = per_group.get(g)
                        if lst is None:
                            per_group[g] = [ev]
                        else:
                            lst.append(ev)
            # history() returns whole revisions only, and every revision >= the compact revision
            # has records, so the last record's revision is the last one fully read.
            last_read = records[-1][0] if records else to_rev
        sends = []
        for g, evs in per_group.items():
            members = [(w.uid, w.epoch) for w in g.members.values()]
            ids = [w.watch_id for w in g.members.values()]
            # Each part of an oversized list names its own first revision: a part the fan-out
            # drops unsent must not make the watchers replay the parts already delivered.
            for first_rev, resp in messages.pack_watch_response_parts(ids, current, evs, g.fragment):
                sends.append((g.fanout, internal.SyncEvent(members, first_rev, last_read, resp)))
            self._count("events_sent", len(evs) * len(ids))
        self._post_by_fanout(internal.encode_events, sends)
        # Every group has now read through last_read: groups that became identical could merge,
        # but keeping them apart is correct and rare enough not to matter.
        # (A watcher's position in the batch is its group's next_rev; its own next_rev is where
        # it registered.)
        for same in self.batch_groups.values():
            for g in same:
                if g.next_rev <= last_read:
                    g.next_rev = last_read + 1
        self.cursor = last_read + 1
        if self.cursor > current:
            self._finish_batch(current)

    def _finish_batch(self, current: int):
        self._post_by_fanout(internal.encode_synced,
                             ((w.fanout, internal.Handoff(w.uid, w.epoch, max(current, w.group.next_rev - 1)))
                              for w in self.batch.values()))
        self._count("handoffs", len(self.batch))
        self.log.info("sync.batch", watchers=self.batch_size_now, handed_off=len(self.batch),
                      min_revision=self.batch_min_rev, to_revision=current, rewinds=self.batch_rewinds,
                      records_scanned=self.batch_scanned,
                      ms=round((time.perf_counter() - self.batch_started) * 1000, 3))
        self.batch = None
        self.batch_groups = {}
        self.batch_index = None


def main() -> int:
    return Syncer.from_env().run()


if __name__ == "__main__":
    import sys
    sys.exit(main())
