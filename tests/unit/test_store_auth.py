"""The store's auth (actors/store/authtx.py): the auth ops with etcd 3.4's semantics and errors,
the permission checks of every request in commit order, and the writer's in-memory AuthState
through a batch (copy-on-write: a failed commit leaves it as it was).

In-process Store on a tmp dir.  Where a docstring says "etcd 3.4.23:", the answer was settled
against real etcd 3.4.23 (/usr/bin/etcd on a private 127.0.0.1 port, etcdctl 3.4.23), the
transcript line quoted.

A request is (op, body, user): user None = an internal peer (unchecked), "" = anonymous.
"""
from __future__ import annotations

import lmdb
import pytest

from zwatch.actors.auth.passwords import hash_password
from zwatch.actors.auth.state import AuthState
from zwatch.actors.store import Store, authtx, layout
from zwatch.errors import ZwatchError

HASH = hash_password("pw")                 # one slow hash for the whole module
ROOT_SETUP = [("user_add", {"name": "root", "hashed_password": HASH}),
              ("user_grant_role", {"user": "root", "role": "root"})]


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "db"))
    yield s
    s.close()


def apply(store, *reqs, auth=None):
    results, _ = store.apply_batch(list(reqs), auth)
    return results


def ok(store, *reqs, auth=None):
    results = apply(store, *reqs, auth=auth)
    for r in results:
        assert not isinstance(r, ZwatchError), r
    return results


def err(result, code: str, message: str | None = None):
    assert isinstance(result, ZwatchError), result
    assert result.code == code, result
    if message is not None:
        assert result.message == message
    return result


def enabled_store(store, *more):
    """root (role root), a role `r` with READWRITE on prefix a/, user `u` (password) having r,
    user `v` without role; auth enabled."""
    ok(store, *ROOT_SETUP,
       ("role_add", {"name": "r"}),
       ("role_grant_permission", {"name": "r", "perm": {"permType": "READWRITE", "key": b"a/", "range_end": b"a0"}}),
       ("user_add", {"name": "u", "hashed_password": HASH}),
       ("user_grant_role", {"user": "u", "role": "r"}),
       ("user_add", {"name": "v", "options": {"no_password": True}}),
       *more,
       ("auth_enable", {}))
    return store


# ---------------------------------------------------------------------------------------------
# layout: an old store, the snapshot readers

def test_a_store_written_before_auth_opens_disabled_at_auth_revision_0(tmp_path):
    """A store of format 1 created without the auth dbs and meta keys (what the previous version
    wrote): it opens, the dbs are created, the state is disabled, revision 0, nobody."""
    path = str(tmp_path / "old")
    env = lmdb.open(path, max_dbs=6, subdir=True)
    with env.begin(write=True) as txn:
        meta = env.open_db(layout.META, txn=txn)
        for name in (layout.HISTORY, layout.LEASE):
            env.open_db(name, txn=txn)
        env.open_db(layout.KEYREV, txn=txn, dupsort=True, dupfixed=True)
        env.open_db(layout.LEASEKEYS, txn=txn, dupsort=True)
        for k, v in layout.INITIAL_META:
            txn.put(k, layout.pack_int(v), db=meta)
    env.close()
    s = Store(path)
    try:
        st = s.auth_state()
        assert (st.enabled, st.revision, st.users, st.roles) == (False, 0, {}, {})
        with s.reader() as view:
            assert view.auth_revision() == 0
        ok(s, *ROOT_SETUP, ("auth_enable", {}))
        assert s.auth_state().enabled and s.auth_state().revision == 3
    finally:
        s.close()


