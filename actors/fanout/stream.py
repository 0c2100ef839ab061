"""Is the writer's publish stream still reaching this fan-out?  (No I/O here.)

The writer publishes every commit, and an empty heartbeat every ZWATCH_HEARTBEAT_S when idle,
so a fan-out that has joined the stream hears something at least once a heartbeat.  Silence
for ``timeout_s`` (ZWATCH_UPSTREAM_TIMEOUT_S, a few heartbeats) means the writer died or the
network to it broke.  Which one matters:

* the writer answered one of the fan-out's pings (every 0.5 s, on its request connection) that
  was sent after the stream went silent, at least ``timeout_s / 2`` (more than a heartbeat) ago,
  and still answers: the writer ran after the silence began and would have published since, so
  this fan-out's link to its publish port alone is broken: cut off (below), like a partition.
  A pong alone is not enough: a writer frozen for a while (SIGSTOP, a VM pause) answers the pings
  queued meanwhile a moment before its next heartbeat, and a pong of a ping sent before the
  silence proves nothing about the writer after it;
* the writer is silent but the syncer (on the writer's host, pinged every second) answers: the
  writer itself is down or hung.  Every fan-out is in the same place, so sending clients elsewhere would only
  churn them, and this one still serves reads and catch-ups: it stays (and stays ready);
* the syncer is silent too: the writer's host is unreachable from here (a partition, or a link
  so lossy that nothing gets through), while another fan-out may still be fed.  Its watches get
  nothing, which breaks no guarantee but leaves its clients without live events.  Then the
  fan-out is *cut off*:

* logs `fanout.upstream_lost` once, tells each session to move (a goaway, spread like a drain's:
  drain.py), refuses new sessions (`UNAVAILABLE`, reason UPSTREAM_LOST: the client tries its
  other endpoints and avoids this one for a while) and reports not ready (/readyz);
* when anything arrives again, logs `fanout.upstream_restored` with how long it lasted and
  serves as before.  What it missed meanwhile comes as a publish gap (core.py `_gap`): its
  watchers catch up from the syncer, so nothing is lost or duplicated.

A fan-out that never joined is not "lost" (it is starting, or the writer is not up yet: creates
wait for the first publish, and /readyz says "not joined").

Invariant: `upstream_lost` and `upstream_restored` alternate, starting with lost; each loss is
reported once, however long it lasts.  A fan-out whose writer and syncer both answer is never
cut off unless the writer has been seen running for ``timeout_s / 2`` since the stream's last
message.
"""
from __future__ import annotations

UPSTREAM_LOST = "UPSTREAM_LOST"     # the hello refusal's reason (SPEC.md §3, error table)


class PublishStream:
    def __init__(self, timeout_s: float = 3.0):
        self.timeout_s = timeout_s
        self.heard_at: float | None = None   # monotonic time of the last publish (None: never joined)
        self.lost = False
        self.losses = 0                      # since start (fanout.stats, metrics)
        # When the first pong of a ping sent after the stream's last message came (None: none
        # yet): the writer was running then, after the silence began.
        self.writer_ran_at: float | None = None

    def heard(self, now: float) -> float | None:
        """A publish (or heartbeat) arrived.  Returns the outage's length in seconds when the
        stream was lost until now (restored), else None."""
        outage = None
        if self.lost:
            outage = now - self.heard_at
            self.lost = False
        self.heard_at = now
        self.writer_ran_at = None
        return outage

    def writer_answered(self, ping_sent_at: float, pong_at: float):
        """The writer answered a ping sent at ping_sent_at; its pong came at pong_at."""
        if self.heard_at is not None and ping_sent_at > self.heard_at and self.writer_ran_at is None:
            self.writer_ran_at = pong_at

    def check(self, now: float, syncer_silent: bool = True, writer_answers: bool = False) -> float | None:
        """Returns how long the stream has been silent when it is found lost now (once per
        loss), else None.  syncer_silent: the syncer has not answered for timeout_s either (the
        writer's host is unreachable); while it answers, a silent stream is the writer's own
        outage and nothing is lost here, unless the writer itself still answers (writer_answers)
        and was seen running more than timeout_s / 2 after the silence began (writer_answered):
        then only our link to its publish port is broken."""
        if self.lost or self.heard_at is None:
            return None
        link_broken = (writer_answers and self.writer_ran_at is not None
                       and now - self.writer_ran_at > self.timeout_s / 2)
        if not (syncer_silent or link_broken):
            return None
        silent = now - self.heard_at
        if silent <= self.timeout_s:
            return None
        self.lost = True
        self.losses += 1
        return silent

    def silent_s(self, now: float) -> float:
        return 0.0 if self.heard_at is None else now - self.heard_at
