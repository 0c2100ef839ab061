"""Prometheus /metrics of a real cluster (issue #12 item 2): each actor's port scraped over HTTP
and parsed with prometheus_client's own parser while the figures move with real traffic."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from zwatch import messages
from zwatch.tools.cluster import Actor, free_port, raw_session

from support import Raw, bare_dealer, collect, err_code, ok

ACTORS = ("writer", "syncer", "fanout")


def scrape(port: int) -> dict:
    """{sample name: {sorted labels tuple: value}}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: dict, metric: str, **labels) -> float:
    return samples.get(metric, {}).get(tuple(sorted(labels.items())), 0.0)


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def metrics_env() -> tuple[dict, dict]:
    ports = {actor: free_port() for actor in ACTORS}
    env = {f"ZWATCH_{actor.upper()}_METRICS_PORT": str(port) for actor, port in ports.items()}
    return ports, env


def test_every_actor_serves_metrics_that_move_with_the_traffic(make_cluster):
    ports, env = metrics_env()
    # No ring: a watch from an old revision is served by the syncer (batches, records scanned).
    cl = make_cluster(env={**env, "ZWATCH_RING_REVISIONS": "0", "ZWATCH_IDLE_TIMEOUT_S": "60"})
    for name in ("writer", "syncer", "fanout0"):
        line = cl[name].wait_event("metrics.serving")[0]
        assert line["port"] == ports[name.rstrip("0")]
    before = {actor: scrape(port) for actor, port in ports.items()}
    assert "process_resident_memory_bytes" in before["writer"]     # process metrics, per actor

    # Writes through the fan-out (not straight to the writer): its request metrics must move.
    c1, c2 = cl.client(direct_writes=False), cl.client()
    raw = Raw(cl.fanout_eps[0])
    n = 25
    for i in range(n):
        c1.put(f"k{i}", "v")
    c2.get("k1")
    c2.get("k2")
    # Errors: a put of an empty key (the writer refuses it) and a watch_cancel before hello
    # (refused by the fan-out itself).
    assert err_code(raw.call("put", {"key": b"", "value": b"x"})) == "INVALID_ARGUMENT"
    ok(raw.call("alarm_list", {}))        # answered by the writer outside the group commit
    anonymous = bare_dealer(cl.fanout_eps[0])
    anonymous.send(messages.encode_request("watch_cancel", 1, {"watch_id": 1}))
    assert anonymous.poll(10_000)
    kind, _, body = messages.decode_server_frame(anonymous.recv())
    assert (kind, body["code"]) == ("err", "FAILED_PRECONDITION")
    anonymous.close()
    # Watchers: 2 synced, 1 future, 1 from revision 1 (caught up by the syncer, then synced).
    w_live = c1.watch("k0")
    w_prefix = c2.watch("k", prefix=True)
    w_future = c1.watch("k0", start_revision=10_000)
    w_old = c2.watch("k", prefix=True, start_revision=1)
    assert len(collect(w_old, n, timeout=20)) == n
    ok(raw.call("watch_create", {"key": b"zz", "watch_id": 7}))

    after = {}

    def settled():
        after.update({actor: scrape(port) for actor, port in ports.items()})
        f = after["fanout"]
        return (value(f, "zwatch_fanout_watchers", state="synced") == 4
                and value(after["syncer"], "zwatch_sync_batches_total") >= 1)

    assert wait_for(settled), after["fanout"].get("zwatch_fanout_watchers")
    w, s, f = after["writer"], after["syncer"], after["fanout"]
    b = before

    def grew(actor, metric, **labels):
        return value(after[actor], metric, **labels) - value(b[actor], metric, **labels)

    # Writer: one commit per sequential put, the failed put committed nothing of its own but is
    # a request with its code.
    print({k: v for k, v in w.items() if k.startswith("zwatch_")})
    assert grew("writer", "zwatch_commits_total") >= n
    assert grew("writer", "zwatch_requests_total", op="put", code="OK") == n
    assert grew("writer", "zwatch_requests_total", op="put", code="INVALID_ARGUMENT") == 1
    assert grew("writer", "zwatch_request_duration_seconds_count", op="put") == n + 1
    assert grew("writer", "zwatch_requests_total", op="alarm_list", code="OK") == 1
    assert value(w, "zwatch_commit_duration_seconds_count") == value(w, "zwatch_commits_total")
    assert value(w, "zwatch_commit_duration_seconds_bucket", le="+Inf") == value(w, "zwatch_commits_total")
    assert value(w, "zwatch_revision") == n + 1
    assert value(w, "zwatch_db_size_bytes") > 0
    # Syncer: the two gets, the catch-up of the watch from revision 1.
    assert grew("syncer", "zwatch_syncer_reads_total") == 2
    assert grew("syncer", "zwatch_sync_records_scanned_total") >= n
    assert value(s, "zwatch_sync_batch_lag_revisions") >= n - 1   # the batch started at revision 1
    # Fan-out: three sessions open (c1, c2, raw; the anonymous one never said hello), watchers
    # by state, requests by op and code, including the errors.
    assert value(f, "zwatch_fanout_sessions") == 3
    assert value(f, "zwatch_fanout_watchers", state="synced") == 4
    assert value(f, "zwatch_fanout_watchers", state="future") == 1
    assert value(f, "zwatch_fanout_watchers", state="unsynced") == 0
    assert grew("fanout", "zwatch_fanout_client_requests_total", op="put", code="OK") == n
    assert grew("fanout", "zwatch_fanout_client_requests_total", op="put", code="INVALID_ARGUMENT") == 1
    assert grew("fanout", "zwatch_fanout_client_requests_total", op="watch_cancel",
                code="FAILED_PRECONDITION") == 1
    assert grew("fanout", "zwatch_fanout_client_requests_total", op="range", code="OK") == 2
    assert grew("fanout", "zwatch_fanout_client_requests_total", op="watch_create", code="OK") == 5
    assert grew("fanout", "zwatch_fanout_client_requests_total", op="hello", code="OK") == 3
    assert grew("fanout", "zwatch_fanout_request_duration_seconds_count", op="put") == n + 1
    assert value(f, "zwatch_fanout_revision_lag") == 0
    # Publishes carry the writer's commit time (heartbeats too): the fan-out has seen some.
    assert value(f, "zwatch_fanout_last_commit_timestamp_seconds") > 0
    print("fan-out put: mean ms", 1000 * value(f, "zwatch_fanout_request_duration_seconds_sum", op="put")
          / value(f, "zwatch_fanout_request_duration_seconds_count", op="put"))

    # A session that leaves is no longer counted.
    raw.close()
    c2.close()
    assert wait_for(lambda: value(scrape(ports["fanout"]), "zwatch_fanout_sessions") == 1)
    assert w_live and w_prefix and w_future


