"""Issue #12.1: lag as a first-class figure.  A fan-out that was paused (SIGSTOP) while the writer
went on committing shows it in its next fanout.stats lines: the publishes it applies on waking
carry commit times from before its pause."""
from __future__ import annotations

import signal
import time

PAUSE_S = 2.0


def test_a_paused_fanout_shows_its_time_lag_in_fanout_stats(make_cluster):
    cl = make_cluster(fanouts=2, env={"ZWATCH_STATS_S": "1"})
    c = cl.client(endpoints=cl.fanout_eps[1:])         # writes through the other fan-out
    c.put("k", "v")
    paused = cl["fanout0"]
    paused.wait_event("fanout.stats", count=2)
    before = len(paused.events("fanout.stats"))
    assert all(s["time_lag_ms"] < 1000 for s in paused.events("fanout.stats")[1:])
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        puts = 0
        while time.monotonic() - t0 < PAUSE_S:
            c.put("k", f"v{puts}")
            puts += 1
            time.sleep(0.02)
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    revision = c.get("k").header.revision
    after = paused.wait_event("fanout.stats", count=before + 3)[before:]
    print(f"{puts} puts while paused; stats after SIGCONT: "
          f"{[(s['time_lag_ms'], s['time_lag_ms_max'], s['revision_lag'], s['writer_revision']) for s in after]}")
    worst = max(s["time_lag_ms_max"] for s in after)
    assert worst >= 0.7 * PAUSE_S * 1000, f"time lag {worst} ms after a {PAUSE_S} s pause"
    assert after[-1]["time_lag_ms"] < worst                      # it caught up: the lag fell again
    assert after[-1]["writer_revision"] >= revision and after[-1]["revision_lag"] == 0
    writer = cl["writer"].events("writer.stats")[-1]
    assert writer["commit_time"] > 0
    # Stats lines share a clock (AlignedEvery): each actor's lines carry the same `at` seconds.
    ats = {name: {s["at"] for s in cl[name].events(f"{name.rstrip('01')}.stats")}
           for name in ("writer", "syncer", "fanout0", "fanout1")}
    assert len(set.intersection(*ats.values())) >= 3, ats
