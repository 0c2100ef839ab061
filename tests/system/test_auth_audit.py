"""Security audit of issue #11 (independent review): each test reproduces one way found to break a
guarantee of the issue (read what you may not read, keep rights you lost, brute force past the
limiter, ...), through real clusters and raw ZeroMQ sockets on loopback.

Each is marked xfail(strict=True) with the finding until its owner fixes it (then the mark goes):
a test here that passes means the bug is gone.
"""
from __future__ import annotations

import itertools
import os
import signal
import time

import msgpack
import pytest
import zmq

from support import Raw, bare_dealer, ok

ROOT_PW = "audit-root-pw"
ALICE_PW = "alice-old-pw"
AUTH_FAILED = "etcdserver: authentication failed, invalid user ID or password"
_ids = itertools.count(50_000)


# ---------------------------------------------------------------- a raw client session
def internal_call(endpoint: str, op: str, body: dict, timeout=10.0):
    """A request of an internal peer (a one-frame envelope, as tools and tests send) straight to
    the writer."""
    s = bare_dealer(endpoint)
    try:
        s.send(msgpack.packb([op, 1, body], use_bin_type=True))
        assert s.poll(int(timeout * 1000)), f"no reply to {op} from {endpoint}"
        return msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close(linger=0)


@pytest.fixture
def secured(cluster):
    """root (role root); alice (role apps: READWRITE on the prefix b"a/", nothing else); a key
    b"secret/x" alice may not read; auth enabled.  Returns (cluster, root session)."""
    ep = cluster.fanout_eps[0]
    admin = Raw(ep)
    ok(admin.call("put", {"key": b"secret/x", "value": b"top"}))
    ok(admin.call("user_add", {"name": "root", "password": ROOT_PW}))
    ok(admin.call("user_grant_role", {"user": "root", "role": "root"}))
    ok(admin.call("role_add", {"name": "apps"}))
    ok(admin.call("role_grant_permission",
                  {"name": "apps", "perm": {"permType": "READWRITE", "key": b"a/", "range_end": b"a0"}}))
    ok(admin.call("user_add", {"name": "alice", "password": ALICE_PW}))
    ok(admin.call("user_grant_role", {"user": "alice", "role": "apps"}))
    ok(admin.call("auth_enable", {}))
    admin.close()
    root = Raw(ep, "root", ROOT_PW)
    assert ok(root.hello)["user"] == "root"
    yield cluster, root
    root.close()


# ---------------------------------------------------------------- reading what you may not read
def test_lease_timetolive_keys_leaks_key_names_the_user_may_not_read(secured):
    """Root attaches b"secret/x" to a lease; alice (READWRITE on a/ only) asks lease_timetolive
    with keys=True and gets the name b"secret/x" back.  etcd fixed this in 3.4.26 / 3.5.9 (with
    keys=true every attached key needs READ, else PERMISSION_DENIED: etcdserver/v3_server.go
    checkLeaseTimeToLive); lease_leases + timetolive enumerate every
    leased key name of the cluster."""
    cluster, root = secured
    lease = ok(root.call("lease_grant", {"TTL": 600}))["ID"]
    ok(root.call("put", {"key": b"secret/x", "value": b"top", "lease": lease}))
    alice = Raw(cluster.fanout_eps[0], "alice", ALICE_PW)
    assert ok(alice.hello)["user"] == "alice"
    assert alice.call("range", {"key": b"secret/x"})[0] == "err"          # she may not read it
    kind, body = alice.call("lease_timetolive", {"ID": lease, "keys": True})
    leaked = body.get("keys", []) if kind == "ok" else []
    alice.close()
    assert b"secret/x" not in leaked, f"alice read the key name {leaked}"
    assert kind == "err" and body["code"] == "PERMISSION_DENIED", (kind, body)


