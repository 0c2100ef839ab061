"""KV API end to end: real actors, sockets and LMDB; results as etcd v3 gives them."""
from __future__ import annotations

import signal
import threading
import time

import msgpack
import pytest

from zwatch import Client, Delete, Get, ModRevision, Put, Value, Version
from zwatch import errors

from support import bare_dealer


def test_put_get_delete_revisions_like_etcd(cluster):
    c = cluster.client()
    assert c.get("missing").header.revision == 1          # an empty store is at revision 1
    r = c.put("foo", "bar")
    assert r.header.revision == 2
    c.put("foo", "baz")
    kv = c.get("foo").kvs[0]
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"foo", b"baz", 2, 3, 2)
    prev = c.put("foo", "qux", prev_kv=True).prev_kv
    assert prev.value == b"baz" and prev.version == 2
    d = c.delete("foo", prev_kv=True)
    assert d.deleted == 1 and d.header.revision == 5 and d.prev_kvs[0].value == b"qux"
    assert c.delete("foo").header.revision == 5          # deleting nothing takes no revision
    kv = c.get("foo", revision=3).kvs[0]                   # historical read
    assert kv.value == b"baz"
    c.put("foo", "new")                                    # a new life: version 1, new create revision
    kv = c.get("foo").kvs[0]
    assert (kv.version, kv.create_revision, kv.mod_revision) == (1, 6, 6)


def test_ranges_prefix_from_key_limit(cluster):
    c = cluster.client()
    for k in ("a", "ab", "abc", "b", "c"):
        c.put(k, k.upper())
    assert [kv.key for kv in c.get("a", prefix=True).kvs] == [b"a", b"ab", b"abc"]
    assert [kv.key for kv in c.get("ab", "c").kvs] == [b"ab", b"abc", b"b"]
    assert [kv.key for kv in c.get("b", from_key=True).kvs] == [b"b", b"c"]
    r = c.get("\x00", from_key=True, limit=2)
    assert [kv.key for kv in r.kvs] == [b"a", b"ab"] and r.more and r.count == 5
    r = c.get("a", prefix=True, sort_order="DESCEND")
    assert [kv.key for kv in r.kvs] == [b"abc", b"ab", b"a"]
    assert c.get("a", prefix=True, count_only=True).count == 3
    assert all(kv.value == b"" for kv in c.get("a", prefix=True, keys_only=True).kvs)


def test_txn_compare_success_failure(cluster):
    c = cluster.client()
    c.put("k", "v1")
    r = c.txn([Value("k") == "v1", Version("k") > 0], [Put("k", "v2"), Get("k")], [Put("k", "no")])
    assert r.succeeded and r.header.revision == 3
    assert r.responses[1].kvs[0].value == b"v2"            # reads in a txn see its writes
    r = c.txn([ModRevision("k") < 3], [Put("k", "no")], [Delete("k", prev_kv=True)])
    assert not r.succeeded and r.responses[0].deleted == 1
    r = c.txn([Version("missing") == 0], [Put("x", "1"), Put("y", "2")])
    x, y = c.get("x").kvs[0], c.get("y").kvs[0]
    assert x.mod_revision == y.mod_revision == r.header.revision  # one txn, one revision
    with pytest.raises(errors.InvalidArgument):
        c.txn([], [Put("d", "1"), Put("d", "2")])           # duplicate key in one txn


def test_compaction_errors_and_reads(cluster):
    c = cluster.client()
    for i in range(5):
        c.put("k", str(i))                                 # revisions 2..6
    c.delete("k")                                          # 7
    c.put("k", "again")                                    # 8
    c.compact(7)
    with pytest.raises(errors.Compacted) as e:
        c.get("k", revision=6)
    assert e.value.compact_revision == 7
    assert c.get("k", revision=7).kvs == []                # the tombstone at the boundary is kept
    assert c.get("k").kvs[0].value == b"again"
    with pytest.raises(errors.Compacted):
        c.compact(7)
    with pytest.raises(errors.FutureRevision):
        c.compact(100)
    with pytest.raises(errors.FutureRevision):
        c.get("k", revision=100)


def test_status(cluster):
    c = cluster.client()
    c.put("a", "b")
    s = c.status()
    assert s.header.revision == 2 and s.version and s.protocol_version == 1


def test_group_commit_under_concurrent_clients(cluster):
    """8 clients with one request in flight each: the writer must fold them into fewer commits."""
    clients = [cluster.client() for _ in range(8)]
    per_client = 60
    revs: list[int] = []
    lock = threading.Lock()

    def run(i, c):
        got = [c.put(f"c{i}/{n}", "v" * 100).header.revision for n in range(per_client)]
        with lock:
            revs.extend(got)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(revs) == list(range(2, 2 + 8 * per_client))   # every put its own revision, no gap
    time.sleep(1.2)
    stats = cluster["writer"].events("writer.stats")
    commits = sum(s["commits"] for s in stats)
    requests = sum(s["requests"] for s in stats)
    assert requests >= 8 * per_client
    assert commits < requests, f"no group commit: {commits} commits for {requests} requests"


def test_acknowledged_writes_survive_writer_sigkill(cluster):
    c = cluster.client(timeout=2.0)
    acked: dict[str, int] = {}
    stop = threading.Event()

    def writer_loop():
        i = 0
        while not stop.is_set():
            key = f"dur/{i}"
            try:
                acked[key] = c.put(key, str(i)).header.revision
            except errors.ZwatchError:
                pass                                        # unacknowledged: may or may not exist
            i += 1

    t = threading.Thread(target=writer_loop)
    t.start()
    time.sleep(0.5)
    cluster.restart("writer", signal.SIGKILL)
    time.sleep(0.8)
    stop.set()
    t.join(10)
    assert len(acked) > 20
    r = c.get("dur/", prefix=True)
    stored = {kv.key.decode(): kv.mod_revision for kv in r.kvs}
    missing = {k: v for k, v in acked.items() if stored.get(k) != v}
    assert not missing, f"acknowledged writes lost or moved: {list(missing.items())[:5]}"
    # The revision sequence continues after the restart.
    assert c.put("after", "x").header.revision == r.header.revision + 1


