"""A checker for etcd's watch guarantees: pure functions over a recorded history and watch streams.

Inputs (no I/O here; the chaos runner and the tests collect them):

* the **history**: every event of every revision, as ``HEvent(revision, sub, type, key, value,
  create_revision, version)`` (plain tuples in that order are accepted too; type "PUT"/"DELETE"
  or 0/1).  Build it from the store (``history_from_store_records``), from a "history watcher"
  that watched every key from revision 1 (``history_from_stream``, which also reports the
  revisions it is missing), or from a model.
* the **acknowledged writes** (``AckedWrite``: the revision a reply claimed, and what it wrote),
* optionally the **leases** (``LeaseLife``: a lease's ID and how its life ended as the client
  side saw it: kept alive to the end, revoked with an acknowledged revision, left to expire, or
  unknown), for the lease checks,
* each **watch stream** (``StreamRecord``): the watch's ``WatchSpec`` and the ordered list of
  responses it received (the client's ``WatchResponse`` objects, or anything shaped like them:
  ``.header.revision``, ``.events`` with ``.type``, ``.kv`` and ``.prev_kv``, ``.canceled``,
  ``.cancel_reason``, ``.compact_revision``).

Output: ``CheckResult`` with human-readable violations, each starting with the guarantee it
breaks in brackets, and counts.  The guarantees (etcd's, api/v3/watch docs):

========== ===================================================================================
Ordered    events never go back: (revision, sub) strictly increases along a stream
Unique     no event is delivered twice
Reliable   no gap: the stream holds exactly the history's matching events from its start up
           to the last revision it reached (last event or progress notification)
Atomic     all matching events of one revision arrive in one response
Resumable  a watch re-created from last revision + 1 (by the client after a failover, or by
           the application) continues exactly: gaps/duplicates right after a failover, or in
           an explicitly resumed stream, are reported under this name
Bookmarkable  a progress notification at R comes after every matching event <= R
State      an initial state or a resync's state (SPEC.md section 7.7) leaves the client with
           exactly the range's kvs at its revision R; the stream after it is checked from R + 1
Filter / Range   only events of the watch's key range and not filtered out (NOPUT/NODELETE)
StartRevision    no event below the start revision
PrevKV     prev_kv is the key's previous live kv (absent if none, or compacted), only if asked
DeleteEvent  a DELETE carries the key, mod_revision = the deletion's revision, nothing else
Valid      every delivered event is in the history, with the same content
Compaction a watch from below the compact revision ends canceled with compact_revision, and
           a compaction cancel is only sent to a watch that needed a compacted revision
Cancel     no other unexpected cancel, nothing after the cancel
Liveness   a live stream reached the final revision once everything quiesced
Verified   a verified stream's bookmark (SPEC.md 7.10) carries the hash of exactly the history's
           matching events from the revision it names (``stream_start``) to its revision, and
           the client never ended the stream as diverged (STREAM_DIVERGED)
Header     a response's header revision is at least its events' revision
History    the history itself is consistent (contiguous revisions, versions, deletes of live keys)
Durability every acknowledged write is in the history at the revision it was acknowledged with
LeaseRevoke   a revoke or expiry is ONE revision holding exactly the DELETEs of the keys
           attached to the lease then (every key whose latest PUT carried it), sorted by key
           and nothing else; an acknowledged revoke is at the revision it was acknowledged with;
           no key stays alive attached to a revoked or expired lease, none is put under it after
LeaseAlive a lease kept alive to the end is never revoked (its keys are never deleted by expiry)
========== ===================================================================================

Why one module of ~700 lines: its one job is the guarantees, and each check (Ordered, Unique,
Reliable, Atomic, Resumable, Bookmarkable, durability, prev_kv) reads the same indexed history;
split, each would rebuild or import that index, and a reader could no longer see all the rules
side by side.
"""
from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass, field

PUT, DELETE = "PUT", "DELETE"
_TYPES = {0: PUT, 1: DELETE, PUT: PUT, DELETE: DELETE}
KEY_MAX = None                 # from-key ranges have no upper bound
MAX_PER_KIND = 5               # messages per (stream, guarantee) before summarising
INF = float("inf")


# ------------------------------------------------------------------------------------ data
@dataclass(frozen=True, slots=True)
class HEvent:
    """One record of the history: what a watch must deliver."""
    revision: int
    sub: int
    type: str
    key: bytes
    value: bytes = b""
    create_revision: int = 0
    version: int = 0
    lease: int = 0


def as_hevent(x) -> HEvent:
    if isinstance(x, HEvent):
        return x
    rev, sub, typ, key, *rest = x
    return HEvent(rev, sub, _TYPES[typ], bytes(key), *rest)


