"""`zwatch logs` on the lines of a real cluster: the verdict, the figures, the PNG, a dead writer."""
import json
import subprocess
import sys
import time

import pytest


def zwatch_logs(paths, *args):
    r = subprocess.run([sys.executable, "-m", "zwatch.cli", "logs", *map(str, paths), *args],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def write_logs(cluster, tmp_path):
    paths = []
    for name, actor in cluster.actors.items():
        p = tmp_path / f"{name}.log"
        p.write_text("".join(actor.raw))
        paths.append(p)
    return paths


def wait_stats(cluster, count):
    for name in cluster.actors:
        cluster[name].wait_event(f"{name.rstrip('0123456789')}.stats", timeout=20, count=count)


def test_logs_of_a_working_cluster_say_healthy_with_its_write_rate_and_fanouts(make_cluster, tmp_path):
    cluster = make_cluster(fanouts=2)
    client = cluster.client(cluster.fanout_eps)
    watch = client.watch(b"k/", prefix=True)
    for i in range(200):
        client.put(b"k/%d" % i, b"v")
    seen = 0
    while seen < 200:
        seen += len(watch.get(timeout=10).events)
    before = len(cluster["writer"].events("writer.stats"))
    wait_stats(cluster, before + 2)
    rc, out, err = zwatch_logs(write_logs(cluster, tmp_path), "-w", "json")
    rep = json.loads(out)
    print(json.dumps(rep, indent=1)[:3000])
    assert rc == 0 and rep["verdict"] == "HEALTHY", (rep["reasons"], err)
    kinds = [a["kind"] for a in rep["actors"]]
    assert kinds.count("fanout") == 2 and "writer" in kinds and "syncer" in kinds
    writer = next(a for a in rep["actors"] if a["kind"] == "writer")
    assert writer["write_rate_1m"] > 0 and writer["revision"] >= 200
    assert all(a["up"] for a in rep["actors"])
    png = tmp_path / "timeline.png"
    rc, out, err = zwatch_logs(write_logs(cluster, tmp_path), "--png", png)
    assert rc == 0, err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "HEALTHY" in out and "writer" in out


def test_logs_say_the_writer_is_down_once_it_stopped_logging(make_cluster, tmp_path):
    cluster = make_cluster(fanouts=1)
    cluster.client().put(b"a", b"1")
    cluster["writer"].kill()                                  # SIGKILL: no writer.stop line
    n = len(cluster["fanout0"].events("fanout.stats"))
    cluster["fanout0"].wait_event("fanout.stats", timeout=20, count=n + 4)   # 4 intervals of 1 s
    rc, out, _ = zwatch_logs(write_logs(cluster, tmp_path))
    print(out)
    assert rc == 1
    assert out.startswith("DEGRADED") and "! writer is down" in out
