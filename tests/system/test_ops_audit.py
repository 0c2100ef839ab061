"""Audit of issue #12's operations features (defrag, snapshots, quota, metrics) as an operator
and a hostile client would use them: each test is named after the bug it pins down.  Tests of
bugs not fixed yet are strict xfails (the owner fixes them; the xfail then turns into a failure
that says so)."""
from __future__ import annotations

import os
import subprocess
import threading
import time
import sys

import pytest

from zwatch.actors.store import Store


def _store_file(tmp_path) -> str:
    """A real zwatch store of ~1.4 MB (300 puts of 3 KB)."""
    d = str(tmp_path / "store")
    s = Store(d)
    try:
        for i in range(300):
            s.apply_batch([("put", {"key": f"k{i:05d}".encode(), "value": os.urandom(3000)})])
    finally:
        s.close()
    return os.path.join(d, "data.mdb")


def _zwatch(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "zwatch.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.mark.parametrize("cmd", ["status", "restore"])
def test_truncated_snapshot_is_refused_with_a_clear_error_not_a_sigbus(tmp_path, cmd):
    """A snapshot cut short (a copy interrupted by a full disk, a partial scp, a `.part` file
    renamed by hand) is what an operator most often feeds `snapshot status` / `restore`."""
    full = _store_file(tmp_path)
    cut = str(tmp_path / "cut.db")
    with open(full, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(os.path.getsize(full) // 3))
    args = ["snapshot", "status", cut] if cmd == "status" else \
        ["snapshot", "restore", cut, "--data-dir", str(tmp_path / "restored")]
    r = _zwatch(*args)
    print(r.returncode, r.stdout, r.stderr)
    assert r.returncode == 1, (r.returncode, r.stderr)          # etcdctl's ExitError, not a signal
    assert "Error:" in r.stderr and "cut.db" in r.stderr
    assert not os.path.exists(tmp_path / "restored" / "data.mdb")


def test_snapshot_begin_does_not_stall_other_clients_reads(make_cluster):
    """Reads sent one after another once another session's snapshot_begin copy has begun are
    answered before the copy ends (etcd streams a snapshot without blocking reads).  Counts, not
    timing: a syncer busy copying answers at most the one read queued meanwhile before the
    snapshot_begin reply (inline copy: none)."""
    from zwatch.client import Put
    from support import Raw, ok
    cl = make_cluster()
    c = cl.client(timeout=60)
    for start in range(0, 12000, 100):                         # ~100 MB: a copy + hash of ~0.3 s or more
        c.txn(success=[Put(f"big/{i:05d}", os.urandom(2048).hex()) for i in range(start, start + 100)])
    admin, reader = Raw(cl.fanout_eps[0]), Raw(cl.fanout_eps[0])
    assert ok(reader.call("range", {"key": b"big/00001"}))["kvs"]   # the read path is warm
    order = []
    begin_id = admin.send("snapshot_begin", {})
    threading.Thread(target=_await, args=(admin, begin_id, order), daemon=True).start()
    snapdir = os.path.join(cl.data_dir, "snapshots")
    deadline = time.monotonic() + 30       # the copy has begun: its temp file exists, not answered yet
    while not (os.path.isdir(snapdir) and os.listdir(snapdir)) and not order:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    # One read at a time: a loop busy copying answers at most the read(s) queued during the copy
    # (one) before the snapshot_begin reply; a loop that keeps serving answers one after another.
    answered, deadline = 0, time.monotonic() + 60
    while not order and time.monotonic() < deadline:
        assert ok(reader.call("range", {"key": b"big/00001"}))["kvs"]
        answered += not order
    print("reads answered while the snapshot was being copied:", answered, "then:", order)
    assert order == ["snapshot_begin"] and answered >= 3


def _await(raw, req_id, order):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        msg = raw._recv(deadline)
        if msg is not None and msg[0] in ("ok", "err") and msg[1] == req_id:
            order.append("snapshot_begin" if "token" in msg[2] else "range")
            return


def _two_free_ports_in_a_row() -> int:
    import socket
    from zwatch.tools.cluster import free_port
    while True:
        base = free_port()
        if base < 65000:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + 1))
                return base
            except OSError:
                pass


def test_up_with_fanout_metrics_port_serves_every_fanout_instead_of_a_restart_loop(tmp_path):
    import re
    import signal
    from zwatch.tools.cluster import free_port
    base = _two_free_ports_in_a_row()
    metrics = _two_free_ports_in_a_row()
    env = dict(os.environ)
    env.pop("PORT", None)
    env.update({"ZWATCH_DATA_DIR": str(tmp_path / "data"), "ZWATCH_WRITER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
                "ZWATCH_PUB_ENDPOINT": f"tcp://127.0.0.1:{free_port()}", "ZWATCH_SYNCER_ENDPOINT":
                f"tcp://127.0.0.1:{free_port()}", "ZWATCH_LOG_FORMAT": "json", "ZWATCH_DRAIN_S": "1",
                "PYTHONUNBUFFERED": "1", "ZWATCH_FANOUT_METRICS_PORT": str(metrics)})
    proc = subprocess.Popen([sys.executable, "-m", "zwatch.cli", "up", "-c", "fanout=2", "-p", str(base)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 30      # both fan-outs joined, or one of them restarted 3 times
        while time.monotonic() < deadline:
            joined = {m.group(1) for m in (re.match(r"\S+ (fanout\.\d)\s*\|.*fanout\.joined_stream", x)
                                           for x in list(lines)) if m}
            restarts = [x for x in list(lines) if "supervisor" in x and "exited with code" in x]
            if len(joined) == 2 or len(restarts) >= 3:
                break
            time.sleep(0.05)
        print("".join(lines[-15:]))
        assert restarts == [] and joined == {"fanout.1", "fanout.2"}, (sorted(joined), restarts[:2])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