def test_a_read_view_gives_the_auth_state_of_its_own_snapshot(store):
    """ReadView.auth_revision() is the cheap read a syncer caches on; auth_state() is the same
    snapshot as the view's data even when the writer commits meanwhile."""
    ok(store, ("role_add", {"name": "a"}), ("put", {"key": b"k", "value": b"1"}))
    with store.reader() as view:
        ok(store, ("role_add", {"name": "b"}), ("put", {"key": b"k", "value": b"2"}))
        assert view.auth_revision() == 1
        assert set(view.auth_state().roles) == {"a"}
        assert view.range({"key": b"k"})["kvs"][0]["value"] == b"1"
    with store.reader() as view:
        assert view.auth_revision() == 2 and set(view.auth_state().roles) == {"a", "b"}


def test_the_state_is_persisted_exactly_as_the_in_memory_one(store):
    """Every change reaches LMDB: a fresh load equals the state the batch handed back."""
    enabled_store(store)
    perm = lambda t, k, e=b"": {"permType": t, "key": k, "range_end": e}  # noqa: E731
    ok(store, ("role_add", {"name": "q"}), ("role_grant_permission", {"name": "q", "perm": perm("READ", b"z")}),
       ("role_grant_permission", {"name": "q", "perm": perm("READ", b"c", b"d")}),
       ("role_grant_permission", {"name": "q", "perm": perm("WRITE", b"z")}),
       ("role_grant_permission", {"name": "q", "perm": perm("READ", b"c")}),
       ("role_revoke_permission", {"role": "q", "key": b"c", "range_end": b"d"}))
    assert store.auth_state() == store.auth_after
    assert store.auth_state().roles["q"] == [["READ", b"c", b""], ["WRITE", b"z", b""]]
    ok(store, ("role_delete", {"role": "r"}), ("user_change_password", {"name": "v", "hashed_password": HASH}))
    assert store.auth_state() == store.auth_after
    assert store.auth_state().users["u"] == [HASH, []]
    assert store.auth_state().users["v"] == [HASH, []]


# ---------------------------------------------------------------------------------------------
# the ops, etcd's answers

def test_auth_enable_needs_user_root_having_role_root(store):
    """etcd 3.4.23: `auth enable` with no user root -> "Error: etcdserver: root user does not
    exist"; with root lacking role root -> the server says "etcdserver: root user does not have
    root role" (FailedPrecondition; etcdctl then adds role root, grants it and retries: the CLI's
    business).  Role root need not exist: `user grant-role root root` with no role root -> "Role
    root is granted to user root", then `auth enable` -> "Authentication Enabled", and
    `role get root` -> "etcdserver: role name not found"."""
    err(apply(store, ("auth_enable", {}))[0], "FAILED_PRECONDITION", "etcdserver: root user does not exist")
    ok(store, ROOT_SETUP[0])
    err(apply(store, ("auth_enable", {}))[0], "FAILED_PRECONDITION", "etcdserver: root user does not have root role")
    assert not store.auth_state().enabled
    ok(store, ROOT_SETUP[1], ("auth_enable", {}))
    assert store.auth_state().enabled
    err(apply(store, ("role_get", {"role": "root"}))[0], "ROLE_NOT_FOUND", "etcdserver: role name not found")


def test_enable_when_enabled_and_disable_when_disabled_succeed_and_change_nothing(store):
    """etcd 3.4.23: a second `auth enable` -> "Authentication Enabled"; `auth disable` twice ->
    "Authentication Disabled" both times (AuthEnable/AuthDisable return early: no revision)."""
    ok(store, ("auth_disable", {}))
    assert store.auth_changes == [] and store.auth_state().revision == 0
    ok(store, *ROOT_SETUP, ("auth_enable", {}))
    rev = store.auth_state().revision
    ok(store, ("auth_enable", {}, "root"))
    assert store.auth_changes == [] and store.auth_state().revision == rev
    ok(store, ("auth_disable", {}, "root"), ("auth_disable", {}))
    assert store.auth_changes == [(1, ["enabled", False])] and store.auth_state().revision == rev + 1


