"""AuthState (actors/auth/state.py): users, roles, the enabled flag and the auth revision, the
changes the writer publishes, and the checks every actor makes with them.  In-process."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zwatch import internal
from zwatch.actors.auth.perms import ALLOW_ALL, READ, READWRITE, WRITE
from zwatch.actors.auth.state import AuthState
from zwatch.errors import PermissionDenied, Unauthenticated


def state(enabled=True) -> AuthState:
    s = AuthState()
    for change in (["role", "root", []], ["user", "root", [None, ["root"]]],
                   ["role", "reader", [[READ, b"a", b"m"]]], ["role", "writer", [[WRITE, b"k", b""]]],
                   ["user", "alice", [None, ["reader"]]], ["user", "bob", [None, ["reader", "writer"]]],
                   ["user", "carol", [None, []]], ["enabled", enabled]):
        s.apply(change)
    return s


def test_each_change_is_one_auth_revision():
    s = state()
    assert s.revision == 8 and s.enabled
    s.apply(["enabled", False])
    assert s.revision == 9 and not s.enabled


def test_checks_are_no_ops_while_disabled():
    s = state(enabled=False)
    s.check(None, WRITE, b"zzz", b"\x00")
    s.check("nobody", READ, b"a")
    s.check_admin(None)
    assert s.allowed(None, WRITE, b"x")


def test_no_user_is_unauthenticated_when_enabled():
    s = state()
    with pytest.raises(Unauthenticated) as e:
        s.check(None, READ, b"a")
    assert e.value.message == "etcdserver: user name is empty" and e.value.code == "UNAUTHENTICATED"
    with pytest.raises(Unauthenticated):
        s.check_admin(None)
    with pytest.raises(Unauthenticated) as e:
        s.check("deleted", READ, b"a")
    assert e.value.message == "etcdserver: invalid auth token"
    assert not s.allowed(None, READ, b"a") and not s.allowed("deleted", READ, b"a")


def test_permission_denied_outside_the_users_roles():
    s = state()
    s.check("alice", READ, b"a", b"m")
    s.check("alice", READ, b"b")
    for user, kind, key, end in [("alice", WRITE, b"b", b""), ("alice", READ, b"a", b"\x00"),
                                 ("alice", READ, b"m", b""), ("bob", WRITE, b"k", b"l"), ("carol", READ, b"a", b"")]:
        with pytest.raises(PermissionDenied) as e:
            s.check(user, kind, key, end)
        assert e.value.message == "etcdserver: permission denied" and e.value.code == "PERMISSION_DENIED"
        assert not s.allowed(user, kind, key, end)
    s.check("bob", WRITE, b"k")


def test_root_may_do_everything_and_only_root_is_admin():
    s = state()
    assert s.perms("root") is ALLOW_ALL and s.is_root("root")
    s.check("root", WRITE, b"\x00", b"\x00")
    s.check_admin("root")
    for user in ("alice", "bob", "carol"):
        assert not s.is_root(user)
        with pytest.raises(PermissionDenied):
            s.check_admin(user)
    assert not s.is_root(None) and not s.is_root("nobody")
    assert s.perms(None) is None and s.perms("nobody") is None


def test_a_role_change_invalidates_only_the_users_having_it():
    s = state()
    alice, bob, carol, root = (s.perms(u) for u in ("alice", "bob", "carol", "root"))
    s.apply(["role", "writer", [[WRITE, b"k", b"\x00"]]])
    assert s.perms("alice") is alice and s.perms("carol") is carol and s.perms("root") is root
    assert s.perms("bob") is not bob and s.perms("bob").can_write(b"z", b"\x00")
    bob = s.perms("bob")
    s.apply(["user", "carol", [None, ["writer"]]])
    assert s.perms("carol").can_write(b"k") and s.perms("bob") is bob and s.perms("alice") is alice
    s.apply(["role", "unused", [[READ, b"x", b""]]])          # a role nobody has: no cache dropped
    assert s.perms("bob") is bob and s.perms("alice") is alice


def test_a_role_deletion_removes_it_from_every_user():
    """The writer publishes one change for role_delete (one auth revision, as etcd); applying it
    removes the role from the users, as etcd's RoleDelete does."""
    s = state()
    rev = s.revision
    assert s.users_with_role("reader") == ["alice", "bob"]
    s.perms("alice")
    s.apply(["role", "reader", None])
    assert s.revision == rev + 1 and "reader" not in s.roles
    assert s.users["alice"][1] == [] and s.users["bob"][1] == ["writer"]
    assert s.users_with_role("reader") == []
    assert not s.allowed("alice", READ, b"b") and s.allowed("bob", WRITE, b"k")
    # A later role of the same name grants nothing to the users it was removed from.
    s.apply(["role", "reader", [[READ, b"a", b"m"]]])
    assert not s.allowed("alice", READ, b"b")


