"""Model-based test of actors/store.py: a real LMDB store against a tiny pure-Python model of etcd's
MVCC semantics (revisions, versions, tombstones, ranges, txns, compaction, history, prev_kv) and of
its leases (grants, puts under a lease, revokes deleting the attached keys in one revision; an
expiry is the writer's clock sending a revoke, so at the store level it is a revoke)."""
from __future__ import annotations

import shutil
import struct
import tempfile

import msgpack
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from zwatch.actors.store import DELETE, PUT, Store
from zwatch.errors import (Compacted, FutureRevision, InvalidArgument, LeaseExists, LeaseNotFound,
                           LeaseTTLTooLarge, ZwatchError)
from zwatch.limits import MAX_LEASE_TTL, MAX_TXN_DEPTH, MAX_TXN_OPS

KEYS = [b"a", b"ab", b"b", b"\x00", b"\xff"]
ENDS = [b"", b"\x00", b"ab", b"b", b"c", b"a\x00", b"\xff", b"\xff\x00", b"a"]
VALUES = [b"", b"x", b"yy"]
TARGETS = {"VERSION": ("version", 3), "CREATE": ("create_revision", 1), "MOD": ("mod_revision", 2),
           "VALUE": ("value", 4), "LEASE": ("lease", 5)}
SORT_IDX = {"KEY": 0, "CREATE": 1, "MOD": 2, "VERSION": 3, "VALUE": 4}
# Explicit lease IDs (a negative one too: etcd stores an int64 as its uint64 bytes); 0 is "no lease"
# on a put and "pick one for me" on a grant.
LEASE_IDS = [1, 2, 7, -3]
MIN_LEASE_TTL = 5
TTLS = [-1, 0, 1, MIN_LEASE_TTL, 60, MAX_LEASE_TTL, MAX_LEASE_TTL + 1]


def in_range(k, key, end):
    if end == b"":
        return k == key
    if end == b"\x00":
        return k >= key
    return key <= k < end


def kvd(kv, keys_only=False):
    d = dict(zip(("key", "create_revision", "mod_revision", "version", "value", "lease"), kv))
    if keys_only:
        del d["value"]
    return d


def nested(resp):
    yield resp
    for r in resp.get("responses", ()):
        yield from nested(next(iter(r.values())))


class Model:
    """etcd's semantics, naively: every record of every key kept forever in a list."""

    def __init__(self):
        self.rev, self.compact = 1, 0
        self.recs = {}     # key -> [(main, sub, kv or None)] in revision order
        self.log = []      # (main, sub, type, kv)
        self.leases = {}   # lease ID -> granted TTL; a key is attached to the lease its live kv names

    def attached(self, lease_id):
        """The keys a revoke of lease_id deletes: those whose live kv names it, in key order."""
        return [k for k, kv in self.live(b"\x00", b"\x00", self.rev) if kv[5] == lease_id]

    def at(self, key, rev):
        kv = None
        for main, _, v in self.recs.get(key, ()):
            if main <= rev:
                kv = v
        return kv

    def before(self, key, main, sub):
        """key's kv just before its record (main, sub): the deleted KeyValue of a delete, even when
        the same txn put it first (etcd gives the kv at main-1 there: docs/design.md section 11)."""
        kv = None
        for m, s, v in self.recs.get(key, ()):
            if (m, s) < (main, sub):
                kv = v
        return kv

    def live(self, key, end, rev):
        return [(k, kv) for k in sorted(self.recs)
                if in_range(k, key, end) and (kv := self.at(k, rev)) is not None]

    def survivors(self):
        """(key, main, sub, is_tombstone) left once compaction at self.compact is physically done."""
        out = set()
        for k, recs in self.recs.items():
            old = [r for r in recs if r[0] <= self.compact]
            keep = [r for r in recs if r[0] > self.compact]
            if old and not (old[-1][2] is None and old[-1][0] < self.compact):
                keep.append(old[-1])
            out |= {(k, m, s, kv is None) for m, s, kv in keep}
        return out

    def apply(self, op, body, got=None):
        """-> (response or error, published entry or None).  got: the store's answer, whose
        server-picked lease ID (a grant with ID 0) the model cannot guess and so checks and adopts."""
        saved = (self.rev, self.compact, {k: list(v) for k, v in self.recs.items()}, len(self.log),
                 dict(self.leases))
        ex = Exec(self, got)
        try:
            if op == "invalid":
                raise InvalidArgument("expected")
            static_check(op, body)
            resp = getattr(ex, op)(body)
        except ZwatchError as e:
            self.rev, self.compact, self.recs = saved[:3]
            del self.log[saved[3]:]
            self.leases = saved[4]
            return e, None
        if ex.sub:
            self.rev = ex.main
            return resp, (ex.main, ex.events)
        return resp, None


