"""Liveness and readiness of an actor: `/livez` and `/readyz` beside `/metrics` (no I/O here).

Kubernetes (and a container's HEALTHCHECK through `zwatch probe`) asks two different things:

* **live**: is the process still turning its loop?  An actor's main loop polls with a timeout of
  at most a few hundred milliseconds, so a loop that has not turned for LIVE_STALE_S is wedged
  and a restart is the cure.  The bound is generous on purpose: the writer's one long step (a
  defrag copies the whole store, seconds per GB) must not get it killed halfway.  Before the
  first turn the process is starting: live (a start-up probe or an initial delay covers it).
* **ready**: should clients (or, for the writer and the syncer, the fan-outs) be sent here now?
  A fan-out is ready when it has joined the publish stream, the stream is not silent
  (upstream.py) and it is not draining; the writer and the syncer once their loop turns.
  Readiness never restarts anything: a fan-out cut off from the writer is only taken out of the
  Service's endpoints until the stream comes back.

An actor keeps ``loop_turned_at`` (monotonic; None before its first turn) and answers
``readiness() -> (ok, reason)``; the HTTP side (metrics.serve) calls `live`/`ready` from its own
thread: they only read those attributes.
"""
from __future__ import annotations

import time

LIVE_STALE_S = 60.0


def live(actor, now: float | None = None, stale_s: float = LIVE_STALE_S) -> tuple[bool, str]:
    """(ok, text) for /livez."""
    turned = getattr(actor, "loop_turned_at", None)
    if turned is None:
        return True, "ok: starting"
    age = (time.monotonic() if now is None else now) - turned
    if age > stale_s:
        return False, f"main loop has not turned for {age:.1f} s"
    return True, "ok"


def ready(actor) -> tuple[bool, str]:
    """(ok, text) for /readyz: the actor's own readiness, once its loop turned."""
    if getattr(actor, "loop_turned_at", None) is None:
        return False, "starting"
    ok, reason = actor.readiness()
    return ok, "ok" if ok else reason


PATHS = {"/livez": live, "/readyz": ready}
