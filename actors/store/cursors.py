"""Durable named cursors (SPEC.md 6.2), in the store's ``cursors`` db: the persistent half.

A cursor is a consumer's bookmark over a key range: "everything at or below `revision` is
consumed".  It holds compaction back: no compaction may remove a revision some cursor still
needs, i.e. the compact revision never exceeds the oldest cursor's revision + 1 (a consumer
resumes at revision + 1, which a compact revision of revision + 1 still serves).

Layout (layout.py): name (UTF-8) -> ``[key, range_end, revision, ttl, created_us, updated_us]``.
Only the writer writes it, in its group commit (a cursor_put is durable before its reply).  The
other half, each cursor's deadline, is the writer's clock (actors/cursorclock.py), in memory:
a restart gives every cursor its full TTL again, as it does leases, so a cursor never expires
early because the writer was down.

Invariants (kept by the Tx ops in tx.py, checked in tests/unit/test_store_cursors.py):

* a cursor's revision never goes backwards (a lower one in a cursor_put leaves it where it is);
* compact_revision <= revision + 1 for every cursor (creation refuses a revision already
  compacted; compaction refuses to pass the oldest cursor, auto-compaction clamps to it);
* revision <= the current revision; at most MAX_CURSORS cursors; the key range never changes.
"""
from __future__ import annotations

import time
from typing import NamedTuple

from zwatch.errors import (Compacted, CursorNotFound, FailedPrecondition, FutureRevision, InvalidArgument,
                           ResourceExhausted)
from zwatch.limits import MAX_CURSORS

from . import layout, times

# The `reason` of the FAILED_PRECONDITION refusing a compaction past a cursor (SPEC.md 6.2).
CURSOR_HOLDS = "CURSOR_HOLDS"


class Cursor(NamedTuple):
    name: str
    key: bytes
    range_end: bytes
    revision: int
    ttl: int
    created_us: int
    updated_us: int

    def record(self) -> list:
        return [self.key, self.range_end, self.revision, self.ttl, self.created_us, self.updated_us]


def _name_key(name: str) -> bytes:
    return name.encode("utf-8")


def get(txn, db, name: str) -> Cursor | None:
    raw = txn.get(_name_key(name), db=db)
    return None if raw is None else Cursor(name, *layout.unpack_cursor(raw))


def put(txn, db, c: Cursor) -> None:
    txn.put(_name_key(c.name), layout.pack_cursor(c.record()), db=db)


def delete(txn, db, name: str) -> bool:
    return txn.delete(_name_key(name), db=db)


def count(txn, db) -> int:
    return txn.stat(db)["entries"]


def all_cursors(txn, db) -> list[Cursor]:
    """Every cursor, in name order (at most MAX_CURSORS: one short scan)."""
    return [Cursor(k.decode("utf-8"), *layout.unpack_cursor(v)) for k, v in txn.cursor(db=db).iternext()]


def oldest(txn, db) -> Cursor | None:
    """The cursor with the lowest revision (ties: the first name): what holds compaction back."""
    best = None
    for c in all_cursors(txn, db):
        if best is None or c.revision < best.revision:
            best = c
    return best


def now_us() -> int:
    return time.time_ns() // 1000


def info(txn, times_db, c: Cursor, current: int, at_us: int | None = None) -> dict:
    """A cursor as the wire shows it (SPEC.md 6.2), with its lag: `lag_revisions` = current -
    revision; `lag_seconds` = how long ago the oldest revision it has not consumed (revision + 1)
    was committed (0 when it is caught up; from the time index, so None for a revision the
    index does not date)."""
    at_us = now_us() if at_us is None else at_us
    lag_s: float | None = 0.0
    if c.revision < current:
        t = times.commit_time_of(txn, times_db, c.revision + 1)
        lag_s = None if t is None else round(max(0, at_us - t) / 1e6, 3)
    return {"name": c.name, "key": c.key, "range_end": c.range_end, "revision": c.revision, "ttl": c.ttl,
            "created_us": c.created_us, "updated_us": c.updated_us, "lag_revisions": current - c.revision,
            "lag_seconds": lag_s}