def _ask(sock, frame):
    sock.send(frame)
    return msgpack.unpackb(sock.recv(), raw=False)


@pytest.mark.parametrize("frame,code", [
    (b"\xc1garbage", "INVALID_ARGUMENT"),                                 # not msgpack
    (msgpack.packb(["put", 1]), "INVALID_ARGUMENT"),                      # wrong arity
    (msgpack.packb([1, 2, {}]), "INVALID_ARGUMENT"),                      # op not a string
    (msgpack.packb(["frobnicate", 3, {}]), "UNIMPLEMENTED"),              # unknown op
    (msgpack.packb(["put", 4, {"key": "str-not-bin", "value": b""}]), "INVALID_ARGUMENT"),
    (msgpack.packb(["put", 5, {"key": b"k" * 600, "value": b""}]), "INVALID_ARGUMENT"),
    (msgpack.packb(["range", 6, {"key": b"k", "revision": -5}]), "INVALID_ARGUMENT"),
    (msgpack.packb(["range", 7, {"key": b"k", "revision": 2**64 - 1}]), "INVALID_ARGUMENT"),
    (b"\x91" * 5000 + b"\xc0", "INVALID_ARGUMENT"),                        # deeply nested
    (msgpack.packb(["watch_create", 8, {"key": b"k", "start_revision": "x"}]), "INVALID_ARGUMENT"),
    (msgpack.packb(["txn", 9, {"success": [{"request_put": {"key": b"a"}}] * 200}]), "INVALID_ARGUMENT"),
])
def test_malformed_requests_get_stable_error_codes(cluster, frame, code):
    s = bare_dealer(cluster.fanout_eps[0], RCVTIMEO=3000)
    try:
        kind, _, body = _ask(s, msgpack.packb(["hello", 1, {"version": 1}]))
        assert kind == "ok"
        kind, _, body = _ask(s, frame)
        assert kind == "err" and body["code"] == code, body
        # The session and the process keep serving, and nothing was written.
        kind, _, body = _ask(s, msgpack.packb(["range", 99, {"key": b"k"}]))
        assert kind == "ok" and body["header"]["revision"] == 1, body
    finally:
        s.close()


def _put_frame_of(size: int, req_id: int = 7) -> bytes:
    """A put request whose msgpack frame is exactly `size` bytes (the value is a bin32)."""
    probe = msgpack.packb(["put", req_id, {"key": b"big", "value": b"x" * 70_000}])
    frame = msgpack.packb(["put", req_id, {"key": b"big", "value": b"x" * (70_000 + size - len(probe))}])
    assert len(frame) == size
    return frame


def test_frame_size_table_of_the_spec(cluster):
    """Issue #8.8 (and the old test here, which sent 3 MiB "above MAXMSGSIZE" while the real
    socket limit is 6 MiB): SPEC.md section 1's frame-size table, pinned at each boundary.
    Up to MAX_REQUEST_BYTES: served; up to the socket limit: RESOURCE_EXHAUSTED with req_id nil;
    above it libzmq drops the connection (the peer's next request is a new peer: NO_SESSION),
    and nobody else notices."""
    from zwatch.limits import MAX_REQUEST_BYTES, SOCKET_MAX_MSG_BYTES
    assert SOCKET_MAX_MSG_BYTES == 4 * MAX_REQUEST_BYTES == 6_291_456
    good = cluster.client()
    s = bare_dealer(cluster.fanout_eps[0], RCVTIMEO=3000)
    try:
        assert _ask(s, msgpack.packb(["hello", 1, {"version": 1}]))[0] == "ok"
        kind, req_id, body = _ask(s, _put_frame_of(MAX_REQUEST_BYTES))
        assert (kind, req_id) == ("ok", 7) and body["header"]["revision"] == 2
        for size in (MAX_REQUEST_BYTES + 1, SOCKET_MAX_MSG_BYTES):
            kind, req_id, body = _ask(s, _put_frame_of(size))
            assert (kind, req_id, body["code"]) == ("err", None, "RESOURCE_EXHAUSTED"), size
        s.send(_put_frame_of(SOCKET_MAX_MSG_BYTES + 1))
        time.sleep(0.3)
        kind, req_id, body = _ask(s, msgpack.packb(["range", 9, {"key": b"big"}]))
        assert (kind, req_id, body.get("reason")) == ("err", 9, "NO_SESSION")
        assert good.put("still", "alive").header.revision == 3
    finally:
        s.close()


def test_request_before_hello_is_refused(cluster):
    s = bare_dealer(cluster.fanout_eps[0], RCVTIMEO=3000)
    try:
        kind, req_id, body = _ask(s, msgpack.packb(["range", 5, {"key": b"k"}]))
        assert (kind, req_id, body["code"], body["reason"]) == ("err", 5, "FAILED_PRECONDITION", "NO_SESSION")
    finally:
        s.close()


def test_writer_down_gives_unavailable_not_a_hang(cluster):
    c = cluster.client(timeout=1.5)
    c.put("a", "1")
    cluster["writer"].kill(signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(errors.Unavailable):
        c.put("a", "2")
    assert time.monotonic() - t0 < 5
    assert c.get("a").kvs[0].value == b"1"                 # reads do not need the writer
