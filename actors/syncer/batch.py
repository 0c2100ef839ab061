"""The syncer's batch, without I/O (docs/design.md section 9): what the syncer decides.

Nothing here touches a socket, a clock or LMDB: a ``Batch`` is given its watchers and reads
history through a view it is handed (``current_revision``, ``compact_revision``,
``history(from, to, max_records=, max_bytes=)`` returning ``(main, sub, type, kv, nbytes)``
records in whole revisions, ``prev_kv(key, main, sub)``), and returns what to send: compaction
cancels, per-group events, handoffs.  The service (service.py) owns the socket, the reads and
the outbox; tests/unit/test_syncer_batch.py drives this with an in-memory history.

    PendingQueue  registrations waiting for a batch, lowest next revision first
    StartPolicy   when a batch starts (the quiet window / batch delay), given `now`
    Batch         one scan of history for all its watchers, in bounded chunks
"""
from __future__ import annotations

import heapq
from typing import NamedTuple

from zwatch import messages, streamhash
from zwatch.internal import CompactedCancel, Handoff, SyncEvent, opts_key, unpack_response
from zwatch.valuefilter import Judged, from_opts

from ..index import KeyIndex


class SyncWatcher:
    __slots__ = ("fanout", "uid", "epoch", "key", "end", "next_rev", "filter_bits", "prev_kv", "watch_id",
                 "fragment", "session", "opts", "group")

    def __init__(self, fanout, uid, epoch, key, end, next_rev, filter_bits, prev_kv, watch_id, fragment,
                 session, opts=None):
        self.fanout, self.uid, self.epoch = fanout, uid, epoch
        self.key, self.end, self.next_rev = key, end, next_rev
        self.filter_bits, self.prev_kv, self.watch_id = filter_bits, prev_kv, watch_id
        self.fragment, self.session = fragment, session
        self.opts = opts or {}     # the watch kind's options (internal.Registration.opts)
        self.group = None

    @property
    def batch_key(self) -> tuple[bytes, int]:
        return self.fanout, self.uid


class SyncGroup:
    """Watchers of one batch that want the very same events: same fan-out and session, same
    spec, same next revision.  A chunk is matched and packed once per group, and the response
    lists every watch id of the group (the client hands it to each)."""
    __slots__ = ("gkey", "key", "end", "filter_bits", "prev_kv", "fragment", "next_rev", "fanout", "opts",
                 "vfilter", "members")

    def __init__(self, gkey, w: SyncWatcher):
        self.gkey = gkey
        self.key, self.end, self.filter_bits, self.prev_kv = w.key, w.end, w.filter_bits, w.prev_kv
        self.fragment, self.next_rev, self.fanout = w.fragment, w.next_rev, w.fanout
        self.opts = w.opts
        # keys_only / value predicate (SPEC.md 7.8), shared by every group with the same options
        self.vfilter = from_opts(w.opts)
        self.members: dict[int, SyncWatcher] = {}


class _WatcherTable:
    """Watchers keyed by (fan-out, uid), in `self.watchers`."""
    watchers: dict

    def __len__(self):
        return len(self.watchers)

    def get(self, k):
        return self.watchers.get(k)

    def keys(self):
        return self.watchers.keys()


class PendingQueue(_WatcherTable):
    """Watchers waiting for a batch, keyed by (fan-out, uid), taken lowest next revision first.

    A heap of (next_rev, seq, key, watcher), without sorting every pending watcher at every
    batch (100,000 re-registered watchers make ~200 batches); entries whose watcher left the
    queue are skipped when popped, and the heap is rebuilt when they dominate."""

    def __init__(self):
        self.watchers: dict[tuple[bytes, int], SyncWatcher] = {}
        self.heap: list[tuple[int, int, tuple, SyncWatcher]] = []
        self.seq = 0

    def add(self, k, w: SyncWatcher):
        self.watchers[k] = w
        self.seq += 1
        heapq.heappush(self.heap, (w.next_rev, self.seq, k, w))

    def discard(self, k):
        if self.watchers.pop(k, None) is not None:
            self._prune()

    def take(self, n: int) -> list[SyncWatcher]:
        """Up to n watchers, lowest next revision first; they leave the queue."""
        chosen = []
        heap, pending = self.heap, self.watchers
        while heap and len(chosen) < n:
            _, _, k, w = heapq.heappop(heap)
            if pending.get(k) is w:
                chosen.append(w)
                del pending[k]
        self._prune()
        return chosen

    def _prune(self):
        """Stale heap entries stay bounded, also when watchers come and go without any batch
        being taken (a fan-out registering and canceling in a loop)."""
        pending = self.watchers
        if not pending:
            self.heap.clear()
        elif len(self.heap) > 2 * len(pending) + 1024:   # mostly stale entries (cancels): rebuild
            self.heap = [e for e in self.heap if pending.get(e[2]) is e[3]]
            heapq.heapify(self.heap)


