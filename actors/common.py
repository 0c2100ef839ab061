"""What every actor shares: socket set-up, the stop flag (configuration: zwatch.settings).

Each actor process creates its own zmq.Context after start (a context must never cross a
fork) and sets LINGER so that exit never hangs on unsent messages.
"""
from __future__ import annotations

import os
import signal
import time

import zmq

from zwatch.limits import SOCKET_MAX_MSG_BYTES


def make_socket(ctx: zmq.Context, kind: int, *, linger_ms: int = 0, max_msg: int | None = SOCKET_MAX_MSG_BYTES,
                sndhwm: int | None = None, rcvhwm: int | None = None) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, linger_ms)
    if max_msg is not None:
        # The size limit is enforced by libzmq before msgpack ever sees the bytes: frames up
        # to it reach our code (above MAX_REQUEST_BYTES: RESOURCE_EXHAUSTED), a larger one
        # drops that peer's connection, never our memory.
        sock.setsockopt(zmq.MAXMSGSIZE, max_msg)
    if sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    if kind == zmq.ROUTER:
        # Unroutable replies raise EHOSTUNREACH instead of vanishing; a full peer pipe raises
        # EAGAIN (with NOBLOCK), which is how the fan-out spots a slow client.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


# ZMTP heartbeats on the connections between actors, which may cross hosts.  A peer whose host
# vanished (a partition, a dead node) sends no FIN or RST: a SUB sends nothing, so without them its
# TCP connection to a dead writer stays ESTABLISHED for ever, and after a partition heals TCP's
# own retransmission back-off takes tens of seconds to resume.  With them libzmq (its I/O thread,
# whatever the actor's Python thread is doing) drops a connection whose peer has not answered a
# PING for HEARTBEAT_TIMEOUT_MS and dials again; CONNECT_TIMEOUT_MS bounds each dial, so a healed
# link (or a writer back on the same address on another machine) is reached within about it.
#
# Two timeouts.  The publish stream (PUB/SUB) uses the short one: dropping it loses nothing (the
# fan-out sees the gap by sequence and catches up from the syncer), and a healed link then flows
# again within seconds.  The request links (DEALER/ROUTER between fan-outs, writer and syncer) use
# the long one: dropping a connection discards the requests already in its TCP buffers, so a peer
# whose whole process froze for a few seconds (SIGSTOP, a cgroup freeze, a VM pause, swapping;
# a long commit does not freeze libzmq's I/O thread, which answers PINGs) must not lose the
# keep-alives and writes queued to it.  A host that is really gone is still dropped, after
# REQUEST_HEARTBEAT_TIMEOUT_MS, and a host replaced on the same address answers the fan-out's
# next ping with a RST, which drops the old connection at once.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
REQUEST_HEARTBEAT_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_MS = 2000


def zmtp_heartbeats(sock: zmq.Socket, *, connecting: bool) -> zmq.Socket:
    """ZMTP heartbeats on an internal socket (both ends set them: each drops a dead peer);
    the short timeout on the publish stream, the long one on request links (see above)."""
    stream = sock.type in (zmq.PUB, zmq.SUB, zmq.XPUB, zmq.XSUB)
    timeout_ms = HEARTBEAT_TIMEOUT_MS if stream else REQUEST_HEARTBEAT_TIMEOUT_MS
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, timeout_ms)    # the peer drops us when we go silent
    if connecting:
        sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
    return sock


class StopFlag:
    """SIGTERM / SIGINT set the flag; actor loops poll with short timeouts and check it.

    drain=True (the fan-out): the first SIGTERM only sets ``draining`` (the actor tells its
    clients to move and stops once they left); a second SIGTERM, or a SIGINT, stops at once."""

    def __init__(self, drain: bool = False):
        self.stopping = False
        self.draining = False
        self.drain = drain
        self.signal = None
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum, frame):
        self.signal = signal.Signals(signum).name
        if self.drain and signum == signal.SIGTERM and not self.draining:
            self.draining = True
            return
        self.stopping = True

    def __bool__(self):
        return self.stopping


