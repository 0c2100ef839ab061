"""Online defrag: a compacting copy of the LMDB file swapped in for the live one while serving
(SPEC.md "Defrag, snapshots"; docs/operations.md "Defrag, snapshots, restore").

LMDB never shrinks data.mdb: pages freed by compaction and deletes are reused, never given back.
py-lmdb's ``Environment.copyfd(fd, compact=True)`` (mdb_env_copyfd2 with MDB_CP_COMPACT) writes
only the pages the last commit reaches, renumbered, from one read txn: a consistent image.

Why the swap is sound (LMDB's docs and mdb.c):
* lock.mdb holds the reader table and the last txn id of ONE data file: the first opener
  (mdb_env_setup_locks: open O_CREAT, exclusive fcntl lock won = nobody uses it) copies the data
  file's meta txnid into it (mdb_env_share_locks: mti_txnid = me_meta->mm_txnid), and a read
  txn takes its snapshot's txnid there and picks the meta page by it (mdb_txn_renew0).  A lock
  file shared by two data files would make readers of one pick the other's meta, and let the
  writer reuse pages it cannot see are read.  So the old lock.mdb is unlinked before the new
  data.mdb takes the name, and the writer's new env creates (and initialises) a fresh one.
* A reader (the syncer) that still has the old env open keeps the old inodes (unlinked, still
  mapped) and its old lock file until it closes them: its snapshots are the old file, whole.
* swap.lock (flock) orders the swap against a reader's (re)open: the writer holds it exclusive
  from closing its env until its new env is open; a reader opens under a shared one, so it never
  opens the old data.mdb with a lock.mdb that is about to belong to the new one (or vice versa).
* LMDB's caveat "do not have the same database open twice in one process" (closing one fd drops
  the process's fcntl locks on that file): a reader closes its old env before opening the new one.
* Crash safety: the copy is fsynced (file, then directory) before the rename; rename(2) is atomic,
  so data.mdb is always one whole file, the old or the copy, and the copy holds every commit (the
  writer's loop is single-threaded: no commit happens between the copy and the swap).  A
  leftover ``defrag-*.tmp`` (killed before the rename) is removed at the next start.

Test hook (not a setting: tests only): ZW_TEST_DEFRAG_KILL_AT=<step> SIGKILLs the process at that step (crash tests):
``copied`` (copy fsynced, nothing swapped), ``unlinked`` (env closed, lock.mdb gone),
``renamed`` (the copy is data.mdb, the env not reopened).
"""
from __future__ import annotations

import fcntl
import os
import signal
import tempfile
import time
from contextlib import contextmanager

DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
SWAP_LOCK = "swap.lock"
TMP_PREFIX = "defrag-"
TMP_SUFFIX = ".tmp"
KILL_AT_ENV = "ZW_TEST_DEFRAG_KILL_AT"


def _kill_point(step: str):
    """A crash test's SIGKILL at `step` (never set outside tests)."""
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: str):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def swap_lock(data_dir: str, exclusive: bool):
    """flock on DATA_DIR/swap.lock: exclusive for the swap, shared for a reader's (re)open.
    Released by the kernel if the holder dies, so a crashed writer never blocks a reader."""
    fd = os.open(os.path.join(data_dir, SWAP_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)                       # releases the flock


def identity(data_dir: str):
    """(data.mdb's (dev, inode), lock.mdb's (dev, inode) or None): what a reader opened.  Two
    os.stat calls, no LMDB call: cheap enough before every read txn.  An inode number can be
    reused only once no process holds the file: the reader comparing holds the ones it opened,
    so a new file never shows the old numbers to it."""
    def ident(name):
        try:
            st = os.stat(os.path.join(data_dir, name))
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino
    return ident(DATA_FILE), ident(LOCK_FILE)


def compact_copy(env, data_dir: str, txn=None) -> tuple[str, int]:
    """A compacting copy of env in a temp file of data_dir, fsynced (file and directory).
    Returns (its path, its size in bytes).  Removed on failure."""
    fd, path = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=data_dir)
    try:
        try:
            if txn is None:
                env.copyfd(fd, compact=True)
            else:
                env.copyfd(fd, compact=True, txn=txn)
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        fsync_dir(data_dir)
    except BaseException:
        remove_quietly(path)
        raise
    return path, size


