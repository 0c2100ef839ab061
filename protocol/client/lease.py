"""Leases on the client side: the ``Lease`` handle and the client's one keep-alive loop.

    lease = client.lease(10)            granted, then renewed in the background until revoked
    client.put("svc/a", "x", lease=lease)
    with client.lease(10) as lease:     ... revoked (its keys deleted in one revision) on exit

``KeepAliveSchedule`` decides which leases are due when; it does no I/O, so its timing is
unit-tested with a fake clock.  ``LeaseKeeper`` is the thread that drives it: ONE per Client,
started with the client's first lease, sending ONE ``lease_keepalive`` per tick with every lease
due (etcd's client does the same: one keep-alive stream per client, all its leases on it).

Timing (etcd's client): a lease is renewed at TTL/3 of its TTL, counted from when the previous
renewal was SENT (the server renewed it no earlier), so the client's idea of the deadline is never
later than the server's.  A lease due within a quarter of its renewal interval (at most 0.5 s)
goes with the current tick, so leases granted together stay in one request.  A keep-alive that
fails (UNAVAILABLE: no fan-out reachable within the request's timeout; a failover re-sends it by
itself, see session.py) is retried every 0.5 s until the lease's deadline.  A lease the server
answers TTL 0 for (expired or revoked elsewhere), or whose deadline passed without a renewal
(etcd's client gives up on it the same way), leaves the schedule and its ``alive`` becomes False.

``Client.close()`` stops the loop without revoking anything: an abandoned lease expires on its
own at the server, as in etcd.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..errors import LeaseNotFound, Unavailable
from ..limits import MAX_KEEPALIVE_IDS
from .types import Header

if TYPE_CHECKING:
    from .core import Client

log = logging.getLogger("zwatch.client")

RENEW_FRACTION = 1 / 3      # renew at TTL/3 (etcd's client)
RETRY_AFTER = 0.5           # seconds between keep-alive attempts after a failure
COALESCE_FRACTION = 0.25    # a lease due within this part of its renewal interval joins the tick...
COALESCE_MAX = 0.5          # ...but never more than this many seconds early


class _Entry:
    __slots__ = ("ttl", "deadline", "retry_at")

    def __init__(self, ttl: int, deadline: float):
        self.ttl = ttl
        self.deadline = deadline       # the latest the server can still have the lease (client clock)
        self.retry_at: float | None = None   # set after a failed attempt: the next one

    @property
    def interval(self) -> float:
        return self.ttl * RENEW_FRACTION

    @property
    def due(self) -> float:
        # The last renewal was sent at deadline - ttl; the next is due an interval after it.
        return self.deadline - self.ttl + self.interval

    def eligible(self, now: float) -> bool:
        if self.retry_at is not None:
            return now >= self.retry_at
        return now >= self.due - min(self.interval * COALESCE_FRACTION, COALESCE_MAX)

    def wake_at(self) -> float:
        return self.retry_at if self.retry_at is not None else self.due


class KeepAliveSchedule:
    """When each lease is due for a keep-alive (no I/O, no clock of its own: ``now`` is passed in)."""

    def __init__(self):
        self._entries: dict[int, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._entries

    def add(self, lease_id: int, ttl: int, granted_at: float):
        """A lease granted with ttl; granted_at is when the grant was SENT (the server's deadline is later)."""
        self._entries[lease_id] = _Entry(ttl, granted_at + ttl)

    def remove(self, lease_id: int) -> bool:
        return self._entries.pop(lease_id, None) is not None

    def deadline(self, lease_id: int) -> float:
        return self._entries[lease_id].deadline

    def due(self, lease_id: int) -> float:
        return self._entries[lease_id].due

    def take_due(self, now: float) -> list[int]:
        """The leases to renew in the tick at ``now``: those due (or within their coalescing window,
        or whose retry time came)."""
        return [lease_id for lease_id, e in self._entries.items() if e.eligible(now)]

    def next_wakeup(self) -> float | None:
        """When the next tick is needed (None: no lease)."""
        return min((e.wake_at() for e in self._entries.values()), default=None)

    def renewed(self, answers: dict[int, int], sent_at: float) -> list[int]:
        """The server's answers {ID: TTL} to a keep-alive sent at sent_at.  Returns the leases that
        are gone (TTL 0: expired or revoked), which leave the schedule.  IDs no longer scheduled
        (revoked meanwhile) are ignored."""
        gone = []
        for lease_id, ttl in answers.items():
            e = self._entries.get(lease_id)
            if e is None:
                continue
            if ttl <= 0:
                del self._entries[lease_id]
                gone.append(lease_id)
                continue
            # max(): an answer to an older request (the loop's and a refresh() raced) never
            # moves the deadline back.
            e.deadline = max(e.deadline, sent_at + ttl)
            e.ttl = ttl
            e.retry_at = None
        return gone

    def failed(self, lease_ids, now: float) -> list[int]:
        """A keep-alive for these leases failed at ``now``: retry RETRY_AFTER later, or give up on a
        lease whose deadline has passed (returned; it leaves the schedule)."""
        lost = []
        for lease_id in lease_ids:
            e = self._entries.get(lease_id)
            if e is None:
                continue
            if now >= e.deadline:
                del self._entries[lease_id]
                lost.append(lease_id)
            else:
                e.retry_at = now + RETRY_AFTER
        return lost


class LeaseKeeper:
    """The client's keep-alive thread (one per Client, started by its first lease)."""

    def __init__(self, client: "Client", clock=time.monotonic):
        self._client = client
        self._clock = clock
        self._schedule = KeepAliveSchedule()
        self._leases: dict[int, Lease] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        # Figures (tests count them: one request per tick, however many leases are due).
        self.requests = 0        # lease_keepalive requests sent
        self.renewals = 0        # lease IDs those requests carried
        self.failures = 0        # requests that failed (their leases retried RETRY_AFTER later)
        self.last_batch = 0      # IDs in the last request

    def __len__(self) -> int:
        return len(self._schedule)

    def next_tick(self) -> float | None:
        """When (time.monotonic()) the next keep-alive request goes, None without leases."""
        with self._cond:
            return self._schedule.next_wakeup()

    def keep(self, lease: "Lease", granted_at: float):
        with self._cond:
            if self._stopped:
                raise Unavailable("client is closed")
            self._schedule.add(lease.id, lease.ttl, granted_at)
            self._leases[lease.id] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="zwatch-client-leases", daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, lease: "Lease"):
        with self._cond:
            if self._leases.get(lease.id) is lease:
                del self._leases[lease.id]
                self._schedule.remove(lease.id)
            self._cond.notify()

    def renewed(self, lease_id: int, ttl: int, sent_at: float):
        """A keep-alive answered outside the loop (Lease.refresh)."""
        with self._cond:
            gone = self._schedule.renewed({lease_id: ttl}, sent_at)
            self._cond.notify()
        self._drop(gone, "lease.expired")

    def stop(self, timeout: float = 2.0):
        with self._cond:
            self._stopped = True
            self._cond.notify()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    # ------------------------------------------------------------ the thread
    def _run(self):
        while True:
            with self._cond:
                due: list[int] = []
                while not self._stopped:
                    now = self._clock()
                    due = self._schedule.take_due(now)
                    if due:
                        break
                    wake = self._schedule.next_wakeup()
                    self._cond.wait(None if wake is None else max(0.0, wake - now))
                if self._stopped:
                    return
                first_deadline = min(self._schedule.deadline(i) for i in due)
            for start in range(0, len(due), MAX_KEEPALIVE_IDS):
                self._send(due[start:start + MAX_KEEPALIVE_IDS], first_deadline)

    def _send(self, ids: list[int], first_deadline: float):
        sent_at = self._clock()
        # Wait for the answer until the first deadline of the batch (a failover inside it is
        # absorbed by the session, which re-sends the request), at least RETRY_AFTER.
        timeout = min(max(first_deadline - sent_at, RETRY_AFTER), self._client.timeout)
        self.requests += 1
        self.renewals += len(ids)
        self.last_batch = len(ids)
        try:
            answers = self._client.lease_keepalive_once(ids, timeout=timeout)
        except Exception as e:     # UNAVAILABLE above all; anything else must not end the thread either
            self.failures += 1
            with self._cond:
                if self._stopped or self._client._closed:
                    return      # the client is closing: nothing failed
                lost = self._schedule.failed(ids, self._clock())
            log.warning("lease.keepalive_failed client=%s leases=%d error=%s", self._client.name, len(ids), e)
            self._drop(lost, "lease.lost")
            return
        with self._cond:
            gone = self._schedule.renewed({i: answers.get(i, 0) for i in ids}, sent_at)
        self._drop(gone, "lease.expired")

    def _drop(self, lease_ids: list[int], event: str):
        if not lease_ids:
            return
        with self._cond:
            dropped = [self._leases.pop(i) for i in lease_ids if i in self._leases]
        for lease in dropped:
            lease.alive = False
        log.warning("%s client=%s leases=%d ids=%s", event, self._client.name, len(lease_ids),
                    ",".join(f"{i:x}" for i in lease_ids[:10]))