class StartPolicy:
    """When a batch starts: watchers created together should share one history scan, so a
    batch starts once registrations pause for quiet_s, or at the latest batch_delay_s after the
    first one (etcd's syncWatchers runs every 100 ms), or at once when a full batch waits."""

    def __init__(self, batch_size: int, quiet_s: float, batch_delay_s: float):
        self.batch_size, self.quiet_s, self.batch_delay_s = batch_size, quiet_s, batch_delay_s
        self.pending_since = 0.0
        self.last_registration = 0.0

    def registered(self, now: float, first: bool):
        """A registration joined the queue (first: the queue was empty before it)."""
        if first:
            self.pending_since = now
        self.last_registration = now

    def started(self, now: float):
        """A batch started: whoever is left waits one more delay at most."""
        self.pending_since = now

    def due(self, now: float, pending: int) -> bool:
        return pending > 0 and (pending >= self.batch_size or now - self.last_registration >= self.quiet_s
                                or now - self.pending_since >= self.batch_delay_s)


class ChunkResult(NamedTuple):
    """What one step of a batch sends, in this order: cancels, events, then (when the batch is
    done) handoffs.  Each item is (fan-out, message item)."""
    cancels: list
    events: list
    handoffs: list | None      # None: the batch goes on
    records: int               # history records read by this step
    events_sent: int           # events x watchers they were sent for
    by_key: bool = False       # read through the key index, not a scan


# A record read through the key index (a keyrev cursor step, then a random history get) costs
# about this many records of a sequential scan: the key index is taken when its estimate, times
# this, is below the revisions a scan would read (ZWATCH_SYNC_KEY_READ_COST).  Measured on 1M
# revisions with the pages cached: 1.3 (one key) to 2.4 (64 keys) us a record through the key
# index, 0.82 us a record scanned; 4 leaves room for pages that are not cached.
KEY_READ_COST = 4


