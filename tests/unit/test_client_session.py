"""The client's connection state machine (zwatch.client.session.Session), without a socket:
which endpoint comes next, when a hello / ping / ack is due, what silence and refusals do."""
import pytest

from zwatch.client import Phase, Session

HB = 1.0


def ready_session(endpoints=("tcp://a", "tcp://b"), now=0.0) -> Session:
    s = Session(list(endpoints), HB, ack_every=100)
    s.open(now, hello_id=1)
    s.hello_answered(True)
    return s


def test_connect_hello_ready():
    s = Session(["tcp://a", "tcp://b"], HB)
    assert s.phase is Phase.CONNECT and not s.ready
    assert s.open(10.0, hello_id=7) == "tcp://a"
    assert s.phase is Phase.HELLO
    assert s.poll_timeout_ms() == 5                    # the hello could not go yet: retry soon
    assert s.hello_due(10.0)
    s.hello_sent(10.0)
    assert not s.hello_due(10.5) and s.hello_due(11.1)  # re-sent every heartbeat until answered
    assert s.poll_timeout_ms() == 250
    assert not s.is_hello_reply(6) and s.is_hello_reply(7)
    s.hello_answered(True)
    assert s.ready and not s.is_hello_reply(7)


def test_refused_hello_moves_to_the_next_endpoint_round_robin():
    s = Session(["tcp://a", "tcp://b"], HB)
    seen = []
    for i in range(3):
        seen.append(s.open(0.0, hello_id=i))
        s.hello_answered(False)                         # version or limits refused
        assert s.phase is Phase.CONNECT
    assert seen == ["tcp://a", "tcp://b", "tcp://a"]


def test_silence_is_a_failover_only_from_an_open_session():
    s = Session(["tcp://a", "tcp://b"], HB)
    s.open(0.0, hello_id=1)
    assert not s.went_silent(3.0) and s.went_silent(3.1)  # 3 heartbeats without a message
    assert s.lost() is False                               # never ready: not a failover
    assert s.open(3.1, hello_id=2) == "tcp://b"
    s.hello_answered(True)
    s.heard(5.0, 10)
    assert not s.went_silent(8.0) and s.went_silent(8.1)
    assert s.lost() is True and s.phase is Phase.CONNECT
    assert s.open(8.1, hello_id=3) == "tcp://a"


def test_no_session_reconnects_to_the_same_endpoint():
    s = ready_session()
    assert s.endpoint == "tcp://a"
    s.no_session()                                      # the fan-out restarted under its address
    assert s.phase is Phase.CONNECT
    assert s.open(1.0, hello_id=2) == "tcp://a"


def test_acks_are_per_session():
    s = ready_session()
    assert not s.ack_due() and not s.ack_due(with_ping=True)
    s.heard(0.1, 60)
    assert s.ack_due(with_ping=True) and not s.ack_due()  # with a ping anything; alone from 100 bytes
    s.heard(0.2, 40)
    assert s.ack_due()
    s.acknowledged()
    assert s.acked == 100 and not s.ack_due(with_ping=True)
    s.heard(0.3, 500)
    s.lost()
    assert not s.ack_due(with_ping=True)                # no session: nothing to acknowledge
    s.open(1.0, hello_id=2)
    s.hello_answered(True)
    assert (s.received, s.acked) == (0, 0)              # the new fan-out counts from zero


def test_pings_every_heartbeat_when_ready():
    s = Session(["tcp://a"], HB)
    s.open(0.0, hello_id=1)
    assert not s.ping_due(5.0)
    s.hello_answered(True)
    assert s.ping_due(5.0)
    s.pinged(5.0)
    assert not s.ping_due(5.9) and s.ping_due(6.0)


def test_transitions_out_of_order_are_refused():
    s = Session(["tcp://a"], HB)
    with pytest.raises(RuntimeError):
        s.hello_answered(True)
    s.open(0.0, hello_id=1)
    with pytest.raises(RuntimeError):
        s.open(0.0, hello_id=2)
    with pytest.raises(ValueError):
        Session([], HB)
