"""The fan-out's data: watchers and their states, the index's groups and slots, sessions, and the
typed items the core queues for a session.

Watcher states (one small state machine per watcher, driven by core.FanoutCore)::

    create --start 0 / next revision--> SYNCED      (in the key index; gets every live match)
    create --start in the future------> FUTURE      (heap by next revision; enters SYNCED when
                                                     the live stream reaches it)
    create --start in the past--------> ring covers it? catch up from the ring, SYNCED
                                        : UNSYNCED (registered with the syncer)
    UNSYNCED --syncer "synced" at R---> the handoff table (design.md section 8): SYNCED,
                                        FUTURE, or UNSYNCED again
    UNSYNCED --syncer "compacted"-----> gone (canceled response with compact_revision)
    SYNCED/UNSYNCED/FUTURE --a frame of theirs dropped (stuck session)--> VICTIM
    VICTIM --back-off---------------> UNSYNCED from its first lost revision
    SYNCED/FUTURE --publish gap-------> UNSYNCED from the first missed revision

Invariant: a SYNCED watcher's position is implicitly the fan-out's ``last_seen + 1`` and its own
``next_rev`` is 0; for the other states ``next_rev`` is the first revision it has not been given.
"""
from __future__ import annotations

from collections import deque

from typing import NamedTuple

from zwatch import messages

SYNCED, FUTURE, UNSYNCED, VICTIM = "synced", "future", "unsynced", "victim"
CATCHING_UP = (UNSYNCED, VICTIM)


class Watcher:
    """A watch.  A SYNCED watcher alone on its spec is in the key index itself (``lone``; its
    ``slot`` is itself and ``last_event_rev`` its own): no Group, Slot, dicts or id list, so a
    watcher on a key nobody else watches costs ~0.4 KiB instead of ~0.9.  A second watcher of
    the same spec turns it into a Group with Slots (core.FanoutCore._index), and a group down
    to one watcher gives it back its own place (core.FanoutCore._ungroup)."""
    __slots__ = ("uid", "session", "watch_id", "key", "end", "filter_bits", "prev_kv",
                 "fragment", "state", "next_rev", "epoch", "slot", "last_event_rev")
    lone = True        # as an index item: one watcher (a Group says False)
    # keys_only / value predicate (zwatch.valuefilter, SPEC.md 7.8) and verified streams (SPEC.md
    # 7.10): class attributes here, so that a plain watcher pays nothing for them; the
    # subclasses below have their own slots.
    vfilter = None
    verify = False
    vhash = 0

    @staticmethod
    def of(uid, session, watch_id, spec: messages.WatchSpec) -> "Watcher":
        """A Watcher, or the subclass with the slots its spec needs (value filter, verified)."""
        if spec.verify:
            cls = VerifiedWatcher if spec.vfilter is None else FilteredVerifiedWatcher
        else:
            cls = Watcher if spec.vfilter is None else FilteredWatcher
        return cls(uid, session, watch_id, spec)

    def __init__(self, uid, session, watch_id, spec: messages.WatchSpec):
        self.uid = uid
        self.session = session
        self.watch_id = watch_id
        self.key = spec.key
        self.end = spec.end
        self.filter_bits = spec.filter_bits
        self.prev_kv = spec.prev_kv
        self.fragment = spec.fragment
        self.state = None
        self.next_rev = 0
        # Every registration with the syncer gets a new epoch; syncer messages for another
        # epoch are stale and ignored (design.md section 7).
        self.epoch = 0
        self.slot = None
        self.last_event_rev = 0     # while lone: the header revision of its last event response

    def matches(self, key: bytes) -> bool:
        return key == self.key if self.end is None else self.key <= key < self.end


class FilteredWatcher(Watcher):
    """A watch with keys_only or a value predicate: its shared ValueFilter (never None)."""
    __slots__ = ("vfilter",)

    def __init__(self, uid, session, watch_id, spec: messages.WatchSpec):
        super().__init__(uid, session, watch_id, spec)
        self.vfilter = spec.vfilter


class VerifiedWatcher(Watcher):
    """A verified stream (SPEC.md 7.10): vhash is the digest sum (streamhash.py) of every event
    queued to its session since its start revision (or its last state_end), i.e. of the events
    before its position (the invariant of core.py); an Owner records it before each response
    so that a dropped frame rolls it back exactly."""
    __slots__ = ("vhash",)
    verify = True

    def __init__(self, uid, session, watch_id, spec: messages.WatchSpec):
        super().__init__(uid, session, watch_id, spec)
        self.vhash = 0


class FilteredVerifiedWatcher(VerifiedWatcher):
    """A verified stream with a value filter (slots cannot come from two bases)."""
    __slots__ = ("vfilter",)

    def __init__(self, uid, session, watch_id, spec: messages.WatchSpec):
        super().__init__(uid, session, watch_id, spec)
        self.vfilter = spec.vfilter


