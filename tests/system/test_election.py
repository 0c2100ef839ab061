"""Client.election (protocol/client/concurrency.py, etcd's concurrency.Election) against real processes.

A candidate that dies is played by a client closed without resigning: its lease is no longer
renewed and expires at the server, exactly what a SIGKILL leaves behind.
"""
from __future__ import annotations

import threading
import time

import pytest

from zwatch.client import NotLeader

MIN_TTL_1 = {"ZWATCH_LEASE_MIN_TTL": "1"}


class Campaign(threading.Thread):
    """election.campaign(value) in a thread: .result once it returned."""

    def __init__(self, election, value, timeout=30):
        super().__init__(daemon=True)
        self.election, self.value, self.timeout = election, value, timeout
        self.result = None
        self.returned_at = None
        self.start()

    def run(self):
        self.result = self.election.campaign(self.value, timeout=self.timeout)
        self.returned_at = time.monotonic()


class Observer(threading.Thread):
    """Collects (key, value) of every leader observe() yields."""

    def __init__(self, election):
        super().__init__(daemon=True)
        self.observation = election.observe()
        self.seen: list[tuple[bytes, bytes]] = []
        self.start()

    def run(self):
        for kv in self.observation:
            self.seen.append((kv.key, kv.value))

    def wait_for(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.seen) < n:
            assert time.monotonic() < deadline, self.seen
            time.sleep(0.02)
        return self.seen


def test_campaign_blocks_until_the_leader_resigns(cluster):
    a, b = cluster.client().election("svc", ttl=5), cluster.client().election("svc", ttl=5)
    assert a.leader() is None
    assert a.campaign("10.0.0.1", timeout=2)
    assert a.key == b"svc/%x" % a.lease.id                 # etcd's key: <name>/<lease ID hex>
    waiting = Campaign(b, "10.0.0.2")
    time.sleep(1.0)
    assert waiting.result is None                           # still waiting behind a
    leader = a.leader()
    assert (leader.key, leader.value) == (a.key, b"10.0.0.1")
    resigned_at = time.monotonic()
    a.resign()
    waiting.join(5)
    assert waiting.result is True and waiting.returned_at - resigned_at < 2
    leader = b.leader()
    assert (leader.key, leader.value) == (b.key, b"10.0.0.2")
    assert a.key is None and a.lease is None                # resign revoked a's lease too


def test_campaign_blocks_until_the_leader_dies(make_cluster):
    c = make_cluster(env=MIN_TTL_1)
    ttl = 2
    doomed = c.client()
    dying = doomed.election("job", ttl=ttl)
    assert dying.campaign("first", timeout=2)
    waiting = Campaign(c.client().election("job", ttl=ttl), "second")
    time.sleep(2.5)                                         # more than a TTL: renewed, still the leader
    assert waiting.result is None
    died_at = time.monotonic()
    doomed.close()                                          # no resign, no revoke: the lease expires
    waiting.join(10)
    assert waiting.result is True
    assert waiting.returned_at - died_at <= ttl + 1.5, waiting.returned_at - died_at
    assert waiting.election.leader().value == b"second"


def test_observe_sees_each_leader_once_in_order_and_proclaim_changes_the_value(make_cluster):
    c = make_cluster(env=MIN_TTL_1)
    observer = Observer(c.client().election("lead"))
    time.sleep(0.3)                                         # observing an election without a leader
    a = c.client().election("lead", ttl=2)
    doomed = c.client()
    b, cc = doomed.election("lead", ttl=2), c.client().election("lead", ttl=2)
    assert a.campaign("a", timeout=2)
    a_key = a.key
    observer.wait_for(1)
    waiting_b = Campaign(b, "b")
    time.sleep(0.3)
    waiting_c = Campaign(cc, "c")
    time.sleep(0.3)
    a.proclaim("a2")
    assert a.leader().value == b"a2"
    observer.wait_for(2)
    a.resign()                                              # a resigns: b (created before c) leads
    waiting_b.join(5)
    assert waiting_b.result is True
    observer.wait_for(3)
    doomed.close()                                          # b dies: its lease expires, c leads
    waiting_c.join(10)
    assert waiting_c.result is True
    seen = observer.wait_for(4)
    time.sleep(0.5)
    observer.observation.cancel()
    observer.join(5)
    assert not observer.is_alive()
    assert seen == [(a_key, b"a"), (a_key, b"a2"), (b.key, b"b"), (cc.key, b"c")], seen


def test_proclaim_needs_the_leaders_key_and_a_timed_out_campaign_resigns(cluster):
    a, b = cluster.client().election("x", ttl=5), cluster.client().election("x", ttl=5)
    with pytest.raises(NotLeader):
        a.proclaim("nobody")
    assert a.campaign("a", timeout=2)
    assert b.campaign("b", timeout=0.5) is False            # timed out: its candidate key is gone
    assert [kv.key for kv in cluster.client().get("x/", prefix=True).kvs] == [a.key]
    with pytest.raises(NotLeader):
        b.proclaim("b")
    a.client.delete(a.key)                                  # someone removed the leader's key
    with pytest.raises(NotLeader):
        a.proclaim("a2")
    # A second campaign on the same lease keeps its place and proclaims the new value.
    assert a.campaign("again", timeout=2)
    first = a.key
    assert a.campaign("again2", timeout=2) and a.key == first
    assert a.leader().value == b"again2"
