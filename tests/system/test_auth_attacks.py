"""Authentication and authorization against hostile and unlucky clients (issue #11), through real
fan-outs: each attack is denied, nothing leaks, and a watching session beside it is unaffected.

Sessions speak the wire directly (raw DEALERs), so that a test can forge what a well-behaved
client never sends: another session's routing id, a hello without the right password, ranges
widened by prefix / from-key / NUL tricks.
"""
from __future__ import annotations

import signal
import time

import msgpack
import pytest

from support import Raw, bare_dealer, err_code, ok

PASSWORD = "s3cret-root"
ALICE_PW = "alice-pw"


def put(s: Raw, key: bytes, value: bytes = b"v") -> int:
    return ok(s.call("put", {"key": key, "value": value}))["header"]["revision"]


@pytest.fixture
def secured(cluster):
    """root (role root) and alice (role reader: read on the key b"k" only), auth enabled.
    Returns (cluster, root session)."""
    ep = cluster.fanout_eps[0]
    admin = Raw(ep)
    ok(admin.call("user_add", {"name": "root", "password": PASSWORD}))
    ok(admin.call("user_grant_role", {"user": "root", "role": "root"}))
    ok(admin.call("role_add", {"name": "reader"}))
    ok(admin.call("role_grant_permission", {"name": "reader", "perm": {"permType": "READ", "key": b"k", "range_end": b""}}))
    ok(admin.call("user_add", {"name": "alice", "password": ALICE_PW}))
    ok(admin.call("user_grant_role", {"user": "alice", "role": "reader"}))
    ok(admin.call("auth_enable", {}))
    admin.close()
    root = Raw(ep, "root", PASSWORD)
    assert ok(root.hello)["user"] == "root"
    yield cluster, root
    root.close()


def watching_bystander(cluster, root):
    """A root session watching everything: it must keep getting every event through each attack."""
    s = Raw(cluster.fanout_eps[0], "root", PASSWORD)
    ok(s.call("watch_create", {"watch_id": 1, "key": b"\x00", "range_end": b"\x00"}))
    return s


# ---------------------------------------------------------------- logins
def test_wrong_password_and_unknown_user_are_refused_alike_and_never_logged(secured):
    cluster, root = secured
    ep = cluster.fanout_eps[0]
    bystander = watching_bystander(cluster, root)
    wrong = Raw(ep, "alice", "not-her-password")
    unknown = Raw(ep, "mallory", "whatever")
    assert err_code(wrong.hello) == err_code(unknown.hello) == "UNAUTHENTICATED"
    assert wrong.hello[1]["message"] == unknown.hello[1]["message"]      # no user enumeration
    # Without a session, nothing is served.
    assert err_code(wrong.call("range", {"key": b"k"})) == "FAILED_PRECONDITION"
    rev = put(root, b"k", b"after")
    assert bystander.pump(lambda: rev in bystander.events(1))
    lines = cluster["fanout0"].wait_event("auth.login_failed")
    logs = "".join(a for actor in cluster.actors.values() for a in actor.raw)
    for secret in ("not-her-password", "whatever", ALICE_PW, PASSWORD):
        assert secret not in logs
    assert lines[0]["user"] in ("alice", "mallory")


def test_brute_force_on_one_session_backs_off_without_hashing_each_guess(secured):
    """Ten guesses in a row on one session: the first is verified (scrypt), the ones during its
    back-off are refused at once, without a hash: counted, not timed."""
    cluster, root = secured
    s = Raw(cluster.fanout_eps[0])                   # anonymous session, then logins
    codes = [err_code(s.hello_again("alice", f"guess-{i}")) for i in range(10)]
    assert codes == ["UNAUTHENTICATED"] * 10
    # The right password is refused too while the back-off lasts (it says for how long), then
    # accepted.
    refusal = s.hello_again("alice", ALICE_PW)
    assert err_code(refusal) == "UNAUTHENTICATED" and refusal[1]["retry_after_s"] > 0
    time.sleep(refusal[1]["retry_after_s"] + 0.05)
    assert ok(s.hello_again("alice", ALICE_PW))["user"] == "alice"
    deadline = time.monotonic() + 5
    failed = refused = 0
    while time.monotonic() < deadline and failed + refused < 11:
        time.sleep(0.3)
        failed = sum(e.get("logins_failed", 0) for e in cluster["fanout0"].events("fanout.stats"))
        refused = sum(e.get("logins_refused", 0) for e in cluster["fanout0"].events("fanout.stats"))
    assert failed + refused == 11, (failed, refused)
    assert failed <= 3 and refused >= 8


