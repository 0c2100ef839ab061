"""The fan-out actor's service: sockets, the poll loop, requests, and the syncer link.

Everything it knows about watchers is in core.FanoutCore and everything about a session's output
in sessions.SessionOutput; this module does the I/O between them and the sockets:

* ROUTER (clients, SPEC.md): hello / ping / ack / bye here; watch ops to the core; writes and
  ``status`` forwarded untouched to the writer, reads to the syncer (``[client_id, request]``);
* SUB to the writer's PUB: publishes (zwatch.internal.Publish) to the core;
* DEALER to the writer (forwarded writes) and two DEALERs to the syncer: one for the catch-up
  protocol (zwatch.internal: registrations, events, handoffs), one for reads, so that reads
  never queue behind catch-ups.
"""
from __future__ import annotations

import os
import time
import uuid

import zmq
from zmq.utils.monitor import parse_monitor_message

from zwatch import internal, messages, requests
from zwatch.errors import (FailedPrecondition, InvalidArgument, ResourceExhausted, Unauthenticated, Unavailable,
                           ZwatchError)
from zwatch.limits import (MAX_PENDING_REQUESTS_PER_SESSION, MAX_SESSIONS_PER_FANOUT, MAX_WATCHES_PER_SESSION,
                          PROTOCOL_VERSION)
from zwatch import __version__

from .. import metrics, security
from ..common import AlignedEvery, Every, RateLimitedLog, StopFlag, bind_error_line, drain, make_socket, zmtp_heartbeats
from ..logsetup import configure
from ..memory import TrimPolicy, trim_if_due
from ..auth.state import AuthState
from .authn import Job, LoginLimiter, PasswordWorker, VerifiedLogins
from .core import FanoutCore
from .lag import Lag, StuckSessions
from .drain import DRAINING, CreateRate, Drain, goaway_delay_ms, goaway_frame
from .health import JOIN_PING_S, STARTUP_HOLD_S, UPSTREAM_RECONNECT_MS, SYNCER_PING_S, SYNCER_SILENT_PINGS, WRITER_PING_S, WRITER_STALE_S, Upstream, advertised, member_id
from .model import Session
from .sessions import AGAIN, GONE, SENT, SessionOutput
from .stream import UPSTREAM_LOST, PublishStream

NO_SESSION = "NO_SESSION"
# A hello's window_bytes is raised to this (a smaller window would only make every frame wait
# for the "one frame may always go" rule) and lowered to ZWATCH_SESSION_WINDOW_BYTES.
MIN_CLIENT_WINDOW_BYTES = 64 * 1024
AUTH_FAILED = "etcdserver: authentication failed, invalid user ID or password"
# An unanswered auth_state fetch is sent again after this long (the syncer may be restarting).
AUTH_FETCH_RETRY_S = 2.0
# Client ops whose `password` the fan-out hashes before forwarding (the writer takes hashes only).
PASSWORD_OPS = ("user_add", "user_change_password")
# Logins of one peer address being verified at once at most (the rest: UNAVAILABLE, retry).
MAX_LOGINS_IN_FLIGHT = 2
# Failed logins from one address (any user) before the address as a whole backs off.
ADDRESS_FAILURES_TOLERATED = 10
# Addresses remembered per user as ones it logged in from (exempt from the per-user back-off), and
# users remembered.
LOGIN_ADDRESSES_PER_USER = 16
MAX_LIMITER_USERS = 100_000
# A forwarded request unanswered for this long was lost (its writer or syncer died): it stops
# counting against its session's maximum of requests in flight.
PENDING_FORGET_S = 10.0
# Client frames read per loop round at most, before replies and publishes are looked at again:
# a flooding client must not keep the replies of everyone else waiting for a long round.
CLIENT_FRAMES_PER_ROUND = 256