# -- the ops (Tx.cursor_* delegate here; r is normalized by zwatch.requests) --------------------

def op_put(tx, r: dict) -> dict:
    """Create or advance (and refresh) a cursor.  Creation: revision 0 = the current revision;
    one below compact_revision - 1 is COMPACTED (its consumer could not resume: the history it
    needs is gone); more than MAX_CURSORS is RESOURCE_EXHAUSTED.  Advance: the key range must be
    the cursor's own (INVALID_ARGUMENT otherwise); a revision at or below the cursor's (0
    included) leaves it where it is, so a retried or reordered put is harmless; the TTL is
    always replaced.  Any revision above the current one is FUTURE_REVISION."""
    db, current = tx.s._cursors, tx.current()
    name, rev = r["name"], r["revision"]
    if rev > current:
        raise FutureRevision("required revision is a future revision", current_revision=current)
    old = get(tx.lt, db, name)
    at = now_us()
    if old is None:
        if count(tx.lt, db) >= MAX_CURSORS:
            raise ResourceExhausted(f"too many cursors: at most {MAX_CURSORS} (delete unused ones: "
                                    f"`zwatch cursor del NAME`)")
        rev = rev or current
        if rev + 1 < tx.crev:
            raise Compacted(f"cursor {name!r} at revision {rev}: revisions below {tx.crev} have been compacted",
                            compact_revision=tx.crev)
        c = Cursor(name, r["key"], r["range_end"], rev, r["ttl"], at, at)
    else:
        if (old.key, old.range_end) != (r["key"], r["range_end"]):
            raise InvalidArgument(f"cursor {name!r} is over another key range (key {old.key!r}, "
                                  f"range_end {old.range_end!r}): a cursor's range never changes")
        c = old._replace(revision=max(old.revision, rev), ttl=r["ttl"], updated_us=at)
    put(tx.lt, db, c)
    return {"header": {"revision": current}, "cursor": info(tx.lt, tx.s._times, c, current, at),
            "created": old is None}


def op_get(tx, r: dict) -> dict:
    c = get(tx.lt, tx.s._cursors, r["name"])
    if c is None:
        raise CursorNotFound(f"cursor {r['name']!r} not found")
    current = tx.current()
    return {"header": {"revision": current}, "cursor": info(tx.lt, tx.s._times, c, current)}


def op_list(tx, r: dict, visible=None) -> dict:
    """Every cursor (visible(cursor) -> bool: those the asking user may read)."""
    current, at = tx.current(), now_us()
    return {"header": {"revision": current}, "cursors": [
        info(tx.lt, tx.s._times, c, current, at) for c in all_cursors(tx.lt, tx.s._cursors)
        if visible is None or visible(c)]}


def op_delete(tx, r: dict) -> dict:
    c = get(tx.lt, tx.s._cursors, r["name"])
    if c is None:
        raise CursorNotFound(f"cursor {r['name']!r} not found")
    current = tx.current()
    out = info(tx.lt, tx.s._times, c, current)
    delete(tx.lt, tx.s._cursors, r["name"])
    return {"header": {"revision": current}, "cursor": out}


def check_compact(tx, revision: int) -> None:
    """A compaction to `revision` removes every revision below it: refused (FAILED_PRECONDITION,
    reason CURSOR_HOLDS, naming the cursor) if the oldest cursor still needs one of them."""
    c = oldest(tx.lt, tx.s._cursors)
    if c is not None and revision > c.revision + 1:
        raise FailedPrecondition(
            f"compaction to {revision} would remove revisions cursor {c.name!r} has not consumed "
            f"(it is at revision {c.revision}: compact to {c.revision + 1} at most, or delete it)",
            reason=CURSOR_HOLDS, cursor=c.name, cursor_revision=c.revision)


__all__ = ["Cursor", "CURSOR_HOLDS", "get", "put", "delete", "count", "all_cursors", "oldest", "info", "now_us",
           "op_put", "op_get", "op_list", "op_delete", "check_compact"]
