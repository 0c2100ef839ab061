"""What several test modules share: watch collectors, raw wire sessions, free ports.

No test module imports another test module; they import this one (pytest puts tests/ on
sys.path because tests/conftest.py lives there).
"""
from __future__ import annotations

import queue
import time

import msgpack
import zmq

from zwatch.tools.cluster import free_port, raw_session  # noqa: F401  (re-exported for tests)


def collect(w, n_events, timeout=10.0):
    """Events of a watch until n_events arrived; asserts Atomic/Ordered per response on the way."""
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < n_events:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(events)} of {n_events} events: {events}")
        try:
            r = w.get(timeout=left)
        except queue.Empty:
            continue
        if r is None:
            raise AssertionError(f"watch ended after {len(events)} events ({w.cancel_reason})")
        events.extend(r.events)
    return events


def no_more(w, wait=0.4):
    try:
        r = w.get(timeout=wait)
    except queue.Empty:
        return True
    assert r is None or not r.events, f"unexpected response {r}"
    return True


def revs(events):
    return [e.kv.mod_revision for e in events]


def pipelined_watches(endpoint: str, n: int, body: dict, first_id: int = 1, sock=None):
    """Create n watches at once on one raw session (no waiting between creates)."""
    s = sock if sock is not None else raw_session(endpoint)
    for i in range(n):
        s.send(msgpack.packb(["watch_create", 10 + i, dict(body, watch_id=first_id + i)]))
    return s


def drain_counting(sock, until, timeout=30.0):
    """Read (and ack) a raw session until until() holds; returns events received per watch id."""
    received = 0
    per_watch: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while not until(per_watch) and time.monotonic() < deadline:
        if not sock.poll(100):
            continue
        raw = sock.recv()
        received += len(raw)
        kind, _, body = msgpack.unpackb(raw, raw=False)
        if kind == "w":
            for r in body:
                if isinstance(r, list):
                    for wid in r[0]:
                        per_watch[wid] = per_watch.get(wid, 0) + len(r[2])
        sock.send(msgpack.packb(["ack", 0, {"bytes": received}]), zmq.NOBLOCK)
    return per_watch


def bare_dealer(endpoint: str, **sockopts):
    """A DEALER connected to endpoint that has said nothing (no hello): for tests that send
    malformed or out-of-order frames themselves.  sockopts: zmq option name -> value."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    for name, value in sockopts.items():
        s.setsockopt(getattr(zmq, name), value)
    s.connect(endpoint)
    return s