# ---------------------------------------------------------------- keeping rights after losing them
def test_password_changed_while_fanout_missed_the_publish_keeps_old_session_logged_in(secured):
    """alice logs in with her old password.  While the fan-out does not hear the writer (stopped:
    the writer restarts and the change's publish is lost to it), her password is changed.  The
    fan-out notices it is behind and fetches the whole auth state again; but her old session stays
    logged in as alice and keeps writing — after the same change seen in the stream it would be
    UNAUTHENTICATED (etcd invalidates the user's tokens on a password change)."""
    cluster, root = secured
    from zwatch.actors.auth.passwords import hash_password
    alice = Raw(cluster.fanout_eps[0], "alice", ALICE_PW)
    assert ok(alice.hello)["user"] == "alice"
    ok(alice.call("put", {"key": b"a/1", "value": b"before"}))
    fanout = cluster["fanout0"]
    loads = len(fanout.events("fanout.auth_loaded"))
    fanout.proc.send_signal(signal.SIGSTOP)
    try:
        cluster.restart("writer")
        reply = internal_call(cluster.writer_ep, "user_change_password",
                              {"name": "alice", "hashed_password": hash_password("alice-NEW-pw")})
        assert reply[0] == "ok", reply
    finally:
        fanout.proc.send_signal(signal.SIGCONT)
    fanout.wait_event("fanout.auth_loaded", count=loads + 1, timeout=15)
    kind, body = alice.call("put", {"key": b"a/2", "value": b"after the password change"})
    # The new password works, the old one is refused: the change is in the fan-out's view.
    assert ok(Raw(cluster.fanout_eps[0], "alice", "alice-NEW-pw").hello)["user"] == "alice"
    assert Raw(cluster.fanout_eps[0], "alice", ALICE_PW).hello[0] == "err"
    alice.close()
    assert kind == "err" and body["code"] == "UNAUTHENTICATED", \
        f"the session logged in with the old password still writes as alice: {kind} {body}"


# ---------------------------------------------------------------- brute force
def test_brute_force_with_a_fresh_connection_per_guess_is_never_backed_off_without_curve(secured):
    """Eight wrong-password logins for alice from the same address, each on a new connection,
    one after the other: each one is verified (80 ms of scrypt, AUTH_FAILED) instead of being
    refused by the back-off after the first (libzmq gives every TCP frame its Peer-Address,
    CURVE or not)."""
    cluster, root = secured
    verified = 0
    for n in range(8):
        guess = Raw(cluster.fanout_eps[0], "alice", f"guess-{n}")
        kind, body = guess.hello
        guess.close()
        assert kind == "err" and body["code"] == "UNAUTHENTICATED", body
        if body["message"] == AUTH_FAILED:
            verified += 1
    assert verified <= 2, f"{verified} of 8 guesses from one address were verified with no back-off"


def _setup_auth(ep: str, **sockopts):
    """root + alice (READWRITE on a/), auth enabled, through a session with sockopts."""
    admin = Raw(ep, **sockopts)
    for op, body in (("user_add", {"name": "root", "password": ROOT_PW}),
                     ("user_grant_role", {"user": "root", "role": "root"}),
                     ("role_add", {"name": "apps"}),
                     ("role_grant_permission",
                      {"name": "apps", "perm": {"permType": "READWRITE", "key": b"a/", "range_end": b"a0"}}),
                     ("user_add", {"name": "alice", "password": ALICE_PW}),
                     ("user_grant_role", {"user": "alice", "role": "apps"}),
                     ("auth_enable", {})):
        ok(admin.call(op, body))
    admin.close()


def test_burst_of_concurrent_wrong_logins_from_one_address_is_all_hashed_even_with_curve(tmp_path):
    """With CURVE on (the per-address back-off active), 40 connections from 127.0.0.1 each send
    one wrong-password hello for alice at the same moment: every one is verified by scrypt (40 x
    ~80 ms of CPU, 40 guesses) before the address is backed off, and while they wait the shared
    queue refuses logins UNAVAILABLE.  Expected: at most a couple of guesses of one address in
    flight; the rest refused at once without a hash."""
    from zwatch.tools.cluster import Cluster, curve_keypair_sockopts
    cluster = Cluster(str(tmp_path / "data"), curve_dir=str(tmp_path / "curve")).start()
    try:
        ep, server = cluster.fanout_eps[0], cluster.public_key("fanout")
        _setup_auth(ep, **curve_keypair_sockopts(server))
        socks = [bare_dealer(ep, **curve_keypair_sockopts(server)) for _ in range(40)]
        time.sleep(0.5)                     # every handshake done: the hellos go out together
        for n, s in enumerate(socks):
            s.send(msgpack.packb(["hello", n, {"version": 1, "user": "alice", "password": f"guess-{n}"}]))
        messages = {}
        deadline = time.monotonic() + 30
        for s in socks:
            if s.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                kind, _, body = msgpack.unpackb(s.recv(), raw=False)
                messages[body.get("message", "")[:40]] = messages.get(body.get("message", "")[:40], 0) + 1
            s.close(linger=0)
        verified = messages.get(AUTH_FAILED[:40], 0)
        assert verified <= 2, f"{verified} of 40 concurrent guesses from one address were hashed: {messages}"
    finally:
        cluster.stop()


