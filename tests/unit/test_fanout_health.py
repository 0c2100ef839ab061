"""The fan-out's view of the writer and syncer behind it and its health checks (actors/fanout/health.py)."""
from zwatch.actors.fanout.health import Upstream, advertised, member_id


def test_a_check_completes_when_both_pong_after_its_pings():
    u = Upstream(timeout_s=1.0)
    u.writer_pong(4, 10, None, now=0.0)             # pongs of earlier pings do not count
    u.syncer_pong(7, 10, None, now=0.0)
    u.start_check(b"s", 1, now=1.0, writer_seq=5, syncer_seq=8)
    assert u.due(1.1, joined=True) == []
    u.writer_pong(5, 11, {"alarms": []}, now=1.2)
    assert u.due(1.2, joined=True) == []
    u.syncer_pong(8, 11, None, now=1.3)
    ((ident, req_id, body),) = u.due(1.3, joined=True)
    assert (ident, req_id, body["health"], body["reason"]) == (b"s", 1, True, "")
    assert abs(body["took_ms"] - 300.0) < 1e-6
    assert u.due(1.4, joined=True) == []            # answered once


def test_a_silent_writer_fails_the_check_at_the_deadline_naming_it():
    u = Upstream(timeout_s=1.0)
    u.start_check(b"s", 2, now=0.0, writer_seq=1, syncer_seq=1)
    u.syncer_pong(1, 3, None, now=0.1)
    assert u.due(0.9, joined=True) == []
    ((_, _, body),) = u.due(1.0, joined=True)
    assert body["health"] is False and body["reason"] == "writer unreachable: no answer within 1 s"


def test_a_ping_that_could_not_be_sent_fails_at_once():
    u = Upstream()
    u.start_check(b"s", 3, now=0.0, writer_seq=None, syncer_seq=1)
    ((_, _, body),) = u.due(0.0, joined=True)
    assert body["health"] is False and body["reason"].startswith("writer unreachable")


def test_an_alarm_or_a_fanout_off_the_stream_is_unhealthy():
    u = Upstream()
    u.start_check(b"s", 4, now=0.0, writer_seq=1, syncer_seq=1)
    u.writer_pong(1, 3, {"alarms": ["NOSPACE"]}, now=0.1)
    u.syncer_pong(1, 3, None, now=0.1)
    ((_, _, body),) = u.due(0.1, joined=False)
    assert body["health"] is False and body["alarms"] == ["NOSPACE"]
    assert body["reason"] == "not joined to the writer's publish stream yet; Active Alarm(s): NOSPACE"


def test_a_departed_session_checks_are_forgotten():
    u = Upstream()
    u.start_check(b"gone", 5, now=0.0, writer_seq=1, syncer_seq=1)
    u.forget(b"gone")
    assert u.due(5.0, joined=True) == []


def test_member_ids_are_stable_and_wildcards_advertise_the_host():
    assert member_id("tcp://a:1") == member_id("tcp://a:1") != member_id("tcp://a:2")
    assert 0 < member_id("tcp://a:1") < 2 ** 63
    assert "0.0.0.0" not in advertised("tcp://0.0.0.0:2379") and advertised("tcp://10.0.0.1:2379") == "tcp://10.0.0.1:2379"


def test_checks_within_the_reuse_window_share_one_ping_and_a_failed_send_is_never_reused():
    u = Upstream()
    assert u.reusable_pings(0.0) is None
    u.pinged(0.0, 7, 9)
    assert u.reusable_pings(0.05) == (7, 9)           # a flood of health requests: one ping
    assert u.reusable_pings(0.1) is None              # then a fresh one
    u.writer_pong(7, 3, None, now=0.06)
    assert u.reusable_pings(0.07) is None             # answered: a later check pings again
    u.pinged(1.0, None, 10)                           # the writer ping could not be sent
    assert u.reusable_pings(1.01) is None
