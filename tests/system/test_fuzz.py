"""Hostile input on every inbound socket: each message gets an error reply with a stable code
(or is dropped with a log line), the process keeps serving everyone, the store is unchanged."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from zwatch import errors
from zwatch.limits import MAX_REQUEST_BYTES
from zwatch.messages import CLIENT_OPS
from zwatch.tools.cluster import Cluster

from support import bare_dealer

leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True),
                 st.text(max_size=20), st.binary(max_size=40))
# Never a bytes "key": such a body could be a valid write, and the store must not change.
obj = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    st.dictionaries(st.text(max_size=12).filter(lambda k: k != "key"), inner, max_size=5)), max_leaves=25)
# ack is fire-and-forget (no reply when well-formed): tested on its own below.
op = st.one_of(st.sampled_from(sorted(CLIENT_OPS - {"hello", "bye", "ack"})), st.text(max_size=10).filter(lambda t: t != "ack"))
envelope = st.builds(lambda o, i, b: msgpack.packb([o, i, b]), op, st.integers(-(2**63), 2**64 - 1), obj)
garbage = st.one_of(st.binary(max_size=200), obj.map(msgpack.packb), envelope,
                    st.integers(1, 3000).map(lambda n: b"\x91" * n + b"\xc0"),        # deep nesting
                    st.sampled_from([b"\xdd\xff\xff\xff\xff", b"\xc6\x7f\xff\xff\xff",   # huge counts/lengths
                                     b"\xcf" + b"\xff" * 8, b"\xd4\x01\x00", b""]))


@pytest.fixture(scope="module")
def fuzz_cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("fuzz") / "data"))
    try:
        yield c.start()
    finally:
        c.stop()


def _reply(sock, timeout_ms=3000):
    """The next reply (ok / err / pong), skipping watch responses (watch_progress sends one)."""
    while True:
        assert sock.poll(timeout_ms), "no reply: the actor dropped the message without answering"
        frames = sock.recv_multipart()
        msg = msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)
        if msg[0] != "w":
            return msg


def _expect_error_or_ok(msg):
    kind, _, body = msg
    if kind == "err":
        assert body["code"] in errors.ALL_CODES and body["code"] != errors.INTERNAL, body
    else:
        assert kind in ("ok", "pong"), msg


@pytest.fixture(scope="module")
def session(fuzz_cluster):
    s = bare_dealer(fuzz_cluster.fanout_eps[0])
    s.send(msgpack.packb(["hello", 1, {"version": 1}]))
    assert _reply(s)[0] == "ok"
    yield s
    s.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=garbage)
def test_fanout_answers_garbage_with_stable_codes(fuzz_cluster, session, frame):
    session.send(frame)
    if _is_valid_ack(frame):                                  # fire-and-forget: no reply
        session.send(msgpack.packb(["ping", 5, {}]))
    _expect_error_or_ok(_reply(session))


def _is_valid_ack(frame):
    try:
        msg = msgpack.unpackb(frame, raw=False)
    except Exception:
        return False
    if not (isinstance(msg, list) and len(msg) == 3 and msg[0] == "ack" and isinstance(msg[2], dict)):
        return False
    rid, n = msg[1], msg[2].get("bytes", 0)
    ok_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63  # noqa: E731
    return ok_int(rid) and ok_int(n)


@pytest.mark.parametrize("endpoint", ["writer_ep", "syncer_ep"])
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=garbage)
def test_internal_sockets_answer_garbage_with_stable_codes(fuzz_cluster, endpoint, frame):
    s = bare_dealer(getattr(fuzz_cluster, endpoint))
    try:
        s.send(frame)
        _expect_error_or_ok(_reply(s))
    finally:
        s.close()


def test_malformed_ack_is_an_error_and_a_good_one_is_silent(fuzz_cluster, session):
    session.send(msgpack.packb(["ack", 0, {"bytes": "lots"}]))
    kind, _, body = _reply(session)
    assert kind == "err" and body["code"] == "INVALID_ARGUMENT"
    session.send(msgpack.packb(["ack", 0, {"bytes": 10**12}]))  # more than was ever sent: clamped
    session.send(msgpack.packb(["ping", 5, {}]))
    assert _reply(session)[0] == "pong"


def test_too_many_frames_and_oversized_requests(fuzz_cluster, session):
    session.send_multipart([b"a", b"b", b"c", b"d", b"e"])
    kind, _, body = _reply(session)
    assert kind == "err" and body["code"] == "INVALID_ARGUMENT"
    session.send(msgpack.packb(["put", 7, {"key": b"big", "value": b"x" * (MAX_REQUEST_BYTES + 10)}]))
    kind, _, body = _reply(session)
    assert kind == "err" and body["code"] == "RESOURCE_EXHAUSTED"


def test_after_the_fuzzing_everything_still_serves_and_nothing_was_written(fuzz_cluster):
    c = fuzz_cluster.client()
    r = c.get("\x00", from_key=True)
    assert r.header.revision == 1 and r.kvs == []          # nothing in the store changed
    assert c.put("after", "fuzz").header.revision == 2
    for name in ("writer", "syncer", "fanout0"):
        a = fuzz_cluster[name]
        assert a.alive(), f"{name} died"
        assert not [line for line in a.lines if line.get("level") in ("error", "critical")
                    and line.get("event", "").endswith("_failed")], f"{name} logged an internal failure"


def test_resource_limits(make_cluster):
    cl = make_cluster(env={"ZWATCH_MAX_WATCHES_PER_SESSION": "3", "ZWATCH_MAX_SESSIONS": "2"})
    c = cl.client()
    ws = [c.watch(f"k{i}") for i in range(3)]
    with pytest.raises(errors.ResourceExhausted):
        c.watch("k4")
    ws[0].cancel()
    c.watch("k5")                                           # a freed slot can be used again
    other = bare_dealer(cl.fanout_eps[0])
    third = bare_dealer(cl.fanout_eps[0])
    try:
        other.send(msgpack.packb(["hello", 1, {"version": 1}]))
        assert _reply(other)[0] == "ok"
        third.send(msgpack.packb(["hello", 1, {"version": 1}]))
        kind, _, body = _reply(third)
        assert kind == "err" and body["code"] == "RESOURCE_EXHAUSTED"
    finally:
        other.close()
        third.close()
    with pytest.raises(errors.InvalidArgument):
        from zwatch import Put
        c.txn([], [Put(f"t{i}", "v") for i in range(129)])   # etcd's max txn ops
