"""The DB size stays bounded under automatic compaction (issue #12): a writer with
auto-compaction on, puts of 4 KB values at a steady rate, a watcher checking the guarantees
(every revision once, in order, none missing), and the LMDB file's size sampled as it runs.

Compaction frees pages and LMDB reuses them before it grows the file, so the size reaches a
plateau: the size at the end must be at most PLATEAU_FACTOR times the size at 30 % of the run
(minute 3 of 10).  Without compaction the file would grow linearly (4 KB a put, about 240 MB in
the 10 minutes at 100 puts/s); the test prints the sizes it sampled.

`test_compaction_soak_10_minutes` is marked slow (`pytest -m slow`); the 20-second version with
a small retention runs in CI.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

PLATEAU_FACTOR = 1.5
VALUE = b"v" * 4096


def _size(data_dir: str) -> int:
    return os.path.getsize(os.path.join(data_dir, "data.mdb"))


def soak(cl, duration_s: float, rate: float, sample_every_s: float):
    c = cl.client()
    first = c.put("soak/0", VALUE).header.revision
    w = c.watch("soak/", prefix=True, start_revision=first)
    got: list[int] = []
    problems: list[str] = []

    def watcher():
        while True:
            resp = w.get(timeout=30)
            if resp is None or resp.canceled:
                if resp is not None or not stop.is_set():
                    problems.append(f"watch ended: {resp}")
                return
            for e in resp.events:
                rev = e.kv.mod_revision
                if got and rev != got[-1] + 1:          # one put per revision, all on this prefix
                    problems.append(f"revision {rev} after {got[-1]}")
                if e.kv.value != VALUE:
                    problems.append(f"revision {rev}: wrong value")
                got.append(rev)

    stop = threading.Event()
    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    samples: list[tuple[float, int, int]] = []   # (seconds since start, file size, revision)
    t0 = time.monotonic()
    next_sample, n, last = t0, 1, first
    while (now := time.monotonic()) - t0 < duration_s:
        if now >= next_sample:
            samples.append((round(now - t0, 1), _size(cl.data_dir), last))
            print(f"t={now - t0:6.1f}s revision={last} db_size={samples[-1][1] / 1e6:.2f} MB", flush=True)
            next_sample += sample_every_s
        last = c.put(f"soak/{n % 50}", VALUE).header.revision
        n += 1
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    samples.append((round(time.monotonic() - t0, 1), _size(cl.data_dir), last))
    deadline = time.monotonic() + 60
    while (not got or got[-1] < last) and time.monotonic() < deadline and not problems:
        time.sleep(0.1)
    stop.set()
    w.cancel()
    assert not problems, problems[:5]
    assert got and got[0] == first and got[-1] == last and len(got) == last - first + 1, (got[:3], got[-3:], last)
    return samples, last - first


def check_plateau(cl, samples, revisions):
    at_30 = min(samples, key=lambda s: abs(s[0] - samples[-1][0] * 0.3))
    end = samples[-1]
    compacted = cl["writer"].events("writer.compacted")
    print(f"{revisions} revisions of 4 KB ({revisions * 4096 / 1e6:.0f} MB written); "
          f"db_size at {at_30[0]} s: {at_30[1] / 1e6:.2f} MB, at the end ({end[0]} s): {end[1] / 1e6:.2f} MB; "
          f"{len(compacted)} compactions, last: {compacted[-1] if compacted else None}")
    assert compacted and all(e["trigger"] == "auto" for e in compacted)
    assert end[1] <= at_30[1] * PLATEAU_FACTOR, (at_30, end)
    assert end[1] < revisions * 4096 / 2          # far below what the history would take


def test_compaction_soak_20_seconds(make_cluster):
    cl = make_cluster(env={"ZWATCH_AUTO_COMPACTION_MODE": "revision", "ZWATCH_AUTO_COMPACTION_RETENTION": "200",
                           "ZWATCH_AUTO_COMPACTION_INTERVAL_S": "0.5", "ZWATCH_STATS_S": "5"})
    samples, revisions = soak(cl, duration_s=20, rate=100, sample_every_s=2)
    check_plateau(cl, samples, revisions)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compaction_soak_10_minutes(make_cluster):
    cl = make_cluster(env={"ZWATCH_AUTO_COMPACTION_MODE": "periodic", "ZWATCH_AUTO_COMPACTION_RETENTION": "30s"})
    samples, revisions = soak(cl, duration_s=600, rate=100, sample_every_s=30)
    check_plateau(cl, samples, revisions)