def test_client_supplied_hashed_password_with_no_work_factor_is_stored(cluster):
    """A client sends user_add with `hashed_password` = an scrypt hash of N=2 (no work factor)
    instead of `password`: it is stored as is, and the user logs in with it.  The design says
    the fan-out hashes (N=2**14) and the writer takes hashes only from the fan-out; a client
    choosing the stored hash defeats "only a salted slow hash" (and lets a hash be planted
    without the fan-out ever seeing a password)."""
    import base64
    import hashlib
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(b"weak", salt=salt, n=2, r=1, p=1, dklen=32)
    weak = f"scrypt$2$1$1${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    s = Raw(cluster.fanout_eps[0])
    kind, body = s.call("user_add", {"name": "planted", "hashed_password": weak})
    s.close()
    assert kind == "err" and body["code"] == "INVALID_ARGUMENT", f"the client's own hash was stored: {kind} {body}"


def _from_source(endpoint: str, source_ip: str) -> str:
    """endpoint connected from another loopback source address (libzmq's tcp://SRC;DEST form)."""
    return endpoint.replace("tcp://", f"tcp://{source_ip}:0;", 1)


def test_guesses_at_one_user_from_many_source_addresses_are_never_backed_off(secured):
    """Eight wrong-password logins for alice, one after the other, each from its own source
    address (127.0.0.2 .. 127.0.0.9, all loopback): every one is verified by scrypt; the
    per-address back-off never applies and nothing limits the failures per user."""
    cluster, root = secured
    verified = 0
    for n in range(8):
        guess = Raw(_from_source(cluster.fanout_eps[0], f"127.0.0.{n + 2}"), "alice", f"guess-{n}")
        kind, body = guess.hello
        guess.close()
        assert kind == "err", body
        if body.get("message") == AUTH_FAILED:
            verified += 1
    assert verified <= 3, f"{verified} of 8 guesses at alice were verified with no back-off"


def test_wrong_guesses_of_one_client_lock_out_other_users_of_the_same_address(secured):
    """mallory guesses twice at alice's password; right after, root (the right password, its own
    connection, same address 127.0.0.1) cannot log in: "too many failed authentication attempts"
    — an attacker sharing an address with the operators locks them out for up to 30 s per guess."""
    cluster, root = secured
    for n in range(2):
        guess = Raw(cluster.fanout_eps[0], "alice", f"guess-{n}")
        guess.close()
    legit = Raw(cluster.fanout_eps[0], "root", ROOT_PW)
    legit.close()
    assert legit.hello[0] == "ok", f"root, with the right password, was refused: {legit.hello}"


# ---------------------------------------------------------------- session hijack without CURVE
def test_departed_root_session_is_taken_over_by_a_guessed_routing_id_without_curve(secured):
    """Auth on, CURVE off.  root logs in on a DEALER (routing id assigned by the fan-out's
    ROUTER) and its connection goes away without `bye` (a crash, a network cut).  An attacker
    with no credentials, from another source address, opens its own session, reads its
    sequential session id from the hello reply, steps back to root's id, connects with that
    ROUTING_ID and sends user_list and a put: both run as root, no hello, no password."""
    cluster, _ = secured
    ep = cluster.fanout_eps[0]
    victim = Raw(ep, "root", ROOT_PW)
    assert ok(victim.hello)["user"] == "root"
    victim.close()                                   # gone without bye: the session lingers
    time.sleep(0.3)
    probe = Raw(_from_source(ep, "127.0.0.2"))       # anonymous: learn where the counter is
    mine = int(ok(probe.hello)["session"], 16)
    probe.close()
    taken = []
    for back in range(1, 6):
        sid = (mine - back).to_bytes(5, "big")       # \x00 + the 32-bit counter
        thief = bare_dealer(_from_source(ep, "127.0.0.2"), ROUTING_ID=sid)
        thief.send(msgpack.packb(["user_list", 1, {}], use_bin_type=True))
        if thief.poll(2000):
            kind, _, body = msgpack.unpackb(thief.recv(), raw=False)
            if kind == "ok":
                thief.send(msgpack.packb(["put", 2, {"key": b"secret/x", "value": b"hijacked"}], use_bin_type=True))
                thief.poll(2000)
                taken.append((sid.hex(), body["users"], msgpack.unpackb(thief.recv(), raw=False)[0]))
        thief.close(linger=0)
    assert not taken, f"an anonymous peer ran requests as root in a departed session: {taken}"


