"""`zwatch logs`: read the actors' log lines and say how the service is doing (protocol/cli/opslog.py).

    zwatch logs /var/log/zwatch/*.log            # once, at the end of the files
    honcho start | zwatch logs -f                 # live: the summary again every --every seconds
    journalctl -u 'zwatch-*' -o cat | zwatch logs -w json
    zwatch logs *.log --since 30m --png timeline.png

Exit status: 0 HEALTHY, 1 DEGRADED (so a cron job or a probe can use it), 2 bad usage or
unreadable input.
"""
from __future__ import annotations

import os
import select
import sys
import time

from .opslog import Summary, Thresholds, parse_when, render_text


def add_logs(p):
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="log files (JSON lines as the actors print them, or honcho/journalctl/supervisord output); "
                        "none or '-': stdin")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep reading (files as they grow, stdin until it ends) and print the summary every --every s")
    p.add_argument("--every", type=float, default=5.0, metavar="SECONDS", help="with -f: refresh period (default 5)")
    p.add_argument("--since", metavar="TIME", help="ignore lines before TIME (ISO 8601, or an age: 90s, 10m, 2h, 1d)")
    p.add_argument("--until", metavar="TIME", help="ignore lines after TIME (same forms)")
    p.add_argument("--png", metavar="FILE", help="also draw the timeline (rates, lag, victims, DB size) into FILE "
                                                 "(needs matplotlib: pip install 'zwatch[plot]')")
    p.add_argument("--lag-ms", type=float, default=Thresholds.time_lag_ms,
                   help="a fan-out further behind the writer than this is DEGRADED (default 5000)")
    p.add_argument("--revision-lag", type=int, default=Thresholds.revision_lag,
                   help="a fan-out more revisions behind than this is DEGRADED (default 1000)")


def _summary(a) -> Summary:
    now = time.time()
    try:
        since = parse_when(a.since, now) if a.since else None
        until = parse_when(a.until, now) if a.until else None
    except ValueError as exc:
        raise SystemExit(f"Error: {exc}")
    return Summary(Thresholds(time_lag_ms=a.lag_ms, revision_lag=a.revision_lag), since, until)


def _open_inputs(files):
    inputs = []
    for name in files or ["-"]:
        if name == "-":
            inputs.append(("-", sys.stdin))
        else:
            inputs.append((name, open(name, "r", encoding="utf-8", errors="replace")))
    return inputs


def _emit(summary: Summary, a, now: float | None = None) -> int:
    import json
    rep = summary.report(now)
    if a.write_out == "json":
        print(json.dumps(rep, default=str))
    else:
        if a.follow and sys.stdout.isatty():
            print("\x1b[2J\x1b[H", end="")
        print(render_text(rep), end="")
    sys.stdout.flush()
    return 0 if rep["verdict"] == "HEALTHY" else 1


def cmd_logs(a) -> int:
    summary = _summary(a)
    try:
        inputs = _open_inputs(a.files)
    except OSError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if not a.follow:
        for _, f in inputs:
            for line in f:
                summary.feed_line(line)
        rc = _emit(summary, a)
    else:
        rc = _follow(summary, inputs, a)
    if a.png:
        from .opsplot import PlotUnavailable, render_png
        try:
            render_png(summary.timeline, a.png, title=f"zwatch logs: {summary.report()['verdict']}")
        except PlotUnavailable as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 2
    return rc


def _follow(summary: Summary, inputs, a) -> int:
    """Read what is there, then poll for more; print the summary every --every seconds with the
    wall clock as "now" (an actor that went silent shows as down).  Ctrl-C ends it."""
    rc = 0
    for _, f in inputs:
        if f is not sys.stdin:
            for line in f:
                summary.feed_line(line)
    stdin_open = any(f is sys.stdin for _, f in inputs)
    if stdin_open:
        os.set_blocking(sys.stdin.fileno(), False)
    pending = ""
    next_print = time.monotonic()
    try:
        while True:
            if stdin_open:
                ready, _, _ = select.select([sys.stdin], [], [], 0.2)
                if ready:
                    chunk = sys.stdin.buffer.read1(1 << 16) if hasattr(sys.stdin, "buffer") else sys.stdin.read()
                    if not chunk:
                        stdin_open = False
                    else:
                        pending += chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
                        *lines, pending = pending.split("\n")
                        for line in lines:
                            summary.feed_line(line)
            else:
                time.sleep(0.2)
            for _, f in inputs:
                if f is not sys.stdin:
                    for line in f:          # a file's iterator picks up lines appended since
                        summary.feed_line(line)
            if time.monotonic() >= next_print:
                next_print = time.monotonic() + a.every
                rc = _emit(summary, a, time.time())
            if not stdin_open and all(f is sys.stdin for _, f in inputs):
                return rc
    except KeyboardInterrupt:
        return rc
