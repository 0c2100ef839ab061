"""The issue-#15 table of docs/performance.md, from a bench run's JSON lines:
``python -m zwatch.tools.bench.report run.jsonl [--startup startup.json]``.

Medians with [min..max] over the run's repetitions, zwatch and etcd side by side, the ratio
of the medians, the target and a verdict (issue #15's rows, its targets); then CPU per unit of
work (put, event, delivery, watcher) of the client and of the server processes for every
workload.  Prints Markdown.  The start-up and single-key rows come from the run's ``startup``
and ``history_single_key`` records (or, for an older run, ``--startup`` with tools/startup's line).
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
    ("watch p99 ms, W=10,000 distinct specs, 200 puts/s", "watch_latency_distinct", "W=10000", "p99_ms", "delivered_abs",
     1000, "low"),
    ("server memory per watcher, distinct keys, 10k (KiB)", "memory", "N=10000", "kib_per_watcher", "abs", 0.5, "low"),
    ("server memory per watcher, distinct keys, 50k (KiB)", "memory", "N=50000", "kib_per_watcher", "abs", 0.5, "low"),
    ("server memory per watcher, distinct keys, 100k (KiB)", "memory", "N=100000", "kib_per_watcher", "abs", 0.5, "low"),
    ("start-up to first served request (s), 1M-revision store", "startup", "R=1000000", "start_to_first_read_s", "abs_lt",
     0.2, "low"),
    ("single-key watch from revision 1 (s), 1M-revision store", "history_single_key", "R=1000000", "seconds", "rss_abs",
     0.1, "low"),
    ("already ahead: watch p99 ms, W=1,000 identical specs", "watch_latency", "W=1000", "p99_ms", "ratio", 0.1, "low"),
    ("already ahead: watch p99 ms, W=10,000 identical specs", "watch_latency", "W=10000", "p99_ms", "ratio", 0.1, "low"),
    ("already ahead: catch-up s, N=1", "catchup", "N=1", "seconds", "ratio", 0.5, "low"),
    ("already ahead: catch-up s, N=100", "catchup", "N=100", "seconds", "ratio", 0.5, "low"),
    ("already ahead: catch-up s, N=1,000", "catchup", "N=1000", "seconds", "ratio", 0.5, "low"),
    ("already ahead: fan-out deliveries/s", "fanout", "", "deliveries_per_s", "ratio", 2.0, "high"),
    ("already ahead: server CPU us per delivery", "fanout", "", "server_cpu_us_per_delivery", "ratio", 1.0, "low"),
]
# The variants each workload runs at full size, in order: a smaller run (--quick) fills a row
# with the variant at the same position, and says so.
FULL_VARIANTS = {"watch_latency": ["W=100", "W=1000", "W=10000"], "watch_latency_distinct": ["W=1000", "W=10000"],
                 "memory": ["N=10000", "N=50000", "N=100000"], "catchup": ["N=1", "N=100", "N=1000"],
                 "startup": ["R=1000000"], "history_single_key": ["R=1000000"]}
# history_single_key: "bounded RSS" = the syncer's RSS right after the replay under this (MiB).
RSS_BOUND_MIB = 100

# CPU per unit of work, per side of the wire: client processes and server processes.
COST_FIGURES = ["server_cpu_us_per_put", "client_cpu_us_per_put", "server_cpu_us_per_event",
                "client_cpu_us_per_event", "server_cpu_us_per_delivery", "client_cpu_us_per_delivery",
                "server_cpu_us_per_watcher", "client_cpu_us_per_watcher", "p50_ms"]


def verdict(z, e, kind, bound, better):
    """(ratio text, verdict) of a ratio target."""
    if z is None:
        return "-", "-"
    if e is None:
        return "-", "(no etcd figure)"
    ratio = z[0] / e[0] if e[0] else None
    if ratio is None:
        return "-", "-"
    ok = ratio >= bound if better == "high" else ratio <= bound
    return f"{ratio:.3g}", ("met" if ok else "MISSED")


def _num(variant: str) -> float:
    try:
        return float(variant.split("=", 1)[1])
    except (IndexError, ValueError):
        return 0.0


def resolve(recs, workload: str, variant: str) -> str | None:
    """The variant of the run that stands for `variant`: itself, or (a smaller run) the one at
    the same position among the full-size variants."""
    present = sorted({r.get("variant", "") for r in recs if r.get("workload") == workload
                      and isinstance(r.get("figures"), dict) and r["figures"]}, key=_num)
    if variant in present:
        return variant
    full = FULL_VARIANTS.get(workload)
    if full and variant in full and full.index(variant) < len(present):
        return present[full.index(variant)]
    return None


def _all_delivered(recs, workload, variant, system) -> bool | None:
    rs = [r for r in recs if r.get("workload") == workload and r.get("variant", "") == variant
          and r.get("system") == system and isinstance(r.get("figures"), dict) and r["figures"]]
    if not rs:
        return None
    return all(r.get("ok") and r["figures"].get("delivered") == r["figures"].get("expected") for r in rs)


def target_text(kind, bound, better) -> str:
    if kind == "delivered_abs":
        return f"every event delivered, p99 < {bound:,}"
    if kind == "rss_abs":
        return f"< {bound}, bounded RSS (syncer < {RSS_BOUND_MIB} MiB)"
    if kind == "abs":
        return f"<= {bound}"
    if kind == "abs_lt":
        return f"< {bound}"
    return f">= {bound}x" if better == "high" else f"<= {bound}x"


def render(recs, startup: dict | None = None) -> str:
    out = ["| metric | zwatch | etcd | zwatch/etcd | target | verdict |", "|---|---|---|---|---|---|"]
    for label, wl, var0, fig, kind, bound, better in ROWS:
        var = resolve(recs, wl, var0)
        if var is None:
            if wl in ("startup", "history_single_key") and startup:
                continue            # rendered from --startup below
            out.append(f"| {label} | - | - | - | {target_text(kind, bound, better)} | (not run) |")
            continue
        if var != var0:
            label += f" (this run: {var})"
        z, e = figure(recs, wl, var, "zwatch", fig), figure(recs, wl, var, "etcd", fig)
        if kind in ("abs", "abs_lt", "delivered_abs", "rss_abs"):
            ratio = "-" if e is None or not e[0] or z is None else f"{z[0] / e[0]:.3g}"
            v = "-" if z is None else ("met" if (z[0] <= bound if kind == "abs" else z[0] < bound) else "MISSED")
        else:
            ratio, v = verdict(z, e, kind, bound, better)
        extra = ""
        if kind == "delivered_abs" and z is not None:
            if not _all_delivered(recs, wl, var, "zwatch"):
                v = "MISSED"
                extra += " (zwatch: events lost or reordered)"
        if kind == "rss_abs" and z is not None:
            rss = figure(recs, wl, var, "zwatch", "syncer_vmrss_kib")
            anon = figure(recs, wl, var, "zwatch", "syncer_rssanon_kib")
            filep = figure(recs, wl, var, "zwatch", "syncer_rssfile_kib")
            scanned = figure(recs, wl, var, "zwatch", "syncer_records_scanned")
            events = figure(recs, wl, var, "zwatch", "delivered")
            if rss and rss[2] / 1024 >= RSS_BOUND_MIB:
                v = "MISSED"
            extra += (f": {fmt(events[0]) if events else '?'} events, "
                      f"{fmt(scanned[0]) if scanned else '?'} records read; syncer RSS after "
                      f"{fmt(rss[0] / 1024) if rss else '?'} MiB (RssAnon {fmt(anon[0] / 1024) if anon else '?'}, "
                      f"RssFile {fmt(filep[0] / 1024) if filep else '?'})")
        if wl.startswith("watch_latency"):
            for sysname in ("zwatch", "etcd"):
                d = figure(recs, wl, var, sysname, "delivered")
                x = figure(recs, wl, var, sysname, "expected")
                if d and x and d[1] < x[0]:
                    extra += f" ({sysname}: {d[1]:,.0f} of {x[0]:,.0f} delivered)"
                rate = figure(recs, wl, var, sysname, "puts_per_s")
                want = next((r["params"].get("rate") for r in recs if r.get("workload") == wl
                             and isinstance(r.get("params"), dict)), None) or 200
                if rate and rate[0] < 0.9 * want:         # the putter could not keep its rate
                    extra += f" ({sysname}'s puts slowed to {fmt(rate[0])}/s)"
        out.append(f"| {label} | {cell(z)} | {cell(e)} | {ratio} | {target_text(kind, bound, better)} | {v}{extra} |")
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
    out += ["", "| cost (CPU us per unit, per side) | zwatch | etcd | zwatch/etcd |", "|---|---|---|---|"]
    seen = []
    for r in recs:
        k = (r.get("workload"), r.get("variant", ""))
        if "workload" in r and isinstance(r.get("figures"), dict) and k not in seen:
            seen.append(k)
    for wl, var in seen:
        for fig in COST_FIGURES:
            z, e = figure(recs, wl, var, "zwatch", fig), figure(recs, wl, var, "etcd", fig)
            if z or e:
                ratio = f"{z[0] / e[0]:.3g}" if z and e and e[0] else "-"
                out.append(f"| {wl} {var} {fig} | {cell(z)} | {cell(e)} | {ratio} |".replace("  ", " "))
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