def test_user_ops_and_their_errors(store):
    """etcd 3.4.23, with auth enabled as root: `user add u1` twice -> "etcdserver: user name
    already exists"; `user grant-role u1 r1` twice -> "Role r1 is granted to user u1" both times;
    `user grant-role u1 nosuch` -> "etcdserver: role name not found"; `user grant-role nosuch r1`
    -> "etcdserver: user name not found"; `user revoke-role u1 nosuch` -> "etcdserver: role is not
    granted to the user"; `user revoke-role nosuch r1` / `user delete nosuch` -> "etcdserver: user
    name not found"; `user list` is sorted (np, root, u1); `user add np --no-password` then
    `user get np` -> "User: np / Roles:"."""
    ok(store, ("role_add", {"name": "r1"}), ("user_add", {"name": "u1", "hashed_password": HASH}))
    r = apply(store,
              ("user_add", {"name": "u1", "hashed_password": HASH}),
              ("user_grant_role", {"user": "u1", "role": "r1"}),
              ("user_grant_role", {"user": "u1", "role": "r1"}),
              ("user_grant_role", {"user": "u1", "role": "nosuch"}),
              ("user_grant_role", {"user": "nosuch", "role": "r1"}),
              ("user_revoke_role", {"name": "u1", "role": "nosuch"}),
              ("user_revoke_role", {"name": "nosuch", "role": "r1"}),
              ("user_delete", {"name": "nosuch"}),
              ("user_change_password", {"name": "nosuch", "hashed_password": HASH}),
              ("user_get", {"name": "nosuch"}),
              ("user_add", {"name": "np", "options": {"no_password": True}}),
              ("user_get", {"name": "np"}),
              ("user_list", {}),
              ("user_get", {"name": "u1"}))
    err(r[0], "USER_EXISTS", "etcdserver: user name already exists")
    assert r[1] == r[2] == {"header": {"revision": 1}}
    err(r[3], "ROLE_NOT_FOUND", "etcdserver: role name not found")
    err(r[4], "USER_NOT_FOUND", "etcdserver: user name not found")
    err(r[5], "ROLE_NOT_GRANTED", "etcdserver: role is not granted to the user")
    for i in (6, 7, 8, 9):
        err(r[i], "USER_NOT_FOUND", "etcdserver: user name not found")
    assert r[11] == {"header": {"revision": 1}, "roles": []}
    assert r[12]["users"] == ["np", "u1"]
    assert r[13]["roles"] == ["r1"]
    # The second grant changed nothing: one change for the first only, plus np's creation.
    assert [c for _, c in store.auth_changes] == [["user", "u1", [HASH, ["r1"]]], ["user", "np", [None, []]]]
    ok(store, ("user_revoke_role", {"name": "u1", "role": "r1"}), ("user_delete", {"name": "np"}))
    assert store.auth_state().users == {"u1": [HASH, []]}


def test_roles_of_a_user_are_kept_sorted(store):
    """etcd keeps user.Roles sorted (UserGrantRole: sort.Strings); user get lists them so."""
    ok(store, ("role_add", {"name": "b"}), ("role_add", {"name": "a"}), ("user_add", {"name": "x", "hashed_password": HASH}),
       ("user_grant_role", {"user": "x", "role": "b"}), ("user_grant_role", {"user": "x", "role": "a"}))
    assert ok(store, ("user_get", {"name": "x"}))[0]["roles"] == ["a", "b"]
    assert ok(store, ("role_list", {}))[0]["roles"] == ["a", "b"]


def test_root_is_protected_only_while_auth_is_enabled(store):
    """etcd 3.4.23, enabled, as root: `user revoke-role root root`, `user delete root`,
    `role delete root` -> "etcdserver: invalid auth management" (InvalidArgument there,
    FAILED_PRECONDITION here, security.md); after `auth disable`: "Role root is revoked from user
    root", "User root deleted", "Role root deleted"."""
    ok(store, ("role_add", {"name": "root"}), *ROOT_SETUP, ("auth_enable", {}))
    for req in (("user_revoke_role", {"name": "root", "role": "root"}, "root"),
                ("user_delete", {"name": "root"}, "root"),
                ("role_delete", {"role": "root"}, "root")):
        err(apply(store, req)[0], "FAILED_PRECONDITION", "etcdserver: invalid auth management")
    ok(store, ("auth_disable", {}, "root"))
    ok(store, ("user_revoke_role", {"name": "root", "role": "root"}), ("user_delete", {"name": "root"}),
       ("role_delete", {"role": "root"}))
    st = store.auth_state()
    assert st.users == {} and st.roles == {}


