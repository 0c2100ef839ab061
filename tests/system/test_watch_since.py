"""Watch from a wall-clock time, read as of a time (issue #16.6, SPEC.md "revision_at_time"), on a
real cluster with real commit times: write, pause, note the time, pause, write more; a watch from
that time gets exactly the later writes, a read at it the state before them."""
from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time

import pytest

import zwatch
import zwatch.aio

from support import collect, no_more
from test_auth_client import enable_auth
from test_cli import Lines, watch_cmd, zw

PAUSE_S = 0.05


def _two_phases(c):
    """Revisions 2..3 before T, 4..5 after it; returns T (an aware datetime)."""
    c.put("p/a", "1")
    c.put("p/b", "1")
    time.sleep(PAUSE_S)
    t = dt.datetime.now(dt.timezone.utc)
    time.sleep(PAUSE_S)
    c.put("p/a", "2")
    c.put("p/c", "1")
    return t


def test_watch_from_a_time_gets_exactly_the_later_writes_and_get_at_reads_the_state_then(cluster):
    c = cluster.client()
    before_all = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    t = _two_phases(c)
    answer = c.revision_at_time(t)
    assert answer.revision == 4 and not answer.compacted and not answer.future
    assert answer.commit_time_us >= t.timestamp() * 1e6
    assert c.revision_at_time(t.timestamp()).revision == 4          # Unix seconds too
    w = c.watch("p/", prefix=True, start_time=t)
    evs = collect(w, 2)
    assert [(e.kv.key, e.kv.value, e.kv.mod_revision) for e in evs] == [(b"p/a", b"2", 4), (b"p/c", b"1", 5)]
    no_more(w)
    c.put("p/d", "1")                                               # then live
    assert [e.kv.mod_revision for e in collect(w, 1)] == [6]
    then = c.get("p/", prefix=True, at=t)
    assert then.header.revision == 6
    assert [(kv.key, kv.value) for kv in then.kvs] == [(b"p/a", b"1"), (b"p/b", b"1")]
    assert c.get("p/", prefix=True, at=before_all).count == 0       # before the first commit: empty
    now = c.get("p/", prefix=True, at=dt.datetime.now(dt.timezone.utc))
    assert now.count == 4
    # A time later than the server's clock, and one older than the retained history.
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    with pytest.raises(zwatch.FutureRevision):
        c.watch("p/", prefix=True, start_time=later)
    with pytest.raises(zwatch.FutureRevision):
        c.get("p/", prefix=True, at=later)
    with pytest.raises(zwatch.InvalidArgument):
        c.watch("p/", prefix=True, start_time=t, start_revision=3)
    c.compact(5)
    with pytest.raises(zwatch.Compacted) as exc:
        c.watch("p/", prefix=True, start_time=t)                    # needs revision 4 < 5
    assert exc.value.compact_revision == 5
    with pytest.raises(zwatch.Compacted):
        c.get("p/", prefix=True, at=t)                              # the state at 3 is gone
    assert c.revision_at_time(before_all).compacted


def test_asyncio_start_time_and_at(cluster):
    sync = cluster.client()
    t = _two_phases(sync)

    async def main():
        async with zwatch.aio.Client(cluster.fanout_eps[:1], timeout=5.0, heartbeat=0.5, shuffle=False) as c:
            assert (await c.revision_at_time(t)).revision == 4
            w = await c.watch("p/", prefix=True, start_time=t)
            got = []
            while len(got) < 2:
                got += (await w.get(timeout=10)).events
            assert [e.kv.mod_revision for e in got] == [4, 5]
            then = await c.get("p/", prefix=True, at=t)
            assert [kv.key for kv in then.kvs] == [b"p/a", b"p/b"] and then.kvs[0].value == b"1"
    asyncio.run(asyncio.wait_for(main(), 60))


def test_revision_at_time_needs_an_authenticated_user(make_cluster):
    cl = make_cluster()
    root = enable_auth(cl)
    t = dt.datetime.now(dt.timezone.utc)
    rev = root.put("w/k", "1").header.revision
    alice = cl.client(user="alice:alice-pw")                        # any user: it reveals no key or value
    assert alice.revision_at_time(t).revision == rev
    anonymous = cl.client()
    with pytest.raises(zwatch.Unauthenticated):
        anonymous.revision_at_time(t)


def test_cli_since_and_at(cluster):
    ep = cluster.fanout_eps[0]
    c = cluster.client()
    t = _two_phases(c)
    for since in (t.isoformat(), f"{t.timestamp():.6f}"):
        w = Lines(watch_cmd(ep, "p/", "--prefix", "--since", since))
        try:
            assert w.take(6) == ["PUT", "p/a", "2", "PUT", "p/c", "1"]
        finally:
            w.proc.terminate()
            w.proc.wait(10)
    r = zw(ep, "get", "p/", "--prefix", "--at", t.isoformat(), "--print-value-only")
    assert r.returncode == 0 and r.stdout.split() == ["1", "1"], r.stderr
    r = zw(ep, "get", "p/", "--prefix", "--at", "1 hour ago", "--print-value-only")
    assert r.returncode == 0 and r.stdout == "", r.stderr            # before the first commit
    r = zw(ep, "watch", "p/", "--since", "yesterday-ish")
    assert r.returncode == 128 and "is not a time" in r.stderr and "ISO 8601" in r.stderr
    r = zw(ep, "watch", "p/", "--since", "2 parsecs ago")
    assert r.returncode == 128 and "unknown unit 'parsecs'" in r.stderr
    r = zw(ep, "get", "p/", "--at", "now", "--rev", "3")
    assert r.returncode == 128 and "mutually exclusive" in r.stderr
    r = zw(ep, "get", "p/", "--at", "2099-01-01T00:00:00Z")
    assert r.returncode == 1 and "later than the server's clock" in r.stderr
    c.compact(5)
    r = zw(ep, "watch", "p/", "--since", t.isoformat())
    assert r.returncode == 1 and "older than the retained history" in r.stderr


def test_a_watch_from_a_time_and_its_own_bookmark_survive_a_failover(make_cluster):
    """The time is resolved once: after its fan-out dies the watch resumes by revision (last + 1)
    on the other one, with no gap and no duplicate, and its own progress request works there."""
    cl = make_cluster(fanouts=2)
    c = cl.client(cl.fanout_eps, timeout=5, heartbeat=0.5)
    t = _two_phases(c)
    w = c.watch("p/", prefix=True, start_time=t)
    assert [e.kv.mod_revision for e in collect(w, 2)] == [4, 5]
    cl["fanout0"].kill(signal.SIGKILL)
    c.put("p/a", "3")                                               # 6, through the other fan-out
    c.put("p/e", "1")                                               # 7
    assert [e.kv.mod_revision for e in collect(w, 2, timeout=20)] == [6, 7]
    assert w.request_progress() == 7
    r = w.get(timeout=5)
    assert not r.events and r.header.revision == 7 and w.last_revision == 7
    no_more(w)
