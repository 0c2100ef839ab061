"""Command line of the benchmark suite: ``python -m zwatch.tools.bench [workloads...] [options]``."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import signal
import sys
import time

from . import workloads as wl

# Issue #15's figures for etcd 3.4.23 through grpc.aio on one of our 2-core machines (its table:
# put_seq 1,536/s, put_conc 4,390/s -- 4,313/s in its text --, identical-spec W=1k p99 481 ms,
# distinct-spec W=1k p99 1,196-3,096 ms (the low end here), memory 2.29 / 1.67 KiB per watcher);
# the catch-up and fan-out figures predate it (the issue gives only ratios for them).  Used for
# the target column when etcd is not run here.
REFERENCE_ETCD = {
    ("put_seq", "", "puts_per_s"): 1536, ("put_conc", "", "puts_per_s"): 4390,
    ("watch_latency", "W=1000", "p99_ms"): 481,
    ("watch_latency_distinct", "W=1000", "p99_ms"): 1196,
    ("fanout", "", "deliveries_per_s"): 930_000, ("fanout", "", "server_cpu_us_per_delivery"): 0.60,
    ("catchup", "N=1", "seconds"): 0.50, ("catchup", "N=100", "seconds"): 0.65,
    ("catchup", "N=1000", "seconds"): 2.77,
    ("memory", "N=10000", "kib_per_watcher"): 2.29, ("memory", "N=50000", "kib_per_watcher"): 1.67,
}


def targets(workload: str, variant: str):
    """[(figure, better, kind, bound)]: kind "ratio" compares zwatch/etcd, "abs" the zwatch figure."""
    per_put = [("server_cpu_us_per_put", "low", None, None), ("client_cpu_us_per_put", "low", None, None)]
    per_event = [("server_cpu_us_per_event", "low", None, None), ("client_cpu_us_per_event", "low", None, None)]
    if workload == "put_seq":
        return [("puts_per_s", "high", "ratio", 1.3), ("p50_ms", "low", None, None)] + per_put
    if workload == "put_conc":
        return [("puts_per_s", "high", "ratio", 2.0), ("p50_ms", "low", None, None)] + per_put
    if workload == "watch_latency":
        w = int(variant.split("=")[1]) if "=" in variant else 0
        return [("p99_ms", "low", "ratio_lt" if w <= 100 else "ratio", 1.0 if w <= 100 else 0.1),
                ("p50_ms", "low", None, None), ("max_ms", "low", None, None)] + per_event
    if workload == "watch_latency_distinct":
        w = int(variant.split("=")[1]) if "=" in variant else 0
        # W=1,000: a tenth of etcd's p99; W=10,000 (etcd times out): every event, p99 under 1 s.
        p99 = ("p99_ms", "low", "ratio", 0.1) if w <= 1000 else ("p99_ms", "low", "abs", 1000)
        return [p99, ("p50_ms", "low", None, None), ("max_ms", "low", None, None)] + per_event
    if workload == "fanout":
        return [("deliveries_per_s", "high", "ratio", 2.0), ("server_cpu_us_per_delivery", "low", "ratio", 1.0),
                ("client_cpu_us_per_delivery", "low", None, None)]
    if workload == "catchup":
        return [("seconds", "low", "ratio", 0.5), ("syncer_records_scanned", "low", None, None)] + per_event
    if workload == "memory":
        return [("kib_per_watcher", "low", "abs", 0.5), ("server_cpu_us_per_watcher", "low", None, None),
                ("client_cpu_us_per_watcher", "low", None, None)]
    if workload == "startup":
        return [("start_to_first_read_s", "low", "abs", 0.2), ("start_to_first_watch_created_s", "low", None, None)]
    if workload == "history_single_key":
        return [("seconds", "low", "abs", 0.1), ("syncer_records_scanned", "low", None, None),
                ("syncer_rssanon_kib", "low", None, None), ("syncer_rssfile_kib", "low", None, None)] + per_event
    if workload == "lease_keepalive":          # no target: the issue asks for the figures
        return [(f, "low", None, None) for f in ("writer_cpu_us_per_keepalive", "writer_cpu_us_per_request",
                                                 "fsyncs_per_keepalive", "pwrite64_per_keepalive")]
    if workload == "lease_expiry":
        return [(f, "low", None, None) for f in ("p50_ms", "p99_ms", "max_ms")]
    return []


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m zwatch.tools.bench", description=(
        "zwatch benchmark suite (optionally side by side with etcd). One JSON line per workload "
        "variant on stdout, then a table; a running counter on stderr when it is a terminal."))
    ap.add_argument("workloads", nargs="*", help=f"any of {', '.join(wl.ORDER)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="tiny parameters (smoke test)")
    ap.add_argument("--against-etcd", action="store_true",
                    help="also run every workload against an etcd started on loopback (needs `etcd` on PATH, "
                         "grpcio, grpcio-tools and etcd's .proto files; skipped with a hint otherwise)")
    ap.add_argument("--etcd-only", action="store_true", help="run etcd only (implies --against-etcd)")
    ap.add_argument("--etcd-binary", default="etcd")
    ap.add_argument("--etcd-client", choices=("aio", "sync"), default="aio",
                    help="etcd's Python client shape: grpc.aio (default: the efficient one) or blocking stubs")
    ap.add_argument("--endpoints", help="use a running zwatch (comma-separated fan-out endpoints) instead of "
                                        "starting one; server figures need --server-pids")
    ap.add_argument("--server-pids", help="name=pid,... of the running zwatch's processes (with --endpoints)")
    ap.add_argument("--fanouts", type=int, default=1, help="fan-out processes of the started zwatch (default 1)")
    ap.add_argument("--curve", action="store_true",
                    help="the started zwatch with CURVE + ZAP on every socket (fresh keys per run; the bench's "
                         "clients trust its fanout.key), to measure what encryption costs")
    ap.add_argument("--zwatch-env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment for the started zwatch actors (repeatable), e.g. ZWATCH_RING_REVISIONS=100")
    ap.add_argument("--profile", metavar="DIR", help="run the started zwatch actors under cProfile; "
                                                     "DIR/<workload>-<actor>.prof and a top-25 summary .txt")
    ap.add_argument("--repeat", type=int, default=1, help="run each workload N times; the table shows medians")
    ap.add_argument("--json", metavar="FILE", help="also append the JSON lines to FILE")
    ap.add_argument("--store-dir", metavar="DIR", help="startup / history_single_key: where their big store is "
                                                       "built once and kept (default ~/.cache/zwatch-bench)")
    ap.add_argument("--no-progress", action="store_true", help="no running counter on stderr")
    g = ap.add_argument_group("workload parameters (default: the issue's)")
    g.add_argument("--puts", type=int, help="put_seq / put_conc / fanout / watch_latency: number of puts")
    g.add_argument("--clients", type=int, help="put_conc: concurrent client processes")
    g.add_argument("--writers", type=int, help="fanout / catchup: writer processes")
    g.add_argument("--watchers", help="watch_latency / catchup / memory: comma-separated counts; fanout: one count")
    g.add_argument("--conns", type=int, help="watch workloads: connections (streams) in all")
    g.add_argument("--procs", type=int, help="watch workloads: client processes holding the connections")
    g.add_argument("--rate", type=float, help="watch_latency: puts per second")
    g.add_argument("--revisions", type=int, help="catchup: revisions written before the watchers come")
    g.add_argument("--keys", type=int, help="catchup: distinct keys (a power of 10: the prefix matches 10%%)")
    g.add_argument("--value-size", type=int, help="bytes per value")
    g.add_argument("--same-key", action="store_true", help="memory: every watcher on one key (default: distinct)")
    a = ap.parse_args(argv)
    unknown = [w for w in a.workloads if w not in wl.ORDER]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {wl.ORDER}")
    return a


def params_for(name: str, a) -> dict:
    p = dict(wl.DEFAULTS[name])
    if a.quick:
        p.update(wl.QUICK[name])
    over = {"puts": a.puts, "clients": a.clients, "writers": a.writers, "conns": a.conns, "procs": a.procs,
            "rate": a.rate, "revisions": a.revisions, "keys": a.keys, "value_size": a.value_size}
    for k, v in over.items():
        if v is not None and k in p:
            p[k] = v
    if a.watchers:
        counts = [int(x) for x in a.watchers.split(",") if x.strip()]
        p["watchers"] = counts[0] if name == "fanout" else counts
    if a.same_key and name == "memory":
        p["same_key"] = True
    return p


def machine() -> dict:
    info = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
        info["loadavg"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    return info


def _summarize_profiles(d: str, tag: str):
    import glob
    import pstats
    for path in sorted(glob.glob(os.path.join(d, f"{tag}-*.prof"))):
        try:
            with open(path[:-5] + ".txt", "w") as f:
                st = pstats.Stats(path, stream=f)
                st.sort_stats("tottime").print_stats(25)
                st.sort_stats("cumulative").print_stats(25)
        except Exception as exc:
            print(f"profile {path}: {exc}", file=sys.stderr)


def run_system(system, names, a, emit, reps=None) -> list[dict]:
    recs = []
    for name in names:
        p = params_for(name, a)
        for rep in (range(a.repeat) if reps is None else reps):
            tag = f"{name}" + (f"-r{rep}" if a.repeat > 1 else "")
            ctx = wl.Ctx(system, a.quick, False if a.no_progress else None)
            t0 = time.monotonic()
            if name in wl.ONLY_ZWATCH and system.kind != "zwatch":
                rec = {"workload": name, "variant": "", "system": system.kind, "params": p, "ok": True,
                       "skipped": "zwatch only", "figures": {}, "repeat": rep}
                emit(rec)
                recs.append(rec)
                continue
            print(f"[{system.kind}] {name}{' #%d' % (rep + 1) if a.repeat > 1 else ''} ...", file=sys.stderr,
                  flush=True)
            if name in wl.OWN_CLUSTER:      # it launches its own actors (bigstore.py)
                try:
                    out = wl.RUNNERS[name](ctx, p)
                except Exception as exc:
                    out = [{"workload": name, "variant": "", "system": system.kind, "params": p, "ok": False,
                            "error": f"{type(exc).__name__}: {exc}"[:3000]}]
                for r in out:
                    r["repeat"] = rep
                    r.setdefault("wall_s", round(time.monotonic() - t0, 3))
                    emit(r)
                    recs.append(r)
                continue
            saved_env = dict(getattr(system, "env", {}))
            if wl.ENV.get(name) and hasattr(system, "env"):
                system.env.update({k: v for k, v in wl.ENV[name].items() if k not in saved_env})
            try:
                system.start(tag)
            except Exception as exc:
                rec = {"workload": name, "variant": "", "system": system.kind, "ok": False,
                       "error": f"start failed: {exc}"[:2000]}
                emit(rec)
                recs.append(rec)
                if hasattr(system, "env"):
                    system.env = saved_env
                continue
            try:
                out = wl.RUNNERS[name](ctx, p)
            except Exception as exc:
                out = [{"workload": name, "variant": "", "system": system.kind, "params": p, "ok": False,
                        "error": f"{type(exc).__name__}: {exc}"[:3000]}]
            finally:
                system.stop()
                if hasattr(system, "env"):
                    system.env = saved_env
            if getattr(system, "profile_dir", None):
                _summarize_profiles(system.profile_dir, tag)
            for r in out:
                r["repeat"] = rep
                r.setdefault("wall_s", round(time.monotonic() - t0, 3))
                emit(r)
                recs.append(r)
    return recs


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) >= 0.01 else f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _median(recs, wl_name, variant, system, fig):
    vals = [r["figures"][fig] for r in recs if r.get("workload") == wl_name and r.get("variant") == variant
            and r.get("system") == system and r.get("figures") and r["figures"].get(fig) is not None]
    if not vals:
        return None, ""
    med = statistics.median(vals)
    spread = f" [{_fmt(min(vals))}..{_fmt(max(vals))}]" if len(vals) > 1 else ""
    return med, spread


def table(recs: list[dict], etcd_ran: bool, use_reference: bool = True) -> tuple[str, list[dict]]:
    rows, ratios = [], []
    seen = []
    for r in recs:
        k = (r["workload"], r.get("variant", ""))
        if k not in seen:
            seen.append(k)
    for name, variant in seen:
        oks = {s: all(r.get("ok") for r in recs if r["workload"] == name and r.get("variant", "") == variant
                      and r["system"] == s) for s in ("zwatch", "etcd")}
        for fig, better, kind, bound in targets(name, variant):
            z, zs = _median(recs, name, variant, "zwatch", fig)
            e, es = _median(recs, name, variant, "etcd", fig)
            ref = REFERENCE_ETCD.get((name, variant, fig)) if use_reference else None
            if z is None and e is None:
                continue
            base = e if e is not None else ref
            ratio = (z / base) if (z is not None and base) else None
            verdict = ""
            if kind == "abs" and z is not None:
                verdict = "met" if z <= bound else "MISSED"
            elif kind and ratio is not None:
                if kind == "ratio_lt":
                    good = ratio < bound
                else:
                    good = ratio >= bound if better == "high" else ratio <= bound
                verdict = "met" if good else "MISSED"
            if not oks["zwatch"] and z is not None:
                verdict = "FAILED (lost events or errors)"
            tgt = ""
            if kind == "abs":
                tgt = f"<= {bound}"
            elif kind == "ratio_lt":
                tgt = f"< {bound}x"
            elif kind:
                tgt = (">= " if better == "high" else "<= ") + f"{bound}x"
            rows.append([name, variant, fig, _fmt(z) + zs, (_fmt(e) + es) if e is not None else
                         (f"({_fmt(ref)})" if ref is not None else "-"),
                         f"{ratio:.3g}" if ratio is not None else "-", tgt, verdict])
            if ratio is not None:
                ratios.append({"workload": name, "variant": variant, "system": "ratio", "figure": fig,
                               "zwatch": z, "etcd": base, "etcd_source": "this run" if e is not None else "issue",
                               "ratio": round(ratio, 4), "target": tgt, "verdict": verdict})
    head = ["workload", "variant", "figure", "zwatch", "etcd" if etcd_ran else "etcd (issue)", "zw/etcd",
            "target", ""]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    if not etcd_ran and use_reference:
        lines.append("(etcd figures in parentheses are the issue's, not measured here)")
    return "\n".join(lines), ratios


def _interrupt(signum, frame):
    signal.signal(signum, signal.SIG_IGN)      # a second one must not cut the clean-up short
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    # SIGTERM unwinds like Ctrl-C, through the `finally` that stops each workload's cluster,
    # instead of leaving its actors running.
    signal.signal(signal.SIGTERM, _interrupt)
    a = parse_args(argv)
    names = a.workloads or wl.ORDER
    jf = open(a.json, "a") if a.json else None

    def emit(rec):
        line = json.dumps(rec, separators=(",", ":"), default=str)
        print(line, flush=True)
        if jf:
            jf.write(line + "\n")
            jf.flush()

    emit({"bench": "zwatch", "machine": machine(), "argv": sys.argv[1:] if argv is None else argv,
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    from .systems import EtcdSystem, ZwatchSystem
    if a.store_dir:
        from . import bigstore
        bigstore.STORE_DIR = os.path.abspath(a.store_dir)
    recs = []
    etcd_ran = False
    systems = []
    if not a.etcd_only:
        env = dict(kv.split("=", 1) for kv in a.zwatch_env)
        pids = dict((kv.split("=", 1)[0], int(kv.split("=", 1)[1])) for kv in a.server_pids.split(",")) \
            if a.server_pids else None
        systems.append(ZwatchSystem(fanouts=a.fanouts, endpoints=a.endpoints.split(",") if a.endpoints else None,
                                    server_pids=pids, env=env, profile_dir=a.profile, curve=a.curve))
    if a.against_etcd or a.etcd_only:
        from . import etcd_stubs
        why = etcd_stubs.why_unavailable(a.etcd_binary)
        if why:
            print(f"etcd skipped: {why}", file=sys.stderr)
            emit({"system": "etcd", "skipped": why})
        else:
            es = EtcdSystem(binary=a.etcd_binary, client=a.etcd_client)
            emit({"system": "etcd", "version": es.version(), "binary": es.binary, "client": a.etcd_client})
            systems.append(es)
            etcd_ran = True
    # Repetitions alternate the systems (zwatch #1, etcd #1, zwatch #2, ...), workload by
    # workload, so that a drift in the machine's load hits both alike.
    for name in names:
        for rep in range(a.repeat):
            for system in systems:
                recs += run_system(system, [name], a, emit, reps=[rep])
    text, ratios = table(recs, etcd_ran, use_reference=not a.quick)
    for r in ratios:
        emit(r)
    print()
    print(text, flush=True)
    from . import report
    print()
    print("Summary (issue #15's rows; medians [min..max] over the repetitions):")
    print(report.render(recs), flush=True)
    if jf:
        jf.close()
    failed = [r for r in recs if not r.get("ok")]
    for r in failed:
        print(f"FAILED: {r['system']} {r['workload']} {r.get('variant', '')}: {r.get('error') or r.get('errors') or ''}"
              f" delivered={r.get('figures', {}).get('delivered')} expected={r.get('figures', {}).get('expected')}",
              file=sys.stderr)
    return 1 if failed else 0