def test_role_ops_and_their_errors(store):
    """etcd 3.4.23: `role add r1` twice -> "etcdserver: role name already exists";
    `role grant-permission r1 read a` then `... write a` -> `role get r1` shows a under "KV Write:"
    only (the type of the same (key, range_end) is replaced); `role revoke-permission r1 zz` ->
    "etcdserver: permission is not granted to the role"; `role revoke-permission nosuch a` /
    `role delete nosuch` -> "etcdserver: role name not found"."""
    ok(store, ("role_add", {"name": "r1"}))
    perm = lambda t, k, e=b"": {"permType": t, "key": k, "range_end": e}  # noqa: E731
    r = apply(store,
              ("role_add", {"name": "r1"}),
              ("role_grant_permission", {"name": "r1", "perm": perm("READ", b"a")}),
              ("role_grant_permission", {"name": "r1", "perm": perm("WRITE", b"a")}),
              ("role_grant_permission", {"name": "r1", "perm": perm("READWRITE", b"a", b"b")}),
              ("role_grant_permission", {"name": "r1", "perm": perm("READ", b"b", b"\x00")}),
              ("role_grant_permission", {"name": "nosuch", "perm": perm("READ", b"b")}),
              ("role_revoke_permission", {"role": "r1", "key": b"zz"}),
              ("role_revoke_permission", {"role": "r1", "key": b"a", "range_end": b"\x00"}),
              ("role_revoke_permission", {"role": "r1", "key": b"a"}),
              ("role_revoke_permission", {"role": "nosuch", "key": b"a"}),
              ("role_delete", {"role": "nosuch"}),
              ("role_get", {"role": "r1"}),
              ("role_get", {"role": "nosuch"}))
    err(r[0], "ROLE_EXISTS", "etcdserver: role name already exists")
    err(r[5], "ROLE_NOT_FOUND", "etcdserver: role name not found")
    err(r[6], "PERMISSION_NOT_GRANTED", "etcdserver: permission is not granted to the role")
    err(r[7], "PERMISSION_NOT_GRANTED")
    assert r[8] == {"header": {"revision": 1}}
    for i in (9, 10, 12):
        err(r[i], "ROLE_NOT_FOUND", "etcdserver: role name not found")
    assert r[11]["perm"] == [{"permType": "READWRITE", "key": b"a", "range_end": b"b"},
                             {"permType": "READ", "key": b"b", "range_end": b"\x00"}]
    # One permission per change, never the whole role (a publish stays small); LMDB has the role.
    assert [c for _, c in store.auth_changes] == [
        ["perm_grant", "r1", ["READ", b"a", b""]], ["perm_grant", "r1", ["WRITE", b"a", b""]],
        ["perm_grant", "r1", ["READWRITE", b"a", b"b"]], ["perm_grant", "r1", ["READ", b"b", b"\x00"]],
        ["perm_revoke", "r1", b"a", b""]]
    assert store.auth_state() == store.auth_after


def test_grant_permission_replaces_the_type_of_that_exact_range_wherever_it_is(store):
    """etcd compares only the first permission with that key: with (a, "") and (a, "b") granted,
    granting (a, "b") again could append a duplicate.  Here the exact (key, range_end) is found."""
    perm = lambda t, e: {"permType": t, "key": b"a", "range_end": e}  # noqa: E731
    ok(store, ("role_add", {"name": "r"}),
       ("role_grant_permission", {"name": "r", "perm": perm("READ", b"")}),
       ("role_grant_permission", {"name": "r", "perm": perm("READ", b"b")}),
       ("role_grant_permission", {"name": "r", "perm": perm("WRITE", b"b")}))
    assert store.auth_state().roles["r"] == [["READ", b"a", b""], ["WRITE", b"a", b"b"]]


