"""The link emulator's pure logic (tools/netlab.py Links): rules per directed link, delay order,
jitter, loss and cut counters, routing by destination address; no namespaces, no TUN."""
from __future__ import annotations

import random

from zwatch.tools.netlab import Links, Rule, sweep, _NS_RE


def packet(dst: str, n: int = 0) -> bytes:
    """A minimal IPv4 header to `dst` (the router reads only the version and the destination)."""
    return bytes([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 1, 1, 9]) + bytes(map(int, dst.split("."))) + bytes([n])


def links(seed: int = 1) -> Links:
    lk = Links(rng=random.Random(seed))
    for i, h in enumerate("abc", 1):
        lk.route[bytes([10, 1, 1, i])] = h
    return lk


def test_no_rule_forwards_at_once_and_counts():
    lk = links()
    assert lk.submit("a", packet("10.1.1.2"), now=5.0) == 5.0
    assert [(s, d) for s, d, _p in lk.pop_due(5.0)] == [("a", "b")]
    assert lk.snapshot()["a>b"] == {"forwarded": 1, "lost": 0, "cut": 0, "delayed": 0, "bytes": 21}


def test_rules_are_per_directed_link():
    lk = links()
    lk.set_rule("a", "b", Rule(down=True))
    assert lk.submit("a", packet("10.1.1.2"), 0.0) is None         # a->b cut
    assert lk.submit("b", packet("10.1.1.1"), 0.0) == 0.0           # b->a still open
    assert lk.submit("a", packet("10.1.1.3"), 0.0) == 0.0           # a->c untouched
    assert lk.stats[("a", "b")].cut == 1 and lk.stats[("b", "a")].cut == 0
    lk.set_rule("a", "b", Rule())                                   # heal: a clear rule is removed
    assert ("a", "b") not in lk.rules
    assert lk.submit("a", packet("10.1.1.2"), 0.0) == 0.0


def test_delay_orders_by_due_time_and_holds_packets_until_due():
    lk = links()
    lk.set_rule("a", "b", Rule(delay_ms=20))
    lk.submit("a", packet("10.1.1.2", 1), 0.000)
    lk.submit("c", packet("10.1.1.2", 2), 0.005)                    # c->b has no delay: due first
    lk.submit("a", packet("10.1.1.2", 3), 0.001)
    assert [p[-1] for _s, _d, p in lk.pop_due(0.010)] == [2]
    assert lk.next_due() == 0.020
    assert lk.pop_due(0.0205) == [("a", "b", packet("10.1.1.2", 1))]
    assert [p[-1] for _s, _d, p in lk.pop_due(1.0)] == [3]
    assert lk.stats[("a", "b")].delayed == 2 and lk.stats[("a", "b")].forwarded == 2


def test_jitter_stays_within_bounds_and_reorders():
    lk = links(seed=7)
    lk.set_rule("a", "b", Rule(delay_ms=20, jitter_ms=5))
    dues = [lk.submit("a", packet("10.1.1.2", i % 256), now=i * 0.0001) for i in range(2000)]
    delays = [d - i * 0.0001 for i, d in enumerate(dues)]
    assert min(delays) >= 0.015 - 1e-9 and max(delays) <= 0.025 + 1e-9
    assert dues != sorted(dues)                                      # netem's jitter reorders too
    out = lk.pop_due(10.0)
    assert len(out) == 2000 and lk.next_due() is None


def test_loss_drops_about_the_percentage_and_counts_it():
    lk = links(seed=3)
    lk.set_rule("a", "b", Rule(loss_pct=5))
    n = 20000
    for i in range(n):
        lk.submit("a", packet("10.1.1.2"), 0.0)
    st = lk.stats[("a", "b")]
    assert st.lost + len(lk.pop_due(0.0)) == n
    assert 0.04 * n < st.lost < 0.06 * n, st.lost


def test_a_link_cut_while_packets_are_in_flight_drops_them():
    lk = links()
    lk.set_rule("a", "b", Rule(delay_ms=50))
    for i in range(3):
        lk.submit("a", packet("10.1.1.2", i), 0.0)
    lk.set_rule("a", "b", Rule(down=True))
    assert lk.pop_due(1.0) == []
    assert lk.stats[("a", "b")].cut == 3 and lk.stats[("a", "b")].forwarded == 0


def test_unroutable_and_non_ipv4_packets_are_counted_not_forwarded():
    lk = links()
    assert lk.submit("a", packet("10.9.9.9"), 0.0) is None
    assert lk.submit("a", bytes([0x60]) + bytes(47), 0.0) is None    # IPv6
    assert lk.submit("a", b"\x45", 0.0) is None                      # truncated
    assert lk.unroutable == 3 and lk.pop_due(1.0) == []


def test_stale_namespace_names_carry_the_creating_pid():
    assert _NS_RE.match("zwlab12345-a").group(1) == "12345"
    assert _NS_RE.match("zwlabx-a") is None and _NS_RE.match("other-ns") is None
    assert callable(sweep)
