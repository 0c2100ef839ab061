"""actors/metrics.py without an actor: the hot-path instruments, the cumulative totals, and each
collector fed a stand-in of the actor's state (plain attributes, as the collectors read them),
exposed through a real prometheus_client registry and parsed back from the text exposition."""
from __future__ import annotations

import socket
import sys
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from zwatch import messages
from zwatch.actors import metrics
from zwatch.errors import InvalidArgument, PermissionDenied


def scrape(actor_name, actor) -> dict:
    """{sample name: {labels tuple: value}} of one exposition of the actor's registry."""
    text = generate_latest(metrics.registry_for(actor_name, actor)).decode()
    return samples_of(text)


def samples_of(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(samples, metric, **labels):
    return samples[metric][tuple(sorted(labels.items()))]


class Log:
    def __init__(self):
        self.lines = []

    def info(self, event, **fields):
        self.lines.append(("info", event, fields))

    def error(self, event, **fields):
        self.lines.append(("error", event, fields))


# ---------------------------------------------------------------- instruments
def test_buckets_are_cumulative_and_take_a_weight():
    b = metrics.Buckets((0.001, 0.01, 0.1))
    b.observe(0.0005)
    b.observe(0.001)              # on a bound: counted in that bound's bucket (le)
    b.observe(0.05, n=3)          # three requests of one group commit
    b.observe(7.0)
    buckets, total = b.snapshot()
    assert buckets == [("0.001", 2), ("0.01", 2), ("0.1", 5), ("+Inf", 6)]
    assert b.count == 6
    assert total == pytest.approx(0.0005 + 0.001 + 0.15 + 7.0)


def test_request_meter_settles_a_batch_with_one_duration():
    m = metrics.RequestMeter()
    m.count("put")
    m.count("put")
    m.count("txn", "INVALID_ARGUMENT")
    assert m.counts == {}                  # nothing before the replies are sent
    m.settle(0.002)
    m.done("range", "OK", 0.0003)
    assert m.counts == {("put", "OK"): 2, ("txn", "INVALID_ARGUMENT"): 1, ("range", "OK"): 1}
    assert m.durations["put"].count == 2 and m.durations["put"].sum == pytest.approx(0.004)
    m.settle(1.0)                          # nothing unsettled: no change
    assert m.durations["put"].count == 2


def test_totals_fold_zeroes_the_interval_and_keeps_the_sum():
    t = metrics.Totals()
    st = {"victims": 2, "gaps": 0}
    assert t.read(st)["victims"] == 2
    t.fold(st)
    assert st["victims"] == 0
    st["victims"] += 3
    assert t.read(st)["victims"] == 5


def test_totals_never_go_down_while_folded_under_a_scrape():
    """A scrape between the fold's addition and its reset would count an interval twice (and
    the counter would then go down): the lock makes the fold atomic for readers."""
    t = metrics.Totals()
    st = {"n": 0}
    stop = threading.Event()
    seen = []

    def scraper():
        while not stop.is_set():
            seen.append(t.read(st)["n"])

    th = threading.Thread(target=scraper)
    th.start()
    for _ in range(20_000):
        st["n"] += 1
        t.fold(st) if st["n"] % 7 == 0 else None
    stop.set()
    th.join()
    assert seen and all(a <= b for a, b in zip(seen, seen[1:])), "a cumulative counter went down"


def test_in_flight_settles_by_req_id_with_the_reply_code():
    f = metrics.InFlight()
    a, b = b"session-a", b"session-b"
    f.started(a, 1, "put")
    f.started(a, 2, "range")
    f.started(b, 1, "watch_create")
    f.started(a, 3, "ack")                 # no reply: not tracked
    f.started(a, 4, "bye")                 # its reply leaves outside FanoutCore.reply: counted at once
    # Replies out of order (the writer's and the syncer's interleave), one error.
    f.replied(a, messages.encode_ok(2, {"kvs": [b"x" * 100_000]}))
    f.replied(b, messages.encode_error(1, PermissionDenied("no")))
    f.replied(a, messages.encode_ok(1, {}))
    f.replied(a, messages.encode_ok(99, {}))          # not a request of ours: ignored
    f.replied(b"nobody", messages.encode_ok(1, {}))
    assert f.meter.counts == {("range", "OK"): 1, ("watch_create", "PERMISSION_DENIED"): 1, ("put", "OK"): 1,
                              ("bye", "OK"): 1}
    assert f.by_session == {}
    f.started(a, 5, "put")
    f.forget(a)
    assert f.by_session == {}


def test_in_flight_forgets_what_is_never_answered():
    """A login whose connection ended while it was verified is never answered and has no
    session whose end would forget it: the sweep does."""
    f = metrics.InFlight(max_age_s=0.05)
    f.started(b"orphan", 1, "hello")
    time.sleep(0.1)
    f.started(b"live", 1, "put")           # the sweep runs on the actor's thread, here
    assert list(f.by_session) == [b"live"]


def test_in_flight_is_bounded_per_session():
    f = metrics.InFlight()
    for i in range(metrics.MAX_TRACKED_PER_SESSION * 3):
        f.started(b"s", i, "put")          # replies that never come (their writer died)
    assert len(f.by_session[b"s"]) <= metrics.MAX_TRACKED_PER_SESSION


# ---------------------------------------------------------------- collectors
def fake_writer(tmp_path):
    commits = metrics.Buckets(metrics.COMMIT_BUCKETS)
    for ms in (1, 2, 3):
        commits.observe(ms / 1000)
    meter = metrics.RequestMeter()
    for _ in range(3):
        meter.count("put")
    meter.count("put", "INVALID_ARGUMENT")
    meter.settle(0.004)
    return SimpleNamespace(last_published=42, compact_rev=17, commit_seconds=commits, requests_meter=meter,
                           publish_dropped=2, data_dir=str(tmp_path), lessor={1: None, 2: None},
                           db_size=8192, db_size_in_use=4096, alarms=["NOSPACE"], compacting=True,
                           compaction_records_removed=33, log=Log(), cursor_clock=_cursor_clock(),
                           cursors_expired=4)


def _cursor_clock():
    from zwatch.actors.cursorclock import CursorClock
    clock = CursorClock()
    clock.restore([("slow", 30, 60), ("fast", 41, 60)], now=0.0)
    return clock


def test_writer_collector(tmp_path):
    s = scrape("writer", fake_writer(tmp_path))
    assert one(s, "zwatch_revision") == 42
    assert one(s, "zwatch_compact_revision") == 17
    assert one(s, "zwatch_commits_total") == 3
    assert one(s, "zwatch_commit_duration_seconds_count") == 3
    assert one(s, "zwatch_commit_duration_seconds_bucket", le="0.001") == 1
    assert one(s, "zwatch_commit_duration_seconds_bucket", le="+Inf") == 3
    assert one(s, "zwatch_requests_total", op="put", code="OK") == 3
    assert one(s, "zwatch_requests_total", op="put", code="INVALID_ARGUMENT") == 1
    assert one(s, "zwatch_request_duration_seconds_count", op="put") == 4
    assert one(s, "zwatch_publish_dropped_total") == 2
    assert one(s, "zwatch_db_size_bytes") == 8192
    assert one(s, "zwatch_db_size_in_use_bytes") == 4096
    assert one(s, "zwatch_leases") == 2
    assert one(s, "zwatch_alarm", name="NOSPACE") == 1
    assert one(s, "zwatch_compaction_in_progress") == 1
    assert one(s, "zwatch_compaction_records_removed_total") == 33
    assert one(s, "zwatch_cursors") == 2
    assert one(s, "zwatch_cursor_oldest_lag_revisions") == 42 - 30      # "slow" holds compaction
    assert one(s, "zwatch_cursors_expired_total") == 4
    assert "process_resident_memory_bytes" in s or sys.platform != "linux"


def test_writer_collector_before_run_and_without_other_helpers_figures(tmp_path):
    """Scraped before run() opened the store (the server starts first): what is not there yet
    is left out or zero, never an exception (the scrape would answer 500)."""
    bare = SimpleNamespace(data_dir=str(tmp_path / "none"), log=Log())
    s = scrape("writer", bare)
    assert "zwatch_revision" not in s
    assert one(s, "zwatch_alarm", name="NOSPACE") == 0
    assert one(s, "zwatch_compaction_in_progress") == 0


def test_syncer_collector():
    syncer = SimpleNamespace(totals={"batches": 4, "records_scanned": 1000, "reads": 9},
                             pending={("f", 1): None, ("f", 2): None}, batch=[1, 2, 3],
                             last_batch_lag_revisions=250)
    s = scrape("syncer", syncer)
    assert one(s, "zwatch_sync_batches_total") == 4
    assert one(s, "zwatch_sync_records_scanned_total") == 1000
    assert one(s, "zwatch_syncer_reads_total") == 9
    assert one(s, "zwatch_sync_watchers_pending") == 5
    assert one(s, "zwatch_sync_batch_lag_revisions") == 250


def test_fanout_collector():
    watchers = {i: SimpleNamespace(state=state) for i, state in
                enumerate(["synced"] * 3 + ["unsynced"] * 2 + ["victim"] + ["future"])}
    core = SimpleNamespace(watchers=watchers, st={"victims": 1, "gaps": 0})
    fo = SimpleNamespace(sessions={b"a": 1, b"b": 2}, core=core, st={"bad_requests": 1}, totals=metrics.Totals(),
                         lag=SimpleNamespace(revision_lag=12, time_lag_s=1.5, backlog_max_s=3.5, backlog_sessions=2,
                                             commit_time=1_700_000_000_250_000),
                         request_clock=metrics.InFlight())
    fo.totals.fold(core.st, fo.st)
    core.st["victims"] = 2                 # the interval since the last stats line
    fo.request_clock.started(b"a", 1, "put")
    fo.request_clock.replied(b"a", messages.encode_error(1, InvalidArgument("bad")))
    s = scrape("fanout", fo)
    assert one(s, "zwatch_fanout_sessions") == 2
    assert one(s, "zwatch_fanout_watchers", state="synced") == 3
    assert one(s, "zwatch_fanout_watchers", state="unsynced") == 2
    assert one(s, "zwatch_fanout_watchers", state="victim") == 1
    assert one(s, "zwatch_fanout_watchers", state="future") == 1
    assert one(s, "zwatch_fanout_victims_total") == 3
    assert one(s, "zwatch_fanout_bad_requests_total") == 1
    assert one(s, "zwatch_fanout_revision_lag") == 12
    assert one(s, "zwatch_fanout_time_lag_seconds") == 1.5
    assert one(s, "zwatch_fanout_session_backlog_max_seconds") == 3.5
    assert one(s, "zwatch_fanout_slow_sessions") == 2
    assert one(s, "zwatch_fanout_last_commit_timestamp_seconds") == 1_700_000_000.25
    assert one(s, "zwatch_fanout_client_requests_total", op="put", code="INVALID_ARGUMENT") == 1
    assert one(s, "zwatch_fanout_request_duration_seconds_count", op="put") == 1


# ---------------------------------------------------------------- serve()
def test_serve_off_without_a_port():
    assert metrics.serve("writer", SimpleNamespace(log=Log()), None) == 0


def test_serve_exposes_the_actor_over_http(tmp_path):
    w = fake_writer(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert metrics.serve("writer", w, port) == 0
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert one(samples_of(text), "zwatch_revision") == 42
        assert w.log.lines[-1][:2] == ("info", "metrics.serving")
        assert w.log.lines[-1][2]["port"] == port
    finally:
        w.metrics_server.shutdown()
        w.metrics_server.server_close()


def test_serve_port_in_use_is_one_line_and_an_event(tmp_path, capsys):
    w = fake_writer(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert metrics.serve("writer", w, port) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZWATCH_WRITER_METRICS_PORT" in err and str(port) in err
    assert "address already in use" in err
    assert w.log.lines[-1][:2] == ("error", "metrics.bind_failed")


@pytest.mark.parametrize("port", [70_000, -1])
def test_serve_refuses_a_port_out_of_range(port, capsys):
    """`--metrics-port` is not checked by zwatch.settings: one line, exit code 2, no traceback."""
    assert metrics.serve("fanout", SimpleNamespace(log=Log()), port) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_serve_with_a_host_that_does_not_resolve_is_one_line(tmp_path, capsys):
    w = fake_writer(tmp_path)
    assert metrics.serve("writer", w, 9, host="no-such-host.invalid") == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert w.log.lines[-1][:2] == ("error", "metrics.bind_failed")


def test_serve_without_prometheus_client_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)     # import -> ImportError
    assert metrics.serve("fanout", SimpleNamespace(log=Log()), 9100) == 2
    err = capsys.readouterr().err
    assert "pip install 'zwatch[metrics]'" in err and "ZWATCH_FANOUT_METRICS_PORT" in err


def test_reply_head_reads_only_the_head():
    assert messages.reply_head(messages.encode_ok(2**40, {"v": b"x" * 1_000_000})) == ("ok", 2**40)
    assert messages.reply_head(messages.encode_error(None, InvalidArgument("x"))) == ("err", None)
    assert messages.reply_head(b"\x01") is None
    assert messages.reply_error_code(messages.encode_error(3, PermissionDenied("x"))) == "PERMISSION_DENIED"
    assert messages.reply_error_code(b"garbage") == "INTERNAL"


@pytest.mark.parametrize("req_id", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, None, -1])
@pytest.mark.parametrize("kind", ["ok", "err", "pong"])
def test_reply_head_agrees_with_msgpack(kind, req_id):
    import msgpack
    raw = msgpack.packb([kind, req_id, {"a": b"x" * 50}], use_bin_type=True)
    assert messages.reply_head(raw) == (kind, req_id)
    assert messages.reply_head(raw[:4]) in (None, (kind, req_id))   # truncated: never a wrong id
