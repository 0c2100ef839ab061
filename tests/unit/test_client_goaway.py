"""The client's side of a drain and of spreading (zwatch.client.session.Session), without a
socket: a goaway moves the session at a random moment within delay_ms to another endpoint, a
draining endpoint is avoided, endpoints are shuffled per client, failed attempts back off with
full jitter."""
import random

from zwatch.client import Phase, Session
from zwatch.client.session import BACKOFF_BASE_S, BACKOFF_MAX_S

EPS = ["tcp://a", "tcp://b", "tcp://c"]


def ready(endpoints=EPS, now=0.0, rng=None) -> Session:
    s = Session(list(endpoints), 1.0, rng=rng or random.Random(1))
    s.open(now, hello_id=1)
    s.hello_answered(True)
    return s


def test_goaway_moves_within_the_delay_to_another_endpoint():
    s = ready()
    assert s.endpoint == "tcp://a"
    s.goaway(10.0, 0.5)
    assert 10.0 <= s.move_at <= 10.5 and s.ready      # still serving until the moment comes
    at = s.move_at
    assert not s.move_due(at - 0.001) and s.move_due(at)
    s.moved()
    assert s.phase is Phase.CONNECT and s.connect_due(at)   # at once, no back-off
    assert s.open(11.0, hello_id=2) == "tcp://b"


def test_the_moments_are_uniform_over_the_delay():
    rng = random.Random(3)
    moments = []
    for _ in range(2000):
        s = ready(rng=rng)
        s.goaway(0.0, 1.0)
        moments.append(s.move_at)
    assert 0.0 <= min(moments) < 0.01 and 0.99 < max(moments) <= 1.0
    tenths = [sum(1 for m in moments if i / 10 <= m < (i + 1) / 10) for i in range(10)]
    assert max(tenths) < 260                           # 200 expected per 100 ms: no pile-up


def test_a_draining_endpoint_is_skipped_unless_it_is_the_only_one():
    s = ready()
    s.goaway(0.0, 0.0)
    s.moved()
    assert s.open(0.1, hello_id=2) == "tcp://b"
    s.hello_answered(False)                            # b refuses too: next is c, then not a again
    assert s.open(0.2, hello_id=3) == "tcp://c"
    s.hello_answered(False)
    assert s.open(0.3, hello_id=4) == "tcp://b"
    alone = ready(["tcp://a"])
    alone.goaway(0.0, 0.0)
    alone.moved()
    assert alone.open(0.1, hello_id=2) == "tcp://a"


def test_goaway_naming_an_endpoint_goes_there():
    s = ready()
    s.goaway(0.0, 0.0, endpoint="tcp://c")
    s.moved()
    assert s.open(0.1, hello_id=2) == "tcp://c"


def test_shuffle_gives_clients_different_orders():
    firsts = {Session(list(EPS), 1.0, shuffle=True).endpoints[0] for _ in range(60)}
    assert firsts == set(EPS)
    assert Session(list(EPS), 1.0, shuffle=False).endpoints == EPS
    assert sorted(Session(list(EPS), 1.0, shuffle=True).endpoints) == sorted(EPS)


def test_failed_attempts_back_off_with_full_jitter():
    s = Session(list(EPS), 1.0, rng=random.Random(5))
    waits = []
    for i in range(12):
        s.open(100.0, hello_id=i)
        s.lost(100.0)                                   # silent during the hello: a failed attempt
        waits.append(s.not_before - 100.0)
        assert 0.0 <= waits[-1] <= min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** i)
        assert not s.connect_due(100.0 + waits[-1] - 1e-6) or waits[-1] == 0
    assert max(waits) > BACKOFF_BASE_S * 4             # it grows
    s.open(200.0, hello_id=99)
    s.hello_answered(True)                              # success resets the count
    assert s.attempts == 0
    assert s.lost(300.0) is True and s.connect_due(300.0)   # a failover goes at once


def test_poll_timeout_wakes_for_the_move_and_the_back_off():
    s = ready()
    s.goaway(0.0, 0.05)
    assert s.poll_timeout_ms(0.0) <= 51


def test_a_cut_off_fanout_is_avoided_briefly_a_draining_one_long():
    from zwatch.client.session import AVOID_CUT_OFF_S, AVOID_S
    s = ready()
    s.goaway(0.0, 0.0, avoid_s=AVOID_CUT_OFF_S)          # "upstream_lost": a partition may heal soon
    s.moved()
    assert s.open(0.1, hello_id=2) == "tcp://b"
    s.lost(0.2)
    s.not_before = 0.0
    assert s.open(AVOID_CUT_OFF_S + 0.1, hello_id=3) == "tcp://c"
    s.lost(AVOID_CUT_OFF_S + 0.2)
    s.not_before = 0.0
    assert s.open(AVOID_CUT_OFF_S + 0.3, hello_id=4) == "tcp://a"     # back in turn after 5 s
    assert AVOID_CUT_OFF_S < AVOID_S