class Group:
    """Synced watchers with one spec, two or more of them (one alone is indexed itself).
    vfilter: the spec's ValueFilter (None: plain); verify: a verified stream's; watchers that
    differ in either never share a group."""
    __slots__ = ("key", "end", "filter_bits", "prev_kv", "fragment", "vfilter", "verify", "slots")
    lone = False

    def __init__(self, key, end, filter_bits, prev_kv, fragment, vfilter=None, verify=False):
        self.key, self.end, self.filter_bits, self.prev_kv = key, end, filter_bits, prev_kv
        self.fragment = fragment
        self.vfilter = vfilter
        self.verify = verify
        self.slots: dict[bytes, Slot] = {}


class Slot:
    """One session's synced watchers of one group."""
    __slots__ = ("group", "session", "ids", "watchers", "last_event_rev")

    def __init__(self, group, session):
        self.group, self.session = group, session
        self.ids: list[int] | None = None   # built when first needed, dropped on change
        self.watchers: dict[int, Watcher] = {}   # uid -> watcher, in the order they joined
        self.last_event_rev = 0


class Session:
    """A client session: its watches (core.FanoutCore) and its output state (sessions.py)."""
    __slots__ = ("ident", "name", "watches", "last_heard", "unsynced", "futures", "next_auto_id",
                 "sent_bytes", "acked_bytes", "watch_sent_end", "window", "backoff", "held", "held_bytes", "held_since",
                 "forwarded", "forwarded_cost", "user", "principal", "fd", "verifying")

    def __init__(self, ident: bytes, name: str, now: float = 0.0):
        self.ident = ident
        self.name = name
        self.watches: dict[int, Watcher] = {}
        self.last_heard = now
        self.unsynced = 0     # watchers UNSYNCED or VICTIM (catching up on history)
        self.futures = 0      # watchers FUTURE (waiting for their start revision)
        self.next_auto_id = 1
        # Credit-based flow control: the client acks the bytes it received; watch frames are
        # only sent while sent - acked stays within the session window.
        self.sent_bytes = 0
        self.acked_bytes = 0
        # sent_bytes right after the last watch frame went: once acked_bytes reaches it, every
        # watch frame sent was consumed, and one more may go whatever its size (replies sent
        # after it, such as the pong of the ping that carried the ack, do not count).
        self.watch_sent_end = 0
        self.window = 0       # the client's smaller window (its hello's window_bytes); 0: the fan-out's
        self.backoff = 0.0    # victim back-off, doubled while the session stays stuck
        # Frames waiting for credit, in order; bounded by the window and a stall deadline.
        self.held: list = []
        self.held_bytes = 0
        self.held_since = 0.0
        # Requests forwarded to the writer/syncer and not answered yet: (sent at, cost), oldest
        # first.  Replies are not decoded, so each one retires the oldest entry: the total is
        # exact whenever everything was answered, and entries older than a client's patience
        # (the writer died with them) are forgotten.
        self.forwarded: deque = deque()
        self.forwarded_cost = 0
        # The authenticated user (None: anonymous); only core.FanoutCore.set_session_user sets it.
        self.user: str | None = None
        # The ZAP User-Id of the connection that said hello (CURVE: the client's key or the user
        # its key maps to): a frame on this routing id from another connection is refused.
        self.principal: str | None = None
        self.fd: int | None = None     # its connection's file descriptor (ends with it)
        # Its verified watches: while > 0 a session-wide progress notification ([-1]) is replaced
        # by per-watch ones for them, each with its own hash (SPEC.md 7.10).
        self.verifying = 0


# ------------------------------------------------------------------ what the core queues for a session
class Owner(NamedTuple):
    """Who a watch response was packed for: if its frame is dropped unsent, these watchers
    become victims from first_rev (the first revision it carries for them)."""
    watchers: tuple
    first_rev: int
    owed_progress: bool = False     # the response is a progress notification that was owed
    # Verified streams: per watcher (same order), its vhash before this response, i.e. the
    # digest sum of its events before first_rev; None for a plain watcher (or all plain).
    hashes: tuple | None = None


class StateOwner(NamedTuple):
    """Owner of a state item (a reset, a chunk or state_end: SPEC.md section 7.7).  If its
    frame is dropped unsent the watchers do not resume from a revision: they read their state
    again, from a reset (state_opts: the registration opts of that state read)."""
    watchers: tuple
    first_rev: int
    owed_progress: bool = False
    hashes: tuple | None = None     # as Owner's (a state item adds nothing to a verified hash)
    state_opts: dict = {}


class WatchOut(NamedTuple):
    """An encoded watch response (event array): needs credit; droppable (its owner then replays)."""
    data: bytes
    owner: Owner


class ReplyOut(NamedTuple):
    """A whole reply frame (ok / err / pong): never dropped, needs no credit."""
    frame: bytes


class ControlOut(NamedTuple):
    """An encoded control response (a cancellation) that goes into a watch frame; never dropped."""
    data: bytes


class ProgressOut(NamedTuple):
    """A requested progress notification (a whole frame, or None when no watch is live) and
    the request's reply: both stand or fall with the watch frames queued before them."""
    frame: bytes | None
    reply: bytes
    req_id: int
    watch_id: int | None = None     # the watch it was asked for (None: every watch of the session)
