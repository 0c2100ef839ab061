"""Writes straight from the client to the writer (actors/direct.py, protocol/client/direct.py):
taken when the fan-out offers them, watched through the fan-out like any write, refused and
resent through the fan-out once auth is enabled, never sent to a writer the hello did not
name, and bad input on the direct socket answered with stable codes while everyone else is
served."""
from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

import zwatch
from zwatch import messages
from zwatch.client.direct import FALLBACK, DirectWrites

from support import collect


def raw_dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def request(sock, op, req_id, body, timeout_ms=5000):
    sock.send(messages.encode_request(op, req_id, body))
    assert sock.poll(timeout_ms), f"no answer to {op}"
    return msgpack.unpackb(sock.recv(), raw=False)


def test_puts_go_straight_to_the_writer_and_are_watched_through_the_fanout(cluster):
    c = cluster.client()
    w = c.watch("d/", prefix=True)
    revisions = [c.put(f"d/{i % 7}", str(i)).header.revision for i in range(200)]
    r = c.txn(success=[zwatch.Put("d/txn", "t")])
    revisions.append(r.header.revision)
    assert c._direct.sent == 201, "every write took the direct path"
    assert c._direct.fallbacks == 0
    got = collect(w, len(revisions))
    assert [ev.kv.mod_revision for ev in got] == revisions
    assert revisions == list(range(revisions[0], revisions[0] + len(revisions)))
    assert c.get("d/txn").kvs[0].value == b"t"          # reads see it (the syncer reads LMDB)
    assert c.session_info["writer"]["endpoint"] == cluster.writer_client_ep


def test_a_client_that_opts_out_writes_through_the_fanout(cluster):
    c = cluster.client(direct_writes=False)
    assert c.put("d/x", "1").header.revision > 1
    assert c._direct is None


def test_auth_enabled_sends_writes_through_the_fanout_again(cluster):
    c = cluster.client()
    assert c.wait_connected(5)      # before its hello is answered a write goes the session's way
    c.put("d/a", "1")
    assert c._direct.sent == 1
    c.user_add("root", "root-pw")
    c.role_add("root")
    c.user_grant_role("root", "root")
    c.auth_enable()
    # This client's session is anonymous: the writer refuses the direct write (DIRECT_OFF,
    # nothing applied), it goes through the fan-out, which refuses an anonymous write.
    with pytest.raises(zwatch.Unauthenticated):
        c.put("d/a", "2")
    assert c._direct.fallbacks == 1
    root = cluster.client(user="root", password="root-pw")
    assert "writer" not in root.session_info               # not offered while auth is on
    root.put("d/a", "3")
    assert root._direct.sent == 0
    assert [kv.value for kv in root.get("d/a").kvs] == [b"3"]
    assert root.get("d/a").kvs[0].version == 2               # "2" was never applied


def test_a_writer_that_is_not_the_named_instance_is_never_written_to(cluster):
    """A hello names the writer's instance: a socket that reaches another one (a loopback
    address on another host, a stale address) is refused and the write goes through the fan-out."""
    ctx = zmq.Context.instance()
    impostor = ctx.socket(zmq.ROUTER)
    impostor.setsockopt(zmq.LINGER, 0)
    port = impostor.bind_to_random_port("tcp://127.0.0.1")
    seen = []
    direct = DirectWrites(ctx, iter(range(1, 10**6)))
    direct.offered({"writer": {"endpoint": f"tcp://127.0.0.1:{port}", "instance": "the-real-one"}})
    stop = threading.Event()

    def answer():
        while not stop.is_set():
            if not impostor.poll(50):
                continue
            ident, raw = impostor.recv_multipart()
            op, req_id, _ = msgpack.unpackb(raw, raw=False)
            seen.append(op)
            impostor.send_multipart([ident, msgpack.packb(["pong", req_id, {"instance": "another", "revision": 1}])])

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    assert direct.call("put", {"key": b"k", "value": b"v"}, time.monotonic() + 5) is FALLBACK
    assert direct.call("put", {"key": b"k", "value": b"v"}, time.monotonic() + 5) is FALLBACK
    stop.set()
    t.join(5)
    assert seen == ["ping"], "only the check's ping, never a write"
    direct.close()
    impostor.close()


