"""The fan-out core's side of authorization (issue #11): watches are checked on the range they will
get, and the auth changes of the publish stream cancel what they forbid at exactly their place.

No process, no socket: the core is driven by publishes, syncer frames and fetched auth states,
and checked by what it queues.
"""
from __future__ import annotations

import msgpack
import pytest

from zwatch.actors.auth.state import AuthState
from zwatch.actors.fanout.core import FanoutCore
from zwatch.actors.fanout.model import SYNCED, UNSYNCED, ControlOut, Session, WatchOut
from zwatch.errors import PermissionDenied, Unauthenticated
from zwatch.internal import Registration  # noqa: F401  (the syncer's side of the same frames)

KEY = b"k"
ROOT_USER = ["root", [None, ["root"]]]


def put(rev: int, key: bytes = KEY):
    return [0, [key, 2, rev, rev - 1, b"v", 0], None]


def state(revision=2, enabled=True, alice_roles=("r",), perms=(("READ", b"k", b""),)):
    return AuthState(enabled=enabled, revision=revision,
                     users={"root": [None, ["root"]], "alice": [None, list(alice_roles)]},
                     roles={"root": [], "r": [list(p) for p in perms]})


def core_with(st: AuthState, at: int = 2) -> FanoutCore:
    core = FanoutCore(follow_auth=True)
    core.on_auth_state(st)
    core.on_publish(at, at, [], 0, st.revision, [])
    return core


def session(core, name=b"s1", user="alice") -> Session:
    s = Session(name, name.decode())
    core.set_session_user(s, user)
    return s


def watch(core, s, wid=1, start=0, **body):
    core.watch_create(s, 100 + wid, dict({"key": KEY, "watch_id": wid, "start_revision": start}, **body))
    return s.watches.get(wid)


def stream_of(items, wid):
    """[("ev", revision) | ("cancel", header revision, cancel_code)] in queue order."""
    out = []
    for item in items:
        if isinstance(item, WatchOut):
            ids, _rev, evs, _ = msgpack.unpackb(item.data, raw=False)
            if wid in ids:
                out.extend(("ev", e[1][2]) for e in evs)
        elif isinstance(item, ControlOut):
            resp = msgpack.unpackb(item.data, raw=False)
            if resp["watch_id"] == wid and resp["canceled"]:
                out.append(("cancel", resp["header"]["revision"], resp.get("cancel_code")))
    return out


def take(core, s):
    return core.take_output().get(s.ident, [])


# ---------------------------------------------------------------- creation
def test_watch_is_checked_on_the_range_it_will_get():
    core = core_with(state())
    s = session(core)
    assert watch(core, s, 1).state == SYNCED                       # the key itself: allowed
    for wid, body in ((2, {"range_end": b"\x00"}),                    # from key: GHSA-xg4h-6gfc-h4m8
                      (3, {"range_end": b"l"}),                       # prefix "k"
                      (4, {"key": b"", "range_end": b"\x00"})):       # every key
        with pytest.raises(PermissionDenied):
            watch(core, s, wid, **body)
        assert wid not in s.watches
    assert core.st["auth_denied"] == 3


def test_anonymous_watch_is_unauthenticated_when_auth_is_enabled_and_free_when_not():
    core = core_with(state())
    with pytest.raises(Unauthenticated):
        watch(core, session(core, b"anon", None))
    core = core_with(state(enabled=False))
    assert watch(core, session(core, b"anon", None)).state == SYNCED


def test_creates_wait_until_the_auth_state_is_loaded():
    core = FanoutCore(follow_auth=True)
    core.on_publish(1, 1, [], 0, 2, [])           # joined the stream, no auth state yet
    s = Session(b"s1", "s1")
    assert watch(core, s) is None and core.waiting_creates
    core.on_auth_state(state())                   # anonymous, auth enabled: refused now
    replies = take(core, s)
    assert b"UNAUTHENTICATED" in replies[-1].frame and not s.watches


# ---------------------------------------------------------------- changes in the stream
def test_revoke_between_two_revisions_cancels_after_the_first_and_before_the_second():
    """A permission revoked in the commit that made revisions 3 and 4, between them: the watch
    gets 3, then a cancel at header revision 3 (PERMISSION_DENIED), never 4."""
    core = core_with(state())
    s = session(core)
    w = watch(core, s)
    take(core, s)
    core.on_publish(2, 4, [[3, [put(3)]], [4, [put(4)]]], 0, 3, [[3, ["role", "r", []]]])
    assert stream_of(take(core, s), w.watch_id) == [("ev", 3), ("cancel", 3, "PERMISSION_DENIED")]
    assert w.watch_id not in s.watches


def test_a_change_that_keeps_the_range_readable_cancels_nothing():
    core = core_with(state())
    s = session(core)
    w = watch(core, s)
    take(core, s)
    core.on_publish(2, 4, [[3, [put(3)]], [4, [put(4)]]], 0, 3,
                    [[3, ["role", "r", [["READWRITE", b"k", b"l"]]]]])
    assert stream_of(take(core, s), w.watch_id) == [("ev", 3), ("ev", 4)]


