"""The client's keep-alive timing (protocol/client/lease.py) without sockets.

KeepAliveSchedule is driven with a fake clock; LeaseKeeper (the thread) with a fake client whose
lease_keepalive_once records what it was asked, so batching is counted, not timed.
"""
from __future__ import annotations

import threading
import time

import pytest

from zwatch.client.lease import RETRY_AFTER, KeepAliveSchedule, Lease, LeaseKeeper
from zwatch.errors import Unavailable


# ---------------------------------------------------------------- KeepAliveSchedule (fake clock)
def test_lease_is_due_at_a_third_of_its_ttl_counted_from_the_grant_request():
    s = KeepAliveSchedule()
    s.add(1, 30, granted_at=100.0)
    assert s.due(1) == pytest.approx(110.0)
    assert s.deadline(1) == pytest.approx(130.0)
    assert s.take_due(109.0) == []              # not yet (window: 0.5 s at most)
    assert s.take_due(109.6) == [1]             # within its coalescing window
    assert s.next_wakeup() == pytest.approx(110.0)


def test_leases_granted_together_go_in_one_tick_a_later_one_does_not():
    s = KeepAliveSchedule()
    for i in range(50):                          # granted one after the other over 100 ms
        s.add(i, 3, granted_at=100.0 + i * 0.002)
    s.add(99, 30, granted_at=100.0)
    assert s.next_wakeup() == pytest.approx(101.0)
    assert sorted(s.take_due(101.0)) == list(range(50))


def test_renewal_counts_from_when_the_keepalive_was_sent():
    s = KeepAliveSchedule()
    s.add(1, 3, granted_at=0.0)
    assert s.renewed({1: 3}, sent_at=1.0) == []
    assert s.deadline(1) == pytest.approx(4.0)
    assert s.due(1) == pytest.approx(2.0)
    assert s.take_due(1.1) == []                 # renewed: not due again right away (no busy loop)
    # The server may answer another TTL (a restart with a new minimum): the interval follows it.
    s.renewed({1: 9}, sent_at=2.0)
    assert s.due(1) == pytest.approx(5.0)


def test_an_older_answer_never_moves_the_deadline_back():
    s = KeepAliveSchedule()
    s.add(1, 3, granted_at=0.0)
    s.renewed({1: 3}, sent_at=2.0)               # refresh() answered first
    s.renewed({1: 3}, sent_at=1.0)               # the loop's older request answered after it
    assert s.deadline(1) == pytest.approx(5.0)


def test_ttl_zero_means_gone_and_the_lease_leaves_the_schedule():
    s = KeepAliveSchedule()
    s.add(1, 3, granted_at=0.0)
    s.add(2, 3, granted_at=0.0)
    assert s.renewed({1: 0, 2: 3}, sent_at=1.0) == [1]
    assert 1 not in s and 2 in s
    assert s.renewed({1: 3}, sent_at=1.0) == []    # an answer for a forgotten lease is ignored
    assert 1 not in s


def test_a_failed_keepalive_is_retried_every_half_second_until_the_deadline():
    s = KeepAliveSchedule()
    s.add(1, 3, granted_at=0.0)                  # deadline 3.0
    now = 1.0
    attempts = 0
    lost = []
    while not lost:
        assert s.take_due(now) == [1]
        attempts += 1
        lost = s.failed([1], now)
        if not lost:
            assert s.take_due(now + RETRY_AFTER - 0.01) == []   # not before the retry time
            assert s.next_wakeup() == pytest.approx(now + RETRY_AFTER)
            now += RETRY_AFTER
    assert lost == [1] and 1 not in s
    assert now >= 3.0 and attempts == 5          # 1.0, 1.5, 2.0, 2.5, 3.0 (3.0: past the deadline)


def test_a_success_after_failures_resumes_the_normal_rhythm():
    s = KeepAliveSchedule()
    s.add(1, 3, granted_at=0.0)
    s.failed([1], 1.0)
    s.renewed({1: 3}, sent_at=1.5)
    assert s.next_wakeup() == pytest.approx(2.5)
    assert s.take_due(2.0) == []


