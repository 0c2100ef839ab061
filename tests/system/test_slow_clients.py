"""Slow and dead consumers: bounded per-session output, victims, nobody else waits."""
from __future__ import annotations

import time

import msgpack

from zwatch.tools.cluster import raw_session

from support import collect, revs


def _stalled_session(endpoint: str, key: bytes, n_watches: int = 5):
    """A client that says hello, creates watches, then never reads again (nor acks)."""
    s = raw_session(endpoint, RCVHWM=1, RCVBUF=4096)
    for i in range(n_watches):
        s.send(msgpack.packb(["watch_create", 2 + i, {"key": key, "watch_id": i + 1}]))
    return s


def test_stalled_session_does_not_delay_others_and_output_stays_bounded(make_cluster):
    window = 1 << 20
    cl = make_cluster(env={"ZWATCH_SESSION_WINDOW_BYTES": str(window), "ZWATCH_IDLE_TIMEOUT_S": "60"})
    stalled = _stalled_session(cl.fanout_eps[0], b"hot")
    c = cl.client()
    w = c.watch("hot")
    time.sleep(0.3)
    value = "x" * 20_000
    n = 400                                   # 400 x 20 KB x 5 watches = 40 MB meant for the stalled one
    for i in range(n):
        c.put("hot", value)
    got = collect(w, n, timeout=60)
    assert revs(got) == list(range(2, 2 + n))  # the healthy session got every event, in order
    time.sleep(1.5)
    stats = cl["fanout0"].events("fanout.stats")
    assert sum(s["victims"] for s in stats) >= 1, "the stalled session never became a victim"
    worst = max(s["max_inflight_bytes"] for s in stats)
    # Watch frames stay within the window; replies need no credit and pass them (the healthy
    # client acks only what it consumed, and it reads w only after its 400 puts): ~100 bytes each.
    replies = 64 * 1024
    assert worst <= window + replies, f"{worst} bytes in flight to one session, window {window}"
    assert cl["fanout0"].events("watch.victim")
    stalled.close()


def test_silent_session_is_closed_and_its_watchers_freed(make_cluster):
    cl = make_cluster(env={"ZWATCH_IDLE_TIMEOUT_S": "1"})
    stalled = _stalled_session(cl.fanout_eps[0], b"k", n_watches=3)
    closed = cl["fanout0"].wait_event("session.close", timeout=10)
    assert closed[0]["reason"] == "idle_timeout"
    time.sleep(1.2)
    last = cl["fanout0"].events("fanout.stats")[-1]
    assert last["watchers"] == 0 and last["sessions"] == 0
    stalled.close()
