"""The DB size quota and the NOSPACE alarm (actors/store/quota.py): etcd 3.4's costs and
decisions, then on a real LMDB store in a temp dir (no sockets): the alarm is raised by the
request that would reach the quota, persisted with the batch, caps only what grows the store,
survives a reopen, and is disarmed."""
from __future__ import annotations

import pytest

from zwatch.actors.store import Store
from zwatch.actors.store.quota import (KV_OVERHEAD, LEASE_OVERHEAD, NO_SPACE_MESSAGE, NOSPACE, BatchQuota,
                                       cost)
from zwatch.errors import NO_SPACE, NoSpace


def put(k, v=b""):
    return {"request_put": {"key": k, "value": v}}


def test_costs_are_etcds():
    assert cost("put", {"key": b"abc", "value": b"x" * 100}) == KV_OVERHEAD + 103
    assert cost("lease_grant", {"TTL": 10}) == LEASE_OVERHEAD == 64
    for op, body in (("delete_range", {"key": b"a"}), ("range", {"key": b"a"}), ("compact", {"revision": 5}),
                     ("lease_revoke", {"ID": 1}), ("user_add", {"name": "u"})):
        assert cost(op, body) == 0
    # a txn: the larger branch's puts (etcd's costTxn), reads and deletes free
    t = {"success": [put(b"a", b"1" * 10), {"request_delete_range": {"key": b"b"}}],
         "failure": [put(b"c", b"2" * 50)]}
    assert cost("txn", t) == KV_OVERHEAD + 51
    assert cost("txn", {"success": [{"request_range": {"key": b"a"}}]}) == 0
    # nested txns count too (etcd 3.4 forgets them: a nested put would slip past the alarm)
    assert cost("txn", {"success": [{"request_txn": {"success": [put(b"n", b"v")]}}]}) == KV_OVERHEAD + 2
    # malformed bodies cost what can be read; validation fails them later
    assert cost("put", {"key": 5}) == KV_OVERHEAD and cost("txn", {"success": "x"}) == 0


def test_batch_quota_decisions():
    q = BatchQuota(10_000, 9_000, [])
    assert q.check("put", {"key": b"k", "value": b"v" * 100}) == KV_OVERHEAD + 101
    q.admit(KV_OVERHEAD + 101)
    assert q.size == 9_000 + KV_OVERHEAD + 101
    assert q.check("delete_range", {"key": b"k"}) == 0
    with pytest.raises(NoSpace) as e:          # size + cost >= quota: refused, alarm raised
        q.check("put", {"key": b"k", "value": b"v" * 700})
    assert (e.value.code, e.value.message) == (NO_SPACE, NO_SPACE_MESSAGE) == (NO_SPACE, "etcdserver: mvcc: database space exceeded")
    assert q.raised and q.alarmed
    with pytest.raises(NoSpace):               # from now on every growing request
        q.check("lease_grant", {"TTL": 5})
    assert q.check("delete_range", {"key": b"k"}) == 0
    assert q.check("compact", {"revision": 3}) == 0


def test_active_alarm_caps_even_below_the_quota_and_no_quota_never_raises():
    q = BatchQuota(1 << 30, 1000, [NOSPACE])
    with pytest.raises(NoSpace):
        q.check("put", {"key": b"k"})
    assert not q.raised                        # already active: nothing new to write or log
    q = BatchQuota(0, 1 << 40, [])
    assert q.check("put", {"key": b"k"}) == KV_OVERHEAD + 1 and not q.raised


def test_store_raises_persists_and_disarms(tmp_path):
    s = Store(str(tmp_path), quota_bytes=150_000)
    try:
        results = []
        for i in range(100):
            (r,), _ = s.apply_batch([("put", {"key": b"k%d" % (i % 10), "value": b"x" * 4000})])
            results.append(r)
            if isinstance(r, NoSpace):
                break
        assert isinstance(results[-1], NoSpace) and s.alarm_raised
        assert all(isinstance(r, dict) for r in results[:-1]) and len(results) > 10
        assert [a for _, a in s.alarms()] == [NOSPACE]
        assert s.db_size() < 150_000           # refused before it got there
        before = s.current_revision()
        r, pub = s.apply_batch([("put", {"key": b"small"}), ("delete_range", {"key": b"k1"}),
                                ("lease_grant", {"TTL": 60}), ("txn", {"success": [put(b"t", b"1")]}),
                                ("txn", {"success": [{"request_delete_range": {"key": b"k2"}}]}),
                                ("compact", {"revision": before})])
        assert [type(x).__name__ if isinstance(x, Exception) else "ok" for x in r] == [
            "NoSpace", "ok", "NoSpace", "NoSpace", "ok", "ok"]
        assert not s.alarm_raised              # already active: not raised again
        assert s.current_revision() == before + 2
    finally:
        s.close()
    s = Store(str(tmp_path), quota_bytes=150_000)     # the alarm survives a reopen
    try:
        member, name = s.alarms()[0]
        assert name == NOSPACE and member > 0
        assert s.alarm_disarm() == [[member, NOSPACE]] and s.alarms() == []
        assert s.alarm_disarm() == []
        (r,), _ = s.apply_batch([("put", {"key": b"after", "value": b"1"})])
        assert isinstance(r, dict)             # below the quota again: writes pass
    finally:
        s.close()


def test_db_size_in_use_drops_after_compaction_while_the_file_does_not_shrink(tmp_path):
    s = Store(str(tmp_path))
    try:
        for i in range(300):
            s.apply_batch([("put", {"key": b"k%d" % (i % 10), "value": b"x" * 4000})])
        size, used = s.db_size(), s.db_size_in_use()
        assert used <= size
        s.apply_batch([("compact", {"revision": s.current_revision()})])
        while s.compact_step():
            pass
        assert s.db_size() == size             # LMDB never gives the file back
        assert s.db_size_in_use() < used / 5   # 10 live keys of 300 records
        print("db_size", size, "in use before", used, "after", s.db_size_in_use())
        # what a compacting copy keeps is about the live pages
        s.env.copy(str(tmp_path / "copy"), compact=True) if (tmp_path / "copy").mkdir() is None else None
        copied = (tmp_path / "copy" / "data.mdb").stat().st_size
        assert abs(copied - s.db_size_in_use()) <= 8 * 4096, (copied, s.db_size_in_use())
    finally:
        s.close()
