"""Actors die under load; clients resume with every guarantee intact."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from zwatch import errors

from support import collect, retry_unavailable, revs


class Writer(threading.Thread):
    """Puts on a few keys until stopped; remembers what was acknowledged."""

    def __init__(self, client, prefix="f/", keys=5, pause=0.002):
        super().__init__(daemon=True)
        self.client, self.prefix, self.keys, self.pause = client, prefix, keys, pause
        self.acked: dict[int, bytes] = {}
        self.halt = threading.Event()

    def run(self):
        i = 0
        while not self.halt.is_set():
            key = f"{self.prefix}{i % self.keys}"
            try:
                self.acked[self.client.put(key, str(i)).header.revision] = key.encode()
            except errors.ZwatchError:
                time.sleep(0.05)                     # unacknowledged; the writer may be restarting
            i += 1
            time.sleep(self.pause)

    def stop(self):
        self.halt.set()
        self.join(15)


def check_stream(events, start, final_rev, client, prefix=b"f/"):
    """The stream is exactly the store's history of the prefix from start: no gap, no dup, in order."""
    got = revs(events)
    assert got == sorted(got) and len(got) == len(set(got)), "out of order or duplicated"
    # Every revision of this test is a single put on the prefix: the stream must hold them all.
    expected = [r for r in range(start, final_rev + 1)]
    assert got == expected, f"gap: missing {sorted(set(expected) - set(got))[:10]}"
    for e in events[-5:]:
        kv = client.get(e.kv.key, revision=e.kv.mod_revision).kvs[0]
        assert kv.value == e.kv.value


def test_client_survives_its_fanout_sigkill(make_cluster):
    cl = make_cluster(fanouts=2)
    eps = cl.fanout_eps
    watcher_client = cl.client(eps, heartbeat=0.3, shuffle=False)   # starts on eps[0]
    writer_client = cl.client([eps[1]])
    w = watcher_client.watch("f/", prefix=True)
    start = writer_client.get("x").header.revision + 1
    writer = Writer(writer_client)
    writer.start()
    time.sleep(0.5)
    cl["fanout0"].kill(signal.SIGKILL)                       # the watcher's fan-out dies
    time.sleep(1.5)
    writer.stop()
    final = max(writer.acked)
    events = collect(w, final - start + 1, timeout=20)
    check_stream(events, start, final, writer_client)
    assert watcher_client.failovers >= 1 and watcher_client.endpoint == eps[1]


@pytest.mark.parametrize("victim", ["fanout0", "writer"])
def test_restart_under_load_loses_no_ack_and_no_event(make_cluster, victim):
    """A fan-out restarted on the same address (the client opens a new session there), or the
    writer (it continues the revision sequence; the fan-out detects any publish gap)."""
    cl = make_cluster()
    c = cl.client(heartbeat=0.3)
    w = c.watch("f/", prefix=True, start_revision=1)
    writer = Writer(c)
    writer.start()
    time.sleep(0.4)
    cl.restart(victim, signal.SIGKILL)
    time.sleep(1.5)
    writer.stop()
    final = c.get("x").header.revision
    for rev, key in writer.acked.items():                    # every ack is in the store as acked
        assert c.get(key, revision=rev).kvs[0].mod_revision == rev
    check_stream(collect(w, final - 1, timeout=20), 2, final, c)


def test_syncer_sigkill_while_watchers_catch_up(make_cluster):
    cl = make_cluster(env={"ZWATCH_RING_REVISIONS": "5", "ZWATCH_SYNC_CHUNK_REVISIONS": "50"})
    c = cl.client(heartbeat=0.3)
    for i in range(600):
        c.put(f"f/{i % 5}", str(i))
    ws = [c.watch("f/", prefix=True, start_revision=s) for s in (2, 100, 300)]
    cl.restart("syncer", signal.SIGKILL)                     # mid-replay, most likely
    c.put("f/0", "after")
    final = c.get("x").header.revision
    for w, s in zip(ws, (2, 100, 300)):
        check_stream(collect(w, final - s + 1, timeout=30), s, final, c)


@pytest.mark.parametrize("victim", ["fanout0", "syncer", "writer"])
def test_actors_reconnect_to_restarted_peers(make_cluster, victim):
    cl = make_cluster()
    c = cl.client(heartbeat=0.3)
    w = c.watch("p/", prefix=True)
    c.put("p/1", "a")
    cl.restart(victim, signal.SIGKILL)
    retry_unavailable(lambda: c.put("p/2", "b"), 15, 0.2)    # the first write after a restart may race
    assert [e.kv.key for e in collect(w, 2, timeout=15)] == [b"p/1", b"p/2"]