def test_role_delete_removes_the_role_from_every_user_in_one_auth_revision(store):
    """etcd 3.4.23: `role delete r1` then `user get u1` -> "User: u1 / Roles:" (RoleDelete
    rewrites every user in the same transaction, one revision).  One change ["role", r1, None]:
    AuthState.apply removes the role from the users on every copy; LMDB has them rewritten."""
    ok(store, ("role_add", {"name": "r1"}), ("role_add", {"name": "r2"}),
       ("user_add", {"name": "x", "hashed_password": HASH}), ("user_add", {"name": "y", "hashed_password": HASH}),
       ("user_grant_role", {"user": "x", "role": "r1"}), ("user_grant_role", {"user": "x", "role": "r2"}),
       ("user_grant_role", {"user": "y", "role": "r1"}))
    before = store.auth_state().revision
    ok(store, ("role_delete", {"role": "r1"}))
    assert store.auth_changes == [(1, ["role", "r1", None])]
    st = store.auth_state()
    assert st.revision == before + 1
    assert st.users == {"x": [HASH, ["r2"]], "y": [HASH, []]}
    assert st.roles == {"r2": []}


def test_the_writer_never_takes_a_plaintext_password(store):
    """The fan-out hashes: a `password` reaching the store is INVALID_ARGUMENT (with or without
    no_password), a hash not of passwords.py's format too, and a password-less user_add needs
    options.no_password."""
    r = apply(store,
              ("user_add", {"name": "a", "password": "secret"}),
              ("user_add", {"name": "a", "password": "secret", "options": {"no_password": True}}),
              ("user_add", {"name": "a", "hashed_password": "scrypt$2$1$1$AAAA$AAAA"}),
              ("user_add", {"name": "a"}),
              ("user_add", {"name": "a", "hashed_password": HASH}),
              ("user_change_password", {"name": "a", "password": "secret"}),
              ("user_change_password", {"name": "a"}))
    for i in (0, 1, 2, 3, 5, 6):
        err(r[i], "INVALID_ARGUMENT")
        assert "secret" not in r[i].message
    assert r[4] == {"header": {"revision": 1}}
    assert store.auth_state().users == {"a": [HASH, []]}


def test_one_auth_revision_per_change_and_changes_carry_the_kv_revision_they_follow(store):
    """Auth changes are not KV revisions: the header stays at the KV revision, each change's
    after_revision is the KV revision current when it was applied."""
    results = ok(store, ("role_add", {"name": "a"}), ("put", {"key": b"k", "value": b"v"}),
                 ("role_add", {"name": "b"}), ("auth_status", {}))
    assert results[0]["header"]["revision"] == 1 and results[2]["header"]["revision"] == 2
    assert store.auth_changes == [(1, ["role", "a", []]), (2, ["role", "b", []])]
    assert results[3] == {"header": {"revision": 2}, "enabled": False, "authRevision": 2}
    assert store.current_revision() == 2


def test_a_change_that_would_make_the_state_too_big_is_resource_exhausted(store, monkeypatch):
    """MAX_AUTH_STATE_BYTES bounds the whole encoded state; a change shrinking it still passes."""
    ok(store, ("role_add", {"name": "r"}))
    monkeypatch.setattr(authtx, "MAX_AUTH_STATE_BYTES", authtx.state_bytes(store.auth_state()) + 40)
    big = {"permType": "READ", "key": b"k" * 60, "range_end": b""}
    e = err(apply(store, ("role_grant_permission", {"name": "r", "perm": big}))[0], "RESOURCE_EXHAUSTED")
    assert "auth state" in e.message
    assert store.auth_state().roles == {"r": []}
    ok(store, ("role_delete", {"role": "r"}))


