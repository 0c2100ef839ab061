"""zwatch.Client with users and roles on a real cluster (issue #11): a refused login raises
Unauthenticated at once instead of cycling the endpoints, a failover logs in again and resumes a
watch with no gap and no duplicate, and a revoked permission ends a watch with PermissionDenied
(never resumed, nothing delivered after the revocation's position)."""
from __future__ import annotations

import queue
import signal
import time

import pytest

import zwatch
from zwatch.client import Phase

from support import collect, revs

ALICE = ("alice", "alice-pw")


def enable_auth(cl, prefix=b"w/"):
    """root (role root) and alice (role reader: READ on prefix); auth enabled.  Returns root's client."""
    admin = cl.client(cl.fanout_eps[:1])
    admin.user_add("root", "root-pw")
    admin.role_add("root")
    admin.user_grant_role("root", "root")
    admin.user_add(*ALICE)
    admin.role_add("reader")
    admin.role_grant_permission("reader", "READ", prefix, prefix=True)
    admin.user_grant_role("alice", "reader")
    admin.auth_enable()
    admin.close()
    return cl.client(cl.fanout_eps[:1], user="root", password="root-pw")


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_wrong_password_raises_unauthenticated_after_one_round_of_endpoints(make_cluster):
    cl = make_cluster(fanouts=2)
    root = enable_auth(cl)
    assert root.auth_status().enabled
    for user, password in (("alice", "wrong"), ("nobody", "pw")):
        c = cl.client(cl.fanout_eps, user=user, password=password, timeout=30.0)
        with pytest.raises(zwatch.Unauthenticated, match="invalid user ID or password") as info:
            c.get("w/k")                  # cycling forever would end in Unavailable after 30 s instead
        assert "wrong" not in str(info.value)
        assert c._session.phase is Phase.REFUSED and c._session.credentials_refused == 2   # each fan-out once
        with pytest.raises(zwatch.Unauthenticated):
            c.watch("w/", prefix=True)
    alice = cl.client(cl.fanout_eps, user="alice:alice-pw")
    assert alice.get("w/k").count == 0 and alice.session_info.get("user") == "alice"
    with pytest.raises(zwatch.PermissionDenied):
        alice.get("x")
    anonymous = cl.client(cl.fanout_eps)
    with pytest.raises(zwatch.Unauthenticated, match="user name is empty"):
        anonymous.get("w/k")


def test_failover_logs_in_again_and_resumes_the_watch_without_gap_or_duplicate(make_cluster):
    cl = make_cluster(fanouts=2)
    root = enable_auth(cl)
    alice = cl.client(cl.fanout_eps, user=ALICE[0], password=ALICE[1], heartbeat=0.3)
    w = alice.watch("w/", prefix=True)
    first = [root.put(f"w/{i}", str(i)).header.revision for i in range(5)]
    got = collect(w, 5)
    # Kill the fan-out alice is on (the first one, unless a slow login already moved her on).
    victim = cl.fanout_eps.index(alice.endpoint)
    survivor = cl.fanout_eps[1 - victim]
    writer = cl.client([survivor], user="root", password="root-pw")
    failovers = alice.failovers
    cl[f"fanout{victim}"].kill(signal.SIGKILL)
    later = [writer.put(f"w/{i}", f"again {i}").header.revision for i in range(5)]
    got += collect(w, 5, timeout=20)
    assert revs(got) == first + later                            # no gap, no duplicate, in order
    assert alice.failovers > failovers and alice.endpoint == survivor
    assert alice.session_info.get("user") == "alice"             # the new fan-out knows who she is
    assert alice.get("w/0").kvs[0].value == b"again 0"
    with pytest.raises(zwatch.PermissionDenied):                 # and still checks her permissions
        alice.get("x")


def test_a_revoked_permission_ends_the_watch_with_permission_denied(cluster):
    root = enable_auth(cluster)
    alice = cluster.client(user=ALICE[0], password=ALICE[1])
    w = alice.watch("w/", prefix=True)
    before = [root.put(f"w/{i}", "v").header.revision for i in range(3)]
    events = collect(w, 3)
    root.role_revoke_permission("reader", "w/", prefix=True)
    after = root.put("w/secret", "must not be seen").header.revision
    responses = []
    with pytest.raises(zwatch.PermissionDenied):
        while True:
            try:
                r = w.get(timeout=10)
            except queue.Empty:
                raise AssertionError(f"the watch was not canceled: {responses}") from None
            if r is None:
                raise AssertionError(f"the watch ended without PermissionDenied: {responses}")
            responses.append(r)
    canceled = responses[-1]
    assert canceled.canceled and canceled.cancel_code == "PERMISSION_DENIED"
    seen = revs(events) + [e.kv.mod_revision for r in responses for e in r.events]
    assert seen == before and after not in seen                   # nothing after the revocation
    assert canceled.header.revision < after
    assert w.watch_id not in alice._watches                       # not resumed: it is over
    with pytest.raises(zwatch.PermissionDenied):                  # a new watch is refused outright
        alice.watch("w/", prefix=True)
    root.role_grant_permission("reader", "READ", "w/", prefix=True)
    wait_until(lambda: _can_read(alice))


def _can_read(client) -> bool:
    try:
        client.get("w/0")
        return True
    except zwatch.PermissionDenied:
        return False
