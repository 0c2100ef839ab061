"""A fan-out cut off from the writer's host (actors/fanout/stream.py), end to end: the writer
and the syncer are frozen (SIGSTOP: their sockets stay open and silent, as behind a partition)
for longer than ZWATCH_UPSTREAM_TIMEOUT_S.  The fan-out must log `fanout.upstream_lost`, send its
session a goaway, refuse new hellos with UNAVAILABLE / UPSTREAM_LOST, answer /readyz 503 (and
`zwatch probe ready` exit 1) and `endpoint health` unhealthy; after SIGCONT it logs
`fanout.upstream_restored`, is ready again, and the client's watch, moved meanwhile, holds every
event exactly once (checked against the store's history).  The writer alone frozen is its own
outage, the same for every fan-out: nobody is sent away and reads go on.  The multi-host test
(test_multihost.py) cuts one fan-out off a real network link; this one needs no namespaces."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import zmq

from zwatch import messages
from zwatch.tools.checker import StreamRecord, WatchSpec
from zwatch.tools.cluster import free_port
from zwatch.tools.load import check_store_history, read_stream


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def probe(port: int, kind: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zwatch.cli", "probe", kind, "--port", str(port)],
                          capture_output=True, text=True, timeout=30)


def test_a_fanout_cut_off_from_the_stream_sends_clients_away_and_comes_back(make_cluster, tmp_path):
    port = free_port()
    cl = make_cluster(fanouts=1, env={"ZWATCH_UPSTREAM_TIMEOUT_S": "1.0", "ZWATCH_HEARTBEAT_S": "0.2",
                                      "ZWATCH_FANOUT_METRICS_PORT": str(port)})
    fo, writer = cl["fanout0"], cl["writer"]
    c = cl.client(timeout=10)
    first = c.put("u/0", "0").header.revision
    w = c.watch("u/", prefix=True, start_revision=first)
    acked = []
    for i in range(1, 20):
        acked.append(c.put(f"u/{i}", str(i)))
    assert http(port, "/readyz") == (200, "ok\n")
    assert http(port, "/livez") == (200, "ok\n")
    ok = probe(port, "ready")
    assert ok.returncode == 0 and ok.stdout.strip() == "ok", ok

    # The writer alone: its outage, not this fan-out's: it stays ready and serves reads.
    writer.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.5)
        assert c.get("u/1").kvs[0].value == b"1"
        assert http(port, "/readyz") == (200, "ok\n")
        assert not fo.events("fanout.upstream_lost") and c.moves == 0
    finally:
        writer.proc.send_signal(signal.SIGCONT)
    for i in range(20, 25):
        acked.append(c.put(f"u/{i}", str(i)))

    # Writer and syncer: the host is out of reach.
    for a in (writer, cl["syncer"]):
        a.proc.send_signal(signal.SIGSTOP)
    try:
        (lost,) = fo.wait_event("fanout.upstream_lost", timeout=15)
        assert lost["silent_s"] >= 1.0 and lost["sessions"] >= 1
        status, body = http(port, "/readyz")
        assert status == 503 and "silent" in body, (status, body)
        assert http(port, "/livez")[0] == 200          # alive: only not ready
        refused = probe(port, "ready")
        assert refused.returncode == 1 and "silent" in refused.stdout, refused
        # A new session is refused with the reason a client avoids the endpoint for.
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(cl.fanout_eps[0])
        sock.send(messages.encode_request("hello", 1, {"version": 1}))
        assert sock.poll(5000)
        kind, req_id, body = messages.decode_server_frame(sock.recv())
        sock.close()
        assert kind == "err" and body["code"] == "UNAVAILABLE" and body.get("reason") == "UPSTREAM_LOST", body
        health = subprocess.run([sys.executable, "-m", "zwatch.cli", "--endpoints", cl.fanout_eps[0],
                                 "endpoint", "health"], capture_output=True, text=True, timeout=30)
        # The writer is frozen: unhealthy either way; the fan-out names the stream it lost.
        assert health.returncode == 1
        deadline = time.monotonic() + 10
        while c.moves == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.moves >= 1, "the client got no goaway (or did not follow it)"
    finally:
        for a in (writer, cl["syncer"]):
            a.proc.send_signal(signal.SIGCONT)
    (restored,) = fo.wait_event("fanout.upstream_restored", timeout=15)
    assert restored["outage_s"] >= 1.0
    deadline = time.monotonic() + 15
    while http(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert http(port, "/readyz") == (200, "ok\n")
    for i in range(25, 40):
        acked.append(c.put(f"u/{i}", str(i)))
    final = acked[-1].header.revision
    rec = StreamRecord("u", WatchSpec(b"u/", b"u0", first), [])
    assert read_stream(w, rec, final, time.monotonic() + 30), "the watch did not reach the final revision"
    cl.stop()
    result = check_store_history(cl.data_dir, [rec], acked=[], first=first, final=final)
    assert result.ok, result.summary()