# ---------------------------------------------------------------------------------------------
# who may run the auth ops

def test_admin_ops_need_root_except_your_own_user_and_roles(store):
    """etcd 3.4.23, enabled, as u1 (role r1): `user get u1` and `role get r1` answer; `role get
    root`, `user get root`, `user list`, `role list`, `auth disable`, `user get nosuch`,
    `role get nosuch` -> "etcdserver: permission denied"; with no user at all (`role list`) ->
    "etcdserver: user name is empty".  auth_status: any authenticated user."""
    enabled_store(store)
    r = apply(store,
              ("user_get", {"name": "u"}, "u"),
              ("role_get", {"role": "r"}, "u"),
              ("role_get", {"role": "root"}, "u"),
              ("user_get", {"name": "root"}, "u"),
              ("user_list", {}, "u"),
              ("role_list", {}, "u"),
              ("auth_disable", {}, "u"),
              ("user_get", {"name": "nosuch"}, "u"),
              ("role_get", {"role": "nosuch"}, "u"),
              ("role_list", {}, ""),
              ("auth_status", {}, "u"),
              ("auth_status", {}, ""),
              ("user_add", {"name": "w", "hashed_password": HASH}, "u"),
              ("user_list", {}, "root"),
              ("user_list", {}, "ghost"))
    assert r[0]["roles"] == ["r"] and r[1]["perm"][0]["key"] == b"a/"
    for i in range(2, 9):
        err(r[i], "PERMISSION_DENIED", "etcdserver: permission denied")
    err(r[9], "UNAUTHENTICATED", "etcdserver: user name is empty")
    assert r[10]["enabled"] is True
    err(r[11], "UNAUTHENTICATED")
    err(r[12], "PERMISSION_DENIED")
    assert r[13]["users"] == ["root", "u", "v"]
    err(r[14], "UNAUTHENTICATED")           # a user deleted since the session logged in


def test_while_auth_is_disabled_anyone_may_do_anything(store):
    """etcd 3.4.23: `user add root` and `user grant-role root root` with no user at all, auth
    disabled: "User root created", "Role root is granted to user root"."""
    ok(store, ("user_add", {"name": "root", "hashed_password": HASH}, ""),
       ("user_grant_role", {"user": "root", "role": "root"}, ""),
       ("put", {"key": b"x", "value": b"1"}, ""), ("compact", {"revision": 2}, ""),
       ("auth_enable", {}, ""))
    assert store.auth_state().enabled


def test_an_internal_peer_is_never_checked(store):
    """user None: the writer's own lease expiry, tools, tests."""
    enabled_store(store)
    ok(store, ("put", {"key": b"z", "value": b"1"}), ("user_list", {}), ("compact", {"revision": 2}))


# ---------------------------------------------------------------------------------------------
# KV checks (apply_auth.go)

def test_range_put_delete_need_read_and_write_on_their_range(store):
    """etcd 3.4.23, enabled: `put k v` without a user -> "etcdserver: user name is empty"; as a
    user without WRITE on k -> "etcdserver: permission denied"."""
    enabled_store(store)
    r = apply(store,
              ("put", {"key": b"a/1", "value": b"1"}, "u"),
              ("put", {"key": b"b", "value": b"1"}, "u"),
              ("put", {"key": b"a/1", "value": b"1"}, ""),
              ("range", {"key": b"a/", "range_end": b"a0"}, "u"),
              ("range", {"key": b"a/", "range_end": b"a1"}, "u"),     # wider than a/
              ("range", {"key": b"a/", "range_end": b"\x00"}, "u"),   # from-key: wider
              ("range", {"key": b"a/1"}, "v"),
              ("delete_range", {"key": b"a/", "range_end": b"a0"}, "u"),
              ("delete_range", {"key": b"a", "range_end": b"a0"}, "u"),
              ("put", {"key": b"b", "value": b"1"}, "root"))
    assert "header" in r[0] and "header" in r[3] and "header" in r[7] and "header" in r[9]
    err(r[1], "PERMISSION_DENIED", "etcdserver: permission denied")
    err(r[2], "UNAUTHENTICATED", "etcdserver: user name is empty")
    for i in (4, 5, 6, 8):
        err(r[i], "PERMISSION_DENIED")


