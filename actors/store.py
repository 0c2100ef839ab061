"""etcd v3's MVCC data model on one LMDB file.

Layout (named dbs in one env; only the writer process writes, syncers read from other processes):

* ``meta``:    b"current_rev", b"compact_rev" (8-byte BE), b"compact_done" (8-byte BE revision up to which
  physical compaction is finished, followed by the key to resume from while one is pending),
  b"format" (8-byte BE, 1).  An empty store is at revision 1: the first write gets revision 2.
* ``history``: (main, sub) as 16 bytes BE -> msgpack ``[type, key, create, mod, version, value, lease]``.
  Replay from a revision is one cursor scan.
* ``keyrev``:  user key -> dups of (main, sub) 16 bytes + flag (b"\\x01" tombstone, b"\\x00" put).
  Dups sort by revision, so "latest record <= R" is a seek, and compaction walks it key by key.

Nothing is cached in memory across transactions: opening a huge store is instant and any number of
reader processes see exactly what the writer committed.
"""
from __future__ import annotations

import errno
import heapq
import os
import struct
from functools import wraps

import lmdb
import msgpack

from zwatch.errors import Compacted, FutureRevision, Internal, InvalidArgument, NoSpace, ZwatchError
from zwatch.limits import MAX_KEY_BYTES, MAX_REVISION, MAX_TXN_DEPTH, MAX_TXN_OPS

PUT, DELETE = 0, 1
FORMAT = 1

_Q = struct.Struct(">Q")
_QQ = struct.Struct(">QQ")
_LIVE, _TOMB = b"\x00", b"\x01"
_INT64 = (-(1 << 63), (1 << 63) - 1)
# Compares plus request ops of a whole txn tree, every nesting level and both branches counted.
# etcd bounds a tree only by the request size (1.5 MiB holds ~31,000 tiny ops); this bounds the
# work one request can make the single writer do.  64 full etcd txns' worth: no sane txn nears it.
MAX_TXN_TREE_OPS = 8192


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(raw):
    return msgpack.unpackb(raw, raw=False)


def _kvd(kv, keys_only=False) -> dict:
    """A kv list as etcd's KeyValue message."""
    d = {"key": kv[0], "create_revision": kv[1], "mod_revision": kv[2], "version": kv[3],
         "value": kv[4], "lease": kv[5]}
    if keys_only:
        del d["value"]
    return d


def _bounds(key: bytes, range_end: bytes):
    """etcd's range rules as a half-open [key, end); end None means no upper bound."""
    if range_end == b"":
        return key, key + b"\x00"          # exactly `key`
    if range_end == b"\x00":
        return key, None                   # every key >= key
    return key, range_end                  # key >= range_end simply matches nothing


def _here(cur, rev: int):
    """cur is on some key: return that key's latest keyrev dup with main <= rev, or None.

    The cursor stays on the key either way, so next_nodup() moves to the next key."""
    cur.last_dup()
    dv = cur.value()
    if _Q.unpack_from(dv)[0] <= rev:
        return dv                          # the common case: reading the current state
    key = cur.key()
    # An 8-byte probe sorts before every 17-byte dup with that prefix: lands on the first main > rev,
    # which exists because the last dup is newer than rev.
    cur.set_range_dup(key, _Q.pack(rev + 1))
    if cur.prev_dup():
        return cur.value()
    cur.set_key(key)                       # a failed prev_dup leaves the cursor unpositioned
    return None


# ---------------------------------------------------------------------------------------------
# Validation: requests come off the wire; every malformation is an InvalidArgument, nothing else.

_REQUIRED = object()
_SORT_ORDERS = ("NONE", "ASCEND", "DESCEND")
_SORT_TARGETS = {"KEY": 0, "CREATE": 1, "MOD": 2, "VERSION": 3, "VALUE": 4}     # index in a kv list
_CMP_TARGETS = {"VERSION": ("version", 3), "CREATE": ("create_revision", 1),
                "MOD": ("mod_revision", 2), "VALUE": ("value", 4), "LEASE": ("lease", 5)}
