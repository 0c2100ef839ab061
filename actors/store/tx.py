"""One LMDB txn seen through etcd's MVCC model: reads at a revision, writes at the next one,
txn (compare, duplicate-key check, prechecks, the taken branch) and logical compaction.

Invariants: a write request's records all get main revision ``rev + 1`` numbered by ``sub``
from 0, so one request is one revision; nothing is cached across LMDB txns; every request body
reaching a Tx method is already normalized by zwatch.requests (Tx.run does it); a key is in
``leasekeys`` under lease L exactly while its live kv names L (``_write`` keeps that true for
every put and delete, so a revoke finds every key it must delete and no other).
"""
from __future__ import annotations

import heapq
import os

from zwatch import requests
from zwatch.errors import Compacted, FutureRevision, InvalidArgument, LeaseExists, LeaseNotFound, LeaseTTLTooLarge
from zwatch.limits import MAX_LEASE_TTL

from . import cursors, layout
from .layout import DELETE, LIVE, PUT, QQ, TOMB, latest_dup


class AuthStateBroken(Exception):
    """An auth change failed half-applied to the batch's in-memory state (a bug): the whole
    batch must fail, so the writer keeps the state it had (authtx.AuthBatch raises it)."""


def kv_dict(kv, keys_only=False) -> dict:
    """A kv list as etcd's KeyValue message."""
    d = {"key": kv[0], "create_revision": kv[1], "mod_revision": kv[2], "version": kv[3],
         "value": kv[4], "lease": kv[5]}
    if keys_only:
        del d["value"]
    return d


def _set_header(resp: dict, rev: int):
    """Every response inside a txn carries the txn's revision."""
    resp["header"]["revision"] = rev
    for r in resp.get("responses", ()):
        _set_header(next(iter(r.values())), rev)


