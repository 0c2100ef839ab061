"""The fan-out's I/O-free core: where every watcher is, and what each event means for it.

`FanoutCore` owns the watchers (states in model.py), the key index of synced groups, the heap of
future watchers, the ring of recent revisions, the victims' back-off queue and the fan-out's
position in the publish stream (`last_seen`).  It takes events — a publish, a message from the
syncer, a watch request, a dropped frame, a tick — and answers with instructions it queues:

* `out[session ident]`: typed items for that session (model.WatchOut / ReplyOut / ControlOut /
  ProgressOut), in the order the session must receive them;
* `to_sync` / `to_unsync`: registrations with the syncer, and their withdrawals.

The service (service.py) drains them with `take_output()` / `take_syncer_work()` and does the
I/O; unit tests call the same methods and look at what was queued (tests/unit/test_fanout_core.py).

The invariant every method keeps (design.md section 8): for each watcher a position p such that
every matching event of revisions in [start, p) has been queued to its session, in revision
order, and none at or after p.  That one invariant is why this module is a little over 500
lines: placement, the publish stream, handoffs, victims and progress all move positions, and
splitting them apart would spread it over several files.
"""
from __future__ import annotations

import heapq
from collections import deque

from zwatch import internal, messages, requests, streamhash
from zwatch.internal import STATE_DIGEST, STATE_FULL
from zwatch.valuefilter import Judged, strip_event
from zwatch.actors.auth.state import AuthState
from zwatch.errors import FailedPrecondition, ResourceExhausted, Unavailable, ZwatchError

from ..index import KeyIndex
from .authz import ALL, CREDENTIALS_REVOKED_REASON, PERMISSION_DENIED_REASON, AuthView
from .ring import Ring
from .model import (CATCHING_UP, FUTURE, SYNCED, UNSYNCED, VICTIM, ControlOut, Group, Owner, ProgressOut,
                    ReplyOut, Session, Slot, StateOwner, WatchOut, Watcher)

STATE_MARKS = frozenset({"state", "state_end", "reset"})
COMPACTED_REASON = "mvcc: required revision has been compacted"
EMPTY_RANGE_REASON = "etcdserver: key >= range_end: the range is empty"
MAX_WAITING_CREATES = 100_000
MAX_PLANS = 4096          # cached delivery plans (keys) at most: cleared when full
# Syncer frames held while the fan-out's auth view is behind the snapshot they were made from;
# beyond this many the fan-out drops them and registers its catching-up watchers again.
MAX_HELD_SYNCER_FRAMES = 10_000
# watch_progress for one watch (SPEC.md section 7.9): the error reason of an unknown id, and
# the "state" its reply names for a watch that is not live.
WATCH_NOT_FOUND = "WATCH_NOT_FOUND"
WATCH_PROGRESS_STATES = {UNSYNCED: "catching_up", FUTURE: "future", VICTIM: "slow"}
VERIFY_OPTS = {"verify": True}    # a verified watcher's registration opts (never mutated)


def _hash_parts(members: tuple, evs: list, parts: list, digest_of) -> list:
    """A response's parts for verified members (SPEC.md 7.10): -> per part, the members' vhash
    before it (Owner.hashes: the digest sum of their events before the part's first revision,
    None for a plain member); every verified member's vhash then takes in the events' sum.
    evs are in revision order, so the events before a part are a prefix of evs."""
    before = tuple(w.vhash if w.verify else None for w in members)
    digests = [digest_of(ev) for ev in evs]
    out = [before]
    if len(parts) > 1:
        out, i, acc = [], 0, 0
        for first_rev, _resp in parts:
            while i < len(evs) and evs[i][1][2] < first_rev:
                acc += digests[i]
                i += 1
            out.append(before if not acc else
                       tuple(None if h is None else (h + acc) % streamhash.MOD for h in before))
    total = sum(digests)
    for w in members:
        if w.verify:
            w.vhash = (w.vhash + total) % streamhash.MOD
    return out


def _ev_digest(ev) -> int:
    return streamhash.digest(ev[0], ev[1])


def _state_restart(opts: dict) -> dict:
    """A state read's opts to read it again from the start, after a reset (SPEC.md 7.7): the
    mode (and a digest's base) kept, a resume point (state_rev, state_from, state_done) dropped."""
    out = {k: v for k, v in opts.items() if k not in ("state_rev", "state_from", "state_done")}
    out["state_reset"] = True
    return out


def _progress(ws, revision: int) -> list[bytes]:
    """Progress notifications at revision for watchers ws: one for the plain ones, and one per
    verified watcher with its own hash (ext {"hash"}: its events <= revision, SPEC.md 7.10)."""
    plain = [w.watch_id for w in ws if not w.verify]
    out = [messages.pack_progress(plain, revision)] if plain else []
    out.extend(messages.pack_progress([w.watch_id], revision, {"hash": streamhash.to_bytes(w.vhash)})
               for w in ws if w.verify)
    return out


class _NullLog:
    def __getattr__(self, name):
        return lambda *a, **kw: None