def test_prev_kv_needs_read_too(store):
    """A WRITE-only role may put and delete, but not get the previous values back."""
    perm = {"permType": "WRITE", "key": b"w", "range_end": b""}
    enabled_store(store, ("role_add", {"name": "wo"}), ("role_grant_permission", {"name": "wo", "perm": perm}),
                  ("user_grant_role", {"user": "v", "role": "wo"}))
    r = apply(store,
              ("put", {"key": b"w", "value": b"1"}, "v"),
              ("put", {"key": b"w", "value": b"2", "prev_kv": True}, "v"),
              ("delete_range", {"key": b"w", "prev_kv": True}, "v"),
              ("delete_range", {"key": b"w"}, "v"))
    assert r[0]["header"]["revision"] == 2 and r[3]["deleted"] == 1
    err(r[1], "PERMISSION_DENIED")
    err(r[2], "PERMISSION_DENIED")


def test_a_forbidden_write_hidden_in_a_nested_branch_is_denied_before_anything_runs(store):
    """etcd 3.4 did not check nested txns at all (a write hidden in one went through).  Here
    every op of both branches is checked, recursively, even in a branch that would not be taken,
    and a denied txn writes nothing."""
    enabled_store(store)
    hidden = {"compare": [{"key": b"a/x", "target": "VERSION", "result": "EQUAL", "version": 7}],
              "success": [{"request_put": {"key": b"a/ok", "value": b"1"}}],
              "failure": [{"request_txn": {"success": [{"request_put": {"key": b"secret", "value": b"pwn"}}]}}]}
    body = {"compare": [], "success": [{"request_put": {"key": b"a/1", "value": b"1"}}, {"request_txn": hidden}]}
    err(apply(store, ("txn", body, "u"))[0], "PERMISSION_DENIED")
    assert store.current_revision() == 1
    assert store.range({"key": b"\x00", "range_end": b"\x00"})["count"] == 0
    # The same txn with the hidden put moved into a/ passes.
    hidden["failure"][0]["request_txn"]["success"][0]["request_put"]["key"] = b"a/2"
    assert ok(store, ("txn", body, "u"))[0]["succeeded"] is True


def test_a_txn_compare_needs_read_on_its_range(store):
    """checkTxnAuth: READ on every compare's (key, range_end), whichever branch is taken."""
    enabled_store(store)
    cmp_ = lambda key, end=b"": {"key": key, "range_end": end, "target": "VERSION", "result": "EQUAL", "version": 0}  # noqa: E731
    r = apply(store,
              ("txn", {"compare": [cmp_(b"a/1")], "success": [], "failure": []}, "u"),
              ("txn", {"compare": [cmp_(b"b")], "success": [], "failure": []}, "u"),
              ("txn", {"compare": [cmp_(b"a/", b"\x00")], "success": [], "failure": []}, "u"),
              ("txn", {"success": [{"request_range": {"key": b"zz"}}]}, "u"),
              ("txn", {"failure": [{"request_delete_range": {"key": b"zz"}}]}, "u"))
    assert r[0]["succeeded"] is True
    for i in (1, 2, 3, 4):
        err(r[i], "PERMISSION_DENIED")


