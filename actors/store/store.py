"""The MVCC store: etcd v3's data model on one LMDB file (the encoding is layout.py, one txn's
view tx.py, physical compaction compaction.py).

Store owns the LMDB env: group commit (apply_batch), map growth, and telling a full disk
(NO_SPACE) from a storage fault (INTERNAL); ReadView is a consistent snapshot for readers.

Invariants: one writer process, any number of reader processes; nothing is cached in memory
across transactions, so opening a huge store is instant and every reader sees exactly what the
writer committed; a batch commits durably once, and a failed request inside it runs in a nested
txn that is aborted, so it changes nothing.  The one exception is the auth state, which the
writer keeps in memory: apply_batch takes it and hands back a new object only after a
successful commit (authtx.AuthBatch copies it on write), so a failed commit leaves it as it was.
"""
from __future__ import annotations

import errno
import heapq
import os
import time
from functools import wraps

import lmdb

from zwatch import requests
from zwatch import requests as requests_mod   # (apply_batch's argument is named requests)
from zwatch.errors import Compacted, FutureRevision, Internal, InvalidArgument, NoSpace, ZwatchError
from zwatch.limits import DEFAULT_MIN_LEASE_TTL, MAX_KEY_BYTES, MAX_REVISION

from . import authtx, compaction, cursors, hashkv, layout, times
from .compaction import compact_chunk
from .quota import NOSPACE, BatchQuota
from .layout import LIVE, QQ
from .defrag import identity as defrag_identity
from .tx import AuthStateBroken, Tx


def _guard(fn):
    """Read-side entry points: bad input gives ZwatchError, a storage fault gives Internal."""
    @wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except ZwatchError:
            raise
        except Exception as e:
            raise Internal(f"{fn.__name__}: {type(e).__name__}: {e}") from e
    return wrapper


