"""What a fan-out knows of the actors behind it, and the `health` checks it answers (no I/O here).

The fan-out pings the writer every WRITER_PING_S on its writer connection and the syncer every
second on its sync connection; each pong is noted here with the figures it carries (the
writer's revision, sizes and alarms; the syncer's list of fan-outs).  From them, without asking
anyone again:

* `status` is answered at once from the last writer pong, saying how old it is (a writer that
  stopped answering shows as an error, never as a wait);
* `member_list` from the last syncer pong;
* `health` is the one that asks: the service pings both actors at once and the check completes
  when a pong at or after those pings came back from each (healthy), or at the deadline
  (HEALTH_TIMEOUT_S after the request: unhealthy, naming who did not answer), so a client knows
  within about a second that the writer or the syncer behind this fan-out is gone.

Invariant: a pending check is answered exactly once (completed or timed out), and a check never
counts a pong that arrived before it started.  Checks that come while the pings of an earlier
check are still unanswered (and under PING_REUSE_S old) share them, so a client flooding `health`
costs the writer and the syncer one ping per round trip, never one per request.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

WRITER_PING_S = 0.5
# Until it has joined the publish stream, a fan-out asks the writer for a heartbeat this often
# (internal.Ping.join): it serves watches from the first publish it hears, not the next idle one.
JOIN_PING_S = 0.01
# At start, requests wait this long at most for their link to the writer or syncer (service.py startup_held).
STARTUP_HOLD_S = 2.0
UPSTREAM_RECONNECT_MS = 20
SYNCER_PING_S = 1.0
# The syncer counts as silent (stream.py: the writer's host out of reach) after this many pings
# went unanswered, whatever ZWATCH_UPSTREAM_TIMEOUT_S is: a pong is up to one ping old anyway.
SYNCER_SILENT_PINGS = 3
HEALTH_TIMEOUT_S = 1.0
PING_REUSE_S = 0.1
# `status` reports the writer unreachable when its last pong is older than this.
WRITER_STALE_S = 3 * WRITER_PING_S
MAX_UNANSWERED_PINGS = 256


def member_id(endpoint: str) -> int:
    """A stable 64-bit id for an actor, from the endpoint it serves on (etcd's member IDs are
    stable over restarts too; a fan-out's instance name is not)."""
    return int.from_bytes(hashlib.blake2b(endpoint.encode(), digest_size=8).digest(), "big") & ((1 << 63) - 1)


@dataclass
class Peer:
    """One upstream actor as the pongs show it."""
    name: str
    seen_at: float | None = None      # monotonic time of the last pong
    seq: int = 0                      # the highest ping seq a pong answered
    revision: int = 0
    info: dict = field(default_factory=dict)
    answered_sent_at: float | None = None   # when the ping the last pong answered was sent
    sent: dict = field(default_factory=dict)  # {seq: monotonic send time} of unanswered pings

    def pinged(self, seq: int, now: float):
        self.sent[seq] = now
        if len(self.sent) > MAX_UNANSWERED_PINGS:       # a peer that never answers: keep the newest
            for old in sorted(self.sent)[:len(self.sent) - MAX_UNANSWERED_PINGS]:
                del self.sent[old]

    def pong(self, seq: int, revision: int, info: dict | None, now: float):
        self.seen_at = now
        if seq >= self.seq:
            self.answered_sent_at = self.sent.get(seq, self.answered_sent_at)
            for old in [s for s in self.sent if s <= seq]:
                del self.sent[old]
        self.seq = max(self.seq, seq)
        self.revision = revision
        if info:
            self.info = info

    def age(self, now: float) -> float | None:
        return None if self.seen_at is None else now - self.seen_at


@dataclass
class Check:
    ident: bytes
    req_id: int
    started: float
    writer_seq: int | None            # None: the ping could not even be sent (peer not connected)
    syncer_seq: int | None


class Upstream:
    def __init__(self, timeout_s: float = HEALTH_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.writer = Peer("writer")
        self.syncer = Peer("syncer")
        self.checks: list[Check] = []
        self.check_pings: tuple | None = None     # (sent at, writer seq, syncer seq) of the last check's pings

    # ------------------------------------------------------------------ pongs
    def writer_pong(self, seq: int, revision: int, info: dict | None, now: float):
        self.writer.pong(seq, revision, info, now)

    def syncer_pong(self, seq: int, revision: int, info: dict | None, now: float):
        self.syncer.pong(seq, revision, info, now)

    @property
    def alarms(self) -> list:
        return list(self.writer.info.get("alarms") or ())

    @property
    def members(self) -> list:
        return list(self.syncer.info.get("members") or ())

    # ------------------------------------------------------------------ health
    def reusable_pings(self, now: float) -> tuple[int, int] | None:
        """The (writer seq, syncer seq) of pings sent for a check less than PING_REUSE_S ago, both
        sent and neither answered yet (a pong already in would be from before this check);
        None: ping again (then say so with pinged())."""
        p = self.check_pings
        if (p is not None and now - p[0] < PING_REUSE_S and p[1] is not None and p[2] is not None
                and self.writer.seq < p[1] and self.syncer.seq < p[2]):
            return p[1], p[2]
        return None

    def pinged(self, now: float, writer_seq: int | None, syncer_seq: int | None):
        self.check_pings = (now, writer_seq, syncer_seq)

    def start_check(self, ident: bytes, req_id: int, now: float, writer_seq: int | None, syncer_seq: int | None):
        self.checks.append(Check(ident, req_id, now, writer_seq, syncer_seq))

    def due(self, now: float, joined: bool, silent_s: float | None = None) -> list[tuple[bytes, int, dict]]:
        """Checks that completed or timed out: (ident, req_id, reply body) each, once.  silent_s:
        how long the publish stream has been silent when the fan-out found it lost (stream.py)."""
        if not self.checks:
            return []
        done, waiting = [], []
        for c in self.checks:
            writer_ok = c.writer_seq is not None and self.writer.seq >= c.writer_seq
            syncer_ok = c.syncer_seq is not None and self.syncer.seq >= c.syncer_seq
            timed_out = now - c.started >= self.timeout_s
            unreachable = c.writer_seq is None or c.syncer_seq is None
            if (writer_ok and syncer_ok) or timed_out or unreachable:
                done.append((c.ident, c.req_id, self._verdict(c, now, writer_ok, syncer_ok, joined, silent_s)))
            else:
                waiting.append(c)
        self.checks = waiting
        return done

    def _verdict(self, c: Check, now: float, writer_ok: bool, syncer_ok: bool, joined: bool,
                 silent_s: float | None = None) -> dict:
        reasons = []
        if not writer_ok:
            reasons.append("writer unreachable" + ("" if c.writer_seq is None else
                                                   f": no answer within {self.timeout_s:g} s"))
        if not syncer_ok:
            reasons.append("syncer unreachable" + ("" if c.syncer_seq is None else
                                                   f": no answer within {self.timeout_s:g} s"))
        if not joined:
            reasons.append("not joined to the writer's publish stream yet")
        elif silent_s is not None:
            reasons.append(f"cut off from the writer's publish stream: silent for {silent_s:.1f} s")
        alarms = self.alarms
        if alarms and writer_ok:
            reasons.append("Active Alarm(s): " + " ".join(alarms))
        return {"health": not reasons, "reason": "; ".join(reasons), "took_ms": round((now - c.started) * 1000, 3),
                "alarms": alarms}

    def forget(self, ident: bytes):
        self.checks = [c for c in self.checks if c.ident != ident]


def advertised(endpoint: str) -> str:
    """The endpoint other hosts dial for a fan-out bound to `endpoint`: a wildcard host
    (0.0.0.0, *, [::]) becomes this host's name."""
    import socket
    for wildcard in ("//0.0.0.0:", "//*:", "//[::]:"):
        if wildcard in endpoint:
            return endpoint.replace(wildcard, f"//{socket.gethostname()}:", 1)
    return endpoint
