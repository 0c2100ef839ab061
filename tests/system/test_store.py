"""Plain unit tests of actors/store.py: storage edge cases the model test does not reach."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import lmdb
import pytest

from zwatch.actors.store import DELETE, MAX_TXN_TREE_OPS, PUT, Store
from zwatch.errors import Compacted, FutureRevision, Internal, InvalidArgument, LeaseNotFound, NoSpace, ZwatchError

ALL = {"key": b"\x00", "range_end": b"\x00"}


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "db"))
    yield s
    s.close()


def put(key, value=b"v", **kw):
    return ("put", dict(key=key, value=value, **kw))


def ok(store, requests):
    results, published = store.apply_batch(requests)
    for r in results:
        assert not isinstance(r, ZwatchError), r
    return results, published


def keys_of(resp):
    return [kv["key"] for kv in resp["kvs"]]


def test_empty_store_is_at_revision_1(store):
    assert store.current_revision() == 1 and store.compact_revision() == 0
    assert store.range(ALL) == {"header": {"revision": 1}, "kvs": [], "more": False, "count": 0}
    results, _ = ok(store, [put(b"a")])
    assert results[0]["header"]["revision"] == 2


def test_map_grows(tmp_path):
    s = Store(str(tmp_path / "db"), map_size=1 << 16, max_map_size=1 << 30)
    for i in range(40):
        ok(s, [put(b"k%04d" % (i * 50 + j), b"x" * 200) for j in range(50)])
    assert s.current_revision() == 2001
    assert s.env.info()["map_size"] > 1 << 16
    assert s.range(dict(ALL, count_only=True))["count"] == 2000
    s.close()


def test_no_space_leaves_store_unchanged_and_usable(tmp_path):
    s = Store(str(tmp_path / "db"), map_size=1 << 16, max_map_size=1 << 18)
    ok(s, [put(b"a", b"1")])
    results, published = s.apply_batch([put(b"b", b"2"), put(b"big", b"x" * (1 << 19))])
    assert all(isinstance(r, NoSpace) for r in results) and published == []
    assert s.current_revision() == 2
    assert keys_of(s.range(ALL)) == [b"a"]
    results, published = ok(s, [put(b"b", b"2")])
    assert published == [(3, [(PUT, [b"b", 3, 3, 1, b"2", 0], None)])]
    assert keys_of(s.range(ALL)) == [b"a", b"b"]
    s.close()


@pytest.mark.parametrize("err", [lmdb.DiskError("mdb_txn_commit: I/O"),
                                 lmdb.Error("mdb_txn_commit: No space left on device")])
def test_commit_failure_for_lack_of_disk(store, monkeypatch, err):
    ok(store, [put(b"a")])

    def fail(txn):
        txn.abort()
        raise err
    monkeypatch.setattr(Store, "_commit", staticmethod(fail))
    results, published = store.apply_batch([put(b"b"), put(b"c")])
    assert all(isinstance(r, NoSpace) for r in results) and published == []
    monkeypatch.undo()
    assert store.current_revision() == 2
    ok(store, [put(b"b")])
    assert keys_of(store.range(ALL)) == [b"a", b"b"]


def statvfs_with_free(free: int):
    """An os.statvfs stand-in: a 1 GiB filesystem with `free` bytes left (the OS, not zwatch, faked)."""
    real = os.statvfs

    def fake(path):
        st = real(path)
        blocks = free // st.f_frsize
        return os.statvfs_result((st.f_bsize, st.f_frsize, (1 << 30) // st.f_frsize, blocks, blocks,
                                  st.f_files, st.f_ffree, st.f_favail, st.f_flag, st.f_namemax))
    return fake


EIO = lmdb.Error("mdb_txn_commit: Input/output error")


def fail_commit_with(err):
    def fail(txn):
        txn.abort()
        raise err
    return staticmethod(fail)


def test_eio_commit_on_a_full_disk_is_no_space(store, monkeypatch):
    """Issue #8 defect 4: a disk filling up mid-commit makes LMDB report the short write as EIO
    ("mdb_txn_commit: Input/output error"); the writer answered INTERNAL.  With almost no free
    space on the data dir's filesystem, it is NO_SPACE, and commit_failure says why."""
    ok(store, [put(b"a")])
    monkeypatch.setattr(Store, "_commit", fail_commit_with(EIO))
    monkeypatch.setattr(os, "statvfs", statvfs_with_free(64 << 10))
    results, published = store.apply_batch([put(b"b"), put(b"c")])
    assert all(isinstance(r, NoSpace) for r in results) and published == [], results
    assert store.commit_failure == {"code": "NO_SPACE", "error": "mdb_txn_commit: Input/output error",
                                    "free_bytes": 64 << 10}
    assert store.current_revision() == 2 and keys_of(store.range(ALL)) == [b"a"]   # reads still work
    monkeypatch.setattr(Store, "_commit", staticmethod(lambda txn: txn.commit()))
    ok(store, [put(b"a"), ("compact", {"revision": 3})])
    monkeypatch.setattr(Store, "_commit", fail_commit_with(EIO))
    with pytest.raises(NoSpace):                       # physical compaction classifies the same way
        store.compact_step()
    monkeypatch.undo()
    ok(store, [put(b"b")])
    assert store.commit_failure is None and keys_of(store.range(ALL)) == [b"a", b"b"]


