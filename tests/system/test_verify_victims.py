"""A verified stream through a slow consumer (SPEC.md 7.6 and 7.10): the fan-out drops its frames,
makes it a victim and replays from its first lost revision; the hash must go back exactly to the
events before that revision, so the bookmark after the replay still matches history."""
from __future__ import annotations

import queue
import time

from support import revs

VALUE = "v" * 16_000


def test_a_victims_replay_keeps_the_stream_hash_exact(make_cluster):
    cl = make_cluster(env={"ZWATCH_SESSION_WINDOW_BYTES": str(1 << 20), "ZWATCH_STALL_S": "1",
                           "ZWATCH_RING_REVISIONS": "20"})
    writer, reader = cl.client(), cl.client()
    w = reader.watch("slow/", prefix=True, verify=True)
    start = w._vstart
    n = 240                                   # 3.8 MB for a reader that does not read at first
    for i in range(n):
        writer.put(f"slow/{i % 10}", VALUE)
    time.sleep(2.5)                           # held beyond ZWATCH_STALL_S: its frames are dropped
    got, mark = [], None
    deadline = time.monotonic() + 60
    while mark is None and time.monotonic() < deadline:
        try:
            r = w.get(timeout=0.5)
        except queue.Empty:
            if len(got) >= n:
                reader.request_progress()
            continue
        assert r is not None, f"watch ended: {w.cancel_reason} {w.error!r}"
        got.extend(r.events)
        if r.stream_hash is not None and r.header.revision >= start + n - 1:
            mark = r
    assert revs(got) == list(range(start, start + n))
    assert cl["fanout0"].events("watch.victim"), "the slow consumer never became a victim"
    assert mark is not None, "no verified bookmark after the replay"
    h = writer.watch_hash("slow/", prefix=True, start_revision=mark.stream_start, revision=mark.header.revision)
    assert (h.hash, h.events) == (mark.stream_hash, n)
