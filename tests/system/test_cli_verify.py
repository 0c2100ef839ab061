"""`zwatch watch --verify` and `zwatch hash-watch` through the real script (SPEC.md 7.10): the
live watch's verified bookmarks print the very hash hash-watch computes from history."""
from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from test_cli import _env, ok, zw


def test_watch_verify_prints_the_hash_hash_watch_computes(cluster):
    ep = cluster.fanout_eps[0]
    c = cluster.client()
    for i in range(5):
        c.put(f"cv/{i}", str(i))                              # revisions 2..6
    argv = [sys.executable, "-m", "zwatch.cli", "--endpoints", ep, "watch", "cv/", "--prefix", "--rev", "3",
            "--verify", "--verify-interval", "0.2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    try:
        for i in range(3):
            c.put(f"cv/{i}", f"live{i}")                      # revisions 7..9
        seen = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            m = re.match(r"verified: revision (\d+), stream hash ([0-9a-f]{32}) \(events since revision 3\)", line)
            if m and int(m.group(1)) >= 9:
                seen = int(m.group(1)), m.group(2)
                break
        assert seen, "no verified bookmark at or after revision 9"
        rev, live_hash = seen
        out = ok(ep, "hash-watch", "cv/", "--prefix", "--from", "3", "--to", str(rev))
        assert out == f"{live_hash} 7 events in revisions [3, {rev}]\n"
        js = ok(ep, "hash-watch", "cv/", "--prefix", "--from", "3", "--to", str(rev), "-w", "json")
        assert json.loads(js) == {"header": {"revision": rev}, "hash": live_hash, "events": 7, "start_revision": 3,
                                  "revision": rev}
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    # stdout is etcdctl's: the events, no progress lines of the verifier's own bookmarks.
    assert "progress notify" not in stdout and stdout.count("PUT") == 7


def test_hash_watch_refuses_bad_intervals(cluster):
    ep = cluster.fanout_eps[0]
    r = zw(ep, "hash-watch", "k", "--from", "0")
    assert r.returncode == 128 and "--from" in r.stderr
    r = zw(ep, "hash-watch", "k", "--from", "1", "--to", "999999")
    assert r.returncode != 0 and "future revision" in r.stderr and "Traceback" not in r.stderr
