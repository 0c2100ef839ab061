"""The verbs on leases: ``lease grant|revoke|timetolive|list|keep-alive``, ``lock`` and ``elect``,
as etcdctl 3.4 runs them (etcdctl/ctlv3/command/lease_command.go, lock_command.go, elect_command.go):
the same argument checks, output, error texts and exit codes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from ..client import Client
from ..client.types import header_of
from ..errors import LeaseNotFound, Unavailable, ZwatchError
from .args import EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR, CommandError, lease_id_arg, ttl_arg
from .format import (error_text, j_keepalive, j_lease_grant, j_lease_revoke, j_leases, j_range, j_time_to_live,
                     json_line, print_get, print_keepalive, print_lease_grant, print_lease_revoke, print_leases,
                     print_time_to_live, write_line)

RETRY_EVERY = 0.5      # seconds between keep-alive attempts while no fan-out answers


def _one_arg(a, message: str) -> str:
    if len(a.args) != 1:
        raise CommandError(message, EXIT_BAD_ARGS)
    return a.args[0]


def _json(a) -> bool:
    return a.write_out == "json"


def _flush():
    sys.stdout.flush()


# ---------------------------------------------------------------- lease
def lease_grant(a, c: Client):
    ttl = ttl_arg(_one_arg(a, "lease grant command needs TTL argument"))
    try:
        r = c.lease_grant(ttl)
    except ZwatchError as exc:
        raise CommandError(f"failed to grant lease ({error_text(exc)})") from None
    json_line(j_lease_grant(r)) if _json(a) else print_lease_grant(r)
    return 0


def lease_revoke(a, c: Client):
    lease_id = lease_id_arg(_one_arg(a, "lease revoke command needs 1 argument"))
    try:
        header = c.lease_revoke(lease_id)
    except ZwatchError as exc:
        raise CommandError(f"failed to revoke lease ({error_text(exc)})") from None
    json_line(j_lease_revoke(header)) if _json(a) else print_lease_revoke(lease_id)
    return 0


def lease_timetolive(a, c: Client):
    lease_id = lease_id_arg(_one_arg(a, "lease timetolive command needs lease ID as argument"))
    try:
        r = c.time_to_live(lease_id, keys=a.keys)
    except ZwatchError as exc:
        raise CommandError(error_text(exc), EXIT_BAD_CONNECTION) from None
    if r.ttl == -1:
        r.granted_ttl = 0          # etcd answers an unknown lease with TTL -1 and nothing else
    json_line(j_time_to_live(r)) if _json(a) else print_time_to_live(r, a.keys)
    return 0


def lease_list(a, c: Client):
    # Extra arguments are ignored, as etcdctl does.  The wire reply is read directly (not through
    # Client.leases) because -w json prints its header.
    try:
        b = c._call("lease_leases", {})
    except ZwatchError as exc:
        raise CommandError(error_text(exc), EXIT_BAD_CONNECTION) from None
    ids = [d["ID"] for d in b.get("leases", [])]
    json_line(j_leases(header_of(b), ids)) if _json(a) else print_leases(ids)
    return 0


def _keepalive_once(c: Client, lease_id: int):
    """One renewal: (header, TTL); TTL <= 0 for a lease that no longer exists."""
    b = c._call("lease_keepalive", {"IDs": [lease_id]})      # the header is printed by -w json
    ttl = next((d["TTL"] for d in b.get("leases", []) if d["ID"] == lease_id), 0)
    return header_of(b), ttl


def lease_keep_alive(a, c: Client):
    lease_id = lease_id_arg(_one_arg(a, "lease keep-alive command needs lease ID as argument"))
    if a.once:
        try:
            header, ttl = _keepalive_once(c, lease_id)
        except ZwatchError as exc:
            raise CommandError(error_text(exc), EXIT_BAD_CONNECTION) from None
        if ttl <= 0:               # clientv3.KeepAliveOnce turns TTL 0 into ErrLeaseNotFound
            raise CommandError(error_text(LeaseNotFound("requested lease not found")), EXIT_BAD_CONNECTION)
        json_line(j_keepalive(header, lease_id, ttl)) if _json(a) else print_keepalive(lease_id, ttl)
        return 0
    # clientv3.KeepAlive: one renewal now, then one TTL/3 after each answer; a failed attempt is
    # retried (the lease may still be alive) until the server says the lease is gone.
    stop = StopSignals()
    while not stop.is_set():
        try:
            header, ttl = _keepalive_once(c, lease_id)
        except Unavailable:
            stop.wait(RETRY_EVERY)
            continue
        if ttl <= 0:
            break
        json_line(j_keepalive(header, lease_id, ttl)) if _json(a) else print_keepalive(lease_id, ttl)
        _flush()
        stop.wait(max(ttl / 3.0, 0.5))
    if stop.is_set():
        stop.die()                 # etcdctl has no handler here: it dies of the signal
    if not _json(a):
        write_line(f"lease {lease_id:016x} expired or revoked.")
    return 0


LEASE_COMMANDS = {"grant": lease_grant, "revoke": lease_revoke, "timetolive": lease_timetolive, "list": lease_list,
                  "keep-alive": lease_keep_alive}


# ---------------------------------------------------------------- signals
class StopSignals:
    """SIGINT / SIGTERM set an event instead of raising (etcdctl's signal.Notify)."""

    def __init__(self):
        self._event = threading.Event()
        self.signum = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:
                pass               # not the main thread (in-process tests): no handler

    def _on_signal(self, signum, _frame):
        self.signum = signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout=None) -> bool:
        return self._event.wait(timeout)

    def die(self):
        """End the process by the signal received, as a process without a handler would."""
        if self.signum is None:
            return
        _flush()
        signal.signal(self.signum, signal.SIG_DFL)
        os.kill(os.getpid(), self.signum)


