"""Every structlog event name the actors emit, declared once with its level and meaning.

Event names are a stable interface: operators alert and graph on them (docs/operations.md,
"Log events", documents each with its fields).  tests/unit/test_logevents.py reads the actors'
source for every log call with a literal event name and checks that it is declared here, at
this level, and that the docs tables list exactly these names; its failure message says what
to add where.  Adding an event: a line below, a row in the actor's table in docs/operations.md.
"""
from __future__ import annotations

from dataclasses import dataclass

LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogEvent:
    name: str
    level: str       # the level it is logged at (`exception` logs at error)
    meaning: str     # one line: when it is logged


WRITER = (
    LogEvent("writer.start", "info", "started, store open"),
    LogEvent("writer.stop", "info", "leaving (signal, or a crash: `signal` null)"),
    LogEvent("writer.bind_failed", "error", "an endpoint cannot be bound (port in use): one line on stderr, exit code 2"),
    LogEvent("writer.direct_off", "warning", "the clients' direct write endpoint is not served (CURVE on, or it cannot be bound): writes go through the fan-outs"),
    LogEvent("writer.data_dir_unwritable", "error", "the data dir cannot be created, written or opened: one line on stderr, exit code 2"),
    LogEvent("writer.stats", "info", "every ZWATCH_STATS_S: commits, requests, revisions and commit latency of the interval"),
    LogEvent("writer.commit", "debug", "each group commit that created revisions (at info when it took >= 100 ms)"),
    LogEvent("writer.compaction_started", "info", "a compaction began: a client's compact (trigger request), the automatic policy (auto), or an unfinished one found at start (resume)"),
    LogEvent("writer.compaction_progress", "info", "a physical compaction is running: its figures so far; at most one a second"),
    LogEvent("writer.compacted", "info", "a physical compaction finished: the old records are gone"),
    LogEvent("writer.alarm_raised", "warning", "the LMDB file reached ZWATCH_QUOTA_BACKEND_BYTES: NOSPACE alarm, writes that grow the store fail NO_SPACE"),
    LogEvent("writer.alarm_disarmed", "warning", "an operator disarmed an alarm (`zwatch alarm disarm`)"),
    LogEvent("writer.defrag_started", "info", "a defrag began: writes are held until writer.defragged"),
    LogEvent("writer.defragged", "info", "a defrag swapped a compacting copy in: sizes before/after, how long writes were held"),
    LogEvent("writer.defrag_failed", "error", "a defrag failed (disk full, I/O fault): the store is open on its old file, or the new one if the rename was done"),
    LogEvent("writer.publish_dropped", "warning", "the PUB socket refused a publish: fan-outs will see a gap"),
    LogEvent("writer.reply_dropped", "warning", "a reply could not be routed back (fan-out gone or its pipe full)"),
    LogEvent("writer.bad_envelope", "warning", "a frame set with the wrong number of routing frames"),
    LogEvent("writer.batch_failed", "error", "unexpected exception applying a batch; every request of it got INTERNAL"),
    LogEvent("writer.compact_failed", "error", "a compaction chunk failed (disk full, storage fault); retried later"),
    LogEvent("writer.leases_expired", "info", "leases past their TTL were revoked (leases, keys_deleted since the previous line); at most one a second"),
    LogEvent("writer.cursor_expired", "warning", "a durable cursor was not advanced nor refreshed within its TTL: dropped (durably), compaction may now pass its revision"),
    LogEvent("writer.compaction_held", "info", "automatic compaction was clamped to the oldest durable cursor's revision + 1 (or skipped): its figures name the cursor"),
    LogEvent("writer.paused", "warning", "the process was paused (SIGSTOP, VM or swap stall): the lease clock skips those seconds"),
    LogEvent("writer.commit_failed", "error", "a group commit failed as a whole (NO_SPACE: disk or map full; INTERNAL: I/O fault); at most one a second"),
    LogEvent("writer.auth_changed", "info", "an auth op changed users, roles or auth enabled (one line per auth revision; never a password or hash)"),
    LogEvent("writer.auth_without_curve", "warning", "auth is enabled (at start, or by auth_enable) while the writer runs without CURVE"),
)

SYNCER = (
    LogEvent("syncer.start", "info", "started"),
    LogEvent("syncer.stop", "info", "leaving, with totals since start"),
    LogEvent("syncer.bind_failed", "error", "the endpoint cannot be bound (port in use): one line on stderr, exit code 2"),
    LogEvent("syncer.data_dir_unwritable", "error", "the data dir cannot be created, written or opened: one line on stderr, exit code 2"),
    LogEvent("syncer.stats", "info", "every ZWATCH_STATS_S: pending watchers, batch, outbox and counters of the interval"),
    LogEvent("sync.batch", "info", "a batch of catching-up watchers was handed back to the fan-outs"),
    LogEvent("sync.state", "info", "a watch's state (initial state or resync) was sent and the watch handed off at its revision"),
    LogEvent("syncer.fanout_dropped", "info", "a fan-out was forgotten with its watchers (silent or unreachable)"),
    LogEvent("syncer.store_reopened", "info", "a defrag swapped the LMDB file: the syncer reads the new one from now on"),
    LogEvent("syncer.snapshot_begun", "info", "a consistent snapshot copy was made for `zwatch snapshot save`"),
    LogEvent("syncer.watch_hash", "info", "a watch_hash request (`zwatch hash-watch`) was answered: interval, events, records read"),
    LogEvent("syncer.bad_envelope", "warning", "a frame set with the wrong number of routing frames"),
    LogEvent("syncer.request_failed", "error", "unexpected exception serving a message (answered INTERNAL)"),
)