_CMP_RESULTS = ("EQUAL", "GREATER", "LESS", "NOT_EQUAL")

_RANGE = {"key": ("key", _REQUIRED), "range_end": ("bytes", b""), "limit": ("uint", 0),
          "revision": ("uint", 0), "sort_order": (_SORT_ORDERS, "NONE"),
          "sort_target": (tuple(_SORT_TARGETS), "KEY"), "serializable": ("bool", False),
          "keys_only": ("bool", False), "count_only": ("bool", False),
          "min_mod_revision": ("uint", 0), "max_mod_revision": ("uint", 0),
          "min_create_revision": ("uint", 0), "max_create_revision": ("uint", 0)}
_PUT = {"key": ("key", _REQUIRED), "value": ("bytes", b""), "lease": ("int64", 0),
        "prev_kv": ("bool", False), "ignore_value": ("bool", False), "ignore_lease": ("bool", False)}
_DELETE = {"key": ("key", _REQUIRED), "range_end": ("bytes", b""), "prev_kv": ("bool", False)}
_TXN = {"compare": ("list", []), "success": ("list", []), "failure": ("list", [])}
_COMPARE = {"key": ("key", _REQUIRED), "range_end": ("bytes", b""),
            "target": (tuple(_CMP_TARGETS), "VERSION"), "result": (_CMP_RESULTS, "EQUAL"),
            "version": ("int64", 0), "create_revision": ("int64", 0), "mod_revision": ("int64", 0),
            "lease": ("int64", 0), "value": ("bytes", b"")}