def static_check(op, body):
    if op == "put" and body.get("ignore_value") and body.get("value"):
        raise InvalidArgument("value with ignore_value")
    if op == "put" and body.get("ignore_lease") and body.get("lease"):
        raise InvalidArgument("lease with ignore_lease")
    if op == "txn":
        for o in body.get("success", []) + body.get("failure", []):
            (name, b), = o.items()
            static_check(name[len("request_"):], b)


def etcd_affine_less(a, b):
    """etcd's adt.StringAffineComparable: "" sorts after every other string."""
    return a != b"" and (b == b"" or a < b)


def etcd_intersects(dels, key):
    """adt.IntervalTree.Intersects(NewStringAffinePoint(key)), naively: [key, key+"\\x00") against
    every interval [begin, end), with etcd's Interval.Compare (so inverted intervals meet nothing)."""
    point_end = key + b"\x00"
    for begin, end in dels:
        left = etcd_affine_less(key, begin) and not etcd_affine_less(begin, point_end)
        right = not etcd_affine_less(key, end)
        if not left and not right:
            return True
    return False


def check_intervals(ops):
    """etcd 3.4 checkIntervals (etcdserver/api/v3rpc/key.go), transcribed line by line."""
    dels = []
    for o in ops:
        if "request_delete_range" in o:
            d = o["request_delete_range"]
            end = d.get("range_end", b"")
            dels.append((d["key"], end) if end else (d["key"], d["key"] + b"\x00"))
    puts = set()
    for o in ops:
        if "request_txn" not in o:
            continue
        t = o["request_txn"]
        puts_then, dels_then = check_intervals(t.get("success", []))
        puts_else, dels_else = check_intervals(t.get("failure", []))
        for k in puts_then:
            if k in puts or etcd_intersects(dels, k):
                raise InvalidArgument("duplicate key")
            puts.add(k)
        for k in puts_else:
            if k in puts and k not in puts_then:
                raise InvalidArgument("duplicate key")
            if etcd_intersects(dels, k):
                raise InvalidArgument("duplicate key")
            puts.add(k)
        # Union with ["\x00", ""): every interval that overlaps it, i.e. every non-inverted one
        dels += [d for d in dels_then + dels_else if etcd_affine_less(d[0], d[1])]
    for o in ops:
        if "request_put" in o:
            k = o["request_put"]["key"]
            if k in puts or etcd_intersects(dels, k):
                raise InvalidArgument("duplicate key")
            puts.add(k)
    return puts, dels


