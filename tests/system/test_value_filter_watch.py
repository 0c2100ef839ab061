"""Keys-only and value-predicate watches (issue #16 item 4, SPEC.md 7.8) through the Python
clients (sync and asyncio) on a real cluster: exact filtered streams from history and live, a
resume that continues exactly, progress that still means "every matching event <= R".

Every test that reads history runs with the default ring, no ring (every catch-up through the
syncer's batch) and a tiny ring (a mix), as tests/system/test_watch.py does.
"""
from __future__ import annotations

import asyncio
import json
import queue
import signal
import time

import pytest

import zwatch
import zwatch.aio
from zwatch import errors

from support import collect, no_more

RING_VARIANTS = {"ring_default": {}, "ring_0": {"ZWATCH_RING_REVISIONS": "0"},
                 "ring_3": {"ZWATCH_RING_REVISIONS": "3"}}


@pytest.fixture(params=list(RING_VARIANTS))
def cluster_env(request):
    return RING_VARIANTS[request.param]


def write_mix(c, prefix="f/", n=30) -> list[tuple[int, str, bytes, bytes]]:
    """n writes on 3 keys: PUTs of values "a..." (matching), "b..." (not), some long ones, and
    deletes -> [(revision, type, key, value)]."""
    log = []
    for i in range(n):
        key = f"{prefix}{i % 3}"
        if i % 7 == 6:
            rev = c.delete(key).header.revision
            log.append((rev, "DELETE", key.encode(), b""))
            continue
        value = (b"a" if i % 2 == 0 else b"b") + (b"x" * (40 if i % 5 == 0 else 1))
        rev = c.put(key, value).header.revision
        log.append((rev, "PUT", key.encode(), value))
    return log


def expected(log, start, prefix=b"a", max_bytes=None):
    """What a value_prefix / max_value_bytes watch must deliver from `start`: PUTs that match,
    every DELETE (SPEC.md 7.8)."""
    return [(rev, t, key) for rev, t, key, value in log if rev >= start and (
        t == "DELETE" or (value.startswith(prefix) and (max_bytes is None or len(value) <= max_bytes)))]


def shape(events):
    return [(e.kv.mod_revision, e.type, e.kv.key) for e in events]


def test_filtered_watch_from_history_then_live_is_exact(cluster):
    c = cluster.client()
    first = c.put("x", "start").header.revision + 1
    log = write_mix(c)
    w = c.watch("f/", prefix=True, start_revision=first, value_prefix="a", max_value_bytes=10)
    k = c.watch("f/", prefix=True, start_revision=first, value_prefix="a", keys_only=True, prev_kv=True)
    p = c.watch("f/", prefix=True, start_revision=first)                # a plain one of the same range
    log += write_mix(c, n=21)
    want = expected(log, first, max_bytes=10)
    got = collect(w, len(want), timeout=20)
    assert shape(got) == want
    assert all(e.kv.value.startswith(b"a") for e in got if e.type == "PUT")
    keys = collect(k, len(expected(log, first)), timeout=20)
    assert shape(keys) == expected(log, first)
    assert all(e.kv.value == b"" and (e.prev_kv is None or e.prev_kv.value == b"") for e in keys)
    assert any(e.prev_kv is not None and e.prev_kv.version > 0 for e in keys)    # the metadata stays
    assert [e.kv.mod_revision for e in collect(p, len(log), timeout=20)] == [r[0] for r in log]
    no_more(w), no_more(k)


