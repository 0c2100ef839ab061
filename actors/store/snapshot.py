"""Snapshots: a consistent compacting copy of the store, pulled in chunks by `zwatch snapshot
save` through a fan-out (SPEC.md "Defrag, snapshots"), and what `snapshot status` reports.

A snapshot is the LMDB file py-lmdb's ``Environment.copyfd(fd, compact=True, txn=txn)`` writes
from one read txn: the revision read in that same txn is the snapshot's revision, exactly.  The
file is a valid data.mdb: restoring is copying it into an empty data dir (protocol/cli/snapshotcmd.py).

Snapshots (the syncer's registry) keeps each copy in a temp file named by its token until it has
been read to the end or has been idle for ``idle_s`` (60 s); a reader pulls ``read(token,
offset)`` chunks of at most CHUNK_BYTES, one reply per request, so the fan-out's one-reply routing
and flow control apply unchanged.

The copy and its sha256 run on one worker thread (``start``; results collected by ``finished``),
not on the syncer's loop: py-lmdb's copyfd and hashlib release the GIL, so the syncer keeps
serving every other client's reads and catch-ups meanwhile (a copy took ~0.9 s per 165 MB).  The
worker reads from its own read txn (py-lmdb opens envs with MDB_NOTLS: one txn per thread) and
holds its own shared swap lock (store/defrag.py) for the whole copy, taken by the caller while
it holds its own: no defrag swap can replace the file under it.

``status(path)``: {hash, revision, total_keys, total_size}, like etcdctl's snapshot status:
* hash: CRC-32 (IEEE, zlib.crc32) over, for each table in name order, its name then each of its
  (key, value) entries in LMDB order (key, then value): the logical content, independent of the
  page layout, so a store and its compacting copy hash the same.  (etcd hashes bucket names,
  keys and values the same way with CRC-32 Castagnoli; the figures are not comparable.)
* total_keys: entries in every table (etcd also counts every bucket's keys, not only user keys).
* total_size: the file's bytes.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import lmdb

from zwatch.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

from . import layout
from .defrag import SWAP_LOCK
from .tx import Tx

CHUNK_BYTES = 1 << 20                  # one snapshot_read reply's data, at most (fits MAX_RESPONSE_BYTES)
IDLE_S = 60.0                          # a snapshot nobody reads for this long is removed
MAX_SNAPSHOTS = 4                      # at once (each is a full copy on disk)
TOKEN_BYTES = 16                       # hex: 32 characters
PREFIX = "snapshot-"


class Snapshot:
    __slots__ = ("token", "path", "size", "revision", "sha256", "used")

    def __init__(self, token, path, size, revision, sha256, used):
        self.token, self.path, self.size, self.revision, self.sha256, self.used = \
            token, path, size, revision, sha256, used


def copy_store(store, directory: str) -> tuple[str, int, int, str]:
    """A compacting copy of store (a Store) in a temp file of directory, from one read txn.
    Returns (path, size, revision, sha256 hex)."""
    os.makedirs(directory, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=PREFIX, suffix=".mdb", dir=directory)
    try:
        try:
            with store.env.begin() as txn:
                revision = Tx(store, txn).rev
                store.env.copyfd(fd, compact=True, txn=txn)
            os.lseek(fd, 0, os.SEEK_SET)
            h = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except BaseException:
        _remove(path)
        raise
    return path, size, revision, h.hexdigest()


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Snapshots:
    """The syncer's snapshots in progress, by token."""

    def __init__(self, directory: str, idle_s: float = IDLE_S, clock=time.monotonic, notify=None):
        self.directory, self.idle_s, self.clock = directory, idle_s, clock
        self.by_token: dict[str, Snapshot] = {}
        self.notify = notify               # called on the worker thread after each copy (a wake-up)
        self.copying: list[list] = []      # [future, tag, lock fd] of copies started, not yet collected
        self._pool = None                  # one worker thread, made at the first start

    def _check_room(self):
        self.expire()
        if len(self.by_token) + len(self.copying) >= MAX_SNAPSHOTS:
            raise ResourceExhausted(f"{MAX_SNAPSHOTS} snapshots are being read already; retry later")

    def _add(self, path, size, revision, sha) -> Snapshot:
        snap = Snapshot(secrets.token_hex(TOKEN_BYTES), path, size, revision, sha, self.clock())
        self.by_token[snap.token] = snap
        return snap

    def begin(self, store) -> Snapshot:
        """A copy made on the caller's thread (tools and tests; the syncer uses start)."""
        self._check_room()
        return self._add(*copy_store(store, self.directory))

    def start(self, store, tag):
        """Copy store on the worker thread; ``finished`` returns (tag, Snapshot or exception) once
        done.  The caller holds the shared swap lock (a read of its own): the shared lock taken
        here on a new fd (flock is per open file) then stays held by the copy until it ends."""
        self._check_room()
        fd = os.open(os.path.join(store.path, SWAP_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="zwatch-snapshot")
            future = self._pool.submit(self._copy, store, fd)
        except BaseException:
            os.close(fd)
            raise
        self.copying.append([future, tag, fd])

    def _copy(self, store, lock_fd):
        try:
            return copy_store(store, self.directory)
        finally:
            os.close(lock_fd)              # releases the swap lock: a defrag may swap now
            if self.notify is not None:
                self.notify()

    def finished(self) -> list:
        """(tag, Snapshot or the exception the copy raised) of each copy done since the last call."""
        out = []
        for job in [j for j in self.copying if j[0].done()]:
            self.copying.remove(job)
            try:
                out.append((job[1], self._add(*job[0].result())))
            except Exception as exc:
                out.append((job[1], exc))
        return out

    def read(self, token: str, offset: int) -> bytes:
        """Up to CHUNK_BYTES from offset; the last chunk ends the snapshot (its file removed)."""
        snap = self.by_token.get(token)
        if snap is None:
            raise FailedPrecondition("no such snapshot (unknown token, read to its end, or idle for more "
                                     f"than {int(self.idle_s)} s and removed): begin a new one",
                                     reason="SNAPSHOT_NOT_FOUND")
        if offset > snap.size:
            raise InvalidArgument(f"offset {offset} is beyond the snapshot's {snap.size} bytes")
        snap.used = self.clock()
        with open(snap.path, "rb") as f:
            f.seek(offset)
            data = f.read(CHUNK_BYTES)
        if offset + len(data) >= snap.size:
            self.end(token)
        return data

    def end(self, token: str):
        snap = self.by_token.pop(token, None)
        if snap is not None:
            _remove(snap.path)

    def expire(self) -> int:
        now = self.clock()
        idle = [t for t, s in self.by_token.items() if now - s.used > self.idle_s]
        for t in idle:
            self.end(t)
        return len(idle)

    def close(self):
        """Waits for a copy in progress (it reads the store the caller closes next)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            for future, _, fd in self.copying:
                if future.cancelled():
                    os.close(fd)           # never ran: its lock fd is still ours
                elif future.exception() is None:
                    _remove(future.result()[0])
            self.copying = []
        for t in list(self.by_token):
            self.end(t)


def remove_leftovers(directory: str):
    """Temp files of snapshots a killed syncer left behind."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(PREFIX) and name.endswith(".mdb"):
            _remove(os.path.join(directory, name))


def status(path: str) -> dict:
    """{hash, revision, total_keys, total_size} of a snapshot file (or any data.mdb); opened
    read-only without a lock file.  InvalidArgument if it is not a zwatch store."""
    try:
        env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=16)
    except lmdb.Error as e:
        raise InvalidArgument(f"{path}: not an LMDB file ({e})") from None
    try:
        # A file cut short (an interrupted copy, a partial transfer) still opens: its meta pages
        # are at the start.  Reading a page past its end would kill the process with SIGBUS, so
        # the pages the last commit uses must all be in the file (audit finding).
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        size = os.path.getsize(path)
        if needed > size:
            raise InvalidArgument(f"{path}: truncated ({size} of {needed} bytes): not a whole snapshot")
        crc, total = 0, 0
        with env.begin() as txn:
            names = sorted(k for k, _ in txn.cursor())
            meta = None
            for name in names:
                try:
                    db = env.open_db(name, txn=txn, create=False)
                except lmdb.Error:             # a key of the main table that is not a table
                    continue
                if name == layout.META:
                    meta = db
                crc = zlib.crc32(name, crc)
                for k, v in txn.cursor(db=db):
                    crc = zlib.crc32(v, zlib.crc32(k, crc))
                    total += 1
            if meta is None or txn.get(layout.FORMAT_KEY, db=meta) != layout.pack_int(layout.FORMAT):
                raise InvalidArgument(f"{path}: not a zwatch store (format {layout.FORMAT})")
            revision = layout.meta_int(txn, meta, layout.CURRENT_REV)
        return {"hash": crc, "revision": revision, "total_keys": total, "total_size": os.path.getsize(path)}
    finally:
        env.close()


def bump_revision(data_dir: str, bump: int) -> tuple[int, int]:
    """After a restore (etcd 3.5's `etcdutl snapshot restore --bump-revision N --mark-compacted`):
    the current revision jumps by `bump` and becomes the compact revision, so revisions never go
    backwards for a client that saw writes after the snapshot (if bump exceeds them), and every
    watch resumed from an old revision is canceled COMPACTED: its client re-lists instead of
    silently missing the writes the restore dropped.  The writer removes the old records at its
    next start (an unfinished physical compaction resumes).  Returns (old, new) revision."""
    from .store import Store                   # here: the CLI's status/restore need only lmdb
    store = Store(data_dir)
    try:
        txn = store.env.begin(write=True)
        try:
            old = layout.meta_int(txn, store._meta, layout.CURRENT_REV)
            new = old + bump
            done, _ = layout.unpack_compact_done(txn.get(layout.COMPACT_DONE, db=store._meta))
            txn.put(layout.CURRENT_REV, layout.pack_int(new), db=store._meta)
            txn.put(layout.COMPACT_REV, layout.pack_int(new), db=store._meta)
            txn.put(layout.COMPACT_DONE, layout.pack_compact_done(done), db=store._meta)
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return old, new
    finally:
        store.close()
