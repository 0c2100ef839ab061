"""Physical compaction, in bounded chunks, each its own write txn (the writer runs one between
batches, so a huge compaction never stalls writes).

Logical compaction (Tx.compact) only moves meta's compact_rev and restarts compact_done's resume
key; this module then removes, key by key, every record no read at or above compact_rev can see.

Invariants: a chunk's work (keys visited + records removed) is bounded by its budget, and every
visit removes at least one record or moves on a key, so compaction always progresses; each key
keeps its latest record as of the target, except a tombstone older than the target (etcd
#18089); a crash between chunks resumes from the key stored in compact_done.
"""
from __future__ import annotations

from . import layout, times
from .layout import Q, TOMB, latest_dup


def pending(txn, meta) -> tuple[int, int]:
    """(revision physical compaction is done up to, logical compact revision): done < target
    means a compaction is unfinished (a crash, or still running)."""
    done, _ = layout.unpack_compact_done(txn.get(layout.COMPACT_DONE, db=meta))
    return done, layout.meta_int(txn, meta, layout.COMPACT_REV)


def compact_chunk(store, txn, budget: int, figures: dict | None = None):
    """Returns None if nothing is pending, else whether more remains after this chunk.
    figures: {"keys": n, "records": n} incremented by the keys visited and records removed."""
    meta = store._meta
    target = layout.meta_int(txn, meta, layout.COMPACT_REV)
    done, resume = layout.unpack_compact_done(txn.get(layout.COMPACT_DONE, db=meta))
    if done >= target:
        return None
    figures = figures if figures is not None else {"keys": 0, "records": 0}
    resume = _compact_keys(store, txn, target, resume, budget, figures)
    times.prune(txn, getattr(store, "_times", None), target, max(1, budget))   # the time index follows the history
    state = layout.pack_compact_done(done, resume) if resume else layout.pack_compact_done(target)
    txn.put(layout.COMPACT_DONE, state, db=meta)
    return resume is not None


def _compact_keys(store, txn, target: int, resume: bytes, budget: int, figures: dict):
    """Keep each key's latest record as of target (a tombstone only if exactly at target, etcd
    #18089), drop its older records from keyrev and history.  Returns the key to resume from."""
    cur = txn.cursor(db=store._keyrev)
    ok = cur.set_range(resume) if resume else cur.first()
    while ok:
        k = cur.key()
        if budget <= 0:
            return k
        budget -= 1
        figures["keys"] += 1
        last = latest_dup(cur, target)
        if last is not None:
            drop_last = last[16:] == TOMB and Q.unpack_from(last)[0] < target
            stop = last + b"\x01" if drop_last else last   # delete every dup < stop
            cur.set_key(k)
            while cur.value() < stop:  # at least one removal per visit: always progress
                txn.delete(cur.value()[:16], db=store._history)
                cur.delete()           # moves to the next dup, or on to the next key
                budget -= 1
                figures["records"] += 1
                if cur.key() != k:
                    break
                if budget <= 0 and cur.value() < stop:
                    return k           # a hot key may take several chunks
        ok = cur.set_range(k) and (cur.key() != k or cur.next_nodup())
    return None
