"""Watch delivery: the fan-out's watch responses -> WatchResponse objects on the watches' queues.

Runs in the client's I/O thread.  Joins fragments, gives watches that share a queue one
response for all of them, and drops duplicate events (issue #8) before the application sees them.
"""
from __future__ import annotations

import logging
import time

from .. import messages, streamhash
from ..errors import StreamDiverged, ZwatchError
from .credit import WatchQueue
from .types import Event, Header, KeyValue, WatchResponse

log = logging.getLogger("zwatch.client")
STATE_MARKS = ("reset", "state", "state_end")     # ext "mark" of an initial state / resync (SPEC.md 7.7)


def _put(q, response, ticket):
    if ticket is not None and isinstance(q, WatchQueue):
        q.put(response, ticket)
    else:
        q.put(response)      # an application's own queue: consumed on arrival (credit.py)


def _drop_replayed(w, fresh: list):
    """A revision cut in fragments whose later piece the server dropped unsent comes again
    whole (the watch resumes from that piece's first revision, and the server replays whole
    revisions): the pieces of it the watch holds are dropped, so that the application gets
    each event once and a verified sum takes each in once.  A continuation piece never
    repeats an event the watch holds (one event per key and revision)."""
    if not fresh:
        return
    first = fresh[0].kv
    frags = w._fragments
    for i, e in enumerate(frags):
        if e.kv.mod_revision == first.mod_revision and e.kv.key == first.key:
            break
    else:
        return
    if w.verify:
        gone = sum(streamhash.digest(messages.EVENT_TYPE_NAMES.index(e.type),
                                     [e.kv.key, e.kv.create_revision, e.kv.mod_revision, e.kv.version,
                                      e.kv.value, e.kv.lease]) for e in frags[i:])
        w._vsum = (w._vsum - gone) % streamhash.MOD
    w._fragments = frags[:i]


