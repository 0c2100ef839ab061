"""The multi-host test (tools/multihost.py): writer+syncer on host A, fan-outs on B and C, client
workers on D and E, each host a network namespace joined by tools/netlab.py's userspace router;
delay, loss and partitions on the links with load running, a fan-out and the writer's host
killed, then every guarantee checked over the store's history.

`pytest -m multihost` runs both; CI runs the short one (it is not `slow`).  Needs root, iproute2
and /dev/net/tun: skipped with the reason otherwise.  Asserts counts, never wall-clock times:
0 acknowledged writes lost, 0 violations, every watch resumed, and that every fault was felt
(packets delayed / dropped on the link, clients moved, fan-outs cut off), so that a fault that
did nothing fails the test."""
from __future__ import annotations

import os
import subprocess

import pytest

from zwatch.tools import multihost
from zwatch.tools.netlab import NS_PREFIX, Lab

OK, WHY = Lab.available()
pytestmark = [pytest.mark.multihost, pytest.mark.skipif(not OK, reason=WHY or "namespaces available")]


def run_and_check(cfg: multihost.Config) -> dict:
    rep = multihost.run(cfg)
    print()
    print(multihost.format_table(rep))
    c = rep["check"]
    assert c["acked_writes"] > 100 and c["watch_responses"] > 100, c
    assert c["acked_lost"] == 0, c["violation_list"]
    assert c["violations"] == 0, c["violation_list"]
    assert c["watches_resumed"] == c["watches"], c
    steps = {s["step"]: s for s in rep["steps"]}
    for s in steps.values():
        done, total = s["watches_at_head"].split("/")
        assert done == total and s["recover_s"] is not None, s
        assert s["acked_lost"] == 0, s
    # Every fault was felt.
    assert steps["baseline"]["packets_dropped"] == 0 and steps["baseline"]["packets_delayed"] == 0
    assert steps["delay A-B"]["packets_delayed"] > 0, steps["delay A-B"]
    assert steps["loss A-B"]["packets_dropped"] > 0, steps["loss A-B"]
    p = steps["partition A|B"]
    assert p["packets_dropped"] > 0 and p["upstream_lost"] >= 1 and p["goaways"] + p["failovers"] >= 1, p
    p = steps["partition D|B"]
    assert p["packets_dropped"] > 0 and p["failovers"] + p["goaways"] >= 1, p
    p = steps["partition D|B,C"]
    assert p["packets_dropped"] > 0 and p["failovers"] >= 1 and p["write_failures"] >= 1, p
    p = steps["B killed"]
    assert p["packets_dropped"] > 0 and p["upstream_lost"] >= 1, p
    p = steps["A down"]
    assert p["packets_dropped"] > 0 and p["upstream_lost"] >= 2 and p["write_failures"] >= 1, p
    ours = f"{NS_PREFIX}{os.getpid()}-"                 # Lab.close left no namespace of this run
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert [ns for ns in listed if ns.startswith(ours)] == []
    return rep


@pytest.mark.timeout(400)
def test_multihost_short():
    run_and_check(multihost.Config(seconds_per_step=3.0, short=True))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_multihost_full():
    run_and_check(multihost.Config(seconds_per_step=10.0, seed=2))
