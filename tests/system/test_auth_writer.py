"""The writer's auth on a real cluster, spoken to in raw frames straight on its ROUTER.

A DEALER sends what a fan-out forwards, ``[client_id, user, request]`` (user b"" = anonymous),
so the writer sees ``[fanout, client_id, user]`` and checks as that user; a DEALER sending just
``[request]`` is an internal peer (unchecked), which sets the users up.  A SUB on the PUB
endpoint reads the publishes: their 6th element ``[auth_revision, [[after_revision, change]]]``.
"""
from __future__ import annotations

import os
import signal
import time

import msgpack
import zmq

from zwatch import internal
from zwatch.actors.auth.passwords import hash_password

HASH = hash_password("pw")
CID = b"client-1"


class Raw:
    def __init__(self, cluster):
        ctx = zmq.Context.instance()
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.RCVTIMEO, 5000)
        self.dealer.connect(cluster.writer_ep)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(cluster.pub_ep)
        self.next_id = 1

    def close(self):
        self.dealer.close()
        self.sub.close()

    def send(self, op, body, user=None) -> int:
        """user None: an internal peer's [request]; else a fan-out's [client_id, user, request]."""
        req_id, self.next_id = self.next_id, self.next_id + 1
        raw = msgpack.packb([op, req_id, body], use_bin_type=True)
        self.dealer.send_multipart([raw] if user is None else [CID, user.encode(), raw])
        return req_id

    def reply(self):
        frames = self.dealer.recv_multipart()
        assert len(frames) == 1 or (len(frames) == 3 and frames[0] == CID), frames   # [client_id, user, reply]
        kind, req_id, body = msgpack.unpackb(frames[-1], raw=False)
        return kind, req_id, body

    def ask(self, op, body, user=None):
        self.send(op, body, user)
        return self.reply()

    def ok(self, op, body, user=None) -> dict:
        kind, _, body = self.ask(op, body, user)
        assert kind == "ok", body
        return body

    def publishes(self, until, timeout=10.0) -> list:
        """Publishes read until until(list so far) is true."""
        out, deadline = [], time.monotonic() + timeout
        while not until(out):
            assert time.monotonic() < deadline, out
            if self.sub.poll(200):
                out.append(internal.Publish.decode(self.sub.recv()))
        return out


def setup_users(raw: Raw):
    """As an internal peer: root, role r with READWRITE on prefix a/, user u having r; enabled."""
    for op, body in [("user_add", {"name": "root", "hashed_password": HASH}),
                     ("user_grant_role", {"user": "root", "role": "root"}),
                     ("role_add", {"name": "r"}),
                     ("role_grant_permission", {"name": "r", "perm": {"permType": "READWRITE", "key": b"a/",
                                                                      "range_end": b"a0"}}),
                     ("user_add", {"name": "u", "hashed_password": HASH}),
                     ("user_grant_role", {"user": "u", "role": "r"}),
                     ("auth_enable", {})]:
        raw.ok(op, body)


