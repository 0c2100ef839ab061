"""Key index of watch specs: exact keys in a dict, ranges in an interval tree.

Matching one key costs O(1) for exact watchers and O(log R + matches) for R distinct ranges
(an augmented, implicitly balanced tree over the ranges sorted by start, with each node's
subtree max end).  The tree is rebuilt lazily, at most once per lookup after a change, which
is cheap because watch specs change far less often than events arrive (and identical specs
share one entry).
"""
from __future__ import annotations



class KeyIndex:
    """Items by spec.  The containers it hands out (items(), match()) are for reading only:
    a tuple or a list.  Items must not be lists (an exact key's lone item is held bare)."""
    __slots__ = ("exact", "ranges", "_starts", "_ends", "_items", "_maxend", "_dirty")

    def __init__(self):
        self.exact: dict = {}      # key -> its one item (bare), or a list of two or more
        self.ranges: dict[tuple[bytes, bytes], list] = {}
        self._starts: list[bytes] = []
        self._ends: list[bytes] = []
        self._items: list[list] = []
        self._maxend: list[bytes] = []
        self._dirty = False

    def __len__(self):
        return (sum(len(v) if type(v) is list else 1 for v in self.exact.values())
                + sum(map(len, self.ranges.values())))

    def add(self, key: bytes, end: bytes | None, item) -> None:
        if end is None:
            # A key's only item is the dict's value itself (no container: a 1-tuple would
            # cost 48 bytes more per key, and most exact keys have one watcher or group).
            # A second one makes it a list.
            hit = self.exact.get(key)
            if hit is None:
                self.exact[key] = item
            elif type(hit) is list:
                hit.append(item)
            else:
                self.exact[key] = [hit, item]
        else:
            self.ranges.setdefault((key, end), []).append(item)
            self._dirty = True

    def remove(self, key: bytes, end: bytes | None, item) -> None:
        if end is None:
            hit = self.exact.get(key)
            if hit is None:
                return
            if type(hit) is not list:
                if hit is item or hit == item:
                    del self.exact[key]
                return
            try:
                hit.remove(item)
            except ValueError:
                return
            if len(hit) == 1:
                self.exact[key] = hit[0]    # alone again: held bare
            return
        k = (key, end)
        items = self.ranges.get(k)
        if items is None:
            return
        try:
            items.remove(item)
        except ValueError:
            return
        if not items:
            del self.ranges[k]
            self._dirty = True

    def items(self, key: bytes, end: bytes | None) -> list:
        """The items registered under exactly this spec (empty if none)."""
        if end is None:
            hit = self.exact.get(key)
            if hit is None:
                return []
            return hit if type(hit) is list else (hit,)
        hit = self.ranges.get((key, end))
        return hit if hit is not None else []

    def all_items(self):
        for items in self.exact.values():
            if type(items) is list:
                yield from items
            else:
                yield items
        for items in self.ranges.values():
            yield from items

    def _rebuild(self):
        pairs = sorted(self.ranges.items())
        self._starts = [k[0] for k, _ in pairs]
        self._ends = [k[1] for k, _ in pairs]
        self._items = [v for _, v in pairs]
        n = len(pairs)
        self._maxend = list(self._ends)

        # Post-order fill of max end over the implicit tree rooted at mid of [lo, hi).
        def fill(lo, hi):
            if lo >= hi:
                return b""
            mid = (lo + hi) >> 1
            m = max(self._ends[mid], fill(lo, mid), fill(mid + 1, hi))
            self._maxend[mid] = m
            return m

        fill(0, n)
        self._dirty = False

    def match(self, key: bytes) -> list:
        """Every item whose spec contains key (lists of items, one list per spec)."""
        out = []
        hit = self.exact.get(key)
        if hit is not None:
            out.append(hit if type(hit) is list else (hit,))
        if self.ranges:
            if self._dirty:
                self._rebuild()
            starts, ends, maxend, items = self._starts, self._ends, self._maxend, self._items
            # Walk the same implicit tree the max ends were built over.  A subtree whose max end
            # is <= key holds no match; a node starting after key rules out its right subtree.
            stack = [(0, len(starts))]
            while stack:
                lo, hi = stack.pop()
                if lo >= hi:
                    continue
                mid = (lo + hi) >> 1
                if maxend[mid] <= key:
                    continue
                stack.append((lo, mid))
                if starts[mid] <= key:
                    if ends[mid] > key:
                        out.append(items[mid])
                    stack.append((mid + 1, hi))
        return out
