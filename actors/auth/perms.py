"""A user's key-range permissions, merged (etcd's range_perm_cache.go, without its interval tree).

etcd inserts each permission of each of the user's roles into one interval tree per type and
asks ``Contains`` (the union covers the whole range) for a range and ``Intersects`` for a single
key.  The same answers come from the union itself: the intervals of one type, sorted and merged
(overlapping or touching ones joined), are disjoint, so a range is covered by the union iff ONE
merged interval covers it, and a key is in the union iff the merged interval starting at or before
it reaches past it.  Each check is a binary search: its cost grows with log(permissions), and a
watch checks once per change of its user's permissions, never per event.

Intervals are half-open [start, end) over byte strings (Python compares bytes as etcd does);
end None is +infinity.  A permission in etcd's wire form (key, range_end):

* range_end b""      -> the single key: [key, key + b"\\x00") (no key sorts between them);
* range_end b"\\x00" -> from key to the end: [key, +inf);
* else               -> [key, range_end), nothing at all when range_end <= key.

READWRITE grants both READ and WRITE.  A query in the same wire form: range_end b"" is a point
check of key; b"\\x00" is [key, +inf) (etcd's from-key: GHSA-xg4h-6gfc-h4m8 was such a watch
passing a check of its key alone); an empty range (range_end <= key) is checked as the point key,
so it can never pass where the key itself would not.
"""
from __future__ import annotations

from bisect import bisect_right

READ, WRITE, READWRITE = "READ", "WRITE", "READWRITE"
PERM_TYPES = (READ, WRITE, READWRITE)
FROM_KEY = b"\x00"


def perm_interval(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None] | None:
    """A permission's (key, range_end) -> [start, end) (end None: +inf), or None when it holds
    no key."""
    if range_end == b"":
        return key, key + b"\x00"
    if range_end == FROM_KEY:
        return key, None
    if range_end <= key:
        return None
    return key, range_end


def merge(intervals) -> tuple[tuple[bytes, ...], tuple[bytes | None, ...]]:
    """Intervals [start, end) -> the starts and ends of their union as disjoint intervals in
    order, overlapping and touching ones joined."""
    starts: list[bytes] = []
    ends: list[bytes | None] = []
    for start, end in sorted(intervals, key=lambda iv: (iv[0], iv[1] is None, iv[1] or b"")):
        if starts and (ends[-1] is None or start <= ends[-1]):
            if ends[-1] is not None and (end is None or end > ends[-1]):
                ends[-1] = end
            continue
        starts.append(start)
        ends.append(end)
    return tuple(starts), tuple(ends)


class _Union:
    """The merged intervals of one permission type."""

    __slots__ = ("starts", "ends")

    def __init__(self, intervals):
        self.starts, self.ends = merge(intervals)

    def covers(self, key: bytes, range_end: bytes) -> bool:
        i = bisect_right(self.starts, key) - 1        # the last interval starting at or before key
        if i < 0:
            return False
        end = self.ends[i]
        if end is None:
            return True
        if range_end == FROM_KEY:                      # [key, +inf) needs an unbounded interval
            return False
        if range_end == b"" or range_end <= key:       # a point (an empty range is its key)
            return key < end
        return range_end <= end

    def __len__(self):
        return len(self.starts)

    def intervals(self) -> list[tuple[bytes, bytes | None]]:
        return list(zip(self.starts, self.ends))


class RangePerms:
    """Immutable: what one user may read and write."""

    __slots__ = ("read", "write")

    def __init__(self, read: _Union, write: _Union):
        self.read = read
        self.write = write

    @classmethod
    def build(cls, perms) -> "RangePerms":
        """perms: iterable of [permType, key, range_end] (every role of the user together)."""
        read, write = [], []
        for perm_type, key, range_end in perms:
            if perm_type not in PERM_TYPES:
                raise ValueError(f"unknown permission type {perm_type!r}")
            iv = perm_interval(key, range_end)
            if iv is None:
                continue
            if perm_type != WRITE:
                read.append(iv)
            if perm_type != READ:
                write.append(iv)
        return cls(_Union(read), _Union(write))

    def can_read(self, key: bytes, range_end: bytes = b"") -> bool:
        return self.read.covers(key, range_end)

    def can_write(self, key: bytes, range_end: bytes = b"") -> bool:
        return self.write.covers(key, range_end)

    def allows(self, kind: str, key: bytes, range_end: bytes = b"") -> bool:
        """kind READ or WRITE."""
        return (self.read if kind == READ else self.write).covers(key, range_end)

    def __repr__(self):
        return f"RangePerms(read={self.read.intervals()!r}, write={self.write.intervals()!r})"


# Root: every key, both types (b"" is below every key, None above).
ALLOW_ALL = RangePerms.build([[READWRITE, b"", FROM_KEY]])
# A user without any permission.
DENY_ALL = RangePerms.build([])