class Tx:
    """One LMDB txn seen through etcd's model.  `rev` is the current revision before the request;
    a write request's records all get main revision `main` = rev + 1, numbered by `sub`."""

    # s: the Store, lt: the LMDB txn, crev: the compact revision
    __slots__ = ("s", "lt", "rev", "crev", "main", "sub", "events")

    def __init__(self, store, txn, rev: int | None = None, compact: int | None = None):
        self.s, self.lt = store, txn
        if rev is None:
            rev = layout.meta_int(txn, store._meta, layout.CURRENT_REV)
            compact = layout.meta_int(txn, store._meta, layout.COMPACT_REV)
        self.rev, self.crev = rev, compact
        self.main, self.sub, self.events = rev + 1, 0, []

    # -- reads ---------------------------------------------------------------------------------

    def current(self) -> int:
        """The revision a read sees: the request's own writes count once there are any (etcd)."""
        return self.main if self.sub else self.rev

    def check_rev(self, rev: int, current: int) -> int:
        if rev > current:
            raise FutureRevision("required revision is a future revision", current_revision=current)
        if rev == 0:
            return current
        if rev < self.crev:
            raise Compacted("required revision has been compacted", compact_revision=self.crev)
        return rev

    def kv(self, dv: bytes) -> list:
        return layout.unpack_record(self.lt.get(dv[:16], db=self.s._history))[1:]

    def get(self, key: bytes, rev: int, cur=None):
        """key's kv list as of rev, or None.  cur: a keyrev cursor to reuse (a loop over keys)."""
        if cur is None:
            cur = self.lt.cursor(db=self.s._keyrev)
        if not cur.set_key(key):
            return None
        dv = latest_dup(cur, rev)
        return self.kv(dv) if dv is not None and dv[16:] == LIVE else None

    def scan(self, key: bytes, end, rev: int) -> list:
        """[(key, dup)] of the keys in [key, end) alive at rev, in key order."""
        out = []
        cur = self.lt.cursor(db=self.s._keyrev)
        ok = cur.set_range(key)
        while ok:
            k = cur.key()
            if end is not None and k >= end:
                break
            dv = latest_dup(cur, rev)
            if dv is not None and dv[16:] == LIVE:
                out.append((k, dv))
            ok = cur.next_nodup()
        return out

    def state_chunk(self, key: bytes, end, rev: int, max_keys: int, max_bytes: int) -> tuple[list, bytes | None]:
        """One bounded piece of the keys in [key, end) alive at rev, in key order (an initial
        state or a resync, SPEC.md section 7.7): -> (kvs, the key to continue from, or None when
        the range is done).  Stops after max_keys kvs or once their key + value bytes reach
        max_bytes (a single larger kv still goes alone): the records read are the keys returned
        plus the dead keys passed over, never the rest of the range."""
        out = []
        size = 0
        cur = self.lt.cursor(db=self.s._keyrev)
        ok = cur.set_range(key)
        while ok:
            k = cur.key()
            if end is not None and k >= end:
                return out, None
            if len(out) >= max_keys or (out and size >= max_bytes):
                return out, k
            dv = latest_dup(cur, rev)
            if dv is not None and dv[16:] == LIVE:
                kv = self.kv(dv)
                out.append(kv)
                size += len(kv[0]) + len(kv[4] or b"")
            ok = cur.next_nodup()
        return out, None

    def range(self, r: dict) -> dict:
        current = self.current()
        rev = self.check_rev(r["revision"], current)
        live = self.scan(*requests.key_range(r["key"], r["range_end"]), rev)
        count, limit = len(live), r["limit"]
        resp = {"header": {"revision": current}, "kvs": [], "more": False, "count": count}
        if r["count_only"]:
            return resp
        order, target = r["sort_order"], r["sort_target"]
        if target != "KEY" and order == "NONE":
            order = "ASCEND"               # etcd: a non-key target means ascending
        elif target == "KEY" and order == "ASCEND":
            order = "NONE"                 # keys already come in ascending order
        filters = [(i, lo, hi) for i, lo, hi in
                   ((2, r["min_mod_revision"], r["max_mod_revision"]),
                    (1, r["min_create_revision"], r["max_create_revision"])) if lo or hi]
        if order == "NONE" and not filters:
            # Only the returned kvs need their history record; the count needed only keyrev.
            kvs = [self.kv(dv) for _, dv in (live[:limit] if limit else live)]
            total = count
        else:
            kvs = [self.kv(dv) for _, dv in live]
            for i, lo, hi in filters:      # etcd prunes after counting: count ignores the filters
                kvs = [kv for kv in kvs if (not lo or kv[i] >= lo) and (not hi or kv[i] <= hi)]
            if order != "NONE":            # stable: ties stay in key order
                i = requests.SORT_TARGETS[target]
                kvs.sort(key=lambda kv: kv[i], reverse=order == "DESCEND")
            total = len(kvs)
            if limit:
                kvs = kvs[:limit]
        resp["more"] = bool(limit) and total > limit
        resp["kvs"] = [kv_dict(kv, r["keys_only"]) for kv in kvs]
        return resp

    # -- writes --------------------------------------------------------------------------------

    def _write(self, typ: int, kv: list, prev, attach: bool = True):
        """attach=False: leave leasekeys alone (a revoke drops its lease's whole entry at once)."""
        h = QQ.pack(self.main, self.sub)
        self.sub += 1
        self.lt.put(h, layout.pack_record(typ, kv), db=self.s._history, append=True)
        self.lt.put(kv[0], h + (TOMB if typ else LIVE), db=self.s._keyrev)
        self.events.append((typ, kv, prev))
        old, new = prev[5] if prev else 0, kv[5]
        if attach and old != new:          # the key moves between leases (0: none)
            if old:
                self.lt.delete(layout.pack_lease_id(old), kv[0], db=self.s._leasekeys)
            if new:
                self.lt.put(layout.pack_lease_id(new), kv[0], db=self.s._leasekeys, dupdata=True)

    def lease_exists(self, lease_id: int) -> bool:
        return self.lt.get(layout.pack_lease_id(lease_id), db=self.s._lease) is not None

    def check_lease(self, lease_id: int):
        if lease_id and not self.lease_exists(lease_id):
            raise LeaseNotFound("requested lease not found")

    def put(self, r: dict) -> dict:
        key = r["key"]
        prev = self.get(key, self.current())
        if (r["ignore_value"] or r["ignore_lease"]) and prev is None:
            raise InvalidArgument("key not found (ignore_value/ignore_lease need an existing key)")
        value = prev[4] if r["ignore_value"] else r["value"]
        lease = prev[5] if r["ignore_lease"] else r["lease"]
        self.check_lease(r["lease"])
        create, version = (prev[1], prev[3] + 1) if prev else (self.main, 1)
        self._write(PUT, [key, create, self.main, version, value, lease], prev)
        resp = {"header": {"revision": self.main}}
        if r["prev_kv"] and prev is not None:
            resp["prev_kv"] = kv_dict(prev)
        return resp

    def delete_range(self, r: dict) -> dict:
        key, end = requests.key_range(r["key"], r["range_end"])
        prevs = [self.kv(dv) for _, dv in self.scan(key, end, self.current())]
        for prev in prevs:
            self._write(DELETE, [prev[0], 0, self.main, 0, b"", 0], prev)
        return {"header": {"revision": self.current()}, "deleted": len(prevs),
                "prev_kvs": [kv_dict(p) for p in prevs] if r["prev_kv"] else []}

    # -- txn -----------------------------------------------------------------------------------

    def compare(self, c: dict) -> bool:
        field, i = requests.CMP_TARGETS[c["target"]]
        kvs = [self.kv(dv) for _, dv in self.scan(*requests.key_range(c["key"], c["range_end"]), self.rev)]
        if not kvs:
            if c["target"] == "VALUE":
                return False               # etcd: a missing key has no value to compare
            kvs = [[c["key"], 0, 0, 0, b"", 0]]
        want, result = c[field], c["result"]
        for kv in kvs:
            d = (kv[i] > want) - (kv[i] < want)
            if not (d == 0 if result == "EQUAL" else d > 0 if result == "GREATER"
                    else d < 0 if result == "LESS" else d != 0):
                return False
        return True

    def path(self, t: dict):
        """Evaluate every compare of the txn tree before any write, as etcd's compareToPath does."""
        ok = all(self.compare(c) for c in t["compare"])
        return ok, [self.path(b) for kind, b in t["success" if ok else "failure"] if kind == "txn"]

    def precheck(self, t: dict, path, kind: str):
        """etcd's checkRequests on the taken path, against the state before the txn: first every put
        of the path (checkRequestPut), then every range (checkRequestRange), as etcd's Txn does."""
        ok, subs = path
        subs = iter(subs)
        for k, b in t["success" if ok else "failure"]:
            if k == "txn":
                self.precheck(b, next(subs), kind)
            elif k != kind:
                continue
            elif kind == "range" and b["revision"]:
                self.check_rev(b["revision"], self.rev)
            elif kind == "put":
                if (b["ignore_value"] or b["ignore_lease"]) and self.get(b["key"], self.rev) is None:
                    raise InvalidArgument("key not found (ignore_value/ignore_lease need an existing key)")
                self.check_lease(b["lease"])   # etcd's checkRequestPut: before any op of the txn runs

    def run_txn(self, t: dict, path) -> dict:
        ok, subs = path
        subs = iter(subs)
        responses = []
        for kind, b in t["success" if ok else "failure"]:
            if kind == "txn":
                responses.append({"response_txn": self.run_txn(b, next(subs))})
            else:
                responses.append({"response_" + kind: getattr(self, kind)(b)})
        return {"header": {"revision": 0}, "succeeded": ok, "responses": responses}

    def txn(self, t: dict) -> dict:
        check_duplicates(t)                # etcd: at the API, before compares and revision checks
        path = self.path(t)
        self.precheck(t, path, "put")
        self.precheck(t, path, "range")
        resp = self.run_txn(t, path)
        _set_header(resp, self.current())
        return resp

    # -- compaction (logical; the physical part is compaction.py) ------------------------------

    def compact(self, r: dict) -> dict:
        rev = r["revision"]
        if rev <= self.crev:
            raise Compacted("required revision has been compacted", compact_revision=self.crev)
        if rev > self.rev:
            raise FutureRevision("required revision is a future revision", current_revision=self.rev)
        cursors.check_compact(self, rev)   # never past the oldest durable cursor (SPEC.md 6.2)
        meta = self.s._meta
        # Logical compaction is immediate; physical compaction (re)starts from the first key.
        self.lt.put(layout.COMPACT_REV, layout.pack_int(rev), db=meta)
        done, _ = layout.unpack_compact_done(self.lt.get(layout.COMPACT_DONE, db=meta))
        self.lt.put(layout.COMPACT_DONE, layout.pack_compact_done(done), db=meta)
        self.crev = rev
        return {"header": {"revision": self.rev}}

    # -- leases (the persistent half; the writer's lease clock holds the deadlines) -------------

    def lease_grant(self, r: dict) -> dict:
        """etcd's lessor.Grant: ID 0 -> a fresh positive ID; TTL too large, ID taken: errors;
        a TTL below the minimum is raised to it.  Not a revision (the header does not move)."""
        lease_id, ttl = r["ID"], r["TTL"]
        if ttl > MAX_LEASE_TTL:
            raise LeaseTTLTooLarge("too large lease TTL")
        if lease_id == 0:
            while not lease_id or self.lease_exists(lease_id):
                lease_id = int.from_bytes(os.urandom(8), "big") & ((1 << 63) - 1)
        elif self.lease_exists(lease_id):
            raise LeaseExists("lease already exists")
        ttl = max(ttl, self.s.min_lease_ttl)
        self.lt.put(layout.pack_lease_id(lease_id), layout.pack_lease(ttl), db=self.s._lease)
        return {"header": {"revision": self.rev}, "ID": lease_id, "TTL": ttl}

    def lease_revoke(self, r: dict) -> dict:
        """Delete every key attached to the lease in ONE revision (none if it has no key), then
        forget the lease.  An expiry is the same request, sent by the writer's lease clock."""
        if not self.lease_exists(r["ID"]):  # (ID 0 included: no lease by that ID, as in etcd)
            raise LeaseNotFound("requested lease not found")
        id8 = layout.pack_lease_id(r["ID"])
        cur = self.lt.cursor(db=self.s._leasekeys)
        keys = list(cur.iternext_dup()) if cur.set_key(id8) else []
        keyrev = self.lt.cursor(db=self.s._keyrev)
        for key in keys:                   # key order: the revision's events come sorted by key
            prev = self.get(key, self.main, keyrev)     # (keys are distinct: main reads as current)
            if prev is not None and prev[5] == r["ID"]:     # always, by the leasekeys invariant
                self._write(DELETE, [key, 0, self.main, 0, b"", 0], prev, attach=False)
        # Every key is detached at once: one delete of the lease's dups, not one per key (a lease
        # with 100,000 keys is revoked in one commit that every other write waits for).
        self.lt.delete(id8, db=self.s._leasekeys)
        self.lt.delete(id8, db=self.s._lease)
        return {"header": {"revision": self.current()}}

    # -- durable named cursors (cursors.py; not a revision: the header does not move) ---------

    def cursor_put(self, r: dict) -> dict:
        return cursors.op_put(self, r)

    def cursor_get(self, r: dict) -> dict:
        return cursors.op_get(self, r)

    def cursor_list(self, r: dict, visible=None) -> dict:
        return cursors.op_list(self, r, visible)

    def cursor_delete(self, r: dict) -> dict:
        return cursors.op_delete(self, r)

    def run(self, op, body, auth=None, user: str | None = None) -> dict:
        """auth: the batch's authtx.AuthBatch (None: no auth op may run, nothing is checked);
        user: who sent it (None: an internal peer, unchecked; "": anonymous; else a user name)."""
        if isinstance(op, str) and op in requests.AUTH_STORE_OPS and auth is not None:
            return auth.run(self, op, requests.normalize(op, body), user)
        if not isinstance(op, str) or op not in requests.STORE_OPS:
            raise InvalidArgument(f"unknown op {op!r}")
        r = requests.normalize(op, body)
        if auth is not None and user is not None:
            if op == "txn":
                check_duplicates(r)        # etcd checks it at the API, before any permission
            auth.check(self, op, r, user)
            if op == "cursor_list":        # only the cursors over a range the user may read
                return self.cursor_list(r, auth.cursor_visible(self, user))
        resp = getattr(self, op)(r)
        if self.sub:
            self.lt.put(layout.CURRENT_REV, layout.pack_int(self.main), db=self.s._meta)
        return resp