def test_eio_commit_with_free_space_is_internal(store, monkeypatch):
    """The other side of defect 4: EIO while the disk has room is a real I/O fault, INTERNAL."""
    monkeypatch.setattr(Store, "_commit", fail_commit_with(EIO))
    monkeypatch.setattr(os, "statvfs", statvfs_with_free(512 << 20))
    results, _ = store.apply_batch([put(b"b")])
    assert isinstance(results[0], Internal) and not isinstance(results[0], NoSpace)
    assert store.commit_failure["code"] == "INTERNAL" and store.commit_failure["free_bytes"] == 512 << 20


class CountingKey(bytes):
    """A key that counts every comparison and hash made on it: the work of the duplicate-key check,
    whatever its data structure, without looking at a clock."""
    ops = 0

    def _count(name):
        def method(self, other=None):
            CountingKey.ops += 1
            return getattr(bytes, name)(self, other) if other is not None else getattr(bytes, name)(self)
        return method

    __lt__, __le__, __gt__, __ge__ = _count("__lt__"), _count("__le__"), _count("__gt__"), _count("__ge__")
    __eq__, __ne__, __hash__ = _count("__eq__"), _count("__ne__"), _count("__hash__")


def deletes_then_puts(n: int) -> dict:
    """n range deletes then n puts of other keys, in nested txns of 128 ops (etcd's per-list limit)."""
    def k(prefix, i):
        return CountingKey(b"%s%06d" % (prefix, i))
    dels = [{"request_delete_range": {"key": k(b"d", i), "range_end": k(b"d", i) + b"\x00"}}
            for i in range(n)]
    for d in dels:
        d["request_delete_range"]["range_end"] = CountingKey(d["request_delete_range"]["range_end"])
    puts = [{"request_put": {"key": k(b"p", i)}} for i in range(n)]
    return {"success": [{"request_txn": {"success": ops[i:i + 128]}}
                        for ops in (dels, puts) for i in range(0, n, 128)]}


def test_duplicate_check_work_grows_n_log_n_not_n_squared(store):
    """Issue #8 defect 5: one legal txn of 15,500 deletes and 15,500 puts stalled every write for
    ~15 s: each put scanned every delete of the txn (and each delete every put).  Counted, not
    timed: per op, the check's key comparisons may grow with log n, not with n (quadratic: x8)."""
    per_op = {}
    for n in (256, 2048):
        body = deletes_then_puts(n)
        CountingKey.ops = 0
        results, published = store.apply_batch([("txn", body)])
        assert not isinstance(results[0], ZwatchError), results[0]
        assert len(published[0][1]) == n                 # the puts; the deletes met no key
        per_op[n] = CountingKey.ops / (2 * n)
    assert per_op[2048] < 2 * per_op[256], per_op


