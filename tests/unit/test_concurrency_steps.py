"""concurrency.py's steps do no I/O: they yield effects and take their results, so the lock
algorithm is checked here by feeding results by hand (the sync and asyncio clients drive the
same steps against real clusters: tests/system/test_lock.py, test_aio_client.py)."""
from __future__ import annotations

from zwatch.client.concurrency import TIMEOUT, Call, LockSteps, Next
from zwatch.client.types import (DeleteRangeResponse, Event, Header, KeyValue, PutResponse, RangeResponse,
                                 TxnResponse, WatchResponse)


def finish(steps, value):
    """Send the last result: the steps must end there; returns what they returned."""
    try:
        eff = steps.send(value)
    except StopIteration as done:
        return done.value
    raise AssertionError(f"the steps went on with {eff!r}")


class FakeLease:
    id, alive = 0x2a, True


def test_acquire_free_lock_is_one_lease_and_one_txn():
    lock = LockSteps(client=None, name="job", ttl=10)
    steps = lock._acquire(timeout=None)
    eff = steps.send(None)
    assert eff == Call(None, "lease", (10,), retry=True, deadline=None)
    eff = steps.send(FakeLease())
    assert eff.method == "txn" and eff.retry
    put = PutResponse(Header(5))
    nobody = RangeResponse(Header(5), [])
    assert finish(steps, TxnResponse(Header(5), True, [put, nobody])) is True
    assert lock.key == b"job/2a" and lock.revision == 5


def test_acquire_waits_for_the_delete_of_the_previous_contender():
    lock = LockSteps(client=None, name="job", ttl=10)
    steps = lock._acquire(timeout=None)
    steps.send(None)
    steps.send(FakeLease())
    holder = KeyValue(b"job/1", 3, 3, 1, b"", 1)
    eff = steps.send(TxnResponse(Header(5), True, [PutResponse(Header(5)), RangeResponse(Header(5), [holder])]))
    assert eff.method == "get" and eff.kwargs["max_create_revision"] == 4       # the one before mine
    eff = steps.send(RangeResponse(Header(5), [holder]))
    assert eff.method == "watch" and eff.args == (b"job/1",) and eff.kwargs == {"start_revision": 5}
    watch = object()
    eff = steps.send(watch)
    assert eff == Next(watch, None)
    deleted = Event("DELETE", KeyValue(b"job/1", 0, 6, 0, b"", 0))
    eff = steps.send(WatchResponse(1, Header(6), [deleted]))
    assert eff == Call(watch, "cancel", quiet=True)                             # the watch is not left behind
    eff = steps.send(None)
    assert eff.method == "get"                                                   # looks again
    assert finish(steps, RangeResponse(Header(6), [])) is True


def test_acquire_timeout_deletes_the_key_and_revokes_the_lease():
    lock = LockSteps(client=None, name="job", ttl=10)
    steps = lock._acquire(timeout=5)
    steps.send(None)
    lease = FakeLease()
    steps.send(lease)
    holder = KeyValue(b"job/1", 3, 3, 1, b"", 1)
    steps.send(TxnResponse(Header(5), True, [PutResponse(Header(5)), RangeResponse(Header(5), [holder])]))
    steps.send(RangeResponse(Header(5), [holder]))
    watch = object()
    assert isinstance(steps.send(watch), Next)
    assert steps.send(TIMEOUT) == Call(watch, "cancel", quiet=True)
    eff = steps.send(None)
    assert eff == Call(None, "delete", (b"job/2a",), retry=True)
    assert steps.send(DeleteRangeResponse(Header(7), 1, [])) == Call(lease, "revoke")
    assert finish(steps, Header(8)) is False
    assert lock.key is None and lock.lease is None