def _check_int(v, name, lo=0, hi=MAX_REVISION):
    """An argument of the readers' API (the syncer's calls, not a client request)."""
    if not requests.is_int(v) or not lo <= v <= hi:
        raise InvalidArgument(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")


class ReadView:
    """``with store.reader() as view:`` one LMDB read txn, a consistent snapshot."""

    def __init__(self, store: "Store"):
        self._store = store
        self._txn = self._tx = None

    def __enter__(self) -> "ReadView":
        self._txn = self._store._begin()
        try:
            self._tx = Tx(self._store, self._txn)
        except BaseException:
            self._txn.abort()
            raise
        self.current_revision, self.compact_revision = self._tx.rev, self._tx.crev
        return self

    def __exit__(self, *exc):
        self._txn.abort()
        self._txn = self._tx = None

    @_guard
    def range(self, req: dict) -> dict:
        """Unchecked: a reader serving a user checks READ against auth_state() of this same view."""
        return self._tx.range(requests.normalize("range", req))

    @_guard
    def state_chunk(self, key: bytes, end, rev: int, max_keys: int = 1000,
                    max_bytes: int = 1 << 20) -> tuple[list, bytes | None]:
        """A bounded piece of the range's kvs alive at rev (tx.Tx.state_chunk); COMPACTED when
        rev is below this snapshot's compact revision (the caller starts over at a newer one)."""
        if rev < self.compact_revision:
            raise Compacted("required revision has been compacted", compact_revision=self.compact_revision)
        if rev > self.current_revision:
            raise FutureRevision("required revision is a future revision")
        return self._tx.state_chunk(key, end, rev, max_keys, max_bytes)

    @_guard
    def auth_revision(self) -> int:
        """This snapshot's auth revision: one read, so a caller can keep the AuthState of a
        revision and call auth_state() only when it moved."""
        return authtx.auth_revision(self._store, self._txn)

    @_guard
    def auth_state(self):
        """The AuthState of this snapshot (the same one the view's reads see)."""
        return authtx.load_state(self._store, self._txn)

    @_guard
    def hash_kv(self, revision: int = 0) -> tuple[int, int, int]:
        """(hash, compact_revision, hash_revision) of this snapshot up to `revision` (0: the
        current one): hashkv.py defines it.  COMPACTED / FUTURE_REVISION like a read at it."""
        _check_int(revision, "revision")
        rev = revision or self.current_revision
        if rev > self.current_revision:
            raise FutureRevision("required revision is a future revision")
        if rev < self.compact_revision:
            raise Compacted("required revision has been compacted", compact_revision=self.compact_revision)
        return hashkv.hash_kv(self._txn, self._store._history, self.compact_revision, rev), self.compact_revision, rev

    @_guard
    def revision_at_time(self, t_us: int, now_us: int) -> dict:
        """The first revision committed at or after t_us, from this snapshot's time index
        (times.revision_at_time: SPEC.md "revision_at_time" defines the answer)."""
        _check_int(t_us, "t_us")
        return times.revision_at_time(self._txn, self._store._times, t_us, self.current_revision,
                                      self.compact_revision, now_us)

    def _check_span(self, from_rev: int, to_rev: int, max_records: int, max_bytes: int):
        """The arguments of a history read (history(), key_history()): integers, bounds of at
        least 1, and nothing below the compact revision (COMPACTED)."""
        _check_int(from_rev, "from_rev")
        _check_int(to_rev, "to_rev")
        _check_int(max_records, "max_records", 1)
        _check_int(max_bytes, "max_bytes", 1)
        if from_rev < self.compact_revision:
            raise Compacted("required revision has been compacted", compact_revision=self.compact_revision)

    @_guard
    def history(self, from_rev: int, to_rev: int, max_records: int = 1000,
                max_bytes: int = 1 << 20) -> list:
        """Records with from_rev <= main <= to_rev as (main, sub, type, kv, nbytes), in order.

        Whole revisions only: stops before a revision that would push the result past max_records or
        max_bytes, except that the first revision is returned whole however big it is."""
        self._check_span(from_rev, to_rev, max_records, max_bytes)
        out, size, group, gsize, gmain, scanned = [], 0, [], 0, -1, 0
        cur = self._txn.cursor(db=self._store._history)
        if cur.set_range(QQ.pack(from_rev, 0)):
            for k, v in cur.iternext():
                main, sub = QQ.unpack(k)
                if main != gmain:          # the previous revision is complete: take it
                    out += group
                    size += gsize
                    group, gsize, gmain = [], 0, main
                    if main > to_rev or len(out) >= max_records or size >= max_bytes:
                        break
                scanned += 1
                if out and (len(out) + len(group) >= max_records or size + gsize + len(v) > max_bytes):
                    group = []             # this revision does not fit behind the others
                    break
                rec = layout.unpack_record(v)
                group.append((main, sub, rec[0], rec[1:], len(v)))
                gsize += len(v)
            out += group                   # no-op after a break (group was taken or dropped)
        self._store.records_scanned += scanned
        return out

    @_guard
    def key_records_estimate(self, specs, max_keys: int) -> int | None:
        """How many history records the keys of `specs` ((key, end|None) pairs) have in all,
        from the key index's dup counts (O(1) a key): the cost of reading them one by one
        (key_history) instead of scanning.  None when a range holds more than max_keys keys
        (or the specs more than max_keys in all): too wide to be worth counting."""
        cur = self._txn.cursor(db=self._store._keyrev)
        total = keys = 0
        for key, end in specs:
            if end is None:
                if cur.set_key(key):
                    total += cur.count()
                keys += 1
            else:
                ok = cur.set_range(key)
                while ok and cur.key() < end:     # end: the watch index's finite form (KEY_INFINITY)
                    total += cur.count()
                    keys += 1
                    if keys > max_keys:
                        return None
                    ok = cur.next_nodup()
            if keys > max_keys:
                return None
        return total

    @_guard
    def key_history(self, specs, from_rev: int, to_rev: int, max_records: int = 1000,
                    max_bytes: int = 1 << 20) -> tuple[list, int]:
        """The history records of the keys of `specs` with from_rev <= main <= to_rev, read
        through the key index (keyrev) instead of a scan: -> (records, through).

        records are (main, sub, type, kv, nbytes) in (main, sub) order, as history() returns
        them, each record once however many specs cover its key; `through` is the last revision
        they are complete up to: every record of these keys at a revision <= through is in the
        list, none above it (the cut is between revisions: a revision's records are never
        split).  Bounded like history(): at most max_records records and max_bytes bytes,
        except that the first revision is returned whole however big it is.

        A cursor per key stands at its next dup >= from_rev; the smallest (main, sub) is taken
        from a heap, its record fetched from history, its cursor moved on: the records are
        merged in revision order as they are read, so what is held is the result and one
        position per key, never more positions than are returned."""
        self._check_span(from_rev, to_rev, max_records, max_bytes)
        txn, keyrev, hist = self._txn, self._store._keyrev, self._store._history
        keys = set()
        walk = txn.cursor(db=keyrev)
        for key, end in specs:
            if end is None:
                keys.add(key)
            else:
                ok = walk.set_range(key)
                while ok and walk.key() < end:  # end: the watch index's finite form (KEY_INFINITY)
                    keys.add(walk.key())
                    ok = walk.next_nodup()
        start = QQ.pack(from_rev, 0)
        heap = []
        for i, key in enumerate(sorted(keys)):
            cur = txn.cursor(db=keyrev)
            if cur.set_range_dup(key, start):
                pos = cur.value()[:16]
                if QQ.unpack(pos)[0] <= to_rev:
                    heap.append((pos, i, cur))
        heapq.heapify(heap)
        out, size = [], 0
        group, gsize, gmain = [], 0, -1
        through, read = to_rev, 0
        while heap:
            pos, i, cur = heap[0]
            main, sub = QQ.unpack(pos)
            if main != gmain:              # the previous revision is complete: take it, if it fits
                if group and out and (len(out) + len(group) > max_records or size + gsize > max_bytes):
                    group = []
                    through = gmain - 1
                    break
                out += group
                size += gsize
                group, gsize, gmain = [], 0, main
                if len(out) >= max_records or size >= max_bytes:
                    through = main - 1
                    break
            v = txn.get(pos, db=hist)
            read += 1
            rec = layout.unpack_record(v)
            group.append((main, sub, rec[0], rec[1:], len(v)))
            gsize += len(v)
            if cur.next_dup():
                nxt = cur.value()[:16]
                if QQ.unpack(nxt)[0] <= to_rev:
                    heapq.heapreplace(heap, (nxt, i, cur))
                    continue
            heapq.heappop(heap)
        if group:                          # the history ended (or passed to_rev) inside a revision
            if out and (len(out) + len(group) > max_records or size + gsize > max_bytes):
                through = gmain - 1
            else:
                out += group
        self._store.records_scanned += read
        return out, through

    @_guard
    def lease(self, lease_id: int, max_keys: int = 0, max_key_bytes: int = 1 << 20):
        """(granted TTL, [attached key, ...], truncated) of a lease, or None if it is not granted.

        Keys are listed only if max_keys > 0, in key order, at most max_keys of them and about
        max_key_bytes in all; truncated says some were left out."""
        id8 = layout.pack_lease_id(lease_id)
        raw = self._txn.get(id8, db=self._store._lease)
        if raw is None:
            return None
        keys, size, truncated = [], 0, False
        if max_keys > 0:
            cur = self._txn.cursor(db=self._store._leasekeys)
            if cur.set_key(id8):
                for key in cur.iternext_dup():
                    if len(keys) >= max_keys or size >= max_key_bytes:
                        truncated = True
                        break
                    keys.append(key)
                    size += len(key)
        return layout.unpack_lease(raw), keys, truncated

    def lease_keys(self, lease_id: int):
        """Every key attached to the lease, in key order (an iterator over this snapshot)."""
        cur = self._txn.cursor(db=self._store._leasekeys)
        if cur.set_key(layout.pack_lease_id(lease_id)):
            yield from cur.iternext_dup()

    @_guard
    def prev_kv(self, key: bytes, main: int, sub: int):
        """key's kv just before (main, sub); None if absent, deleted, or at/below the compaction."""
        if not isinstance(key, bytes) or not 0 < len(key) <= MAX_KEY_BYTES:
            raise InvalidArgument(f"key must be 1..{MAX_KEY_BYTES} bytes, got {key!r:.80}")
        _check_int(main, "main")
        _check_int(sub, "sub")
        if main <= self.compact_revision:
            return None                    # etcd: prev_kv reads at main-1, which is compacted
        cur = self._txn.cursor(db=self._store._keyrev)
        if not cur.set_key(key):
            return None
        if cur.set_range_dup(key, QQ.pack(main, sub)):
            if not cur.prev_dup():
                return None
        else:                              # every record of the key is older
            cur.set_key(key)
            cur.last_dup()
        dv = cur.value()
        return self._tx.kv(dv) if dv[16:] == LIVE else None


# Below this much free disk a failed commit is taken for a full disk whatever errno LMDB reports:
# a short write (the disk filled up mid-write) comes back as EIO ("Input/output error").
NO_SPACE_MARGIN_BYTES = 8 << 20


def _no_disk_errno(e: Exception) -> bool:
    msg = str(e)
    return isinstance(e, lmdb.DiskError) or any(
        os.strerror(n) in msg for n in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


def free_bytes(path: str) -> int | None:
    """Bytes this process may still write on path's filesystem (root may use the reserved blocks)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


class Store:
    """The MVCC store.  Construct it after fork; one writer process, any number of readers."""

    def __init__(self, path: str, *, map_size: int = 1 << 30, max_map_size: int = 1 << 40,
                 max_readers: int = 512, min_lease_ttl: int = DEFAULT_MIN_LEASE_TTL, quota_bytes: int = 0):
        self.path = path
        # The DB size quota (quota.py), bytes; <= 0: none.  Only the writer passes one.
        self.quota_bytes = quota_bytes
        self.alarm_raised = False          # the last apply_batch raised NOSPACE (committed)
        self._batch_raised = False
        self.compact_figures = {"keys": 0, "records": 0}   # of the last compact_step
        self.min_lease_ttl = min_lease_ttl  # a grant's TTL is raised to it (the writer's setting)
        self.max_map_size = max(map_size, max_map_size)
        self.records_scanned = 0
        self.commit_failure: dict | None = None    # why the last apply_batch failed as a whole
        self._open_args = dict(map_size=map_size, max_readers=max_readers)
        self._open_env()

    def reopen(self):
        """Open the data dir's files again (the env is closed): after a defrag swapped in a
        compacting copy (defrag.py).  The map keeps the size it had grown to."""
        self._open_env()

    def _open_env(self):
        path = self.path
        # The files this env opens, as a defrag Follower compares them (defrag.identity), taken
        # BEFORE the open: a swap landing during the open then shows as a change and the reader
        # reopens (never the reverse: recording files it did not open).  A lock.mdb the open
        # creates is taken after it.
        before = defrag_identity(path)
        self.env = lmdb.open(path, map_size=self._open_args["map_size"], subdir=True, max_dbs=16,
                             max_readers=self._open_args["max_readers"], sync=True, metasync=True, lock=True)
        self.opened_files = before if before[1] is not None else (before[0], defrag_identity(path)[1])
        self.env.reader_check()            # drop reader slots left by dead processes
        # Always open the named dbs in a write txn: with py-lmdb 3.0 a handle opened inside a
        # read-only txn is invalid once that txn ends (mdb_get: Invalid argument).  It takes the
        # writer lock once, at start-up only.
        self._open_dbs(write=True)
        with self.env.begin() as txn:
            fmt = txn.get(layout.FORMAT_KEY, db=self._meta)
        if fmt != layout.pack_int(layout.FORMAT):
            self.env.close()
            raise Internal(f"{path}: unsupported store format {fmt!r}")

    def _open_dbs(self, write: bool):
        with self.env.begin(write=write) as txn:
            self._meta = self.env.open_db(layout.META, txn=txn, create=write)
            self._history = self.env.open_db(layout.HISTORY, txn=txn, create=write)
            self._keyrev = self.env.open_db(layout.KEYREV, txn=txn, create=write, dupsort=True,
                                            dupfixed=True)
            # Created on first open by this version: a store of format 1 without them has no
            # lease (a put could not carry one), so empty tables are its exact state.
            self._lease = self.env.open_db(layout.LEASE, txn=txn, create=write)
            self._leasekeys = self.env.open_db(layout.LEASEKEYS, txn=txn, create=write, dupsort=True)
            # Likewise: a store without them has no user, no role, auth disabled (absent meta).
            self._authusers = self.env.open_db(layout.AUTHUSERS, txn=txn, create=write)
            self._authroles = self.env.open_db(layout.AUTHROLES, txn=txn, create=write)
            # The time index (times.py): empty in a store written before it, which dates nothing.
            self._times = self.env.open_db(layout.TIMES, txn=txn, create=write)
            # Durable named cursors (cursors.py): empty in a store written before them.
            self._cursors = self.env.open_db(layout.CURSORS, txn=txn, create=write)
            if write and txn.get(layout.FORMAT_KEY, db=self._meta) is None:
                for k, v in layout.INITIAL_META:
                    txn.put(k, layout.pack_int(v), db=self._meta)

    def close(self):
        self.env.close()

    def _begin(self, write: bool = False):
        try:
            return self.env.begin(write=write)
        except lmdb.MapResizedError:       # another process grew the map: adopt its size
            self.env.set_mapsize(0)
            return self.env.begin(write=write)

    def _grow(self) -> bool:
        """Double the map (no txn of this process may be open).  False if at max_map_size."""
        size = self.env.info()["map_size"]
        if size >= self.max_map_size:
            return False
        self.env.set_mapsize(min(size * 2, self.max_map_size))
        return True

    @staticmethod
    def _commit(txn):
        txn.commit()                       # a seam so tests can simulate a full disk

    def current_revision(self) -> int:
        with self.reader() as v:
            return v.current_revision

    def compact_revision(self) -> int:
        with self.reader() as v:
            return v.compact_revision

    def compaction_state(self) -> tuple[int, int]:
        """(physical compaction done up to, compact revision): done < compact revision while one
        is unfinished."""
        with self.reader() as v:
            return compaction.pending(v._txn, self._meta)

    # -- size and alarms ---------------------------------------------------------------------

    def db_size(self) -> int:
        """Bytes of the LMDB file: every page up to the last one ever used (LMDB writes the file
        up to its last page, never beyond, and never shrinks it).  No system call."""
        info = self.env.info()
        return (info["last_pgno"] + 1) * self.env.stat()["psize"]

    def db_size_in_use(self) -> int:
        """Bytes of the pages the last commit can reach: the two meta pages plus every table's
        branch, leaf and overflow pages (the main table holding the named ones included), i.e.
        about what a compacting copy would keep.  db_size minus this is free pages LMDB reuses
        before it grows the file (freed by compaction and deletes), plus the free list's own
        few pages, which py-lmdb cannot read.  One read txn, a stat per table: cheap."""
        def pages(st):
            return st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        main = self.env.stat()
        total = 2 + pages(main)
        dbs = [v for v in vars(self).values() if type(v).__name__ == "_Database"]
        with self.reader() as v:
            for db in dbs:
                total += pages(v._txn.stat(db))
        return total * main["psize"]

    def alarms(self) -> list:
        """The active alarms as [[member_id, name], ...] (persisted in meta)."""
        with self.reader() as v:
            return layout.unpack_alarms(v._txn.get(layout.ALARMS, db=self._meta))

    def _member_id(self, txn) -> int:
        raw = txn.get(layout.MEMBER_ID, db=self._meta)
        if raw is not None:
            return layout.Q.unpack(raw)[0]
        member_id = int.from_bytes(os.urandom(8), "big") & ((1 << 63) - 1) or 1
        txn.put(layout.MEMBER_ID, layout.pack_int(member_id), db=self._meta)
        return member_id

    def _raise_alarm(self, txn, name: str):
        alarms = layout.unpack_alarms(txn.get(layout.ALARMS, db=self._meta))
        if not any(a == name for _, a in alarms):
            alarms.append([self._member_id(txn), name])
            txn.put(layout.ALARMS, layout.pack_alarms(alarms), db=self._meta)

    def alarm_disarm(self, name: str | None = None) -> list:
        """Deactivate the alarm `name` (None: every one), durably.  Returns the disarmed ones."""
        while True:
            txn = self._begin(write=True)
            try:
                alarms = layout.unpack_alarms(txn.get(layout.ALARMS, db=self._meta))
                gone = [a for a in alarms if name is None or a[1] == name]
                if not gone:
                    txn.abort()
                    return []
                kept = [a for a in alarms if a not in gone]
                if kept:
                    txn.put(layout.ALARMS, layout.pack_alarms(kept), db=self._meta)
                else:
                    txn.delete(layout.ALARMS, db=self._meta)
                self._commit(txn)
                return gone
            except lmdb.MapFullError:
                txn.abort()
                if not self._grow():
                    raise NoSpace("the store is full (LMDB map at its maximum size)") from None
            except lmdb.Error as e:
                txn.abort()
                raise self._storage_error("alarm disarm failed", e) from e
            except BaseException:
                txn.abort()
                raise

    def leases(self) -> list[tuple[int, int]]:
        """Every granted lease as (ID, granted TTL): what the writer's lease clock restores."""
        with self.reader() as v:
            cur = v._txn.cursor(db=self._lease)
            return [(layout.unpack_lease_id(k), layout.unpack_lease(raw)) for k, raw in cur.iternext()]

    def auth_state(self):
        """The AuthState as committed (one snapshot): what the writer loads at start."""
        with self.reader() as v:
            return v.auth_state()

    def cursors(self) -> list[tuple[str, int, int]]:
        """Every durable cursor as (name, revision, ttl): what the writer's cursor clock restores."""
        with self.reader() as v:
            return [(c.name, c.revision, c.ttl) for c in cursors.all_cursors(v._txn, self._cursors)]

    def commit_time_of(self, revision: int) -> int | None:
        """When `revision` was committed (µs since the epoch), from the time index; None if unknown."""
        with self._begin() as txn:
            return times.commit_time_of(txn, self._times, revision)

    def first_revision_at_or_after(self, t_us: int) -> int | None:
        """The first revision committed at or after t_us (µs since the epoch), from the time index."""
        with self._begin() as txn:
            return times.first_revision_at_or_after(txn, self._times, t_us)

    def reader(self) -> ReadView:
        return ReadView(self)

    def range(self, req: dict) -> dict:
        with self.reader() as v:
            return v.range(req)

    def apply_batch(self, requests: list, auth=None) -> tuple[list, list]:
        """Apply every request in one LMDB write txn, committed durably once (group commit).

        A request is (op, body) or (op, body, user): user None = an internal peer (unchecked),
        "" = an anonymous client, else the name of the client's authenticated user; it is
        checked against the auth state as of that request (an auth op earlier in the batch
        applies to it).  auth: the caller's AuthState (the writer's, in memory), never modified;
        None = read it from LMDB when a request needs it.

        Returns (results, published): results[i] is request i's response or its ZwatchError (a failed
        request runs in a nested txn that is aborted, so it changes nothing); published is
        [(main, [(type, kv, prev_kv), ...]), ...] for each revision created, in order.
        After the call, auth_after is the AuthState after the batch (auth itself when nothing
        changed or the commit failed), auth_changes its [(after_revision, change), ...] and
        auth_change_requests the index in requests of the request that made each change.
        When the whole batch failed for the storage, commit_failure says why (else it is None)."""
        n = len(requests)
        self.commit_failure = None
        self.alarm_raised = False
        self.auth_after, self.auth_changes, self.auth_change_requests = auth, [], []
        while True:
            txn = self._begin(write=True)
            written = 0
            try:
                results, published, ab = self._apply(txn, requests, auth)
                written = sum(len(kv[0]) + len(kv[4]) for _, events in published for _, kv, _ in events)
                if published:                  # the time index, in the same txn (times.py)
                    times.record(txn, self._times, published[-1][0], time.time_ns() // 1000)
                self._commit(txn)
                self.alarm_raised = self._batch_raised
                if ab is not None:
                    self.auth_after, self.auth_changes, self.auth_change_requests = \
                        ab.state, ab.changes, ab.change_requests
                return results, published
            except lmdb.MapFullError:
                txn.abort()
                if not self._grow():
                    err = NoSpace("the store is full (LMDB map at its maximum size)")
                    self.commit_failure = {"code": err.code, "error": err.message,
                                           "free_bytes": free_bytes(self.path)}
                    return [err] * n, []
            except lmdb.Error as e:        # a failed commit has already released the txn
                txn.abort()
                err = self._storage_error("commit failed", e, written)
                return [err] * n, []
            except BaseException:
                txn.abort()
                raise

    def _storage_error(self, what: str, e: lmdb.Error, written: int = 0) -> ZwatchError:
        """NO_SPACE if the disk is full, however LMDB put it; else INTERNAL.  Sets commit_failure."""
        free = free_bytes(self.path)
        # A commit writes the new pages, then the meta page: the data written plus the
        # copy-on-write branch pages; under a few MiB free, nothing else explains a failed write.
        full = _no_disk_errno(e) or (free is not None and free < max(NO_SPACE_MARGIN_BYTES, 2 * written))
        err = NoSpace(f"{what}: the disk is full ({e})") if full else Internal(f"{what}: {e}")
        self.commit_failure = {"code": err.code, "error": str(e), "free_bytes": free}
        return err

    def _apply(self, txn, requests, auth):
        head = Tx(self, txn)
        rev, compact = head.rev, head.crev
        results, published = [], []
        ab = None                          # the batch's authtx.AuthBatch, once a request needs one
        quota = BatchQuota(self.quota_bytes, self.db_size(),
                           [a for _, a in layout.unpack_alarms(txn.get(layout.ALARMS, db=self._meta))])
        for i, item in enumerate(requests):
            child = self.env.begin(write=True, parent=txn)
            t = Tx(self, child, rev, compact)
            charge = 0
            try:
                if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                    raise InvalidArgument(f"a request must be an (op, body) pair or an (op, body, user) "
                                          f"triple, got {type(item).__name__}")
                op, body, user = item if len(item) == 3 else (*item, None)
                # Before anything else, as etcd checks its quota at the API: NO_SPACE
                charge = quota.check(op, body)
                if user is not None and not isinstance(user, str):
                    raise InvalidArgument(f"a request's user must be a string, got {type(user).__name__}")
                if ab is None and (user is not None or op in requests_mod.AUTH_STORE_OPS):
                    ab = authtx.AuthBatch(self, auth)
                changes_before = len(ab.changes) if ab is not None else 0
                resp = t.run(op, body, ab, user)
                if ab is not None:
                    ab.change_requests += [i] * (len(ab.changes) - changes_before)
            except ZwatchError as e:
                child.abort()
                results.append(e)
                continue
            except lmdb.Error:
                child.abort()
                raise                      # map full or storage fault: the whole batch
            except AuthStateBroken:
                child.abort()
                raise                      # the batch's auth state is unusable: the whole batch
            except Exception as e:         # a bug: fail this request only, keep serving
                child.abort()
                results.append(Internal(f"{type(e).__name__}: {e}"))
                continue
            child.commit()
            quota.admit(charge)
            if t.sub:
                rev = t.main
                published.append((rev, t.events))
            compact = t.crev
            results.append(resp)
        self._batch_raised = quota.raised
        if quota.raised:                   # in the batch's own txn: durable with its commit
            self._raise_alarm(txn, NOSPACE)
        return results, published, ab

    def compact_step(self, max_keys: int = 1000) -> bool:
        """One bounded chunk of pending physical compaction in its own write txn; True if more remains.

        max_keys bounds the work: keys visited plus records removed.  Afterwards compact_figures
        holds the chunk's {"keys": visited, "records": removed} (zeros if it failed)."""
        while True:
            txn = self._begin(write=True)
            self.compact_figures = {"keys": 0, "records": 0}
            try:
                figures = {"keys": 0, "records": 0}
                more = compact_chunk(self, txn, max(1, max_keys), figures)
                if more is None:
                    txn.abort()            # nothing pending: no commit, no fsync
                    return False
                self._commit(txn)
                self.compact_figures = figures
                return more
            except lmdb.MapFullError:      # copy-on-write needs pages even to delete
                txn.abort()
                if not self._grow():
                    raise NoSpace("the store is full (LMDB map at its maximum size)") from None
            except lmdb.Error as e:
                txn.abort()
                raise self._storage_error("compaction failed", e) from e
            except BaseException:
                txn.abort()
                raise
