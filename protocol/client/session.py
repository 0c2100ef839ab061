"""The client's I/O thread: one session with one fan-out at a time, and failover between them.

``Session`` is the connection state machine, without a socket (so that its transitions are
unit-tested): which endpoint, which phase, when a hello / ping / ack is due, when the fan-out
went silent.  ``SessionIO`` is the I/O thread that drives it: it owns the ZeroMQ socket, sends
what the session says is due, decodes the server's frames and completes the requests, resumes
the watches after a failover.

    CONNECT --open--> HELLO --hello_answered(ok)--> READY
    HELLO   --hello_answered(refused)-------------> CONNECT   (the next endpoint)
    HELLO | READY --went_silent-------------------> CONNECT   (the next endpoint; from READY a failover)
    READY   --no_session--------------------------> CONNECT   (the same endpoint: it restarted)
    HELLO   --hello_answered(credentials refused)-> CONNECT, or REFUSED once every endpoint in a row
                                                    refused the credentials (UNAUTHENTICATED: a wrong
                                                    password does not get right by asking again)
    HELLO   --hello_later(t)----------------------> HELLO, sent again at t (a login back-off: the fan-out
                                                    said "retry after", no verdict on the credentials)
    READY   --goaway(delay), then move_due--------> CONNECT   (another endpoint: the fan-out drains; SPEC.md §3)

Spreading clients over fan-outs: each Session shuffles its endpoint list once (``shuffle=True``,
seeded from os.urandom), so the clients of a fan-out that died or drains go on to different next
ones; a connection attempt that failed (refused, or silent) waits a full-jitter exponential
back-off (uniform in [0, min(BACKOFF_MAX_S, BACKOFF_BASE_S x 2^(n-1))]) before the next one, so
they do not retry in lockstep either.  The first attempt after losing a working session goes at
once: a failover must stay fast.

REFUSED is final: no more connections; every request and watch of the client ends with the
fan-out's Unauthenticated error (``SessionIO.login_error``).
"""
from __future__ import annotations

import enum
import math
import os
import random
import time
from collections import deque
from typing import TYPE_CHECKING

import zmq

from .. import errors, messages
from ..errors import Unavailable, ZwatchError
from ..limits import PROTOCOL_VERSION
from .resolve import RESOLVE_EVERY_S
from .types import Header, WatchResponse

if TYPE_CHECKING:
    from .core import Watch

# Re-sent after a failover, retried on UNAVAILABLE: their effect does not depend on how many
# times they arrive (a keep-alive renews to the same TTL).
# cursor_put is retried too: it never moves a cursor back, so sending it twice is harmless.
READ_OPS = frozenset({"range", "status", "watch_progress", "lease_keepalive", "lease_timetolive", "lease_leases",
                      "cursor_get", "cursor_list", "cursor_put", "revision_at_time"})
ACK_EVERY = 256 * 1024  # well inside the fan-out's session window (8 MiB by default)
RESUME_EVERY = 0.1      # seconds between attempts to re-create watches a fan-out refused for now
BACKOFF_BASE_S = 0.05   # full-jitter reconnect back-off after the n-th failed attempt in a row:
BACKOFF_MAX_S = 2.0     # uniform in [0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (n - 1))]
AVOID_S = 30.0          # a draining fan-out is not tried again for this long (unless it is the only one)
CONNECT_RETRY_MS = 20    # libzmq reconnect interval of the session socket (a refused connect)
# A fan-out cut off from the writer's host (goaway "upstream_lost", hello refused UPSTREAM_LOST) is
# avoided only this long: the link may heal any second, and when every fan-out was cut off (the
# writer's host down) clients must come back soon after it does, not 30 s later.
AVOID_CUT_OFF_S = 5.0
# Hello refusals that mean "this fan-out, not you", and how long it is then avoided.
AVOIDED_REASONS = {"DRAINING": AVOID_S, "UPSTREAM_LOST": AVOID_CUT_OFF_S}
GOAWAY_AVOID_S = {"draining": AVOID_S, "upstream_lost": AVOID_CUT_OFF_S}
MOVE_WAIT_WRITES_S = 2.0  # after a goaway's delay, writes in flight get this long to be answered first


