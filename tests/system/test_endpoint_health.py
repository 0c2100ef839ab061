"""`endpoint health|status|hashkv` and `member list` answered by the fan-outs themselves (issue #12):
a fan-out says within about a second that the writer or syncer behind it is gone."""
import json
import signal
import subprocess
import sys
import time

import pytest

from zwatch.tools.cluster import free_port


def zw(cluster, *args, timeout=60):
    eps = ",".join(cluster.fanout_eps)
    r = subprocess.run([sys.executable, "-m", "zwatch.cli", "--endpoints", eps, *args], capture_output=True,
                       text=True, timeout=timeout, env=cluster.env)
    return r


def wait_healthy(cluster, deadline_s=20):
    deadline = time.monotonic() + deadline_s
    while True:
        r = zw(cluster, "endpoint", "health")
        if r.returncode == 0:
            return r
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.3)


@pytest.fixture
def two_fanouts(make_cluster):
    return make_cluster(fanouts=2)


def test_health_is_answered_by_each_fanout_in_etcdctls_words(two_fanouts):
    r = wait_healthy(two_fanouts)
    lines = r.stderr.splitlines()                       # etcdctl prints these on stderr
    assert [line.split(" is ")[0] for line in lines] == two_fanouts.fanout_eps
    assert all(" is healthy: successfully committed proposal: took = " in line for line in lines)
    rows = json.loads(zw(two_fanouts, "endpoint", "health", "-w", "json").stdout)
    assert [(h["endpoint"], h["health"]) for h in rows] == [(ep, True) for ep in two_fanouts.fanout_eps]
    assert all("error" not in h for h in rows)


@pytest.mark.parametrize("actor", ["writer", "syncer"])
def test_health_fails_within_a_second_when_the_actor_behind_the_fanout_is_stopped(two_fanouts, actor):
    """SIGSTOP: the connection stays up and nothing answers (the worst case: no error to see).
    The reply must come from the fan-out's own check (its reason names the actor), not from the
    client giving up: the command timeout is 30 s."""
    c = two_fanouts.client(two_fanouts.fanout_eps[:1])
    wait_healthy(two_fanouts)
    proc = two_fanouts[actor].proc
    proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        h = c.health(timeout=30)
        took = time.monotonic() - t0
        r = zw(two_fanouts, "endpoint", "health", "--command-timeout", "30")
        print(f"{actor} stopped: health answered in {took:.3f} s; CLI: {r.stderr!r}")
    finally:
        proc.send_signal(signal.SIGCONT)
    assert h.health is False and h.reason == f"{actor} unreachable: no answer within 1 s"
    assert r.returncode == 1 and r.stderr.endswith("Error: unhealthy cluster\n")
    assert r.stderr.count(f"is unhealthy: failed to commit proposal: {actor} unreachable") == 2
    wait_healthy(two_fanouts)                           # and healthy again once it runs


def test_health_with_the_writer_killed_fails_at_once(two_fanouts):
    c = two_fanouts.client(two_fanouts.fanout_eps[:1])
    wait_healthy(two_fanouts)
    two_fanouts["writer"].kill()
    time.sleep(0.5)                                     # the connection's end reaches the fan-out
    h = c.health(timeout=30)
    assert h.health is False and h.reason.startswith("writer unreachable")
    time.sleep(1.6)                                     # its last pong is now older than 3 pings
    s = c.status()                                      # status still answers, saying why
    assert s.errors and s.errors[0].startswith("writer unreachable")


def test_a_dead_fanout_is_unhealthy_after_the_dial_timeout(two_fanouts):
    dead = f"tcp://127.0.0.1:{free_port()}"
    r = subprocess.run([sys.executable, "-m", "zwatch.cli", "--endpoints", f"{two_fanouts.fanout_eps[0]},{dead}",
                        "--dial-timeout", "1s", "endpoint", "health", "-w", "json"], capture_output=True, text=True,
                       timeout=60, env=two_fanouts.env)
    rows = {h["endpoint"]: h for h in json.loads(r.stdout)}
    assert r.returncode == 1 and rows[two_fanouts.fanout_eps[0]]["health"] is True
    assert rows[dead]["health"] is False and rows[dead]["error"]


def test_status_is_served_by_the_fanout_with_etcdctls_columns(two_fanouts):
    c = two_fanouts.client(two_fanouts.fanout_eps[:1])
    for i in range(3):
        c.put(b"k", b"%d" % i)
    time.sleep(1.0)                                    # a writer pong after the puts
    r = zw(two_fanouts, "endpoint", "status", "-w", "table")
    assert r.returncode == 0
    header = r.stdout.splitlines()[1]
    assert [h.strip() for h in header.strip("|").split("|")] == [
        "ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM", "RAFT INDEX",
        "RAFT APPLIED INDEX", "ERRORS"]
    st = json.loads(zw(two_fanouts, "endpoint", "status", "-w", "json").stdout)
    assert [s["Endpoint"] for s in st] == two_fanouts.fanout_eps
    for s in st:
        assert s["Status"]["raftIndex"] == 4 and s["Status"]["raftAppliedIndex"] == 4
        assert s["Status"]["leader"] != s["Status"]["header"]["member_id"]     # the writer leads
        assert "errors" not in s["Status"]


def test_member_list_names_every_fanout_and_cluster_uses_it(two_fanouts):
    wait_healthy(two_fanouts)
    time.sleep(1.2)                                    # every fan-out pinged the syncer since
    r = zw(two_fanouts, "member", "list", "-w", "json")
    members = json.loads(r.stdout)["members"]
    assert sorted(u for m in members for u in m["clientURLs"]) == sorted(two_fanouts.fanout_eps)
    assert len({m["ID"] for m in members}) == 2
    one = subprocess.run([sys.executable, "-m", "zwatch.cli", "--endpoints", two_fanouts.fanout_eps[0], "endpoint",
                          "status", "--cluster"], capture_output=True, text=True, timeout=60, env=two_fanouts.env)
    assert sorted(line.split(", ")[0] for line in one.stdout.splitlines()) == sorted(two_fanouts.fanout_eps)


def test_hashkv_is_the_same_through_every_fanout_and_moves_with_writes(two_fanouts):
    c = two_fanouts.client(two_fanouts.fanout_eps[:1])
    c.put(b"a", b"1")
    first = zw(two_fanouts, "endpoint", "hashkv").stdout.splitlines()
    assert len({line.split(", ")[1] for line in first}) == 1
    at2 = c.hash_kv(2).hash
    c.put(b"a", b"2")
    assert c.hash_kv(2).hash == at2 and c.hash_kv().hash != at2
    assert c.hash_kv().hash_revision == 3


def test_member_list_shows_a_restarted_fanout_once_not_twice_with_one_id(two_fanouts):
    wait_healthy(two_fanouts)
    time.sleep(1.2)
    two_fanouts.restart("fanout1")
    two_fanouts["fanout1"].wait_event("fanout.joined_stream", count=2, timeout=15)
    time.sleep(1.5)                                    # the new instance pinged the syncer; the old one is still listed there
    r = zw(two_fanouts, "member", "list", "-w", "json")
    members = json.loads(r.stdout)["members"]
    assert len(members) == 2 and len({m["ID"] for m in members}) == 2, members