class Fanout:
    loop_turned_at: float | None = None      # monotonic, at each turn of the loop: /livez (probes.py)

    def __init__(self, endpoint: str, writer_endpoint: str, pub_endpoint: str, syncer_endpoint: str, *,
                 idle_timeout_s: float = 10.0, progress_interval_s: float = 600.0,
                 ring_revisions: int = 20_000, ring_bytes: int = 64 << 20, victim_backoff_s: float = 0.1,
                 max_sessions: int = MAX_SESSIONS_PER_FANOUT, max_watches: int = MAX_WATCHES_PER_SESSION,
                 session_hwm: int = 1000, session_window: int = 8 << 20, stall_s: float = 2.0,
                 stuck_session_s: float = 60.0,
                 stats_s: float = 10.0, max_pending: int = MAX_PENDING_REQUESTS_PER_SESSION,
                 advertise: str | None = None,
                 metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 drain_s: float = 10.0, drain_creates_per_100ms: int = 250, upstream_timeout_s: float = 3.0,
                 direct_endpoint: str | None = "tcp://127.0.0.1:2483"):
        self.endpoint = endpoint
        # The writer's client endpoint (actors/direct.py), told to clients in the hello reply.
        self.direct_endpoint = direct_endpoint or None
        self.writer_endpoint = writer_endpoint
        self.pub_endpoint = pub_endpoint
        self.syncer_endpoint = syncer_endpoint
        self.idle_timeout_s = idle_timeout_s
        self.progress_interval_s = max(0.1, progress_interval_s)
        self.ring_revisions = ring_revisions
        self.max_sessions = max_sessions
        self.max_watches = max_watches
        self.session_hwm = session_hwm
        self.max_pending = max(1, max_pending)
        self.session_window = session_window
        self.stats_s = stats_s
        # Lag behind the writer, sessions' backlogs, stuck sessions (lag.py, issue #12).
        self.lag = Lag()
        self.stuck = StuckSessions(stuck_session_s)
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        # /metrics (actors/metrics.py): cumulative totals of the per-interval counters, and the
        # client requests in flight (InFlight, set only while metrics are served).
        self.totals = metrics.Totals()
        self.request_clock = None
        self.instance = f"fanout-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.advertise = advertise or advertised(endpoint)
        self.member_id = member_id(self.advertise)
        self.started = time.time()
        # Requests that came before their link (to the writer, or the read link to the syncer)
        # was ever up, on a fan-out started with its peers: held and sent once it is, for
        # STARTUP_HOLD_S at most, instead of refusing the first requests of a fresh start
        # with UNAVAILABLE.  [(socket, ident, user, raw)]
        self.startup_held: list = []
        self.links_up: set = set()        # the sockets a forward was ever sent on
        self.startup_hold_until = time.monotonic() + STARTUP_HOLD_S
        # The writer and the syncer as their pongs show them: `status`, `health`, `member_list`.
        self.upstream = Upstream()
        self.writer_ping_seq = 0
        self.log = configure("fanout").bind(instance=self.instance)
        self.log_limited = RateLimitedLog(1.0)
        self.stop = StopFlag(drain=True)     # SIGTERM drains (drain.py), a second one stops
        self.drain = Drain(drain_s)
        # Silence on the publish stream: cut off from the writer (stream.py).
        self.stream = PublishStream(upstream_timeout_s)
        self.drain_creates_per_100ms = drain_creates_per_100ms
        self.create_rate = CreateRate()      # fanout.stats creates_max_100ms (a drain elsewhere)
        self.core = FanoutCore(ring_revisions=ring_revisions, ring_bytes=ring_bytes, max_watches=max_watches,
                               victim_backoff_s=victim_backoff_s, log=self.log, follow_auth=True)
        # Authentication (authn.py): logins and password hashes waiting for the worker thread,
        # the back-off after failed logins, the logins verified once.
        self.pending_logins: dict[bytes, tuple] = {}      # ident -> the login being verified
        self.logins_in_flight: dict[tuple, int] = {}      # limiter key -> logins being verified
        self.fd_sessions: dict[int, bytes] = {}           # connection fd -> the session on it
        self.orphaned_logins: set[bytes] = set()          # pending logins whose connection ended
        self.frame_fd = None                              # fd of the client frame being handled
        self.login_addresses: dict[str, dict] = {}        # user -> addresses it logged in from (recent last)
        # Failed logins back off per session, per user, and per user from one address at once;
        # an address as a whole (many clients behind a NAT) only after 10 failures.
        self.limiter = LoginLimiter(thresholds={"address": ADDRESS_FAILURES_TOLERATED})
        self.verified = VerifiedLogins()
        self.auth_fetch_seq = 0
        # CURVE on the client socket: frames carry the connection's ZAP User-Id (the client's
        # key, or the user a known key maps to); curve_users are the User-Ids that name users.
        self.curve_on = False
        self.curve_users: set[str] = set()
        self.output = SessionOutput(session_window, stall_s)
        self.sessions: dict[bytes, Session] = {}
        self.holding: set[bytes] = set()   # sessions with held frames, retried at every flush
        # libzmq frees a departed peer's ~28 KB but glibc keeps it mapped: trim the heap after
        # bursts of departures or when RSS grew well above its floor (actors/memory.py).
        self.trim_policy = TrimPolicy()
        self.ping_seq = 0
        self.st = dict(frames=0, requests=0, bad_requests=0, pending_refused=0, logins=0, logins_failed=0,
                       logins_refused=0)

    @classmethod
    def from_env(cls, endpoint: str | None = None) -> "Fanout":
        from zwatch import settings         # the declarations: protocol/settings.py
        return cls(**settings.actor_kwargs("fanout", cls, endpoint=endpoint))

    # ================================================================== main loop
    def run(self) -> int:
        ctx = zmq.Context()
        self.router = make_socket(ctx, zmq.ROUTER, sndhwm=self.session_hwm, rcvhwm=10_000)
        self.sub = make_socket(ctx, zmq.SUB, max_msg=None, rcvhwm=100_000)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.writer = make_socket(ctx, zmq.DEALER, max_msg=None, sndhwm=10_000, rcvhwm=100_000)
        self.syncer = make_socket(ctx, zmq.DEALER, max_msg=None, sndhwm=100_000, rcvhwm=100_000)
        # Reads get their own connection to the syncer, so that they never wait behind the
        # catch-up traffic of the sync connection.
        self.reader = make_socket(ctx, zmq.DEALER, max_msg=None, sndhwm=10_000, rcvhwm=100_000)
        self.reader.setsockopt(zmq.IMMEDIATE, 1)
        # IMMEDIATE: a forwarded request fails at once (UNAVAILABLE) when the peer is down,
        # instead of waiting in a queue and being applied after the client gave up.
        self.writer.setsockopt(zmq.IMMEDIATE, 1)
        self.syncer.setsockopt(zmq.ROUTING_ID, self.instance.encode())
        for sock in (self.sub, self.writer, self.syncer, self.reader):
            zmtp_heartbeats(sock, connecting=True)    # the writer's host may vanish (common.py)
            # A refused connect (the peer still starting, or restarting) is retried in 20 ms,
            # not libzmq's 100: the links are up soon after both ends are.
            sock.setsockopt(zmq.RECONNECT_IVL, UPSTREAM_RECONNECT_MS)
        # Connection bursts: a deeper accept queue, and TCP keepalives so that peers whose host
        # vanished without closing are reaped (~90 s) instead of holding ~28 KB each for ever.
        self.router.setsockopt(zmq.BACKLOG, 1024)
        for opt, value in ((zmq.TCP_KEEPALIVE, 1), (zmq.TCP_KEEPALIVE_IDLE, 60), (zmq.TCP_KEEPALIVE_INTVL, 10),
                           (zmq.TCP_KEEPALIVE_CNT, 3)):
            self.router.setsockopt(opt, value)
        # CURVE + ZAP when ZWATCH_CURVE_DIR: clients' ROUTER a server, a client of the writer and syncer
        self.security = security.for_actor("fanout", ctx, self.log)
        self.security.server(self.router, security.CLIENTS, self.endpoint, self.log)
        for sock, peer in ((self.sub, "writer"), (self.writer, "writer"), (self.syncer, "syncer"),
                           (self.reader, "syncer")):
            self.security.client(sock, peer)
        self.curve_on = self.security.on
        self.curve_users = set(self.security.clients.values()) if self.security.maps_users else set()
        try:
            self.router.bind(self.endpoint)
        except zmq.ZMQError as exc:
            return self._bind_failed(ctx, self.endpoint, exc)
        self.sub.connect(self.pub_endpoint)
        self.writer.connect(self.writer_endpoint)
        self.syncer.connect(self.syncer_endpoint)
        self.reader.connect(self.syncer_endpoint)
        self.log.info("fanout.start", endpoint=self.endpoint, writer=self.writer_endpoint,
                      pub=self.pub_endpoint, syncer=self.syncer_endpoint, idle_timeout_s=self.idle_timeout_s,
                      progress_interval_s=self.progress_interval_s, ring_revisions=self.ring_revisions,
                      max_sessions=self.max_sessions, max_watches=self.max_watches)
        poller = zmq.Poller()
        for s in (self.router, self.sub, self.writer, self.syncer, self.reader):
            poller.register(s, zmq.POLLIN)
        # Peers that connect and leave without a word never reach our code; the monitor tells
        # the trim policy that they left (one event per departed peer), so that their memory
        # comes back within seconds, not at the growth trigger's backoff (issue #8).
        # Our own end of the monitor with a deep queue: a storm of disconnects must not drop the
        # events that end their sessions (get_monitor_socket's PAIR keeps the default 1,000).
        monitor_addr = f"inproc://fanout-monitor-{id(self)}"
        self.router.monitor(monitor_addr, zmq.EVENT_DISCONNECTED)
        self.departures = ctx.socket(zmq.PAIR)
        self.departures.setsockopt(zmq.LINGER, 0)
        self.departures.setsockopt(zmq.RCVHWM, 1_000_000)
        self.departures.connect(monitor_addr)
        poller.register(self.departures, zmq.POLLIN)
        self.passwords = PasswordWorker(ctx)
        poller.register(self.passwords.socket, zmq.POLLIN)
        housekeeping = Every(0.1)
        ping = Every(SYNCER_PING_S)
        # The syncer's first ping at once: until its first pong the syncer counts as silent, and
        # a writer outage in a fan-out's first second would otherwise look like a partition.
        ping.next = 0.0
        writer_ping = Every(WRITER_PING_S)
        join_ping = Every(JOIN_PING_S)
        join_ping.next = 0.0                # the first one at once
        memory = Every(1.0)
        progress = Every(self.progress_interval_s)
        stats = self.stats_clock = AlignedEvery(self.stats_s)   # wall-clock boundaries: lines join on `at`
        try:
            while not self.stop:
                self.loop_turned_at = time.monotonic()     # /livez, /readyz (actors/probes.py)
                joined = self.core.last_seen is not None
                ready = dict(poller.poll(5 if self.startup_held else 100 if joined else 1000 * JOIN_PING_S))
                if self.sub in ready:
                    self._drain_publishes()
                if self.syncer in ready:
                    # Always read the syncer: one session waiting for credit must never delay
                    # another session's catch-up.  Its own frames are bounded by its window
                    # and its watchers become victims (etcd's victims) if it stays stuck.
                    self._drain_syncer()
                if self.writer in ready:
                    self._drain_replies(self.writer)
                if self.reader in ready:
                    self._drain_replies(self.reader)
                # Departures before client frames: a connection's end is queued on the monitor
                # before its file descriptor can be reused, so a session is always closed before
                # a later connection could speak on its routing id.
                if self.departures in ready:
                    self._count_departures()
                if self.router in ready:
                    self._drain_clients()
                if self.passwords.socket in ready:
                    self._passwords_done()
                now = time.monotonic()
                if self.startup_held:
                    self._send_startup_held(now)
                self._fetch_auth_if_due(now)
                if housekeeping.due(now):
                    syncer_age = self.upstream.syncer.age(now)
                    syncer_silent = syncer_age is None or syncer_age > max(self.stream.timeout_s,
                                                                          SYNCER_SILENT_PINGS * SYNCER_PING_S)
                    # The writer answers its pings but its stream does not come: our link to
                    # its publish port alone is broken (the writer publishes every heartbeat).
                    writer = self.upstream.writer
                    writer_answers = writer.seen_at is not None and now - writer.seen_at <= WRITER_STALE_S
                    if writer_answers and writer.answered_sent_at is not None:
                        self.stream.writer_answered(writer.answered_sent_at, writer.seen_at)
                    silent = self.stream.check(now, syncer_silent, writer_answers)
                    if silent is not None:
                        self._upstream_lost(silent)
                    self.core.retry_victims(now)
                    self._expire_sessions(now)
                    self._close_stuck(now)
                if memory.due(now):
                    trimmed = trim_if_due(self.trim_policy, now)
                    if trimmed is not None:
                        self.log.info("fanout.heap_trimmed", **trimmed)
                if ping.due(now):
                    self._ping_syncer()
                if writer_ping.due(now):
                    self._ping_writer()
                elif not joined and join_ping.due(now):
                    self._ping_writer(join=True)    # the writer publishes a heartbeat: we join now
                if self.upstream.checks:
                    silent = self.stream.silent_s(now) if self.stream.lost else None
                    for ident, req_id, body in self.upstream.due(now, self.core.last_seen is not None, silent):
                        body["revision"] = self.core.last_seen or 0
                        self.core.reply(ident, messages.encode_ok(req_id, body))
                if progress.due(now):
                    self.core.progress_tick()
                self._flush(now)
                if stats.due():
                    self._log_stats()
                if self.stop.draining and not self.drain.active:
                    self._start_drain(now)
                if self.drain.done(now, len(self.sessions)):
                    self._flush(now)
                    self.log.info("fanout.drained", sessions_left=len(self.sessions), took_s=self.drain.took_s(now),
                                  sessions_at_start=self.drain.sessions_at_start, delay_ms=self.drain.delay_ms)
                    break
        finally:
            self.log.info("fanout.stop", sessions=len(self.sessions), watchers=len(self.core.watchers),
                          revision=self.core.last_seen, signal=self.stop.signal)
            self.router.disable_monitor()
            self.departures.close()
            self.passwords.close()
            for s in (self.router, self.sub, self.writer, self.syncer, self.reader):
                s.close()
            self.security.stop()                   # its ZAP sockets first: term() waits for them
            ctx.term()
        return 0

    def _bind_failed(self, ctx, endpoint, exc) -> int:
        """A port in use (or an unusable address): one line on stderr, a log event, exit code 2."""
        import sys
        self.log.error("fanout.bind_failed", endpoint=endpoint, error=str(exc))
        print(bind_error_line("fanout", endpoint, exc, "fan-out"), file=sys.stderr)
        for s in (self.router, self.sub, self.writer, self.syncer, self.reader):
            s.close()
        self.security.stop()
        ctx.term()
        return 2

    # ================================================================== drain
    def _start_drain(self, now: float):
        """The first SIGTERM: new hellos are refused from now on, every session gets a goaway
        whose delay_ms spreads the moves (drain.py); serving goes on until they left."""
        delay_ms = self.drain.start(now, len(self.sessions), len(self.core.watchers), self.drain_creates_per_100ms)
        frame = goaway_frame(delay_ms)
        for ident in self.sessions:
            self.core.reply(ident, frame)
        self.log.info("fanout.draining", sessions=len(self.sessions), watchers=len(self.core.watchers),
                      drain_s=self.drain.drain_s, delay_ms=delay_ms)

    # ================================================================== upstream lost (stream.py)
    def _upstream_lost(self, silent_s: float):
        """The stream and the syncer went silent (the writer's host is out of reach): every session
        is told to move (spread like a drain's goaway), new hellos are refused until a publish
        arrives again."""
        delay_ms = goaway_delay_ms(len(self.core.watchers), len(self.sessions), self.drain.drain_s,
                                   self.drain_creates_per_100ms)
        frame = goaway_frame(delay_ms, reason="upstream_lost")
        for ident in self.sessions:
            self.core.reply(ident, frame)
        self.log.warning("fanout.upstream_lost", silent_s=round(silent_s, 3), revision=self.core.last_seen,
                         sessions=len(self.sessions), watchers=len(self.core.watchers), delay_ms=delay_ms,
                         timeout_s=self.stream.timeout_s)

    def readiness(self) -> tuple[bool, str]:
        """/readyz (actors/probes.py): joined the publish stream, not cut off from it, not draining."""
        if self.core.last_seen is None:
            return False, "not joined the publish stream yet"
        if self.stream.lost:
            return False, f"publish stream silent for {self.stream.silent_s(time.monotonic()):.1f} s"
        if self.drain.active:
            return False, "draining"
        return True, "ok"

    # ================================================================== publishes
    def _drain_publishes(self):
        heard = False
        for raw in drain(self.sub, 256, multipart=False):
            try:
                pub = internal.Publish.decode(raw)
            except ZwatchError as exc:
                self.log_limited(self.log.error, "fanout.bad_publish", error=str(exc)[:200])
                continue
            self.core.on_publish(pub.prev, pub.last, pub.revisions, pub.compact_revision,
                                 pub.auth_revision, pub.auth_changes)
            self.lag.on_publish(pub.last, pub.commit_time, self.core.last_seen, time.time_ns() // 1000)
            heard = True
        if heard:
            outage = self.stream.heard(time.monotonic())
            if outage is not None:
                self.log.info("fanout.upstream_restored", outage_s=round(outage, 3), revision=self.core.last_seen,
                              sessions=len(self.sessions))

    # ================================================================== syncer
    def _send_syncer(self, frame: bytes, op: str) -> bool:
        try:
            self.syncer.send(frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            # The syncer is gone or swamped; the instance check re-registers everything.
            self.log_limited(self.log.warning, "fanout.syncer_send_failed", op=op)
            self.core.forget_syncer()
            return False

    # ================================================================== upstream: status, health, members
    def _ping_syncer(self) -> int | None:
        """Every second (and for a health check): liveness, and who this fan-out is for the
        syncer's member list.  Returns the ping's seq, None when it could not be sent."""
        self.ping_seq += 1
        member = {"name": self.instance, "endpoint": self.advertise, "started": round(self.started, 3),
                  "sessions": len(self.sessions), "watchers": len(self.core.watchers)}
        return self.ping_seq if self._send_syncer(internal.Ping(self.ping_seq, member).encode(), "ping") else None

    def _ping_writer(self, join: bool = False) -> int | None:
        """Every WRITER_PING_S (and for a health check) on the writer connection: its pong carries
        what `status` answers.  The connection is IMMEDIATE: with no writer connected the send
        fails at once (None), which a health check reports as unreachable without waiting."""
        self.writer_ping_seq += 1
        try:
            self.writer.send(internal.Ping(self.writer_ping_seq, join=join).encode(), zmq.NOBLOCK)
            self.upstream.writer.pinged(self.writer_ping_seq, time.monotonic())
            return self.writer_ping_seq
        except zmq.Again:
            return None

    def _writer_frame(self, raw: bytes):
        try:
            pong = internal.Pong.decode(raw)
        except ZwatchError as exc:
            self.log_limited(self.log.error, "fanout.bad_writer_message", error=str(exc)[:200])
            return
        info = pong.info
        if pong.instance is not None:      # the writer's instance: the hello's `writer` names it
            info = {**(info or {}), "instance": pong.instance}
        self.upstream.writer_pong(pong.seq, pong.revision, info, time.monotonic())

    def _health(self, ident: bytes, req_id: int):
        """Ping both actors now (or share pings sent for a check under 0.1 s ago: a flood of health
        requests costs the writer and the syncer nothing); Upstream.due answers when both ponged,
        or after ~1 s."""
        now = time.monotonic()
        seqs = self.upstream.reusable_pings(now)
        if seqs is None:
            seqs = self._ping_writer(), self._ping_syncer()
            self.upstream.pinged(now, *seqs)
        self.upstream.start_check(ident, req_id, now, *seqs)

    def _status(self) -> dict:
        """etcd's Status, answered from the last writer pong (never a wait on the writer)."""
        now = time.monotonic()
        w, core = self.upstream.writer, self.core
        age = w.age(now)
        errors = ["writer unreachable: " + ("never answered" if age is None else f"no answer for {age:.1f} s")] \
            if age is None or age > WRITER_STALE_S else []
        errors += [f"alarm:{a}" for a in self.upstream.alarms]
        info = w.info
        # The writer is at least where its stream got us: a pong up to WRITER_PING_S old must not
        # show a raft index below the applied index (a put then `endpoint status` did).
        writer_revision = max(w.revision, core.last_seen or 0)
        return {"header": {"revision": writer_revision, "member_id": self.member_id},
                "version": __version__, "protocol_version": PROTOCOL_VERSION,
                "compact_revision": info.get("compact_revision", core.compact_revision),
                "db_size": info.get("db_size", 0), "db_size_in_use": info.get("db_size_in_use", 0),
                "leader": member_id(self.writer_endpoint), "raft_index": writer_revision,
                "raft_applied_index": core.last_seen or 0, "errors": errors, "actor": "fanout",
                "instance": self.instance, "endpoint": self.advertise, "leases": info.get("leases", 0),
                "sessions": len(self.sessions), "watchers": len(core.watchers),
                "writer_seen_ms": None if age is None else round(age * 1000, 1)}

    def _member_list(self) -> dict:
        members = [{"ID": member_id(endpoint), "name": name, "peerURLs": [], "clientURLs": [endpoint],
                    "started": started, "sessions": sessions, "watchers": watchers}
                   for name, endpoint, started, sessions, watchers in self.upstream.members]
        if not any(m["name"] == self.instance for m in members):     # before the syncer's first pong
            members.append({"ID": self.member_id, "name": self.instance, "peerURLs": [],
                            "clientURLs": [self.advertise], "started": round(self.started, 3),
                            "sessions": len(self.sessions), "watchers": len(self.core.watchers)})
        # One member per endpoint: a fan-out restarted on it is the latest start (the syncer still
        # lists the old instance until it times out, ~10 s: it showed twice with the same ID).
        latest: dict[int, dict] = {}
        for m in members:
            if m["ID"] not in latest or (m["started"] or 0) >= (latest[m["ID"]]["started"] or 0):
                latest[m["ID"]] = m
        members = list(latest.values())
        return {"header": {"revision": self.core.last_seen or 0, "member_id": self.member_id}, "members": members}

    def _drain_syncer(self):
        core = self.core
        for frames in drain(self.syncer, 1024):
            if len(frames) >= 2:  # a reply to a forwarded client read: [client_id, user, reply]
                self._route_reply(frames)
                continue
            try:
                op, body, auth_rev = internal.decode_from_syncer(frames[-1])
            except ZwatchError as exc:
                self.log_limited(self.log.error, "fanout.bad_syncer_message", error=str(exc)[:200])
                continue
            if op in ("ev", "synced", "compacted"):
                core.on_syncer(op, body, auth_rev)
            elif op == "pong":
                core.on_syncer_instance(body.instance)
                self.upstream.syncer_pong(body.seq, body.revision, body.info, time.monotonic())
            elif op == "auth_state":
                core.on_auth_state(AuthState.from_wire(body))
            else:
                self.log_limited(self.log.error, "fanout.syncer_error", op=op, body=str(body)[:300])

    def _fetch_auth_if_due(self, now: float):
        """Ask the syncer for the whole auth state when the view needs it (start, missed change)."""
        auth = self.core.auth
        if not auth.need_fetch:
            return
        if auth.fetch_sent_at is not None and now - auth.fetch_sent_at < AUTH_FETCH_RETRY_S:
            return
        self.auth_fetch_seq += 1
        auth.fetch_sent_at = now
        auth.fetches += 1
        self._send_syncer(internal.AuthStateRequest(self.auth_fetch_seq).encode(), "auth_state")

    # ================================================================== output
    def _send(self, ident: bytes, frame: bytes) -> str:
        try:
            self.router.send_multipart((ident, frame), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return AGAIN
        except zmq.ZMQError:  # EHOSTUNREACH: the client is gone
            return GONE
        self.st["frames"] += 1
        return SENT

    def _flush(self, now: float):
        core = self.core
        unsync, sync = core.take_syncer_work()
        # Both lists grow with the number of watchers (a gap or a syncer restart moves them all):
        # they travel in bounded messages, never one the syncer would refuse (issue #8.3).
        if unsync:
            for frame in internal.encode_unsync(unsync):
                self._send_syncer(frame, "unsync")
        if sync:
            for frame in internal.encode_sync(sync):
                self._send_syncer(frame, "sync")
        out = core.take_output()
        if not out and not self.holding:
            return
        for ident in self.holding:
            out.setdefault(ident, [])
        self.holding = set()
        for ident, items in out.items():
            session = self.sessions.get(ident)
            result = self.output.flush(ident, session, items, self._send, now)
            if session is None:
                continue
            if result.lost_owners:
                for owner in result.lost_owners:
                    core.victimize(owner, now)
                self.lag.victimized(session.ident, sum(len(o.watchers) for o in result.lost_owners))
                self.log_limited(self.log.info, "watch.victim", key=ident, session=session.name,
                                 frames_lost=result.lost_frames,
                                 inflight_bytes=session.sent_bytes - session.acked_bytes)
            if result.close == "not_reading":
                self.log.warning("fanout.session_not_reading", session=session.name,
                                 held_replies=len(session.held), held_bytes=session.held_bytes)
            if result.close:
                self._close_session(ident, result.close)
                continue
            for tag in result.progress_again:
                core.request_progress(session, tag.req_id, tag.watch_id)
            if result.holding:
                self.holding.add(ident)

    # ================================================================== clients
    def _count_departures(self):
        """Connections that ended: their sessions end with them (a client that reconnects gets a
        new routing id, so nothing could use them again but someone taking their id over), and
        the trim policy counts them."""
        departed = 0                       # peers without a session (_close_session counts the others)
        for frames in drain(self.departures, 4096):
            try:
                fd = parse_monitor_message(frames)["value"]
            except Exception:              # a malformed event: count it, nothing to close
                fd = None
            ident = self.fd_sessions.pop(fd, None)
            if ident is not None and ident in self.sessions:
                self._close_session(ident, "disconnected")
            else:
                departed += 1
            # A login still being verified on that connection must not open a session for
            # whoever speaks on its routing id next.
            for pending, login in self.pending_logins.items():
                if login[-1] == fd:
                    self.orphaned_logins.add(pending)
        if departed:
            self.trim_policy.note_closed(time.monotonic(), departed)

    def _client_frames(self):
        """(frames, principal, peer address) of the client frames queued now.  Frames are read
        without copy (~3 us more a frame) to see their metadata: the peer's IP address (failed
        logins back off per address) and, with CURVE, the ZAP User-Id (the client's key, or the
        user a known key maps to).  A session is pinned to its principal: the User-Id with CURVE,
        else the address, so a connection from elsewhere that takes over a departed session's
        routing id (ZeroMQ lets a peer choose it) is not that session."""
        router, curve = self.router, self.curve_on
        for _ in range(CLIENT_FRAMES_PER_ROUND):
            if not router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            if self.departures.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                # A connection ended since this round began: its session goes before any later
                # frame is looked at (its fd may already serve another connection).
                self._count_departures()
            msg = router.recv_multipart(zmq.NOBLOCK, copy=False)
            last = msg[-1]
            address = user_id = None
            try:
                self.frame_fd = last.get(zmq.SRCFD)
            except zmq.ZMQError:
                self.frame_fd = None
            try:
                address = last.get("Peer-Address")
                if curve:
                    user_id = last.get("User-Id")
            except zmq.ZMQError:           # not over TCP (ipc://), or no ZAP handler
                pass
            yield [f.bytes for f in msg], (user_id if curve else address), address

    def _drain_clients(self):
        for frames, principal, address in self._client_frames():
            self.st["requests"] += 1
            ident = frames[0]
            if len(frames) != 2:
                self.st["bad_requests"] += 1
                self.core.reply(ident, messages.encode_error(None, InvalidArgument("a request is one frame")))
                continue
            raw = frames[1]
            req_id = None
            try:
                op, req_id, body = messages.decode_request(raw)
                if self.request_clock is not None:
                    self.request_clock.started(ident, req_id, op)
                self._dispatch(ident, raw, op, req_id, body, principal, address)
            except ZwatchError as err:
                self.st["bad_requests"] += 1
                rid = req_id if req_id is not None else messages.error_req_id(err)
                self.core.reply(ident, messages.encode_error(rid, err))
            except Exception as exc:  # a bug must cost one request, never the process
                self.log.exception("fanout.request_failed")
                self.core.reply(ident, messages.encode_error(req_id, ZwatchError(f"{type(exc).__name__}: {exc}")))

    def _dispatch(self, ident, raw, op, req_id, body, principal=None, address=None):
        session = self.sessions.get(ident)
        if op == "hello":
            self._hello(ident, req_id, body, principal, address)
            return
        if session is None:
            raise FailedPrecondition("no session: send hello first", reason=NO_SESSION)
        if session.principal != principal or (session.fd is not None and self.frame_fd != session.fd):
            # Another connection took this routing id (ZeroMQ lets a peer choose its own): it is
            # not the one that logged in, whatever it claims.
            raise Unauthenticated("this session belongs to another connection: send hello", reason=NO_SESSION)
        session.last_heard = time.monotonic()
        if op == "ack":
            self.output.ack(session, requests.normalize("ack", body)["bytes"])
        elif op == "ping":
            self.core.reply(ident, messages.pack(["pong", req_id, {"revision": self.core.last_seen or 0}]))
        elif op in PASSWORD_OPS and "hashed_password" in body:
            # The stored hash is always this fan-out's (scrypt, its salt and work factor): a
            # client choosing it could plant a weak one (audit finding).
            raise InvalidArgument("hashed_password is set by the fan-out: send password")
        elif op in PASSWORD_OPS and "password" in body:
            self._hash_then_forward(session, req_id, op, body)     # a non-str password: refused there
        elif (op in messages.WRITE_OPS or op in messages.LEASE_CLOCK_OPS or op in messages.AUTH_OPS
              or op in messages.ALARM_OPS or op in messages.DEFRAG_OPS or op in messages.CURSOR_OPS):
            self._forward_counted(session, self.writer, raw, "writer", op, body)
        elif (op in messages.READ_OPS or op in messages.SNAPSHOT_OPS or op in messages.HASH_OPS
              or op in messages.TIME_OPS):
            self._forward_counted(session, self.reader, raw, "syncer", op, body)
        elif op == "status":            # from the last writer pong: never waits on the writer
            self.core.reply(ident, messages.encode_ok(req_id, self._status()))
        elif op == "health":
            requests.normalize(op, body)
            self._health(ident, req_id)
        elif op == "member_list":
            requests.normalize(op, body)
            self.core.reply(ident, messages.encode_ok(req_id, self._member_list()))
        elif op == "watch_create":
            self.create_rate.note(session.last_heard)
            self.core.watch_create(session, req_id, body)
        elif op == "watch_cancel":
            self.core.watch_cancel(session, req_id, requests.normalize("watch_cancel", body)["watch_id"])
        elif op == "watch_progress":
            self.core.request_progress(session, req_id, requests.normalize(op, body)["watch_id"])
        elif op == "bye":
            self._close_session(ident, "bye")
            try:
                self.router.send_multipart((ident, messages.encode_ok(req_id, {})), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    # ================================================================== authentication
    def _hello(self, ident, req_id, body, principal=None, address=None):
        if self.drain.active:
            raise Unavailable("this fan-out is draining: connect to another", reason=DRAINING)
        if self.stream.lost:
            raise Unavailable("this fan-out hears nothing from the writer: connect to another", reason=UPSTREAM_LOST)
        hello = requests.normalize("hello", body)
        version = hello["version"]
        if version != PROTOCOL_VERSION:
            raise FailedPrecondition(f"protocol version {version} is not supported; this fan-out speaks {PROTOCOL_VERSION}")
        if ident in self.pending_logins:
            return      # the client sent its hello again while we verify it: that answer will do
        if ident not in self.sessions and len(self.sessions) >= self.max_sessions:
            raise ResourceExhausted(f"this fan-out holds its maximum of {self.max_sessions} sessions")
        user, password = hello.get("user"), hello.get("password")
        key_user = principal if principal in self.curve_users else None
        if user is None or (user == key_user and password is None):
            # No password: anonymous, or the user a known CURVE client key maps to (also when
            # the hello names that same user).
            self._open_session(ident, req_id, hello, key_user, principal, self.frame_fd)
            return
        auth = self.core.auth
        if not auth.ready:
            # Not loaded yet, or being fetched again after a missed change: a login checked
            # against a stale hash could let an old password in.
            raise Unavailable("this fan-out has not loaded the auth state yet; retry")
        now = time.monotonic()
        keys = [("session", ident), ("user", user)]
        if address:
            keys += [("address", address), ("address_user", address, user)]
        # The per-user back-off (guesses at one user from many addresses) does not hold back an
        # address this user logged in from before: an attacker elsewhere cannot lock it out.
        known_address = address is not None and address in self.login_addresses.get(user, ())
        wait = self.limiter.blocked_for([k for k in keys if not (known_address and k[0] == "user")], now)
        if wait > 0:
            self.limiter.refused += 1
            self.st["logins_refused"] += 1
            raise Unauthenticated(f"etcdserver: too many failed authentication attempts; retry in {wait:.1f} s",
                                  retry_after_s=round(wait, 3))
        # A burst of logins from one address must not all be hashed before the first failure
        # backs it off: a couple in flight per address (and one per session), the rest refused.
        in_flight = self.logins_in_flight
        if in_flight.get(("address", address), 0) >= MAX_LOGINS_IN_FLIGHT:
            self.st["logins_refused"] += 1
            raise Unavailable("too many logins in flight from this address; retry", retry_after_s=0.2)
        pw = (password or "").encode()
        exists, stored = auth.password_hash(user)
        if exists and self.verified.known(user, pw, stored):
            self._login_succeeded(user, address, keys)
            self._open_session(ident, req_id, hello, user, principal, self.frame_fd)
            return
        login = (req_id, hello, user, pw, stored, principal, keys, address, self.frame_fd)
        if not self.passwords.submit(Job("verify", ("login", ident), pw, stored)):
            raise Unavailable("this fan-out is busy verifying logins; retry")
        self.pending_logins[ident] = login
        for k in keys:
            in_flight[k] = in_flight.get(k, 0) + 1

    def _passwords_done(self):
        for done in self.passwords.results():
            kind = done.token[0]
            if kind == "login":
                self._login_done(done.token[1], done.ok)
            elif kind == "hash":
                self._hash_done(done.token[1:], done.result)

    def _login_done(self, ident, ok: bool):
        login = self.pending_logins.pop(ident, None)
        if login is None:
            return
        req_id, hello, user, pw, stored, principal, keys, address, fd = login
        for k in keys:
            n = self.logins_in_flight.get(k, 0) - 1
            if n > 0:
                self.logins_in_flight[k] = n
            else:
                self.logins_in_flight.pop(k, None)
        auth = self.core.auth
        # The user may have been deleted or its password changed while we hashed.
        ok = ok and auth.password_hash(user) == (True, stored)
        if ident in self.orphaned_logins:
            # Its connection ended while we verified: nobody to answer (a guess still counts).
            self.orphaned_logins.discard(ident)
            if not ok and auth.enabled:
                self.limiter.failed(keys, time.monotonic())
            return
        if ok:
            self.verified.add(user, pw, stored)
            self._login_succeeded(user, address, keys)
            self._open_session(ident, req_id, hello, user, principal, fd)
            return
        if not auth.enabled:
            # etcd ignores credentials while auth is disabled; the session is anonymous.
            self._open_session(ident, req_id, hello, None, principal, fd)
            return
        backoff = self.limiter.failed(keys, time.monotonic())
        self.st["logins_failed"] += 1
        self.log_limited(self.log.warning, "auth.login_failed", key=user, user=user[:128],
                         session=ident.hex(), backoff_s=backoff)
        self.core.reply(ident, messages.encode_error(req_id, Unauthenticated(AUTH_FAILED)))

    def _login_succeeded(self, user, address, keys):
        # The address as a whole keeps its count: one good login of its own must not let an
        # address spraying guesses at other users start afresh.
        self.limiter.succeeded([k for k in keys if k[0] != "address"])
        if address is not None:
            seen = self.login_addresses.setdefault(user, {})
            seen.pop(address, None)
            seen[address] = None
            while len(seen) > LOGIN_ADDRESSES_PER_USER:
                del seen[next(iter(seen))]
            while len(self.login_addresses) > MAX_LIMITER_USERS:
                del self.login_addresses[next(iter(self.login_addresses))]

    def _open_session(self, ident, req_id, hello, user, principal, fd=None):
        if ident in self.sessions:
            self._close_session(ident, "rehello")
        name = hello["client"]
        session = self.sessions[ident] = Session(ident, name or ident.hex(), time.monotonic())
        session.principal = principal
        # The connection it lives on: when that connection ends (socket monitor), so does the
        # session, instead of lingering until its idle timeout for anyone to take over.
        if fd is not None:
            session.fd = fd
            self.fd_sessions[fd] = ident
        self.core.set_session_user(session, user)
        asked = hello.get("window_bytes") or 0
        if asked:   # a client that wants to buffer less than the window (never below one small frame)
            session.window = min(max(asked, MIN_CLIENT_WINDOW_BYTES), self.session_window)
        if user is not None:
            self.st["logins"] += 1
        self.core.reply(ident, messages.encode_ok(req_id, {
            "version": PROTOCOL_VERSION, "session": ident.hex(), "fanout": self.instance,
            "heartbeat_s": 1.0, "idle_timeout_s": self.idle_timeout_s, "window_bytes": session.window or self.session_window,
            "revision": self.core.last_seen or 0, "user": user, "auth_enabled": self.core.auth.enabled,
            "limits": {"max_watches": self.max_watches, "max_request_bytes": messages.MAX_REQUEST_BYTES,
                       "max_key_bytes": messages.MAX_KEY_BYTES}, **self._direct_writes()}))
        self.log.info("session.open", session=name or ident.hex(), user=user, sessions=len(self.sessions))

    def _direct_writes(self) -> dict:
        """The hello's `writer` field: where the client may send its writes straight to the
        writer (actors/direct.py), and the writer instance it must find there.  Absent when the
        path is off: not configured, CURVE on, auth enabled, or no pong from the writer yet."""
        info = self.upstream.writer.info
        instance = info.get("instance") if info.get("direct") is True else None
        if self.direct_endpoint is None or self.security.on or self.core.auth.enabled or not instance:
            return {}
        # A loopback address means "this host": only for clients of a fan-out on loopback too.
        if security.is_loopback_endpoint(self.direct_endpoint) and not security.is_loopback_endpoint(self.endpoint):
            return {}
        return {"writer": {"endpoint": self.direct_endpoint, "instance": instance}}

    def _hash_then_forward(self, session, req_id, op, body):
        """user_add / user_change_password: the writer stores only hashes; the slow hash runs on
        the worker, then the request goes on with `hashed_password` instead of `password`."""
        requests.normalize(op, body)      # a malformed request is refused before any hashing
        auth = self.core.auth
        if auth.enabled:
            # The writer would refuse it (with the same error); refusing here keeps non-root
            # sessions from making this process hash (80 ms of CPU a request).
            auth.state.check_admin(session.user)
        token = ("hash", session.ident, req_id, op, {k: v for k, v in body.items() if k != "password"})
        if not self.passwords.submit(Job("hash", token, body["password"].encode())):
            raise Unavailable("this fan-out is busy hashing passwords; retry")

    def _hash_done(self, token, hashed):
        ident, req_id, op, body = token
        session = self.sessions.get(ident)
        if session is None:
            return
        if hashed is None:
            self.core.reply(ident, messages.encode_error(req_id, ZwatchError("password hashing failed")))
            return
        body["hashed_password"] = hashed
        try:
            self._forward_counted(session, self.writer, messages.encode_request(op, req_id, body), "writer", op, body)
        except ZwatchError as err:
            self.core.reply(ident, messages.encode_error(req_id, err))

    @staticmethod
    def _cost(op, body) -> int:
        ids = body.get("IDs") if op == "lease_keepalive" and isinstance(body, dict) else None
        return 1 + len(ids) // 64 if isinstance(ids, list) else 1

    def _forward_counted(self, session, sock, raw, peer, op, body):
        """Forward a request of the session, counted against its maximum of requests in flight:
        RESOURCE_EXHAUSTED if it already has its maximum (one request is always admitted when
        none is, whatever it costs)."""
        q, now, cost = session.forwarded, time.monotonic(), self._cost(op, body)
        while q and q[0][0] < now - PENDING_FORGET_S:
            session.forwarded_cost -= q.popleft()[1]
        if q and session.forwarded_cost + cost > self.max_pending:
            self.st["pending_refused"] += 1
            raise ResourceExhausted(f"too many requests in flight on this session ({session.forwarded_cost} "
                                    f"units, the limit is {self.max_pending}): wait for replies")
        self._forward(sock, session.ident, session.user, raw, peer)
        q.append((now, cost))
        session.forwarded_cost += cost

    def _forward(self, sock, ident, user, raw, peer):
        """[client_id, user, request]: the writer and the syncer check the request as that user
        (b"": anonymous) and send the reply back with the same two route frames."""
        try:
            sock.send_multipart((ident, user.encode() if user else b"", raw), zmq.NOBLOCK)
        except zmq.Again:
            if sock not in self.links_up and time.monotonic() < self.startup_hold_until:
                self.startup_held.append((sock, ident, user, raw))
                return
            raise Unavailable(f"the {peer} is not reachable") from None
        if sock not in self.links_up:
            self.links_up.add(sock)

    def _send_startup_held(self, now: float):
        """Held start-up requests (self.startup_held): sent in order once their link is up; past
        the wait, refused as any request to an unreachable peer is."""
        while self.startup_held:
            sock, ident, user, raw = self.startup_held[0]
            try:
                sock.send_multipart((ident, user.encode() if user else b"", raw), zmq.NOBLOCK)
            except zmq.Again:
                if now < self.startup_hold_until:
                    return
                self.startup_held.pop(0)
                try:
                    req_id = messages.decode_request(raw)[1]
                except ZwatchError:
                    continue
                if ident in self.sessions:
                    peer = "syncer" if sock is self.reader else "writer"
                    self.core.reply(ident, messages.encode_error(req_id, Unavailable(f"the {peer} is not reachable")))
                continue
            self.links_up.add(sock)
            self.startup_held.pop(0)

    def _drain_replies(self, sock):
        # Publishes first: the writer announces a compaction before it replies to it.
        self._drain_publishes()
        for frames in drain(sock, 4096):
            if len(frames) >= 2:
                self._route_reply(frames)
            elif sock is self.writer:          # our own ping's pong: [pong]
                self._writer_frame(frames[0])

    def _route_reply(self, frames):
        ident, reply = frames[0], frames[-1]
        session = self.sessions.get(ident)
        if session is not None:
            if session.forwarded:
                session.forwarded_cost -= session.forwarded.popleft()[1]
            self.core.reply(ident, reply)

    def _close_session(self, ident, reason: str):
        session = self.sessions.pop(ident, None)
        if session is None:
            return
        self.core.drop_session(session)
        self.upstream.forget(ident)
        if session.fd is not None and self.fd_sessions.get(session.fd) == ident:
            del self.fd_sessions[session.fd]
        self.holding.discard(ident)
        if self.request_clock is not None:
            self.request_clock.forget(ident)
        self.trim_policy.note_closed(time.monotonic())
        self.log.info("session.close", session=session.name, reason=reason, sessions=len(self.sessions))

    def _close_stuck(self, now):
        """Sessions with unacknowledged watch output and no ack progress for stuck_session_s:
        left open, their watchers would cycle victim -> catch-up -> victim, each round a rescan
        of history by the syncer, for ever (issue #12.6)."""
        if now - self.stuck.checked_at < 1.0:
            return
        self.stuck.checked_at = now
        for ident, unacked, stuck_s in self.stuck.check(self.sessions, now):
            session = self.sessions[ident]
            self.log.warning("fanout.session_stuck", session=session.name, user=session.user,
                             unacked_bytes=unacked, stuck_s=stuck_s, held_frames=len(session.held),
                             watches=len(session.watches))
            self._close_session(ident, "stuck")

    def _expire_sessions(self, now):
        limit = now - self.idle_timeout_s
        for ident in [i for i, s in self.sessions.items() if s.last_heard < limit]:
            self._close_session(ident, "idle_timeout")

    def _log_stats(self):
        core = self.core
        self.log.info("fanout.stats", at=self.stats_clock.at, sessions=len(self.sessions), watchers=len(core.watchers),
                      groups=len(core.index), futures=core.live_futures, victims_pending=len(core.victims),
                      unsynced=core.unsynced_count,
                      revision=core.last_seen, ring=len(core.ring), ring_bytes=core.ring.bytes,
                      auth_revision=core.auth.revision, held_syncer_frames=len(core.held_syncer),
                      interval_s=self.stats_s, max_inflight_bytes=self.output.max_inflight,
                      session_window=self.session_window, creates_max_100ms=self.create_rate.take_max(),
                      upstream_lost=self.stream.lost, upstream_losses=self.stream.losses,
                      **self._lag_figures(), **core.st, **self.st)
        self.totals.fold(core.st, self.st)      # zeroes them, keeping the totals /metrics shows
        self.output.max_inflight = 0

    def _lag_figures(self) -> dict:
        """fanout.stats' lag fields, and a fanout.backlog line while any session has a backlog."""
        self.lag.on_writer_revision(self.upstream.writer.revision)     # the writer's pongs (health.py)
        backlogs = self.lag.backlogs(self.sessions.values(), time.time_ns() // 1000)
        if backlogs:
            self.log.info("fanout.backlog", at=self.stats_clock.at, sessions=backlogs,
                          slow_sessions=self.lag.backlog_sessions)
        slowest = backlogs[0] if backlogs else None
        return dict(self.lag.interval(), slowest_session=slowest and slowest["session"],
                    slowest_age_s=slowest["oldest_age_s"] if slowest else 0.0,
                    slow_sessions=self.lag.backlog_sessions)


def main(endpoint: str | None = None, metrics_port: int | None = None) -> int:
    fanout = Fanout.from_env(endpoint)
    port = metrics_port or fanout.metrics_port           # `zwatch fanout --metrics-port N` wins
    # /metrics first: a port in use (or prometheus_client missing) ends the process at once.
    return metrics.serve("fanout", fanout, port, fanout.metrics_host) or fanout.run()
