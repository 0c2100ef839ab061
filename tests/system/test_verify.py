"""Verified streams (issue #16 item 5, SPEC.md 7.10): a verified watch's bookmarks carry the hash
of the events it was sent, the client checks it, and watch_hash computes the same value from
history.  Through the client, on real clusters: live delivery, catch-up from the fan-out's ring
and from the syncer (the ring variants), a failover, and a slow client's replay."""
from __future__ import annotations

import queue
import time

import pytest

from zwatch import streamhash

from support import collect

RING_VARIANTS = {"ring_default": {}, "ring_0": {"ZWATCH_RING_REVISIONS": "0"},
                 "ring_3": {"ZWATCH_RING_REVISIONS": "3"}}


@pytest.fixture(params=list(RING_VARIANTS))
def cluster_env(request):
    return RING_VARIANTS[request.param]


def bookmark(c, w, timeout=10.0):
    """Ask for progress until w delivers a bookmark; -> the response (its events were delivered before)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.request_progress()
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                r = w.get(timeout=0.2)
            except queue.Empty:
                continue
            assert r is not None, f"watch ended: {w.cancel_reason} {w.error!r}"
            if r.is_progress_notify and r.stream_hash is not None:
                return r
    raise AssertionError("no verified bookmark")


def expected(events) -> bytes:
    """The hash of events as the application received them (computed here, independently)."""
    total = 0
    for e in events:
        kv = e.kv
        wire = [kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease]
        total += streamhash.digest(0 if e.type == "PUT" else 1, wire)
    return streamhash.to_bytes(total)


def test_bookmark_hash_matches_the_events_and_history(cluster):
    c = cluster.client()
    for i in range(20):
        c.put(f"v/{i % 4}", str(i))                          # revisions 2..21
    c.delete("v/1")                                          # 22
    w = c.watch("v/", prefix=True, start_revision=5, verify=True)
    plain = c.watch("v/", prefix=True, start_revision=5)      # same spec, not verified: its own group
    for i in range(10):
        c.put(f"v/{i % 3}", f"live{i}")                      # 23..32
    evs = collect(w, 28)
    assert [e.kv.mod_revision for e in evs] == list(range(5, 33))
    b = bookmark(c, w)
    assert b.header.revision >= 32
    assert b.stream_hash == expected(evs)
    h = c.watch_hash("v/", prefix=True, start_revision=5, revision=b.header.revision)
    assert (h.hash, h.events) == (b.stream_hash, 28)
    # The plain watch of the same spec got the same events and a bookmark without a hash.
    assert [e.kv.mod_revision for e in collect(plain, 28)] == list(range(5, 33))
    assert not w.canceled


def test_filters_and_a_verified_watch_from_now(cluster):
    c = cluster.client()
    c.put("f/a", "0")
    w = c.watch("f/", prefix=True, filters=["NODELETE"], verify=True)
    start = w._vstart
    c.put("f/a", "1")
    c.delete("f/a")
    c.put("f/b", "2")
    evs = collect(w, 2)
    b = bookmark(c, w)
    h = c.watch_hash("f/", prefix=True, filters=["NODELETE"], start_revision=start, revision=b.header.revision)
    assert h.hash == b.stream_hash == expected(evs) and h.events == 2
    # Without the filter, history says otherwise: the hash covers exactly the events delivered.
    assert c.watch_hash("f/", prefix=True, start_revision=start, revision=b.header.revision).hash != b.stream_hash


def test_a_keys_only_predicate_watch_is_verified_on_what_it_gets(cluster):
    """Issue #16 items 4 and 5 together: a keys-only, value-predicate verified watch is hashed on
    the events as delivered (values emptied, non-matching PUTs left out), on both sides: the
    live bookmark, the client's own sum, and watch_hash given the same options."""
    c = cluster.client()
    c.put("kv/a", "on-0")
    w = c.watch("kv/", prefix=True, keys_only=True, value_prefix="on", verify=True)
    start = w._vstart
    c.put("kv/a", "off-1")               # filtered out
    c.put("kv/b", "on-2")
    c.delete("kv/a")                     # DELETEs always come
    c.put("kv/c", "on-" + "x" * 100)
    evs = collect(w, 3)
    assert [e.kv.value for e in evs] == [b"", b"", b""]
    b = bookmark(c, w)
    assert b.stream_hash == expected(evs)
    opts = dict(keys_only=True, value_prefix="on")
    h = c.watch_hash("kv/", prefix=True, start_revision=start, revision=b.header.revision, **opts)
    assert (h.hash, h.events) == (b.stream_hash, 3)
    # The same range hashed with values, or without the predicate, is another stream.
    assert c.watch_hash("kv/", prefix=True, start_revision=start, revision=b.header.revision,
                        value_prefix="on").hash != b.stream_hash
    assert c.watch_hash("kv/", prefix=True, start_revision=start, revision=b.header.revision,
                        keys_only=True).hash != b.stream_hash