# ---------------------------------------------------------------------------------------------
# etcd's duplicate-key check of a txn (its intervals are not key_range's: see _del_interval).

def _del_interval(b: dict):
    """The keys a txn delete_range counts for in etcd's duplicate check, as [start, end), or None.

    etcd builds adt.NewStringAffineInterval(key, range_end), where only "" means "no upper bound"
    and range_end "\\x00" is just a short string: a from-key delete is an inverted interval that
    overlaps nothing, so it never makes a put a duplicate (nor does key >= range_end)."""
    key, end = b["key"], b["range_end"]
    if end == b"":
        return key, key + b"\x00"
    return (key, end) if key < end else None


def _covered(dels: list, queries: list) -> bool:
    """dels: [(start, end, time)]; queries: [(key, horizon)].  True if some delete with
    time < horizon contains a query's key.  One sweep in key order, a heap by time of the deletes
    begun so far: O((d + q) log(d + q))."""
    dels.sort(key=lambda d: d[0])
    queries.sort(key=lambda q: q[0])
    active, i = [], 0
    for key, horizon in queries:
        while i < len(dels) and dels[i][0] <= key:
            heapq.heappush(active, (dels[i][2], dels[i][1]))
            i += 1
        while active and active[0][1] <= key:       # ended before this key: before every later key too
            heapq.heappop(active)
        if active and active[0][0] < horizon:
            return True
    return False


