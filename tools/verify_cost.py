"""The CPU cost of verified streams (SPEC.md 7.10), per event, measured in-process on the real
code paths (no sockets): the digest itself, the fan-out core's delivery (plain vs verified, one
watcher and a group), and the client's WatchRouter (plain vs verified).

    python -m zwatch.tools.verify_cost [--events 20000] [--group 100]

Prints microseconds per event (best of 3 runs); docs/design.md quotes its output.
"""
from __future__ import annotations

import argparse
import threading
import time

from zwatch import streamhash
from zwatch.actors.fanout.core import FanoutCore
from zwatch.actors.fanout.model import Session
from zwatch.client import Watch, WatchRouter

VALUE = b"x" * 100


def _best(fn, runs=3) -> float:
    best = None
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        dt = time.process_time() - t0
        best = dt if best is None or dt < best else best
    return best


def digest_us(n: int) -> float:
    kvs = [[b"key/%08d" % i, 2, i + 2, 1, VALUE, 0] for i in range(n)]
    return _best(lambda: [streamhash.digest(0, kv) for kv in kvs]) / n * 1e6


def fanout_us(n: int, watchers: int, verify: bool) -> float:
    """One publish per revision (one put) to `watchers` watchers of one key in one session."""
    def run():
        core = FanoutCore()
        core.on_publish(1, 1, [], 0)
        s = Session(b"s", "s")
        for wid in range(1, watchers + 1):
            core.watch_create(s, wid, {"key": b"k", "watch_id": wid, "verify": verify})
        core.take_output()
        for rev in range(2, n + 2):
            core.on_publish(rev - 1, rev, [[rev, [[0, [b"k", 2, rev, rev - 1, VALUE, 0], None]]]], 0)
            if rev % 1000 == 0:
                core.take_output()
    return _best(run) / n * 1e6


def client_us(n: int, verify: bool) -> float:
    """A WatchRouter handing n one-event responses to one watch (its queue drained as it goes)."""
    resps = [[[1], rev, [[0, [b"k", 2, rev, rev - 1, VALUE, 0]]], False] for rev in range(2, n + 2)]

    def run():
        table = {}
        w = Watch(None, 1, {"key": b"k", "watch_id": 1, "verify": verify})
        w._live = True
        table[1] = w
        router = WatchRouter(table, threading.Lock(), "cost")
        for i in range(0, n, 100):
            router.on_watch_responses(resps[i:i + 100])
            while not w.queue.empty():
                w.queue.get()
    return _best(run) / n * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zwatch.tools.verify_cost", description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--group", type=int, default=100)
    a = ap.parse_args(argv)
    n = a.events
    print(f"digest (blake2b-128 of a 100-byte-value event): {digest_us(n):.2f} us/event")
    for watchers in (1, a.group):
        p, v = fanout_us(n, watchers, False), fanout_us(n, watchers, True)
        print(f"fan-out delivery, {watchers} watcher(s) of one key: plain {p:.2f} us/event, verified {v:.2f} "
              f"us/event (+{v - p:.2f})")
    p, v = client_us(n, False), client_us(n, True)
    print(f"client WatchRouter, one watch: plain {p:.2f} us/event, verified {v:.2f} us/event (+{v - p:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
