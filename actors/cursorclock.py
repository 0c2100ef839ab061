"""The cursor clock: when each durable cursor expires (SPEC.md 6.2).  I/O-free; the writer owns it.

The persistent half of a cursor (range, revision, TTL) is in LMDB (store/cursors.py); this half
holds each cursor's deadline in monotonic seconds the caller passes in (``now``), so tests drive
it with a fake clock, and each cursor's revision, so that the oldest one is known without a
read (metrics, writer.stats).

Invariants:

* every cursor in the store has exactly one deadline here (the writer restores them all at
  start, each with its FULL TTL again, as it does leases: a restart never makes a cursor expire
  early);
* a cursor_put (create, advance or refresh) moves the deadline to now + ttl;
* ``expired`` hands out each cursor past its deadline once (the writer drops it in its next
  commit, then calls ``forget``); ``requeue`` hands it back if that commit failed;
* the heap holds stale entries for cursors refreshed since (skipped when popped) and is rebuilt
  once they outnumber the cursors, so refreshing forever cannot grow it.
"""
from __future__ import annotations

import heapq
import math


class CursorClock:
    __slots__ = ("deadline", "revision", "ttl", "_heap", "_expiring", "oldest_revision", "oldest_name")

    def __init__(self):
        self.deadline: dict[str, float] = {}
        self.revision: dict[str, int] = {}
        self.ttl: dict[str, int] = {}
        self._heap: list[tuple[float, str]] = []
        self._expiring: set[str] = set()
        # The cursor holding compaction back (lowest revision), refreshed on each change: plain
        # values the metrics thread may read at any time.
        self.oldest_revision: int | None = None
        self.oldest_name: str | None = None

    def __len__(self) -> int:
        return len(self.deadline)

    def restore(self, items, now: float):
        """items: [(name, revision, ttl)] from the store; each gets its full TTL from now."""
        for name, revision, ttl in items:
            self.touch(name, revision, ttl, now)

    def touch(self, name: str, revision: int, ttl: int, now: float):
        """A cursor_put committed: the cursor's revision and TTL, its deadline now + ttl."""
        self.deadline[name] = now + ttl
        self.revision[name] = revision
        self.ttl[name] = ttl
        self._expiring.discard(name)
        heapq.heappush(self._heap, (now + ttl, name))
        if len(self._heap) > 2 * len(self.deadline) + 64:
            self._heap = [(d, n) for n, d in self.deadline.items()]
            heapq.heapify(self._heap)
        # O(1) unless the oldest itself moved (then one pass over the cursors, at most MAX_CURSORS).
        if name == self.oldest_name:
            self._refresh_oldest()
        elif self.oldest_revision is None or (revision, name) < (self.oldest_revision, self.oldest_name):
            self.oldest_name, self.oldest_revision = name, revision

    def forget(self, name: str):
        """Deleted (by a client or by its expiry)."""
        self.deadline.pop(name, None)
        self.revision.pop(name, None)
        self.ttl.pop(name, None)
        self._expiring.discard(name)
        if name == self.oldest_name:
            self._refresh_oldest()

    def remaining(self, name: str, now: float) -> int:
        """Whole seconds before it expires (0 once due); -1 if unknown."""
        d = self.deadline.get(name)
        return -1 if d is None else max(0, int(d - now))

    def next_deadline(self) -> float:
        """The earliest deadline not yet handed out (inf: none)."""
        while self._heap:
            d, name = self._heap[0]
            if self.deadline.get(name) == d and name not in self._expiring:
                return d
            heapq.heappop(self._heap)      # stale: refreshed, forgotten or being expired
        return math.inf

    def expired(self, now: float, limit: int = 100) -> list[str]:
        """Cursors past their deadline, at most `limit`, each handed out once."""
        out = []
        while len(out) < limit and self.next_deadline() <= now:
            _, name = heapq.heappop(self._heap)
            self._expiring.add(name)
            out.append(name)
        return out

    def requeue(self, names, now: float):
        """Their drop could not be committed: due again at once."""
        for name in names:
            if name in self._expiring:
                self._expiring.discard(name)
                self.deadline[name] = now
                heapq.heappush(self._heap, (now, name))

    def _refresh_oldest(self):
        if self.revision:
            name = min(self.revision, key=lambda n: (self.revision[n], n))
            self.oldest_name, self.oldest_revision = name, self.revision[name]
        else:
            self.oldest_name, self.oldest_revision = None, None