_COMPACT = {"revision": ("uint", _REQUIRED), "physical": ("bool", False)}
_TXN_OPS = {"request_range": "range", "request_put": "put",
            "request_delete_range": "delete_range", "request_txn": "txn"}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _norm(body, spec: dict, where: str) -> dict:
    """Check a request map against spec {field: (kind, default)}; return it with defaults filled in."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where} must be a map, got {type(body).__name__}")
    unknown = [k for k in body if k not in spec]
    if unknown:
        raise InvalidArgument(f"{where}: unknown field {unknown[0]!r}")
    out = {}
    for name, (kind, default) in spec.items():
        if name not in body:
            if default is _REQUIRED:
                raise InvalidArgument(f"{where}.{name} is required")
            out[name] = default
            continue
        v = body[name]
        if kind in ("key", "bytes"):
            if not isinstance(v, bytes):
                raise InvalidArgument(f"{where}.{name} must be bytes, got {type(v).__name__}")
            if kind == "key" and not v:
                raise InvalidArgument(f"{where}.{name} must not be empty")
            if kind == "key" and len(v) > MAX_KEY_BYTES:
                raise InvalidArgument(f"{where}.{name} is {len(v)} bytes, the limit is {MAX_KEY_BYTES}")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise InvalidArgument(f"{where}.{name} must be a bool, got {type(v).__name__}")
        elif kind in ("uint", "int64"):
            lo, hi = (0, MAX_REVISION) if kind == "uint" else _INT64
            if not _is_int(v):
                raise InvalidArgument(f"{where}.{name} must be an integer, got {type(v).__name__}")
            if not lo <= v <= hi:
                raise InvalidArgument(f"{where}.{name}={v} is outside [{lo}, {hi}]")
        elif kind == "list":
            if not isinstance(v, (list, tuple)):
                raise InvalidArgument(f"{where}.{name} must be a list, got {type(v).__name__}")
        elif v not in kind:                # an enum: a tuple of allowed strings
            raise InvalidArgument(f"{where}.{name} must be one of {', '.join(kind)}, got {v!r}")
        out[name] = v
    return out


def _norm_put(body, where: str) -> dict:
    r = _norm(body, _PUT, where)
    if r["lease"] != 0:
        raise InvalidArgument(f"{where}: leases are not supported")
    if r["ignore_value"] and r["value"]:
        raise InvalidArgument(f"{where}: value is provided together with ignore_value")
    return r


def _norm_compare(body, where: str) -> dict:
    c = _norm(body, _COMPARE, where)
    field = _CMP_TARGETS[c["target"]][0]
    for other, _ in _CMP_TARGETS.values():
        if other != field and other in body:
            raise InvalidArgument(f"{where}: target {c['target']} compares '{field}', not '{other}'")
    return c


def _norm_txn(body, where: str, depth: int = 1, budget: list | None = None) -> dict:
    """Validate a whole txn tree up front (both branches, as etcd does) before anything runs.

    budget[0] is what is left of MAX_TXN_TREE_OPS for the whole tree."""
    if depth > MAX_TXN_DEPTH:
        raise InvalidArgument(f"{where}: txn nested deeper than {MAX_TXN_DEPTH}")
    if budget is None:
        budget = [MAX_TXN_TREE_OPS]
    t = _norm(body, _TXN, where)
    n = max(len(t["compare"]), len(t["success"]), len(t["failure"]))
    if n > MAX_TXN_OPS:
        raise InvalidArgument(f"{where}: too many operations in txn request ({n} > {MAX_TXN_OPS})")
    budget[0] -= len(t["compare"]) + len(t["success"]) + len(t["failure"])
    if budget[0] < 0:
        raise InvalidArgument(f"too many operations in txn request: more than {MAX_TXN_TREE_OPS} "
                              f"compares and ops in all nested txns together")
    t["compare"] = [_norm_compare(c, f"{where}.compare[{i}]") for i, c in enumerate(t["compare"])]
    for branch in ("success", "failure"):
        ops = []
        for i, op in enumerate(t[branch]):
            w = f"{where}.{branch}[{i}]"
            if not isinstance(op, dict) or len(op) != 1 or next(iter(op)) not in _TXN_OPS:
                raise InvalidArgument(f"{w} must be a map with exactly one of {', '.join(_TXN_OPS)}")
            (name, sub), = op.items()
            kind = _TXN_OPS[name]
            ops.append((kind, _NORM[kind](sub, f"{w}.{name}") if kind != "txn"
                        else _norm_txn(sub, f"{w}.{name}", depth + 1, budget)))
        t[branch] = ops
    return t


_NORM = {"range": lambda b, w: _norm(b, _RANGE, w), "put": _norm_put,
         "delete_range": lambda b, w: _norm(b, _DELETE, w), "txn": _norm_txn,
         "compact": lambda b, w: _norm(b, _COMPACT, w)}


def _set_header(resp: dict, rev: int):
    """Every response inside a txn carries the txn's revision."""
    resp["header"]["revision"] = rev
    for r in resp.get("responses", ()):
        _set_header(next(iter(r.values())), rev)


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


def _check_duplicates(t: dict):
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


# ---------------------------------------------------------------------------------------------

