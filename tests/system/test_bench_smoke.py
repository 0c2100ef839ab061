"""Smoke test of the benchmark suite: every workload with --quick parameters, against a real
zwatch started by the bench.  Checks the JSON lines and that nothing was lost; no timings."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zwatch.tools.bench import workloads

COMMON = {"workload", "variant", "system", "params", "ok", "figures", "server", "clients", "wall_s"}


def run_bench(*args, timeout=240):
    proc = subprocess.run([sys.executable, "-m", "zwatch.tools.bench", *args, "--quick", "--no-progress"],
                          capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, lines


def records(lines, system="zwatch"):
    return [r for r in lines if r.get("system") == system and "workload" in r]


@pytest.mark.parametrize("workload", workloads.ORDER)
def test_quick_workload(workload):
    extra = ["--zwatch-env", "ZWATCH_RING_REVISIONS=100"] if workload == "catchup" else []
    proc, lines = run_bench(workload, *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lines[0]["bench"] == "zwatch" and lines[0]["machine"]["cpus"] >= 1
    recs = records(lines)
    if workload in workloads.IN_PROCESS:      # measured inside the bench process: no server to check
        assert recs and all(r["workload"] == workload and r["ok"] is True and r["figures"] for r in recs), lines
        if workload == "filters_cost":        # kinds_filters.py
            for r in recs:
                figs = r["figures"]
                assert figs["bytes_per_watcher_distinct_keys"] > 0 and figs["cpu_us_per_event_one"] > 0, figs
                if "value_prefix" in r["params"]["kind"]:     # once per event, whatever the watchers
                    assert figs["predicate_evaluations_per_event_one"] == 1.0, figs
                    assert figs["predicate_evaluations_per_event_batch"] == 1.0, figs
        if workload == "verify_cost":         # kinds_verify.py
            (figs,) = [r["figures"] for r in recs]
            assert figs["digest_us_per_event"] > 0 and figs["fanout_us_per_event_group_verified"] > 0, figs
        return
    expected_variants = len(workloads.QUICK[workload].get("watchers", [0])) \
        if workload in ("watch_latency", "catchup", "memory") else 2 if workload == "resync_digest" else 1
    assert len(recs) == expected_variants, lines
    for r in recs:
        assert COMMON <= set(r), r
        assert r["workload"] == workload and r["ok"] is True, r
        figs = r["figures"]
        server = r["server"]
        assert set(server["cpu_s"]) >= {"writer", "syncer", "fanout0"}, server
        assert all(v is not None and v >= 0 for v in server["cpu_s"].values()), server
        assert all(v and v > 0 for v in server["rss_kib"].values()), server
        assert r["clients"]["procs"] >= 1
        if "expected" in figs:
            assert figs["delivered"] == figs["expected"] > 0, figs
            assert figs["order_violations"] == 0, figs
        if workload in ("put_seq", "put_conc"):
            assert figs["puts"] == r["params"]["puts"] and figs["errors"] == 0
            assert figs["puts_per_s"] > 0 and figs["p50_ms"] <= figs["p99_ms"] <= figs["max_ms"]
            assert len(r["clients"]["cpu_s"]) == r["params"].get("clients", 1)
        if workload == "watch_latency":
            assert figs["p50_ms"] <= figs["p90_ms"] <= figs["p99_ms"] <= figs["max_ms"]
            assert figs["p50_ms"] > 0
        if workload == "fanout":
            assert figs["deliveries_per_s"] > 0 and figs["server_cpu_us_per_delivery"] >= 0
        if workload == "catchup":
            # the ring is smaller than the history: the syncer replayed it
            # the watchers' records at least: all of the history when scanned, only their keys'
            # when the batch reads through the key index (a prefix of 10 keys in --quick)
            assert figs["syncer_records_scanned"] >= figs["events_per_watcher"], figs
            assert figs["seconds"] > 0
        if workload == "memory":
            assert figs["watchers"] == r["params"]["watchers"] and figs["rss_kib"] > 0
            assert figs["server_cpu_us_per_watcher"] >= 0 and figs["client_cpu_us_per_watcher"] >= 0, figs
        if workload in ("watch_latency", "watch_latency_distinct", "catchup"):
            assert figs["server_cpu_us_per_event"] >= 0 and figs["client_cpu_us_per_event"] >= 0, figs
        if workload in ("put_seq", "put_conc"):
            assert figs["server_cpu_us_per_put"] >= 0 and figs["client_cpu_us_per_put"] >= 0, figs
        if workload == "startup":
            assert 0 < figs["start_to_first_read_s"] <= figs["start_to_first_watch_created_s"], figs
            assert figs["revisions"] == r["params"]["revisions"], figs
        if workload == "history_single_key":
            # every event of the key, read through the key index: no more records than events
            assert figs["delivered"] == figs["expected"] > 0 and figs["order_violations"] == 0, figs
            assert figs["delivered"] <= figs["syncer_records_scanned"] < r["params"]["revisions"], figs
            assert figs["syncer_rssanon_kib"] > 0 and figs["syncer_rssfile_kib"] >= 0, figs
        if workload == "lease_keepalive":
            assert figs["keepalives"] > 0 and figs["lost_leases"] == 0 and figs["errors"] == 0, figs
            assert figs["writer_cpu_us_per_keepalive"] is not None, figs
            if "fsyncs_per_keepalive" in figs:        # strace present: keep-alives cost no fsync
                assert figs["strace_keepalives"] > 0 and figs["fsyncs_per_keepalive"] == 0, figs
        if workload == "lease_expiry":
            # every lease expired after its TTL and its DELETE reached the watcher
            assert figs["deletes_received"] == figs["leases"] == r["params"]["leases"], figs
            assert figs["early"] == 0 and figs["lost_before_stop"] == 0, figs
            assert figs["p50_ms"] <= figs["p99_ms"] <= figs["max_ms"], figs
    # the tables come last: every figure, then issue #15's rows
    assert any(line.startswith("workload") and "figure" in line for line in proc.stdout.splitlines())
    assert "| metric | zwatch | etcd | zwatch/etcd | target | verdict |" in proc.stdout


def _etcd_unavailable():
    try:
        from zwatch.tools.bench import etcd_stubs
        return etcd_stubs.why_unavailable()
    except Exception as exc:  # pragma: no cover
        return str(exc)


@pytest.mark.skipif(_etcd_unavailable() is not None, reason="etcd comparison not available (optional)")
def test_quick_against_etcd():
    proc, lines = run_bench("put_seq", "watch_latency_distinct", "fanout", "startup", "--etcd-only", timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert any(r.get("system") == "etcd" and r.get("client") == "aio" for r in lines)
    recs = records(lines, "etcd")
    assert {r["workload"] for r in recs} == {"put_seq", "watch_latency_distinct", "fanout", "startup"}
    for r in recs:
        if r["workload"] == "startup":           # zwatch only: skipped, no etcd started
            assert r.get("skipped") and not r["figures"], r
            continue
        assert r["ok"] is True and set(r["server"]["cpu_s"]) == {"etcd"}, r
        if "expected" in r["figures"]:
            assert r["figures"]["delivered"] == r["figures"]["expected"] > 0
        per = {"put_seq": "put", "watch_latency_distinct": "event", "fanout": "delivery"}[r["workload"]]
        assert r["figures"][f"server_cpu_us_per_{per}"] >= 0 and r["figures"][f"client_cpu_us_per_{per}"] >= 0, r


def test_etcd_skipped_with_a_hint_when_unavailable():
    proc, lines = run_bench("put_seq", "--etcd-only", "--etcd-binary", "/nonexistent/etcd", timeout=60)
    assert proc.returncode == 0, proc.stderr
    skipped = [r for r in lines if r.get("system") == "etcd" and "skipped" in r]
    assert skipped and "apt-get install" in skipped[0]["skipped"]
    assert not records(lines, "etcd")