class Phase(enum.Enum):
    CONNECT = "connect"   # open a socket to the next endpoint
    HELLO = "hello"       # socket open, hello sent (again every heartbeat) until answered
    READY = "ready"       # session open: requests, heartbeats, acks, watch resumes
    REFUSED = "refused"   # every endpoint refused the credentials: final


class Session:
    """Connection state of the I/O thread (see the module docstring for the transitions)."""

    def __init__(self, endpoints: list[str], heartbeat: float, ack_every: int = ACK_EVERY, shuffle: bool = False,
                 rng: random.Random | None = None, resolver=None):
        if not endpoints:
            raise ValueError("no endpoints given")
        self.rng = rng or random.Random(os.urandom(16))
        self.given = list(endpoints)
        self.endpoints = list(endpoints)
        self.shuffle = shuffle
        if shuffle:
            self.rng.shuffle(self.endpoints)
        # resolver(given) -> the endpoints (resolve.py: every address of every name), asked again
        # at the start of a round over them, at most every RESOLVE_EVERY_S; None: as given.
        self.resolver = resolver
        self.resolved_at = -math.inf
        self.attempts = 0           # failed connection attempts in a row (the back-off's n)
        self.not_before = 0.0       # no connection attempt before this (monotonic)
        self.avoid: dict[str, float] = {}   # endpoint -> until (a draining fan-out)
        self.move_at: float | None = None   # a goaway's chosen moment to move
        self.goaways = 0
        self.heartbeat = heartbeat
        self.ack_every = ack_every
        self.phase = Phase.CONNECT
        self.endpoint: str | None = None
        self._next_endpoint = 0
        self.hello_id: int | None = None
        self.hello_sent_at = 0.0
        self.last_heard = 0.0
        self.last_ping = 0.0
        self.last_resume = 0.0
        self.received = 0       # bytes received on this session (flow control is per session)
        self.acked = 0          # bytes acknowledged to the fan-out
        # credit.py: watch frames still held in the watches' queues (not consumed by the
        # application) are not acknowledged.  None: everything counts as consumed on arrival.
        self.credit = None
        self.window_bytes = 0   # the fan-out's session window (hello reply; 0: not told)
        self.max_buffered_bytes = 0   # the client's own bound on unconsumed bytes (0: the window)
        self.credentials_refused = 0   # endpoints in a row that refused the credentials

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    # ---------------------------------------------------------------- transitions
    def open(self, now: float, hello_id: int) -> str:
        """CONNECT -> HELLO: the endpoint to connect to, the next one in turn."""
        if self.phase is not Phase.CONNECT:
            raise RuntimeError(f"open() in phase {self.phase.name}")
        if self.resolver is not None and self._next_endpoint % len(self.endpoints) == 0 \
                and now - self.resolved_at >= RESOLVE_EVERY_S:
            self._resolve(now)
        n = len(self.endpoints)
        for _ in range(n):          # the next one in turn that is not draining (any, if all are)
            candidate = self.endpoints[self._next_endpoint % n]
            if self.avoid.get(candidate, 0.0) <= now:
                break
            self._next_endpoint += 1
        self.endpoint = self.endpoints[self._next_endpoint % n]
        self._next_endpoint += 1
        self.move_at = None
        self.phase = Phase.HELLO
        self.hello_id = hello_id
        self.hello_sent_at = 0.0
        self.last_heard = now
        self.received = self.acked = 0
        self.window_bytes = 0
        if self.credit is not None:
            self.credit.new_session()
        return self.endpoint

    def _resolve(self, now: float):
        """A new round: the names again (pods come and go behind a headless Service)."""
        self.resolved_at = now
        fresh = self.resolver(self.given) or list(self.given)
        if sorted(fresh) != sorted(self.endpoints):
            if self.shuffle:
                self.rng.shuffle(fresh)
            self.endpoints = fresh
            self._next_endpoint = 0

    def is_hello_reply(self, req_id) -> bool:
        return self.phase is Phase.HELLO and req_id == self.hello_id

    def hello_answered(self, ok: bool, credentials_refused: bool = False):
        """HELLO -> READY, or CONNECT (the next endpoint) when refused (version, limits).  Credentials
        refused by every endpoint in turn (one round, so that a fan-out that has not yet learned of a
        new user is not the last word) -> REFUSED."""
        if self.phase is not Phase.HELLO:
            raise RuntimeError(f"hello answered in phase {self.phase.name}")
        if ok:
            self.phase = Phase.READY
            self.credentials_refused = 0
            self.attempts = 0
            return
        self.phase = Phase.CONNECT
        self._backoff(time.monotonic())
        if credentials_refused:
            self.credentials_refused += 1
            if self.credentials_refused >= len(self.endpoints):
                self.phase = Phase.REFUSED

    def hello_later(self, now: float, wait: float):
        """The fan-out backs logins off (failed attempts before this one): the same hello again in
        `wait` seconds, to the same fan-out; not a refusal of the credentials, not silence."""
        if self.phase is not Phase.HELLO:
            raise RuntimeError(f"hello_later in phase {self.phase.name}")
        wait = min(max(wait, 0.0), 60.0)
        self.hello_sent_at = now + wait - self.heartbeat     # hello_due once `wait` has passed
        self.last_heard = now + wait

    @property
    def refused(self) -> bool:
        return self.phase is Phase.REFUSED

    def went_silent(self, now: float) -> bool:
        """No message for 3 heartbeats: a dead or silent fan-out."""
        return self.phase in (Phase.HELLO, Phase.READY) and now - self.last_heard > 3 * self.heartbeat

    def lost(self, now: float | None = None) -> bool:
        """-> CONNECT (the next endpoint; a single endpoint reconnects to itself).  True when an
        open session was lost: a failover, whose requests and watches must be taken over."""
        if self.phase is Phase.REFUSED:
            return False
        was_ready = self.phase is Phase.READY
        self.phase = Phase.CONNECT
        if not was_ready:
            self._backoff(time.monotonic() if now is None else now)
        return was_ready

    def _backoff(self, now: float):
        """A failed attempt: the next one waits a full-jitter exponential back-off."""
        self.attempts += 1
        cap = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (self.attempts - 1))
        self.not_before = now + self.rng.uniform(0.0, cap)

    def connect_due(self, now: float) -> bool:
        return self.phase is Phase.CONNECT and now >= self.not_before

    def avoid_endpoint(self, endpoint: str | None, now: float, for_s: float = AVOID_S):
        """A draining or cut-off fan-out (goaway, or a hello refused with DRAINING / UPSTREAM_LOST):
        skipped by open() for a while."""
        if endpoint is not None and len(self.endpoints) > 1:
            self.avoid[endpoint] = now + for_s

    def goaway(self, now: float, delay_s: float, endpoint: str | None = None, avoid_s: float = AVOID_S):
        """The fan-out drains (or is cut off): move at a uniform random moment in [0, delay_s]
        (spreading the moves of its clients), to `endpoint` if it is one of ours, else the next
        one in turn; this one is avoided for avoid_s."""
        self.goaways += 1
        self.avoid_endpoint(self.endpoint, now, avoid_s)
        if endpoint in self.endpoints and endpoint != self.endpoint:
            self._next_endpoint = self.endpoints.index(endpoint)
        if self.move_at is None and self.phase is Phase.READY:
            self.move_at = now + self.rng.uniform(0.0, max(0.0, delay_s))

    def move_due(self, now: float) -> bool:
        return self.phase is Phase.READY and self.move_at is not None and now >= self.move_at

    def moved(self):
        """READY -> CONNECT after a goaway: like a failover, at once (the old session still served)."""
        self.phase = Phase.CONNECT
        self.move_at = None
        self.attempts = 0
        self.not_before = 0.0

    def no_session(self):
        """READY -> CONNECT to the same endpoint: the fan-out restarted under the same address."""
        if self.phase is Phase.REFUSED:
            return
        self.phase = Phase.CONNECT
        self._next_endpoint -= 1

    # ---------------------------------------------------------------- what is due
    def hello_due(self, now: float) -> bool:
        return self.phase is Phase.HELLO and now - self.hello_sent_at > self.heartbeat

    def hello_sent(self, now: float):
        self.hello_sent_at = now

    def ping_due(self, now: float) -> bool:
        return self.phase is Phase.READY and now - self.last_ping >= self.heartbeat

    def pinged(self, now: float):
        self.last_ping = now

    def resume_due(self, now: float) -> bool:
        return now - self.last_resume >= RESUME_EVERY

    def resumed(self, now: float):
        self.last_resume = now

    def heard(self, now: float, nbytes: int):
        self.last_heard = now
        self.received += nbytes

    def ack_value(self) -> int:
        """The bytes to acknowledge: those received and consumed (credit.py).  The fan-out then
        leaves at most its session window unconsumed here (max_buffered_bytes, when set, is
        asked for as that window in the hello)."""
        held = self.credit.held if self.credit is not None else 0
        return max(self.acked, self.received - held)

    def ack_due(self, with_ping: bool = False) -> bool:
        """With a ping: anything unacknowledged; otherwise only once ack_every bytes are (a
        quarter of the window or of max_buffered_bytes when that is smaller)."""
        if self.phase is not Phase.READY:
            return False
        value = self.ack_value()
        if with_ping:
            return value != self.acked
        return value - self.acked >= self.ack_threshold()

    def ack_threshold(self) -> int:
        """ack_every, or a quarter of the window or of max_buffered_bytes when that is smaller:
        a small window must not wait for ack_every bytes to keep data moving."""
        every = self.ack_every
        for bound in (self.window_bytes, self.max_buffered_bytes):
            if bound:
                every = min(every, bound // 4)
        return max(every, 1)

    def acknowledged(self, value: int | None = None):
        self.acked = self.received if value is None else value

    def poll_timeout_ms(self, now: float | None = None) -> int:
        # Right after connecting the hello could not go yet (IMMEDIATE): poll briefly and retry.
        if self.phase is Phase.HELLO and self.hello_sent_at == 0.0:
            return 5
        wait = int(self.heartbeat * 250)
        now = time.monotonic() if now is None else now
        if self.phase is Phase.CONNECT:
            wait = min(wait, max(1, int((self.not_before - now) * 1000) + 1))
        if self.move_at is not None:
            wait = min(wait, max(1, int((self.move_at - now) * 1000) + 1))
        return wait


class SessionIO:
    """The I/O thread of ``Client`` (a mixin: it works on the client's request and watch tables)."""

    # CURVE on the DEALER: a curve.ClientCurve (Client sets it from curve_server_key /
    # curve_client_key / ZWATCH_CURVE_*); None: a plain connection.
    curve = None
    _sock = None        # the DEALER of the current session (None between sessions)
    _hello = None       # the current session's hello frame (sent again until answered)

    def _io_main(self):
        """The sync client's I/O thread: _io_step, then a zmq.Poller (the asyncio client runs the
        same steps on pyzmq's asyncio Poller, aio.py)."""
        self._poller = zmq.Poller()
        self._poller.register(self._wake_rx, zmq.POLLIN)
        try:
            while not self._closed:
                step = self._io_step(time.monotonic())
                if step is None:
                    continue
                wait_ms, read = step
                for s, _ in self._poller.poll(wait_ms):
                    if s is self._wake_rx:
                        self._drain_wake()
                    elif read and s is self._sock:
                        self._receive(s, self._session)
        finally:
            self._io_finish()

    # The poller of the loop that drives _io_step: the sync one registers the socket itself.
    def _poll_register(self, sock):
        self._poller.register(sock, zmq.POLLIN)

    def _poll_unregister(self, sock):
        self._poller.unregister(sock)

    def _drop_socket(self, linger: int = 0):
        if self._sock is not None:
            self._poll_unregister(self._sock)
            self._sock.close(linger)
            self._sock = None

    def _io_step(self, now: float):
        """One turn of the I/O loop, without waiting: connect, send what is due, notice silence.
        Returns (poll timeout ms, whether to read the session's socket when it has input), or
        None to turn again at once.  Never blocks: the caller waits (a thread's poll, an awaited
        asyncio poll)."""
        session = self._session
        sock = self._sock
        if session.refused:
            # Final: no socket any more; wait for close() (its wake) and fail what comes in.
            self._drop_socket()
            self._fail_refused()
            return int(session.heartbeat * 1000), False
        if session.move_due(now) and (not self._writes_in_flight() or now > session.move_at + MOVE_WAIT_WRITES_S):
            # A goaway's moment came (and the writes in flight were answered, or had their
            # time): free the old session at once and go on as after a failover.
            try:
                sock.send(messages.encode_request("bye", next(self._ids), {}), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            session.moved()
            self._connected.clear()
            self._lost_connection()
            self.moves += 1
        if session.phase is Phase.CONNECT and not session.connect_due(now):
            self._expire_pending(now, False)      # a back-off: requests still time out
            return session.poll_timeout_ms(now), False
        if session.phase is Phase.CONNECT:
            self._drop_socket()
            hello_id = next(self._ids)
            self.endpoint = session.open(now, hello_id)
            sock = self._ctx.socket(zmq.DEALER)
            if self.curve is not None:
                self.curve.apply(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 0)  # never drop what the fan-out sent us
            sock.setsockopt(zmq.IMMEDIATE, 1)
            # A refused connect (a fan-out still starting) is retried in 20 ms, not libzmq's
            # default 100: the client's own hello timeout decides when to try another endpoint.
            sock.setsockopt(zmq.RECONNECT_IVL, CONNECT_RETRY_MS)
            sock.connect(self.endpoint)
            self._sock = sock
            self._poll_register(sock)
            self._hello = self._hello_frame(hello_id)
        if session.hello_due(now):
            try:
                sock.send(self._hello, zmq.NOBLOCK)
                session.hello_sent(now)
            except zmq.Again:
                pass  # not connected yet (IMMEDIATE): poll briefly and try again
        if session.ready:
            if self._resume_pending and session.resume_due(now):
                session.resumed(now)
                self._resume_watches(sock)
            self._send_queued(sock)
            if session.ping_due(now):
                session.pinged(now)
                try:
                    sock.send(messages.encode_request("ping", next(self._ids), {}), zmq.NOBLOCK)
                    if session.ack_due(with_ping=True):
                        value = session.ack_value()
                        sock.send(messages.encode_request("ack", 0, {"bytes": value}), zmq.NOBLOCK)
                        session.acknowledged(value)
                except zmq.Again:
                    pass
        self._expire_pending(now, session.ready)
        self._router.flush_log(now)
        if session.went_silent(now):
            if session.lost(now):
                self._connected.clear()
                self._lost_connection()
                self.failovers += 1
            return None
        if session.ack_due():
            try:
                value = session.ack_value()
                sock.send(messages.encode_request("ack", 0, {"bytes": value}), zmq.NOBLOCK)
                session.acknowledged(value)
            except zmq.Again:
                pass
        return session.poll_timeout_ms(now), True

    def _io_finish(self):
        """The loop ended (close): say bye, close the sockets, fail what still waits."""
        sock = self._sock
        if sock is not None:
            if self._session.ready:
                # Free the session (and its watches) at once instead of after the idle timeout.
                try:
                    sock.send(messages.encode_request("bye", next(self._ids), {}), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
            self._poll_unregister(sock)
            sock.close(200)
            self._sock = None
        self._wake_rx.close()
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for p in pending:
            p.error = Unavailable("client closed")
            p.event.set()

    def _drain_wake(self):
        while True:
            try:
                self._wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _hello_frame(self, hello_id: int) -> bytes:
        """The hello, with the credentials when the client has some (sent again at every failover:
        the next fan-out authenticates the same user).  The frame is never logged."""
        body = {"version": PROTOCOL_VERSION, "client": self.name}
        if self._session.max_buffered_bytes:
            # The client's bound on unconsumed bytes becomes its session's window (SPEC.md "ack")
            body["window_bytes"] = self._session.max_buffered_bytes
        if self.credentials is not None:
            body.update(self.credentials.hello_fields())
        return messages.encode_request("hello", hello_id, body)

    def _receive(self, sock, session: Session):
        """Up to 1000 frames waiting on the socket; stops early when the session must reconnect."""
        for _ in range(1000):
            try:
                raw = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            session.heard(time.monotonic(), len(raw))
            try:
                kind, req_id, body = messages.decode_server_frame(raw)
            except ZwatchError:
                continue  # not a frame of the protocol: nothing to answer it with
            if kind == "w":
                # Held until the application took every response made from it (credit.py).
                ticket = session.credit.ticket(len(raw)) if session.credit is not None else None
                try:
                    self._on_watch_responses(body, ticket)
                finally:
                    if ticket is not None:
                        ticket.done()
                if self._router.diverged_ids:
                    # Verified watches the client ended (StreamDiverged): cancel them on the
                    # server too (best effort; the reply, to a request nobody waits for, is ignored).
                    for wid in self._router.take_diverged():
                        try:
                            sock.send(messages.encode_request("watch_cancel", next(self._ids), {"watch_id": wid}),
                                      zmq.NOBLOCK)
                        except zmq.Again:
                            pass
            elif kind == "goaway":
                # The fan-out drains: move within delay_ms (a random moment: spread the moves).
                body = body if isinstance(body, dict) else {}
                delay_ms = body.get("delay_ms")
                delay_ms = delay_ms if isinstance(delay_ms, (int, float)) and not isinstance(delay_ms, bool) else 0
                endpoint = body.get("endpoint") if isinstance(body.get("endpoint"), str) else None
                avoid_s = GOAWAY_AVOID_S.get(body.get("reason"), AVOID_S) if isinstance(body.get("reason"), str) \
                    else AVOID_S
                session.goaway(time.monotonic(), min(max(delay_ms, 0), 600_000) / 1000, endpoint, avoid_s)
            elif session.is_hello_reply(req_id):
                refusal = ZwatchError.from_wire(body) if kind != "ok" else None
                reason = refusal.details.get("reason") if refusal is not None else None
                if isinstance(reason, str) and reason in AVOIDED_REASONS:
                    session.avoid_endpoint(session.endpoint, time.monotonic(), AVOIDED_REASONS[reason])
                if refusal is not None and refusal.code == errors.UNAUTHENTICATED and \
                        isinstance(refusal.details.get("retry_after_s"), (int, float)):
                    session.hello_later(time.monotonic(), refusal.details["retry_after_s"])
                    continue
                session.hello_answered(kind == "ok", credentials_refused=refusal is not None
                                       and refusal.code == errors.UNAUTHENTICATED)
                if session.refused:
                    self.login_error = refusal
                    self._fail_refused()
                    return
                if not session.ready:
                    return  # refused (version, limits, credentials): try the next endpoint
                self.session_info = body
                if self._direct is not None:
                    self._direct.offered(body)
                window = body.get("window_bytes") if isinstance(body, dict) else None
                session.window_bytes = window if isinstance(window, int) and not isinstance(window, bool) else 0
                if session.credit is not None:      # wake the I/O thread as often as it acks
                    session.credit.wake_every = session.ack_threshold()
                self._resume_watches(sock)
                self._connected.set()
            elif kind == "err" and isinstance(body, dict) and body.get("reason") == "NO_SESSION":
                # The fan-out restarted under the same address: open a new session.
                self._lost_connection(resend_all=True, req_id=req_id)
                session.no_session()
                return
            elif req_id in self._resume_reqs:
                self._resumed(self._resume_reqs.pop(req_id), kind, body)
            elif kind in ("ok", "err"):
                self._complete(req_id, kind, body)

    def _fail_refused(self):
        """The credentials were refused for good: every waiting request and every watch ends with
        the fan-out's Unauthenticated error (a copy each: the text is the server's, never a password)."""
        err = self.login_error
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self._outq.clear()
            watches = list(self._watches.values())
            self._watches.clear()
        for p in pending:
            p.error = type(err)(err.message, err.code)
            p.event.set()
        for w in watches:
            w._end(Header(w.last_revision), err.message, err.code, type(err)(err.message, err.code))

    def _writes_in_flight(self) -> bool:
        """Requests sent and not answered whose loss would fail them (writes): a move waits for them."""
        with self._lock:
            queued = set(id(p) for p in self._outq)
            return any(p.op not in READ_OPS and p.op not in ("watch_create", "watch_cancel") and id(p) not in queued
                       for p in self._pending.values())

    def _send_queued(self, sock):
        while self._outq:
            with self._lock:
                if not self._outq:
                    break
                p = self._outq[0]
            try:
                sock.send(p.frame, zmq.NOBLOCK)
            except zmq.Again:
                return
            with self._lock:
                self._outq.popleft()

    def _expire_pending(self, now, ready):
        expired = []
        with self._lock:
            for req_id, p in list(self._pending.items()):
                if now > p.deadline:
                    expired.append(self._pending.pop(req_id))
            if expired:
                gone = set(id(p) for p in expired)
                self._outq = deque(p for p in self._outq if id(p) not in gone)
        for p in expired:
            p.error = Unavailable(f"{p.op}: no answer within the timeout" + ("" if ready else " (no fan-out reachable)"))
            p.event.set()

    def _lost_connection(self, resend_all=False, req_id=None):
        """Failover: reads and watch creates go again on the next session; writes fail UNAVAILABLE."""
        with self._lock:
            again, failed = [], []
            queued = set(id(p) for p in self._outq)
            for p in self._pending.values():
                if id(p) in queued:
                    continue
                if p.op in READ_OPS or p.op in ("watch_create", "watch_cancel") or (resend_all and p.req_id == req_id):
                    again.append(p)
                else:
                    failed.append(p)
            for p in failed:
                self._pending.pop(p.req_id, None)
            self._outq.extendleft(reversed(again))
            for w in self._watches.values():
                w._resuming = True
                w._live = False
        for p in failed:
            p.error = Unavailable(f"{p.op}: connection to the fan-out lost before the reply; "
                                  "the write may or may not have been applied")
            p.event.set()

    def _resume_watches(self, sock):
        self._resume_pending = False
        with self._lock:
            # A watch whose own create is still waiting for its reply is re-sent as it was
            # (queued by _lost_connection); the others resume from their last revision + 1.
            creating = {p.watch_id for p in self._pending.values() if p.op == "watch_create"}
            current = list(self._watches.values())
        handles = []
        for w in current:
            if w.watch_id in creating:
                w._resuming = False      # its own create, re-sent as it was, brings it back
            elif w._resuming and not w.canceled:
                handles.append(w)
        for w in handles:
            w._resuming = False
            w._fragments = []  # a revision cut by the failover is sent again whole
            body = dict(w.body)
            if body.get("initial_state"):
                # Its state was cut by the failover (state_end drops initial_state from the
                # body): the new fan-out sends the whole state again, at a new revision; the
                # application is told to drop the part it got (SPEC.md section 7.7).
                _deliver_reset(w)
            else:
                body["start_revision"] = w._start_revision()
            # A verified watch's server-side hash starts again at the new start revision (an
            # initial state's: after its state_end, SPEC.md 7.10).
            w._vsum, w._vstart = 0, body.get("start_revision", 0)
            req_id = next(self._ids)
            self._resume_reqs[req_id] = w
            try:
                sock.send(messages.encode_request("watch_create", req_id, body), zmq.NOBLOCK)
            except zmq.Again:
                w._resuming = True
                self._resume_pending = True

    def _resumed(self, w: Watch, kind, body):
        """The answer to a watch re-created after a failover."""
        if kind == "ok":
            w._live = True
            return
        if w.canceled:
            return
        err = ZwatchError.from_wire(body)
        if err.code == errors.UNAVAILABLE:
            w._resuming = True              # the new fan-out is not ready yet: try again shortly
            self._resume_pending = True
            return
        # PERMISSION_DENIED (the user lost read on the range meanwhile) or UNAUTHENTICATED end the
        # watch's iterator with that error; other refusals end it as a canceled watch.
        auth = err.code in (errors.PERMISSION_DENIED, errors.UNAUTHENTICATED)
        w._end(Header(w.last_revision), f"resume failed: {err}", err.code if auth else "", err if auth else None)
        with self._lock:
            self._watches.pop(w.watch_id, None)

    def _complete(self, req_id, kind, body):
        with self._lock:
            p = self._pending.pop(req_id, None)
        if p is None:
            return  # a late reply after a timeout
        if kind == "ok":
            if p.op == "watch_create":
                w = self._watches.get(p.watch_id)
                if w is not None:
                    w._live = True
            p.result = body
        else:
            p.error = ZwatchError.from_wire(body)
        p.event.set()

    def _on_watch_responses(self, responses, ticket=None):
        self._router.on_watch_responses(responses, ticket)


def _deliver_reset(w):
    """The reset a client gives an initial-state watch whose state a failover cut (the server's
    own resets come in its responses)."""
    if w._in_state:
        w.queue.put(WatchResponse(w.watch_id, Header(0), [], watch_ids=[w.watch_id] if w.shared else None,
                                  ext={"mark": "reset"}))