# ---------------------------------------------------------------- sessions
def test_forged_hello_on_a_connected_sessions_routing_id_gets_nothing(secured):
    """ZeroMQ lets a peer choose its routing id; a second connection with the id of a live
    session is refused by the ROUTER (no handover), so the forger is never answered and the
    session is untouched."""
    cluster, root = secured
    ep = cluster.fanout_eps[0]
    victim = Raw(ep, "root", PASSWORD, routing_id=b"victim-1")
    ok(victim.call("watch_create", {"watch_id": 7, "key": b"k"}))
    forger = bare_dealer(ep, ROUTING_ID=b"victim-1")
    forger.send(msgpack.packb(["hello", 1, {"version": 1, "user": "alice", "password": ALICE_PW}]))
    forger.send(msgpack.packb(["watch_cancel", 2, {"watch_id": 7}]))
    assert not forger.poll(1000)
    rev = put(root, b"k", b"still-watched")
    assert victim.pump(lambda: rev in victim.events(7))
    forger.close(linger=0)


def test_session_is_pinned_to_the_curve_key_that_opened_it(make_cluster, tmp_path):
    """With CURVE, a connection that takes over a departed session's routing id is refused: the
    session ended with its connection, and its frames carry another client key (ZAP User-Id)
    than the one that said hello."""
    cluster = make_cluster(env={"ZWATCH_CURVE_DIR": str(tmp_path / "curve")})
    from zwatch.tools.cluster import curve_keypair_sockopts
    ep, server = cluster.fanout_eps[0], cluster.public_key("fanout")
    victim = Raw(ep, routing_id=b"victim-2", **curve_keypair_sockopts(server))
    ok(victim.hello)
    put(victim, b"k", b"v1")
    victim.close()                                   # gone; its session lingers until idle timeout
    time.sleep(0.3)
    thief = bare_dealer(ep, ROUTING_ID=b"victim-2", **curve_keypair_sockopts(server))
    thief.send(msgpack.packb(["range", 5, {"key": b"k"}]))
    assert thief.poll(5000)
    kind, req_id, body = msgpack.unpackb(thief.recv(), raw=False)
    # Refused: the session ended with its connection (NO_SESSION), and had it lingered, the
    # thief's key is not the one that said hello (UNAUTHENTICATED).
    assert (kind, req_id) == ("err", 5) and body["code"] in ("FAILED_PRECONDITION", "UNAUTHENTICATED"), body
    thief.close(linger=0)


# ---------------------------------------------------------------- watches
@pytest.mark.parametrize("body", [
    {"key": b"k", "range_end": b"\x00"},            # from key (etcd GHSA-xg4h-6gfc-h4m8)
    {"key": b"k", "range_end": b"l"},               # prefix "k"
    {"key": b"", "range_end": b"\x00"},             # every key
    {"key": b"\x00", "range_end": b"\x00"},         # every key, spelled with NUL
    {"key": b"j", "range_end": b"k\x01"},           # a range around the permitted key
], ids=["from_key", "prefix", "all_keys", "nul_all_keys", "around"])
def test_watch_widened_beyond_a_single_key_permission_is_denied(secured, body):
    cluster, root = secured
    alice = Raw(cluster.fanout_eps[0], "alice", ALICE_PW)
    assert err_code(alice.call("watch_create", dict(body, watch_id=3))) == "PERMISSION_DENIED"
    ok(alice.call("watch_create", {"watch_id": 4, "key": b"k"}))        # the key itself: allowed
    put(root, b"kz", b"secret")
    rev = put(root, b"k", b"public")
    assert alice.pump(lambda: rev in alice.events(4))
    assert alice.events(3) == [] and alice.events(4) == [rev]
    # Reads are refused the same way (checked by the syncer on its own snapshot).
    assert err_code(alice.call("range", {"key": b"k", "range_end": b"\x00"})) == "PERMISSION_DENIED"
    assert ok(alice.call("range", {"key": b"k"}))["kvs"][0]["value"] == b"public"


def test_txn_hiding_a_forbidden_write_in_a_nested_branch_changes_nothing(secured):
    cluster, root = secured
    ok(root.call("role_grant_permission", {"name": "reader",
                                           "perm": {"permType": "READWRITE", "key": b"k", "range_end": b""}}))
    alice = Raw(cluster.fanout_eps[0], "alice", ALICE_PW)
    before = put(root, b"secret", b"old")
    txn = {"compare": [], "success": [{"request_put": {"key": b"k", "value": b"ok"}}],
           "failure": [{"request_txn": {"compare": [], "success": [],
                                        "failure": [{"request_put": {"key": b"secret", "value": b"pwned"}}]}}]}
    assert err_code(alice.call("txn", txn)) == "PERMISSION_DENIED"
    got = ok(root.call("range", {"key": b"secret"}))
    assert got["kvs"][0]["value"] == b"old" and got["header"]["revision"] == before