class Exec:
    def __init__(self, m: Model, got=None):
        self.m, self.main, self.sub, self.events, self.got = m, m.rev + 1, 0, [], got

    def check_lease(self, lease_id):
        if lease_id and lease_id not in self.m.leases:
            raise LeaseNotFound("requested lease not found")

    def current(self):
        return self.main if self.sub else self.m.rev

    def _write(self, typ, kv, prev):
        self.m.recs.setdefault(kv[0], []).append((self.main, self.sub, kv if typ == PUT else None))
        self.m.log.append((self.main, self.sub, typ, kv))
        self.events.append((typ, kv, prev))
        self.sub += 1

    def range(self, b):
        cur = self.current()
        rev = b.get("revision", 0)
        if rev > cur:
            raise FutureRevision("future")
        rev = rev or cur
        if rev < self.m.compact:
            raise Compacted("compacted", compact_revision=self.m.compact)
        kvs = [kv for _, kv in self.m.live(b["key"], b.get("range_end", b""), rev)]
        resp = {"header": {"revision": cur}, "kvs": [], "more": False, "count": len(kvs)}
        if b.get("count_only"):
            return resp
        for name, i, keep in (("min_mod_revision", 2, lambda x, y: x >= y),
                              ("max_mod_revision", 2, lambda x, y: x <= y),
                              ("min_create_revision", 1, lambda x, y: x >= y),
                              ("max_create_revision", 1, lambda x, y: x <= y)):
            if b.get(name):
                kvs = [kv for kv in kvs if keep(kv[i], b[name])]
        order, target = b.get("sort_order", "NONE"), b.get("sort_target", "KEY")
        if order == "NONE" and target != "KEY":
            order = "ASCEND"
        if order != "NONE":
            kvs = sorted(kvs, key=lambda kv: kv[SORT_IDX[target]], reverse=order == "DESCEND")
        limit = b.get("limit", 0)
        resp["more"] = bool(limit) and len(kvs) > limit
        resp["kvs"] = [kvd(kv, b.get("keys_only", False)) for kv in (kvs[:limit] if limit else kvs)]
        return resp

    def put(self, b):
        key = b["key"]
        prev = self.m.at(key, self.current())
        if (b.get("ignore_value") or b.get("ignore_lease")) and prev is None:
            raise InvalidArgument("key not found")
        value = prev[4] if b.get("ignore_value") else b.get("value", b"")
        lease = prev[5] if b.get("ignore_lease") else b.get("lease", 0)
        self.check_lease(b.get("lease", 0))
        create, version = (prev[1], prev[3] + 1) if prev else (self.main, 1)
        self._write(PUT, [key, create, self.main, version, value, lease], prev)
        resp = {"header": {"revision": self.main}}
        if b.get("prev_kv") and prev:
            resp["prev_kv"] = kvd(prev)
        return resp

    def delete_range(self, b):
        key, end = b["key"], b.get("range_end", b"")
        gone = self.m.live(key, end, self.current())
        for k, prev in gone:
            self._write(DELETE, [k, 0, self.main, 0, b"", 0], prev)
        return {"header": {"revision": self.current()}, "deleted": len(gone),
                "prev_kvs": [kvd(p) for _, p in gone] if b.get("prev_kv") else []}

    def compare(self, c):
        target, result = c.get("target", "VERSION"), c.get("result", "EQUAL")
        field, i = TARGETS[target]
        kvs = [kv for _, kv in self.m.live(c["key"], c.get("range_end", b""), self.m.rev)]
        if not kvs:
            if target == "VALUE":
                return False
            kvs = [[c["key"], 0, 0, 0, b"", 0]]
        want = c.get(field, b"" if target == "VALUE" else 0)
        ok = {"EQUAL": lambda x: x == want, "NOT_EQUAL": lambda x: x != want,
              "GREATER": lambda x: x > want, "LESS": lambda x: x < want}[result]
        return all(ok(kv[i]) for kv in kvs)

    def branch(self, t):
        """All compares of the whole tree are decided before anything runs (etcd)."""
        ok = all(self.compare(c) for c in t.get("compare", []))
        ops = t.get("success" if ok else "failure", [])
        return ok, ops, [self.branch(o["request_txn"]) for o in ops if "request_txn" in o]

    def precheck(self, path, kind):
        """etcd's checkRequests: every put of the taken path first, then every range."""
        ok, ops, subs = path
        subs = iter(subs)
        for o in ops:
            (name, b), = o.items()
            if name == "request_txn":
                self.precheck(next(subs), kind)
            elif name != "request_" + kind:
                continue
            elif kind == "range" and b.get("revision"):
                if b["revision"] > self.m.rev:
                    raise FutureRevision("future")
                if b["revision"] < self.m.compact:
                    raise Compacted("compacted", compact_revision=self.m.compact)
            elif kind == "put":
                if (b.get("ignore_value") or b.get("ignore_lease")) and self.m.at(b["key"], self.m.rev) is None:
                    raise InvalidArgument("key not found")
                self.check_lease(b.get("lease", 0))     # etcd's checkRequestPut

    def run(self, path):
        ok, ops, subs = path
        subs = iter(subs)
        out = []
        for o in ops:
            (name, b), = o.items()
            kind = name[len("request_"):]
            out.append({"response_" + kind: self.run(next(subs)) if kind == "txn" else getattr(self, kind)(b)})
        return {"header": {"revision": None}, "succeeded": ok, "responses": out}

    def txn(self, t):
        check_intervals(t.get("success", []))      # etcd: both branches, before anything else
        check_intervals(t.get("failure", []))
        path = self.branch(t)
        self.precheck(path, "put")
        self.precheck(path, "range")
        resp = self.run(path)
        for r in nested(resp):
            r["header"]["revision"] = self.current()
        return resp

    def compact(self, b):
        rev = b["revision"]
        if rev <= self.m.compact:
            raise Compacted("compacted", compact_revision=self.m.compact)
        if rev > self.m.rev:
            raise FutureRevision("future")
        self.m.compact = rev
        return {"header": {"revision": self.m.rev}}

    def lease_grant(self, b):
        lease_id, ttl = b.get("ID", 0), b["TTL"]
        if ttl > MAX_LEASE_TTL:
            raise LeaseTTLTooLarge("too large lease TTL")
        if lease_id == 0:
            # The store picks a random positive int63 not in use: check the one it picked.
            assert isinstance(self.got, dict), self.got
            lease_id = self.got["ID"]
            assert 0 < lease_id < 1 << 63 and lease_id not in self.m.leases, lease_id
        elif lease_id in self.m.leases:
            raise LeaseExists("lease already exists")
        ttl = max(ttl, MIN_LEASE_TTL)
        self.m.leases[lease_id] = ttl
        return {"header": {"revision": self.m.rev}, "ID": lease_id, "TTL": ttl}

    def lease_revoke(self, b):
        """One revision of DELETEs of exactly the attached keys, sorted by key (none: no revision)."""
        if b["ID"] not in self.m.leases:          # ID 0 included: no lease has it (etcd 3.4)
            raise LeaseNotFound("requested lease not found")
        for k in self.m.attached(b["ID"]):
            self._write(DELETE, [k, 0, self.main, 0, b"", 0], self.m.at(k, self.current()))
        del self.m.leases[b["ID"]]
        return {"header": {"revision": self.current()}}


