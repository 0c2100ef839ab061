"""What `zwatch logs` knows: the actors' JSON log lines in, an operator's summary out (no I/O here).

An operator at 3 a.m. asks: is it healthy?  what is the write rate?  how far behind is each
fan-out, and the slowest session?  are there victims?  is compaction running, how big is the
database?  Every answer is in the actors' log lines (docs/operations.md, "Log events"); this
module reads them and keeps, per actor, the last figures and a timeline for the chart.

Lines come as the actors print them (one JSON object a line), or prefixed by whatever collected
them: honcho (`06:01:02 writer.1 | {...}`, with colours), journalctl (`Dec 03 06:01:02 host
zwatch-writer[123]: {...}`), supervisord's log files (bare lines).  The JSON object is found at
the first `{`; a line without one (a console-format line, a traceback) is counted as skipped.

Identity: the writer and the syncer are one each; a fan-out is named by the endpoint of its
`fanout.start` line (stable over restarts: a restarted fan-out binds the same endpoint), else
by its `instance`.  "Now" is the latest timestamp seen (reading a finished log shows the state
at its end), or the caller's clock when following live lines.
"""
from __future__ import annotations

import json
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
KINDS = ("writer", "syncer", "fanout")
# An actor that printed nothing for this many of its stats intervals is reported down.
DOWN_AFTER_INTERVALS = 3
DEFAULT_INTERVAL_S = 10.0
RATE_WINDOW_S = 60.0               # the write rate "over the last minute" of the summary
TIMELINE_POINTS = 20_000           # per series: a day of 5 s stats lines fits


@dataclass
class Thresholds:
    """Where DEGRADED starts (`zwatch logs --lag-ms / --revision-lag`)."""
    time_lag_ms: float = 5000.0
    revision_lag: int = 1000
    backlog_age_s: float = 30.0


def parse_time(value) -> float | None:
    """ISO 8601 (structlog's `timestamp`) or epoch seconds -> epoch seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.timestamp()


def parse_line(line: str) -> dict | None:
    """One collected line -> the actor's log record, or None when it holds none."""
    start = line.find("{")
    if start < 0:
        return None
    text = ANSI.sub("", line[start:]).strip()
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return None
    record["_t"] = parse_time(record.get("timestamp"))
    return record


