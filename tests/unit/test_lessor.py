"""actors/lessor.py, the writer's lease clock, driven with a fake clock (``now`` is a plain float)."""
from __future__ import annotations

import math

from zwatch.actors.lessor import Lessor


def test_grant_sets_a_deadline_ttl_seconds_from_now():
    lessor = Lessor()
    lessor.grant(7, 10, now=100.0)
    assert len(lessor) == 1 and lessor.ids() == [7]
    assert lessor.granted[7] == 10 and lessor.deadline[7] == 110.0
    assert lessor.next_deadline() == 110.0
    assert lessor.expired(109.999, 10) == []
    assert lessor.expired(110.0, 10) == [7]


def test_keepalive_moves_the_deadline_and_answers_the_granted_ttl():
    lessor = Lessor()
    lessor.grant(1, 10, now=0.0)
    assert lessor.keepalive(1, now=8.0) == 10
    assert lessor.deadline[1] == 18.0
    assert lessor.expired(10.0, 10) == []          # the original deadline no longer counts
    assert lessor.expired(17.9, 10) == []
    assert lessor.expired(18.0, 10) == [1]


def test_keepalive_of_an_unknown_lease_answers_zero():
    lessor = Lessor()
    assert lessor.keepalive(42, now=0.0) == 0
    assert len(lessor) == 0


def test_keepalive_past_the_deadline_answers_zero_and_does_not_revive():
    lessor = Lessor()
    lessor.grant(1, 5, now=0.0)
    assert lessor.keepalive(1, now=5.0) == 0       # exactly at the deadline: already dead
    assert lessor.keepalive(1, now=6.0) == 0
    assert lessor.deadline[1] == 5.0               # not moved
    assert lessor.expired(6.0, 10) == [1]          # still handed out for revoking
    assert lessor.keepalive(1, now=6.5) == 0       # handed out: still dead


def test_expired_hands_out_earliest_deadline_first_bounded_by_limit():
    lessor = Lessor()
    for lease_id, ttl in [(1, 30), (2, 10), (3, 20), (4, 5), (5, 25), (6, 100)]:
        lessor.grant(lease_id, ttl, now=0.0)
    assert lessor.expired(50.0, 2) == [4, 2]
    assert lessor.expired(50.0, 2) == [3, 5]
    assert lessor.expired(50.0, 2) == [1]          # 6 is not due
    assert lessor.expired(50.0, 2) == []
    assert lessor.expired(50.0, 0) == []
    assert lessor.next_deadline() == 100.0


def test_expired_hands_each_lease_out_once():
    lessor = Lessor()
    lessor.grant(1, 1, now=0.0)
    assert lessor.expired(2.0, 10) == [1]
    assert lessor.expired(3.0, 10) == []           # handed out, not yet forgotten nor requeued
    assert lessor.remaining(1, now=3.0) == 0


def test_requeue_hands_a_lease_out_again_when_its_revoke_failed():
    lessor = Lessor()
    lessor.grant(1, 1, now=0.0)
    lessor.grant(2, 1, now=0.0)
    assert lessor.expired(2.0, 10) == [1, 2]
    lessor.requeue([1, 2], now=2.0)
    assert lessor.keepalive(1, now=2.1) == 0       # requeued, still past its deadline: dead
    assert sorted(lessor.expired(2.5, 10)) == [1, 2]
    lessor.requeue([99], now=3.0)                  # never handed out: nothing happens
    assert lessor.expired(10.0, 10) == []


def test_forget_drops_the_lease_and_its_heap_entry():
    lessor = Lessor()
    lessor.grant(1, 5, now=0.0)
    lessor.grant(2, 5, now=0.0)
    lessor.forget(1)                               # revoked by a client before its deadline
    assert len(lessor) == 1 and lessor.ids() == [2]
    assert lessor.keepalive(1, now=1.0) == 0
    assert lessor.remaining(1, now=1.0) == -1
    assert lessor.expired(10.0, 10) == [2]
    lessor.forget(2)                               # revoked by expiry
    assert len(lessor) == 0 and lessor.expired(20.0, 10) == []
    lessor.forget(3)                               # unknown: harmless
    assert lessor.next_deadline() == math.inf