class _Tx:
    """One LMDB txn seen through etcd's model.  `rev` is the current revision before the request;
    a write request's records all get main revision `main` = rev + 1, numbered by `sub`."""

    # s: the Store, lt: the LMDB txn, crev: the compact revision
    __slots__ = ("s", "lt", "rev", "crev", "main", "sub", "events")

    def __init__(self, store: "Store", txn, rev: int | None = None, compact: int | None = None):
        self.s, self.lt = store, txn
        if rev is None:
            rev = _Q.unpack(txn.get(b"current_rev", db=store._meta))[0]
            compact = _Q.unpack(txn.get(b"compact_rev", db=store._meta))[0]
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
        return _unpack(self.lt.get(dv[:16], db=self.s._history))[1:]

    def get(self, key: bytes, rev: int):
        """key's kv list as of rev, or None."""
        cur = self.lt.cursor(db=self.s._keyrev)
        if not cur.set_key(key):
            return None
        dv = _here(cur, rev)
        return self.kv(dv) if dv is not None and dv[16:] == _LIVE else None

    def scan(self, key: bytes, end, rev: int) -> list:
        """[(key, dup)] of the keys in [key, end) alive at rev, in key order."""
        out = []
        cur = self.lt.cursor(db=self.s._keyrev)
        ok = cur.set_range(key)
        while ok:
            k = cur.key()
            if end is not None and k >= end:
                break
            dv = _here(cur, rev)
            if dv is not None and dv[16:] == _LIVE:
                out.append((k, dv))
            ok = cur.next_nodup()
        return out

    def range(self, r: dict) -> dict:
        current = self.current()
        rev = self.check_rev(r["revision"], current)
        live = self.scan(*_bounds(r["key"], r["range_end"]), rev)
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
                i = _SORT_TARGETS[target]
                kvs.sort(key=lambda kv: kv[i], reverse=order == "DESCEND")
            total = len(kvs)
            if limit:
                kvs = kvs[:limit]
        resp["more"] = bool(limit) and total > limit
        resp["kvs"] = [_kvd(kv, r["keys_only"]) for kv in kvs]
        return resp

    # -- writes --------------------------------------------------------------------------------

    def _write(self, typ: int, kv: list, prev):
        h = _QQ.pack(self.main, self.sub)
        self.sub += 1
        self.lt.put(h, _pack([typ, *kv]), db=self.s._history, append=True)
        self.lt.put(kv[0], h + (_TOMB if typ else _LIVE), db=self.s._keyrev)
        self.events.append((typ, kv, prev))

    def put(self, r: dict) -> dict:
        key = r["key"]
        prev = self.get(key, self.current())
        if (r["ignore_value"] or r["ignore_lease"]) and prev is None:
            raise InvalidArgument("key not found (ignore_value/ignore_lease need an existing key)")
        value = prev[4] if r["ignore_value"] else r["value"]
        lease = prev[5] if r["ignore_lease"] else r["lease"]
        create, version = (prev[1], prev[3] + 1) if prev else (self.main, 1)
        self._write(PUT, [key, create, self.main, version, value, lease], prev)
        resp = {"header": {"revision": self.main}}
        if r["prev_kv"] and prev is not None:
            resp["prev_kv"] = _kvd(prev)
        return resp

    def delete_range(self, r: dict) -> dict:
        key, end = _bounds(r["key"], r["range_end"])
        prevs = [self.kv(dv) for _, dv in self.scan(key, end, self.current())]
        for prev in prevs:
            self._write(DELETE, [prev[0], 0, self.main, 0, b"", 0], prev)
        return {"header": {"revision": self.current()}, "deleted": len(prevs),
                "prev_kvs": [_kvd(p) for p in prevs] if r["prev_kv"] else []}

    def compare(self, c: dict) -> bool:
        field, i = _CMP_TARGETS[c["target"]]
        kvs = [self.kv(dv) for _, dv in self.scan(*_bounds(c["key"], c["range_end"]), self.rev)]
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
            elif kind == "put" and (b["ignore_value"] or b["ignore_lease"]) \
                    and self.get(b["key"], self.rev) is None:
                raise InvalidArgument("key not found (ignore_value/ignore_lease need an existing key)")

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
        _check_duplicates(t)               # etcd: at the API, before compares and revision checks
        path = self.path(t)
        self.precheck(t, path, "put")
        self.precheck(t, path, "range")
        resp = self.run_txn(t, path)
        _set_header(resp, self.current())
        return resp

    def compact(self, r: dict) -> dict:
        rev = r["revision"]
        if rev <= self.crev:
            raise Compacted("required revision has been compacted", compact_revision=self.crev)
        if rev > self.rev:
            raise FutureRevision("required revision is a future revision", current_revision=self.rev)
        meta = self.s._meta
        # Logical compaction is immediate; physical compaction (re)starts from the first key.
        self.lt.put(b"compact_rev", _Q.pack(rev), db=meta)
        self.lt.put(b"compact_done", self.lt.get(b"compact_done", db=meta)[:8], db=meta)
        self.crev = rev
        return {"header": {"revision": self.rev}}

    def run(self, op, body) -> dict:
        if not isinstance(op, str) or op not in _NORM:
            raise InvalidArgument(f"unknown op {op!r}")
        resp = getattr(self, op)(_NORM[op](body, op))
        if self.sub:
            self.lt.put(b"current_rev", _Q.pack(self.main), db=self.s._meta)
        return resp


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
    if not _is_int(v) or not lo <= v <= hi:
        raise InvalidArgument(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")


class ReadView:
    """``with store.reader() as view:`` one LMDB read txn, a consistent snapshot."""

    def __init__(self, store: "Store"):
        self._store = store
        self._txn = self._tx = None

    def __enter__(self) -> "ReadView":
        self._txn = self._store._begin()
        try:
            self._tx = _Tx(self._store, self._txn)
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
        return self._tx.range(_norm(req, _RANGE, "range"))

    @_guard
    def history(self, from_rev: int, to_rev: int, max_records: int = 1000,
                max_bytes: int = 1 << 20) -> list:
        """Records with from_rev <= main <= to_rev as (main, sub, type, kv, nbytes), in order.

        Whole revisions only: stops before a revision that would push the result past max_records or
        max_bytes, except that the first revision is returned whole however big it is."""
        _check_int(from_rev, "from_rev")
        _check_int(to_rev, "to_rev")
        _check_int(max_records, "max_records", 1)
        _check_int(max_bytes, "max_bytes", 1)
        if from_rev < self.compact_revision:
            raise Compacted("required revision has been compacted", compact_revision=self.compact_revision)
        out, size, group, gsize, gmain, scanned = [], 0, [], 0, -1, 0
        cur = self._txn.cursor(db=self._store._history)
        if cur.set_range(_QQ.pack(from_rev, 0)):
            for k, v in cur.iternext():
                main, sub = _QQ.unpack(k)
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
                rec = _unpack(v)
                group.append((main, sub, rec[0], rec[1:], len(v)))
                gsize += len(v)
            out += group                   # no-op after a break (group was taken or dropped)
        self._store.records_scanned += scanned
        return out

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
        if cur.set_range_dup(key, _QQ.pack(main, sub)):
            if not cur.prev_dup():
                return None
        else:                              # every record of the key is older
            cur.set_key(key)
            cur.last_dup()
        dv = cur.value()
        return self._tx.kv(dv) if dv[16:] == _LIVE else None


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
                 max_readers: int = 512):
        self.path = path
        self.max_map_size = max(map_size, max_map_size)
        self.records_scanned = 0
        self.commit_failure: dict | None = None    # why the last apply_batch failed as a whole
        self.env = lmdb.open(path, map_size=map_size, subdir=True, max_dbs=4,
                             max_readers=max_readers, sync=True, metasync=True, lock=True)
        self.env.reader_check()            # drop reader slots left by dead processes
        # Always open the named dbs in a write txn: with py-lmdb 3.0 a handle opened inside a
        # read-only txn is invalid once that txn ends (mdb_get: Invalid argument).  It takes the
        # writer lock once, at start-up only.
        self._open_dbs(write=True)
        with self.env.begin() as txn:
            fmt = txn.get(b"format", db=self._meta)
        if fmt != _Q.pack(FORMAT):
            self.env.close()
            raise Internal(f"{path}: unsupported store format {fmt!r}")

    def _open_dbs(self, write: bool):
        with self.env.begin(write=write) as txn:
            self._meta = self.env.open_db(b"meta", txn=txn, create=write)
            self._history = self.env.open_db(b"history", txn=txn, create=write)
            self._keyrev = self.env.open_db(b"keyrev", txn=txn, create=write, dupsort=True,
                                            dupfixed=True)
            if write and txn.get(b"format", db=self._meta) is None:
                for k, v in ((b"current_rev", 1), (b"compact_rev", 0), (b"compact_done", 0),
                             (b"format", FORMAT)):
                    txn.put(k, _Q.pack(v), db=self._meta)

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

    def reader(self) -> ReadView:
        return ReadView(self)

    def range(self, req: dict) -> dict:
        with self.reader() as v:
            return v.range(req)

    def apply_batch(self, requests: list) -> tuple[list, list]:
        """Apply every request in one LMDB write txn, committed durably once (group commit).

        Returns (results, published): results[i] is request i's response or its ZwatchError (a failed
        request runs in a nested txn that is aborted, so it changes nothing); published is
        [(main, [(type, kv, prev_kv), ...]), ...] for each revision created, in order.
        When the whole batch failed for the storage, commit_failure says why (else it is None)."""
        n = len(requests)
        self.commit_failure = None
        while True:
            txn = self._begin(write=True)
            written = 0
            try:
                results, published = self._apply(txn, requests)
                written = sum(len(kv[0]) + len(kv[4]) for _, events in published for _, kv, _ in events)
                self._commit(txn)
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

    def _apply(self, txn, requests):
        head = _Tx(self, txn)
        rev, compact = head.rev, head.crev
        results, published = [], []
        for item in requests:
            child = self.env.begin(write=True, parent=txn)
            t = _Tx(self, child, rev, compact)
            try:
                if not isinstance(item, (tuple, list)) or len(item) != 2:
                    raise InvalidArgument(f"a request must be an (op, body) pair, got {type(item).__name__}")
                resp = t.run(*item)
            except ZwatchError as e:
                child.abort()
                results.append(e)
                continue
            except lmdb.Error:
                child.abort()
                raise                      # map full or storage fault: the whole batch
            except Exception as e:         # a bug: fail this request only, keep serving
                child.abort()
                results.append(Internal(f"{type(e).__name__}: {e}"))
                continue
            child.commit()
            if t.sub:
                rev = t.main
                published.append((rev, t.events))
            compact = t.crev
            results.append(resp)
        return results, published

    def compact_step(self, max_keys: int = 1000) -> bool:
        """One bounded chunk of pending physical compaction in its own write txn; True if more remains.

        max_keys bounds the work: keys visited plus records removed."""
        while True:
            txn = self._begin(write=True)
            try:
                more = self._compact_chunk(txn, max(1, max_keys))
                if more is None:
                    txn.abort()            # nothing pending: no commit, no fsync
                    return False
                self._commit(txn)
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

    def _compact_chunk(self, txn, budget: int):
        """Returns None if nothing is pending, else whether more remains after this chunk."""
        meta = self._meta
        target = _Q.unpack(txn.get(b"compact_rev", db=meta))[0]
        state = txn.get(b"compact_done", db=meta)
        if _Q.unpack_from(state)[0] >= target:
            return None
        resume = self._compact_keys(txn, target, state[8:], budget)
        done = state[:8] if resume else _Q.pack(target)
        txn.put(b"compact_done", done + (resume or b""), db=meta)
        return resume is not None

    def _compact_keys(self, txn, target: int, resume: bytes, budget: int):
        """Keep each key's latest record as of target (a tombstone only if exactly at target, etcd
        #18089), drop its older records from keyrev and history.  Returns the key to resume from."""
        cur = txn.cursor(db=self._keyrev)
        ok = cur.set_range(resume) if resume else cur.first()
        while ok:
            k = cur.key()
            if budget <= 0:
                return k
            budget -= 1
            last = _here(cur, target)
            if last is not None:
                drop_last = last[16:] == _TOMB and _Q.unpack_from(last)[0] < target
                stop = last + b"\x01" if drop_last else last   # delete every dup < stop
                cur.set_key(k)
                while cur.value() < stop:  # at least one removal per visit: always progress
                    txn.delete(cur.value()[:16], db=self._history)
                    cur.delete()           # moves to the next dup, or on to the next key
                    budget -= 1
                    if cur.key() != k:
                        break
                    if budget <= 0 and cur.value() < stop:
                        return k           # a hot key may take several chunks
            ok = cur.set_range(k) and (cur.key() != k or cur.next_nodup())
        return None