class Batch(_WatcherTable):
    """Up to max_watchers watchers replayed by ONE scan of history, in bounded chunks.

    The cursor starts at the lowest next revision; each chunk is matched against the batch's
    own KeyIndex of groups, and a group takes only records >= its next revision.  After each
    chunk every group has read through the chunk's last revision; once the cursor passes the
    snapshot's current revision R every watcher is handed off at max(R, next_rev - 1)."""

    def __init__(self, watchers: list[SyncWatcher], *, max_watchers: int, chunk_revisions: int,
                 chunk_bytes: int, key_index_max_keys: int = 0, key_read_cost: float = KEY_READ_COST):
        self.max_watchers = max_watchers
        self.key_index_max_keys = key_index_max_keys
        self.key_read_cost = key_read_cost
        self.key_reads = 0
        self.chunk_revisions = chunk_revisions
        self.chunk_bytes = chunk_bytes
        self.watchers: dict[tuple[bytes, int], SyncWatcher] = {}
        # (fan-out, session, spec) -> the batch's groups for it, which differ by next revision.
        self.groups: dict[tuple, list[SyncGroup]] = {}
        self.index = KeyIndex()
        for w in watchers:
            self._join(w)
        self.cursor = min(w.next_rev for w in watchers)   # next revision the scan reads
        self.joined = len(watchers)     # every watcher that was ever in it (for the log)
        self.min_rev = self.cursor
        self.rewinds = 0
        self.scanned = 0

    def _join(self, w: SyncWatcher):
        self.watchers[w.batch_key] = w
        # A group's next revision advances with the scan: a watcher joins only a group at
        # exactly its own next revision (never one that has read past its start).
        gkey = (w.fanout, w.session, w.key, w.end, w.filter_bits, w.prev_kv, w.fragment, opts_key(w.opts))
        same = self.groups.setdefault(gkey, [])
        g = next((c for c in same if c.next_rev == w.next_rev), None)
        if g is None:
            g = SyncGroup(gkey, w)
            same.append(g)
            self.index.add(g.key, g.end, g)
        g.members[w.uid] = w
        w.group = g

    def try_join(self, w: SyncWatcher) -> bool:
        """A registration arriving while the batch runs joins it instead of costing a scan of
        its own, if there is room and the scan has passed its start by one chunk at most: the
        cursor goes back to it, and the groups already in the batch skip records below their
        next revision, so little is read twice.  Deeper rewinds are not done: a stream of late
        watchers would keep the whole batch from ever finishing."""
        if len(self.watchers) >= self.max_watchers or w.next_rev < self.cursor - self.chunk_revisions:
            return False
        self._join(w)
        self.joined += 1
        if w.next_rev < self.cursor:
            self.rewinds += 1
            self.cursor = w.next_rev
            self.min_rev = min(self.min_rev, w.next_rev)
        return True

    def forget(self, k) -> SyncWatcher | None:
        w = self.watchers.pop(k, None)
        if w is not None:
            g = w.group
            del g.members[w.uid]
            if not g.members:
                same = self.groups[g.gkey]
                same.remove(g)
                if not same:
                    del self.groups[g.gkey]
                self.index.remove(g.key, g.end, g)
        return w

    # ------------------------------------------------------------------ one chunk
    def step(self, view) -> ChunkResult:
        """Read one chunk of history through `view` and say what to send."""
        current, compact = view.current_revision, view.compact_revision
        if not self.watchers:
            # Every watcher left (unsynced, its fan-out gone): nobody to read for.
            return ChunkResult([], [], [], 0, 0)
        cancels = []
        if self.cursor < compact:
            cancels = self.cancel_compacted(compact)
            if not self.watchers:
                return ChunkResult(cancels, [], self.finish(current), 0, 0)
        if self.cursor > current:
            return ChunkResult(cancels, [], self.finish(current), 0, 0)
        specs = self._key_specs(view, current)
        if specs is not None:
            # Only these keys' records, read through the key index, up to the current revision
            # at once (bounded by the chunk's records and bytes; `through` ends on a revision).
            records, through = view.key_history(specs, self.cursor, current, max_records=self.chunk_revisions * 4,
                                                max_bytes=self.chunk_bytes)
            events, events_sent = self.scan(records, view.prev_kv, current, through, through=through)
            self.key_reads += 1
            handoffs = self.finish(current) if self.cursor > current else None
            return ChunkResult(cancels, events, handoffs, len(records), events_sent, True)
        to_rev = min(current, self.cursor + self.chunk_revisions - 1)
        records = view.history(self.cursor, to_rev, max_records=self.chunk_revisions * 4,
                               max_bytes=self.chunk_bytes)
        events, events_sent = self.scan(records, view.prev_kv, current, to_rev)
        handoffs = self.finish(current) if self.cursor > current else None
        return ChunkResult(cancels, events, handoffs, len(records), events_sent)

    def _key_specs(self, view, current: int):
        """The batch's specs when reading them through the key index beats scanning from the
        cursor to `current` (estimated records x key_read_cost < revisions to scan), else None.
        Decided at each step: the history and the batch's members change between steps."""
        limit = self.key_index_max_keys
        if limit <= 0 or not hasattr(view, "key_history"):
            return None
        index = self.index
        if len(index.exact) + len(index.ranges) > limit:
            return None
        specs = [(k, None) for k in index.exact] + list(index.ranges)
        estimate = view.key_records_estimate(specs, limit)
        if estimate is None or estimate * self.key_read_cost >= current - self.cursor + 1:
            return None
        return specs

    def cancel_compacted(self, compact: int) -> list[tuple[bytes, CompactedCancel]]:
        """Every watcher still wanting revisions below the compact revision leaves the batch,
        canceled with compact_revision, before anything else about it advances (etcd #17529);
        the others go on from the compact revision."""
        doomed = [w for w in self.watchers.values() if w.group.next_rev < compact]
        for w in doomed:
            self.forget(w.batch_key)
        self.cursor = compact
        return [(w.fanout, CompactedCancel(w.uid, w.epoch, compact)) for w in doomed]

    def scan(self, records, prev_kv, current: int, to_rev: int,
             through: int | None = None) -> tuple[list[tuple[bytes, SyncEvent]], int]:
        """Match one chunk of records (whole revisions, from the cursor) against the groups;
        -> ([(fan-out, SyncEvent)], events x watchers).  prev_kv(key, main, sub) is called at
        most once per record, and only if a group wants previous values.  through: the records
        are every record the groups can match up to this revision (a key-index read), which
        the batch has then read through, records or not."""
        self.scanned += len(records)
        per_group: dict[SyncGroup, list] = {}
        match = self.index.match
        for main, sub, t, kv, _nbytes in records:
            hits = match(kv[0])
            if not hits:
                continue
            bit = 1 << t
            prev = None
            prev_done = False
            judged = None        # the value filters' verdicts and keys-only forms, once each
            for gs in hits:
                for g in gs:
                    if g.next_rev > main or g.filter_bits & bit:
                        continue
                    vf = g.vfilter
                    if vf is not None:
                        if judged is None:
                            judged = Judged(t, kv)
                        if not judged.passes(vf):
                            # Filtered out: the group still reads through this revision (its
                            # next_rev advances below), so its handoff and progress cover it.
                            continue
                    if g.prev_kv:
                        if not prev_done:
                            prev = prev_kv(kv[0], main, sub)
                            prev_done = True
                        ev = [t, kv, prev] if prev is not None else [t, kv]
                    else:
                        ev = [t, kv]
                    if vf is not None:
                        ev = judged.as_delivered(vf, ev)
                    lst = per_group.get(g)
                    if lst is None:
                        per_group[g] = [ev]
                    else:
                        lst.append(ev)
        # history() returns whole revisions only, and every revision >= the compact revision
        # has records, so the last record's revision is the last one fully read.
        last_read = through if through is not None else records[-1][0] if records else to_rev
        sends = []
        events_sent = 0
        for g, evs in per_group.items():
            members = [(w.uid, w.epoch) for w in g.members.values()]
            ids = [w.watch_id for w in g.members.values()]
            # Each part of an oversized list names its own first revision: a part the fan-out
            # drops unsent must not make the watchers replay the parts already delivered.
            parts = messages.pack_watch_response_parts(ids, current, evs, g.fragment)
            verify = g.opts.get("verify")
            last_rev_sum = (None, 0)     # (revision, digest sum of its events in the parts so far)
            for first_rev, resp in parts:
                extra = {}
                if verify:
                    # A verified group (SPEC.md 7.10): the digest sum of exactly this part's
                    # events, which the fan-out adds to each member's hash.  An oversized list
                    # cut into parts (rare) is hashed part by part from the parts themselves.
                    part_evs = evs if len(parts) == 1 else unpack_response(resp)[2]
                    extra = {"hash": streamhash.to_bytes(streamhash.sum_events(part_evs))}
                    # A fragment going on with a revision begun in earlier parts: "carry", the
                    # sum of that revision's events in them.  If this part is dropped unsent the
                    # watchers resume at its first revision, replayed whole, so their hash goes
                    # back to before that revision (the fan-out subtracts carry).
                    if last_rev_sum[0] == first_rev and last_rev_sum[1]:
                        extra["carry"] = streamhash.to_bytes(last_rev_sum[1])
                    for e in (part_evs if len(parts) > 1 else ()):
                        r = e[1][2]
                        d = streamhash.digest(e[0], e[1])
                        last_rev_sum = (r, last_rev_sum[1] + d) if r == last_rev_sum[0] else (r, d)
                sends.append((g.fanout, SyncEvent(members, first_rev, last_read, resp, extra)))
            events_sent += len(evs) * len(ids)
        # Every group has now read through last_read: groups that became identical could merge,
        # but keeping them apart is correct and rare enough not to matter.  (A watcher's
        # position in the batch is its group's next_rev; its own next_rev is where it registered.)
        for same in self.groups.values():
            for g in same:
                if g.next_rev <= last_read:
                    g.next_rev = last_read + 1
        self.cursor = last_read + 1
        return sends, events_sent

    def finish(self, current: int) -> list[tuple[bytes, Handoff]]:
        """Every watcher has been sent every event <= current: hand each off to its fan-out."""
        return [(w.fanout, Handoff(w.uid, w.epoch, max(current, w.group.next_rev - 1)))
                for w in self.watchers.values()]