FANOUT = (
    LogEvent("fanout.start", "info", "started"),
    LogEvent("fanout.joined_stream", "info", "first publish received: watches can be created from now on"),
    LogEvent("fanout.stop", "info", "leaving (`signal` null = crash)"),
    LogEvent("fanout.bind_failed", "error", "the client endpoint cannot be bound (port in use): one line on stderr, exit code 2"),
    LogEvent("fanout.upstream_lost", "warning", "the publish stream and the syncer were silent for ZWATCH_UPSTREAM_TIMEOUT_S (the writer's host is out of reach): sessions told to move, new ones refused"),
    LogEvent("fanout.upstream_restored", "info", "the publish stream is heard again after a loss: serving new sessions again"),
    LogEvent("fanout.draining", "info", "SIGTERM: new sessions refused, every session got a goaway; serving until they left"),
    LogEvent("fanout.drained", "info", "the drain ended (every session left, or ZWATCH_DRAIN_S passed): the fan-out exits"),
    LogEvent("fanout.stats", "info", "every ZWATCH_STATS_S: sessions, watchers, ring and counters of the interval"),
    LogEvent("session.open", "info", "a `hello` opened a session"),
    LogEvent("session.close", "info", "a session ended (bye, rehello, idle_timeout, unreachable, not_reading, stuck)"),
    LogEvent("fanout.backlog", "info", "each stats interval while any session has a backlog: the 5 oldest backlogs"),
    LogEvent("fanout.session_stuck", "warning", "a session with unacknowledged watch output made no ack progress for "
                                                "ZWATCH_STUCK_SESSION_S: it is closed (reason stuck)"),
    LogEvent("watch.victim", "info", "a session stayed without credit or with a full pipe past ZWATCH_STALL_S: "
                                     "its watches replay later from history (at most one line a second per session)"),
    LogEvent("fanout.session_not_reading", "warning", "a session sends requests but reads nothing: its held replies "
                                                      "passed the bound, the session is closed"),
    LogEvent("fanout.heap_trimmed", "info", "the heap was given back to the kernel after a burst of departed "
                                            "sessions or a growth of RSS (malloc_trim)"),
    LogEvent("fanout.publish_gap", "warning", "a publish announced revisions this fan-out never got"),
    LogEvent("fanout.syncer_changed", "info", "the syncer answered with a new instance: catching-up watchers registered again"),
    LogEvent("fanout.syncer_send_failed", "warning", "the queue to the syncer is full; everything is registered again at the next pong"),
    LogEvent("fanout.bad_publish", "error", "undecodable publish"),
    LogEvent("fanout.bad_syncer_message", "error", "undecodable syncer message"),
    LogEvent("fanout.bad_writer_message", "error", "undecodable answer to the fan-out's own ping of the writer"),
    LogEvent("fanout.syncer_error", "error", "the syncer sent an unknown op, typically an `err` answer to sync/unsync"),
    LogEvent("fanout.request_failed", "error", "unexpected exception serving a client request (answered INTERNAL)"),
    LogEvent("fanout.auth_loaded", "info", "the auth state was fetched from the syncer (at start, or after a missed auth change)"),
    LogEvent("fanout.auth_behind", "warning", "an auth change was missed (publish gap): synced watchers go through the syncer until the state is fetched again"),
    LogEvent("fanout.syncer_frames_dropped", "warning", "syncer frames held for a newer auth state passed their bound: dropped, catching-up watchers registered again"),
    LogEvent("auth.login_failed", "warning", "a login was refused (wrong password or unknown user); at most one line a second per user"),
)

# Logged by every actor (actors/security.py, from each actor's run()).
SECURITY = (
    LogEvent("security.curve", "info", "CURVE + ZAP is on (ZWATCH_CURVE_DIR): the actor's public key and what it admits"),
    LogEvent("security.insecure_bind", "warning", "an endpoint reachable from other hosts is bound without CURVE"),
)

# Logged by every actor with a /metrics port (actors/metrics.py, before the actor's run()).
METRICS = (
    LogEvent("metrics.serving", "info", "Prometheus `/metrics` is served (ZWATCH_*_METRICS_PORT or `--metrics-port`)"),
    LogEvent("metrics.bind_failed", "error", "the metrics port cannot be bound (in use, not allowed): the actor exits (code 2)"),
)

# Logged by `zwatch up` (actors/supervise.py), the supervisor of a single-host run.
SUPERVISE = (
    LogEvent("supervisor.restarted", "warning", "a child (writer, syncer, fan-out) exited: it is started again after its back-off"),
    LogEvent("supervisor.gave_up", "error", "a child exited with code 2 (a configuration error): not restarted, the others keep running"),
    LogEvent("supervisor.stopped", "info", "after SIGTERM/SIGINT every child stopped: the supervisor exits"),
)

# actor -> its events; the key is also the actor's source file (actors/<actor>.py) and names
# its table in docs/operations.md (DOC_SECTIONS).
EVENTS = {"writer": WRITER, "syncer": SYNCER, "fanout": FANOUT, "security": SECURITY, "metrics": METRICS,
          "supervise": SUPERVISE}
DOC_SECTIONS = {"writer": "### Writer", "syncer": "### Syncer", "fanout": "### Fan-out",
                "security": "### Every actor: transport security", "metrics": "### Every actor: metrics",
                "supervise": "### Supervisor (`zwatch up`)"}
BY_NAME = {e.name: e for events in EVENTS.values() for e in events}
assert len(BY_NAME) == sum(map(len, EVENTS.values())), "an event is declared twice"
assert all(e.level in LEVELS for e in BY_NAME.values())
