"""The operator's scenario tool (tools/ops_scenario.py) runs end to end: a short run writes the
logs, the live summary, the chart, the metrics and a health check of a stopped writer."""
import json
import subprocess
import sys


def test_ops_scenario_short_run_produces_summary_chart_metrics_and_health(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "zwatch.tools.ops_scenario", "--seconds", "8", "--out", str(out),
                        "--rate", "50", "--watchers", "3", "--stats-s", "1", "--stuck-s", "3"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["client_counts"]["puts"] > 0 and report["client_counts"]["errors"] == 0
    assert report["health"]["writer_up"]["exit"] == 0 and report["health"]["writer_stopped"]["exit"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [a["kind"] for a in summary["actors"]].count("fanout") == 3
    assert all(a["up"] for a in summary["actors"]), summary
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "zwatch_commits_total" in (out / "metrics-writer.txt").read_text()
