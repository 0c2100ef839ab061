"""Prometheus `/metrics` of one actor (ZWATCH_{WRITER,SYNCER,FANOUT}_METRICS_PORT; unset = off).

One concept: an actor's figures as Prometheus text exposition, read at scrape time.

* The exposition runs in prometheus_client's HTTP thread with a registry of its own per actor
  (never the library's global one).  Its collectors read the actor's existing attributes when
  scraped (revision, sessions, watchers, cumulative totals): nothing is counted twice on the
  actor's thread for them.  Reading Python attributes from that thread under the GIL is safe
  enough for figures; it never touches the actor's sockets or its LMDB transactions.
* Counters are cumulative since start.  The `*.stats` figures are per interval (reset at every
  line): ``Totals`` folds them into totals at the reset, under a lock the scrape also takes,
  so a counter never goes down nor counts an interval twice.
* Histograms are observed on the actor's thread.  ``Buckets`` is a plain list of counts (one
  writer thread, copied by the scrape): ~0.15 us an observation, with a count for a whole
  group commit's requests at once, where prometheus_client's Histogram takes a lock per call
  (~1 us) and has no weighted observe.  The exposition is still prometheus_client's.

prometheus_client is an optional extra (`pip install 'zwatch[metrics]'`): this module imports
it only when a port is set, so an actor without the extra runs as before.
"""
from __future__ import annotations

import errno
import sys
import threading
import time
from bisect import bisect_left
from collections import Counter
from operator import attrgetter

from zwatch import messages
from zwatch.actors import probes
from zwatch.messages import reply_head

perf_counter = time.perf_counter

# Seconds.  Commits include the fsync (0.5 ms on NVMe to tens of ms on network disks); request
# durations start at 100 us (a fan-out's local answers).
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
# Requests of one session tracked at once at most (a client that never reads its replies, or
# requests lost with a dead writer, must not grow this without bound).
MAX_TRACKED_PER_SESSION = 1024
# A request unanswered this long is forgotten (its writer died; a login whose connection ended
# while it was verified is never answered and has no session whose end would forget it).
TRACKED_MAX_AGE_S = 60.0
INSTALL_HINT = "pip install 'zwatch[metrics]'"
PORT_SETTING = {"writer": "ZWATCH_WRITER_METRICS_PORT", "syncer": "ZWATCH_SYNCER_METRICS_PORT",
                "fanout": "ZWATCH_FANOUT_METRICS_PORT"}


