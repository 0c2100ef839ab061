"""The drain's arithmetic (actors/fanout/drain.py), without sockets: the goaway's delay_ms that
keeps the creates brought to the other fan-outs under a budget per 100 ms, and when it ends."""
import random

from zwatch import messages
from zwatch.actors.fanout.drain import Drain, goaway_delay_ms, goaway_frame


def test_delay_spreads_the_creates_under_the_budget():
    # 1,000 watches + 10 sessions, 250 creates per 100 ms: ~404 ms of spread.
    assert goaway_delay_ms(1000, 10, drain_s=10, creates_per_100ms=250) == 404
    # Nothing to move, or no budget asked for: no delay.
    assert goaway_delay_ms(0, 0, drain_s=10) == 0
    assert goaway_delay_ms(5000, 50, drain_s=10, creates_per_100ms=0) == 0


def test_delay_is_capped_at_half_the_drain_time():
    assert goaway_delay_ms(1_000_000, 1000, drain_s=10, creates_per_100ms=250) == 5000
    assert goaway_delay_ms(1_000_000, 1000, drain_s=0, creates_per_100ms=250) == 0


def test_uniform_delays_keep_the_worst_100ms_near_the_budget():
    """What the client does with delay_ms (a uniform moment in [0, D]): the busiest 100 ms bucket
    receives about the budget, not everything at once."""
    rng = random.Random(7)
    sessions, per_session = 300, 10
    d = goaway_delay_ms(sessions * per_session, sessions, drain_s=10, creates_per_100ms=250)
    buckets = {}
    for _ in range(sessions):
        b = int(rng.uniform(0, d) // 100)
        buckets[b] = buckets.get(b, 0) + per_session
    assert max(buckets.values()) < 2 * 250 < sessions * per_session


def test_goaway_frame_is_the_wire_shape():
    assert messages.unpack(goaway_frame(1234)) == ["goaway", 0, {"reason": "draining", "delay_ms": 1234,
                                                                 "endpoint": None}]


def test_drain_ends_when_sessions_left_or_time_passed():
    d = Drain(10.0)
    assert not d.active and not d.done(0.0, 0)
    assert d.start(100.0, sessions=3, watchers=30, creates_per_100ms=250) == 14
    assert d.active and not d.done(101.0, 3)
    assert d.done(101.0, 0)                      # every session left
    assert d.done(110.0, 2) and d.took_s(110.0) == 10.0   # drain_s passed


def test_create_rate_keeps_the_busiest_100ms():
    from zwatch.actors.fanout.drain import CreateRate
    r = CreateRate()
    for t in (0.01, 0.02, 0.05, 0.15, 0.31, 0.32):
        r.note(t)
    assert r.take_max() == 3 and r.take_max() == 0