def test_lease_keys_need_write_to_revoke_or_to_attach_more(store):
    """etcd's checkLeasePuts: a lease holding a key the user may not write can be neither
    revoked by that user nor given more keys by it; lease_grant needs any authenticated user."""
    enabled_store(store)
    grant = ok(store, ("lease_grant", {"ID": 0, "TTL": 60}))[0]
    lease = grant["ID"]
    ok(store, ("put", {"key": b"root-only", "value": b"1", "lease": lease}, "root"))
    r = apply(store,
              ("put", {"key": b"a/1", "value": b"1", "lease": lease}, "u"),
              ("txn", {"success": [{"request_put": {"key": b"a/2", "value": b"1", "lease": lease}}]}, "u"),
              ("lease_revoke", {"ID": lease}, "u"),
              ("lease_grant", {"ID": 0, "TTL": 60}, ""),
              ("lease_grant", {"ID": 0, "TTL": 60}, "u"))
    for i in (0, 1, 2):
        err(r[i], "PERMISSION_DENIED")
    err(r[3], "UNAUTHENTICATED")
    mine = r[4]["ID"]
    ok(store, ("put", {"key": b"a/3", "value": b"1", "lease": mine}, "u"), ("lease_revoke", {"ID": mine}, "u"))
    ok(store, ("lease_revoke", {"ID": lease}, "root"))


def test_compact_needs_root(store):
    """etcd 3.4.23 lets any user compact (`compaction 1` as u1 -> "compacted revision 1");
    security.md asks root."""
    enabled_store(store)
    ok(store, ("put", {"key": b"a/1", "value": b"1"}, "u"))
    err(apply(store, ("compact", {"revision": 2}, "u"))[0], "PERMISSION_DENIED")
    ok(store, ("compact", {"revision": 2}, "root"))


# ---------------------------------------------------------------------------------------------
# commit order and the in-memory state

def test_a_revoke_earlier_in_the_batch_applies_to_the_later_requests(store):
    """Checks use the state as of each request: a put after the revoke of its user's role in
    the same batch is denied; one before it passes; a grant earlier in a batch allows."""
    enabled_store(store)
    state = store.auth_state()
    results, published = store.apply_batch([
        ("put", {"key": b"a/1", "value": b"1"}, "u"),
        ("user_revoke_role", {"name": "u", "role": "r"}, "root"),
        ("put", {"key": b"a/2", "value": b"2"}, "u"),
        ("user_grant_role", {"user": "v", "role": "r"}, "root"),
        ("put", {"key": b"a/3", "value": b"3"}, "v")], state)
    assert results[0]["header"]["revision"] == 2
    err(results[2], "PERMISSION_DENIED")
    assert results[4]["header"]["revision"] == 3
    assert [rev for rev, _ in published] == [2, 3]
    assert [after for after, _ in store.auth_changes] == [2, 2]
    assert store.auth_after is not state and store.auth_after.revision == state.revision + 2
    assert state.users["u"][1] == ["r"]     # the caller's object is untouched


def test_a_failed_commit_leaves_the_in_memory_state_as_it_was(store, monkeypatch):
    """The writer hands its AuthState to apply_batch; the batch works on a copy, and when the
    commit fails (a storage fault) the writer's object, auth_after and LMDB are all unchanged."""
    enabled_store(store)
    state = store.auth_state()
    before = state.to_wire()

    def failing_commit(txn):
        txn.abort()
        raise lmdb.Error("simulated I/O fault")
    monkeypatch.setattr(Store, "_commit", staticmethod(failing_commit))
    results, published = store.apply_batch([("role_delete", {"role": "r"}, "root"),
                                            ("user_delete", {"name": "u"}, "root")], state)
    assert all(isinstance(r, ZwatchError) for r in results) and published == []
    assert store.auth_after is state and store.auth_changes == []
    assert state.to_wire() == before
    monkeypatch.undo()
    assert store.auth_state() == AuthState.from_wire(before)
    # And the next batch starts from that state: u still has r.
    assert ok(store, ("put", {"key": b"a/1", "value": b"1"}, "u"), auth=state)[0]["header"]["revision"] == 2