# -- strategies -----------------------------------------------------------------------------------

keys, ends, values = st.sampled_from(KEYS), st.sampled_from(ENDS), st.sampled_from(VALUES)


def range_body(maxrev):
    rev = st.integers(0, maxrev)
    return st.fixed_dictionaries({"key": keys}, optional={
        "range_end": ends, "limit": st.integers(0, 3), "revision": rev,
        "sort_order": st.sampled_from(["NONE", "ASCEND", "DESCEND"]),
        "sort_target": st.sampled_from(list(SORT_IDX)), "keys_only": st.booleans(),
        "count_only": st.booleans(), "min_mod_revision": rev, "max_mod_revision": rev,
        "min_create_revision": rev, "max_create_revision": rev})


lease_ids = st.sampled_from(LEASE_IDS)
put_body = st.fixed_dictionaries({"key": keys}, optional={
    "value": values, "prev_kv": st.booleans(), "ignore_value": st.booleans(),
    "ignore_lease": st.booleans(), "lease": st.one_of(st.just(0), lease_ids, lease_ids)})
grant_body = st.fixed_dictionaries({"TTL": st.sampled_from(TTLS)},
                                   optional={"ID": st.one_of(st.just(0), lease_ids)})
revoke_body = st.fixed_dictionaries({"ID": st.one_of(lease_ids, lease_ids, lease_ids, st.just(0))})
delete_body = st.fixed_dictionaries({"key": keys}, optional={"range_end": ends, "prev_kv": st.booleans()})