@dataclass
class WatchSpec:
    """What the watch asked for.

    range_end: b"" = the single key, b"\\x00" = every key >= key, else [key, range_end).
    start_revision 0 means "from now": the effective start is then unknown to the caller, who
    may give start_bounds=(lo, hi) such that it lies in [lo, hi] (e.g. lo = a revision known
    to be published before the create, hi = 1 + a revision read after it returned).
    compact_at_create: the highest compact revision acknowledged before the create was sent
    (a watch from below it must be canceled with compact_revision).
    """
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    filters: tuple = ()
    prev_kv: bool = False
    start_bounds: tuple | None = None
    compact_at_create: int = 0
    # Keys-only and value predicates (SPEC.md 7.8): a PUT is the watch's only if its value passes
    # every predicate given; DELETEs always are; keys_only: values (and prev_kv's) delivered empty.
    keys_only: bool = False
    value_prefix: bytes | None = None
    value_equals: bytes | None = None
    max_value_bytes: int | None = None

    def __post_init__(self):
        self.key = _bytes(self.key)
        self.range_end = _bytes(self.range_end)
        self.filters = tuple(self.filters)
        if self.value_prefix is not None:
            self.value_prefix = _bytes(self.value_prefix)
        if self.value_equals is not None:
            self.value_equals = _bytes(self.value_equals)

    def value_filter(self) -> dict:
        """The keyword arguments of Client.watch / watch_hash for its keys-only / predicates."""
        out = {"keys_only": True} if self.keys_only else {}
        for name in ("value_prefix", "value_equals", "max_value_bytes"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def passes(self, e) -> bool:
        """The value predicate on a history event (PUTs only)."""
        if e.type != PUT:
            return True
        v = e.value
        return ((self.value_prefix is None or v.startswith(self.value_prefix))
                and (self.value_equals is None or v == self.value_equals)
                and (self.max_value_bytes is None or len(v) <= self.max_value_bytes))

    def delivered_value(self, value: bytes) -> bytes:
        return b"" if self.keys_only else value

    def matches_key(self, key: bytes) -> bool:
        if self.range_end == b"":
            return key == self.key
        if self.range_end == b"\x00":
            return key >= self.key
        return self.key <= key < self.range_end

    @property
    def empty_range(self) -> bool:
        return self.range_end not in (b"", b"\x00") and self.key >= self.range_end

    def wants(self, typ: str) -> bool:
        return not ((typ == PUT and "NOPUT" in self.filters) or (typ == DELETE and "NODELETE" in self.filters))

    def matches(self, e: HEvent) -> bool:
        return self.wants(e.type) and self.matches_key(e.key) and self.passes(e)

    def bounds(self) -> tuple:
        if self.start_revision > 0:
            return self.start_revision, self.start_revision
        if self.start_bounds:
            return tuple(self.start_bounds)
        return 1, INF


@dataclass
class StreamRecord:
    """One watch handle's life.

    epochs: for each response, the client's failover count when it was received (optional:
    labels gaps/duplicates that follow a failover as Resumable).
    canceled_by_client: the application canceled it (no cancel response is then expected).
    final_revision: the revision a live stream must have reached at the end (after the caller
    quiesced the cluster and requested progress); None skips the liveness check.
    resume_of: name of the stream this one re-creates from its last revision + 1.
    bookmark_replies: the watch's own progress requests answered "live at R" (SPEC.md section
    7.9), each as (n, R): n = how many responses the stream had received when the reply came.
    The bookmark at R must be among those n, after every matching event <= R (Bookmarkable).
    """
    name: str
    spec: WatchSpec
    responses: list
    epochs: list | None = None
    canceled_by_client: bool = False
    final_revision: int | None = None
    resume_of: str | None = None
    bookmark_replies: list = field(default_factory=list)


@dataclass
class AckedWrite:
    """A write whose reply arrived: revision is its header revision.

    puts: ((key, value), ...) it wrote; deleted: how many keys it deleted (deleted_keys when
    known).  A write that wrote nothing (failed compare with an empty branch, delete of nothing)
    only claims a revision that exists."""
    revision: int
    puts: tuple = ()
    deleted: int = 0
    deleted_keys: tuple | None = None
    what: str = ""


@dataclass
@dataclass
class LeaseLife:
    """One lease as the client side saw it.

    end: "alive"   kept alive until after the final revision: it must never be revoked;
         "revoked" a revoke was acknowledged; revision = its reply's header revision;
         "expired" keep-alives stopped and its TTL ran out before the final revision;
         "unknown" (a grant or revoke whose reply was lost, keep-alives that may have lapsed):
                   it may have ended, and if it did, its revision is checked like any revoke.
    """
    lease_id: int
    end: str = "unknown"
    revision: int = 0
    what: str = ""


@dataclass
class CheckResult:
    violations: list = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    by_guarantee: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.violations

    def extend(self, other: "CheckResult"):
        self.violations += other.violations
        self.counts.update(other.counts)
        self.by_guarantee.update(other.by_guarantee)

    def summary(self) -> str:
        if self.ok:
            return "no violations"
        kinds = ", ".join(f"{k}: {n}" for k, n in self.by_guarantee.most_common())
        return f"{len(self.violations)} violation(s) ({kinds})"


def _bytes(x) -> bytes:
    if isinstance(x, str):
        return x.encode()
    return bytes(x) if x is not None else b""


class _Sink:
    """Collects violations for one subject, at most MAX_PER_KIND messages per guarantee."""

    def __init__(self, subject: str, result: CheckResult):
        self.subject, self.result = subject, result
        self.n = Counter()

    def add(self, guarantee: str, msg: str):
        self.n[guarantee] += 1
        self.result.by_guarantee[guarantee] += 1
        if self.n[guarantee] <= MAX_PER_KIND:
            self.result.violations.append(f"[{guarantee}] {self.subject}: {msg}")

    def close(self):
        for g, n in self.n.items():
            if n > MAX_PER_KIND:
                self.result.violations.append(f"[{g}] {self.subject}: ... and {n - MAX_PER_KIND} more")


# ------------------------------------------------------------------------------------ history
class History:
    """The history indexed for the checks.  first_revision: the lowest revision it holds in
    full (2 for a history from an empty store); prev_kv of an event can only be known when
    the key's previous record is inside the history."""

    def __init__(self, events, first_revision: int = 2, last_revision: int | None = None):
        evs = sorted((as_hevent(e) for e in events), key=lambda e: (e.revision, e.sub))
        self.events = evs
        self.first_revision = first_revision
        self.by_rev: dict[int, list[HEvent]] = defaultdict(list)
        self.at: dict[tuple, HEvent] = {}
        self.per_key: dict[bytes, list[HEvent]] = defaultdict(list)
        self.per_key_pos: dict[bytes, list[tuple]] = defaultdict(list)
        for e in evs:
            self.by_rev[e.revision].append(e)
            self.at.setdefault((e.revision, e.key), e)
            self.per_key[e.key].append(e)
            self.per_key_pos[e.key].append((e.revision, e.sub))
        self.revisions = sorted(self.by_rev)
        top = self.revisions[-1] if self.revisions else first_revision - 1
        self.last_revision = max(top, last_revision or 0)

    def prev_of(self, key: bytes, rev: int, sub: int):
        """(known, kv HEvent or None): the key's previous record before (rev, sub), if a PUT."""
        lst = self.per_key.get(key, [])
        i = bisect.bisect_left(self.per_key_pos.get(key, []), (rev, sub))
        if i == 0:
            return self.first_revision <= 2, None
        p = lst[i - 1]
        return True, (p if p.type == PUT else None)

    def matching(self, spec: WatchSpec, lo, hi) -> list[HEvent]:
        out = []
        if hi < lo:
            return out
        i = bisect.bisect_left(self.revisions, lo)
        revs = self.revisions
        while i < len(revs) and revs[i] <= hi:
            for e in self.by_rev[revs[i]]:
                if spec.matches(e):
                    out.append(e)
            i += 1
        return out


def history_from_store_records(records) -> list[HEvent]:
    """Store.reader().history() records (main, sub, type, kv, nbytes) -> HEvents."""
    out = []
    for main, sub, typ, kv, *_ in records:
        out.append(HEvent(main, sub, _TYPES[typ], kv[0], kv[4], kv[1], kv[3], kv[5] if len(kv) > 5 else 0))
    return out


def history_from_stream(responses, first_revision: int = 2, last_revision: int | None = None):
    """A history from a watch on every key from `first_revision` (key b"\\x00", from-key).

    Returns (events, violations).  Completeness: every revision from first_revision up to
    last_revision (default: the last one seen) has at least one event, because every revision
    is made by a write that wrote something."""
    events, problems = [], []
    seen = set()
    subs: Counter = Counter()
    for r in responses:
        for ev in getattr(r, "events", ()) or ():
            kv = ev.kv
            ident = (kv.mod_revision, kv.key)
            if ident in seen:
                problems.append(f"[History] history watcher: event rev {kv.mod_revision} key {kv.key!r} twice")
                continue
            seen.add(ident)
            rev = kv.mod_revision
            events.append(HEvent(rev, subs[rev], ev.type, kv.key, kv.value, kv.create_revision, kv.version,
                                 getattr(kv, "lease", 0) or 0))
            subs[rev] += 1
    have = set(subs)
    top = last_revision if last_revision is not None else (max(have) if have else first_revision - 1)
    missing = [r for r in range(first_revision, top + 1) if r not in have]
    if missing:
        problems.append(f"[History] history watcher misses {len(missing)} revision(s): {_ranges(missing)}")
    return events, problems


def compare_histories(a, b, lo: int = 0, hi: float = INF, names=("a", "b")) -> list[str]:
    """Differences between two histories over revisions [lo, hi]."""
    sa = {as_hevent(e) for e in a if lo <= as_hevent(e).revision <= hi}
    sb = {as_hevent(e) for e in b if lo <= as_hevent(e).revision <= hi}
    out = []
    for e in sorted(sa - sb, key=lambda e: (e.revision, e.sub))[:MAX_PER_KIND]:
        out.append(f"[History] {names[0]} has {_fmt(e)} that {names[1]} lacks")
    for e in sorted(sb - sa, key=lambda e: (e.revision, e.sub))[:MAX_PER_KIND]:
        out.append(f"[History] {names[1]} has {_fmt(e)} that {names[0]} lacks")
    n = len(sa ^ sb)
    if n > 2 * MAX_PER_KIND:
        out.append(f"[History] {names[0]} vs {names[1]}: {n} differing events in all")
    return out


def check_history(hist: History, *, acked=(), final_kvs=None, attempted=None,
                  final_revision: int | None = None) -> CheckResult:
    """The history's own consistency, acknowledged writes in it, and the final state."""
    res = CheckResult()
    sink = _Sink("history", res)
    # contiguous revisions, contiguous subs, one record per key and revision
    top = final_revision if final_revision is not None else hist.last_revision
    missing = [r for r in range(hist.first_revision, top + 1) if r not in hist.by_rev]
    if missing:
        sink.add("History", f"{len(missing)} revision(s) without any event: {_ranges(missing)}")
    if final_revision is not None and hist.revisions and hist.revisions[-1] > final_revision:
        sink.add("History", f"events above the final revision {final_revision}: up to {hist.revisions[-1]}")
    for rev in hist.revisions:
        evs = hist.by_rev[rev]
        if [e.sub for e in evs] != list(range(len(evs))):
            sink.add("History", f"revision {rev} has subs {[e.sub for e in evs]}")
        keys = [e.key for e in evs]
        if len(set(keys)) != len(keys):
            sink.add("History", f"revision {rev} touches a key twice: {keys}")
    # replay: versions, create revisions, deletes only of live keys
    state: dict[bytes, HEvent] = {}
    replay_ok = hist.first_revision <= 2
    for e in hist.events:
        cur = state.get(e.key)
        if e.type == PUT:
            if cur is None:
                want = (e.revision, 1)
            else:
                want = (cur.create_revision, cur.version + 1)
            if replay_ok and (e.create_revision, e.version) != want:
                sink.add("History", f"{_fmt(e)}: create/version {(e.create_revision, e.version)}, expected {want}")
            state[e.key] = e
        else:
            if replay_ok and cur is None:
                sink.add("History", f"{_fmt(e)} deletes a key that is not live")
            state.pop(e.key, None)
    res.counts["history_revisions"] = len(hist.revisions)
    res.counts["history_events"] = len(hist.events)
    # acknowledged writes
    claimed: dict[int, str] = {}
    dsink = _Sink("acknowledged writes", res)
    for a in acked:
        res.counts["acked_writes"] += 1
        evs = hist.by_rev.get(a.revision, [])
        what, rev = a.what or "write", a.revision
        wrote = bool(a.puts) or a.deleted > 0
        if not wrote:
            if rev > top or rev < 1:
                dsink.add("Durability", f"{what} acknowledged at revision {rev} beyond the history (last {top})")
            continue
        if rev in claimed:
            dsink.add("Durability", f"{what} and {claimed[rev]} both acknowledged at revision {rev}")
        claimed[rev] = what
        if not evs:
            dsink.add("Durability", f"{what} acknowledged at revision {rev} is not in the history")
            continue
        for k, v in a.puts:
            e = hist.at.get((rev, _bytes(k)))
            if e is None or e.type != PUT or e.value != _bytes(v):
                dsink.add("Durability", f"{what}: put {_bytes(k)!r}={_bytes(v)!r} acknowledged at revision {rev}, "
                                        f"history has {_fmt(e) if e else 'nothing for that key'}")
        dels = [e for e in evs if e.type == DELETE]
        if len(dels) != a.deleted:
            dsink.add("Durability", f"{what} acknowledged {a.deleted} deletion(s) at revision {rev}, "
                                    f"history has {len(dels)}")
        if a.deleted_keys is not None and {e.key for e in dels} != {_bytes(k) for k in a.deleted_keys}:
            dsink.add("Durability", f"{what} deleted {sorted(map(_bytes, a.deleted_keys))} at revision {rev}, "
                                    f"history deleted {sorted(e.key for e in dels)}")
        if len(evs) != len(a.puts) + a.deleted:
            dsink.add("Durability", f"{what} wrote {len(a.puts)} put(s) + {a.deleted} delete(s) at revision {rev}, "
                                    f"history has {len(evs)} event(s)")
    # no phantom writes: every put's (key, value) was attempted by someone
    if attempted is not None:
        att = {(_bytes(k), _bytes(v)) for k, v in attempted}
        for e in hist.events:
            if e.type == PUT and (e.key, e.value) not in att:
                dsink.add("Durability", f"{_fmt(e)} was never written by anyone (phantom)")
    # final state
    if final_kvs is not None and replay_ok:
        got = {}
        for kv in final_kvs:
            k = _kv_tuple(kv)
            got[k[0]] = k
        want = {k: (k, e.value, e.create_revision, e.revision, e.version) for k, e in state.items()}
        for k in sorted(set(got) | set(want)):
            if got.get(k) != want.get(k):
                sink.add("History", f"final get has {got.get(k)} for {k!r}, replaying the history gives {want.get(k)}")
    sink.close()
    dsink.close()
    return res


def _kv_tuple(kv):
    if hasattr(kv, "key"):
        return (bytes(kv.key), bytes(kv.value), kv.create_revision, kv.mod_revision, kv.version)
    key, value, create, mod, version = kv
    return (_bytes(key), _bytes(value), create, mod, version)


# ------------------------------------------------------------------------------------ leases
def check_leases(hist: History, leases, *, acked=(), client_deletes_lease_keys: bool = True) -> CheckResult:
    """LeaseRevoke / LeaseAlive from the history (what watchers received) and the lease lives.

    Replays the history keeping, for every lease, the keys attached to it (a PUT carrying the
    lease attaches its key, a PUT without it or a DELETE detaches it).  A revision is taken for
    the revoke (or expiry) of lease L when its DELETEs hit keys attached to L:

    * client_deletes_lease_keys=False (the caller never deletes a key attached to a lease, as the
      chaos runner): every such revision is L's revoke, and must be nothing but the DELETEs of
      exactly L's attached keys, sorted by key;
    * True: only a revision made of DELETEs only, all of keys attached to one lease, that no
      acknowledged write claims, is taken for a revoke (a client's delete of some of a lease's
      keys is legitimate); a split revoke then shows as keys left attached, or a revoke
      revision that misses some.
    """
    res = CheckResult()
    sink = _Sink("leases", res)
    lives = {}
    for life in leases:
        lives[life.lease_id] = life
    claimed = {a.revision for a in acked if a.puts or a.deleted}
    attached: dict[int, set] = defaultdict(set)     # lease -> keys attached now
    key_lease: dict[bytes, int] = {}
    ended: dict[int, int] = {}                      # lease -> revision of its revoke
    for rev in hist.revisions:
        evs = hist.by_rev[rev]
        hit = defaultdict(list)                     # lease -> its attached keys this revision deletes
        for e in evs:
            if e.type == DELETE and key_lease.get(e.key) in lives:
                hit[key_lease[e.key]].append(e)
        for lease_id, dels in hit.items():
            if client_deletes_lease_keys and (rev in claimed or len(hit) > 1 or len(dels) != len(evs)):
                continue                            # a client's delete (detaches, checked by nothing here)
            life = lives[lease_id]
            res.counts["lease_revocations"] += 1
            res.counts[f"lease_revocations_{life.end}"] += 1
            others = [e for e in evs if e not in dels]
            if others:
                sink.add("LeaseRevoke", f"revoke of lease {lease_id:#x} at revision {rev} shares its revision "
                                        f"with {len(others)} other event(s), first {_fmt(others[0])}")
            got, want = {e.key for e in dels}, attached[lease_id]
            if got != want:
                sink.add("LeaseRevoke", f"revoke of lease {lease_id:#x} at revision {rev} deletes {sorted(got)}, "
                                        f"attached were {sorted(want)} (missing {sorted(want - got)})")
            keys = [e.key for e in dels]
            if keys != sorted(keys):
                sink.add("LeaseRevoke", f"revoke of lease {lease_id:#x} at revision {rev}: DELETEs not sorted by "
                                        f"key: {keys}")
            if life.end == "alive":
                sink.add("LeaseAlive", f"lease {lease_id:#x} {life.what or 'kept alive to the end'}: revoked or "
                                       f"expired at revision {rev} (deleting {sorted(got)})")
            elif life.end == "revoked" and life.revision and life.revision != rev:
                sink.add("LeaseRevoke", f"revoke of lease {lease_id:#x} acknowledged at revision {life.revision}, "
                                        f"its DELETEs are at revision {rev}")
            if lease_id in ended:
                sink.add("LeaseRevoke", f"lease {lease_id:#x} revoked twice: at revisions {ended[lease_id]} and {rev}")
            ended.setdefault(lease_id, rev)
        for e in evs:
            old = key_lease.pop(e.key, 0)
            if old:
                attached[old].discard(e.key)
            if e.type == PUT and e.lease:
                if e.lease in ended:
                    sink.add("LeaseRevoke", f"{_fmt(e)} is put under lease {e.lease:#x}, revoked at revision "
                                            f"{ended[e.lease]}")
                key_lease[e.key] = e.lease
                attached[e.lease].add(e.key)
    for lease_id, life in lives.items():
        res.counts["leases_checked"] += 1
        left = attached.get(lease_id)
        if life.end in ("revoked", "expired") and left:
            sink.add("LeaseRevoke", f"lease {lease_id:#x} {life.what or life.end} but {len(left)} key(s) stay alive "
                                    f"attached to it: {sorted(left)[:5]}")
        if life.end == "revoked" and life.revision and lease_id not in ended and not left:
            # nothing attached when it was revoked: no revision; the acknowledged one must exist
            if life.revision > hist.last_revision:
                sink.add("LeaseRevoke", f"revoke of lease {lease_id:#x} acknowledged at revision {life.revision}, "
                                        f"beyond the history (last {hist.last_revision})")
    sink.close()
    return res


# ------------------------------------------------------------------------------------ streams
def _events_of(r):
    return list(getattr(r, "events", None) or ())


def _rev(r) -> int:
    h = getattr(r, "header", None)
    return getattr(h, "revision", 0) if h is not None else 0


def stream_reached(rec: StreamRecord) -> int:
    """The last revision a stream reached: its last event or progress notification."""
    top = 0
    for r in rec.responses:
        if getattr(r, "canceled", False):
            continue
        evs = _events_of(r)
        if evs:
            top = max(top, max(e.kv.mod_revision for e in evs))
        elif not getattr(r, "created", False):
            top = max(top, _rev(r))
    return top


def check_stream(rec: StreamRecord, hist: History, *, compact_revision: int = 0,
                 resumed: bool = False) -> CheckResult:
    """Every per-stream guarantee.  compact_revision: the highest compact revision ever
    applied (cancels may name at most that; prev_kv may be absent at or below it)."""
    res = CheckResult()
    sink = _Sink(f"watch {rec.name} ({_spec_str(rec.spec)})", res)
    spec = rec.spec
    resps = list(rec.responses)
    epochs = list(rec.epochs) if rec.epochs is not None else [0] * len(resps)
    res.counts["streams"] += 1
    res.counts["responses"] += len(resps)

    # ---- structure: cancel, progress notifications, headers
    cancel_idx = None
    progress: list[tuple[int, int]] = []
    delivered: list[tuple[int, object]] = []          # (response index, event)
    for i, r in enumerate(resps):
        evs = _events_of(r)
        if cancel_idx is not None:
            sink.add("Cancel", f"response #{i} (revision {_rev(r)}, {len(evs)} events) after the cancel response")
        if getattr(r, "canceled", False):
            if cancel_idx is None:
                cancel_idx = i
            if evs:
                sink.add("Cancel", f"cancel response #{i} carries events")
            continue
        if not evs:
            if not getattr(r, "created", False):
                progress.append((i, _rev(r)))
            continue
        top = max(e.kv.mod_revision for e in evs)
        if _rev(r) < top:
            sink.add("Header", f"response #{i} has header revision {_rev(r)} below its event revision {top}")
        for e in evs:
            delivered.append((i, e))
    res.counts["progress_notifications"] += len(progress)

    # ---- the effective start
    lo, hi = spec.bounds()
    if delivered:
        first_rev = delivered[0][1].kv.mod_revision
        s = min(max(first_rev, lo), hi)
    else:
        s = hi
    reached = max([e.kv.mod_revision for _, e in delivered] + [R for _, R in progress] + [0])
    if s == INF:
        s = reached + 1

    def label(base: str, i: int, j: int | None = None) -> tuple[str, str]:
        """Resumable when the response at i follows a client failover (since response j)."""
        if resumed:
            return "Resumable", " (in a stream resumed from the previous one's last revision + 1)"
        if j is None:
            j = i - 1
        if 0 <= j < len(epochs) and 0 <= i < len(epochs) and epochs[i] != epochs[j]:
            return "Resumable", f" (after client failover #{epochs[i]})"
        return base, ""

    # ---- per event: unique, ordered, valid, range, filter, start, prev_kv, delete shape
    first: dict[tuple, int] = {}
    last_pos = (0, -1)
    last_idx = -1
    for i, e in delivered:
        kv = e.kv
        rev, key = kv.mod_revision, bytes(kv.key)
        ident = (rev, key)
        res.counts["events_delivered"] += 1
        if ident in first:
            g, why = label("Unique", i, first[ident])
            sink.add(g, f"event rev {rev} key {key!r} delivered again in response #{i} (first in #{first[ident]}){why}")
            res.counts["duplicates"] += 1
            continue
        first[ident] = i
        h = hist.at.get(ident)
        pos = (rev, h.sub if h is not None else -1)
        if pos < last_pos and not (pos[0] == last_pos[0] and -1 in (pos[1], last_pos[1])):
            g, why = label("Ordered", i, last_idx)
            sink.add(g, f"event rev {rev} key {key!r} (response #{i}) after rev {last_pos[0]} sub {last_pos[1]}{why}")
        if pos > last_pos:
            last_pos, last_idx = pos, i
        if h is None:
            where = "beyond the history" if rev > hist.last_revision else "not in the history"
            if rev >= hist.first_revision:
                sink.add("Valid", f"{e.type} rev {rev} key {key!r} (response #{i}) is {where}")
        else:
            if e.type != h.type:
                sink.add("Valid", f"rev {rev} key {key!r} delivered as {e.type}, history has {h.type}")
            elif e.type == PUT and (bytes(kv.value), kv.create_revision, kv.version) != \
                    (spec.delivered_value(h.value), h.create_revision, h.version):
                sink.add("Valid", f"PUT rev {rev} key {key!r}: got value/create/version "
                                  f"{(bytes(kv.value), kv.create_revision, kv.version)}, history has "
                                  f"{(h.value, h.create_revision, h.version)}"
                                  + (" (keys_only: the value must be empty)" if spec.keys_only else ""))
            elif e.type == PUT and (getattr(kv, "lease", h.lease) or 0) != h.lease:
                sink.add("Valid", f"PUT rev {rev} key {key!r}: got lease {kv.lease:#x}, history has {h.lease:#x}")
        if e.type == DELETE and (kv.create_revision or kv.version or kv.value or getattr(kv, "lease", 0)):
            sink.add("DeleteEvent", f"DELETE rev {rev} key {key!r} carries create {kv.create_revision} "
                                    f"version {kv.version} value {bytes(kv.value)!r}")
        if not spec.matches_key(key):
            sink.add("Range", f"event for key {key!r} (rev {rev}) is outside the watch's range")
        if not spec.wants(e.type):
            sink.add("Filter", f"{e.type} event rev {rev} key {key!r} passed filters {list(spec.filters)}")
        elif h is not None and not spec.passes(h):
            sink.add("Filter", f"PUT rev {rev} key {key!r} value {h.value!r} fails the watch's value predicate")
        if rev < s:
            g, why = label("StartRevision", i)
            sink.add(g, f"event rev {rev} key {key!r} (response #{i}) is below the start revision {s}{why}")
        _check_prev_kv(sink, spec, e, h, hist, compact_revision)

    # ---- reliable + atomic: exactly the matching history in [s, reached]
    expected = hist.matching(spec, max(s, hist.first_revision), reached)
    exp_ids = [(e.revision, e.key) for e in expected]
    resp_of_rev: dict[int, set] = defaultdict(set)
    for (rev, _key), i in first.items():
        resp_of_rev[rev].add(i)
    for rev, idxs in sorted(resp_of_rev.items()):
        if len(idxs) > 1:
            sink.add("Atomic", f"revision {rev} split over responses {sorted(idxs)}")
    missing = [e for e in expected if (e.revision, e.key) not in first]
    # where the stream went past each missing revision, for the failover label
    ev_rank = sorted((rev, i) for (rev, _k), i in first.items())
    for m in missing:
        if m.revision in resp_of_rev:
            sink.add("Atomic", f"revision {m.revision} delivered in response(s) {sorted(resp_of_rev[m.revision])} "
                               f"without its event {_fmt(m)}")
            continue
        k = bisect.bisect_right(ev_rank, (m.revision, INF))
        after = ev_rank[k][1] if k < len(ev_rank) else None
        before = ev_rank[k - 1][1] if k > 0 else None
        claimed = [R for _, R in progress if R >= m.revision]
        note = f"; a progress notification claimed {claimed[0]}" if claimed else ""
        if after is not None and before is not None:
            g, why = label("Reliable", after, before)
        elif resumed:
            g, why = label("Reliable", 0)
        else:
            g, why = "Reliable", ""
        sink.add(g, f"missed {_fmt(m)} (stream from {s} reached {reached}{note}){why}")
    res.counts["missed_events"] += len(missing)

    # ---- bookmarkable: a progress notification at R follows every matching event <= R
    if progress and expected:
        deliv_idx = [first.get(x, INF) for x in exp_ids]
        prefix_max, m_ = [], -1
        for d in deliv_idx:
            m_ = max(m_, d)
            prefix_max.append(m_)
        exp_revs = [e.revision for e in expected]
        for i, R in progress:
            n = bisect.bisect_right(exp_revs, R)
            if n and prefix_max[n - 1] > i and prefix_max[n - 1] != INF:
                late = next(expected[j] for j in range(n) if deliv_idx[j] > i and deliv_idx[j] != INF)
                sink.add("Bookmarkable", f"progress notification at {R} (response #{i}) came before "
                                         f"{_fmt(late)} (response #{first[(late.revision, late.key)]})")

    # ---- per-watch bookmark replies: the bookmark came first, behind every event <= R
    for n, R in rec.bookmark_replies:
        if not any(i < n and R2 >= R for i, R2 in progress):
            sink.add("Bookmarkable", f"a per-watch progress reply at {R} came when the stream had no progress "
                                     f"notification at or past {R} (among its first {n} responses)")
        for m in hist.matching(spec, max(s, hist.first_revision), R):
            j = first.get((m.revision, m.key), INF)
            if j >= n:
                sink.add("Bookmarkable", f"a per-watch progress reply at {R} came before {_fmt(m)} was delivered "
                                         f"({'response #' + str(j) if j != INF else 'never'}; {n} responses then)")
                break
    res.counts["bookmark_replies"] += len(rec.bookmark_replies)

    # ---- compaction and cancels
    canceled = cancel_idx is not None
    if canceled:
        r = resps[cancel_idx]
        C = getattr(r, "compact_revision", 0) or 0
        need = max(s, reached + 1)
        if C:
            res.counts["canceled_compacted"] += 1
            if compact_revision and C > compact_revision:
                sink.add("Compaction", f"canceled with compact_revision {C} above any compaction ({compact_revision})")
            if need >= C:
                g, why = label("Compaction", cancel_idx)
                sink.add(g, f"canceled as compacted at {C}, but it only needed revisions >= {need}{why}")
        elif getattr(r, "cancel_code", "") == "STREAM_DIVERGED":
            res.counts["canceled_diverged"] += 1
            sink.add("Verified", f"the client ended the stream: {getattr(r, 'cancel_reason', '')}")
        elif spec.empty_range and "range" in (getattr(r, "cancel_reason", "") or ""):
            res.counts["canceled_empty_range"] += 1
        elif not rec.canceled_by_client:
            res.counts["canceled_other"] += 1
            sink.add("Cancel", f"unexpected cancel: {getattr(r, 'cancel_reason', '')!r}")
    if rec.canceled_by_client:
        res.counts["canceled_by_client"] += 1
    if spec.start_revision > 0 and spec.compact_at_create > spec.start_revision:
        C = getattr(resps[cancel_idx], "compact_revision", 0) if canceled else 0
        if delivered or not canceled or C < spec.compact_at_create:
            sink.add("Compaction", f"watch from {spec.start_revision} created after a compaction at "
                                   f"{spec.compact_at_create} was not canceled with its compact revision "
                                   f"(canceled={canceled}, compact_revision={C}, {len(delivered)} events)")

    # ---- verified streams: each bookmark's hash against the history, computed offline
    for i, R in progress:
        _check_stream_hash(sink, res, spec, resps[i], R, hist)

    # ---- liveness
    if rec.final_revision is not None and not canceled and not rec.canceled_by_client:
        live_top = max(reached, s - 1) if spec.start_revision > 0 else reached
        if live_top < rec.final_revision:
            sink.add("Liveness", f"stream stuck at revision {live_top} (from {s}), "
                                 f"the store is at {rec.final_revision}")
            res.counts["stuck_streams"] += 1
    res.counts["failover_resumes"] += sum(1 for a, b in zip(epochs, epochs[1:]) if a != b)
    sink.close()
    return res


def stream_hash_of(events, keys_only: bool = False) -> bytes:
    """SPEC.md 7.10's stream hash of history events (HEvents), computed here from the history
    alone (the live stream's value comes from the fan-out; this is the independent one).
    keys_only: the events as a keys-only watch gets them (values empty, SPEC.md 7.8)."""
    from zwatch import streamhash
    total = 0
    for e in events:
        t = 0 if e.type == PUT else 1
        value = b"" if keys_only else e.value
        total += streamhash.digest(t, [e.key, e.create_revision, e.revision, e.version, value, e.lease])
    return streamhash.to_bytes(total)


def _check_stream_hash(sink, res, spec, r, R, hist):
    got = getattr(r, "stream_hash", None)
    start = getattr(r, "stream_start", 0)
    if got is None or not start or R > hist.last_revision:
        return
    if start < hist.first_revision and hist.first_revision > 2:     # (revision 1 holds no event)
        return
    res.counts["verified_bookmarks"] += 1
    want = stream_hash_of(hist.matching(spec, start, R), spec.keys_only)
    if bytes(got) != want:
        sink.add("Verified", f"bookmark at {R} carries stream hash {bytes(got).hex()} of revisions "
                             f"[{start}, {R}], the history's matching events hash to {want.hex()}")


def _check_prev_kv(sink, spec, e, h, hist, compact_revision):
    kv, p = e.kv, getattr(e, "prev_kv", None)
    rev, key = kv.mod_revision, bytes(kv.key)
    if not spec.prev_kv:
        if p is not None:
            sink.add("PrevKV", f"rev {rev} key {key!r} carries a prev_kv that was not asked for")
        return
    if h is None:
        return
    known, want = hist.prev_of(key, h.revision, h.sub)
    if not known:
        return
    if p is None:
        if want is not None and rev > compact_revision:
            sink.add("PrevKV", f"rev {rev} key {key!r} has no prev_kv, expected {_fmt(want)}")
        return
    got = (bytes(p.key), bytes(p.value), p.create_revision, p.mod_revision, p.version)
    if want is None:
        sink.add("PrevKV", f"rev {rev} key {key!r} has prev_kv {got} but the key was not live before")
    elif got != (want.key, spec.delivered_value(want.value), want.create_revision, want.revision, want.version):
        sink.add("PrevKV", f"rev {rev} key {key!r} has prev_kv {got}, expected "
                           f"{(want.key, want.value, want.create_revision, want.revision, want.version)}")


# ------------------------------------------------------------------------------------ states
# Issue #16 (SPEC.md section 7.7): a watch's initial state, or a resync's state, at revision R.
# State             the kvs a state leaves the client with equal the range's kvs at R (its
#                   values and mod_revisions): for an initial state, a range read at R; for a
#                   resync, the truth at R; for a digest, the client's map before the reset
#                   with the changed kvs applied and only the named unchanged keys kept.
# A state's responses are told apart by their ext "mark" (reset / state / state_end).

def _mark(r):
    ext = getattr(r, "ext", None)
    return ext.get("mark") if isinstance(ext, dict) else None


def apply_state(held: dict, responses) -> dict:
    """The map {key: (value, mod_revision)} a client holds after `responses`, starting from
    `held` (not modified): live events change it; a reset (or a state without one) starts a map
    aside, filled by the state's kvs and, for a digest, the named unchanged keys taken from the
    map before; state_end swaps it in."""
    held = dict(held)
    staging = None
    for r in responses:
        mark = _mark(r)
        if mark == "reset":
            staging = {}
        elif mark == "state":
            if staging is None:
                staging = {}
            for k in (r.ext.get("same") or ()):
                if k in held:
                    staging[k] = held[k]
            for e in _events_of(r):
                staging[_bytes(e.kv.key)] = (_bytes(e.kv.value), e.kv.mod_revision)
        elif mark == "state_end":
            held = staging if staging is not None else {}
            staging = None
        elif staging is None:
            for e in _events_of(r):
                if _TYPES[e.type] == PUT:
                    held[_bytes(e.kv.key)] = (_bytes(e.kv.value), e.kv.mod_revision)
                else:
                    held.pop(_bytes(e.kv.key), None)
    return held


def _as_state(truth) -> dict:
    """{key: (value, mod_revision)} from such a map, or from KeyValue-like objects / a list of them."""
    if isinstance(truth, dict):
        items = truth.items()
    else:
        items = ((kv.key, kv) for kv in truth)
    out = {}
    for k, v in items:
        out[_bytes(k)] = tuple(v) if isinstance(v, tuple) else (_bytes(v.value), v.mod_revision)
    return out


def check_state(held, truth, revision: int) -> list[str]:
    """[State] violations: the map a state left (apply_state) against the truth at its revision
    (a range read at it, or state_at)."""
    held, truth = _as_state(held), _as_state(truth)
    out = []
    for k in sorted(set(held) | set(truth)):
        a, b = held.get(k), truth.get(k)
        if a != b:
            out.append(f"[State] at revision {revision}: key {k!r} is {a!r} in the state, {b!r} in the truth")
            if len(out) >= MAX_PER_KIND:
                break
    return out


def check_state_order(responses) -> list[str]:
    """[State] violations of a state's shape: its pieces tile the range in key order (every key
    above the previous piece's), all at one revision, between a start (a reset, or the first
    piece) and state_end.  A state read again without a reset (two states mixed) breaks it."""
    out = []
    last_key, rev = None, None
    for i, r in enumerate(responses):
        mark = _mark(r)
        if mark == "reset":
            last_key, rev = None, None
        elif mark == "state":
            keys = sorted([_bytes(e.kv.key) for e in _events_of(r)] + [_bytes(k) for k in (r.ext.get("same") or ())])
            if rev is not None and _rev(r) != rev:
                out.append(f"[State] response #{i}: a piece at revision {_rev(r)} in a state at {rev} without a reset")
            rev = _rev(r)
            if keys and last_key is not None and keys[0] <= last_key:
                out.append(f"[State] response #{i}: key {keys[0]!r} after {last_key!r} in one state (a mix without a reset?)")
            if keys:
                last_key = keys[-1]
        elif mark == "state_end":
            if rev is not None and _rev(r) != rev:
                out.append(f"[State] response #{i}: state_end at {_rev(r)} for a state at {rev}")
            last_key, rev = None, None
    return out


def state_at(hist: History, spec: WatchSpec, revision: int) -> dict:
    """The range's kvs at `revision` from the history (which must start at revision 2)."""
    out = {}
    for e in hist.events:
        if e.revision > revision:
            break
        if spec.matches_key(e.key):
            if e.type == PUT:
                out[e.key] = (e.value, e.revision)
            else:
                out.pop(e.key, None)
    return out


def check_state_stream(rec: StreamRecord, hist: History, *, compact_revision: int = 0) -> CheckResult:
    """A stream with states (initial_state, on_compacted resync / digest): every completed state
    equals the truth at its revision R; the stream after its last state_end is an ordinary
    stream from R + 1 (check_stream)."""
    res = CheckResult()
    resps = list(rec.responses)
    for v in check_state_order(resps):
        res.violations.append(f"{v} (watch {rec.name})")
        res.by_guarantee["State"] += 1
    last_end = None
    for i, r in enumerate(resps):
        if _mark(r) == "state_end":
            rev = _rev(r)
            res.counts["states"] += 1
            if hist.first_revision <= 2:
                got = apply_state({}, resps[:i + 1])
                for v in check_state(got, state_at(hist, rec.spec, rev), rev):
                    res.violations.append(f"{v} (watch {rec.name}, {_spec_str(rec.spec)})")
                    res.by_guarantee["State"] += 1
            last_end = i
    if last_end is not None:
        tail = [r for r in resps[last_end + 1:] if _mark(r) is None]
        spec = WatchSpec(rec.spec.key, rec.spec.range_end, _rev(resps[last_end]) + 1, rec.spec.filters,
                         rec.spec.prev_kv)
        epochs = None if rec.epochs is None else [e for e, r in zip(rec.epochs[last_end + 1:], resps[last_end + 1:])
                                                  if _mark(r) is None]
        if not any(_mark(r) == "reset" for r in resps[last_end + 1:]):
            res.extend(check_stream(StreamRecord(rec.name + "@state", spec, tail, epochs, rec.canceled_by_client,
                                                 rec.final_revision), hist, compact_revision=compact_revision))
    return res


# ------------------------------------------------------------------------------------ all
def check_all(history, streams, *, acked=(), final_kvs=None, attempted=None, final_revision=None,
              compact_revision: int = 0, first_revision: int = 2, leases=None,
              client_deletes_lease_keys: bool = True) -> CheckResult:
    """The history's consistency, acknowledged writes, leases (when given), then every stream
    against the history."""
    hist = history if isinstance(history, History) else History(history, first_revision, final_revision)
    res = check_history(hist, acked=acked, final_kvs=final_kvs, attempted=attempted,
                        final_revision=final_revision)
    if leases is not None:
        res.extend(check_leases(hist, leases, acked=acked, client_deletes_lease_keys=client_deletes_lease_keys))
    by_name = {s.name: s for s in streams}
    for rec in streams:
        resumed = False
        if rec.resume_of is not None and rec.resume_of in by_name:
            resumed = True
            prev = by_name[rec.resume_of]
            prev_reached = stream_reached(prev)
            want = max(prev_reached + 1, prev.spec.start_revision)     # a future watch resumes at its start
            if prev_reached and rec.spec.start_revision and rec.spec.start_revision != want:
                res.violations.append(f"[Resumable] watch {rec.name}: resumed {rec.resume_of} from "
                                      f"{rec.spec.start_revision}, its last revision + 1 is {want}")
                res.by_guarantee["Resumable"] += 1
        if any(_mark(r) is not None for r in rec.responses):
            res.extend(check_state_stream(rec, hist, compact_revision=compact_revision))
            continue
        res.extend(check_stream(rec, hist, compact_revision=compact_revision, resumed=resumed))
    return res


# ------------------------------------------------------------------------------------ format
def _fmt(e: HEvent | None) -> str:
    if e is None:
        return "nothing"
    v = f"={e.value!r}" if e.type == PUT else ""
    return f"{e.type} rev {e.revision}.{e.sub} {e.key!r}{v}"


def _spec_str(spec: WatchSpec) -> str:
    if spec.range_end == b"":
        r = f"key {spec.key!r}"
    elif spec.range_end == b"\x00":
        r = f"from {spec.key!r}"
    else:
        r = f"[{spec.key!r}, {spec.range_end!r})"
    start = spec.start_revision or (f"now{list(spec.start_bounds)}" if spec.start_bounds else "now")
    extra = "".join([f" {'+'.join(spec.filters)}" if spec.filters else "", " prev_kv" if spec.prev_kv else ""]
                    + [f" {k}={v!r}" for k, v in spec.value_filter().items()])
    return f"{r} start {start}{extra}"


def _ranges(revs) -> str:
    out, revs = [], sorted(revs)
    i = 0
    while i < len(revs) and len(out) < 8:
        j = i
        while j + 1 < len(revs) and revs[j + 1] == revs[j] + 1:
            j += 1
        out.append(str(revs[i]) if i == j else f"{revs[i]}-{revs[j]}")
        i = j + 1
    return ", ".join(out) + (" ..." if i < len(revs) else "")
