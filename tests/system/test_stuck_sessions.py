"""Issue #12.6: a stuck session costs nothing to others.

The bug: one session that never acks made the syncer rescan history every few seconds (its
watchers became victims, their retries registered them with the syncer again, the catch-up
stalled again on no credit, victims again: records scanned per 10 s grew from 1,257 to 76,252).
Now its victims wait for an ack before the syncer replays for them, and the session is closed
after ZWATCH_STUCK_SESSION_S without ack progress.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime

import msgpack
import zmq

from zwatch.tools.cluster import raw_session

from support import Consumer, revs

STUCK_S = 8.0


def _never_acks(endpoint: str, key: bytes, start: int, stop: threading.Event, pings: list):
    """Reads everything, acks nothing, pings (so that it is not idle): until stop or closed."""
    s = raw_session(endpoint)
    s.send(msgpack.packb(["watch_create", 2, {"key": key, "watch_id": 1, "start_revision": start}]))
    n = 10
    next_ping = 0.0
    while not stop.is_set():
        if s.poll(50):
            while True:
                try:
                    s.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
        if time.monotonic() >= next_ping:
            n += 1
            s.send(msgpack.packb(["ping", n, {}]))
            pings.append(n)
            next_ping = time.monotonic() + 0.3
    s.close()


def test_a_session_that_never_acks_does_not_make_the_syncer_rescan_history_forever(make_cluster):
    cl = make_cluster(env={"ZWATCH_SESSION_WINDOW_BYTES": str(64 << 10), "ZWATCH_STALL_S": "0.2",
                           "ZWATCH_RING_REVISIONS": "10", "ZWATCH_IDLE_TIMEOUT_S": "60",
                           "ZWATCH_STUCK_SESSION_S": str(STUCK_S), "ZWATCH_STATS_S": "1"})
    c = cl.client()
    value = "x" * 2000
    history = 300                                # ~600 KB of history: ten windows' worth
    for _ in range(history):
        c.put("hot", value)
    live = Consumer(c.watch("hot"))              # a well-behaved watcher, from now: read as it comes
    time.sleep(0.3)
    stop, pings = threading.Event(), []
    stuck = threading.Thread(target=_never_acks, args=(cl.fanout_eps[0], b"hot", 2, stop, pings), daemon=True)
    stuck.start()
    puts = 0
    fanout, syncer = cl["fanout0"], cl["syncer"]
    try:
        t0 = time.monotonic()
        # The writer keeps putting while the session is stuck, until the fan-out closes it.
        while not [e for e in fanout.events("session.close") if e["reason"] == "stuck"]:
            assert time.monotonic() - t0 < 60, "the stuck session was never closed:\n" + cl.dump_logs()
            c.put("hot", value)
            puts += 1
            time.sleep(0.05)
        took = time.monotonic() - t0
        for _ in range(20):                      # and after: the others go on as before
            c.put("hot", value)
            puts += 1
        got = live.collect(puts, timeout=30)
        assert revs(got) == list(range(history + 2, history + 2 + puts))    # every event, in order
    finally:
        stop.set()
        stuck.join(5)
    victims = fanout.events("watch.victim")
    assert victims, "the session never became a victim: the test did not make it stuck"
    (warning,) = fanout.events("fanout.session_stuck")
    assert warning["unacked_bytes"] > 0 and warning["stuck_s"] >= STUCK_S
    # Records the syncer scanned once the session was stuck (its first victim, plus a second for
    # the lines in flight): the replays of its victims.  Before the fix, every back-off (0.1 s
    # doubling to 5 s) rescanned its history from where it stopped: several hundred records
    # each time, growing with the time it stayed stuck.
    stats = syncer.events("syncer.stats")
    scanned = [s["records_scanned"] for s in stats]
    print(f"stuck session closed after {took:.1f} s, {len(victims)} watch.victim lines, {puts} puts; "
          f"syncer records scanned per stats line: {scanned}")
    after = sum(s["records_scanned"] for s in stats if _t(s) > _t(victims[0]) + 2.0)
    assert after <= history, f"the syncer rescanned {after} records for a session that never acks: {scanned}"
    assert pings, "the stuck session did not ping: it would have been closed as idle"
    # The syncer's batch for it names its fan-out and session, and how far behind it started.
    batch = syncer.events("sync.batch")[0]
    assert batch["fanouts"] == [fanout.events("fanout.start")[0]["instance"]]
    assert batch["sessions"] == 1 and len(batch["session_names"]) == 1
    assert batch["lag_revisions"] >= history - 10
    assert batch["lag_s"] > 0                      # its start revision's age, from the time index


def _t(line: dict) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