def test_auth_enable_cancels_the_watches_of_anonymous_sessions():
    core = core_with(state(enabled=False))
    anon, alice = session(core, b"anon", None), session(core, b"a1", "alice")
    wa, wb = watch(core, anon), watch(core, alice)
    core.take_output()
    core.on_publish(2, 3, [[3, [put(3)]]], 0, 3, [[2, ["enabled", True]]])
    out = core.take_output()
    assert stream_of(out.get(anon.ident, []), wa.watch_id) == [("cancel", 2, "UNAUTHENTICATED")]
    assert stream_of(out.get(alice.ident, []), wb.watch_id) == [("ev", 3)]


def test_password_change_makes_the_users_sessions_anonymous_and_cancels_their_watches():
    core = core_with(state())
    s = session(core)
    w = watch(core, s)
    take(core, s)
    core.on_publish(2, 2, [], 0, 3, [[2, ["user", "alice", ["scrypt$new", ["r"]]]]])
    assert stream_of(take(core, s), w.watch_id) == [("cancel", 2, "UNAUTHENTICATED")]
    assert s.user is None and "alice" not in core.user_sessions


def test_catching_up_watch_revoked_meanwhile_never_gets_the_syncers_later_events():
    """The syncer read a snapshot with the revoke (auth revision 3) and replayed up to revision 6;
    the fan-out holds those frames until its stream applies the revoke, which cancels the watch at
    its position (what it had been given); the held events are then dropped."""
    core = core_with(state(), at=5)
    s = session(core)
    w = watch(core, s, start=2)
    assert w.state == UNSYNCED
    take(core, s)
    resp = msgpack.packb([[w.watch_id], 6, [put(r) for r in (2, 3, 6)], False])
    core.on_syncer("ev", [([(w.uid, w.epoch)], 2, 6, resp, {})], 3)      # made at auth revision 3
    assert take(core, s) == [] and core.held_syncer
    core.on_publish(5, 6, [[6, [put(6)]]], 0, 3, [[5, ["role", "r", []]]])
    assert stream_of(take(core, s), w.watch_id) == [("cancel", 1, "PERMISSION_DENIED")]
    assert not core.held_syncer


def test_held_syncer_frames_are_taken_in_order_once_the_stream_catches_up():
    core = core_with(state(), at=5)
    s = session(core)
    w = watch(core, s, start=2)
    take(core, s)
    resp = msgpack.packb([[w.watch_id], 5, [put(r) for r in (2, 3)], False])
    core.on_syncer("ev", [([(w.uid, w.epoch)], 2, 5, resp, {})], 3)
    core.on_syncer("synced", [(w.uid, w.epoch, 5)], 3)
    core.on_publish(5, 6, [[6, [put(6)]]], 0, 3, [[5, ["user", "bob", [None, []]]]])   # harmless change
    assert stream_of(take(core, s), w.watch_id) == [("ev", 2), ("ev", 3), ("ev", 6)]
    assert w.state == SYNCED


def test_missed_auth_change_moves_synced_watchers_to_the_syncer_until_the_state_is_fetched():
    core = core_with(state())
    s = session(core)
    w = watch(core, s)
    take(core, s)
    core.on_publish(2, 3, [[3, [put(3)]]], 0, 5, [])          # auth revision 5: 3..5 were missed
    assert core.auth.need_fetch and w.state == UNSYNCED
    assert stream_of(take(core, s), w.watch_id) == []          # nothing on a stale permission
    s2 = session(core, b"s2")
    assert watch(core, s2) is None and core.waiting_creates   # creates wait for the fetch
    core.on_auth_state(state(revision=5, perms=()))           # the fetched state forbids k
    out = core.take_output()
    assert stream_of(out.get(s.ident, []), w.watch_id) == [("cancel", 2, "PERMISSION_DENIED")]
    assert b"PERMISSION_DENIED" in out[s2.ident][-1].frame


def test_delivery_makes_no_permission_check_whatever_the_number_of_permissions(monkeypatch):
    """Permissions are checked when a watch is created and when an auth change touches its user,
    never per event: 200 events to 100 watches of a user with 10,000 permissions cost no check."""
    many = [("READ", b"k%05d" % i, b"") for i in range(10_000)] + [("READ", b"k", b"")]
    core = core_with(state(perms=many))
    sessions = [session(core, b"s%d" % i) for i in range(100)]
    for s in sessions:
        watch(core, s)
    calls = []
    original = AuthState.check
    monkeypatch.setattr(AuthState, "check", lambda self, *a, **kw: calls.append(a) or original(self, *a, **kw))
    for rev in range(3, 203):
        core.on_publish(rev - 1, rev, [[rev, [put(rev)]]], 0, 2, [])
    assert core.st["deliveries"] == 20_000 and calls == []


def test_a_fetched_state_revokes_sessions_whose_password_changed_in_a_missed_change():
    """Audit finding: a password change learned by a fetch (after a missed publish) must end the
    user's sessions' login as the stream's change would have."""
    core = core_with(state())
    s = session(core)
    w = watch(core, s)
    take(core, s)
    core.on_publish(2, 3, [[3, [put(3)]]], 0, 4, [])          # changes 3..4 missed
    fetched = state(revision=4)
    fetched.users["alice"] = ["scrypt$changed", ["r"]]
    core.on_auth_state(fetched)
    assert s.user is None and "alice" not in core.user_sessions
    assert stream_of(take(core, s), w.watch_id)[-1][0::2] == ("cancel", "UNAUTHENTICATED")