def test_txn_tree_size_is_bounded(store):
    """Defect 5, the bound: a whole txn tree may hold at most MAX_TXN_TREE_OPS compares and ops
    (etcd bounds it only by the 1.5 MiB request size, ~31,000 tiny ops); above, INVALID_ARGUMENT."""
    def tree(txns):
        return {"success": [{"request_txn": {"success": [{"request_put": {"key": b"k%d.%d" % (t, i)}}
                                                         for i in range(128)]}} for t in range(txns)]}
    assert (MAX_TXN_TREE_OPS // 129) * 129 <= MAX_TXN_TREE_OPS < (MAX_TXN_TREE_OPS // 129 + 1) * 129
    results, _ = store.apply_batch([("txn", tree(MAX_TXN_TREE_OPS // 129)),
                                    ("txn", tree(MAX_TXN_TREE_OPS // 129 + 1))])
    assert not isinstance(results[0], ZwatchError), results[0]
    assert isinstance(results[1], InvalidArgument) and "too many operations" in results[1].message
    assert store.current_revision() == 2


def test_failed_request_does_not_disturb_the_batch(store):
    dup = {"success": [{"request_put": {"key": b"x"}}, {"request_put": {"key": b"x"}}]}
    results, published = store.apply_batch([
        put(b"a"), put(b""), ("txn", dup), put(b"z", lease=5), ("range", {"key": b"a", "revision": 99}),
        ("compact", {"revision": 0}), ("nope", {}), put(b"c"), ("delete_range", {"key": b"q"})])
    assert results[0] == {"header": {"revision": 2}}
    assert [type(r) for r in results[1:7]] == [InvalidArgument, InvalidArgument, LeaseNotFound,
                                                FutureRevision, Compacted, InvalidArgument]
    assert "duplicate key" in results[2].message and "lease" in results[3].message
    assert results[7] == {"header": {"revision": 3}}
    assert results[8] == {"header": {"revision": 3}, "deleted": 0, "prev_kvs": []}
    assert [rev for rev, _ in published] == [2, 3]
    assert keys_of(store.range(ALL)) == [b"a", b"c"]


def test_bad_input_is_always_a_zwatch_error(store):
    bad = [None, 3, "put", ("put",), ("put", None), ("put", {"key": bytearray(b"a")}),
           ("range", {"key": b"a", "revision": True}), ("range", {"key": b"a", "limit": -1}),
           ("txn", {"success": [None]}), ("txn", {"compare": [3]}), ("txn", {"success": "x"}),
           ("compact", {"revision": 1 << 64}), ("delete_range", {"key": b"a", "range_end": "b"})]
    results, published = store.apply_batch(bad)
    assert all(isinstance(r, InvalidArgument) for r in results), results
    with store.reader() as v:
        for req in ({"key": 1}, {"key": b"a", "sort_target": "SIZE"}, [], {"key": b"a", "x": 1}):
            with pytest.raises(InvalidArgument):
                v.range(req)
        with pytest.raises(InvalidArgument):
            v.history(-1, 5)
        with pytest.raises(InvalidArgument):
            v.prev_kv("a", 2, 0)


def test_history_never_splits_a_revision(store):
    ok(store, [put(b"k%d" % i) for i in range(10)])                     # revisions 2..11
    ok(store, [("delete_range", {"key": b"k", "range_end": b"l"})])      # revision 12: 10 records
    ok(store, [put(b"z")])                                               # revision 13
    with store.reader() as v:
        page = v.history(10, 13, max_records=3)
        assert [(m, s) for m, s, *_ in page] == [(10, 0), (11, 0)]       # 12 would not fit
        page = v.history(12, 13, max_records=3)
        assert [m for m, *_ in page] == [12] * 10                        # too big: whole, alone
        assert [s for _, s, *_ in page] == list(range(10))
        assert all(t == DELETE and kv[1:] == [0, 12, 0, b"", 0] for _, _, t, kv, _ in page)
        assert [m for m, *_ in v.history(13, 13)] == [13]
        page = v.history(2, 13, max_bytes=1)
        assert [m for m, *_ in page] == [2]
        assert v.history(5, 4) == []


def test_records_scanned_counts_only_what_replay_reads(store):
    ok(store, [put(b"k%d" % i) for i in range(100)])                    # revisions 2..101
    with store.reader() as v:
        before = store.records_scanned
        assert len(v.history(92, 1000)) == 10
        assert store.records_scanned - before == 10
        before = store.records_scanned
        assert len(v.history(2, 1000, max_records=5)) == 5
        assert store.records_scanned - before <= 6                     # at most one look-ahead


def test_reopen_gives_the_same_state(tmp_path):
    path = str(tmp_path / "db")
    s = Store(path)
    ok(s, [put(b"a", b"1"), put(b"b"), ("delete_range", {"key": b"b"}), put(b"a", b"2")])
    ok(s, [("compact", {"revision": 3})])
    with s.reader() as v:
        before = (v.range(ALL), v.range(dict(ALL, revision=3)), v.history(3, 99),
                  v.current_revision, v.compact_revision)
    s.close()
    s = Store(path)
    with s.reader() as v:
        after = (v.range(ALL), v.range(dict(ALL, revision=3)), v.history(3, 99),
                 v.current_revision, v.compact_revision)
    assert before == after
    results, _ = ok(s, [put(b"a", b"3", prev_kv=True)])
    assert results[0] == {"header": {"revision": 6}, "prev_kv": {
        "key": b"a", "create_revision": 2, "mod_revision": 5, "version": 2, "value": b"2", "lease": 0}}
    s.close()


def test_compaction_keeps_tombstone_at_the_compact_revision(store):
    ok(store, [put(b"a"), put(b"b"), put(b"c")])                        # 2, 3, 4
    ok(store, [("delete_range", {"key": b"a"})])                          # 5
    ok(store, [("delete_range", {"key": b"b"})])                          # 6
    ok(store, [("compact", {"revision": 6})])
    while store.compact_step(1):
        pass
    with store.reader() as v:
        # etcd #18089: a watcher from 6 must still see b's delete; a's tombstone (5 < 6) is gone.
        assert [(m, t, kv[0]) for m, _, t, kv, _ in v.history(6, 99)] == [(6, DELETE, b"b")]
        assert v.prev_kv(b"b", 6, 0) is None                            # prev at 5 is compacted
        with pytest.raises(Compacted) as e:
            v.history(5, 99)
        assert e.value.compact_revision == 6
        assert keys_of(v.range(dict(ALL, revision=6))) == [b"c"]
        with pytest.raises(Compacted):
            v.range(dict(ALL, revision=5))
    with store.env.begin() as txn:
        assert [k for k, _ in txn.cursor(db=store._keyrev)] == [b"b", b"c"]


def test_compaction_resumes_and_restarts(tmp_path):
    path = str(tmp_path / "db")
    s = Store(path)
    for _ in range(30):
        ok(s, [put(b"hot"), put(b"k%d" % _)])
    ok(s, [("compact", {"revision": 20})])
    assert s.compact_step(3) is True                                    # hot key: several chunks
    s.close()                                                           # "crash" mid-way
    s = Store(path)
    ok(s, [("compact", {"revision": 40})])                              # restart from the first key
    steps = 0
    while s.compact_step(3):
        steps += 1
    assert steps > 3
    assert s.compact_step() is False
    with s.env.begin() as txn:
        hot = [v for k, v in txn.cursor(db=s._keyrev) if k == b"hot"]
        assert len(hot) == 1 + 10            # hot is put at 2, 4, .. 60: latest as of 40, then 42..60
    with s.reader() as v:
        assert v.range({"key": b"hot"})["kvs"][0]["version"] == 30
        assert len(v.history(40, 99)) == 61 - 40 + 1
    s.close()


def test_txn_semantics(store):
    ok(store, [put(b"a", b"1")])
    results, published = ok(store, [("txn", {
        "compare": [{"key": b"a", "target": "VALUE", "value": b"1"},
                    {"key": b"zz", "target": "VERSION", "version": 0}],
        "success": [{"request_put": {"key": b"b", "value": b"2"}},
                    {"request_range": {"key": b"a", "range_end": b"c"}},
                    {"request_txn": {"compare": [{"key": b"b", "target": "CREATE", "create_revision": 0}],
                                     "success": [{"request_delete_range": {"key": b"a", "prev_kv": True}}]}}],
        "failure": [{"request_put": {"key": b"x"}}]})])
    r = results[0]
    assert r["succeeded"] and r["header"]["revision"] == 3
    assert keys_of(r["responses"][1]["response_range"]) == [b"a", b"b"]       # sees its own put
    inner = r["responses"][2]["response_txn"]
    assert inner["succeeded"] is True                                          # compared before the put
    assert inner["responses"][0]["response_delete_range"]["deleted"] == 1
    assert {x["header"]["revision"] for x in (r["responses"][0]["response_put"],
                                               r["responses"][1]["response_range"], inner)} == {3}
    assert published == [(3, [(PUT, [b"b", 3, 3, 1, b"2", 0], None),
                              (DELETE, [b"a", 0, 3, 0, b"", 0], [b"a", 2, 2, 1, b"1", 0])])]
    with store.reader() as v:
        assert [(m, s) for m, s, *_ in v.history(3, 3)] == [(3, 0), (3, 1)]
        assert v.prev_kv(b"a", 3, 1) == [b"a", 2, 2, 1, b"1", 0]
    results, published = ok(store, [("txn", {"compare": [{"key": b"a", "target": "VALUE", "value": b""}],
                                             "failure": [{"request_range": {"key": b"b"}}]})])
    assert results[0]["succeeded"] is False and results[0]["header"]["revision"] == 3 and published == []


def test_range_options(store):
    ok(store, [put(b"a", b"3"), put(b"b", b"1"), put(b"c", b"2"), put(b"b", b"0")])
    r = store.range({"key": b"a", "range_end": b"\x00", "limit": 2})
    assert keys_of(r) == [b"a", b"b"] and r["more"] and r["count"] == 3
    r = store.range({"key": b"a", "range_end": b"d", "sort_target": "VALUE", "keys_only": True})
    assert keys_of(r) == [b"b", b"c", b"a"] and "value" not in r["kvs"][0]
    r = store.range({"key": b"a", "range_end": b"d", "sort_order": "DESCEND", "limit": 1})
    assert keys_of(r) == [b"c"] and r["more"]
    r = store.range({"key": b"a", "range_end": b"d", "min_mod_revision": 4})
    assert keys_of(r) == [b"b", b"c"] and r["count"] == 3 and not r["more"]   # etcd: count unfiltered
    assert store.range({"key": b"c", "range_end": b"a"})["kvs"] == []
    assert store.range({"key": b"a", "range_end": b"\x00", "count_only": True}) == {
        "header": {"revision": 5}, "kvs": [], "more": False, "count": 3}
    with pytest.raises(FutureRevision):
        store.range({"key": b"a", "revision": 6})


def test_open_is_instant_on_a_big_store(tmp_path):
    path = str(tmp_path / "db")
    s = Store(path)
    for i in range(50):
        ok(s, [put(b"k%05d" % (i * 1000 + j)) for j in range(1000)])
    s.close()
    t = time.perf_counter()
    s = Store(path)
    assert s.current_revision() == 50_001
    assert time.perf_counter() - t < 0.2
    s.close()


def test_reader_in_another_process_survives_map_growth(tmp_path):
    path = str(tmp_path / "db")
    Store(path, map_size=1 << 16).close()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from zwatch.actors.store import Store
        s = Store({path!r}, map_size=1 << 16)
        print(s.current_revision(), flush=True)
        sys.stdin.readline()
        with s.reader() as v:
            print(v.current_revision, v.range({{"key": b"\\x00", "range_end": b"\\x00", "count_only": True}})["count"])
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "1"
        s = Store(path, map_size=1 << 16, max_map_size=1 << 30)
        for i in range(20):
            ok(s, [put(b"k%05d" % (i * 100 + j), b"x" * 500) for j in range(100)])
        assert s.env.info()["map_size"] > 1 << 16
        s.close()
        out, _ = child.communicate("go\n", timeout=30)
        assert out.split() == ["2001", "2000"]
    finally:
        child.kill()