# ====================================================================== hot-path instruments
class Buckets:
    """A histogram observed by one thread and read by the scrape: counts per bucket and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds=REQUEST_BUCKETS):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)   # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float, n: int = 1):
        """n observations of the same value (every request of one group commit)."""
        self.counts[bisect_left(self.bounds, seconds)] += n
        self.sum += seconds * n

    @property
    def count(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> tuple[list, float]:
        """(cumulative [(le, count)] ending with +Inf, sum), for HistogramMetricFamily."""
        counts, total = list(self.counts), self.sum
        out, running = [], 0
        for bound, n in zip(self.bounds, counts):
            running += n
            out.append((_le(bound), running))
        out.append(("+Inf", running + counts[-1]))
        return out, total


def _le(bound: float) -> str:
    return repr(float(bound))


class RequestMeter:
    """Requests by (op, code) and their durations by op.

    The writer counts a group commit's requests (``count``) and settles them all with the one
    duration they share once the replies are sent (``settle``); the fan-out settles each
    request on its own (``done``)."""

    def __init__(self, bounds=REQUEST_BUCKETS):
        self.bounds = bounds
        self.counts: dict[tuple[str, str], int] = {}
        self.durations: dict[str, Buckets] = {}
        self._unsettled: dict[tuple[str, str], int] = {}

    def count(self, op: str, code: str = "OK"):
        k = (op, code)
        self._unsettled[k] = self._unsettled.get(k, 0) + 1

    def settle(self, seconds: float):
        if not self._unsettled:
            return
        unsettled, self._unsettled = self._unsettled, {}
        for (op, code), n in unsettled.items():
            self._add(op, code, seconds, n)

    def done(self, op: str, code: str, seconds: float):
        self._add(op, code, seconds, 1)

    def _add(self, op, code, seconds, n):
        k = (op, code)
        self.counts[k] = self.counts.get(k, 0) + n
        b = self.durations.get(op)
        if b is None:
            b = self.durations[op] = Buckets(self.bounds)
        b.observe(seconds, n)


class InFlight:
    """A fan-out's client requests between their arrival and their reply (forwarded or local):
    (op, arrival time) by session and req_id, settled into a RequestMeter when the reply is
    queued for the client (FanoutCore.reply).  Only built when metrics are served: it reads the
    head of every reply frame (~1 us)."""

    # ack has no reply; bye's is sent at once, outside FanoutCore.reply.
    IMMEDIATE = frozenset({"bye"})
    UNTRACKED = IMMEDIATE | {"ack"}

    def __init__(self, meter: RequestMeter | None = None, max_age_s: float = TRACKED_MAX_AGE_S):
        self.meter = meter or RequestMeter()
        self.by_session: dict[bytes, dict] = {}
        self.max_age_s = max_age_s
        self.swept_at = perf_counter()

    def started(self, ident: bytes, req_id, op: str):
        if op in self.UNTRACKED:
            if op in self.IMMEDIATE:
                self.meter.done(op, "OK", 0.0)
            return
        now = perf_counter()
        if now - self.swept_at > self.max_age_s:
            self._sweep(now)
        pending = self.by_session.get(ident)
        if pending is None:
            pending = self.by_session[ident] = {}
        elif len(pending) >= MAX_TRACKED_PER_SESSION:
            pending.clear()            # replies that never came (their writer died): stop waiting
        pending[req_id] = (op, now)

    def _sweep(self, now: float):
        """Forget what waited longer than max_age_s (once per max_age_s, on the actor's thread)."""
        self.swept_at = now
        limit = now - self.max_age_s
        for ident in list(self.by_session):
            pending = self.by_session[ident]
            for req_id in [r for r, (_, t0) in pending.items() if t0 < limit]:
                del pending[req_id]
            if not pending:
                del self.by_session[ident]

    def replied(self, ident: bytes, frame: bytes):
        pending = self.by_session.get(ident)
        if not pending:
            return
        head = reply_head(frame)
        if head is None:
            return
        started = pending.pop(head[1], None)
        if not pending:
            del self.by_session[ident]
        if started is None:
            return
        op = started[0]
        seconds = perf_counter() - started[1]
        # RequestMeter._add inlined: this runs once per client request.
        meter = self.meter
        k = (op, "OK" if head[0] != "err" else messages.reply_error_code(frame))
        meter.counts[k] = meter.counts.get(k, 0) + 1
        b = meter.durations.get(op)
        if b is None:
            b = meter.durations[op] = Buckets(meter.bounds)
        b.counts[bisect_left(b.bounds, seconds)] += 1
        b.sum += seconds

    def forget(self, ident: bytes):
        self.by_session.pop(ident, None)


class Totals:
    """Cumulative totals of per-interval counters (the `*.stats` dicts reset at every line).

    ``fold`` replaces the actor's reset (adds each figure to its total, then zeroes it); the
    scrape reads total + current under the same lock, so it never sees an interval twice or
    not at all.  Increments on the actor's thread take no lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self.totals: dict[str, int] = {}

    def fold(self, *interval_dicts: dict):
        with self._lock:
            for d in interval_dicts:
                for k, v in d.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        self.totals[k] = self.totals.get(k, 0) + v
                    d[k] = 0

    def read(self, *interval_dicts: dict) -> dict:
        with self._lock:
            out = dict(self.totals)
            for d in interval_dicts:
                for k, v in list(d.items()):
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        out[k] = out.get(k, 0) + v
        return out


# ====================================================================== collectors (scrape time)
def _attr(obj, path: str, default=None):
    """obj.a.b, or default when any part is missing (figures other actors' code adds later, or
    an actor scraped before its run() opened the store)."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return default
    return obj


class _Families:
    """Builds the metric families of one scrape (prometheus_client's core types)."""

    def __init__(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,  # noqa: F401
                                            HistogramMetricFamily)
        self.Counter, self.Gauge, self.Histogram = CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        self.out = []

    def gauge(self, name, doc, value):
        if value is None:
            return
        self.out.append(self.Gauge(name, doc, value=value))

    def counter(self, name, doc, value):
        if value is None:
            return
        self.out.append(self.Counter(name, doc, value=value))

    def labeled(self, kind, name, doc, labels, samples):
        fam = (self.Counter if kind == "counter" else self.Gauge)(name, doc, labels=labels)
        for values, v in samples:
            fam.add_metric(list(values), v)
        self.out.append(fam)

    def histogram(self, name, doc, buckets: Buckets):
        fam = self.Histogram(name, doc)
        b, total = buckets.snapshot()
        fam.add_metric([], b, total)
        self.out.append(fam)

    def histograms(self, name, doc, label, by_label: dict):
        fam = self.Histogram(name, doc, labels=[label])
        for value, buckets in sorted(dict(by_label).items()):
            b, total = buckets.snapshot()
            fam.add_metric([value], b, total)
        self.out.append(fam)

    def requests(self, counter_name, hist_name, what, meter: RequestMeter | None):
        if meter is None:
            return
        counts = dict(meter.counts)
        self.labeled("counter", counter_name, f"{what} by op and result code (OK or the error code)",
                     ["op", "code"], sorted(counts.items()))
        self.histograms(hist_name, f"{what}: duration in seconds by op", "op", meter.durations)


class WriterCollector:
    """The writer's figures (writer.stats, writer.compacted, writer.publish_dropped...)."""

    def __init__(self, writer):
        self.w = writer

    def collect(self):
        w, f = self.w, _Families()
        f.gauge("zwatch_revision", "last revision committed and published", _attr(w, "last_published"))
        f.gauge("zwatch_compact_revision", "compact revision", _attr(w, "compact_rev"))
        commits = _attr(w, "commit_seconds")
        if commits is not None:
            f.counter("zwatch_commits_total", "group commits (durable LMDB transactions)", commits.count)
            f.histogram("zwatch_commit_duration_seconds", "a group commit, from its first write to durable "
                        "(fsync included)", commits)
        f.requests("zwatch_requests_total", "zwatch_request_duration_seconds",
                   "requests answered by the writer (from read to reply sent)", _attr(w, "requests_meter"))
        f.counter("zwatch_publish_dropped_total", "publishes the PUB socket refused (fan-outs see a gap)",
                  _attr(w, "publish_dropped", 0))
        # Refreshed by the writer's loop (every 0.5 s): this thread opens no LMDB transaction.
        f.gauge("zwatch_db_size_bytes", "size of data.mdb", _attr(w, "db_size"))
        f.gauge("zwatch_db_size_in_use_bytes", "bytes of data.mdb in use, the rest being free pages",
                _attr(w, "db_size_in_use"))
        lessor = _attr(w, "lessor")
        f.gauge("zwatch_leases", "leases granted and not expired", len(lessor) if lessor is not None else None)
        clock = _attr(w, "cursor_clock")       # durable cursors (SPEC.md 6.2): plain values
        f.gauge("zwatch_cursors", "durable cursors", len(clock) if clock is not None else None)
        oldest = clock.oldest_revision if clock is not None else None
        last = _attr(w, "last_published")
        f.gauge("zwatch_cursor_oldest_lag_revisions", "revisions committed after the oldest cursor's revision: "
                "what it holds back from compaction (0 with no cursor)",
                (last - oldest) if oldest is not None and last is not None else (0 if clock is not None else None))
        f.counter("zwatch_cursors_expired_total", "cursors dropped because their TTL passed, since start",
                  _attr(w, "cursors_expired", 0))
        alarms = _attr(w, "alarms", ())
        f.labeled("gauge", "zwatch_alarm", "1 while the alarm is active (NOSPACE)", ["name"],
                  [((name,), 1) for name in sorted(set(alarms))] or [(("NOSPACE",), 0)])
        f.gauge("zwatch_compaction_in_progress", "1 while a physical compaction runs",
                1 if _attr(w, "compacting", False) else 0)
        f.counter("zwatch_compaction_records_removed_total", "history records removed by compactions since start",
                  _attr(w, "compaction_records_removed", 0))
        return f.out


class SyncerCollector:
    """The syncer's figures (syncer.stats totals, sync.batch)."""

    def __init__(self, syncer):
        self.s = syncer

    def collect(self):
        s, f = self.s, _Families()
        totals = dict(_attr(s, "totals", {}))
        f.counter("zwatch_sync_batches_total", "batches of catching-up watchers started", totals.get("batches", 0))
        f.counter("zwatch_sync_records_scanned_total", "history records read by catch-up scans",
                  totals.get("records_scanned", 0))
        f.counter("zwatch_syncer_reads_total", "client reads (range) served", totals.get("reads", 0))
        f.counter("zwatch_sync_state_kvs_total", "kvs read for watches' states (initial states, resyncs)",
                  totals.get("state_kvs", 0))
        f.counter("zwatch_sync_states_total", "watch states sent (initial states, resyncs)", totals.get("state_reads", 0))
        pending = _attr(s, "pending")
        batch = _attr(s, "batch")
        f.gauge("zwatch_sync_watchers_pending", "catching-up watchers waiting for a batch or in the running one",
                (len(pending) if pending is not None else 0) + (len(batch) if batch is not None else 0))
        f.gauge("zwatch_sync_batch_lag_revisions", "revisions between the last batch's oldest start and the "
                "revision it caught up to", _attr(s, "last_batch_lag_revisions", 0))
        return f.out


class FanoutCollector:
    """A fan-out's figures (fanout.stats, fanout.backlog, session.open/close, watch.victim)."""

    STATES = ("synced", "future", "unsynced", "victim")

    def __init__(self, fanout):
        self.fo = fanout

    def collect(self):
        fo, f = self.fo, _Families()
        sessions = _attr(fo, "sessions", {})
        f.gauge("zwatch_fanout_sessions", "client sessions open", len(sessions))
        # One pass in C (Counter over attrgetter): the GIL is held ~8 ms per 100,000 watchers.
        by_state = dict.fromkeys(self.STATES, 0)
        by_state.update(Counter(map(_STATE, list(_attr(fo, "core.watchers", {}).values()))))
        f.labeled("gauge", "zwatch_fanout_watchers", "watchers by state (synced, future, unsynced, victim)",
                  ["state"], [((state,), n) for state, n in by_state.items() if state is not None])
        core_st, own_st = _attr(fo, "core.st", {}), _attr(fo, "st", {})
        totals_obj = _attr(fo, "totals")
        totals = totals_obj.read(core_st, own_st) if totals_obj is not None else {}
        f.counter("zwatch_fanout_victims_total", "watches made victims (their session stalled)",
                  totals.get("victims", 0))
        f.counter("zwatch_fanout_publish_gaps_total", "publishes that announced revisions this fan-out never got",
                  totals.get("gaps", 0))
        f.counter("zwatch_fanout_bad_requests_total", "client frames refused before or while dispatching",
                  totals.get("bad_requests", 0))
        lag = _attr(fo, "lag")            # lag.Lag: the figures of fanout.stats / fanout.backlog
        f.gauge("zwatch_fanout_revision_lag", "revisions the writer committed that this fan-out has not applied",
                _attr(lag, "revision_lag", 0))
        f.gauge("zwatch_fanout_time_lag_seconds", "now minus the writer's commit time of the last publish, "
                "measured when it was applied", _attr(lag, "time_lag_s", 0))
        # The time lag is measured when a publish is applied: with no publish at all (writer
        # unreachable) it stays as it was; time() minus this shows how long nothing came.
        f.gauge("zwatch_fanout_last_commit_timestamp_seconds", "writer's commit time (Unix seconds) of the last "
                "publish applied, heartbeats included (0: none yet)", _attr(lag, "commit_time", 0) / 1e6)
        stream = _attr(fo, "stream")       # stream.PublishStream: cut off from the writer?
        f.gauge("zwatch_fanout_upstream_lost", "1 while cut off from the writer's host (publish stream and "
                "syncer silent beyond ZWATCH_UPSTREAM_TIMEOUT_S: fanout.upstream_lost), else 0", int(bool(_attr(stream, "lost", False))))
        f.counter("zwatch_fanout_upstream_losses_total", "times the publish stream was found lost",
                  _attr(stream, "losses", 0))
        f.gauge("zwatch_fanout_session_backlog_max_seconds", "age of the oldest undelivered revision of any session "
                "(as of the last fanout.stats line)", _attr(lag, "backlog_max_s", 0))
        f.gauge("zwatch_fanout_slow_sessions", "sessions with a backlog: unacknowledged output, held frames or "
                "watchers behind (as of the last fanout.stats line)", _attr(lag, "backlog_sessions", 0))
        f.requests("zwatch_fanout_client_requests_total", "zwatch_fanout_request_duration_seconds",
                   "client requests (from the frame read to the reply queued for the client)",
                   _attr(fo, "request_clock.meter"))
        return f.out


_STATE = attrgetter("state")

COLLECTORS = {"writer": WriterCollector, "syncer": SyncerCollector, "fanout": FanoutCollector}


def registry_for(actor_name: str, actor):
    """A registry of its own (never prometheus_client's global one): the actor's collector and
    the process metrics (CPU, RSS, open fds)."""
    from prometheus_client import CollectorRegistry, ProcessCollector
    registry = CollectorRegistry(auto_describe=False)
    registry.register(COLLECTORS[actor_name](actor))
    ProcessCollector(registry=registry)
    return registry


def serve(actor_name: str, actor, port: int | None, host: str = "127.0.0.1") -> int:
    """Start the actor's /metrics when `port` is set.  0: serving (or off); else 2, the exit
    code of a start-up error (as a port in use or a bad data dir elsewhere), after one line on
    stderr: prometheus_client missing, or the port cannot be bound (and a metrics.bind_failed
    log event)."""
    if not port:
        return 0
    setting = PORT_SETTING[actor_name]
    if not 1 <= port <= 65535:     # the variable is checked by zwatch.settings; --metrics-port is not
        print(f"zwatch {actor_name}: metrics port {port} is not in 1..65535", file=sys.stderr)
        return 2
    try:
        from prometheus_client import make_wsgi_app
    except ImportError:
        print(f"zwatch {actor_name}: {setting}={port} needs prometheus_client: {INSTALL_HINT}", file=sys.stderr)
        return 2
    if actor_name == "fanout" and getattr(actor, "request_clock", None) is None:
        actor.request_clock = InFlight()
        actor.core.on_reply = actor.request_clock.replied
    registry = registry_for(actor_name, actor)
    try:
        server = _start_server(host, port, _app(make_wsgi_app(registry), actor))
    except (OSError, ValueError) as exc:      # in use, not allowed, a host that does not resolve
        in_use = getattr(exc, "errno", None) == errno.EADDRINUSE
        reason = (getattr(exc, "strerror", None) or str(exc)).lower()
        print(f"zwatch {actor_name}: cannot serve metrics on {host}:{port} ({setting}): {reason}"
              + (" (is another actor using it? each fan-out needs its own --metrics-port)" if in_use else ""),
              file=sys.stderr)
        actor.log.error("metrics.bind_failed", host=host, port=port, setting=setting, error=str(exc))
        return 2
    actor.metrics_server = server
    actor.log.info("metrics.serving", host=host, port=port, url=f"http://{_url_host(host)}:{port}/metrics")
    return 0


def _app(metrics_app, actor):
    """/livez and /readyz (actors/probes.py) from the actor's attributes; /metrics is
    prometheus_client's exposition (its `name[]` filters); anything else 404."""
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        probe = probes.PATHS.get(path)
        if probe is None:
            if path == "/metrics":
                return metrics_app(environ, start_response)
            # Not the exposition for any path: a probe with a typo must fail, not read 200.
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: the paths are /metrics, /livez, /readyz\n"]
        ok, text = probe(actor)
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
        return [text.encode() + b"\n"]
    return app


def _start_server(host: str, port: int, app):
    """prometheus_client's own server (a thread per request, silent handler), with our app."""
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):     # a scrape every few seconds: not a log line each
            pass

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    server = make_server(host, port, app, Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
