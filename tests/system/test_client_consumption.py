"""Issue #14: the client acknowledges what the application consumed; callback-style watches.

A sleeping consumer used to make its client grow without limit (20,605 responses, 315 MiB in
50 s) while the fan-out saw a healthy session: the client acked bytes when its I/O thread
received them.  Now the fan-out's window bounds what the client holds unconsumed, a consumer
that stays slow turns into victims (the fan-out logs watch.victim) that catch up from history,
and the stream stays complete, ordered and free of duplicates.
"""
from __future__ import annotations

import threading
import time

import pytest

import zwatch
from zwatch.actors.fanout.sessions import FRAME_BYTES

# What may come beyond the window: one frame, which the fan-out always lets go once everything
# before it was acknowledged (SPEC.md "ack"): live frames are cut at FRAME_BYTES, but a
# catch-up response from history is one syncer chunk (ZWATCH_SYNC_CHUNK_BYTES, 1 MiB) whole.
ONE_FRAME = max(FRAME_BYTES, 1 << 20)

from support import Consumer, revs

VALUE = "v" * 16_000


def _sleeping_consumer(w, per_response_s: float, n_events: int, timeout: float = 60.0):
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < n_events and time.monotonic() < deadline:
        try:
            r = w.get(timeout=0.5)
        except Exception:
            continue
        if r is None:
            break
        events.extend(r.events)
        time.sleep(per_response_s)
    return events


def test_a_sleeping_consumer_is_flow_control_not_a_growing_client(make_cluster):
    window = 1 << 20
    cl = make_cluster(env={"ZWATCH_SESSION_WINDOW_BYTES": str(window), "ZWATCH_STALL_S": "1"})
    writer, reader = cl.client(), cl.client()
    w = reader.watch("slow/", prefix=True)
    start = writer.put("begin", "1").header.revision + 1
    n = 240                                              # 3.8 MB for a reader that takes 50 ms each
    for i in range(n):
        writer.put(f"slow/{i % 10}", VALUE)
    got = _sleeping_consumer(w, 0.02, n)
    assert revs(got) == list(range(start, start + n))    # complete, ordered, no duplicate
    # What the client held unconsumed stayed within the window (plus the one frame that may
    # always go): without acking on consumption it would have held all 3.8 MB.
    assert reader.max_buffered_seen <= window + ONE_FRAME + len(VALUE) + 200, reader.max_buffered_seen
    assert reader.buffered_bytes == 0
    # ... because the fan-out held back and, the consumer staying slow, made the watch a victim
    assert cl["fanout0"].events("watch.victim"), "the fan-out never saw the slow consumer"
    assert reader.duplicates_dropped == 0


def test_max_buffered_bytes_bounds_the_client_below_the_window(make_cluster):
    cl = make_cluster()                                   # the default 8 MiB window
    bound = 256 * 1024
    writer, reader = cl.client(), cl.client(max_buffered_bytes=bound)
    w = reader.watch("slow/", prefix=True)
    start = writer.put("begin", "1").header.revision + 1
    n = 120                                               # 1.9 MB
    for i in range(n):
        writer.put(f"slow/{i % 10}", VALUE)
    got = _sleeping_consumer(w, 0.01, n)
    assert revs(got) == list(range(start, start + n))
    assert reader.session_info["window_bytes"] == bound    # asked for in its hello
    assert reader.max_buffered_seen <= bound + ONE_FRAME + len(VALUE) + 200, reader.max_buffered_seen
    assert reader.max_buffered_seen < 1.5 * (1 << 20)       # the 8 MiB window would have let 1.9 MB in


def test_an_unread_canceled_watch_gives_its_credit_back(make_cluster):
    """A watch the application stops reading and cancels must not hold the session's window:
    the other watch of the client keeps receiving."""
    window = 256 * 1024
    cl = make_cluster(env={"ZWATCH_SESSION_WINDOW_BYTES": str(window)})
    writer, reader = cl.client(), cl.client()
    unread = reader.watch("a/", prefix=True)
    for i in range(40):                                   # 640 KB nobody reads
        writer.put(f"a/{i}", VALUE)
    deadline = time.monotonic() + 10
    while reader.buffered_bytes < window // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.buffered_bytes >= window // 2
    unread.cancel()
    assert reader.buffered_bytes == 0
    other = Consumer(reader.watch("b/", prefix=True))
    start = writer.put("b/0", VALUE).header.revision
    for i in range(1, 20):
        writer.put(f"b/{i}", VALUE)
    assert revs(other.collect(20, timeout=20)) == list(range(start, start + 20))


def test_watch_callbacks_are_called_in_order_and_stop_when_canceled(make_cluster):
    cl = make_cluster()
    c = cl.client()
    seen, prefix_seen, calls = [], [], threading.Event()

    def on_key(resp):
        seen.extend(e.kv.mod_revision for e in resp.events)
        calls.set()

    def on_prefix(resp):
        prefix_seen.extend((e.kv.key, e.kv.mod_revision) for e in resp.events)

    def broken(resp):
        raise RuntimeError("an application bug")

    key_id = c.add_watch_callback("cb/k", on_key)
    prefix_id = c.add_watch_prefix_callback("cb/", on_prefix)
    c.add_watch_callback("cb/k", broken)                  # logged; the dispatcher goes on
    assert key_id != prefix_id
    revisions = [c.put("cb/k", str(i)).header.revision for i in range(5)]
    other = c.put("cb/other", "x").header.revision
    deadline = time.monotonic() + 10
    while len(prefix_seen) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == revisions
    assert prefix_seen == [(b"cb/k", r) for r in revisions] + [(b"cb/other", other)]
    c.cancel_watch(key_id)
    c.put("cb/k", "after")
    time.sleep(0.5)
    assert seen == revisions                              # no call after cancel_watch returned
    assert len(prefix_seen) == 7


def test_a_callback_watch_from_a_compacted_revision_gets_compacted(make_cluster):
    cl = make_cluster()
    c = cl.client()
    for i in range(5):
        rev = c.put("cc/k", str(i)).header.revision
    c.compact(rev)
    got = []
    done = threading.Event()

    def on(resp_or_error):
        got.append(resp_or_error)
        done.set()

    c.add_watch_callback("cc/k", on, start_revision=2)
    assert done.wait(10)
    (err,) = got
    assert isinstance(err, zwatch.Compacted) and err.details["compact_revision"] == rev


def test_client_shuffles_its_endpoints_by_default():
    import inspect
    assert inspect.signature(zwatch.Client).parameters["shuffle"].default is True


def test_a_hello_window_is_clamped_between_64_KiB_and_the_fanouts(make_cluster):
    """A client cannot make its window absurd: 1 byte would only make every frame wait for the
    one-frame rule, 2^62 would lift the fan-out's bound on what it buffers for the session."""
    import msgpack
    import zmq
    window = 1 << 20
    cl = make_cluster(env={"ZWATCH_SESSION_WINDOW_BYTES": str(window)})
    for asked, told in ((1, 64 * 1024), (1 << 62, window), (300_000, 300_000)):
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(cl.fanout_eps[0])
        s.send(msgpack.packb(["hello", 1, {"version": 1, "window_bytes": asked}]))
        assert s.poll(5000)
        kind, _, body = msgpack.unpackb(s.recv(), raw=False)
        s.close()
        assert kind == "ok" and body["window_bytes"] == told, (asked, body)
