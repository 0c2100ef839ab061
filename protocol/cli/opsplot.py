"""`zwatch logs --png FILE`: the timeline of a Summary as stacked charts sharing the time axis.

matplotlib is an optional extra (`pip install 'zwatch[plot]'`); it is imported here only, with
the Agg backend (no display needed).
"""
from __future__ import annotations

from datetime import datetime, timezone

PANELS = (
    # (title, y label, series prefixes)
    ("write rate", "revisions/s", ("writer.revisions_per_s", "writer.requests_per_s")),
    ("commit latency p99", "ms", ("writer.commit_ms_p99",)),
    ("fan-out time lag (max over each interval)", "ms", ("fanout.time_lag_ms_max|",)),
    ("fan-out revision lag", "revisions", ("fanout.revision_lag|",)),
    ("victims per interval", "watches", ("fanout.victims|",)),
    ("syncer records scanned per interval", "records", ("syncer.records_scanned",)),
    ("database size", "MB", ("writer.db_size", "writer.db_size_in_use")),
)
MARKS = ("writer.compacted",)   # vertical lines on every panel


class PlotUnavailable(RuntimeError):
    pass


def render_png(timeline: dict, path: str, title: str = "zwatch") -> int:
    """Write the chart; returns the number of panels drawn (panels without data are left out)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable("--png needs matplotlib: pip install 'zwatch[plot]'") from exc
    panels = []
    for name, unit, prefixes in PANELS:
        series = sorted(k for k in timeline if any(k == p or (p.endswith("|") and k.startswith(p)) for p in prefixes))
        if any(timeline[k] for k in series):
            panels.append((name, unit, series))
    if not panels:
        panels = [("no figures in these lines", "", [])]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(11, 2.1 * len(panels) + 0.6), squeeze=False)
    marks = [datetime.fromtimestamp(t, timezone.utc) for k in MARKS for t, _ in timeline.get(k, ())]
    for ax, (name, unit, series) in zip(axes[:, 0], panels):
        for key in series:
            points = sorted(timeline[key])
            xs = [datetime.fromtimestamp(t, timezone.utc) for t, _ in points]
            ys = [v / 1e6 if unit == "MB" else v for _, v in points]
            ax.plot(xs, ys, label=key.split("|", 1)[-1].replace("writer.", "").replace("_per_s", "/s"), lw=1.2)
        for m in marks:
            ax.axvline(m, color="tab:red", lw=0.7, ls=":", alpha=0.7)
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=7, loc="upper right")
    import matplotlib.dates as mdates
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    axes[-1, 0].set_xlabel("time (UTC); red dotted lines: compactions finished", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return len(panels)