def parse_when(text: str, now: float) -> float:
    """`--since`/`--until`: an ISO time, or an age such as `90s`, `10m`, `2h`, `1d` before now."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*(?:ago)?\s*", text)
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    t = parse_time(text.strip())
    if t is None:
        raise ValueError(f"not a time: {text!r} (ISO 8601 like 2026-12-03T06:00:00Z, or an age like 10m)")
    return t


@dataclass
class ActorState:
    kind: str
    name: str
    starts: int = 0
    stopped: bool = False
    crashed: int = 0                    # stop lines with signal null (the actor's own crash)
    first_t: float | None = None
    last_t: float | None = None
    interval_s: float | None = None     # from its *.stats lines; None: none seen yet
    stats: dict = field(default_factory=dict)      # the last *.stats line
    pids: list = field(default_factory=list)
    warnings: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)      # per kind: compaction, backlog, counters

    def seen(self, t: float | None):
        if t is None:
            return
        self.first_t = t if self.first_t is None else min(self.first_t, t)
        self.last_t = t if self.last_t is None else max(self.last_t, t)

    def up(self, now: float, default_interval_s: float = DEFAULT_INTERVAL_S) -> bool:
        if self.stopped or self.last_t is None:
            return False
        return now - self.last_t <= DOWN_AFTER_INTERVALS * (self.interval_s or default_interval_s)


class Summary:
    """Feed records (parse_line's output) in any order close to time order; ask report()."""

    def __init__(self, thresholds: Thresholds | None = None, since: float | None = None, until: float | None = None):
        self.thresholds = thresholds or Thresholds()
        self.since, self.until = since, until
        self.actors: dict[tuple[str, str], ActorState] = {}
        self.instance_names: dict[str, str] = {}          # fan-out instance -> its endpoint
        self.lines = 0
        self.skipped = 0
        self.latest: float | None = None
        self.timeline: dict[str, deque] = {}

    # ------------------------------------------------------------------ input
    def feed_line(self, line: str):
        record = parse_line(line)
        if record is None:
            if line.strip():
                self.skipped += 1
            return
        self.feed(record)

    def feed(self, r: dict):
        t = r.get("_t")
        if t is not None and ((self.since is not None and t < self.since) or (self.until is not None and t > self.until)):
            return
        kind = r.get("actor")
        event = r["event"]
        if kind not in KINDS:
            kind = event.split(".", 1)[0] if event.split(".", 1)[0] in KINDS else None
            if kind is None and event.startswith(("session.", "watch.", "auth.")):
                kind = "fanout"
            if kind is None and event.startswith("sync."):
                kind = "syncer"
            if kind is None:
                self.skipped += 1
                return
        self.lines += 1
        if t is not None:
            self.latest = t if self.latest is None else max(self.latest, t)
        a = self._actor(kind, r)
        a.seen(t)
        pid = r.get("pid")
        if pid is not None and pid not in a.pids:
            a.pids.append(pid)
        level = r.get("level")
        if level == "warning":
            a.warnings[event] += 1
        elif level in ("error", "critical"):
            a.errors[event] += 1
        handler = getattr(self, "_on_" + event.replace(".", "_"), None)
        if event.endswith(".start"):
            a.starts += 1
            a.stopped = False
        elif event.endswith(".stop"):
            a.stopped = True
            if r.get("signal") is None:
                a.crashed += 1
        elif event.endswith(".stats"):
            a.stats = r
            if isinstance(r.get("interval_s"), (int, float)) and r["interval_s"] > 0:
                a.interval_s = float(r["interval_s"])
        if handler is not None:
            handler(a, r, t)

    def _actor(self, kind: str, r: dict) -> ActorState:
        if kind == "fanout":
            instance = r.get("instance") or f"pid-{r.get('pid')}"
            if r.get("event") == "fanout.start" and r.get("endpoint"):
                name = self.instance_names[instance] = str(r["endpoint"])
                early = self.actors.pop((kind, instance), None)   # its lines before the start line
                if early is not None:
                    a = self.actors.setdefault((kind, name), ActorState(kind, name))
                    a.warnings.update(early.warnings)
                    a.errors.update(early.errors)
                    a.seen(early.first_t)
                    a.seen(early.last_t)
                    return a
            name = self.instance_names.get(instance, instance)
        else:
            name = kind
        key = (kind, name)
        a = self.actors.get(key)
        if a is None:
            a = self.actors[key] = ActorState(kind, name)
        return a

    def _point(self, series: str, t: float | None, value):
        if t is None or value is None:
            return
        q = self.timeline.get(series)
        if q is None:
            q = self.timeline[series] = deque(maxlen=TIMELINE_POINTS)
        q.append((t, value))

    @staticmethod
    def _stats_time(r: dict, t):
        at = r.get("at")
        return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else t

    # ------------------------------------------------------------------ per event
    def _on_writer_stats(self, a, r, t):
        t = self._stats_time(r, t)
        interval = a.interval_s or DEFAULT_INTERVAL_S
        self._point("writer.revisions_per_s", t, _num(r.get("revisions")) / interval)
        self._point("writer.requests_per_s", t, _num(r.get("requests")) / interval)
        self._point("writer.commit_ms_p99", t, _num(r.get("commit_ms_p99")))
        if r.get("db_size") is not None:
            self._point("writer.db_size", t, _num(r.get("db_size")))
        if r.get("db_size_in_use") is not None:
            self._point("writer.db_size_in_use", t, _num(r.get("db_size_in_use")))
        window = a.extra.setdefault("rate_window", deque())
        window.append((t, _num(r.get("revisions")), interval))
        while window and t is not None and window[0][0] is not None and window[0][0] < t - RATE_WINDOW_S:
            window.popleft()
        a.extra["commit_ms_p99_max"] = max(a.extra.get("commit_ms_p99_max", 0.0), _num(r.get("commit_ms_p99")))

    def _compaction(self, a) -> dict:
        return a.extra.setdefault("compaction", {"state": "idle", "done": 0, "auto": 0})

    def _on_writer_compaction_started(self, a, r, t):
        c = self._compaction(a)
        c.update(state="running", since=t, compact_revision=r.get("compact_revision"), trigger=r.get("trigger"),
                 keys_scanned=0, records_removed=0)
        if r.get("trigger") == "auto":
            c["auto"] += 1
        self._point("writer.compaction_started", t, r.get("compact_revision"))

    def _on_writer_compaction_progress(self, a, r, t):
        c = self._compaction(a)
        c.update(state="running", keys_scanned=r.get("keys_scanned"), records_removed=r.get("records_removed"),
                 elapsed_s=r.get("elapsed_s"))

    def _on_writer_compacted(self, a, r, t):
        c = self._compaction(a)
        c["done"] += 1
        c.update(state="idle", last_at=t, last_revision=r.get("compact_revision"), last_duration_s=r.get("duration_s"),
                 last_records_removed=r.get("records_removed"))
        self._point("writer.compacted", t, r.get("compact_revision"))

    def _on_writer_alarm_raised(self, a, r, t):
        a.extra.setdefault("alarms", set()).add(r.get("alarm") or "NOSPACE")

    def _on_writer_alarm_disarmed(self, a, r, t):
        a.extra.setdefault("alarms", set()).discard(r.get("alarm") or "NOSPACE")

    def _on_writer_defragged(self, a, r, t):
        a.extra["defrag"] = {k: r.get(k) for k in ("db_size_before", "db_size_after", "duration_s", "writes_held_ms")}
        a.extra["defrag"]["at"] = t

    def _on_fanout_stats(self, a, r, t):
        t = self._stats_time(r, t)
        name = a.name
        for fld in ("time_lag_ms", "revision_lag", "victims"):
            if r.get(fld) is not None:
                self._point(f"fanout.{fld}|{name}", t, _num(r.get(fld)))
        if r.get("time_lag_ms_max") is not None:
            self._point(f"fanout.time_lag_ms_max|{name}", t, _num(r.get("time_lag_ms_max")))
        if r.get("slow_sessions") == 0 or ("slow_sessions" not in r and r.get("slowest_session", 1) is None):
            a.extra.pop("backlog", None)      # nobody behind any more (a stuck session was closed)
        a.extra["victims_total"] = a.extra.get("victims_total", 0) + int(_num(r.get("victims")))
        a.extra["gaps_total"] = a.extra.get("gaps_total", 0) + int(_num(r.get("gaps")))

    def _on_fanout_backlog(self, a, r, t):
        sessions = r.get("sessions") if isinstance(r.get("sessions"), list) else []
        # Only sessions with something undelivered: bytes merely in flight are no backlog.
        behind = [s for s in sessions if isinstance(s, dict) and (_num(s.get("oldest_age_s")) > 0
                  or _num(s.get("held_frames")) > 0 or _num(s.get("victims")) > 0)]
        a.extra["backlog"] = {"at": t, "sessions": behind[:5]}

    def _on_watch_victim(self, a, r, t):
        a.extra["victim_lines"] = a.extra.get("victim_lines", 0) + 1 + int(_num(r.get("repeated")))

    def _on_fanout_session_stuck(self, a, r, t):
        a.extra["stuck_closed"] = a.extra.get("stuck_closed", 0) + 1

    def _on_fanout_publish_gap(self, a, r, t):
        a.extra["gap_lines"] = a.extra.get("gap_lines", 0) + 1
        a.extra["last_gap_at"] = t

    def _on_fanout_draining(self, a, r, t):
        a.extra["drain"] = {"state": "draining", "since": t, "sessions": r.get("sessions")}

    def _on_fanout_drained(self, a, r, t):
        a.extra["drain"] = {"state": "drained", "at": t, "sessions_left": r.get("sessions_left"),
                            "took_s": r.get("took_s")}

    def _on_syncer_stats(self, a, r, t):
        t = self._stats_time(r, t)
        self._point("syncer.records_scanned", t, _num(r.get("records_scanned")))
        self._point("syncer.pending", t, _num(r.get("pending")))

    def _on_sync_batch(self, a, r, t):
        a.extra["batches"] = a.extra.get("batches", 0) + 1
        a.extra["last_batch"] = {k: r.get(k) for k in ("watchers", "records_scanned", "lag_revisions", "lag_s",
                                                        "fanouts", "sessions", "session_names", "ms")}
        if r.get("lag_revisions") is not None:
            self._point("syncer.batch_lag_revisions", t, _num(r.get("lag_revisions")))

    # ------------------------------------------------------------------ output
    def report(self, now: float | None = None) -> dict:
        """The summary as plain data (what `-o json` prints; render_text formats it)."""
        now = self.latest if now is None else now
        if now is None:
            now = datetime.now(timezone.utc).timestamp()
        th = self.thresholds
        reasons: list[str] = []
        actors = []
        # An actor killed before its first stats line: the actors of one deployment share
        # ZWATCH_STATS_S, so the others' interval says when its silence means down.
        known = [a.interval_s for a in self.actors.values() if a.interval_s]
        default_interval = min(known) if known else DEFAULT_INTERVAL_S
        for key in sorted(self.actors, key=lambda k: (KINDS.index(k[0]), k[1])):
            a = self.actors[key]
            s = a.stats
            up = a.up(now, default_interval)
            row = {"kind": a.kind, "name": a.name, "up": up, "stopped": a.stopped, "starts": a.starts, "restarts": max(0, a.starts - 1),
                   "crashes": a.crashed, "last_line_age_s": None if a.last_t is None else round(now - a.last_t, 1),
                   "interval_s": a.interval_s or default_interval, "warnings": dict(a.warnings), "errors": dict(a.errors)}
            if not up:
                what = "stopped" if a.stopped else "down"
                reasons.append(f"{a.kind} {a.name} is {what}" if a.kind == "fanout" else f"{a.kind} is {what}")
            if a.kind == "writer":
                interval = a.interval_s or default_interval
                comp = a.extra.get("compaction", {"state": "idle", "done": 0, "auto": 0})
                alarms = sorted(set(s.get("alarms") or []) | a.extra.get("alarms", set()))
                window = a.extra.get("rate_window") or ()
                spent = sum(w[2] for w in window)
                row.update(write_rate=round(_num(s.get("revisions")) / interval, 1),
                           write_rate_1m=round(sum(w[1] for w in window) / spent, 1) if spent else 0.0,
                           requests_per_s=round(_num(s.get("requests")) / interval, 1),
                           commit_ms_p50=s.get("commit_ms_p50"), commit_ms_p99=s.get("commit_ms_p99"),
                           commit_ms_p99_max=a.extra.get("commit_ms_p99_max"), revision=s.get("revision"),
                           compact_revision=s.get("compact_revision"), db_size=s.get("db_size"),
                           db_size_in_use=s.get("db_size_in_use"), leases=s.get("leases"), alarms=alarms,
                           errors_in_interval=s.get("errors"), compaction=_jsonable(comp),
                           defrag=a.extra.get("defrag"))
                if alarms:
                    reasons.append(f"alarm {','.join(alarms)}")
                if a.errors.get("writer.commit_failed"):
                    reasons.append(f"writer.commit_failed x{a.errors['writer.commit_failed']}")
            elif a.kind == "fanout":
                backlog = a.extra.get("backlog", {}).get("sessions", [])
                row.update(sessions=s.get("sessions"), watchers=s.get("watchers"), revision=s.get("revision"),
                           writer_revision=s.get("writer_revision"), revision_lag=s.get("revision_lag"),
                           time_lag_ms=s.get("time_lag_ms"), time_lag_ms_max=s.get("time_lag_ms_max"),
                           victims=s.get("victims"), victims_pending=s.get("victims_pending"),
                           victims_total=a.extra.get("victims_total", 0), victim_lines=a.extra.get("victim_lines", 0),
                           slowest_session=s.get("slowest_session"), slowest_age_s=s.get("slowest_age_s"),
                           slowest_sessions=backlog, stuck_closed=a.extra.get("stuck_closed", 0),
                           publish_gaps=a.extra.get("gap_lines", 0), drain=a.extra.get("drain"))
                if up:
                    if _num(s.get("time_lag_ms")) > th.time_lag_ms:
                        reasons.append(f"fanout {a.name} time lag {s.get('time_lag_ms')} ms")
                    if _num(s.get("revision_lag")) > th.revision_lag:
                        reasons.append(f"fanout {a.name} revision lag {s.get('revision_lag')}")
                    if _num(s.get("victims_pending")) > 0:
                        reasons.append(f"fanout {a.name} victims pending {s.get('victims_pending')}")
                    if _num(s.get("slowest_age_s")) > th.backlog_age_s:
                        reasons.append(f"fanout {a.name} session {s.get('slowest_session')} "
                                       f"{s.get('slowest_age_s')} s behind")
                    gap_at = a.extra.get("last_gap_at")
                    if gap_at is not None and now - gap_at <= DOWN_AFTER_INTERVALS * (a.interval_s or default_interval):
                        reasons.append(f"fanout {a.name} publish gap")
            else:
                row.update(pending=s.get("pending"), batches_in_interval=s.get("batches"),
                           records_scanned=s.get("records_scanned"), batches=a.extra.get("batches", 0),
                           last_batch=a.extra.get("last_batch"))
            actors.append(row)
        for kind in ("writer", "syncer"):
            if not any(k == kind for k, _ in self.actors):
                reasons.append(f"no {kind} lines")
        if not any(k == "fanout" for k, _ in self.actors):
            reasons.append("no fanout lines")
        return {"verdict": "HEALTHY" if not reasons else "DEGRADED", "reasons": reasons,
                "now": _iso(now), "lines": self.lines, "skipped": self.skipped, "actors": actors}


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _jsonable(d: dict) -> dict:
    return {k: (_iso(v) if k in ("since", "last_at") and isinstance(v, float) else v) for k, v in d.items()}


def _size(n) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def _v(x, fmt="{}") -> str:
    return "-" if x is None else fmt.format(x)


def render_text(rep: dict) -> str:
    """The summary for a human: a verdict line, then one block per actor."""
    out = [f"{rep['verdict']}  at {rep['now']}  ({rep['lines']} lines, {rep['skipped']} skipped)"]
    for reason in rep["reasons"]:
        out.append(f"  ! {reason}")
    for a in rep["actors"]:
        state = "up" if a["up"] else ("stopped" if a["stopped"] else "DOWN")
        head = f"{a['kind']:<7}{'' if a['kind'] != 'fanout' else ' ' + a['name']}  {state}, starts {a['starts']}" \
               f" (restarts {a['restarts']}), last line {_v(a['last_line_age_s'], '{} s')} ago"
        out.append("")
        out.append(head)
        if a["kind"] == "writer":
            c = a["compaction"]
            out.append(f"  writes {a['write_rate']} rev/s ({a['write_rate_1m']} over the last minute), "
                       f"{a['requests_per_s']} req/s; commit p50 "
                       f"{_v(a['commit_ms_p50'])} ms, p99 {_v(a['commit_ms_p99'])} ms (max {_v(a['commit_ms_p99_max'])})")
            out.append(f"  revision {_v(a['revision'])}, compacted to {_v(a['compact_revision'])}; DB "
                       f"{_size(a['db_size'])} ({_size(a['db_size_in_use'])} in use); leases {_v(a['leases'])}; "
                       f"alarms {','.join(a['alarms']) or 'none'}")
            if c.get("state") == "running":
                out.append(f"  compaction RUNNING to {c.get('compact_revision')} ({c.get('trigger')}): "
                           f"{c.get('keys_scanned')} keys scanned, {c.get('records_removed')} records removed")
            else:
                last = f", last to {c.get('last_revision')} at {c.get('last_at')} in {c.get('last_duration_s')} s " \
                       f"({c.get('last_records_removed')} records)" if c.get("done") else ""
                out.append(f"  compaction idle: {c.get('done', 0)} done ({c.get('auto', 0)} automatic){last}")
            if a.get("defrag"):
                d = a["defrag"]
                out.append(f"  last defrag: {_size(d.get('db_size_before'))} -> {_size(d.get('db_size_after'))}, "
                           f"writes held {d.get('writes_held_ms')} ms")
        elif a["kind"] == "fanout":
            out.append(f"  sessions {_v(a['sessions'])}, watchers {_v(a['watchers'])}; revision {_v(a['revision'])}, "
                       f"lag {_v(a['revision_lag'])} revisions / {_v(a['time_lag_ms'])} ms "
                       f"(max {_v(a['time_lag_ms_max'])} ms)")
            out.append(f"  victims {_v(a['victims'])} in the last interval ({a['victims_total']} in all), pending "
                       f"{_v(a['victims_pending'])}; stuck sessions closed {a['stuck_closed']}; publish gaps "
                       f"{a['publish_gaps']}")
            for s in a["slowest_sessions"]:
                out.append(f"    slow session {s.get('session')} ({s.get('client') or '-'}): "
                           f"{_v(s.get('oldest_age_s'), '{} s')} behind at revision {_v(s.get('oldest_revision'))}, "
                           f"{_size(s.get('unacked_bytes'))} unacked, {_v(s.get('held_frames'))} frames held")
            if a.get("drain"):
                out.append(f"  drain: {a['drain']}")
        else:
            b = a.get("last_batch") or {}
            out.append(f"  pending {_v(a['pending'])}; batches {a['batches']} in all; records scanned "
                       f"{_v(a['records_scanned'])} in the last interval; last batch: {_v(b.get('watchers'))} watchers,"
                       f" {_v(b.get('lag_revisions'))} revisions behind, sessions {_v(b.get('sessions'))}")
        problems = {**a["errors"], **a["warnings"]}
        if problems:
            out.append("  " + ", ".join(f"{k} x{n}" for k, n in sorted(problems.items(), key=lambda kv: -kv[1])))
    return "\n".join(out) + "\n"