def remove_quietly(path: str):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_leftovers(data_dir: str) -> list[str]:
    """The copies of a defrag killed before its rename: never data.mdb, so never needed."""
    gone = []
    for name in os.listdir(data_dir):
        if name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX):
            remove_quietly(os.path.join(data_dir, name))
            gone.append(name)
    return gone


def defrag(store) -> dict:
    """Swap a compacting copy in for store's file (the writer's store; no txn of it may be open).

    Returns {db_size_before, db_size_after, copy_s, swap_s}.  On an error before the rename the
    store is reopened on its old file and the error raised; after it, the new file is opened."""
    data_dir = store.path
    before = os.path.getsize(os.path.join(data_dir, DATA_FILE))
    t0 = time.perf_counter()
    tmp, _ = compact_copy(store.env, data_dir)
    _kill_point("copied")
    t1 = time.perf_counter()
    renamed = False
    try:
        with swap_lock(data_dir, exclusive=True):
            store._open_args["map_size"] = store.env.info()["map_size"]   # as grown so far
            store.env.close()
            try:
                remove_quietly(os.path.join(data_dir, LOCK_FILE))
                _kill_point("unlinked")
                os.rename(tmp, os.path.join(data_dir, DATA_FILE))
                renamed = True
                fsync_dir(data_dir)
                _kill_point("renamed")
            finally:
                store.reopen()             # the new file, or the old one if the rename failed
    finally:
        if not renamed:
            remove_quietly(tmp)
    after = os.path.getsize(os.path.join(data_dir, DATA_FILE))
    return {"db_size_before": before, "db_size_after": after, "copy_s": t1 - t0,
            "swap_s": time.perf_counter() - t1}


class Follower:
    """A reader's side of the swap.  Every read txn runs inside ``with follower.reading():``,
    which holds the shared swap lock and first compares the files the store has open with the
    ones now in the data dir, reopening the store on a change (``reopens`` counts them).

    Holding the lock during the txn (two flock calls, ~1 us each) also closes the one window a
    check alone leaves: a writer killed after unlinking lock.mdb and restarted opens the same
    data.mdb with a fresh lock.mdb under the exclusive lock (open_exclusive), so no read txn of
    ours that still uses the old lock file can overlap a commit of the new writer."""

    def __init__(self, store):
        self.store = store
        self.reopens = 0
        self._fd = os.open(os.path.join(store.path, SWAP_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        # The files the store opened (recorded at its open), not those in the dir now: a swap
        # between the store's open and this constructor must still be followed (audit finding).
        self.opened = getattr(store, "opened_files", None)
        if self.opened is None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            try:
                self.opened = identity(store.path)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextmanager
    def reading(self):
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        try:
            if identity(self.store.path) != self.opened:
                # Under the lock no swap is half done: data.mdb and lock.mdb are a pair (a missing
                # lock.mdb, left by a writer killed mid-swap, is created by our open).
                self.store.env.close()
                self.store.reopen()
                self.opened = getattr(self.store, "opened_files", None) or identity(self.store.path)
                self.reopens += 1
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def check(self) -> bool:
        """Follow a swap now; True if the store was reopened."""
        before = self.reopens
        with self.reading():
            pass
        return self.reopens != before

    def close(self):
        os.close(self._fd)


@contextmanager
def open_exclusive(data_dir: str):
    """The writer's start: open its store under the exclusive swap lock (see Follower)."""
    with swap_lock(data_dir, exclusive=True):
        yield