def test_restore_gives_every_lease_its_full_ttl_again():
    lessor = Lessor()
    lessor.restore([(1, 10), (2, 60), (3, 5)], now=1000.0)
    assert lessor.deadline == {1: 1010.0, 2: 1060.0, 3: 1005.0}
    assert lessor.remaining(2, now=1000.0) == 60
    assert lessor.expired(1004.9, 10) == []        # no lease expires early after a restart
    assert lessor.expired(1010.0, 10) == [3, 1]


def test_heap_stays_one_entry_per_lease_after_many_keepalives():
    lessor = Lessor()
    for lease_id in range(1, 101):
        lessor.grant(lease_id, 10, now=0.0)
    now = 0.0
    for _ in range(1000):
        now += 3.0
        for lease_id in range(1, 101):
            assert lessor.keepalive(lease_id, now) == 10
        assert lessor.expired(now, 1000) == []     # pops due entries and pushes them back once
        assert len(lessor._heap) == 100
    # a lease left alone expires at its last keep-alive + TTL, exactly once
    for lease_id in range(2, 101):
        lessor.keepalive(lease_id, now + 5.0)
    assert lessor.expired(now + 10.0, 1000) == [1]
    assert lessor.expired(now + 15.0, 1000) == list(range(2, 101))
    assert len(lessor._heap) == 0


def test_heap_is_bounded_when_long_leases_are_granted_and_revoked_forever():
    lessor = Lessor()
    lessor.grant(1 << 40, 3600, now=0.0)             # one lease that stays
    for lease_id in range(1, 20_001):
        lessor.grant(lease_id, 3600, now=float(lease_id))
        lessor.forget(lease_id)
    assert len(lessor) == 1
    assert len(lessor._heap) <= 1 + 1025
    assert lessor.expired(1e9, 100) == [1 << 40]


def test_remaining_is_whole_seconds_truncated():
    lessor = Lessor()
    lessor.grant(1, 10, now=0.0)
    assert lessor.remaining(1, now=0.0) == 10
    assert lessor.remaining(1, now=0.5) == 9       # 9.5 s left: etcd truncates
    assert lessor.remaining(1, now=9.99) == 0
    assert lessor.remaining(1, now=12.0) == 0      # past the deadline: 0, not negative
    assert lessor.remaining(2, now=0.0) == -1      # unknown


def test_keepalive_queued_before_the_deadline_renews_from_when_it_may_have_arrived():
    """A keep-alive read at 12.0 that has waited in the writer's queue since 9.0 (the writer was
    committing), for a lease due at 10.0: it counts from 9.0, so the lease lives."""
    lessor = Lessor()
    lessor.grant(1, 10, now=0.0)
    lessor.keepalive_queued(1, queued_since=9.0)
    assert lessor.deadline[1] == 19.0
    assert lessor.expired(12.0, 10) == []
    assert lessor.keepalive(1, now=12.0) == 10 and lessor.deadline[1] == 22.0


def test_keepalive_queued_never_shortens_nor_revives():
    lessor = Lessor()
    lessor.grant(1, 10, now=0.0)
    lessor.keepalive(1, now=8.0)                   # due at 18.0
    lessor.keepalive_queued(1, queued_since=5.0)   # 15.0 would shorten it
    assert lessor.deadline[1] == 18.0
    lessor.keepalive_queued(1, queued_since=18.0)  # queued only once it was already due: dead
    assert lessor.deadline[1] == 18.0
    assert lessor.expired(19.0, 10) == [1]
    lessor.keepalive_queued(1, queued_since=17.0)  # handed out for revoking: too late
    assert lessor.keepalive(1, now=19.5) == 0
    lessor.keepalive_queued(2, queued_since=0.0)   # unknown: nothing
    assert 2 not in lessor.deadline