# ---------------------------------------------------------------- giant auth states
def test_one_change_of_a_shared_role_rebuilds_the_permissions_of_every_user_holding_it(monkeypatch):
    """200 users share the role `tenants` (2000 prefix permissions).  After one grant to it, the
    re-check of their watches (FanoutCore._recheck_session -> AuthState.perms) builds and merges
    the 2000 intervals once per user — 200 builds — where one per distinct set of roles (here 1)
    would do.  The cost of a routine admin change grows as users x permissions, on the fan-outs'
    event loop (deliveries stall), in the writer and in the syncer."""
    from zwatch.actors.auth.perms import RangePerms
    from zwatch.actors.auth.state import AuthState
    builds = []
    real_build = RangePerms.build.__func__

    def counting_build(cls, perms):
        builds.append(1)
        return real_build(cls, perms)

    monkeypatch.setattr(RangePerms, "build", classmethod(counting_build))
    perms = [["READ", b"t/%05d/" % i, b"t/%05d0" % i] for i in range(2000)]
    users = {f"u{i}": [None, ["tenants"]] for i in range(200)}
    st = AuthState(True, 1, users, {"tenants": perms})
    for u in users:
        assert st.perms(u).can_read(b"t/00007/x")
    builds.clear()
    st.apply(["role", "tenants", perms + [["READ", b"z", b""]]])
    for u in users:                                  # what the re-check of their watches does
        assert st.perms(u).can_read(b"z")
    assert len(builds) <= 1, f"{len(builds)} builds of the same 2001 intervals for one role change"


def test_departed_root_session_is_taken_over_from_the_same_address_without_curve(secured):
    """As the test above, but the attacker connects from the victim's own address (127.0.0.1:
    the same host, or every client behind one NAT or proxy): pinning the session to the address
    does not stop it.  A session must end with its connection (the ROUTER's monitor reports each
    disconnect with its fd; frames carry their connection's fd, zmq.SRCFD)."""
    cluster, _ = secured
    ep = cluster.fanout_eps[0]
    victim = Raw(ep, "root", ROOT_PW)
    assert ok(victim.hello)["user"] == "root"
    victim.close()
    time.sleep(0.3)
    probe = Raw(ep)
    mine = int(ok(probe.hello)["session"], 16)
    probe.close()
    taken = []
    for back in range(1, 6):
        sid = (mine - back).to_bytes(5, "big")
        thief = bare_dealer(ep, ROUTING_ID=sid)
        thief.send(msgpack.packb(["user_list", 1, {}], use_bin_type=True))
        if thief.poll(2000):
            kind, _, body = msgpack.unpackb(thief.recv(), raw=False)
            if kind == "ok":
                taken.append((sid.hex(), body["users"]))
        thief.close(linger=0)
    assert not taken, f"an anonymous peer ran requests as root in a departed session: {taken}"


