"""Give back the LMDB map pages a long replay touched (Linux; elsewhere a no-op).

A scan of the whole history maps every page of data.mdb into the syncer: its anonymous memory
stays flat (~18 MB on a 1M-revision store), but its RSS counts every mapped file page (248 MB
after one scan of a 230 MB file), as if it were the process's own.  madvise(MADV_DONTNEED) on a
shared, read-only file mapping only unmaps: the pages stay in the page cache (nothing is read
from disk again, nothing is lost: the syncer never writes through its map), and the next read
of a page maps it back with a minor fault.  So after every RELEASE_RECORDS records replayed the
syncer unmaps its pages of data.mdb, and its RSS stays bounded by what one stretch of replay
touches, whatever the size of the history.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

MADV_DONTNEED = 4
# Records replayed between two releases (10 chunks, ~20 ms of scanning).  On 1M revisions (230 MB
# of data.mdb) a full scan peaks at 64 MB of file pages instead of 246 MB, for ~10% more scan
# time (0.89 -> 0.97 s: pages mapped back by minor faults); every 100,000 records peaks at 160 MB (the
# kernel maps 64 KiB around each fault, and a stretch of history is spread over the file).
RELEASE_RECORDS = 20_000

_madvise = None


def _libc_madvise():
    global _madvise
    if _madvise is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.madvise
            fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            fn.restype = ctypes.c_int
            _madvise = fn
        except (OSError, AttributeError):
            _madvise = False
    return _madvise


def mappings_of(path: str, maps: str = "/proc/self/maps") -> list[tuple[int, int]]:
    """(start, end) of every mapping of the file `path` in this process."""
    real = os.path.realpath(path)
    out = []
    try:
        with open(maps) as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].rstrip("\n") == real:
                    lo, hi = parts[0].split("-")
                    out.append((int(lo, 16), int(hi, 16)))
    except OSError:
        return []
    return out


def release(path: str) -> int:
    """Unmap this process's pages of the file `path` (MADV_DONTNEED) -> bytes of mappings
    advised; 0 where it cannot be done (no /proc, no libc madvise)."""
    fn = _libc_madvise()
    if not fn:
        return 0
    done = 0
    for lo, hi in mappings_of(path):
        if fn(lo, hi - lo, MADV_DONTNEED) == 0:
            done += hi - lo
    return done


class Releaser:
    """Counts the records a replay read; past RELEASE_RECORDS since the last release, releases
    the map's pages (checked after each chunk and at the end of a batch)."""

    def __init__(self, path: str, every: int = RELEASE_RECORDS):
        self.path, self.every = path, every
        self.since = 0
        self.releases = 0

    def read(self, records: int, batch_done: bool = False) -> bool:
        self.since += records
        if self.since >= self.every or (batch_done and self.since >= self.every // 10):
            self.since = 0
            if release(self.path):
                self.releases += 1
                return True
        return False
