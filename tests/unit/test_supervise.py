"""`zwatch up`'s restart back-off (actors/supervise.py), without processes."""
from zwatch.actors.supervise import Backoff


def test_backoff_doubles_to_the_cap_and_resets_after_a_stable_run():
    b = Backoff()
    assert [b.died(0.5) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert b.died(10.0) == 0.1          # it stayed up 10 s: a fresh start
    assert b.died(1.0) == 0.2
