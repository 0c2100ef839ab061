"""The issue-#15 table of docs/performance.md, from a bench run's JSON lines:
``python -m zwatch.tools.bench.report run.jsonl [--startup startup.json]``.

Medians with [min..max] over the run's repetitions, zwatch and etcd side by side, the ratio
of the medians, the target and a verdict; then the per-process cost rows.  Prints Markdown.
"""
from __future__ import annotations

import argparse
import json
import statistics


def load(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def figure(recs, workload, variant, system, name):
    vals = [r["figures"][name] for r in recs if r.get("workload") == workload and r.get("variant", "") == variant
            and r.get("system") == system and isinstance(r.get("figures"), dict)
            and r["figures"].get(name) is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals), len(vals)


def fmt(v, digits=3) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}g}"


def cell(f) -> str:
    if f is None:
        return "-"
    med, lo, hi, n = f
    return fmt(med) + (f" [{fmt(lo)}..{fmt(hi)}]" if n > 1 else "")


ROWS = [
    # label, workload, variant, figure, target kind, bound, better
    ("sequential puts/s (1 client)", "put_seq", "", "puts_per_s", "ratio", 1.3, "high"),
    ("concurrent puts/s (8 connections, 1 put in flight each)", "put_conc", "", "puts_per_s", "ratio", 2.0, "high"),
    ("watch p99 ms, W=1,000 distinct specs, 200 puts/s", "watch_latency_distinct", "W=1000", "p99_ms", "ratio", 0.1, "low"),
    ("watch p99 ms, W=10,000 distinct specs", "watch_latency_distinct", "W=10000", "p99_ms", "abs", 1000, "low"),
    ("server memory per watcher, distinct keys, 10k (KiB)", "memory", "N=10000", "kib_per_watcher", "abs", 0.5, "low"),
    ("server memory per watcher, distinct keys, 50k (KiB)", "memory", "N=50000", "kib_per_watcher", "abs", 0.5, "low"),
    ("server memory per watcher, distinct keys, 100k (KiB)", "memory", "N=100000", "kib_per_watcher", "abs", 0.5, "low"),
    ("already ahead: watch p99 ms, W=1,000 identical specs", "watch_latency", "W=1000", "p99_ms", "ratio", 0.1, "low"),
    ("already ahead: watch p99 ms, W=10,000 identical specs", "watch_latency", "W=10000", "p99_ms", "ratio", 0.1, "low"),
    ("already ahead: catch-up s, N=1", "catchup", "N=1", "seconds", "ratio", 0.5, "low"),
    ("already ahead: catch-up s, N=100", "catchup", "N=100", "seconds", "ratio", 0.5, "low"),
    ("already ahead: catch-up s, N=1,000", "catchup", "N=1000", "seconds", "ratio", 0.5, "low"),
    ("already ahead: fan-out deliveries/s", "fanout", "", "deliveries_per_s", "ratio", 2.0, "high"),
    ("already ahead: server CPU us per delivery", "fanout", "", "server_cpu_us_per_delivery", "ratio", 1.0, "low"),
]

COST_ROWS = [
    ("put_seq", "", "server_cpu_us_per_put"), ("put_seq", "", "client_cpu_us_per_put"), ("put_seq", "", "p50_ms"),
    ("put_conc", "", "server_cpu_us_per_put"), ("put_conc", "", "client_cpu_us_per_put"), ("put_conc", "", "p50_ms"),
    ("watch_latency", "W=1000", "server_cpu_us_per_event"), ("watch_latency", "W=1000", "client_cpu_us_per_event"),
    ("watch_latency_distinct", "W=1000", "server_cpu_us_per_event"),
    ("watch_latency_distinct", "W=1000", "client_cpu_us_per_event"),
    ("watch_latency_distinct", "W=10000", "server_cpu_us_per_event"),
    ("watch_latency_distinct", "W=10000", "client_cpu_us_per_event"),
    ("fanout", "", "client_cpu_us_per_delivery"),
]


def verdict(z, e, kind, bound, better):
    if z is None:
        return "-", "-"
    if kind == "abs":
        ok = z[0] <= bound if better == "low" else z[0] >= bound
        return "-", ("met" if ok else "MISSED")
    if e is None:
        return "-", "(no etcd figure)"
    ratio = z[0] / e[0] if e[0] else None
    if ratio is None:
        return "-", "-"
    ok = ratio >= bound if better == "high" else ratio <= bound
    return f"{ratio:.3g}", ("met" if ok else "MISSED")


def render(recs, startup: dict | None = None) -> str:
    out = ["| metric | zwatch | etcd | zwatch/etcd | target | verdict |", "|---|---|---|---|---|---|"]
    for label, wl, var, fig, kind, bound, better in ROWS:
        z, e = figure(recs, wl, var, "zwatch", fig), figure(recs, wl, var, "etcd", fig)
        ratio, v = verdict(z, e, kind, bound, better)
        tgt = (f"<= {bound}" if better == "low" else f">= {bound}") if kind == "abs" else \
            (f">= {bound}x" if better == "high" else f"<= {bound}x")
        extra = ""
        if wl.startswith("watch_latency"):
            for sysname, f in (("zwatch", z), ("etcd", e)):
                d = figure(recs, wl, var, sysname, "delivered")
                x = figure(recs, wl, var, sysname, "expected")
                if d and x and d[1] < x[0]:
                    extra += f" ({sysname}: {d[1]:,.0f} of {x[0]:,.0f} delivered)"
                rate = figure(recs, wl, var, sysname, "puts_per_s")
                if rate and rate[0] < 180:         # the putter could not keep 200 puts/s
                    extra += f" ({sysname}'s puts slowed to {fmt(rate[0])}/s)"
        out.append(f"| {label} | {cell(z)} | {cell(e)} | {ratio} | {tgt} | {v}{extra} |")
    if startup:
        s = startup
        out.append(f"| start-up to first served request (s), {s.get('revisions', 0):,}-revision store | "
                   f"{s.get('system_start_to_first_read_s')} | - | - | < 0.2 | "
                   f"{'met' if s.get('system_start_to_first_read_s', 9) < 0.2 else 'MISSED'} |")
        out.append(f"| single-key watch from revision 1 (s), {s.get('revisions', 0):,}-revision store | "
                   f"{s.get('single_key_from_rev1_s')} ({s.get('single_key_events')} events, "
                   f"{s.get('single_key_records_scanned')} records read) | - | - | < 0.1, bounded RSS | "
                   f"{'met' if s.get('single_key_from_rev1_s', 9) < 0.1 else 'MISSED'}: syncer RSS "
                   f"{s.get('syncer_vmrss_kib', 0) / 1024:.0f} MiB after ({s.get('syncer_rssanon_kib', 0) / 1024:.0f} "
                   f"anonymous) |")
    out += ["", "| cost | zwatch | etcd |", "|---|---|---|"]
    for wl, var, fig in COST_ROWS:
        z, e = figure(recs, wl, var, "zwatch", fig), figure(recs, wl, var, "etcd", fig)
        if z or e:
            out.append(f"| {wl} {var} {fig} | {cell(z)} | {cell(e)} |".replace("  ", " "))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="JSON lines of `python -m zwatch.tools.bench ... --json FILE`")
    ap.add_argument("--startup", help="the JSON line of `python -m zwatch.tools.startup`")
    a = ap.parse_args(argv)
    startup = None
    if a.startup:
        with open(a.startup) as f:
            startup = json.loads([ln for ln in f if ln.startswith("{")][-1])
    print(render(load(a.run), startup))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
