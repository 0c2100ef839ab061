"""The lease clock: which lease expires when.  I/O-free; the writer is its only owner.

The persistent half of a lease (its ID, granted TTL and attached keys) lives in LMDB
(store/tx.py); this half holds each lease's deadline in memory, in monotonic seconds the caller
passes in (``now``), so tests drive it with a fake clock.  Keep-alives only move a deadline:
they cost no write and no fsync (etcd does not persist them either).

Invariants:

* every granted lease in the store has exactly one deadline here (the writer restores them all
  at start, each with its FULL TTL again, as etcd's new leader does: a restart never makes a
  lease expire early);
* a lease whose deadline has passed is dead: a keep-alive for it answers TTL 0 and does not
  revive it; ``expired`` hands it out once for revoking (``requeue`` hands it back if the revoke
  could not be committed).  "Passed" is judged against when a keep-alive may have arrived, not
  when it was read: one that waited in the writer's queue since before the deadline (the writer
  was busy committing) counts (``keepalive_queued``);
* the heap holds at most one live entry per lease (``_entry`` says which: its time): a
  keep-alive does not push, a popped entry whose lease has a later deadline is pushed back with
  it; entries of forgotten or re-granted leases are dropped when popped, and the heap is rebuilt once they outnumber the leases, so granting and
  revoking long-TTL leases forever cannot grow it.
"""
from __future__ import annotations

import heapq
import math


class Lessor:
    __slots__ = ("granted", "deadline", "_heap", "_entry", "_revoking", "_stale")

    def __init__(self):
        self.granted: dict[int, int] = {}      # lease ID -> granted TTL (s)
        self.deadline: dict[int, float] = {}   # lease ID -> monotonic deadline
        self._heap: list[tuple[float, int]] = []
        self._entry: dict[int, float] = {}     # lease ID -> the time of its one live heap entry
        self._revoking: set[int] = set()       # handed out by expired(), not yet forgotten
        self._stale = 0                        # heap entries of forgotten leases (an upper bound)

    def __len__(self) -> int:
        return len(self.granted)

    def restore(self, leases, now: float):
        """leases: [(ID, granted TTL)] from the store; every one gets its full TTL from now."""
        for lease_id, ttl in leases:
            self.grant(lease_id, ttl, now)

    def grant(self, lease_id: int, ttl: int, now: float):
        if lease_id in self._entry:            # re-granted without a forget: its old entry is stale
            self._stale += 1
        self.granted[lease_id] = ttl
        self.deadline[lease_id] = self._entry[lease_id] = now + ttl
        self._revoking.discard(lease_id)
        heapq.heappush(self._heap, (now + ttl, lease_id))

    def keepalive(self, lease_id: int, now: float) -> int:
        """The lease's TTL after renewing it; 0 if it is unknown or already past its deadline."""
        ttl = self.granted.get(lease_id)
        if ttl is None or lease_id in self._revoking or self.deadline[lease_id] <= now:
            return 0
        self.deadline[lease_id] = now + ttl
        return ttl

    def keepalive_queued(self, lease_id: int, queued_since: float):
        """A keep-alive just read that has been waiting at most since `queued_since` (the last
        moment its reader saw nothing queued): it may have arrived before the deadline, so a lease
        still alive at that moment is renewed from it (never shortened, never revived).  The reply
        is then keepalive(..., now), as for any keep-alive."""
        ttl = self.granted.get(lease_id)
        if ttl is None or lease_id in self._revoking or self.deadline[lease_id] <= queued_since:
            return
        self.deadline[lease_id] = max(self.deadline[lease_id], queued_since + ttl)

    def remaining(self, lease_id: int, now: float) -> int:
        """Whole seconds left (etcd truncates), 0 once past the deadline; -1 if unknown."""
        d = self.deadline.get(lease_id)
        if d is None:
            return -1
        return max(0, int(d - now))

    def forget(self, lease_id: int):
        """Revoked (by a client or by expiry): the heap entry, if any, is dropped when popped."""
        self.granted.pop(lease_id, None)
        if self._entry.pop(lease_id, None) is not None:
            self._stale += 1                   # its heap entry stays until popped (or rebuilt)
        self.deadline.pop(lease_id, None)
        self._revoking.discard(lease_id)
        if self._stale > 1024 and self._stale > len(self.granted):
            self._heap = [(d, i) for i, d in self.deadline.items() if i not in self._revoking]
            heapq.heapify(self._heap)
            self._entry = {i: d for d, i in self._heap}
            self._stale = 0

    def next_deadline(self) -> float:
        """The earliest deadline (maybe of an entry a keep-alive has since moved), or inf."""
        return self._heap[0][0] if self._heap else math.inf

    def expired(self, now: float, limit: int) -> list[int]:
        """Up to `limit` leases past their deadline, earliest first, to be revoked now."""
        out: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(out) < limit:
            t, lease_id = heapq.heappop(heap)
            if self._entry.get(lease_id) != t:
                continue                       # stale: forgotten, re-granted, or handed out
            d = self.deadline[lease_id]
            if d > now:
                heapq.heappush(heap, (d, lease_id))   # kept alive since: its real deadline
                self._entry[lease_id] = d
                continue
            del self._entry[lease_id]
            self._revoking.add(lease_id)
            out.append(lease_id)
        return out

    def requeue(self, lease_ids, now: float):
        """Revokes that could not be committed (storage fault): hand them out again."""
        for lease_id in lease_ids:
            if lease_id in self._revoking:
                self._revoking.discard(lease_id)
                heapq.heappush(self._heap, (now, lease_id))
                self._entry[lease_id] = now

    def ids(self) -> list[int]:
        return list(self.granted)