def _in_background(fn):
    """Run fn() in a daemon thread; returns (done event, result dict with "value" or "error")."""
    done, out = threading.Event(), {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 (handed to the main thread)
            out["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, out


def _wait_either(done: threading.Event, stop: StopSignals, lease=None) -> str:
    """Wait until done, a stop signal, or the lease is lost: "done", "stop" or "lost"."""
    while True:
        if done.wait(0.1):
            return "done"
        if stop.is_set():
            return "stop"
        if lease is not None and not lease.alive:
            return "lost"


def _result(out: dict):
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _print_range(a, r):
    json_line(j_range(r)) if _json(a) else print_get(r)
    _flush()


# ---------------------------------------------------------------- lock
def cmd_lock(a, c: Client):
    if not a.args:
        raise CommandError("lock takes a lock name argument and an optional command to execute", EXIT_BAD_ARGS)
    name, command = a.args[0], (a.exec or a.args[1:])
    stop = StopSignals()
    lock = c.lock(os.fsencode(name), ttl=a.ttl)
    done, out = _in_background(lock.acquire)
    if _wait_either(done, stop) == "stop":
        lock.release()             # etcd's Lock deletes the waiter's key when its context ends
        raise CommandError("context canceled")
    if not _result(out):
        raise CommandError("lock not acquired")
    kvs = c.get(lock.key)
    if not kvs.kvs:
        raise CommandError("lock lost on init")
    if command:
        env = dict(os.environ, ETCD_LOCK_KEY=os.fsdecode(lock.key), ETCD_LOCK_REV=str(lock.header.revision))
        _flush()
        try:
            rc = subprocess.call(command, env=env)      # a stop signal meanwhile is noted, not acted on
        except OSError as exc:
            lock.release()
            raise CommandError(f'exec: "{command[0]}": {exc.strerror}') from None
        lock.release()
        if rc != 0:
            raise CommandError(f"exit status {rc}" if rc > 0 else f"signal: {signal.Signals(-rc).name}")
        return 0
    _print_range(a, kvs)
    how = _wait_either(threading.Event(), stop, lock.lease)
    if how == "lost":
        raise CommandError("session expired")
    lock.release()
    return 0


# ---------------------------------------------------------------- elect
def cmd_elect(a, c: Client):
    if len(a.args) not in (1, 2):
        raise CommandError("elect takes one election name argument and an optional proposal argument",
                           EXIT_BAD_ARGS)
    if a.listen:
        if len(a.args) == 2:
            raise CommandError("proposal given but -l is set", EXIT_BAD_ARGS)
        return _observe(a, c, os.fsencode(a.args[0]))
    if len(a.args) != 2:
        raise CommandError("no proposal argument but -l not set", EXIT_BAD_ARGS)
    return _campaign(a, c, os.fsencode(a.args[0]), os.fsencode(a.args[1]))


def _campaign(a, c: Client, name: bytes, proposal: bytes) -> int:
    stop = StopSignals()
    election = c.election(name)
    done, out = _in_background(lambda: election.campaign(proposal))
    if _wait_either(done, stop) == "stop":
        election.resign()
        raise CommandError("context canceled")
    if not _result(out):
        raise CommandError("not elected")
    _print_range(a, c.get(election.key))
    if _wait_either(threading.Event(), stop, election.lease) == "lost":
        raise CommandError("elect: session expired")
    election.resign()
    return 0


def _observe(a, c: Client, name: bytes) -> int:
    from ..client.types import Header, RangeResponse
    stop = StopSignals()
    # etcd's Observe sends the Get that found the leader (its header) first, then a response per
    # change with the watch's header; the Observation yields KeyValues, so the first header is
    # read here and the later ones are the events' revisions.
    first = c.get(name + b"/", prefix=True, sort_order="ASCEND", sort_target="CREATE", limit=1)
    observation = c.election(name).observe()
    lines: list = []
    ready = threading.Event()

    def pump():
        try:
            for kv in observation:
                lines.append(kv)
                ready.set()
        except ZwatchError as exc:
            lines.append(exc)
        finally:
            lines.append(None)
            ready.set()

    threading.Thread(target=pump, daemon=True).start()
    printed_first = False
    while True:
        ready.wait(0.1)
        if stop.is_set():
            observation.cancel()
            return 0
        while lines:
            kv = lines.pop(0)
            if kv is None:
                raise CommandError("elect: observer lost")
            if isinstance(kv, ZwatchError):
                raise CommandError(f"elect: observer lost ({error_text(kv)})")
            revision = kv.mod_revision
            if not printed_first and first.kvs and (first.kvs[0].key, first.kvs[0].mod_revision) == \
                    (kv.key, kv.mod_revision):
                revision = first.header.revision
            printed_first = True
            _print_range(a, RangeResponse(Header(revision), [kv], False, 0))
        ready.clear()
        if lines:
            ready.set()