def test_a_batch_of_grants_to_a_big_role_publishes_the_whole_role_once_per_grant(cluster):
    """A role of 1500 permissions (~0.8 MB); 60 grants to it pipelined (re-granting ranges it
    has: nothing grows) land in one or a few commits.  The largest publish carries the whole
    role once per grant (tens of MB) where the changes themselves are 60 small permissions.
    Auth is disabled here, as by default: anyone can do this."""
    ep = cluster.fanout_eps[0]
    admin = Raw(ep)
    ok(admin.call("role_add", {"name": "big"}))
    keys = [b"%05d/" % i + b"k" * 500 for i in range(1500)]
    for i in range(0, len(keys), 200):          # pipelined, within the session's requests in flight
        chunk = keys[i:i + 200]
        for k in chunk:
            admin.sock.send(msgpack.packb(["role_grant_permission", next(_ids), {
                "name": "big", "perm": {"permType": "READ", "key": k, "range_end": b""}}], use_bin_type=True))
        for _ in chunk:
            assert admin.sock.poll(20_000)
            reply = msgpack.unpackb(admin.sock.recv(), raw=False)
            assert reply[0] == "ok", reply
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(cluster.pub_ep)
    time.sleep(1.5)                                  # joined: heartbeats arrive
    while sub.poll(0):
        sub.recv()
    senders = [Raw(ep) for _ in range(4)]
    for s in senders:
        for k in keys[:15]:
            s.sock.send(msgpack.packb(["role_grant_permission", next(_ids), {
                "name": "big", "perm": {"permType": "READWRITE", "key": k, "range_end": b""}}], use_bin_type=True))
    for s in senders:
        for _ in range(15):
            assert s.sock.poll(20_000)
            s.sock.recv()
        s.close()
    largest = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if sub.poll(200):
            largest = max(largest, len(sub.recv()))
    sub.close()
    admin.close()
    assert largest < 4 << 20, f"one publish of {largest / 2**20:.1f} MiB for 60 small grants to one role"


# ---------------------------------------------------------------- etcd semantics
def test_anonymous_user_add_is_permission_denied_instead_of_user_name_is_empty(secured):
    """With auth enabled, a session that did not log in sends role_add (-> the writer) and
    user_add (-> hashed at the fan-out first): role_add is UNAUTHENTICATED "etcdserver: user name
    is empty" as in etcd (IsAdminPermitted: ErrUserEmpty), user_add PERMISSION_DENIED, so
    `zwatch user add` without --user prints another error than etcdctl (and a client that logs in
    again on UNAUTHENTICATED does not)."""
    cluster, _ = secured
    anon = Raw(cluster.fanout_eps[0])
    role_add = anon.call("role_add", {"name": "r2"})
    user_add = anon.call("user_add", {"name": "bob", "password": "x"})
    passwd = anon.call("user_change_password", {"name": "alice", "password": "x"})
    anon.close()
    assert role_add == ("err", {"code": "UNAUTHENTICATED", "message": "etcdserver: user name is empty"})
    assert user_add == role_add, user_add
    assert passwd == role_add, passwd


def test_login_answered_to_a_connection_that_took_over_the_routing_id_during_verification(secured):
    """The attacker learns the next routing id (its own session id + 1).  An admin's client connects
    (gets that id), sends hello with the right password, and its connection ends while the
    password is being checked (a client that timed out under a queue of logins).  The attacker
    connects with that ROUTING_ID right away: when the check ends the fan-out opens root's
    session and answers the hello to the attacker's connection, which then runs requests as
    that admin (role root)."""
    cluster, root = secured
    ep = cluster.fanout_eps[0]
    # An admin whose password this fan-out has never verified (a cached login is answered at once).
    ok(root.call("user_add", {"name": "admin2", "password": "admin2-pw"}))
    ok(root.call("user_grant_role", {"user": "admin2", "role": "root"}))
    probe = Raw(ep)
    next_id = (int(ok(probe.hello)["session"], 16) + 1).to_bytes(5, "big")
    probe.close()
    victim = bare_dealer(ep)
    victim.send(msgpack.packb(["hello", 1, {"version": 1, "user": "admin2", "password": "admin2-pw"}]))
    time.sleep(0.02)                                 # delivered; the check takes ~80 ms
    victim.close(linger=0)
    time.sleep(0.01)
    thief = bare_dealer(ep, ROUTING_ID=next_id)
    got = []
    if thief.poll(3000):
        got.append(msgpack.unpackb(thief.recv(), raw=False))
    thief.send(msgpack.packb(["user_list", 2, {}], use_bin_type=True))
    if thief.poll(3000):
        got.append(msgpack.unpackb(thief.recv(), raw=False))
    thief.close(linger=0)
    assert not any(m[0] == "ok" for m in got), f"the attacker's connection was answered as the admin's session: {got}"
