"""The client's side of verified streams (SPEC.md 7.10), without a server: synthetic wire
responses fed to the WatchRouter.  A verified watch sums the digests of the events it hands to
the application (after dropping duplicates) and compares at each bookmark; a mismatch ends it
with StreamDiverged naming the watch, the revision and both hashes."""
import queue
import threading

import pytest

from zwatch import StreamDiverged, streamhash
from zwatch.client import Watch, WatchRouter

from test_client_dedup import ev, events_resp


def vwatch(table, watch_id, shared_queue=None, start=1) -> Watch:
    w = Watch(None, watch_id, {"key": b"k", "watch_id": watch_id, "verify": True, "start_revision": start},
              shared_queue)
    w._live = True
    table[watch_id] = w
    return w


def h(*revs) -> bytes:
    return streamhash.to_bytes(streamhash.sum_events([ev(r) for r in revs]))


def bookmark(ids, rev, hash_) -> list:
    return [list(ids), rev, [], False, {"hash": hash_}]


def drain(w) -> list:
    out = []
    while True:
        try:
            r = w.get(timeout=0)
        except queue.Empty:
            return out
        except StreamDiverged as exc:
            out.append(exc)
            return out
        if r is None:
            return out
        out.append(r)


@pytest.fixture
def table():
    return {}


@pytest.fixture
def router(table):
    return WatchRouter(table, threading.Lock(), "test-client")


def test_matching_bookmarks_pass_and_carry_the_hash(router, table):
    w = vwatch(table, 1)
    router.on_watch_responses([events_resp([1], 2, 3), bookmark([1], 5, h(2, 3)),
                               events_resp([1], 6), bookmark([1], 6, h(2, 3, 6))])
    got = drain(w)
    assert [r.stream_hash for r in got] == [None, h(2, 3), None, h(2, 3, 6)]
    assert [r.stream_start for r in got] == [0, 1, 0, 1]
    assert not w.canceled and router.diverged == 0


def test_duplicates_dropped_by_the_client_are_not_counted_twice(router, table):
    w = vwatch(table, 1)
    router.on_watch_responses([events_resp([1], 2, 3), events_resp([1], 3, 4), bookmark([1], 4, h(2, 3, 4))])
    assert not w.canceled


def test_a_gap_ends_the_watch_with_stream_diverged(router, table):
    w = vwatch(table, 7)
    plain = Watch(None, 8, {"key": b"k", "watch_id": 8})
    plain._live = True
    table[8] = plain
    # The server says it sent 2, 3 and 4; this client saw 2 and 4 only.
    router.on_watch_responses([events_resp([7, 8], 2), events_resp([7, 8], 4), bookmark([7], 4, h(2, 3, 4)),
                               [[8], 4, [], False]])
    got = drain(w)
    err = got[-1]
    assert isinstance(err, StreamDiverged) and err.code == "STREAM_DIVERGED"
    assert err.details["watch_id"] == 7 and err.details["revision"] == 4
    assert err.details["server_hash"] == h(2, 3, 4).hex() and err.details["client_hash"] == h(2, 4).hex()
    assert "watch 7" in err.message and "revision 4" in err.message
    assert got[-2].canceled and got[-2].cancel_code == "STREAM_DIVERGED"
    assert 7 not in table and router.take_diverged() == [7]        # the session cancels it on the server
    assert not plain.canceled                                        # the others go on
    router.on_watch_responses([events_resp([7, 8], 5)])               # a late frame for it: ignored
    assert w.queue.empty()


def test_a_fragmented_revision_counts_once_joined(router, table):
    w = vwatch(table, 1)
    router.on_watch_responses([[[1], 3, [ev(3)], True], [[1], 3, [ev(3, b"k2")], False]])
    both = streamhash.to_bytes(streamhash.sum_events([ev(3), ev(3, b"k2")]))
    router.on_watch_responses([bookmark([1], 3, both)])
    assert not w.canceled


def test_shared_queue_verified_watches_keep_their_own_sums(router, table):
    q = queue.SimpleQueue()
    a, b = vwatch(table, 1, q), vwatch(table, 2, q)
    router.on_watch_responses([events_resp([1, 2], 2), bookmark([1], 2, h(2)), bookmark([2], 2, h(2))])
    assert not a.canceled and not b.canceled
    router.on_watch_responses([bookmark([2], 2, bytes(16))])
    assert b.canceled and not a.canceled


def test_a_plain_watch_ignores_a_hash(router, table):
    w = Watch(None, 1, {"key": b"k", "watch_id": 1})
    w._live = True
    table[1] = w
    router.on_watch_responses([events_resp([1], 2), bookmark([1], 2, bytes(16))])
    assert not w.canceled
