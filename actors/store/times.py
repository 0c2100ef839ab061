"""The time index: when each revision was committed (issue #12), in the store's ``times`` db.

The writer records, in the same LMDB transaction as each group commit, its last revision ->
the commit time (8-byte BE revision -> 8-byte BE microseconds since the Unix epoch, the writer's
wall clock).  A revision's commit time is that of the first entry at or above it (one entry per
group commit, so many revisions each).  Compaction prunes the entries below the compact revision
in its own chunks' transactions, so the index stays as long as the history it describes.

Readers: the syncer's `sync.batch` (`lag_s`: the age of a batch's oldest start revision) and
"first revision committed at or after T" (operators: "what changed since 10:00?").  A store
written before the index has an empty db (created on open): lookups answer None.

Invariant: keys only grow; times do not decrease unless the writer's clock stepped back (a
lookup by time then answers one of the revisions around the step, never an error).
"""
from __future__ import annotations

from .layout import Q


def record(txn, db, last_revision: int, commit_us: int) -> None:
    """In the group commit's txn: revisions up to last_revision were committed at commit_us."""
    if db is not None:
        txn.put(Q.pack(last_revision), Q.pack(commit_us), db=db)


def commit_time_of(txn, db, revision: int) -> int | None:
    """Commit time (µs) of `revision`: that of the first entry at or above it.  None if the
    index does not know it (newer than the last entry, or empty).  A revision older than the
    first entry (pruned, or from before the index existed) gets the first entry's time: its age
    is at least that (a lower bound, as for a fan-out's own map)."""
    if db is None:
        return None
    cur = txn.cursor(db=db)
    if not cur.set_range(Q.pack(revision)):
        return None
    return Q.unpack(cur.value())[0]


def first_revision_at_or_after(txn, db, t_us: int) -> int | None:
    """The first revision committed at or after t_us; None if none is (or the index is empty).
    Nothing before the first entry is known: the answer is at least the first entry's revision.

    Bisection over revisions, one seek per step (times grow with revisions): for r, the first
    entry at or above r is r's group commit; the answer is the smallest r whose commit is at or
    after t_us."""
    if db is None:
        return None
    cur = txn.cursor(db=db)
    if not cur.last() or Q.unpack(cur.value())[0] < t_us:
        return None
    hi = Q.unpack(cur.key())[0]
    cur.first()
    lo = Q.unpack(cur.key())[0]
    while lo < hi:
        mid = (lo + hi) // 2
        cur.set_range(Q.pack(mid))
        if Q.unpack(cur.value())[0] >= t_us:
            hi = mid
        else:
            lo = mid + 1
    return lo


def revision_at_time(txn, db, t_us: int, current: int, compact: int, now_us: int) -> dict:
    """SPEC.md "revision_at_time" on one snapshot (current / compact: its revisions).

    revision: the first revision committed at or after t_us; current + 1 when none is yet.
    When t_us is at or before the oldest commit the index dates, the index cannot say which
    of the revisions up to that commit's group came at or after t_us: on a store never
    compacted that is every revision from the first (2), exact; on a compacted one the answer
    needs history that is gone, so it is the compact revision with compacted true.  compacted
    is also true when the exact answer is below the compact revision (a watch from it would be
    canceled, a read at it refused).  future: t_us is later than now_us (the server's clock),
    so revisions not committed yet may still belong before it."""
    out = {"revision": current + 1, "compact_revision": compact, "compacted": False,
           "future": t_us > now_us, "commit_time_us": None}
    if db is None:
        return out
    cur = txn.cursor(db=db)
    if not cur.first():
        return out                         # nothing dated: nothing committed since the index
    oldest_us = Q.unpack(cur.value())[0]
    if t_us <= oldest_us:
        if compact >= 2:
            out.update(revision=compact, compacted=True)
        else:
            out["revision"] = 2
    else:
        rev = first_revision_at_or_after(txn, db, t_us)
        if rev is None:
            return out
        out.update(revision=rev, compacted=rev < compact)
    if out["revision"] <= current:
        out["commit_time_us"] = commit_time_of(txn, db, out["revision"])
    return out


def prune(txn, db, below: int, limit: int = 10_000) -> int:
    """Delete at most `limit` entries whose revision is below `below` (the compact revision: the
    entry covering it stays).  Returns how many went."""
    if db is None:
        return 0
    cur = txn.cursor(db=db)
    removed = 0
    if not cur.first():
        return 0
    while removed < limit:
        k = cur.key()                      # b"" once the last entry went
        if not k or Q.unpack(k)[0] >= below:
            break
        cur.delete()                       # moves on to the next entry
        removed += 1
    return removed


__all__ = ["record", "commit_time_of", "first_revision_at_or_after", "revision_at_time", "prune"]