def test_a_user_naming_a_missing_role_gets_nothing_from_it():
    s = AuthState(True, 0, {"u": [None, ["ghost", "r"]]}, {"r": [[READ, b"a", b""]]})
    assert s.allowed("u", READ, b"a") and not s.allowed("u", READ, b"b")


def test_user_deletion_and_password_change():
    s = state()
    s.apply(["user", "alice", ["scrypt$1$1$1$AA==$AA==", ["reader"]]])
    assert s.users["alice"][0].startswith("scrypt$") and s.allowed("alice", READ, b"b")
    s.apply(["user", "alice", None])
    assert "alice" not in s.users and s.perms("alice") is None
    with pytest.raises(Unauthenticated):
        s.check("alice", READ, b"b")


def test_wire_round_trip_validates_and_copies_are_independent():
    s = state()
    wire = s.to_wire()
    assert internal.decode_auth_state(wire) is wire
    again = AuthState.from_wire(internal.decode_auth_state(internal.decode_from_syncer(
        internal.AuthStateReply(1, wire).encode())[1]))
    assert again == s and again.revision == s.revision and again.enabled
    c = s.copy()
    c.apply(["user", "alice", [None, []]])
    c.apply(["role", "writer", [[READWRITE, b"", b"\x00"]]])
    assert s.users["alice"][1] == ["reader"] and s.roles["writer"] == [[WRITE, b"k", b""]]
    assert s.allowed("alice", READ, b"b") and not c.allowed("alice", READ, b"b")
    assert c.revision == s.revision + 2


def test_every_change_layout_passes_the_publish_decoder():
    for change in (["enabled", True], ["user", "u", [None, ["r"]]], ["user", "u", None],
                   ["role", "r", [[READ, b"a", b""]]], ["role", "r", None]):
        assert internal.decode_auth_change(change) is change
    with pytest.raises(ValueError):
        AuthState().apply(["group", "g", None])


# ---------------------------------------------------------------- cached answers = fresh answers
NAMES = ["u1", "u2", "u3"]
ROLES = ["r1", "r2", "root"]
KEYS = [b"a", b"b", b"c"]
perm = st.tuples(st.sampled_from([READ, WRITE, READWRITE]), st.sampled_from(KEYS),
                 st.sampled_from([b"", b"\x00", b"b", b"d"])).map(list)
change = st.one_of(
    st.tuples(st.just("enabled"), st.booleans()).map(list),
    st.tuples(st.just("user"), st.sampled_from(NAMES),
              st.one_of(st.none(), st.lists(st.sampled_from(ROLES), unique=True).map(lambda r: [None, r]))).map(list),
    st.tuples(st.just("role"), st.sampled_from(ROLES),
              st.one_of(st.none(), st.lists(perm, max_size=3))).map(list))


def answers(s: AuthState) -> list:
    return [s.allowed(u, kind, k, e) for u in NAMES for kind in (READ, WRITE) for k in KEYS
            for e in (b"", b"\x00", b"c")]


@settings(max_examples=200, deadline=None)
@given(changes=st.lists(change, max_size=12))
def test_cached_permissions_always_answer_as_a_fresh_state(changes):
    """perms() is cached per user and invalidated per change: after any sequence of changes the
    answers equal those of a state rebuilt from scratch (no cache)."""
    s = AuthState(enabled=True)
    for c in changes:
        answers(s)                                    # fill the cache before each change
        s.apply(c)
        assert answers(s) == answers(AuthState.from_wire(s.to_wire()))
    assert s.revision == len(changes)


def test_permission_deltas_give_the_state_the_whole_role_record_gives():
    """perm_grant / perm_revoke (one permission, audit: a batch of grants to a big role published
    the whole role per grant) leave the same state and permissions as the role's full record."""
    from zwatch.actors.auth.state import AuthState
    from zwatch.internal import decode_auth_change
    by_delta = AuthState(True, 1, users={"u": [None, ["r"]]}, roles={"r": [["READ", b"a", b""], ["READ", b"m", b"n"]]})
    by_record = by_delta.copy()
    assert by_delta.perms("u").can_read(b"a") and not by_delta.perms("u").can_read(b"c")   # cached before
    for change in (["perm_grant", "r", ["READWRITE", b"c", b""]], ["perm_grant", "r", ["WRITE", b"a", b""]],
                   ["perm_revoke", "r", b"m", b"n"]):
        by_delta.apply(decode_auth_change(change))
    by_record.apply(["role", "r", [["WRITE", b"a", b""], ["READWRITE", b"c", b""]]])
    by_record.revision += 2
    assert by_delta == by_record
    p = by_delta.perms("u")
    assert p.can_read(b"c") and p.can_write(b"a") and not p.can_read(b"a") and not p.can_read(b"m")
