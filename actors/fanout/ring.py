"""The ring: the fan-out's most recent revisions, for watchers a little behind the live stream.

Invariant: the revisions held are contiguous and end at the fan-out's `last_seen` (a publish
gap clears it).  Bounded twice: at most `max_revisions` revisions and at most `max_bytes` of
keys, values and previous values (big values must not make it grow without bound, issue #8.6);
the oldest revisions go first.
"""
from __future__ import annotations

from collections import deque

EVENT_OVERHEAD = 64       # bytes counted per event on top of its keys and values


def revision_bytes(events) -> int:
    """What a revision costs the ring: its keys, values and previous values, plus overhead."""
    n = 0
    for _t, kv, prev in events:
        n += EVENT_OVERHEAD + len(kv[0]) + len(kv[4])
        if prev is not None:
            n += len(prev[0]) + len(prev[4])
    return n


class Ring:
    __slots__ = ("max_revisions", "max_bytes", "revisions", "sizes", "bytes")

    def __init__(self, max_revisions: int, max_bytes: int):
        self.max_revisions = max_revisions
        self.max_bytes = max_bytes
        self.revisions: deque[tuple[int, list]] = deque()   # (revision, [[type, kv, prev_kv|None], ...])
        self.sizes: deque[int] = deque()                    # revision_bytes() of each
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.revisions)

    def __iter__(self):
        return iter(self.revisions)

    def __getitem__(self, i):
        return self.revisions[i]

    def extend(self, revs) -> None:
        for r in revs:
            n = revision_bytes(r[1])
            self.revisions.append(r)
            self.sizes.append(n)
            self.bytes += n
        while self.revisions and (len(self.revisions) > self.max_revisions or self.bytes > self.max_bytes):
            self.revisions.popleft()
            self.bytes -= self.sizes.popleft()

    def clear(self) -> None:
        self.revisions.clear()
        self.sizes.clear()
        self.bytes = 0

    def covers(self, revision: int) -> bool:
        """True if every revision from `revision` to the end is held."""
        return bool(self.revisions) and self.revisions[0][0] <= revision

    def since(self, revision: int):
        """The held revisions >= revision, oldest first (covers(revision) must hold)."""
        base = self.revisions[0][0]
        for i in range(revision - base, len(self.revisions)):
            yield self.revisions[i]