def test_an_initial_state_is_not_hashed_and_the_hash_starts_after_it(cluster):
    """Issue #16 items 1 and 5 together: the state's pieces are not events; after state_end at R
    a verified watch's bookmarks cover the changes of revisions > R (SPEC.md 7.10)."""
    c = cluster.client()
    for i in range(5):
        c.put(f"st/{i}", str(i))
    w = c.watch("st/", prefix=True, initial_state=True, verify=True)
    state_rev = None
    while state_rev is None:
        r = w.get(timeout=10)
        if r.state_complete:
            state_rev = r.header.revision
    c.put("st/0", "changed")
    c.delete("st/1")
    evs = collect(w, 2)
    b = bookmark(c, w)
    assert b.stream_hash == expected(evs) and b.stream_start == state_rev + 1
    h = c.watch_hash("st/", prefix=True, start_revision=state_rev + 1, revision=b.header.revision)
    assert (h.hash, h.events) == (b.stream_hash, 2)


def test_watch_hash_in_pieces_adds_up(cluster):
    c = cluster.client()
    for i in range(30):
        c.put(f"p/{i}", "x" * i)
    whole = c.watch_hash("p/", prefix=True, start_revision=2, revision=31)
    a = c.watch_hash("p/", prefix=True, start_revision=2, revision=15)
    b = c.watch_hash("p/", prefix=True, start_revision=16, revision=31)
    total = (streamhash.from_bytes(a.hash) + streamhash.from_bytes(b.hash)) % streamhash.MOD
    assert streamhash.to_bytes(total) == whole.hash and a.events + b.events == whole.events == 30
    assert c.watch_hash("nothing", start_revision=2).hash == bytes(16)


def test_verified_watch_survives_a_fanout_failover(make_cluster):
    cl = make_cluster(fanouts=2)
    c = cl.client(cl.fanout_eps)
    w = c.watch("k", verify=True)
    for i in range(5):
        c.put("k", str(i))
    collect(w, 5)
    bookmark(c, w)
    cl["fanout0"].kill()
    for i in range(5):
        c.put("k", f"after{i}")
    evs = collect(w, 5, timeout=20)
    b = bookmark(c, w, timeout=20)
    # The server-side watch was re-created at last + 1: the hash covers the events from there.
    h = c.watch_hash("k", start_revision=w._vstart, revision=b.header.revision)
    assert b.stream_hash == h.hash
    assert h.hash == expected([e for e in evs if e.kv.mod_revision >= w._vstart])


def test_asyncio_client_verified_watch_and_watch_hash(cluster):
    import asyncio

    import zwatch.aio

    async def main():
        async with zwatch.aio.Client(cluster.fanout_eps[:1], timeout=5.0, heartbeat=0.5, shuffle=False) as c:
            for i in range(6):
                await c.put(f"aio/{i % 2}", str(i))               # revisions 2..7
            w = await c.watch("aio/", prefix=True, start_revision=3, verify=True)
            await c.put("aio/9", "live")                           # 8
            events, mark = [], None
            while mark is None:
                await c.request_progress()
                resp = await w.get(timeout=5)
                events.extend(resp.events)
                if resp.is_progress_notify and resp.stream_hash is not None and resp.header.revision >= 8:
                    mark = resp
            assert [e.kv.mod_revision for e in events] == list(range(3, 9))
            h = await c.watch_hash("aio/", prefix=True, start_revision=mark.stream_start,
                                   revision=mark.header.revision)
            assert h.hash == mark.stream_hash == expected(events) and h.events == 6
            await w.cancel()
    asyncio.run(asyncio.wait_for(main(), 60))