def test_bad_input_on_the_direct_socket_gets_stable_codes_and_others_are_served(cluster):
    sock = raw_dealer(cluster.writer_client_ep)
    sock.send(b"\xc1 not msgpack")
    assert sock.poll(5000)
    kind, _, body = msgpack.unpackb(sock.recv(), raw=False)
    assert (kind, body["code"]) == ("err", "INVALID_ARGUMENT")
    assert request(sock, "watch_create", 2, {"key": b"k"})[2]["code"] == "UNIMPLEMENTED"
    assert request(sock, "lease_grant", 3, {"TTL": 5})[2]["code"] == "UNIMPLEMENTED"
    assert request(sock, "no_such_op", 4, {})[2]["code"] == "UNIMPLEMENTED"
    assert request(sock, "put", 5, {"key": 7})[2]["code"] == "INVALID_ARGUMENT"
    kind, req_id, body = request(sock, "put", 6, {"key": b"d/raw", "value": b"v"})
    assert (kind, req_id) == ("ok", 6) and body["header"]["revision"] > 1
    sock.send_multipart([b"two", b"frames"])                 # a malformed envelope: dropped, logged
    c = cluster.client()
    assert c.put("d/after", "1").header.revision == body["header"]["revision"] + 1
    assert c.get("d/raw").kvs[0].value == b"v"
    sock.close()


def test_the_asyncio_client_writes_straight_to_the_writer_and_falls_back_under_auth(cluster):
    import asyncio

    import zwatch.aio

    async def run():
        async with zwatch.aio.Client(cluster.fanout_eps) as c:
            await c.put("d/warm", "0")                  # may go the session's way (hello not answered yet)
            w = await c.watch("d/a", prefix=True)
            revs = list(await asyncio.gather(*[c.put(f"d/a{i}", str(i)) for i in range(50)]))
            assert c._direct.sent == 50
            got = []
            async for resp in w:
                got += [ev.kv.mod_revision for ev in resp.events]
                if len(got) >= 50:
                    break
            assert sorted(got) == sorted(r.header.revision for r in revs) and got == sorted(got)
        sync = cluster.client()
        sync.user_add("root", "root-pw")
        sync.role_add("root")
        sync.user_grant_role("root", "root")
        sync.auth_enable()
        async with zwatch.aio.Client(cluster.fanout_eps, user="root", password="root-pw") as root:
            await root.put("d/b", "1")
            assert root._direct.sent == 0 and "writer" not in root.session_info

    asyncio.run(run())


def test_a_direct_client_that_floods_and_never_reads_leaves_others_served(cluster):
    """Regression: a hostile client on the direct socket sends writes as fast as it can and never
    reads a reply.  Its replies fill the writer's send pipe (SNDHWM) and are dropped there, never
    blocking the writer; the drops are logged rate-limited with a count (they were one
    writer.reply_dropped line per reply); another client's writes and watch go on in order."""
    flooder = zmq.Context.instance().socket(zmq.DEALER)
    flooder.setsockopt(zmq.LINGER, 0)
    flooder.setsockopt(zmq.RCVHWM, 1)          # reads nothing: its replies back up at the writer
    flooder.setsockopt(zmq.RCVBUF, 4096)
    flooder.setsockopt(zmq.SNDHWM, 0)
    flooder.connect(cluster.writer_client_ep)
    stop = threading.Event()
    sent = [0]

    def flood():
        i = 0
        while not stop.is_set() and i < 200_000:
            try:
                flooder.send(messages.encode_request("put", i + 1, {"key": b"flood/%d" % (i % 64), "value": b"x"}),
                             zmq.NOBLOCK)
                i += 1
            except zmq.Again:
                time.sleep(0.001)
        sent[0] = i

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        c = cluster.client()
        w = c.watch("ok/", prefix=True)
        time.sleep(0.5)                          # the flood is under way
        revisions = [c.put(f"ok/{i}", str(i), timeout=30).header.revision for i in range(100)]
        got = collect(w, len(revisions), timeout=30)
        assert [ev.kv.mod_revision for ev in got] == revisions
        t.join(timeout=120)
    finally:
        stop.set()
        t.join(timeout=10)
        flooder.close()
    assert sent[0] == 200_000, "the flood went out"
    other = cluster.client()
    deadline = time.monotonic() + 120
    while other.status().header.revision < sent[0] + 100 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert other.status().header.revision >= sent[0] + 100, "the writer applied every write of the flood"
    dropped = cluster["writer"].events("writer.reply_dropped")
    # One line per second at most, each counting the replies held back since the previous one.
    assert dropped, "the flooder's replies overflowed the writer's pipe"
    assert len(dropped) <= 60 and sum(d.get("repeated", 0) for d in dropped) + len(dropped) > len(dropped) * 10
    assert cluster["writer"].alive()
