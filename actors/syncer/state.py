"""A watch's state read, without I/O (SPEC.md section 7.7, docs/design.md "Issue #16: initial
state and resync"): the range's kvs at one revision R, in bounded chunks, then "state_end" and a
handoff at R.

A registration whose opts name a state (``state``: 1 the whole state, 2 a digest against
``state_since``; ``state_reset``: start with a reset marker) is not replayed by a Batch: the
service keeps a StateRead for it and calls ``step(view)`` once per loop turn, round robin with
the others and interleaved with the batch's chunks, so a huge range never holds up the rest.

Invariants:
* every chunk is read at the same revision R (each step is its own read txn: LMDB keeps R
  readable until it is compacted); if R is compacted meanwhile the read starts over at the
  snapshot's current revision, with a reset marker first (the client drops the partial state);
* a chunk holds at most max_keys kvs and about max_bytes of keys and values (one larger kv
  alone), whole keys only, in key order, each PUT event with its own mod_revision;
* "state_end" and the handoff at R come after the last chunk: the fan-out takes the watch
  over from R + 1, so every change after R follows, none at or before it;
* a read registered with ``state_rev`` R (and ``state_from`` K, or ``state_done``) goes on with
  a state whose earlier pieces the client has: the same R, from key K (or only state_end), no
  reset, unless R was compacted meanwhile (then a reset and a newer R, as above).
"""
from __future__ import annotations

from zwatch import messages
from zwatch.errors import Compacted
from zwatch.internal import STATE_DIGEST, STATE_FULL, Handoff, SyncEvent
from zwatch.requests import KEY_INFINITY
from zwatch.valuefilter import from_opts


MARK_STATE = "state"
MARK_STATE_END = "state_end"
MARK_RESET = "reset"


def wants_state(opts: dict) -> bool:
    return bool(opts) and opts.get("state") in (STATE_FULL, STATE_DIGEST)


def store_end(key: bytes, end):
    """The watch index's end (None: one key; KEY_INFINITY: every key from key) -> a store range end."""
    if end is None:
        return key + b"\x00"
    return None if end == KEY_INFINITY else end


class StateRead:
    __slots__ = ("w", "mode", "since", "reset", "rev", "cursor", "end", "restarts", "chunks", "kvs", "vfilter",
                 "done")

    def __init__(self, w):
        self.w = w
        self.mode = w.opts.get("state")
        since = w.opts.get("state_since", 0)
        self.since = since if type(since) is int and since > 0 else 0
        self.reset = bool(w.opts.get("state_reset"))
        self.rev = None                    # R, chosen at the first step
        self.cursor = w.key
        self.done = False
        # Going on with a state the client already has the first pieces of (a dropped piece,
        # core._state_item): the same R, from the first key it lacks (or only state_end).
        rev = w.opts.get("state_rev")
        if type(rev) is int and rev > 0 and not self.reset:
            self.rev = rev
            self.done = bool(w.opts.get("state_done"))
            start = w.opts.get("state_from")
            if type(start) is bytes and start >= w.key:
                self.cursor = start
        self.end = store_end(w.key, w.end)
        self.restarts = 0
        self.chunks = 0
        self.kvs = 0
        # keys_only / a value predicate (SPEC.md 7.8) apply to a state as to events: the state
        # holds the kvs alive at R that pass the predicate, without values if keys_only.
        self.vfilter = from_opts(w.opts)

    def _item(self, rev: int, events: list, mark: str, extra_ext: dict | None = None, start: bytes = b"") -> tuple:
        w = self.w
        ext = {"mark": mark}
        if extra_ext:
            ext.update(extra_ext)
        resp = messages.pack([[w.watch_id], rev, events, False, ext])
        # first_rev/last_rev: the watcher's position, unchanged by a state item (the fan-out
        # never advances a watcher's next revision from one).  extra: where the item starts
        # (R, and a chunk's first key read), for the fan-out to go on from it if it is dropped.
        extra = {"mark": mark}
        if mark != MARK_RESET:
            extra["state_rev"] = rev
            if mark == MARK_STATE:
                extra["state_from"] = start
        return w.fanout, SyncEvent([(w.uid, w.epoch)], w.next_rev, w.next_rev - 1, resp, extra)

    def step(self, view, max_keys: int, max_bytes: int) -> tuple[list, list | None, int]:
        """One chunk: -> (ev items [(fan-out, SyncEvent)], handoffs (None: not done), kvs read)."""
        items = []
        if self.rev is None or self.rev < view.compact_revision:
            if self.rev is not None:       # R was compacted under us: start over, newer R
                self.restarts += 1
                self.reset = True
                self.cursor = self.w.key
                self.done = False
            self.rev = view.current_revision
            if self.reset:
                items.append(self._item(self.rev, [], MARK_RESET))
                self.reset = False
        if self.done:                      # only state_end was lost: it again, and the handoff
            w = self.w
            return items + [self._item(self.rev, [], MARK_STATE_END)], [(w.fanout, Handoff(w.uid, w.epoch, self.rev))], 0
        start = self.cursor
        try:
            kvs, nxt = view.state_chunk(self.cursor, self.end, self.rev, max_keys, max_bytes)
        except Compacted:
            self.rev = -1                  # below any compact revision: the next step restarts
            return items, None, 0
        read = len(kvs)
        vf = self.vfilter
        if vf is not None and kvs:
            if vf.has_predicate:
                kvs = [kv for kv in kvs if vf.passes(0, kv)]
            if vf.keys_only:
                kvs = [[kv[0], kv[1], kv[2], kv[3], b"", kv[5]] for kv in kvs]
        if kvs:
            self.chunks += 1
            self.kvs += len(kvs)
            if self.mode == STATE_DIGEST:
                since = self.since
                events = [[0, kv] for kv in kvs if kv[2] > since]
                same = [kv[0] for kv in kvs if kv[2] <= since]
                items.append(self._item(self.rev, events, MARK_STATE, {"same": same} if same else None, start))
            else:
                items.append(self._item(self.rev, [[0, kv] for kv in kvs], MARK_STATE, start=start))
        if nxt is not None:
            self.cursor = nxt
            return items, None, read
        items.append(self._item(self.rev, [], MARK_STATE_END))
        w = self.w
        return items, [(w.fanout, Handoff(w.uid, w.epoch, self.rev))], read