def compare(maxrev):
    def one(target):
        field = TARGETS[target][0]
        v = values if target == "VALUE" else st.sampled_from([0, *LEASE_IDS]) if target == "LEASE" else \
            st.integers(0, 4) if target == "VERSION" else st.integers(0, maxrev)
        return st.fixed_dictionaries(
            {"key": keys, "target": st.just(target)},
            optional={"range_end": ends, field: v,
                      "result": st.sampled_from(["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])})
    return st.sampled_from(list(TARGETS)).flatmap(one)


def txn_body(maxrev, depth=1):
    ops = [range_body(maxrev).map(lambda b: {"request_range": b}),
           put_body.map(lambda b: {"request_put": b}), put_body.map(lambda b: {"request_put": b}),
           delete_body.map(lambda b: {"request_delete_range": b})]
    if depth < 3:
        ops.append(txn_body(maxrev, depth + 1).map(lambda b: {"request_txn": b}))
    op = st.one_of(ops)
    return st.fixed_dictionaries({}, optional={
        "compare": st.lists(compare(maxrev), max_size=2), "success": st.lists(op, max_size=3),
        "failure": st.lists(op, max_size=3)})


def deep_txn(n):
    t = {"success": [{"request_put": {"key": b"a"}}]}
    for _ in range(n):
        t = {"success": [{"request_txn": t}]}
    return t


INVALID = [
    ("put", {"key": b""}), ("put", {"key": "a"}), ("put", {"key": b"a", "lease": "7"}),
    ("put", {"key": b"a", "lease": 1 << 63}), ("lease_grant", {}), ("lease_grant", {"TTL": "5"}),
    ("lease_grant", {"TTL": 5, "ID": 1 << 63}), ("lease_revoke", {}),
    ("put", {"key": b"a" * 512}), ("put", {"key": b"a", "value": 3}), ("put", {"key": b"a", "prev_kv": 1}),
    ("put", {"key": b"a", "bogus": 1}), ("put", ["key"]), ("range", {"key": b"a", "revision": -1}),
    ("range", {"key": b"a", "revision": 1 << 63}), ("range", {"key": b"a", "sort_order": "UP"}),
    ("range", {"range_end": b"b"}), ("range", {"key": b"a", "limit": "1"}), ("delete_range", {"key": None}),
    ("nope", {}), (3, {}), ("compact", {"revision": "1"}), ("compact", {}),
    ("txn", {"success": [{"request_put": {"key": b"a"}}, {"bogus": {}}]}),
    ("txn", {"failure": [{"request_put": {"key": b""}}]}),          # invalid even if not taken
    ("txn", {"compare": [{"key": b"a", "target": "VALUE", "version": 1}]}),
    ("txn", {"compare": [{"key": b"a", "result": "SAME"}]}),
    ("txn", {"success": [{"request_put": {"key": b"a"}, "request_range": {"key": b"a"}}]}),
    ("txn", {"success": [{"request_put": {"key": b"a"}}] * (MAX_TXN_OPS + 1)}),
    ("txn", {"compare": [{"key": b"a"}] * (MAX_TXN_OPS + 1)}),
    ("txn", deep_txn(MAX_TXN_DEPTH)),
    ("txn", {"success": [{"request_put": {"key": b"a"}}, {"request_put": {"key": b"a"}}]}),
    ("txn", {"success": [{"request_put": {"key": b"ab"}}, {"request_delete_range":
                                                            {"key": b"a", "range_end": b"b"}}]}),
    # duplicates in a branch that is not taken (the compare is never true): etcd refuses them too
    ("txn", {"compare": [{"key": b"a", "target": "VERSION", "result": "LESS", "version": 0}],
             "success": [{"request_put": {"key": b"a"}}, {"request_put": {"key": b"a"}}],
             "failure": [{"request_put": {"key": b"b"}}]}),
    ("txn", {"success": [{"request_txn": {"success": [{"request_put": {"key": b"k%d" % i}}
                                                      for i in range(MAX_TXN_OPS)]}}] * MAX_TXN_OPS}),
]


def request(maxrev, compactable):
    return st.one_of(
        put_body.map(lambda b: ("put", b)), put_body.map(lambda b: ("put", b)),
        delete_body.map(lambda b: ("delete_range", b)),
        txn_body(maxrev).map(lambda b: ("txn", b)), txn_body(maxrev).map(lambda b: ("txn", b)),
        range_body(maxrev).map(lambda b: ("range", b)),
        st.integers(0, maxrev).map(lambda r: ("compact", {"revision": r})),
        grant_body.map(lambda b: ("lease_grant", b)), grant_body.map(lambda b: ("lease_grant", b)),
        revoke_body.map(lambda b: ("lease_revoke", b)),
        compactable.map(lambda r: ("compact", {"revision": r})),
        st.sampled_from(INVALID))


def same(got, want):
    if isinstance(want, ZwatchError):
        assert type(got) is type(want), (got, want)
        if isinstance(want, Compacted):
            assert got.compact_revision == want.compact_revision
    else:
        assert got == want, (got, want)


# -- the machine ----------------------------------------------------------------------------------

class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="zwatch-store-")
        # A tiny map: growth (abort, double, redo the whole batch) happens along the way.
        self.store = self.open()
        self.m = Model()
        self.physical_done = True

    def open(self):
        return Store(self.dir, map_size=1 << 16, max_map_size=1 << 30, min_lease_ttl=MIN_LEASE_TTL)

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(data=st.data())
    def batch(self, data):
        m = self.m
        compactable = st.integers(m.compact + 1, m.rev) if m.compact < m.rev else st.nothing()
        reqs = data.draw(st.lists(request(m.rev + 2, compactable), min_size=1, max_size=4), label="batch")
        self.check_batch(reqs)

    @rule(lease_id=st.sampled_from(LEASE_IDS), ks=st.lists(keys, min_size=1, max_size=4, unique=True),
          moved=st.booleans(), revoke=st.booleans(), unknown=st.booleans())
    def lease_scene(self, lease_id, ks, moved, revoke, unknown):
        """A lease with several keys (random batches rarely attach more than one): grant, put
        keys under it (one in a txn), maybe move the first key to another lease or no lease,
        maybe revoke it, maybe a txn whose put names an unknown lease, all in one group commit,
        as the writer batches them."""
        reqs = [("lease_grant", {"ID": lease_id, "TTL": 10})]
        reqs += [("put", {"key": k, "value": b"L", "lease": lease_id}) for k in ks[:-1]]
        reqs.append(("txn", {"success": [{"request_put": {"key": ks[-1], "lease": lease_id}}]}))
        if moved:
            reqs.append(("put", {"key": ks[0], "lease": LEASE_IDS[0] if lease_id != LEASE_IDS[0] else 0}))
        if revoke:
            reqs.append(("lease_revoke", {"ID": lease_id}))
        if unknown:    # etcd checks every put of the taken path before any range: LEASE_NOT_FOUND
            reqs.append(("txn", {"success": [{"request_range": {"key": b"a", "revision": 1 << 40}},
                                             {"request_put": {"key": ks[0], "lease": 99}}]}))
        self.check_batch(reqs)

    def check_batch(self, reqs):
        results, published = self.store.apply_batch(reqs)
        assert len(results) == len(reqs)
        expected = []
        for r, got in zip(reqs, results):
            op, body = r
            known = not any(r is bad for bad in INVALID)
            want, pub = self.m.apply(op if known else "invalid", body, got)
            same(got, want)
            if pub:
                expected.append(pub)
            if op == "compact" and not isinstance(want, ZwatchError):
                self.physical_done = False
        assert published == expected

    @rule(max_keys=st.integers(1, 4), steps=st.integers(1, 3))
    def compact_step(self, max_keys, steps):
        for _ in range(steps):
            if not self.store.compact_step(max_keys):
                self.physical_done = True
                break

    @rule()
    def reopen(self):
        self.store.close()
        self.store = self.open()

    @rule(data=st.data())
    def range_read(self, data):
        body = data.draw(range_body(self.m.rev + 1), label="range")
        try:
            want = Exec(self.m).range(body)
        except ZwatchError as e:
            want = e
        try:
            got = self.store.range(body)
        except ZwatchError as e:
            got = e
        same(got, want)

    @rule(data=st.data())
    def history(self, data):
        m = self.m
        frm = data.draw(st.integers(m.compact, m.rev + 1), label="from")
        to = data.draw(st.integers(max(frm - 1, 0), m.rev + 1), label="to")
        max_records = data.draw(st.integers(1, 5), label="max_records")
        max_bytes = data.draw(st.sampled_from([1, 40, 100, 1 << 20]), label="max_bytes")
        got, pos = [], frm
        with self.store.reader() as view:
            while True:
                before = self.store.records_scanned
                page = view.history(pos, to, max_records, max_bytes)
                assert self.store.records_scanned - before >= len(page)
                if not page:
                    break
                if len({p[0] for p in page}) > 1:     # several revisions only when they fit
                    assert len(page) <= max_records and sum(p[4] for p in page) <= max_bytes
                got += page
                pos = page[-1][0] + 1                 # next page starts at the next revision
            # prev_kv of every event replayed
            for main, sub, typ, kv, _ in got:
                want = None if main <= m.compact else m.before(kv[0], main, sub)
                assert view.prev_kv(kv[0], main, sub) == want, (kv, main, sub)
            if m.compact:
                try:
                    view.history(m.compact - 1, to)
                    raise AssertionError("history below the compact revision must fail")
                except Compacted as e:
                    assert e.compact_revision == m.compact
        assert [g[:4] for g in got] == [e for e in m.log if frm <= e[0] <= to]

    @invariant()
    def reads_at_every_revision(self):
        m = self.m
        everything = {"key": b"\x00", "range_end": b"\x00"}
        with self.store.reader() as view:
            assert (view.current_revision, view.compact_revision) == (m.rev, m.compact)
            for rev in range(max(m.compact, 1), m.rev + 1):
                body = dict(everything, revision=rev)
                assert view.range(body) == Exec(m).range(body), rev
            for bad, err in ((m.rev + 1, FutureRevision), (m.compact - 1, Compacted)):
                if bad > 0:
                    try:
                        view.range(dict(everything, revision=bad))
                        raise AssertionError(f"revision {bad} must fail")
                    except err:
                        pass

    @invariant()
    def leases_match_the_model(self):
        """Store.leases() (what the writer's clock restores) and ReadView.lease() (timetolive)."""
        m = self.m
        assert sorted(self.store.leases()) == sorted(m.leases.items())
        with self.store.reader() as view:
            for lease_id in [*LEASE_IDS, *m.leases]:
                want_keys = m.attached(lease_id)
                want = (m.leases[lease_id], want_keys, False) if lease_id in m.leases else None
                assert view.lease(lease_id, max_keys=100) == want, lease_id
                if want is not None:
                    assert view.lease(lease_id) == (want[0], [], False)        # keys not asked for
                    if want_keys:
                        assert view.lease(lease_id, max_keys=1) == (want[0], want_keys[:1], len(want_keys) > 1)
            assert all(kv[5] in m.leases for _, kv in m.live(b"\x00", b"\x00", m.rev) if kv[5])

    @invariant()
    def physical_layout(self):
        """Compaction only ever removes what etcd removes; once finished, exactly that."""
        with self.store.env.begin() as txn:
            kr = {(k, *struct.unpack(">QQ", v[:16]), v[16:] == b"\x01")
                  for k, v in txn.cursor(db=self.store._keyrev)}
            hist = {struct.unpack(">QQ", k): msgpack.unpackb(v)
                    for k, v in txn.cursor(db=self.store._history)}
        everything = {(kv[0], main, sub, typ == DELETE) for main, sub, typ, kv in self.m.log}
        keep = self.m.survivors()
        assert keep <= kr <= everything
        if self.physical_done:
            assert kr == keep
        assert set(hist) == {(m, s) for _, m, s, _ in kr}
        for main, sub, typ, kv in self.m.log:
            if (main, sub) in hist:
                assert hist[(main, sub)] == [typ, *kv]


StoreMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestStoreModel = StoreMachine.TestCase
