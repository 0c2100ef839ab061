"""Txn validation exactly as etcd 3.4 does it (issue #8, defects 11, 12, 13, 17).

Every expectation here was checked against a real etcd 3.4.23 (JSON gateway, fresh data dir per
scenario) while writing these tests; etcd's answers are quoted in the docstrings.  The rules come
from etcd 3.4's checkIntervals (etcdserver/api/v3rpc/key.go), run at the API on the success and the
failure list before the request reaches raft, and checkRequests(checkPut) then
checkRequests(checkRange) in applierV3backend.Txn (etcdserver/apply.go).  The tests run on a real
LMDB store; etcd is never needed to run them.
"""
from __future__ import annotations

import pytest

from zwatch.actors.store import Store
from zwatch.errors import Compacted, FutureRevision, InvalidArgument, ZwatchError

ALL = {"key": b"\x00", "range_end": b"\x00"}
FALSE = [{"key": b"zz", "target": "VERSION", "result": "GREATER", "version": 5}]   # never true


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "db"))
    yield s
    s.close()


def P(key, value=b"v"):
    return {"request_put": {"key": key, "value": value}}


def D(key, end=None):
    return {"request_delete_range": {"key": key} if end is None else {"key": key, "range_end": end}}


def R(key, **kw):
    return {"request_range": {"key": key, **kw}}


def T(success=(), failure=(), compare=()):
    return {"request_txn": {"compare": list(compare), "success": list(success), "failure": list(failure)}}


def apply(store, *requests):
    results, _ = store.apply_batch(list(requests))
    return results[0] if len(results) == 1 else results


def keys(store):
    return {kv["key"]: kv["value"] for kv in store.range(ALL)["kvs"]}


def test_duplicate_in_branch_not_taken_is_refused(store):
    """Defect 11: `txn(compare false) success{put c; put c} failure{put d}`.

    etcd 3.4 answers "etcdserver: duplicate key given in txn request" (INVALID_ARGUMENT, code 3)
    and d does not exist afterwards: it checks both branches before evaluating any compare.
    zwatch used to check only the taken path, and wrote d."""
    r = apply(store, ("txn", {"compare": FALSE, "success": [P(b"c"), P(b"c")], "failure": [P(b"d")]}))
    assert isinstance(r, InvalidArgument) and "duplicate key given in txn request" in r.message
    assert keys(store) == {} and store.current_revision() == 1


def test_duplicate_nested_in_branch_not_taken_is_refused(store):
    """Defect 11, nested: success{txn{put q; put q}} failure{put d} with a false compare.

    etcd: "duplicate key given in txn request" (it recurses into both branches of every nested txn)."""
    r = apply(store, ("txn", {"compare": FALSE, "success": [T([P(b"q"), P(b"q")])], "failure": [P(b"d")]}))
    assert isinstance(r, InvalidArgument) and store.current_revision() == 1


