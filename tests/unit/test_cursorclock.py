"""The writer's cursor clock (actors/cursorclock.py) on a fake clock: deadlines moved by each
put, handed out once when passed, requeued when their drop failed, the oldest cursor tracked,
and a heap that refreshing forever does not grow."""
from __future__ import annotations

import math

from zwatch.actors.cursorclock import CursorClock


def test_expiry_follows_the_last_touch():
    c = CursorClock()
    c.restore([("a", 5, 10), ("b", 7, 20)], now=0.0)
    assert (len(c), c.next_deadline(), c.oldest_name, c.oldest_revision) == (2, 10.0, "a", 5)
    c.touch("a", 9, 10, now=8.0)                           # advanced: due at 18, b is now the oldest
    assert c.expired(17.9) == [] and c.next_deadline() == 18.0
    assert (c.oldest_name, c.oldest_revision) == ("b", 7)
    assert c.remaining("a", 10.5) == 7 and c.remaining("zz", 0) == -1
    assert c.expired(18.0) == ["a"]
    assert c.expired(19.0) == []                           # handed out once
    c.requeue(["a"], now=19.0)                             # its drop failed: due again at once
    assert c.expired(19.0) == ["a"]
    c.forget("a")
    assert c.expired(25.0) == ["b"]
    c.forget("b")
    assert (len(c), c.next_deadline(), c.oldest_revision) == (0, math.inf, None)


def test_a_touch_after_the_hand_out_revives_it():
    c = CursorClock()
    c.touch("a", 1, 5, now=0.0)
    assert c.expired(5.0) == ["a"]
    c.touch("a", 2, 5, now=5.0)                            # re-created by a put of the same batch
    assert c.next_deadline() == 10.0 and c.expired(9.0) == []


def test_refreshing_forever_does_not_grow_the_heap():
    c = CursorClock()
    for i in range(10_000):
        c.touch(f"c{i % 3}", i, 60, now=float(i))
    assert len(c._heap) <= 2 * 3 + 64 + 1
    # the last touches: c1 at 9997, c2 at 9998, c0 at 9999 (each + 60)
    assert c.expired(10_056.9) == [] and c.expired(10_057.0) == ["c1"] and c.expired(10_059.0) == ["c2", "c0"]


def test_the_oldest_cursor_is_always_the_lowest_revision():
    """Kept in O(1) per touch unless the oldest itself moved: checked against a full recompute
    over random touches and forgets (ties broken by name, as the store's oldest())."""
    import random
    rng = random.Random(7)
    c = CursorClock()
    for i in range(5000):
        name = f"c{rng.randrange(30)}"
        if rng.random() < 0.2:
            c.forget(name)
        else:
            c.touch(name, rng.randrange(100), 10, 0.0)
        expect = min(((r, n) for n, r in c.revision.items()), default=(None, None))
        assert (c.oldest_revision, c.oldest_name) == expect, i