def test_live_watch_is_canceled_exactly_where_its_permission_is_revoked(secured):
    cluster, root = secured
    alice = Raw(cluster.fanout_eps[0], "alice", ALICE_PW)
    bystander = watching_bystander(cluster, root)
    ok(alice.call("watch_create", {"watch_id": 1, "key": b"k"}))
    before = [put(root, b"k", b"%d" % i) for i in range(3)]
    # The revoke and the puts after it queue up while the writer is stopped, so that it commits
    # them in one batch: the revoke sits between revisions of one publish, and the fan-out must
    # cut the publish there.
    writer = cluster["writer"].proc
    writer.send_signal(signal.SIGSTOP)
    try:
        sent = [root.send("role_revoke_permission", {"role": "reader", "key": b"k", "range_end": b""})]
        sent += [root.send("put", {"key": b"k", "value": b"after%d" % i}) for i in range(3)]
        time.sleep(0.3)
    finally:
        writer.send_signal(signal.SIGCONT)
    replies = {}
    deadline = time.monotonic() + 10
    while len(replies) < len(sent) and time.monotonic() < deadline:
        msg = root._recv(deadline)
        if msg is not None and msg[0] == "ok":
            replies[msg[1]] = msg[2]
    after = [replies[r]["header"]["revision"] for r in sent[1:]]
    assert replies[sent[0]]["header"]["revision"] == before[-1]
    assert alice.pump(lambda: alice.cancel(1) is not None)
    cancel = alice.cancel(1)
    assert cancel["cancel_code"] == "PERMISSION_DENIED"
    assert alice.events(1) == before and cancel["header"]["revision"] == before[-1]
    assert bystander.pump(lambda: after[-1] in bystander.events(1))
    time.sleep(0.3)
    alice.pump(lambda: False, timeout=0.3)
    assert alice.events(1) == before                  # nothing after the cancel
    assert err_code(alice.call("range", {"key": b"k"})) == "PERMISSION_DENIED"


def test_permission_revoked_while_the_watch_catches_up_from_history(make_cluster):
    """A watch replaying 300 revisions through the syncer (a ring of 10 cannot serve it) when its
    permission goes: it gets a prefix of the history up to some revision H, then the cancel at H,
    and never a revision after the revoke."""
    cluster = make_cluster(env={"ZWATCH_RING_REVISIONS": "10", "ZWATCH_SYNC_CHUNK_REVISIONS": "10"})
    ep = cluster.fanout_eps[0]
    admin = Raw(ep)
    for op, body in (("user_add", {"name": "root", "password": PASSWORD}),
                     ("user_grant_role", {"user": "root", "role": "root"}),
                     ("role_add", {"name": "reader"}),
                     ("role_grant_permission", {"name": "reader",
                                                "perm": {"permType": "READ", "key": b"p/", "range_end": b"p0"}}),
                     ("user_add", {"name": "alice", "password": ALICE_PW}),
                     ("user_grant_role", {"user": "alice", "role": "reader"}), ("auth_enable", {})):
        ok(admin.call(op, body))
    root = Raw(ep, "root", PASSWORD)
    history = [put(root, b"p/%d" % (i % 7), b"x" * 2000) for i in range(300)]
    alice = Raw(ep, "alice", ALICE_PW)
    ok(alice.call("watch_create", {"watch_id": 1, "key": b"p/", "range_end": b"p0", "start_revision": history[0]}))
    revoked_after = ok(root.call("role_revoke_permission", {"role": "reader", "key": b"p/", "range_end": b"p0"}))
    revoked_after = revoked_after["header"]["revision"]
    later = [put(root, b"p/x", b"after") for _ in range(5)]
    assert alice.pump(lambda: alice.cancel(1) is not None, timeout=30)
    got, h = alice.events(1), alice.cancel(1)["header"]["revision"]
    assert alice.cancel(1)["cancel_code"] == "PERMISSION_DENIED"
    assert got == [r for r in history if r <= h]      # a gap-free prefix, exactly up to H
    assert h <= revoked_after and not set(got) & set(later)


def test_guesses_from_elsewhere_do_not_lock_a_user_out_of_an_address_it_logged_in_from(secured):
    """Failed logins for alice from 127.0.0.2 back alice off (per user, whatever the address), but
    not from 127.0.0.1, where she logged in before: an attacker cannot lock her out."""
    cluster, root = secured
    ep = cluster.fanout_eps[0]
    assert ok(Raw(ep, "alice", ALICE_PW).hello)["user"] == "alice"            # from 127.0.0.1
    elsewhere = ep.replace("tcp://", "tcp://127.0.0.2:0;", 1)
    assert err_code(Raw(elsewhere, "alice", "guess").hello) == "UNAUTHENTICATED"
    refused = Raw(elsewhere, "alice", ALICE_PW).hello                          # backed off there
    assert err_code(refused) == "UNAUTHENTICATED" and "retry_after_s" in refused[1]
    assert ok(Raw(ep, "alice", ALICE_PW).hello)["user"] == "alice"            # not here