class Lease:
    """A granted lease, kept alive by the client's LeaseKeeper until revoked (or the client closes).

    ``id``, ``ttl`` (granted), ``alive`` (False once the server answered TTL 0, its deadline passed
    without a renewal, or it was revoked), ``remaining_ttl()``, ``keys``, ``refresh()``,
    ``revoke()``.  A context manager: revoked on exit.  Anything taking a lease ID takes a Lease.
    """

    def __init__(self, client: "Client", lease_id: int, ttl: int, keeper: LeaseKeeper | None = None):
        self.client = client
        self.id = lease_id
        self.ttl = ttl
        self.alive = True
        self._keeper = keeper

    @classmethod
    def grant(cls, client: "Client", ttl: int, lease_id: int = 0, timeout=None) -> "Lease":
        """Grant a lease and hand it to the client's keeper (Client.lease)."""
        granted_at = time.monotonic()
        granted = client.lease_grant(ttl, lease_id, timeout)
        lease = cls(client, granted.id, granted.ttl, client.lease_keeper)
        client.lease_keeper.keep(lease, granted_at)
        return lease

    def remaining_ttl(self, timeout=None) -> int:
        """Whole seconds left at the server (-1: the lease no longer exists)."""
        return self.client.time_to_live(self.id, timeout=timeout).ttl

    @property
    def keys(self) -> list[bytes]:
        """The keys attached to the lease, in key order (at most 10,000: see time_to_live)."""
        return self.client.time_to_live(self.id, keys=True).keys

    def refresh(self, timeout=None) -> int:
        """One keep-alive now; returns the TTL it was renewed to (0: the lease is gone)."""
        sent_at = time.monotonic()
        ttl = self.client.lease_keepalive_once([self.id], timeout=timeout).get(self.id, 0)
        if self._keeper is not None:
            self._keeper.renewed(self.id, ttl, sent_at)
        if ttl <= 0:
            self.alive = False
        return ttl

    def revoke(self, timeout=None) -> Header | None:
        """Stop keeping the lease alive and revoke it: its keys are deleted in one revision (the
        header's).  A revoke whose reply was lost in a failover is sent again; LEASE_NOT_FOUND to
        that second one means the first did it (None is returned then).  LEASE_NOT_FOUND to the
        first attempt is raised (the lease had expired or was revoked elsewhere)."""
        if self._keeper is not None:
            self._keeper.forget(self)
        self.alive = False
        timeout = self.client.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        retried = False
        while True:
            try:
                return self.client.lease_revoke(self.id, timeout=max(0.1, deadline - time.monotonic()))
            except LeaseNotFound:
                if retried:
                    return None
                raise
            except Unavailable:
                if self.client._closed or time.monotonic() + 0.1 >= deadline:
                    raise
                retried = True
                time.sleep(0.1)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc):
        try:
            self.revoke()
        except LeaseNotFound:
            pass    # expired already: nothing left to revoke

    def __int__(self) -> int:
        return self.id

    def __repr__(self):
        return f"Lease(id={self.id:#x}, ttl={self.ttl}, alive={self.alive})"