def test_from_key_delete_then_put_is_not_a_duplicate(store):
    """Defect 12: `put a; put b; txn(true){delete a.. (range_end "\\x00"); put b=2}`.

    etcd 3.4 succeeds at revision 4: response_delete_range deleted 2, response_put at 4, and
    afterwards b=2 with create_revision 4, version 1.  etcd's interval tree reads range_end "\\x00"
    as the string "\\x00", not as "no upper bound", so a from-key delete is an inverted interval
    that overlaps no put.  zwatch answered "duplicate key"."""
    apply(store, ("put", {"key": b"a", "value": b"1"}), ("put", {"key": b"b", "value": b"1"}))
    r = apply(store, ("txn", {"success": [D(b"a", b"\x00"), P(b"b", b"2")]}))
    assert not isinstance(r, ZwatchError), r
    assert r["header"]["revision"] == 4
    assert r["responses"][0]["response_delete_range"]["deleted"] == 2
    kv = store.range({"key": b"b"})["kvs"][0]
    assert (kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"]) == (b"2", 4, 4, 1)
    assert keys(store) == {b"b": b"2"}


# name: (txn body, etcd 3.4's answer: True = applied, False = "duplicate key given in txn request")
ETCD_CASES = {
    "child_put_then_child_delete": ({"success": [T([P(b"a")]), T([D(b"a")])]}, True),
    "child_delete_then_child_put": ({"success": [T([D(b"a")]), T([P(b"a")])]}, False),
    "put_then_child_put": ({"success": [P(b"a"), T([P(b"a")])]}, False),
    "child_put_both_branches": ({"success": [T([P(b"a")], [P(b"a")])]}, True),
    "child_then_other_child_else": ({"success": [T([P(b"a")]), T([], [P(b"a")])]}, False),
    "top_branches_same_key": ({"success": [P(b"a")], "failure": [P(b"a")]}, True),
    "delete_then_child_else_put": ({"success": [D(b"a"), T([], [P(b"a")])]}, False),
    "child_delete_then_put": ({"success": [T([D(b"a")]), P(b"a")]}, False),
    "child_branches_put_delete": ({"success": [T([P(b"a")], [D(b"a")])]}, True),
    "range_delete_covers_put": ({"success": [D(b"a", b"c"), P(b"b")]}, False),
    "inverted_delete": ({"success": [D(b"c", b"a"), P(b"b")]}, True),
    "fromkey_delete_same_key": ({"success": [D(b"a", b"\x00"), P(b"a")]}, True),
    "put_then_range_delete_end_exclusive": ({"success": [P(b"c"), D(b"a", b"c")]}, True),
    "deletes_overlap": ({"success": [D(b"a", b"c"), D(b"b")]}, True),
    "not_taken_nested": ({"compare": FALSE, "success": [T([P(b"q"), P(b"q")])], "failure": [P(b"d")]},
                         False),
    "child_delete_else_then_child_put": ({"success": [T([], [D(b"a")]), T([P(b"a")])]}, False),
    "grandchild": ({"success": [D(b"a"), T([T([P(b"a")])])]}, False),
    "sibling_child_range_delete": ({"success": [T([D(b"a", b"m")]), T([], [P(b"b")])]}, False),
}


@pytest.mark.parametrize("name", list(ETCD_CASES))
def test_duplicate_key_rules_match_etcd(store, name):
    """etcd 3.4.23's answer to each txn (all sent to one fresh etcd, in this order), recorded in
    ETCD_CASES: the order of nested txns matters (a nested txn's puts meet only the deletes of the
    txns before it), the two branches of one txn never conflict, deletes never conflict with
    deletes, inverted and from-key deletes conflict with nothing."""
    body, etcd_applies = ETCD_CASES[name]
    r = apply(store, ("txn", body))
    if etcd_applies:
        assert not isinstance(r, ZwatchError), r
    else:
        assert isinstance(r, InvalidArgument) and "duplicate key given in txn request" in r.message, r


def test_duplicate_key_comes_before_compacted_and_future_revision(store):
    """Defect 13: a txn with a duplicate key and a compacted (or future) range revision.

    etcd 3.4, after `put a; put a; compact 3`: `txn{range a @2; put c; put c}` and
    `txn{range a @99; put c; put c}` both answer "duplicate key given in txn request": the
    duplicate check runs at the API, before the apply's revision checks.  zwatch answered
    COMPACTED and FUTURE_REVISION."""
    apply(store, ("put", {"key": b"a", "value": b"1"}), ("put", {"key": b"a", "value": b"2"}),
          ("compact", {"revision": 3}))
    for rev in (2, 99):
        r = apply(store, ("txn", {"success": [R(b"a", revision=rev), P(b"c"), P(b"c")]}))
        assert isinstance(r, InvalidArgument) and "duplicate key" in r.message, (rev, r)
    # Without the duplicate, the revision errors are still there.
    assert isinstance(apply(store, ("txn", {"success": [R(b"a", revision=2), P(b"c")]})), Compacted)
    assert isinstance(apply(store, ("txn", {"success": [R(b"a", revision=99), P(b"c")]})), FutureRevision)


def test_missing_key_for_ignore_value_comes_before_compacted(store):
    """etcd's Txn runs checkRequests(checkPut) over the whole taken path, then checkRange: after
    `put a; put a; compact 3`, `txn{range a @2; put nokey ignore_value}` and
    `txn{txn{range a @2}; put nokey ignore_value}` both answer "etcdserver: key not found" in
    etcd 3.4, not "compacted".  zwatch checked op by op in order and answered COMPACTED."""
    apply(store, ("put", {"key": b"a", "value": b"1"}), ("put", {"key": b"a", "value": b"2"}),
          ("compact", {"revision": 3}))
    put_missing = {"request_put": {"key": b"nokey", "ignore_value": True}}
    for body in ({"success": [R(b"a", revision=2), put_missing]},
                 {"success": [T([R(b"a", revision=2)]), put_missing]}):
        r = apply(store, ("txn", body))
        assert isinstance(r, InvalidArgument) and "key not found" in r.message, r


def test_txn_sub_response_headers_all_carry_the_txn_revision(store):
    """Defect 17, declared (docs/design.md section 11): `put a; txn{range a; put b; txn{range a}}`.

    etcd 3.4 gives the sub-responses headers [2, 3, {}] (the range before the put sees 2, the put
    3, a nested txn response gets an empty header, its own range 3) and 3 at the top.  zwatch sets
    every header inside a txn to the txn's revision, [3, 3, 3] and 3 inside the nested txn: one
    rule a client can rely on, and a txn is one atomic revision anyway."""
    apply(store, ("put", {"key": b"a", "value": b"1"}))
    r = apply(store, ("txn", {"success": [R(b"a"), P(b"b"), T([R(b"a")])]}))
    subs = [next(iter(x.values()))["header"]["revision"] for x in r["responses"]]
    inner = r["responses"][2]["response_txn"]["responses"][0]["response_range"]
    assert (r["header"]["revision"], subs, inner["header"]["revision"]) == (3, [3, 3, 3], 3)


def test_delete_after_put_in_one_txn_prev_kv_is_the_deleted_kv(store):
    """Declared difference (docs/design.md section 11), reachable since etcd's duplicate rules let
    one txn put a key and then delete it (here with a from-key delete): `put a=1;
    txn{put a=2; delete a..}`.  etcd 3.4 (`etcdctl watch --prev-kv --rev=2 a`) gives the DELETE
    at 3 the prev_kv a=1 @2, the state before the txn (its watch reads prev_kv at mod_revision-1).
    zwatch gives what was deleted, a=2 @3 (SPEC 7.2), the same live (writer's publish) and
    replayed from history (ReadView.prev_kv, used by the syncer)."""
    apply(store, ("put", {"key": b"a", "value": b"1"}))
    results, published = store.apply_batch([("txn", {"success": [P(b"a", b"2"), D(b"a", b"\x00")]})])
    assert not isinstance(results[0], ZwatchError), results[0]
    put_kv, was = [b"a", 2, 3, 2, b"2", 0], [b"a", 2, 2, 1, b"1", 0]
    assert published == [(3, [(0, put_kv, was), (1, [b"a", 0, 3, 0, b"", 0], put_kv)])]
    with store.reader() as view:
        assert view.prev_kv(b"a", 3, 0) == was and view.prev_kv(b"a", 3, 1) == put_kv