def test_publishes_carry_the_auth_changes_at_their_kv_revision(cluster):
    """Each auth change reaches the PUB stream in commit order with the KV revision it follows;
    heartbeats carry the auth revision; checks apply from the enable on; `status` stays open."""
    raw = Raw(cluster)
    try:
        time.sleep(0.3)                    # the SUB joins before the first change
        raw.ok("put", {"key": b"a/0", "value": b"0"})          # KV revision 2
        setup_users(raw)
        pubs = raw.publishes(lambda ps: sum(len(p.auth_changes) for p in ps) >= 7)
        changes = [c for p in pubs for c in p.auth_changes]
        assert [after for after, _ in changes] == [2] * 7
        assert [c[0] for _, c in changes] == ["user", "user", "role", "perm_grant", "user", "user", "enabled"]
        assert changes[3][1] == ["perm_grant", "r", ["READWRITE", b"a/", b"a0"]]      # one permission, not the role
        assert changes[-1][1] == ["enabled", True]
        assert pubs[-1].auth_revision == 7
        # Heartbeats (no revision) carry the auth revision too.
        beat = raw.publishes(lambda ps: ps and not ps[-1].revisions and not ps[-1].auth_changes)[-1]
        assert beat.auth_revision == 7
        # From now on: anonymous writes are refused, u writes its prefix only, status is open.
        kind, _, body = raw.ask("put", {"key": b"a/1", "value": b"1"}, user="")
        assert (kind, body["code"], body["message"]) == ("err", "UNAUTHENTICATED", "etcdserver: user name is empty")
        kind, _, body = raw.ask("put", {"key": b"b", "value": b"1"}, user="u")
        assert (kind, body["code"]) == ("err", "PERMISSION_DENIED")
        assert raw.ok("put", {"key": b"a/1", "value": b"1"}, user="u")["header"]["revision"] == 3
        assert raw.ok("status", {}, user="")["actor"] == "writer"
        # Lease clock ops need an authenticated user too.
        kind, _, body = raw.ask("lease_leases", {}, user="")
        assert (kind, body["code"]) == ("err", "UNAUTHENTICATED")
        raw.ok("lease_leases", {}, user="u")
        # Admin ops need root; an auth read by root answers with the KV header.
        kind, _, body = raw.ask("user_list", {}, user="u")
        assert (kind, body["code"]) == ("err", "PERMISSION_DENIED")
        assert raw.ok("auth_status", {}, user="root") == {"header": {"revision": 3}, "enabled": True,
                                                           "authRevision": 7}
        logged = cluster["writer"].wait_event("writer.auth_changed", count=7)
        assert [e["op"] for e in logged][-1] == "auth_enable" and logged[-1]["auth_revision"] == 7
        assert not any(HASH in line for line in cluster["writer"].raw)    # never a hash in a log line
        assert cluster["writer"].events("writer.auth_without_curve")
    finally:
        raw.close()


def test_a_put_after_its_users_role_was_revoked_in_the_same_batch_is_denied(cluster):
    """The writer is paused (SIGSTOP) while a put by u, the revoke of u's role by root, and
    another put by u queue up: one batch.  The first put commits, the second is denied, and one
    publish carries the put's revision and the revoke after it (after_revision = that revision)."""
    raw = Raw(cluster)
    writer = cluster["writer"].proc
    try:
        setup_users(raw)
        time.sleep(0.3)
        os.kill(writer.pid, signal.SIGSTOP)
        try:
            ids = [raw.send("put", {"key": b"a/1", "value": b"1"}, user="u"),
                   raw.send("user_revoke_role", {"name": "u", "role": "r"}, user="root"),
                   raw.send("put", {"key": b"a/2", "value": b"2"}, user="u")]
            time.sleep(0.3)                # every frame queued at the writer's ROUTER
        finally:
            os.kill(writer.pid, signal.SIGCONT)
        replies = {req_id: (kind, body) for kind, req_id, body in (raw.reply() for _ in ids)}
        assert replies[ids[0]] == ("ok", {"header": {"revision": 2}})
        assert replies[ids[1]][0] == "ok"
        kind, body = replies[ids[2]]
        assert (kind, body["code"], body["message"]) == ("err", "PERMISSION_DENIED", "etcdserver: permission denied")
        pub = raw.publishes(lambda ps: ps and ps[-1].auth_revision == 8)[-1]
        assert [rev for rev, _ in pub.revisions] == [2]
        assert list(pub.auth_changes) == [[2, ["user", "u", [HASH, []]]]]
        assert pub.auth_revision == 8
        # The denied put wrote nothing.
        assert raw.ok("range", {"key": b"a/", "range_end": b"a0"})["count"] == 1
    finally:
        raw.close()


def test_the_writer_reloads_the_auth_state_after_a_restart(cluster):
    """The state is in LMDB: a restarted writer checks with it and publishes its revision."""
    raw = Raw(cluster)
    try:
        setup_users(raw)
        cluster.restart("writer")
        time.sleep(0.3)
        kind, _, body = raw.ask("put", {"key": b"b", "value": b"1"}, user="u")
        assert (kind, body["code"]) == ("err", "PERMISSION_DENIED")
        assert raw.ok("put", {"key": b"a/1", "value": b"1"}, user="u")["header"]["revision"] == 2
        start = cluster["writer"].events("writer.start")[-1]
        assert (start["auth_enabled"], start["auth_revision"]) == (True, 7)
        while raw.sub.poll(0):             # what the first writer published
            raw.sub.recv()
        beat = raw.publishes(lambda ps: ps and not ps[-1].revisions and not ps[-1].auth_changes)[-1]
        assert beat.auth_revision == 7
    finally:
        raw.close()
