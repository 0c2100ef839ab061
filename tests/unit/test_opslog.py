"""`zwatch logs`' reader and summary (protocol/cli/opslog.py), fed synthetic lines: no processes."""
import json

import pytest

from zwatch.cli.opslog import Summary, Thresholds, parse_line, parse_when, render_text

T0 = 1_800_000_000.0


def line(event, t, actor=None, **fields):
    from datetime import datetime, timezone
    actor = actor or event.split(".")[0]
    rec = {"event": event, "level": fields.pop("level", "info"), "actor": actor, "pid": fields.pop("pid", 1),
           "timestamp": datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z"), **fields}
    return json.dumps(rec)


def healthy_lines(t=T0, fanouts=("tcp://127.0.0.1:2379",)):
    out = [line("writer.start", t, pid=10), line("syncer.start", t, pid=11, instance="syncer-11")]
    for i, ep in enumerate(fanouts):
        out.append(line("fanout.start", t, pid=20 + i, instance=f"fanout-{20 + i}", endpoint=ep))
    for k in range(1, 4):
        out.append(line("writer.stats", t + 10 * k, pid=10, revisions=5000, requests=5100, interval_s=10,
                        commit_ms_p50=1.0, commit_ms_p99=4.5, revision=5000 * k, db_size=1 << 20,
                        db_size_in_use=1 << 19, compact_revision=0, alarms=[]))
        out.append(line("syncer.stats", t + 10 * k, pid=11, instance="syncer-11", records_scanned=7, pending=0,
                        interval_s=10))
        for i, ep in enumerate(fanouts):
            out.append(line("fanout.stats", t + 10 * k, pid=20 + i, instance=f"fanout-{20 + i}", sessions=3,
                            watchers=9, revision=5000 * k, revision_lag=0, time_lag_ms=2.0, time_lag_ms_max=9.0,
                            victims=0, victims_pending=0, interval_s=10))
    return out


def summarize(lines, **kw):
    s = Summary(**kw)
    for text in lines:
        s.feed_line(text)
    return s.report()


def test_healthy_cluster_reads_healthy_with_its_write_rate():
    rep = summarize(healthy_lines())
    assert rep["verdict"] == "HEALTHY", rep["reasons"]
    writer = next(a for a in rep["actors"] if a["kind"] == "writer")
    assert writer["write_rate"] == 500.0 and writer["write_rate_1m"] == 500.0
    assert writer["commit_ms_p99"] == 4.5 and writer["db_size_in_use"] == 1 << 19
    assert "HEALTHY" in render_text(rep)


@pytest.mark.parametrize("prefix", ["06:01:02 writer.1 | ", "\x1b[36m06:01:02 fanout.1 |\x1b[0m ",
                                    "Dec 03 06:01:02 host zwatch-writer[123]: ", ""])
def test_lines_as_honcho_journalctl_or_supervisord_collected_them(prefix):
    rec = parse_line(prefix + line("writer.stats", T0, revisions=1) + "\n")
    assert rec is not None and rec["event"] == "writer.stats" and rec["_t"] == T0


def test_lines_without_a_record_are_counted_as_skipped():
    s = Summary()
    for text in ["Traceback (most recent call last):", "2026-12-03 06:00:00 [info] writer.start", "{not json",
                 '{"no": "event"}', ""]:
        s.feed_line(text)
    assert s.report()["skipped"] == 4 and s.report()["lines"] == 0


def test_a_fanout_restarted_on_its_endpoint_is_one_fanout_with_a_restart():
    lines = healthy_lines()
    lines.append(line("fanout.start", T0 + 31, pid=99, instance="fanout-99", endpoint="tcp://127.0.0.1:2379"))
    lines.append(line("fanout.stats", T0 + 32, pid=99, instance="fanout-99", sessions=1, interval_s=10))
    rep = summarize(lines)
    fanouts = [a for a in rep["actors"] if a["kind"] == "fanout"]
    assert len(fanouts) == 1 and fanouts[0]["restarts"] == 1 and fanouts[0]["up"]


def test_an_actor_silent_for_three_intervals_while_others_log_is_down():
    lines = healthy_lines()
    for k in range(4, 8):                 # the writer went quiet after T0 + 30
        lines.append(line("syncer.stats", T0 + 10 * k, pid=11, instance="syncer-11", interval_s=10))
    rep = summarize(lines)
    assert rep["verdict"] == "DEGRADED" and "writer is down" in rep["reasons"]


def test_lag_above_the_threshold_and_pending_victims_degrade():
    lines = healthy_lines()
    lines.append(line("fanout.stats", T0 + 40, pid=20, instance="fanout-20", revision_lag=20, time_lag_ms=7500.0,
                      time_lag_ms_max=8000.0, victims=4, victims_pending=4, interval_s=10,
                      slowest_session="ab12", slowest_age_s=42.0))
    lines.append(line("fanout.backlog", T0 + 40, pid=20, instance="fanout-20",
                      sessions=[{"session": "ab12", "client": "slow-app", "unacked_bytes": 8 << 20, "held_frames": 3,
                                 "oldest_revision": 120, "oldest_age_s": 42.0, "victims": 4}]))
    rep = summarize(lines)
    assert rep["verdict"] == "DEGRADED"
    text = " ".join(rep["reasons"])
    assert "time lag 7500.0 ms" in text and "victims pending 4" in text and "ab12" in text
    assert "slow session ab12 (slow-app): 42.0 s behind" in render_text(rep)
    assert summarize(lines, thresholds=Thresholds(time_lag_ms=10_000, backlog_age_s=60))["reasons"] == \
        ["fanout tcp://127.0.0.1:2379 victims pending 4"]


def test_compaction_running_then_done_and_alarm_state():
    lines = healthy_lines()
    lines.append(line("writer.compaction_started", T0 + 31, compact_revision=9000, previous=0, trigger="auto"))
    lines.append(line("writer.compaction_progress", T0 + 32, keys_scanned=700, records_removed=6000, elapsed_s=1.0))
    running = summarize(lines)
    w = next(a for a in running["actors"] if a["kind"] == "writer")
    assert w["compaction"]["state"] == "running" and w["compaction"]["records_removed"] == 6000
    assert "compaction RUNNING to 9000 (auto)" in render_text(running)
    lines.append(line("writer.compacted", T0 + 33, compact_revision=9000, duration_s=2.0, records_removed=8999))
    lines.append(line("writer.alarm_raised", T0 + 34, level="warning", alarm="NOSPACE"))
    done = summarize(lines)
    w = next(a for a in done["actors"] if a["kind"] == "writer")
    assert w["compaction"]["state"] == "idle" and w["compaction"]["done"] == 1 and w["compaction"]["auto"] == 1
    assert w["alarms"] == ["NOSPACE"] and "alarm NOSPACE" in done["reasons"]
    lines.append(line("writer.alarm_disarmed", T0 + 35, level="warning", alarm="NOSPACE"))
    assert summarize(lines)["verdict"] == "HEALTHY"


def test_since_and_until_select_a_window():
    s = Summary(since=T0 + 15, until=T0 + 25)
    for text in healthy_lines():
        s.feed_line(text)
    writer = next(a for a in s.report()["actors"] if a["kind"] == "writer")
    assert writer["starts"] == 0 and writer["revision"] == 10000


def test_since_takes_ages_and_iso_times():
    assert parse_when("10m", T0) == T0 - 600 and parse_when("2h ago", T0) == T0 - 7200
    assert parse_when("2027-01-15T08:00:00Z", T0) == 1800000000.0
    with pytest.raises(ValueError):
        parse_when("yesterday-ish", T0)


def test_lines_a_fanout_logs_before_its_start_line_join_it():
    lines = healthy_lines()
    early = line("metrics.serving", T0 - 1, actor="fanout", pid=30, instance="fanout-30", port=9000)
    later = [line("fanout.start", T0, pid=30, instance="fanout-30", endpoint="tcp://127.0.0.1:2380"),
             line("fanout.stats", T0 + 30, pid=30, instance="fanout-30", sessions=0, interval_s=10)]
    rep = summarize([early] + lines + later)
    names = [a["name"] for a in rep["actors"] if a["kind"] == "fanout"]
    assert names == ["tcp://127.0.0.1:2379", "tcp://127.0.0.1:2380"] and rep["verdict"] == "HEALTHY"


def test_a_backlog_is_forgotten_once_the_stats_say_nobody_is_behind():
    lines = healthy_lines()
    lines.append(line("fanout.backlog", T0 + 31, pid=20, instance="fanout-20",
                      sessions=[{"session": "ab12", "held_frames": 2, "oldest_age_s": 12.0}]))
    assert len(next(a for a in summarize(lines)["actors"] if a["kind"] == "fanout")["slowest_sessions"]) == 1
    lines.append(line("fanout.stats", T0 + 40, pid=20, instance="fanout-20", slow_sessions=0, interval_s=10))
    assert next(a for a in summarize(lines)["actors"] if a["kind"] == "fanout")["slowest_sessions"] == []
