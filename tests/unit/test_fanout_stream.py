"""PublishStream (actors/fanout/stream.py): when a fan-out counts itself cut off from the
writer's publish stream, and that a loss and its end are each reported exactly once."""
from zwatch.actors.fanout.stream import PublishStream


def test_never_lost_before_joining():
    s = PublishStream(3.0)
    assert s.check(100.0) is None and not s.lost       # starting, or the writer is not up yet


def test_silence_beyond_the_timeout_is_one_loss_then_one_restore():
    s = PublishStream(3.0)
    assert s.heard(10.0) is None
    assert s.check(12.9) is None and s.check(13.0) is None     # at the timeout: not yet
    assert s.check(13.5) == 3.5 and s.lost and s.losses == 1
    assert s.check(20.0) is None and s.losses == 1              # reported once, however long
    assert s.silent_s(20.0) == 10.0
    assert s.heard(21.0) == 11.0 and not s.lost                 # the outage: last heard -> back
    assert s.heard(21.5) is None                                # only the first publish restores


def test_heartbeats_keep_it_alive():
    s = PublishStream(3.0)
    for t in range(0, 30):
        s.heard(float(t))
        assert s.check(t + 0.99) is None
    assert s.losses == 0


def test_a_silent_stream_while_the_syncer_answers_is_the_writers_outage_not_a_loss():
    s = PublishStream(3.0)
    s.heard(0.0)
    assert s.check(10.0, syncer_silent=False) is None and not s.lost    # every fan-out alike: stay
    assert s.check(10.1, syncer_silent=True) == 10.1 and s.lost         # the host is out of reach


def test_each_loss_counts():
    s = PublishStream(1.0)
    s.heard(0.0)
    assert s.check(2.0) == 2.0
    s.heard(3.0)
    assert s.check(5.0) == 2.0 and s.losses == 2