def test_port_in_use_is_one_line_and_the_cli_flag_gives_each_fanout_its_own(make_cluster):
    ports, env = metrics_env()
    cl = make_cluster(env={**env, "ZWATCH_IDLE_TIMEOUT_S": "60"})
    cl["fanout0"].wait_event("metrics.serving")
    # A second fan-out of the same environment: the port is taken -> one line, exit code 2.
    second_ep = f"tcp://127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "zwatch.actors", "fanout", "--listen", second_ep]
    r = subprocess.run(argv, env=cl.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().count("\n") == 0 and "ZWATCH_FANOUT_METRICS_PORT" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert '"metrics.bind_failed"' in r.stdout
    # `--metrics-port N` wins over the environment.
    own = free_port()
    second = Actor("fanout1", argv + ["--metrics-port", str(own)], cl.env)
    second.start()
    try:
        second.wait_event("fanout.joined_stream", timeout=20)
        assert second.wait_event("metrics.serving")[0]["port"] == own
        c = cl.client([second_ep])
        c.put("x", "1")
        assert value(scrape(own), "zwatch_fanout_client_requests_total", op="put", code="OK") == 1
        assert value(scrape(own), "zwatch_fanout_sessions") == 1
    finally:
        second.kill()


def test_without_prometheus_client_the_actor_names_the_extra(tmp_path):
    """A port set but the extra not installed: one line naming it, exit code 2."""
    shadow = tmp_path / "shadow" / "prometheus_client"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "shadow"), ZWATCH_WRITER_METRICS_PORT=str(free_port()),
               ZWATCH_DATA_DIR=str(tmp_path / "data"), ZWATCH_WRITER_ENDPOINT=f"tcp://127.0.0.1:{free_port()}",
               ZWATCH_PUB_ENDPOINT=f"tcp://127.0.0.1:{free_port()}", ZWATCH_LOG_FORMAT="json")
    r = subprocess.run([sys.executable, "-m", "zwatch.actors", "writer"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().count("\n") == 0 and "pip install 'zwatch[metrics]'" in r.stderr, r.stderr
    assert not (tmp_path / "data").exists(), "the writer started before refusing"


def test_a_stalled_session_shows_in_the_fanout_metrics(make_cluster):
    """A session that never reads: victims, a session with a backlog and its age, as a scrape
    sees them (the lag figures of fanout.stats / fanout.backlog)."""
    ports, env = metrics_env()
    cl = make_cluster(env={**env, "ZWATCH_SESSION_WINDOW_BYTES": str(64 << 10), "ZWATCH_STALL_S": "0.2",
                           "ZWATCH_IDLE_TIMEOUT_S": "60", "ZWATCH_STUCK_SESSION_S": "600"})
    stalled = raw_session(cl.fanout_eps[0], RCVHWM=1, RCVBUF=4096)
    stalled.send(messages.encode_request("watch_create", 2, {"key": b"hot", "watch_id": 1}))
    c = cl.client()
    for _ in range(100):
        c.put("hot", "x" * 4096)
    seen = {}

    def backlog_shows():
        seen.update(scrape(ports["fanout"]))
        return (value(seen, "zwatch_fanout_victims_total") >= 1 and value(seen, "zwatch_fanout_slow_sessions") >= 1
                and value(seen, "zwatch_fanout_session_backlog_max_seconds") > 0)

    assert wait_for(backlog_shows, timeout=20), {k: v for k, v in seen.items() if k.startswith("zwatch_fanout")}
    stalled.close()
