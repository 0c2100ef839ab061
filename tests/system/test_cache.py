"""Issue #14.4: zwatch.Cache, an informer-style local map of a range, consistent at a revision.

The convergence test kills the fan-out the cache's client is on and compacts the history under
the watch while it is away, so that its resume finds its next revision compacted: the cache must
list again (or, with on_compacted digest / resync, take the server's resync in place) and end equal
to the truth (a range read at the same revision), with on_change having told every difference.
"""
from __future__ import annotations

import random
import threading
import time

import pytest

import zwatch


def _truth(c, prefix: str, revision: int) -> list:
    return sorted((kv.key, kv.value, kv.mod_revision) for kv in c.get(prefix, prefix=True, revision=revision).kvs)


def _mine(cache) -> tuple[int, list]:
    rev, items = cache.snapshot()
    return rev, sorted((k, kv.value, kv.mod_revision) for k, kv in items)


def test_cache_lists_then_follows_and_waits_for_revisions(make_cluster):
    cl = make_cluster()
    c = cl.client()
    c.put("cfg/a", "1")
    c.put("cfg/b", "2")
    c.put("other", "x")
    changes = []
    with zwatch.Cache(c, "cfg/", prefix=True, on_change=changes.append) as cache:
        assert cache.get("cfg/a").value == b"1" and len(cache) == 2 and "cfg/c" not in cache
        r1 = c.put("cfg/c", "3").header.revision
        r2 = c.delete("cfg/a").header.revision
        assert cache.wait_for(r2, timeout=10)
        rev, items = _mine(cache)
        assert rev >= r2 and items == _truth(c, "cfg/", rev)
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in changes] == [("PUT", b"cfg/c", r1), ("DELETE", b"cfg/a", r2)]
        outside = c.put("other", "y").header.revision       # nothing in the range: progress moves it
        assert cache.wait_for(outside, timeout=10) and cache.revision >= outside
        assert not cache.wait_for(outside + 1000, timeout=0.3)
        assert cache.relists == 0


@pytest.mark.parametrize("on_compacted", ["digest", "resync", "cancel"])
def test_cache_converges_after_a_fanout_kill_and_a_compaction_under_it(make_cluster, on_compacted):
    """digest / resync (issue #16, SPEC.md section 7.7): the server resyncs the watch in place;
    cancel: the cache lists again."""
    cl = make_cluster(fanouts=2)
    writer = cl.client([cl.fanout_eps[1]], timeout=10)
    for i in range(20):
        writer.put(f"inf/{i}", f"v{i}")
    reader = cl.client(cl.fanout_eps, timeout=10)               # on fan-out 0, fails over to 1
    changes = []
    cache = zwatch.Cache(reader, "inf/", prefix=True, on_change=changes.append, on_compacted=on_compacted)
    replica = {k: kv.value for k, kv in cache.items()}         # the first list, then on_change's events
    stop = threading.Event()
    rng = random.Random(7)

    def write():
        while not stop.is_set():
            k = f"inf/{rng.randrange(30)}"
            if rng.random() < 0.25:
                writer.delete(k)
            else:
                writer.put(k, f"v{rng.randrange(1000)}")
            time.sleep(0.005)

    t = threading.Thread(target=write)
    t.start()
    try:
        time.sleep(0.5)
        cl["fanout0"].kill()                                   # the cache's watch must move ...
        time.sleep(0.2)
        rev = writer.put("inf/marker", "m").header.revision
        writer.compact(rev)                                    # ... and finds its next revision gone
        time.sleep(1.0)
    finally:
        stop.set()
        t.join()
    final = writer.put("inf/final", "f").header.revision
    assert cache.wait_for(final, timeout=30), f"cache stuck at {cache.revision}, final {final}"
    rev, items = _mine(cache)
    assert items == _truth(writer, "inf/", rev)
    if on_compacted == "cancel":
        assert cache.relists >= 1, "the watch resumed without hitting the compaction: the test did not test it"
    else:
        assert cache.resyncs >= 1 and cache.relists == 0, \
            f"resyncs {cache.resyncs}, relists {cache.relists}: the compaction was not resynced in place"
    # on_change told every difference: its events over the first list give the same map
    deadline = time.monotonic() + 5
    while not any(e.kv.key == b"inf/final" for e in list(changes)) and time.monotonic() < deadline:
        time.sleep(0.02)                                       # on_change runs after the revision is in
    for e in changes:
        if e.type == "PUT":
            replica[e.kv.key] = e.kv.value
        else:
            replica.pop(e.kv.key, None)
    assert sorted(replica.items()) == [(k, v) for k, v, _ in items]
    cache.close()
    assert cache.error is None
