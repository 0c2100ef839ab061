"""A revision cut in fragments whose later piece the fan-out dropped unsent (a stuck session):
the watch resumes from that piece's first revision and the server sends it again whole, so
the client must drop the pieces of it it holds: else the application gets those events twice
and a verified watch's sum takes them in twice (a false StreamDiverged at its next bookmark)."""
from __future__ import annotations

import threading

from zwatch import streamhash
from zwatch.client import Watch, WatchRouter


def ev(rev: int, key: bytes) -> list:
    return [0, [key, 2, rev, 1, b"v" + key, 0]]


def _setup(verify: bool):
    table = {}
    router = WatchRouter(table, threading.Lock(), "test")
    body = {"key": b"k", "watch_id": 1}
    if verify:
        body["verify"] = True
    w = Watch(None, 1, body, None)
    w._live = True
    table[1] = w
    return router, w


def _keys(w) -> list:
    out = []
    while not w.queue.empty():
        out.extend((e.kv.mod_revision, e.kv.key) for e in w.queue.get_nowait().events)
    return out


def test_a_revision_replayed_whole_after_a_dropped_fragment_is_delivered_once():
    for verify in (False, True):
        router, w = _setup(verify)
        # Pieces: [3a, 3b, 4a] (sent), [4b, 4c] (dropped): the watch resumes at 4, sent again whole.
        router.on_watch_responses([[[1], 4, [ev(3, b"a"), ev(3, b"b"), ev(4, b"a")], True]])
        router.on_watch_responses([[[1], 4, [ev(4, b"a"), ev(4, b"b"), ev(4, b"c")], False]])
        assert _keys(w) == [(3, b"a"), (3, b"b"), (4, b"a"), (4, b"b"), (4, b"c")]
        if verify:
            sent = [ev(3, b"a"), ev(3, b"b"), ev(4, b"a"), ev(4, b"b"), ev(4, b"c")]
            assert w._vsum == streamhash.sum_events(sent) % streamhash.MOD
            # ... so the server's bookmark at 4 (its hash of exactly those events) matches.
            router.on_watch_responses([[[1], 4, [], False, {"hash": streamhash.to_bytes(streamhash.sum_events(sent))}]])
            assert router.diverged == 0


def test_a_continuation_piece_is_still_joined():
    router, w = _setup(True)
    router.on_watch_responses([[[1], 4, [ev(4, b"a"), ev(4, b"b")], True]])
    router.on_watch_responses([[[1], 4, [ev(4, b"c")], False]])
    assert _keys(w) == [(4, b"a"), (4, b"b"), (4, b"c")]
    assert w._vsum == streamhash.sum_events([ev(4, b"a"), ev(4, b"b"), ev(4, b"c")]) % streamhash.MOD


def test_fragments_held_before_a_resync_never_join_the_changes_after_its_state():
    """A fragment watch's revision 4 cut after its first piece (the next one dropped), then
    revision 4 compacted: an on_compacted resync (reset, state at 20, state_end).  The piece
    of 4 it held is not prepended to the first change after the state."""
    router, w = _setup(False)
    router.on_watch_responses([[[1], 4, [ev(4, b"a")], True]])
    router.on_watch_responses([[[1], 20, [], False, {"mark": "reset"}]])
    router.on_watch_responses([[[1], 20, [ev(7, b"a")], False, {"mark": "state"}]])
    router.on_watch_responses([[[1], 20, [], False, {"mark": "state_end"}]])
    _keys(w)
    router.on_watch_responses([[[1], 21, [ev(21, b"b")], False]])
    assert _keys(w) == [(21, b"b")]