class FanoutCore:
    def __init__(self, *, ring_revisions: int = 20_000, ring_bytes: int = 64 << 20, max_watches: int = 100_000,
                 victim_backoff_s: float = 0.1, log=None, follow_auth: bool = False):
        self.max_watches = max_watches
        self.victim_backoff_s = victim_backoff_s
        self.log = log if log is not None else _NullLog()
        self.watchers: dict[int, Watcher] = {}
        self.index = KeyIndex()
        # Delivery plans of single-event publishes by (key, event type, has prev_kv): who gets
        # the event, grouped into responses (_plan).  Valid while the index and its slots stay
        # as they are: every change to them clears it (_changed).
        self._plans: dict = {}
        # Index items with a value filter (SPEC.md 7.8) by their whole spec: a filtered watcher
        # finds its group here in O(1), however many distinct filters share its (key, end) (a
        # plain spec has at most 16 variants there; filters have no such bound).  Plain items
        # are not in it: a plain watcher pays nothing for the feature.
        self._vitems: dict[tuple, object] = {}
        self.futures: list[tuple[int, int]] = []          # heap of (next_rev, uid), lazily pruned
        self.live_futures = 0                              # watchers in state FUTURE
        self.victims: deque[tuple[float, Watcher]] = deque()
        self.stalled: dict[Session, int] = {}              # session -> its acked bytes when its watchers became victims
        self.progress_watchers: set[Watcher] = set()
        self.ring = Ring(ring_revisions, ring_bytes)        # contiguous recent revisions, ending at last_seen
        self.last_seen: int | None = None                  # last revision processed, contiguously
        self.compact_revision = 0
        self.waiting_creates: list[tuple[Session, int, dict]] = []
        self.progress_mark = 0
        self.next_uid = 1
        self.syncer_instance = None
        self.out: dict[bytes, list] = {}
        self.to_sync: list[list] = []
        self.to_unsync: list[list] = []
        # The auth view (authz.py).  follow_auth False (unit tests of everything else): auth
        # stays disabled and the view is ready at once.
        self.auth = AuthView()
        if not follow_auth:
            self.auth.loaded(AuthState())
        self.user_sessions: dict[str, set[Session]] = {}   # authenticated sessions by user
        # uids of watchers owed a requested progress notification, sent once they are synced
        # again (a set here, not a field of every watcher: it is rare).
        self.owes_progress: set[int] = set()
        self.held_syncer: deque = deque()                  # (op, items, auth_rev), in arrival order
        # Issue #16, initial state and resync (SPEC.md section 7.7), kept here and not in every
        # Watcher so that a plain watch costs what it did: uid -> the registration opts of the
        # state it is reading ({"state": 1|2, "state_since": N, "state_reset": bool}), and
        # uid -> its on_compacted mode ("resync" / "digest"; absent: cancel, as etcd).
        self.state_reads: dict[int, dict] = {}
        self.on_compacted_modes: dict[int, str] = {}
        self.on_reply = None                               # callable(ident, frame): actors/metrics.py
        self.st = dict(publishes=0, revisions=0, events=0, deliveries=0, responses=0, gaps=0, victims=0,
                       handoffs=0, ring_catchups=0, synced_from_syncer=0, auth_denied=0, resyncs=0, state_items=0)

    # ------------------------------------------------------------------ output
    def take_output(self) -> dict[bytes, list]:
        out, self.out = self.out, {}
        return out

    def take_syncer_work(self) -> tuple[list, list]:
        """(withdrawals [[uid, epoch]], registrations [internal.Registration]): send the withdrawals
        first; a watcher's newer epoch wins at the syncer."""
        unsync, sync = self.to_unsync, self.to_sync
        self.to_unsync, self.to_sync = [], []
        return unsync, sync

    def _queue(self, session: Session, item):
        self.out.setdefault(session.ident, []).append(item)

    def reply(self, ident: bytes, frame: bytes):
        self.out.setdefault(ident, []).append(ReplyOut(frame))
        if self.on_reply is not None:      # /metrics: the request it answers is settled
            self.on_reply(ident, frame)

    @property
    def unsynced_count(self) -> int:
        return sum(1 for w in self.watchers.values() if w.state == UNSYNCED)

    # ------------------------------------------------------------------ the publish stream
    def on_publish(self, prev: int, last: int, revs: list, compact_rev: int, auth_rev: int = 0,
                   auth_changes=()):
        """A publish of revisions prev+1..last (revs = [[rev, [[type, kv, prev_kv|None], ...]], ...]),
        with the auth changes committed among them (auth_changes = [[after_revision, change], ...],
        the last one at auth revision auth_rev): each applies after its revision's events and
        before the next revision's, so a watch it forbids gets nothing past that point."""
        self.compact_revision = compact_rev
        if self.last_seen is None:
            self.last_seen = prev
            self.log.info("fanout.joined_stream", revision=prev, waiting_creates=len(self.waiting_creates))
            self._run_waiting_creates()
        if last < self.last_seen or (last == self.last_seen and not auth_changes and revs):
            return
        if prev > self.last_seen:
            self._gap(prev)
        if revs:
            self.st["publishes"] += 1
        revs = [r for r in revs if r[0] > self.last_seen]
        if self.auth.state is not None and auth_rev - len(auth_changes) > self.auth.revision:
            self._auth_behind()            # changes were missed before this publish's
        i = 0
        first_change_rev = auth_rev - len(auth_changes) + 1
        for n, (after_rev, change) in enumerate(auth_changes):
            j = i
            while j < len(revs) and revs[j][0] <= after_rev:
                j += 1
            self._advance(revs[i:j], max(after_rev, self.last_seen))
            i = j
            self._apply_auth_change(first_change_rev + n, change)
        self._advance(revs[i:], last)
        self.auth.missed(auth_rev)
        if self.auth.need_fetch and self.auth.state is not None:
            self._auth_behind()
        self._release_held_syncer()

    def _advance(self, revs: list, upto: int):
        """Deliver contiguous revisions (the next ones after last_seen), then stand at `upto`."""
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
            self._deliver(revs[i:j], upto)
            i = j
        if revs:
            self.ring.extend(revs)
            self.st["events"] += sum(len(r[1]) for r in revs)
            self.st["revisions"] += len(revs)
        if upto > self.last_seen:
            self.last_seen = upto
        self._activate_futures(self.last_seen + 1)

    def _changed(self):
        """The index or a slot changed: cached delivery plans are stale."""
        if self._plans:
            self._plans.clear()

    def _plan(self, key: bytes, t: int, no_prev: bool) -> list:
        """Who a lone event (key, type t) goes to, as _deliver would group them: one entry per
        response, (session ident, fragment, with prev_kv, value filter, watch ids, watchers, the
        slots and lone watchers whose last_event_rev it sets, deliveries).

        A value filter's verdict depends on the event's value, which a plan keyed by (key, type)
        cannot know: its entries are planned with their filter and judged per event, once per
        filter (_deliver_one)."""
        bit = 1 << t
        responses: dict = {}
        for items in self.index.match(key):
            for g in items:
                if g.filter_bits & bit:
                    continue
                long = g.prev_kv and not no_prev
                if g.lone:
                    r = responses.setdefault((g.session.ident, g.fragment, long, g.vfilter), ([], [], [], []))
                    r[0].append(g.watch_id)
                    r[1].append(g)
                    r[2].append(g)
                    if g.verify:
                        r[3].append(g)
                    continue
                for slot in g.slots.values():
                    r = responses.setdefault((slot.session.ident, g.fragment, long, g.vfilter), ([], [], [], []))
                    r[0].extend(w.watch_id for w in slot.watchers.values())
                    r[1].extend(slot.watchers.values())
                    r[2].append(slot)
                    if g.verify:
                        r[3].append(slot)
        # The last element says whether a verified watcher is among the members (SPEC.md 7.10).
        return [(ident, fragment, long, vf, ids, tuple(members), marks, len(ids), bool(verified))
                for (ident, fragment, long, vf), (ids, members, marks, verified) in responses.items()]

    def _deliver_one(self, t: int, kv: list, prev, header_rev: int):
        """A segment of one event (one put per publish: the common case under load): its plan,
        cached by key, so a key watched by 10,000 distinct ranges costs a dict lookup and one
        encoding per session, not a walk over 10,000 index items per event."""
        plans = self._plans
        ck = (kv[0], t, prev is None)
        plan = plans.get(ck)
        if plan is None:
            if len(plans) >= MAX_PLANS:
                plans.clear()
            plan = plans[ck] = self._plan(kv[0], t, prev is None)
        if not plan:
            return
        short = [t, kv]
        long = short if prev is None else [t, kv, prev]
        out = self.out
        deliveries = responses = 0
        judged = None                  # the value filters' verdicts and keys-only forms, once each
        d = d_of = None                # a verified response's digest, of the event it carries (d_of)
        for ident, fragment, want_long, vf, ids, members, marks, n, verified in plan:
            ev = long if want_long else short
            if vf is not None:
                if judged is None:
                    judged = Judged(t, kv)
                if not judged.passes(vf):
                    # Filtered out: the watchers' positions still advance (implicitly, as
                    # synced), and no event mark is set, so progress_notify still ticks.
                    continue
                ev = judged.as_delivered(vf, ev)
            for m in marks:
                m.last_event_rev = header_rev
            deliveries += n
            responses += 1
            items = out.setdefault(ident, [])
            # One event: always one part (a single revision is never cut without fragment, and
            # a list of one event is never cut at all).
            for first_rev, resp in messages.pack_watch_response_parts(ids, header_rev, [ev], fragment):
                hashes = None
                if verified:
                    if d_of is not ev:         # the event as delivered (keys_only: without its value)
                        d, d_of = streamhash.digest(ev[0], ev[1]), ev
                    hashes = tuple(w.vhash if w.verify else None for w in members)
                    for w in members:
                        if w.verify:
                            w.vhash = (w.vhash + d) % streamhash.MOD
                items.append(WatchOut(resp, Owner(members, first_rev, False, hashes)))
        self.st["deliveries"] += deliveries
        self.st["responses"] += responses

    def _deliver(self, seg: list, header_rev: int):
        """Match a run of revisions against the index; queue the responses.

        Encoded once per session and event list, not per watcher: every watcher of a session
        whose spec matched the very same events (one spec shared by many watchers, or distinct
        specs that all matched them) is named in ONE response (watch_ids), which the client
        hands to each of them.  Lists are the same when they hold the same event objects:
        `short`/`long` below are built once per event and shared by every spec it matches."""
        if len(seg) == 1 and len(seg[0][1]) == 1:
            t, kv, prev = seg[0][1][0]
            return self._deliver_one(t, kv, prev, header_rev)
        matched: dict = {}          # index item (Group, or a lone Watcher) -> its events
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
                judged = None      # the value filters' verdicts and keys-only forms, once each
                for groups in groups_lists:
                    for g in groups:
                        if g.filter_bits & bit:
                            continue
                        vf = g.vfilter
                        ev = long if g.prev_kv else short
                        if vf is not None:
                            # Judged once per event and filter, whatever the number of groups
                            # and watchers sharing it (the filters are interned).
                            if judged is None:
                                judged = Judged(t, kv)
                            if not judged.passes(vf):
                                continue
                            ev = judged.as_delivered(vf, ev)
                        lst = matched.get(g)
                        if lst is None:
                            matched[g] = [ev]
                        else:
                            lst.append(ev)
        if not matched:
            return
        # (session ident, fragment, the events' identities) -> [events, watch ids, watchers, owned]:
        # a slot's entry starts with the slot's own id list and a tuple (not to be changed: not
        # owned); the first merge into an entry copies them into lists of its own, later merges
        # append (so merging n lone watchers costs O(n), not O(n^2)).
        responses: dict = {}
        deliveries = 0
        for g, evs in matched.items():
            sig = tuple(map(id, evs)) if len(evs) > 1 else id(evs[0])
            if g.lone:
                g.last_event_rev = header_rev
                deliveries += len(evs)
                key = (g.session.ident, g.fragment, sig)
                r = responses.get(key)
                if r is None:
                    responses[key] = [evs, [g.watch_id], [g], True, g.verify]
                else:
                    if not r[3]:
                        r[1], r[2], r[3] = list(r[1]), list(r[2]), True
                    r[1].append(g.watch_id)
                    r[2].append(g)
                    r[4] = r[4] or g.verify
                continue
            for slot in g.slots.values():
                slot.last_event_rev = header_rev
                ids = slot.ids
                if ids is None:
                    ids = slot.ids = [w.watch_id for w in slot.watchers.values()]
                deliveries += len(evs) * len(ids)
                key = (slot.session.ident, g.fragment, sig)
                r = responses.get(key)
                if r is None:
                    # The owner snapshots who was in the slot: a watcher that joins later must
                    # not be victimized for events from before its start.
                    responses[key] = [evs, ids, tuple(slot.watchers.values()), False, g.verify]
                else:       # another slot of the session with the same events: merged
                    if not r[3]:
                        r[1], r[2], r[3] = list(r[1]), list(r[2]), True
                    r[1].extend(ids)
                    r[2].extend(slot.watchers.values())
                    r[4] = r[4] or g.verify
        self.st["deliveries"] += deliveries
        self.st["responses"] += len(responses)
        out = self.out
        digests: dict = {}       # id(kv) -> its event's digest, once per event however many verified groups
        for (ident, fragment, _sig), (evs, ids, members, _owned, verified) in responses.items():
            items = out.setdefault(ident, [])
            members = tuple(members)
            # Each part of an oversized list names its own first revision (a lost later part
            # must not replay the first).
            parts = messages.pack_watch_response_parts(ids, header_rev, evs, fragment)
            if verified:
                def digest_of(ev, _d=digests):
                    k = id(ev[1])
                    v = _d.get(k)
                    if v is None:
                        v = _d[k] = streamhash.digest(ev[0], ev[1])
                    return v
                hashes = _hash_parts(members, evs, parts, digest_of)
                for (first_rev, resp), h in zip(parts, hashes):
                    items.append(WatchOut(resp, Owner(members, first_rev, False, h)))
                continue
            for first_rev, resp in parts:
                items.append(WatchOut(resp, Owner(members, first_rev)))

    def _indexed_watchers(self):
        """Every watcher in the key index (a snapshot: callers unindex as they go)."""
        out = []
        for g in self.index.all_items():
            if g.lone:
                out.append(g)
            else:
                for slot in g.slots.values():
                    out.extend(slot.watchers.values())
        return out

    def _gap(self, prev: int):
        """We missed (last_seen, prev]: every watcher that wanted those revisions goes to the syncer."""
        self.st["gaps"] += 1
        missed_from = self.last_seen + 1
        moved = 0
        for w in self._indexed_watchers():
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
        self.last_seen = prev

    # ------------------------------------------------------------------ placement
    def _set_state(self, w: Watcher, state):
        """The one place a watcher changes state: keeps the session's counters exact."""
        old = w.state
        if old is state:
            return
        session = w.session
        if old in CATCHING_UP:
            session.unsynced -= 1
        elif old is FUTURE:
            session.futures -= 1
            self.live_futures -= 1
        if state in CATCHING_UP:
            session.unsynced += 1
        elif state is FUTURE:
            session.futures += 1
            self.live_futures += 1
        w.state = state

    @staticmethod
    def _vkey(item) -> tuple:
        """A filtered index item's whole spec (its filter is interned: identity is equality)."""
        return item.key, item.end, item.filter_bits, item.prev_kv, item.fragment, item.vfilter, item.verify

    def _index_add(self, item):
        self.index.add(item.key, item.end, item)
        if item.vfilter is not None:
            self._vitems[self._vkey(item)] = item

    def _index_remove(self, item):
        self.index.remove(item.key, item.end, item)
        if item.vfilter is not None and self._vitems.get(self._vkey(item)) is item:
            del self._vitems[self._vkey(item)]

    def _index(self, w: Watcher):
        self._changed()
        g = None
        if w.vfilter is not None:
            g = self._vitems.get(self._vkey(w))
        else:
            # The plain items of one (key, end) differ only by filters, prev_kv and fragment: at
            # most 16, so they are found in the index's own list instead of a dict of spec tuples.
            for cand in self.index.items(w.key, w.end):
                if (cand.vfilter is None and cand.filter_bits == w.filter_bits and cand.prev_kv == w.prev_kv
                        and cand.fragment == w.fragment and cand.verify == w.verify):
                    g = cand
                    break
        if g is None:                  # alone on its spec: indexed itself
            self._index_add(w)
            w.slot = w
            w.last_event_rev = 0
        else:
            if g.lone:                 # a second watcher of the spec: the lone one becomes a group
                g = self._group_of(g)
            slot = g.slots.get(w.session.ident)
            if slot is None:
                slot = g.slots[w.session.ident] = Slot(g, w.session)
            slot.ids = None
            slot.watchers[w.uid] = w
            w.slot = slot
        # Position: everything before it is queued to the session.  A future watcher activated
        # in the middle of a publish has everything before its start; any other, up to last_seen.
        pos = w.next_rev - 1 if w.state == FUTURE else self.last_seen
        self._set_state(w, SYNCED)
        # A SYNCED watcher's next revision is implicitly last_seen + 1: a value kept here would
        # go stale, and a later victimization would replay from it (duplicates, issue #8.1).
        w.next_rev = 0
        if w.uid in self.owes_progress:
            self.owes_progress.discard(w.uid)
            (resp,) = _progress((w,), pos)
            self._queue(w.session, WatchOut(resp, Owner((w,), pos + 1, True, (w.vhash,) if w.verify else None)))

    def _group_of(self, lone: Watcher) -> Group:
        """Replace a lone watcher in the index by a Group holding it (in a Slot of its session)."""
        g = Group(lone.key, lone.end, lone.filter_bits, lone.prev_kv, lone.fragment, lone.vfilter, lone.verify)
        self._index_remove(lone)
        self._index_add(g)
        slot = g.slots[lone.session.ident] = Slot(g, lone.session)
        slot.watchers[lone.uid] = lone
        slot.last_event_rev = lone.last_event_rev
        lone.slot = slot
        return g

    def _unindex(self, w: Watcher):
        self._changed()
        slot = w.slot
        w.slot = None
        if slot is w:
            self._index_remove(w)
            return
        slot.ids = None  # responses already built keep the list they were packed with
        del slot.watchers[w.uid]    # a dict: unindexing a whole slot of N watchers is O(N), not O(N^2)
        if not slot.watchers:
            self._remove_slot(slot)
        elif len(slot.watchers) == 1 and len(slot.group.slots) == 1:
            self._ungroup(slot)

    def _remove_slot(self, slot: Slot):
        self._changed()
        g = slot.group
        del g.slots[slot.session.ident]
        if not g.slots:
            self._index_remove(g)
        elif len(g.slots) == 1:
            last = next(iter(g.slots.values()))
            if len(last.watchers) == 1:
                self._ungroup(last)

    def _ungroup(self, slot: Slot):
        """A group down to one watcher (one slot of one): that watcher is indexed itself again,
        without Group/Slot (the reverse of _group_of), so churn on a key does not leave a lone
        watcher paying for a group for the rest of its life."""
        g = slot.group
        (w,) = slot.watchers.values()
        self._index_remove(g)
        self._index_add(w)
        w.slot = w
        w.last_event_rev = slot.last_event_rev      # progress_notify's mark carries over

    def place(self, w: Watcher, next_rev: int):
        """Place a watcher that has everything before next_rev: design.md section 8's table."""
        last = self.last_seen
        if next_rev > last + 1:
            self._set_state(w, FUTURE)
            w.next_rev = next_rev
            heapq.heappush(self.futures, (next_rev, w.uid))
        elif next_rev == last + 1:
            self._index(w)
        elif self.ring.covers(next_rev):
            self._ring_catch_up(w, next_rev)
            self._index(w)
        else:
            self._to_syncer(w, next_rev)

    def _ring_catch_up(self, w: Watcher, next_rev: int):
        self.st["ring_catchups"] += 1
        evs = []
        bit_filter = w.filter_bits
        vf = w.vfilter
        # This is a read of history: like the syncer (and etcd), no prev_kv for an event at or
        # below the compact revision, whose previous version is compacted (issue #8.10).
        compact = self.compact_revision
        for _rev, events in self.ring.since(next_rev):
            for t, kv, prev in events:
                if bit_filter & (1 << t) or not w.matches(kv[0]):
                    continue
                ev = [t, kv, prev] if (w.prev_kv and prev is not None and kv[2] > compact) else [t, kv]
                if vf is not None:
                    if not vf.passes(t, kv):
                        continue      # filtered out: the watcher's position passes it all the same
                    if vf.keys_only:
                        ev = strip_event(ev)
                evs.append(ev)
        if evs:
            self.st["deliveries"] += len(evs)
            items = self.out.setdefault(w.session.ident, [])
            parts = messages.pack_watch_response_parts([w.watch_id], self.last_seen, evs, w.fragment)
            hashes = _hash_parts((w,), evs, parts, _ev_digest) if w.verify else [None] * len(parts)
            for i, (first_rev, resp) in enumerate(parts):
                # The first part also covers the revisions before its first event.
                items.append(WatchOut(resp, Owner((w,), next_rev if i == 0 else first_rev, False, hashes[i])))

    def _activate_futures(self, upto: int):
        fut = self.futures
        while fut and fut[0][0] <= upto:
            next_rev, uid = heapq.heappop(fut)
            w = self.watchers.get(uid)
            if w is not None and w.state == FUTURE and w.next_rev == next_rev:
                if self.auth.need_fetch:
                    self._to_syncer(w, next_rev)   # not on a stale auth view: via the syncer
                else:
                    self._index(w)

    def _to_syncer(self, w: Watcher, next_rev: int):
        self._set_state(w, UNSYNCED)
        w.epoch += 1
        w.next_rev = next_rev
        # opts: the watch kinds' options the syncer needs: a value filter's (shared, never
        # mutated), a verified stream's, a state read's; a plain watch's {}.
        opts = self.state_reads.get(w.uid) if self.state_reads else None
        base = w.vfilter.opts if w.vfilter is not None else {}
        if w.verify:
            base = {**base, **VERIFY_OPTS}
        if opts is None:
            self.to_sync.append(internal.Registration(w.uid, w.epoch, w.key, w.end, next_rev, w.filter_bits,
                                                      w.prev_kv, w.watch_id, w.fragment, w.session.ident, base))
            return
        self.to_sync.append(internal.Registration(w.uid, w.epoch, w.key, w.end, next_rev, w.filter_bits,
                                                  w.prev_kv, w.watch_id, w.fragment, w.session.ident,
                                                  {**base, **opts} if base else opts))
        if not opts.get("state_reset") or "state_rev" in opts:
            # Registered again before its state_end for any other reason than a dropped piece
            # (a new syncer): the client may hold any part of the state, so the next read
            # starts over from a reset.
            self.state_reads[w.uid] = _state_restart(opts)

    # ------------------------------------------------------------------ states (section 7.7)
    def _read_state(self, w: Watcher, mode: int, *, reset: bool, since: int, next_rev: int):
        """Send w to the syncer for the state of its range (syncer/state.py): reset marker
        (if reset), chunks at R, state_end, then a handoff at R."""
        opts = {"state": mode, "state_reset": reset}
        if mode == STATE_DIGEST:
            opts["state_since"] = max(0, since)
        self.state_reads[w.uid] = opts
        if w.state == SYNCED and w.slot is not None:
            self._unindex(w)
        self._to_syncer(w, next_rev)

    def _resync(self, w: Watcher, since: int):
        """w's next revision (since + 1) is compacted and it opted into on_compacted resync or
        digest: a reset and the state instead of a cancel (digest: only what changed after
        `since`, the last revision the client has)."""
        self.st["resyncs"] += 1
        mode = STATE_DIGEST if self.on_compacted_modes.get(w.uid) == "digest" else STATE_FULL
        self._read_state(w, mode, reset=True, since=since, next_rev=since + 1)

    # ------------------------------------------------------------------ the syncer
    def _current(self, uid, epoch):
        w = self.watchers.get(uid)
        if w is None or w.epoch != epoch or w.state != UNSYNCED:
            return None
        return w

    def on_syncer(self, op: str, items, auth_rev: int = 0):
        """A frame of the syncer (ev / synced / compacted), made from a snapshot at auth revision
        auth_rev.  Taken at once unless our auth view is behind that snapshot: then it waits, in
        order, until the stream (or a fetch) brings us there, so that a watch the snapshot's
        state forbids is canceled before any of its events past the change is queued."""
        if self.held_syncer or auth_rev > self.auth.revision or self.auth.need_fetch:
            if len(self.held_syncer) >= MAX_HELD_SYNCER_FRAMES:
                # The view is not catching up (no fetch answer): drop them and register every
                # catching-up watcher again (new epochs) at the next pong.
                self.log.warning("fanout.syncer_frames_dropped", held=len(self.held_syncer),
                                 auth_revision=self.auth.revision, frame_auth_revision=auth_rev)
                self.held_syncer.clear()
                self.forget_syncer()
                return
            self.held_syncer.append((op, items, auth_rev))
            return
        self._take_syncer(op, items)

    def _take_syncer(self, op, items):
        if op == "ev":
            self.on_sync_events(items)
        elif op == "synced":
            self.on_synced(items)
        elif op == "compacted":
            self.on_compacted(items)

    def _release_held_syncer(self):
        held = self.held_syncer
        while held and not self.auth.need_fetch and held[0][2] <= self.auth.revision:
            op, items, _ = held.popleft()
            self._take_syncer(op, items)

    def on_sync_events(self, items):
        """items: (members [(uid, epoch)], first_rev, last_rev, encoded response, extra)."""
        for members, first_rev, last_rev, resp, extra in items:
            current = [w for w in (self._current(uid, epoch) for uid, epoch in members) if w is not None]
            if not current:
                continue
            if len(current) != len(members):
                # Some were canceled or re-registered meanwhile: they must not get these events.
                resp = internal.repack_response([w.watch_id for w in current], resp)
            if extra and extra.get("mark") in STATE_MARKS:
                self._state_item(current, resp, extra)
                continue
            for w in current:
                w.next_rev = last_rev + 1
            self.st["synced_from_syncer"] += len(current)
            hashes = None
            if current[0].verify:      # a syncer group is all verified or all plain (its opts)
                # The syncer's digest sum of this response's events (a missing one counts as 0:
                # the client then reports the divergence, which is what it would be).
                h = extra.get("hash")
                add = streamhash.from_bytes(h) if isinstance(h, bytes) and len(h) == 16 else 0
                hashes = tuple(w.vhash for w in current)
                c = extra.get("carry")
                if isinstance(c, bytes) and len(c) == 16:
                    # A fragment going on with a revision begun in an earlier part: dropped, it
                    # makes them resume at that revision, replayed whole: their hash before it.
                    c = streamhash.from_bytes(c)
                    hashes = tuple((h - c) % streamhash.MOD for h in hashes)
                for w in current:
                    w.vhash = (w.vhash + add) % streamhash.MOD
            self._queue(current[0].session, WatchOut(resp, Owner(tuple(current), first_rev, False, hashes)))

    def _state_item(self, current: list, resp: bytes, extra: dict):
        """A reset, a state chunk or state_end (section 7.7): it never moves a watcher's next
        revision (the state's kvs are not revisions in order).  Its owner says how to go on if
        its frame is dropped: a chunk or state_end from where it starts, at the same revision R
        (the client has every piece before it: no reset, and a slow client's state still makes
        progress however often it is cut); a reset from the start.  After state_end the watch is
        no longer reading a state: its handoff at R follows."""
        w = current[0]
        mark = extra["mark"]
        opts = self.state_reads.get(w.uid)
        if opts is None:
            return              # not reading a state (cannot happen for the current epoch)
        resume = _state_restart(opts)
        rev = extra.get("state_rev")
        if mark != "reset" and type(rev) is int:
            resume["state_reset"] = False
            resume["state_rev"] = rev
            if mark == "state_end":
                resume["state_done"] = True
            else:
                resume["state_from"] = extra.get("state_from", b"")
        if mark == "state_end":
            for m in current:
                self.state_reads.pop(m.uid, None)
                # A verified watch's hash covers the events after its state (SPEC.md 7.10):
                # everything queued after state_end is a change of revision > R.
                if m.verify:
                    m.vhash = 0
        self.st["state_items"] += 1
        self._queue(w.session, WatchOut(resp, StateOwner(tuple(current), w.next_rev, False, state_opts=resume)))

    def on_synced(self, items):
        """items: (uid, epoch, R): every event <= R was sent; the fan-out takes over from R + 1."""
        for uid, epoch, rev in items:
            w = self._current(uid, epoch)
            if w is not None:
                self.st["handoffs"] += 1
                self.place(w, rev + 1)

    def on_compacted(self, items):
        """items: (uid, epoch, compact_revision): the watcher needs compacted history."""
        for uid, epoch, compact_rev in items:
            w = self._current(uid, epoch)
            if w is not None:
                if uid in self.on_compacted_modes and uid not in self.state_reads:
                    self._resync(w, w.next_rev - 1)
                else:
                    self._cancel_compacted(w, compact_rev)

    def on_syncer_instance(self, instance) -> int:
        """A pong named the syncer's instance; a new one (restart) knows nothing of our unsynced
        watchers: register them all again (new epochs).  Returns how many, or -1 if unchanged."""
        if instance == self.syncer_instance:
            return -1
        again = [w for w in self.watchers.values() if w.state == UNSYNCED]
        if self.syncer_instance is not None or again:
            for w in again:
                self._to_syncer(w, w.next_rev)   # a new epoch: late messages of the old one are ignored
            self.log.info("fanout.syncer_changed", instance=instance, reregistered=len(again))
        self.syncer_instance = instance
        return len(again)

    def forget_syncer(self):
        """Messages to the syncer may have been lost: register everything again at the next pong."""
        self.syncer_instance = None

    # ------------------------------------------------------------------ victims
    def victimize(self, owner: Owner, now: float):
        """The frame holding owner's response was dropped unsent (a stuck session).

        Invariant: frames of a session are dropped only together with every frame after them,
        and owners are visited in queue order, so the first owner a watcher is met in names the
        first revision it did not get.  That is where it resumes: exactly, never earlier (a
        duplicate) and never later (a gap)."""
        watchers, first_rev = owner.watchers, owner.first_rev
        hashes = owner.hashes
        session = watchers[0].session if watchers else None
        if session is not None:
            # Back off exponentially while the session stays stuck, so that a dead client does
            # not make the syncer replay for it ten times a second.
            session.backoff = min(max(session.backoff * 2, self.victim_backoff_s), 5.0)
        for i, w in enumerate(watchers):
            if hashes is not None and hashes[i] is not None and first_rev <= (
                    w.next_rev if w.state in (UNSYNCED, FUTURE, VICTIM) else first_rev):
                # It resumes at first_rev: its hash goes back to its events before first_rev
                # (the first owner it is met in, or an earlier position: exactly, SPEC.md 7.10).
                w.vhash = hashes[i]
            if owner.owed_progress:
                self.owes_progress.add(w.uid)     # a requested progress notification was dropped
            if type(owner) is StateOwner:
                # A dropped state item, the first of this watcher's dropped frames (owners come
                # in queue order; a victim already is placed): the state goes on from that item
                # at the same revision, or from a reset (_state_item).  Never live events on
                # top of a partial state.
                if w.state != VICTIM:
                    self.state_reads[w.uid] = owner.state_opts
            elif self.state_reads and w.uid in self.state_reads:
                # Events from before a digest resync were dropped: the client's base is older.
                opts = self.state_reads[w.uid]
                if opts.get("state") == STATE_DIGEST and opts["state_since"] >= first_rev:
                    self.state_reads[w.uid] = {**opts, "state_since": first_rev - 1, "state_reset": True}
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
        if session is not None and session.sent_bytes > session.acked_bytes:
            # No credit (what it was sent is not acknowledged): its victims wait for an ack
            # before the syncer replays history for them again (issue #12.6).
            self.stalled[session] = session.acked_bytes

    def retry_victims(self, now: float):
        if not self.victims:
            return
        keep = deque()
        stalled = self.stalled
        for due, w in self.victims:
            if w.state != VICTIM or self.watchers.get(w.uid) is not w:
                continue
            if due <= now and stalled:
                s = w.session
                mark = stalled.get(s)
                if mark is not None:
                    if s.acked_bytes == mark and s.sent_bytes > s.acked_bytes:
                        keep.append((due, w))      # still no ack: replaying now would stall again
                        continue
                    del stalled[s]
            if due <= now:
                self._to_syncer(w, w.next_rev)
            else:
                keep.append((due, w))
        self.victims = keep
        if stalled and not keep:
            stalled.clear()

    # ------------------------------------------------------------------ watch requests
    def watch_create(self, session: Session, req_id: int, body: dict):
        """Raises ZwatchError for a refused create (the caller answers it)."""
        spec = requests.normalize("watch_create", body)
        if len(session.watches) >= self.max_watches:
            raise ResourceExhausted(f"a session holds at most {self.max_watches} watches")
        if self.last_seen is None or not self.auth.ready:
            # Just started: the first publish (at most one writer heartbeat away) tells us the
            # current revision, and the syncer the auth state; until then creates wait here
            # instead of failing (and while a missed auth change is being fetched again).
            if len(self.waiting_creates) >= MAX_WAITING_CREATES:
                raise Unavailable("this fan-out has not joined the writer's stream yet; retry")
            self.waiting_creates.append((session, req_id, body))
            return
        # Checked against the range the watch will actually get (prefix, from-key and "all
        # keys" normalized: etcd's GHSA-xg4h-6gfc-h4m8 was a from-key watch passing a per-key
        # check); prev_kv reads the same keys, so it needs nothing more.
        denied = self.auth.watch_error(session.user, spec.key, spec.end)
        if denied is not None:
            self.st["auth_denied"] += 1
            raise denied
        wid = spec.watch_id
        if wid == 0:
            while session.next_auto_id in session.watches:
                session.next_auto_id += 1
            wid = session.next_auto_id
            session.next_auto_id += 1
        elif wid in session.watches:
            raise FailedPrecondition(f"watch_id {wid} already exists in this session")
        created = messages.control_response(wid, self.last_seen, created=True)
        self.reply(session.ident, messages.encode_ok(req_id, created))
        if spec.empty_range:
            self._queue(session, ControlOut(messages.pack_control(
                wid, self.last_seen, canceled=True, cancel_reason=EMPTY_RANGE_REASON)))
            return
        uid = self.next_uid
        self.next_uid += 1
        w = Watcher.of(uid, session, wid, spec)
        self.watchers[uid] = w
        session.watches[wid] = w
        if w.verify:
            session.verifying += 1
        if spec.progress_notify:
            self.progress_watchers.add(w)
        if spec.on_compacted != "cancel":
            self.on_compacted_modes[uid] = spec.on_compacted
        if spec.initial_state:
            # The range's state at the syncer's revision R, then changes after R (section 7.7).
            self._read_state(w, STATE_FULL, reset=False, since=0, next_rev=self.last_seen + 1)
            return
        start = spec.start_revision
        if start == 0:
            start = self.last_seen + 1
        if start <= self.last_seen and start < self.compact_revision:
            # Cancel with compact_revision, as etcd, without a trip to the syncer (or, opted
            # in, resync: a reset, the state at a revision >= the compact revision, changes).
            if uid in self.on_compacted_modes:
                self._resync(w, start - 1)
                return
            self._cancel_compacted(w, self.compact_revision)
            return
        self.place(w, start)

    def watch_cancel(self, session: Session, req_id: int, watch_id: int):
        # Idempotent, as etcd: cancelling a watch the server already ended (compaction, an
        # earlier cancel) or never had still answers "canceled" (issue #8.15).
        self.reply(session.ident, messages.encode_ok(req_id, messages.control_response(
            watch_id, self.last_seen or 0, canceled=True, cancel_reason="canceled by client")))
        w = session.watches.get(watch_id)
        if w is not None:
            self._drop(w)

    def _cancel(self, w: Watcher, reason: str, compact_revision: int = 0, header_revision: int | None = None):
        if header_revision is None:
            header_revision = self.last_seen or 0
        self._queue(w.session, ControlOut(messages.pack_control(
            w.watch_id, header_revision, canceled=True, cancel_reason=reason, compact_revision=compact_revision)))
        self._drop(w)

    def _cancel_compacted(self, w: Watcher, compact_revision: int):
        # etcd sends a compaction cancel with header revision 0 (the watcher's response carries
        # no revision); so do we, on both paths (creation and catch-up) (issue #8.16).
        self._cancel(w, COMPACTED_REASON, compact_revision, header_revision=0)

    def _drop(self, w: Watcher):
        """Forget a watcher in whatever state it is."""
        session = w.session
        if w.state == SYNCED and w.slot is not None:
            self._unindex(w)
        elif w.state == UNSYNCED:
            self.to_unsync.append([w.uid, w.epoch])
        self._set_state(w, None)
        if self.watchers.pop(w.uid, None) is not None and w.verify:
            session.verifying -= 1
        session.watches.pop(w.watch_id, None)
        self.progress_watchers.discard(w)
        self.owes_progress.discard(w.uid)
        if self.state_reads:
            self.state_reads.pop(w.uid, None)
        if self.on_compacted_modes:
            self.on_compacted_modes.pop(w.uid, None)
        if len(self.futures) > 2 * self.live_futures + 1024:
            self._prune_futures()

    def _prune_futures(self):
        """Drop the heap entries of watchers that left FUTURE (canceled, victims...): a far-future
        watch that is canceled would otherwise stay until the stream reaches it (etcd #11850)."""
        live = [(r, uid) for r, uid in self.futures
                if (w := self.watchers.get(uid)) is not None and w.state == FUTURE and w.next_rev == r]
        heapq.heapify(live)
        self.futures = live

    def drop_session(self, session: Session):
        """The session is gone: forget its watchers, its waiting creates and its queued output."""
        ident = session.ident
        self._changed()
        # Take the session's slots out whole first: removing watchers one by one would rebuild
        # each slot's id list once per watcher (quadratic for a session with many watches).
        for w in session.watches.values():
            slot = w.slot
            if slot is w:
                self._index_remove(w)
            elif slot is not None and slot.group.slots.get(ident) is slot:
                self._remove_slot(slot)
            if w.state == SYNCED:
                w.slot = None
                w.state = None
        for w in list(session.watches.values()):
            self._drop(w)
        if self.waiting_creates:
            self.waiting_creates = [c for c in self.waiting_creates if c[0] is not session]
        self.set_session_user(session, None)
        self.out.pop(ident, None)
        self.stalled.pop(session, None)

    # ------------------------------------------------------------------ auth
    def on_auth_state(self, state):
        """The whole auth state, fetched from the syncer (authz.py).  Fetched again after a
        missed change, it may hide changes the stream would have shown: a logged-in user now
        deleted or with another password hash is revoked here as the stream would have."""
        old = self.auth.state
        if self.auth.loaded(state):
            self.log.info("fanout.auth_loaded", auth_revision=state.revision, enabled=state.enabled,
                          users=len(state.users), roles=len(state.roles))
            if old is not None:
                for user in list(self.user_sessions):
                    before, after = old.users.get(user), state.users.get(user)
                    if after is None or (before is not None and before[0] != after[0]):
                        for session in list(self.user_sessions.get(user, ())):
                            self.set_session_user(session, None)
                            self._recheck_session(session, CREDENTIALS_REVOKED_REASON)
            self._recheck_all()
        self._run_waiting_creates()
        self._release_held_syncer()

    def set_session_user(self, session: Session, user: str | None):
        old = session.user
        if old is not None:
            members = self.user_sessions.get(old)
            if members is not None:
                members.discard(session)
                if not members:
                    del self.user_sessions[old]
        session.user = user
        if user is not None:
            self.user_sessions.setdefault(user, set()).add(session)

    def _run_waiting_creates(self):
        if self.last_seen is None or not self.auth.ready or not self.waiting_creates:
            return
        waiting, self.waiting_creates = self.waiting_creates, []
        for session, req_id, body in waiting:
            try:
                self.watch_create(session, req_id, body)
            except ZwatchError as err:
                self.reply(session.ident, messages.encode_error(req_id, err))

    def _apply_auth_change(self, change_rev: int, change: list):
        touched = self.auth.apply(change_rev, change)
        if touched is None:
            if self.auth.need_fetch:
                self._auth_behind()
            return
        if touched is ALL:
            self._recheck_all()
            return
        users, revoked = touched
        for user in revoked:
            # Deleted, or its password changed: like etcd's invalidated tokens, its sessions
            # are anonymous from here on (their requests UNAUTHENTICATED) until they log in again.
            for session in list(self.user_sessions.get(user, ())):
                self.set_session_user(session, None)
                self._recheck_session(session, CREDENTIALS_REVOKED_REASON)
        for user in users:
            for session in list(self.user_sessions.get(user, ())):
                self._recheck_session(session)

    def _recheck_all(self):
        if not self.auth.enabled:
            return
        sessions = {w.session for w in self.watchers.values()}
        for session in sessions:
            self._recheck_session(session)

    def _recheck_session(self, session: Session, unauthenticated_reason: str | None = None):
        for w in list(session.watches.values()):
            err = self.auth.watch_error(session.user, w.key, w.end)
            if err is not None:
                reason = PERMISSION_DENIED_REASON
                if err.code != "PERMISSION_DENIED":
                    reason = unauthenticated_reason or err.message
                self._deny(w, err.code, reason)

    def _deny(self, w: Watcher, code: str, reason: str):
        """Cancel a watch its user may no longer read, at its position: every event <= the
        header revision was queued before this, none after."""
        self.st["auth_denied"] += 1
        position = self.last_seen if w.state == SYNCED else max(0, w.next_rev - 1)
        self._queue(w.session, ControlOut(messages.pack_control(
            w.watch_id, position, canceled=True, cancel_reason=reason, cancel_code=code)))
        self._drop(w)

    def _auth_behind(self):
        """An auth change was missed (a publish gap): until the state is fetched again nothing
        is delivered on its strength.  The synced watchers go to the syncer (as on a publish
        gap); its frames wait for the fetched state; creates wait."""
        self.auth.need_fetch = True
        moved = 0
        for w in self._indexed_watchers():
            self._unindex(w)
            self._to_syncer(w, self.last_seen + 1)
            moved += 1
        if moved:
            self.log.warning("fanout.auth_behind", auth_revision=self.auth.revision, watchers_moved=moved)

    # ------------------------------------------------------------------ progress
    def request_progress(self, session: Session, req_id: int, watch_id: int | None = None):
        """Answer watch_progress at once (etcd #20242: one slow watch must not starve the others).

        Every watch synced now gets a progress notification at R = last_seen, queued behind its
        events; the reply follows.  When all the session's watches are synced the notification
        names them all as [-1].  A watch still catching up (or waiting for a future start) is
        owed its own notification, sent when it becomes synced, at its position then: never a
        revision it has not delivered.  With a watch_id, for that watch alone (_watch_progress)."""
        if watch_id is not None:
            self._watch_progress(session, req_id, watch_id)
            return
        rev = self.last_seen or 0
        if session.unsynced == 0 and session.futures == 0 and session.verifying == 0:
            resps = [messages.pack_progress([-1], rev)]
        else:
            # Verified watches cannot share a [-1] (each carries its own hash): listed one by one.
            synced = []
            for w in session.watches.values():
                if w.state == SYNCED:
                    synced.append(w)
                else:
                    self.owes_progress.add(w.uid)
            resps = _progress(synced, rev)
        frame = messages.watch_frame(resps) if resps else None
        self._queue(session, ProgressOut(frame, messages.encode_ok(req_id, {"header": {"revision": rev}}), req_id))

    def _watch_progress(self, session: Session, req_id: int, watch_id: int):
        """watch_progress for one watch (issue #16.3, SPEC.md section 7.9): what its siblings
        are doing never matters.  Live: its bookmark [[id], R, [], false] is queued behind its
        events, then the reply, both in one ProgressOut (dropped together with the frames
        before them, then asked again, for this watch).  Not live (catching up, future, victim):
        the reply says where it stands and it is owed its own bookmark, sent by _index when it
        is live again, at its position then: never a revision it has not delivered."""
        rev = self.last_seen or 0
        w = session.watches.get(watch_id)
        if w is None:
            # Never created, canceled by the client, or canceled by the server (that
            # cancellation is queued before this reply: control responses are never overtaken).
            self.reply(session.ident, messages.encode_error(req_id, FailedPrecondition(
                f"watch_id {watch_id} does not exist in this session", reason=WATCH_NOT_FOUND)))
            return
        state = w.state
        if state == SYNCED:
            frame = messages.watch_frame(_progress((w,), rev))     # a verified watch's carries its hash
            body = {"header": {"revision": rev}, "watch_id": watch_id, "live": True, "state": "live",
                    "revision": rev}
        else:
            # next_rev: the first revision not queued yet (catching up), its start (future),
            # the first one it did not get (victim).  Informational: not a bookmark.
            self.owes_progress.add(w.uid)
            frame = None
            body = {"header": {"revision": rev}, "watch_id": watch_id, "live": False,
                    "state": WATCH_PROGRESS_STATES.get(state, "catching_up"), "revision": max(0, w.next_rev - 1)}
        self._queue(session, ProgressOut(frame, messages.encode_ok(req_id, body), req_id, watch_id))

    def progress_tick(self):
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
            items = self.out.setdefault(ident, [])
            # Dropped, it makes its watchers resume at last_seen + 1: a verified one's hash then
            # goes back to its value now (the events queued after it are dropped with it).
            hashes = tuple(w.vhash if w.verify else None for w in ws) if any(w.verify for w in ws) else None
            owner = Owner(tuple(ws), self.last_seen + 1, False, hashes)
            for resp in _progress(ws, self.last_seen):
                items.append(WatchOut(resp, owner))