def test_resumed_filtered_watch_continues_exactly(cluster):
    """Resumable: re-created from the last delivered revision + 1 (or from a progress
    notification's revision + 1), a filtered watch gives exactly the rest."""
    c = cluster.client()
    first = c.put("x", "start").header.revision + 1
    log = write_mix(c)
    w = c.watch("f/", prefix=True, start_revision=first, value_prefix="a")
    want = expected(log, first)
    head = collect(w, len(want) // 2)
    w.cancel()
    log += write_mix(c, n=14)
    resumed = c.watch("f/", prefix=True, start_revision=head[-1].kv.mod_revision + 1, value_prefix="a")
    tail = collect(resumed, len(expected(log, first)) - len(head), timeout=20)
    assert shape(head + tail) == expected(log, first)
    no_more(resumed)


def test_progress_at_r_means_every_matching_event_up_to_r_was_delivered(cluster):
    c = cluster.client()
    w = c.watch("f/", prefix=True, value_equals="wanted")
    c.put("f/1", "wanted")
    for i in range(10):
        c.put("f/1", f"unwanted {i}")                      # all filtered out
    r = c.request_progress()
    assert r == c.get("x").header.revision
    got = []
    while True:
        resp = w.get(timeout=10)
        if resp.is_progress_notify:
            assert resp.header.revision >= r
            break
        got.extend(resp.events)
    assert [(e.kv.value, e.kv.mod_revision) for e in got] == [(b"wanted", r - 10)]


def test_progress_notify_ticks_for_a_watch_whose_events_are_all_filtered_out(make_cluster):
    """Writes on its range every 50 ms, ticks every 200 ms: a filtered-out event must not count
    as an event delivered, so the watch gets notifications while the writes go on (not only
    once they stop), each at a revision whose matching events (none) were all delivered."""
    cl = make_cluster(env={"ZWATCH_PROGRESS_INTERVAL_S": "0.2"})
    c = cl.client()
    w = c.watch("f/", prefix=True, value_prefix="never", progress_notify=True)
    last = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        last = c.put("f/k", "v").header.revision
        time.sleep(0.05)
    marks = []
    end = time.monotonic() + 2           # ticks keep coming: read what came, then a little more
    while time.monotonic() < end:
        try:
            resp = w.get(timeout=0.5)
        except queue.Empty:
            break
        assert not resp.events, resp
        marks.append(resp.header.revision)
    during = [m for m in marks if m < last]
    assert len(during) >= 3, (marks, last)


def test_bad_filters_are_invalid_argument_and_the_session_goes_on(cluster):
    c = cluster.client()
    for kw in ({"value_prefix": b"x" * 1025}, {"value_equals": b"y" * 2000}, {"max_value_bytes": -1}):
        with pytest.raises(errors.InvalidArgument):
            c.watch("k", **kw)
    w = c.watch("k", value_equals=b"x" * 1024)
    c.put("k", b"x" * 1024)
    assert [e.kv.value for e in collect(w, 1)] == [b"x" * 1024]


def test_filtered_watch_survives_its_fanout_dying(make_cluster):
    """The client's failover resume re-creates the filtered watch from last + 1: the stream is
    still exactly the matching PUTs and every DELETE."""
    cl = make_cluster(fanouts=2)
    eps = cl.fanout_eps
    watcher = cl.client(eps, heartbeat=0.3, shuffle=False)
    writer = cl.client([eps[1]])
    first = writer.put("x", "start").header.revision + 1
    w = watcher.watch("f/", prefix=True, start_revision=first, value_prefix="a", keys_only=True)
    log = write_mix(writer, n=20)
    cl["fanout0"].kill(signal.SIGKILL)
    log += write_mix(writer, n=20)
    want = expected(log, first)
    got = collect(w, len(want), timeout=30)
    assert shape(got) == want and all(e.kv.value == b"" for e in got)
    assert watcher.failovers >= 1


def test_asyncio_client_filters_the_same(cluster):
    async def main():
        async with zwatch.aio.Client(cluster.fanout_eps[:1], timeout=5.0, heartbeat=0.5) as c:
            first = (await c.put("x", "start")).header.revision + 1
            w = await c.watch("f/", prefix=True, start_revision=first, value_prefix="a", keys_only=True)
            log = []
            for i in range(12):
                key, value = f"f/{i % 2}", b"a%d" % i if i % 3 else b"b%d" % i
                rev = (await c.put(key, value)).header.revision
                log.append((rev, "PUT", key.encode(), value))
            rev = (await c.delete("f/0")).header.revision
            log.append((rev, "DELETE", b"f/0", b""))
            want = expected(log, first)
            events = []
            async for resp in w:
                events.extend(resp.events)
                if len(events) >= len(want):
                    break
            assert shape(events) == want and all(e.kv.value == b"" for e in events)
            with pytest.raises(zwatch.ZwatchError) as exc:
                await c.watch("k", max_value_bytes="ten")
            assert exc.value.code == "INVALID_ARGUMENT"
    asyncio.run(asyncio.wait_for(main(), 60))


def test_cli_watch_with_keys_only_and_value_predicates(cluster):
    from test_cli import Lines, ok, watch_cmd, zw
    ep = cluster.fanout_eps[0]
    ok(ep, "put", "c/a", "yes-1")                                            # revision 2
    ok(ep, "put", "c/a", "no-1")                                             # 3
    ok(ep, "put", "c/b", "yes-but-too-long")                                 # 4
    keys = Lines(watch_cmd(ep, "c/", "--prefix", "--rev", "2", "--keys-only", "--value-prefix", "yes"))
    short = Lines(watch_cmd(ep, "c/", "--prefix", "--rev", "2", "--value-prefix", "yes", "--max-value-bytes", "8"))
    exact = Lines(watch_cmd(ep, "c/a", "--rev", "2", "--value-equals", "no-1", "-w", "json"))
    try:
        assert keys.take(6) == ["PUT", "c/a", "", "PUT", "c/b", ""]            # values stripped
        assert short.take(3) == ["PUT", "c/a", "yes-1"]
        first = json.loads(exact.take(1)[0])
        assert [e["kv"]["mod_revision"] for e in first["Events"]] == [3]
        ok(ep, "put", "c/a", "no-2")                                         # 5: nobody's
        ok(ep, "del", "c/a")                                                 # 6: everybody's
        assert keys.take(3) == ["DELETE", "c/a", ""]
        assert short.take(3) == ["DELETE", "c/a", ""]
        assert json.loads(exact.take(1)[0])["Events"] == [{"type": 1, "kv": {"key": "Yy9h", "mod_revision": 6}}]
    finally:
        for p in (keys, short, exact):
            assert p.stop(signal.SIGINT) == 0
    r = zw(ep, "watch", "c/a", "--value-prefix", "x" * 1025, timeout=30)
    assert r.returncode != 0 and "value_prefix" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_filtered_watch_of_a_stalled_consumer_is_replayed_exactly(make_cluster):
    """Reliable/Unique for a victim: a filtered watch whose client stops reading becomes a
    victim, and is replayed (from the ring or the syncer) from the first revision it did not
    get: the same filtered stream, no gap, no duplicate."""
    cl = make_cluster(env={"ZWATCH_STALL_S": "0.3"})
    slow = cl.client(max_buffered_bytes=64 * 1024)
    writer = cl.client()
    first = writer.put("x", "start").header.revision + 1
    w = slow.watch("v/", prefix=True, start_revision=first, value_prefix="a", keys_only=False)
    log = []
    for i in range(240):
        key = f"v/{i % 4}"
        if i % 10 == 9:
            log.append((writer.delete(key).header.revision, "DELETE", key.encode(), b""))
            continue
        value = (b"a" if i % 3 else b"b") + b"x" * 4000
        log.append((writer.put(key, value).header.revision, "PUT", key.encode(), value))
    time.sleep(1.0)                                   # nobody reads: the window fills, it stalls
    want = expected(log, first)
    got = collect(w, len(want), timeout=60)
    assert shape(got) == want
    assert all(e.kv.value == dict(((r, k), v) for r, _t, k, v in log)[(e.kv.mod_revision, e.kv.key)] for e in got)
    assert cl["fanout0"].events("watch.victim"), "the stalled watch never became a victim"


def test_bookmarks_under_concurrent_writes_never_precede_a_matching_event(cluster):
    """Bookmarkable under load: writes go on while progress is requested again and again; after
    a progress notification at R, no matching event <= R arrives, and the stream is exact."""
    import threading
    c = cluster.client()
    writer = cluster.client()
    first = c.put("x", "start").header.revision + 1
    w = c.watch("b/", prefix=True, start_revision=first, value_prefix="a")
    log, stop = [], threading.Event()

    def write():
        i = 0
        while not stop.is_set() and i < 400:
            key = f"b/{i % 5}"
            if i % 9 == 8:
                log.append((writer.delete(key).header.revision, "DELETE", key.encode(), b""))
            else:
                value = b"a%d" % i if i % 4 else b"b%d" % i
                log.append((writer.put(key, value).header.revision, "PUT", key.encode(), value))
            i += 1
            time.sleep(0.003)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    got, mark, bookmarks, iterations = [], 0, 0, 0
    deadline = time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline:
        iterations += 1
        c.request_progress()
        drain_until = time.monotonic() + 0.03        # events keep coming: ask again every 30 ms
        while time.monotonic() < drain_until:
            try:
                resp = w.get(timeout=0.01)
            except queue.Empty:
                break
            if resp.is_progress_notify:
                mark = max(mark, resp.header.revision)
                bookmarks += 1
            for e in resp.events:
                assert e.kv.mod_revision > mark, (e.kv.mod_revision, mark)
                got.append(e)
    stop.set()
    t.join(10)
    want = expected(sorted(log), first)
    while len(got) < len(want):
        resp = w.get(timeout=10)
        for e in resp.events:
            assert e.kv.mod_revision > mark
            got.append(e)
    assert shape(got) == want
    assert bookmarks >= 5, (bookmarks, iterations, len(log))
