"""AlignedEvery (actors/common.py): stats lines of every actor at the same wall-clock boundaries."""
from __future__ import annotations

from zwatch.actors.common import AlignedEvery


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_it_fires_at_wall_clock_multiples_of_the_interval_and_names_the_boundary():
    clock = Clock(1_700_000_003.7)
    e = AlignedEvery(10, clock)
    assert not e.due() and e.remaining_ms() in (6299, 6300)      # float rounding
    clock.t = 1_700_000_010.05
    assert e.due() and e.at == 1_700_000_010 and isinstance(e.at, int)
    assert not e.due()
    clock.t = 1_700_000_020.0
    assert e.due() and e.at == 1_700_000_020


def test_two_actors_started_apart_share_their_boundaries():
    a, b = AlignedEvery(10, Clock(1_700_000_001.0)), AlignedEvery(10, Clock(1_700_000_008.9))
    assert a.next == b.next == 1_700_000_010


def test_boundaries_missed_by_a_paused_process_are_skipped_not_replayed():
    clock = Clock(1_700_000_000.5)
    e = AlignedEvery(10, clock)
    clock.t = 1_700_000_047.0                 # slept through 10, 20, 30, 40
    assert e.due() and e.at == 1_700_000_040
    assert not e.due() and e.next == 1_700_000_050


def test_sub_second_intervals_keep_their_fraction():
    clock = Clock(100.01)
    e = AlignedEvery(0.25, clock)
    clock.t = 100.3
    assert e.due() and e.at == 100.25
