"""tools/bench/drain.py at a small size: the measurement runs end to end (a real cluster, one
fan-out drained) and reports what docs/performance.md shows: the drained fan-out exits 0 with no
session left, every moved client is elsewhere, no event lost or duplicated, figures present."""
from zwatch.tools.bench.drain import run_once


def test_drain_measurement_small():
    r = run_once(watchers=60, clients=9, budget=250, drain_s=10.0)
    print(r)
    assert r["exit_code"] == 0 and r["sessions_left"] == 0
    assert r["clients_moved"] > 0 and r["move_s"] is not None
    assert r["guarantees_ok"] and r["lost"] == 0 and r["duplicated"] == 0 and r["put_failures"] == 0, r
    assert set(r["max_creates_per_100ms"]) == {"fanout1", "fanout2"}
    assert sum(r["max_creates_per_100ms"].values()) > 0      # the moved watches were counted somewhere
