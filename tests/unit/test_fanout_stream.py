"""PublishStream (actors/fanout/stream.py): when a fan-out counts itself cut off from the
writer's publish stream, and that a loss and its end are each reported exactly once."""
import pytest

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


def test_frozen_writer_answering_its_queued_pings_is_not_a_broken_link():
    """Regression (CI: a writer SIGSTOPped for 2.5 s got its only fan-out cut off and the client
    failed UNAVAILABLE): with ZWATCH_UPSTREAM_TIMEOUT_S below the writer's pong staleness (1.5 s),
    a pong from before the freeze still counted as "the writer answers while its stream is
    silent", the case of a broken publish link.  A pong counts only for a ping sent after the
    silence began, and only once the writer has had time to publish since."""
    s = PublishStream(timeout_s=1.0)
    s.heard(10.0)                                   # the last heartbeat before the freeze
    s.writer_answered(9.95, 10.02)                  # a ping from before the silence
    assert s.check(11.2, syncer_silent=False, writer_answers=True) is None and not s.lost
    # Unfrozen at 12.5: it answers the pings queued meanwhile, its heartbeat a moment later.
    s.writer_answered(12.4, 12.5)
    assert s.check(12.51, syncer_silent=False, writer_answers=True) is None and not s.lost
    s.heard(12.52)
    assert s.writer_ran_at is None
    assert s.check(14.0, syncer_silent=False, writer_answers=False) is None


def test_writer_running_with_no_stream_for_half_the_timeout_is_a_broken_link():
    s = PublishStream(timeout_s=3.0)
    s.heard(10.0)
    s.writer_answered(10.5, 10.6)                   # alive after the silence began
    s.writer_answered(11.0, 11.1)                   # the first such pong is kept
    assert s.writer_ran_at == 10.6
    assert s.check(12.0, syncer_silent=False, writer_answers=True) is None      # silent 2 s < 3 s
    assert s.check(13.05, syncer_silent=False, writer_answers=False) is None    # not answering now
    assert s.check(13.1, syncer_silent=False, writer_answers=True) == pytest.approx(3.1) and s.lost
