"""Durable named cursors in the store (actors/store/cursors.py, SPEC.md 6.2) on real LMDB files in
temp dirs: the ops' rules (never backwards, never below the compact revision, bounded), the
compaction hold (a compact past the oldest cursor is refused, naming it; up to revision + 1 passes),
their permissions with auth enabled, and their durability across a reopen."""
from __future__ import annotations

import pytest

from zwatch.actors.auth.passwords import hash_password
from zwatch.actors.store import Store, cursors
from zwatch.errors import ZwatchError
from zwatch.limits import MAX_CURSORS

HASH = hash_password("pw")


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "db"))
    yield s
    s.close()


def run(store, *reqs):
    return store.apply_batch(list(reqs))[0]


def one(store, req):
    r = run(store, req)[0]
    if isinstance(r, ZwatchError):
        raise r
    return r


def puts(store, n, key=b"a/k"):
    run(store, *[("put", {"key": key, "value": b"v"})] * n)
    return store.current_revision()


def cput(name="c", key=b"a/", range_end=b"a0", ttl=60, revision=0):
    return ("cursor_put", {"name": name, "key": key, "range_end": range_end, "ttl": ttl, "revision": revision})


def test_create_at_the_current_revision_advance_never_back(store):
    cur = puts(store, 3)                                   # revision 4
    r = one(store, cput())
    assert r["created"] and r["cursor"]["revision"] == cur == 4 and r["cursor"]["lag_revisions"] == 0
    puts(store, 2)                                         # 6
    got = one(store, ("cursor_get", {"name": "c"}))["cursor"]
    assert (got["revision"], got["lag_revisions"]) == (4, 2)
    assert got["lag_seconds"] is not None and got["lag_seconds"] >= 0
    assert one(store, cput(revision=5))["cursor"]["revision"] == 5
    r = one(store, cput(revision=3, ttl=99))               # lower: stays, the TTL is replaced
    assert (r["created"], r["cursor"]["revision"], r["cursor"]["ttl"]) == (False, 5, 99)
    assert one(store, cput(revision=0))["cursor"]["revision"] == 5   # 0: its own
    err = run(store, cput(revision=7))[0]
    assert err.code == "FUTURE_REVISION"
    err = run(store, cput(range_end=b"b"))[0]              # a cursor's range never changes
    assert err.code == "INVALID_ARGUMENT" and "another key range" in err.message
    assert store.current_revision() == 6                   # cursor ops are no revision


def test_compaction_is_held_at_the_oldest_cursor_plus_one(store):
    puts(store, 4)                                         # 2..5
    one(store, cput("old", revision=3))
    one(store, cput("new", revision=5))
    puts(store, 3)                                         # 6..8
    err = run(store, ("compact", {"revision": 5}))[0]
    assert err.code == "FAILED_PRECONDITION", err
    assert err.details["reason"] == cursors.CURSOR_HOLDS and err.details["cursor"] == "old"
    assert err.details["cursor_revision"] == 3 and "'old'" in err.message
    assert store.compact_revision() == 0                   # refused: nothing changed
    one(store, ("compact", {"revision": 4}))               # revision + 1: the consumer resumes at 4
    assert store.compact_revision() == 4
    one(store, ("cursor_delete", {"name": "old"}))
    assert run(store, ("compact", {"revision": 7}))[0].code == "FAILED_PRECONDITION"   # "new" at 5
    one(store, ("compact", {"revision": 6}))
    # The drop and the compact in one batch: the drop runs first, the compact passes it.
    results = run(store, ("cursor_delete", {"name": "new"}), ("compact", {"revision": 8}))
    assert not any(isinstance(r, ZwatchError) for r in results), results


def test_a_cursor_cannot_be_created_below_the_compacted_history(store):
    puts(store, 5)                                         # 2..6
    one(store, ("compact", {"revision": 4}))
    assert run(store, cput(revision=2))[0].code == "COMPACTED"
    assert one(store, cput(revision=3))["cursor"]["revision"] == 3      # resumes at 4: still there


def test_bad_input_and_the_bound(store):
    puts(store, 1)
    for body, code in ((dict(name=""), "INVALID_ARGUMENT"), (dict(name="x" * 129), "INVALID_ARGUMENT"),
                       (dict(ttl=0), "INVALID_ARGUMENT"), (dict(ttl=10 ** 12), "INVALID_ARGUMENT"),
                       (dict(revision=-1), "INVALID_ARGUMENT"), (dict(revision=1 << 64), "INVALID_ARGUMENT"),
                       (dict(key=b""), "INVALID_ARGUMENT"), (dict(name=b"bytes"), "INVALID_ARGUMENT")):
        op, b = cput()
        err = run(store, (op, {**b, **body}))[0]
        assert isinstance(err, ZwatchError) and err.code == code, (body, err)
    assert run(store, ("cursor_get", {"name": "nope"}))[0].code == "CURSOR_NOT_FOUND"
    assert run(store, ("cursor_delete", {"name": "nope"}))[0].code == "CURSOR_NOT_FOUND"
    assert run(store, ("cursor_list", {"extra": 1}))[0].code == "INVALID_ARGUMENT"
    results = run(store, *[cput(f"c{i}") for i in range(MAX_CURSORS + 1)])
    assert not any(isinstance(r, ZwatchError) for r in results[:MAX_CURSORS])
    assert results[-1].code == "RESOURCE_EXHAUSTED"
    assert len(one(store, ("cursor_list", {}))["cursors"]) == MAX_CURSORS


def test_cursors_survive_a_reopen(tmp_path):
    s = Store(str(tmp_path / "db"))
    puts(s, 4)                                             # 2..5
    one(s, cput("é-unicode", ttl=120, revision=3))
    s.close()
    s = Store(str(tmp_path / "db"))
    try:
        assert s.cursors() == [("é-unicode", 3, 120)]
        assert run(s, ("compact", {"revision": 5}))[0].code == "FAILED_PRECONDITION"
    finally:
        s.close()


def test_permissions_need_read_on_the_range(store):
    ok = [("user_add", {"name": "root", "hashed_password": HASH}),
          ("user_grant_role", {"user": "root", "role": "root"}),
          ("role_add", {"name": "r"}),
          ("role_grant_permission", {"name": "r", "perm": {"permType": "READ", "key": b"a/", "range_end": b"a0"}}),
          ("user_add", {"name": "u", "hashed_password": HASH}),
          ("user_grant_role", {"user": "u", "role": "r"}),
          ("auth_enable", {})]
    assert not any(isinstance(r, ZwatchError) for r in run(store, *ok))
    puts(store, 2)

    def as_user(user, req):
        return store.apply_batch([(req[0], req[1], user)], store.auth_state())[0][0]

    assert not isinstance(as_user("u", cput("mine")), ZwatchError)
    assert as_user("u", cput("wide", key=b"a", range_end=b"\x00")).code == "PERMISSION_DENIED"
    assert as_user("", cput("anon")).code == "UNAUTHENTICATED"
    assert not isinstance(as_user("root", cput("roots", key=b"z")), ZwatchError)
    assert as_user("u", ("cursor_delete", {"name": "roots"})).code == "PERMISSION_DENIED"
    assert as_user("u", ("cursor_get", {"name": "roots"})).code == "PERMISSION_DENIED"
    assert [c["name"] for c in as_user("u", ("cursor_list", {}))["cursors"]] == ["mine"]
    assert [c["name"] for c in as_user("root", ("cursor_list", {}))["cursors"]] == ["mine", "roots"]
    assert not isinstance(as_user("u", ("cursor_delete", {"name": "mine"})), ZwatchError)