class WatchRouter:
    """Turns the fan-out's watch responses into WatchResponse objects on the watches' queues.

    It also drops, as a second line of defence (issue #8), any event at or below the last
    revision a watch already delivered (``Watch.last_revision``): the fan-out must never send
    one (the fix is on the server), but should it, the application still sees each revision
    once.  Drops are counted per watch and per client (``duplicates_dropped``: one per event
    per watch it was meant for) and logged on the "zwatch.client" logger at WARNING, at most
    one line per ``LOG_EVERY`` seconds with the count since the previous line.

    One revision's events always arrive in one response (or in consecutive fragments joined
    here), so comparing each event with the watch's last revision *before* the response is
    exact: a revision is either wholly new or wholly a duplicate.
    """

    LOG_EVERY = 1.0

    def __init__(self, watches: dict, lock, name: str = "", clock=time.monotonic):
        self.watches = watches          # the client's watch table (shared, mutated in place)
        self.lock = lock                # guards the table against the application threads
        self.name = name
        self.clock = clock
        self.duplicates_dropped = 0
        self.diverged = 0               # verified watches ended by a hash mismatch (SPEC.md 7.10)
        self.diverged_ids: list[int] = []   # ended here, to cancel on the server (take_diverged)
        self._unlogged = 0              # dropped since the last log line
        self._logged_at: float | None = None

    def on_watch_responses(self, responses, ticket=None):
        """ticket (credit.py): the frame's flow-control credit; each response put on a
        WatchQueue holds it until the application takes it out."""
        watches = self.watches
        for r in responses:
            if isinstance(r, dict):  # control: canceled (created comes as the create's reply)
                self._on_control(r)
                continue
            ids, rev, evs, fragment = r[:4]
            ext = r[4] if len(r) > 4 else None
            # A verified watch's bookmark: its server-side stream hash (SPEC.md 7.10).
            server_hash = ext.get("hash") if isinstance(ext, dict) and not evs else None
            digests = None      # the events' digests, computed once if a verified watch needs them
            events = [Event(messages.EVENT_TYPE_NAMES[e[0]], KeyValue.from_list(e[1]),
                            KeyValue.from_list(e[2]) if len(e) > 2 and e[2] else None) for e in evs]
            if ext is not None and ext.get("mark") in STATE_MARKS:
                self._on_state(ids, rev, events, ext, ticket)
                continue
            if ids == [-1]:
                with self.lock:
                    targets = [w for w in watches.values() if w._live]
            else:
                targets = [watches.get(i) for i in ids]
            # Shared-queue watches get one response per (queue, last revision): watches of one
            # queue that stand at different revisions would not drop the same events.
            shared: dict[tuple, tuple] = {}
            for w in targets:
                if w is None or w.canceled:
                    continue
                if w.verify:
                    # Outside the shared-queue grouping: its hash is its own.
                    if evs and digests is None:
                        digests = [streamhash.digest(e[0], e[1]) for e in evs]
                    self._verified(w, events, digests, rev, server_hash, fragment, ticket)
                    continue
                if w.shared and not fragment and not w._fragments:
                    group = shared.get((id(w.queue), w.last_revision))
                    if group is None:
                        shared[(id(w.queue), w.last_revision)] = (w.queue, w.last_revision, [w])
                    else:
                        group[2].append(w)
                    continue
                fresh = self._fresh(events, w.last_revision, (w,))
                if w._fragments:
                    _drop_replayed(w, fresh)
                if fragment:
                    w._fragments.extend(fresh)
                    continue
                if w._fragments:
                    events_w = w._fragments + fresh
                    w._fragments = []
                else:
                    events_w = fresh
                if events and not events_w:
                    continue  # nothing but duplicates: not a progress notification either
                top = events_w[-1].kv.mod_revision if events_w else rev
                if top > w.last_revision:
                    w.last_revision = top
                _put(w.queue, WatchResponse(w.watch_id, Header(rev), events_w,
                                            watch_ids=[w.watch_id] if w.shared else None), ticket)
            for q, last_revision, group in shared.values():
                fresh = self._fresh(events, last_revision, group)
                if events and not fresh:
                    continue
                top = fresh[-1].kv.mod_revision if fresh else rev
                for w in group:
                    if top > w.last_revision:
                        w.last_revision = top
                _put(q, WatchResponse(group[0].watch_id, Header(rev), fresh, watch_ids=[w.watch_id for w in group]), ticket)

    def _on_state(self, ids, rev: int, events: list, ext: dict, ticket):
        """A reset, a piece of a state or its end (SPEC.md section 7.7).  Never filtered as
        duplicates: a state's kvs keep their own mod_revisions, in key order, not increasing.
        state_end is the bookmark: the watch stands at the state's revision from there, and a
        resume after a failover continues from it as any watch's."""
        mark = ext["mark"]
        for i in ids:
            w = self.watches.get(i)
            if w is None or w.canceled:
                continue
            # A revision cut in fragments before the state (its later piece dropped, then its
            # revision compacted: a resync) never completes: it must not join the changes after it.
            w._fragments = []
            if mark == "state_end":
                w._in_state = False
                w.last_revision = rev
                w.body.pop("initial_state", None)     # resumed from here on as a plain watch
                if w.verify:        # its stream hash covers the changes after the state (SPEC.md 7.10)
                    w._vsum, w._vstart = 0, rev + 1
            else:
                w._in_state = True
            _put(w.queue, WatchResponse(w.watch_id, Header(rev), events,
                                        watch_ids=[w.watch_id] if w.shared else None, ext=ext), ticket)

    def _verified(self, w, events: list, digests, rev: int, server_hash, fragment: bool, ticket) -> bool:
        """Deliver one response to a verified watch: its running sum takes in the events it hands
        to the application (duplicates dropped first), and a bookmark's hash is compared with
        it; on a mismatch the watch ends with StreamDiverged.  -> False if it ended."""
        fresh = self._fresh(events, w.last_revision, (w,))
        if w._fragments:
            _drop_replayed(w, fresh)
        if fresh:
            w._vsum = (w._vsum + sum(digests[len(events) - len(fresh):])) % streamhash.MOD
        if fragment:
            w._fragments.extend(fresh)
            return True
        if w._fragments:
            fresh, w._fragments = w._fragments + fresh, []
        if events and not fresh:
            return True
        if server_hash is not None:
            try:
                expected = streamhash.from_bytes(server_hash)
            except ValueError:
                expected = None
            if expected != w._vsum:
                self._diverged(w, rev, server_hash, w._vsum)
                return False
        top = fresh[-1].kv.mod_revision if fresh else rev
        if top > w.last_revision:
            w.last_revision = top
        _put(w.queue, WatchResponse(w.watch_id, Header(rev), fresh, watch_ids=[w.watch_id] if w.shared else None,
                                    stream_hash=server_hash if server_hash is not None and not fresh else None,
                                    stream_start=w._vstart if server_hash is not None and not fresh else 0),
             ticket)
        return True

    def _diverged(self, w, rev: int, server_hash, client_sum: int):
        """End a verified watch whose stream is not what the server says it sent."""
        theirs = server_hash.hex() if isinstance(server_hash, (bytes, bytearray)) else repr(server_hash)[:40]
        ours = streamhash.to_bytes(client_sum).hex()
        msg = (f"watch {w.watch_id}: stream diverged at revision {rev}: the server's hash of the events "
               f"since revision {w._vstart} is {theirs}, the events this client delivered hash to {ours} "
               "(a gap, a duplicate or a changed event)")
        log.error("watch.stream_diverged client=%s watch_id=%s revision=%d server_hash=%s client_hash=%s",
                  self.name, w.watch_id, rev, theirs, ours)
        self.diverged += 1
        err = StreamDiverged(msg, watch_id=w.watch_id, revision=rev, server_hash=theirs, client_hash=ours)
        w._end(Header(rev), msg, err.code, err)
        with self.lock:
            self.watches.pop(w.watch_id, None)
        self.diverged_ids.append(w.watch_id)

    def take_diverged(self) -> list[int]:
        ids, self.diverged_ids = self.diverged_ids, []
        return ids

    def _fresh(self, events: list, last_revision: int, for_watches) -> list:
        """The events above last_revision (the list itself when none is a duplicate)."""
        # Events of a response are in revision order: the first one decides the common case.
        if not events or events[0].kv.mod_revision > last_revision:
            return events
        fresh = [e for e in events if e.kv.mod_revision > last_revision]
        dropped = len(events) - len(fresh)
        for w in for_watches:
            w.duplicates_dropped += dropped
        self.duplicates_dropped += dropped * len(for_watches)
        self._unlogged += dropped * len(for_watches)
        self.flush_log()
        return fresh

    def flush_log(self, now: float | None = None):
        """Log the drops not logged yet, unless a line went out less than LOG_EVERY ago."""
        if not self._unlogged:
            return
        now = self.clock() if now is None else now
        if self._logged_at is not None and now - self._logged_at < self.LOG_EVERY:
            return
        log.warning("watch.duplicates_dropped client=%s count=%d total=%d", self.name, self._unlogged,
                    self.duplicates_dropped)
        self._logged_at = now
        self._unlogged = 0

    def _on_control(self, r: dict):
        w = self.watches.get(r.get("watch_id"))
        if w is None or not r.get("canceled"):
            return
        code = r.get("cancel_code") or ""
        w._end(Header(r.get("header", {}).get("revision", 0)), r.get("cancel_reason", ""), code,
               ZwatchError.from_wire({"code": code, "message": r.get("cancel_reason", "")}) if code else None,
               r.get("compact_revision", 0))
        with self.lock:
            self.watches.pop(w.watch_id, None)