def test_next_wakeup_is_none_without_leases():
    s = KeepAliveSchedule()
    assert s.next_wakeup() is None
    s.add(1, 3, granted_at=0.0)
    s.remove(1)
    assert s.next_wakeup() is None and len(s) == 0


# ---------------------------------------------------------------- LeaseKeeper with a fake client
class FakeClient:
    """What LeaseKeeper and Lease use of Client: lease_keepalive_once, timeout, name, _closed."""

    def __init__(self, answer=None, fail=False):
        self.timeout = 5.0
        self.name = "fake"
        self._closed = False
        self.requests: list[list[int]] = []
        self.answer = answer or (lambda ids: {i: 1 for i in ids})
        self.fail = fail
        self.lock = threading.Lock()

    def lease_keepalive_once(self, ids, timeout=None):
        with self.lock:
            self.requests.append(list(ids))
        if self.fail:
            raise Unavailable("no fan-out reachable")
        return self.answer(ids)


def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def keep_leases(client, n, ttl=1):
    keeper = LeaseKeeper(client)
    now = time.monotonic()
    leases = [Lease(client, 1000 + i, ttl, keeper) for i in range(n)]
    for lease in leases:
        keeper.keep(lease, now)
    return keeper, leases


def test_keeper_sends_one_request_per_tick_for_all_its_leases():
    client = FakeClient()
    keeper, leases = keep_leases(client, 50)
    try:
        wait_until(lambda: keeper.requests >= 3)
    finally:
        keeper.stop()
    assert all(sorted(r) == [lease.id for lease in leases] for r in client.requests), \
        [len(r) for r in client.requests]
    assert keeper.renewals == 50 * keeper.requests and keeper.failures == 0
    assert all(lease.alive for lease in leases)


def test_keeper_drops_a_lease_the_server_answers_ttl_zero_for():
    client = FakeClient(answer=lambda ids: {i: (0 if i == 1000 else 1) for i in ids})
    keeper, leases = keep_leases(client, 3)
    try:
        wait_until(lambda: not leases[0].alive)
        wait_until(lambda: keeper.requests >= 3)
    finally:
        keeper.stop()
    assert leases[1].alive and leases[2].alive
    assert [r for r in client.requests[1:] if 1000 in r] == []   # left the schedule
    assert len(keeper) == 2


def test_keeper_retries_a_failing_keepalive_then_gives_up_at_the_deadline():
    client = FakeClient(fail=True)
    keeper, leases = keep_leases(client, 2, ttl=2)
    try:
        wait_until(lambda: not leases[0].alive, timeout=5)
    finally:
        keeper.stop()
    assert not leases[1].alive and len(keeper) == 0
    # First attempt at TTL/3 (0.67 s), then every 0.5 s until the 2 s deadline: 3 or 4 requests,
    # each for both leases (one per tick, never one per lease).
    assert 3 <= keeper.requests <= 4, client.requests
    assert keeper.failures == keeper.requests
    assert all(sorted(r) == [1000, 1001] for r in client.requests)


def test_refresh_renews_now_and_moves_the_schedule():
    client = FakeClient(answer=lambda ids: {i: 30 for i in ids})
    keeper, (lease,) = keep_leases(client, 1, ttl=30)
    try:
        assert lease.refresh() == 30
        assert keeper.requests == 0 and len(client.requests) == 1   # sent by refresh, not the loop
        client.answer = lambda ids: {i: 0 for i in ids}
        assert lease.refresh() == 0
        assert not lease.alive and len(keeper) == 0
    finally:
        keeper.stop()


def test_stop_ends_the_thread_and_keep_after_stop_is_refused():
    client = FakeClient()
    keeper, _ = keep_leases(client, 1)
    keeper.stop()
    assert not keeper._thread.is_alive()
    with pytest.raises(Unavailable):
        keeper.keep(Lease(client, 7, 1, keeper), time.monotonic())