class Every:
    """A periodic deadline on the monotonic clock."""

    def __init__(self, interval: float):
        self.interval = interval
        self.next = time.monotonic() + interval

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now >= self.next:
            self.next = now + self.interval
            return True
        return False

    def remaining_ms(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        return max(0, int((self.next - now) * 1000))


class AlignedEvery:
    """A periodic deadline at wall-clock multiples of the interval (10 s: :00, :10, :20...), so
    that the `*.stats` lines of different actors cover the same intervals and join on `at`.

    ``at`` is the boundary that fired last (epoch seconds, an int for whole-second intervals).
    Boundaries missed (a paused process) are skipped, not fired one after another."""

    def __init__(self, interval: float, clock=time.time):
        self.interval = interval
        self.clock = clock
        self.next = self._after(clock())
        self.at = self._stamp(self.next - interval)

    def _after(self, t: float) -> float:
        return (int(t // self.interval) + 1) * self.interval

    def _stamp(self, boundary: float):
        return int(round(boundary)) if float(self.interval).is_integer() else round(boundary, 6)

    def due(self) -> bool:
        now = self.clock()
        if now >= self.next:
            self.at = self._stamp(self._after(now) - self.interval)
            self.next = self._after(now)
            return True
        return False

    def remaining_ms(self) -> int:
        return max(0, int((self.next - self.clock()) * 1000))


def drain(sock: zmq.Socket, limit: int, multipart: bool = True):
    """Yield up to `limit` messages already queued on sock, never blocking.

    It asks ZMQ_EVENTS before each receive instead of ending on a zmq.Again exception (cheaper),
    and the limit keeps one busy socket from starving the others of the poll loop."""
    for _ in range(limit):
        if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return
        yield sock.recv_multipart(zmq.NOBLOCK) if multipart else sock.recv(zmq.NOBLOCK)


def percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[i]


class RateLimitedLog:
    """Log a repeated event at most once per interval per key, with the count of the ones held back.

    A condition that lasts (a stuck session, a full disk) must not turn into a line per loop
    iteration: the first occurrence is logged at once, later ones within ``interval_s`` are
    only counted, and the next line that does go out carries ``repeated`` = how many were held
    back since the previous line (and the figures of the latest occurrence).
    """

    def __init__(self, interval_s: float = 1.0, max_keys: int = 10_000):
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._last: dict = {}      # (event, key) -> [last emitted at, held back since]

    def __call__(self, method, event: str, key=None, now: float | None = None, **fields) -> bool:
        """method: a bound logger method (log.info...).  Returns True if a line was written."""
        now = time.monotonic() if now is None else now
        k = (event, key)
        slot = self._last.get(k)
        if slot is not None and now - slot[0] < self.interval_s:
            slot[1] += 1
            return False
        repeated = slot[1] if slot is not None else 0
        if slot is None and len(self._last) >= self.max_keys:
            # Many distinct keys (sessions) at once: forget the stale ones, never grow unbounded.
            self._last = {kk: v for kk, v in self._last.items() if now - v[0] < self.interval_s}
        self._last[k] = [now, 0]
        method(event, repeated=repeated, **fields)
        return True


class StartupError(Exception):
    """A start-up failure the operator fixes (a port in use, an unusable data dir): the actor's
    main() prints its one line on stderr and exits with code 2, no traceback."""


def bind_error_line(actor: str, endpoint: str, exc: zmq.ZMQError, what: str) -> str:
    """'zwatch fanout: cannot bind tcp://127.0.0.1:2379: address already in use (is another fan-out running?)'"""
    in_use = exc.errno == zmq.EADDRINUSE
    # pyzmq's strerror appends "(addr='...')": the line names the endpoint once, so take the C text.
    reason = os.strerror(exc.errno).lower() if in_use else str(exc)
    return f"zwatch {actor}: cannot bind {endpoint}: {reason}" + (f" (is another {what} running?)" if in_use else "")


def data_dir_problem(path: str) -> str | None:
    """Why the LMDB directory cannot be used (None: it can): created if missing, then a file is
    written in it (LMDB needs to write data.mdb and lock.mdb, readers included)."""
    import os
    import tempfile
    try:
        os.makedirs(path, exist_ok=True)
        if not os.path.isdir(path):
            return "not a directory"
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return None
