"""Graceful drain end to end (actors/fanout/drain.py, SPEC.md §3 goaway): 3 fan-outs, 300
watchers over 60 clients spread over all three (each client shuffles its endpoints), a writer
putting all along; one fan-out gets SIGTERM.  Every watcher goes on elsewhere without a lost or
repeated event (tools/checker.py over the store's history), the drained fan-out exits 0 once its
sessions left, and the watch creates the survivors receive are spread: the busiest 100 ms bucket
(fanout.stats `creates_max_100ms`) holds well under what arrives when every client moves at once
(the test fails with ZWATCH_DRAIN_CREATES_PER_100MS=0, i.e. delay_ms 0, or without the shuffle)."""
from __future__ import annotations

import os
import signal
import time

from zwatch import errors
from zwatch.tools import checker
from zwatch.tools.checker import StreamRecord, WatchSpec
from zwatch.tools.load import PutAllAlong, check_store_history, read_stream

CLIENTS, WATCHES, GROUPS = 60, 5, 10
DRAIN_S = 16.0
# Creates per 100 ms: delay_ms = (watches + sessions) x 100 / BUDGET (~6 s here: ~20 clients moving
# at random moments over 60 buckets x 2 survivors, so 4 clients in one bucket of one survivor is
# a ~0.4 % event, while moving all at once puts ~10 clients' creates in one or two buckets).  The ZW_TEST_*
# hooks exist to watch this test fail: ZW_TEST_DRAIN_BUDGET=0 (delay_ms 0), ZW_TEST_DRAIN_SHUFFLE=0.
BUDGET = int(os.environ.get("ZW_TEST_DRAIN_BUDGET", "2"))
SHUFFLE = os.environ.get("ZW_TEST_DRAIN_SHUFFLE", "1") == "1"


def test_sigterm_drains_a_fanout_without_loss_and_spreads_the_moves(make_cluster):
    cl = make_cluster(fanouts=3, env={"ZWATCH_DRAIN_S": str(DRAIN_S), "ZWATCH_DRAIN_CREATES_PER_100MS": str(BUDGET)})
    admin = cl.client([cl.fanout_eps[1]], timeout=30)
    start = admin.put("d/begin", "1").header.revision + 1
    clients, streams = [], []            # streams: (StreamRecord, watch, client)
    for i in range(CLIENTS):
        c = cl.client(cl.fanout_eps, timeout=30, heartbeat=0.5, name=f"drain-{i}", shuffle=SHUFFLE)
        clients.append(c)
        for j in range(WATCHES):
            g = (i + j) % GROUPS
            prefix = f"d/{g}/"
            w = c.watch(prefix, prefix=True, start_revision=start)
            streams.append((StreamRecord(f"c{i}.w{j}", WatchSpec(prefix.encode(), f"d/{g}0".encode(), start), []),
                            w, c, g))
    victim_ep = cl.fanout_eps[0]
    on_victim = [c for c in clients if c.endpoint == victim_ep]
    print(f"clients per fan-out: {[sum(c.endpoint == ep for c in clients) for ep in cl.fanout_eps]}")
    assert on_victim, "no client landed on fan-out 0 (shuffle)"

    writer = PutAllAlong(admin, lambda n: f"d/{n % GROUPS}/{n:06d}", 0.01, catch=errors.ZwatchError).start()
    time.sleep(1.0)
    victim = cl["fanout0"]
    victim.proc.send_signal(signal.SIGTERM)
    code = victim.proc.wait(DRAIN_S + 20)
    time.sleep(0.5)
    writer.stop()
    assert not writer.failures, writer.failures[:5]
    finals = {}
    for g in range(GROUPS):
        finals[g] = admin.put(f"d/{g}/end", "1").header.revision
    final = max(finals.values())

    draining = victim.events("fanout.draining")
    drained = victim.events("fanout.drained")
    print(f"draining: {draining}\ndrained: {drained}")
    assert code == 0, "".join(victim.raw[-20:])
    assert len(draining) == 1 and len(drained) == 1
    assert drained[0]["sessions_left"] == 0                 # every session left before drain_s
    assert drained[0]["took_s"] < DRAIN_S
    assert all(c.endpoint != victim_ep and c.moves == 1 for c in on_victim)

    for rec, w, c, g in streams:
        rec.final_revision = finals[g]
        assert read_stream(w, rec, finals[g], time.monotonic() + 60), \
            f"{rec.name} reached {checker.stream_reached(rec)} of {finals[g]}"
    dropped = sum(w.duplicates_dropped for _, w, _, _ in streams)

    # The creates the moves brought: the busiest 100 ms on each survivor, counted by the fan-out.
    t0 = draining[0]["timestamp"]
    deadline = time.monotonic() + 15          # stats lines covering the moves (every ZWATCH_STATS_S = 1 s)
    while any(sum(s["timestamp"] > drained[0]["timestamp"] for s in cl[n].events("fanout.stats")) < 2
              for n in ("fanout1", "fanout2")):
        assert time.monotonic() < deadline, "no fanout.stats lines after the drain"
        time.sleep(0.1)
    busiest = {name: max([s.get("creates_max_100ms", 0) for s in cl[name].events("fanout.stats")
                          if s["timestamp"] > t0] or [0]) for name in ("fanout1", "fanout2")}
    moved = sum(WATCHES for _ in on_victim)
    landed = [sum(c.endpoint == ep for c in on_victim) for ep in cl.fanout_eps[1:]]
    print(f"moved clients landed on the survivors: {landed}")
    print(f"{len(on_victim)} clients / {moved} watches moved; delay_ms {draining[0]['delay_ms']}; busiest 100 ms "
          f"on the survivors {busiest}; drained in {drained[0]['took_s']} s; duplicates the client dropped {dropped}")

    for c in clients:
        c.close()
    admin.close()
    cl.stop()
    res = check_store_history(cl.data_dir, [rec for rec, *_ in streams], acked=writer.acked, first=start, final=final)
    print(res.summary())
    assert res.ok, res.summary()
    # Spread: no survivor got the creates of 4 moving clients in one 100 ms (all at once, each
    # survivor gets about half of the ~100 moved creates in one or two buckets).
    assert max(busiest.values()) < 4 * WATCHES, busiest
    # and the moving clients did not all go to the same next fan-out (each shuffled its list).
    landed = [sum(c.endpoint == ep for c in on_victim) for ep in cl.fanout_eps[1:]]
    assert min(landed) >= len(on_victim) // 5, landed