def check_duplicates(t: dict):
    """etcd 3.4's checkIntervals (etcdserver/api/v3rpc/key.go), exactly, in O(n log n).

    etcd runs it on the success and on the failure list of the request, before any compare and
    before any COMPACTED / FUTURE_REVISION / key-not-found check, so a duplicate in a branch that
    is not taken is an error too.  Within one list: a put conflicts with an earlier put, and with a
    delete of the list itself; the puts of a nested txn (both its branches, recursively) conflict
    with the deletes of the list and of the nested txns *before* it, and with the puts of nested
    txns before it, except that its failure branch may repeat a key of its own success branch; the
    list's own puts conflict with every delete of the list and of its nested txns."""
    for branch in ("success", "failure"):
        _check_list(t[branch])


def _check_list(ops) -> tuple[set, list]:
    """-> (keys put, [(start, end)] deleted) by ops and their nested txns, as etcd returns them."""
    dels = [(*iv, 0) for kind, b in ops if kind == "delete_range" and (iv := _del_interval(b))]
    puts, queries, child = set(), [], 0
    for kind, b in ops:
        if kind != "txn":
            continue
        child += 1                          # this nested txn sees the deletes with time < child
        then_puts, then_dels = _check_list(b["success"])
        else_puts, else_dels = _check_list(b["failure"])
        if not then_puts.isdisjoint(puts) or not else_puts.isdisjoint(puts):
            raise InvalidArgument("duplicate key given in txn request")
        queries += [(k, child) for k in then_puts | else_puts]
        puts |= then_puts
        puts |= else_puts
        dels += [(a, e, child) for a, e in then_dels + else_dels]
    for kind, b in ops:
        if kind == "put":
            if b["key"] in puts:
                raise InvalidArgument("duplicate key given in txn request")
            puts.add(b["key"])
            queries.append((b["key"], child + 1))
    if _covered(dels, queries):
        raise InvalidArgument("duplicate key given in txn request")
    return puts, [(a, e) for a, e, _ in dels]
