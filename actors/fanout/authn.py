"""Authentication at the fan-out: password checks off the event loop, a cache of verified
logins, and the limit on failed logins.

Why here: a fan-out is where sessions open, and it already follows the auth state (users and
their password hashes) from the writer's publish stream, so a login costs no round trip.  A
password hash is slow on purpose (scrypt, ~80 ms of CPU): run on the loop, one login would hold
every session's deliveries for that long, and a brute-force attempt would be a denial of
service.  So:

* `PasswordWorker`: one thread hashes and verifies (hashlib.scrypt releases the GIL) and hands
  each result back through an inproc PAIR socket the loop polls.  Its queue is bounded: beyond
  it a login is refused UNAVAILABLE ("busy"), so a flood cannot queue minutes of work.
* `VerifiedLogins`: after one successful scrypt, the same (user, password) against the same
  stored hash is recognized by a keyed digest in memory (a bounded LRU), so the thousands of
  sessions that reconnect after a fan-out dies do not cost 80 ms each.  Only a process that
  already saw the password in clear can produce a hit; nothing is persisted.
* `LoginLimiter` (I/O-free): failed logins back off per session and per peer address, doubling
  from 0.5 s up to 30 s; a login during a back-off is refused at once, without hashing.

Nothing here logs, stores or repeats a password; messages name the user at most.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import queue
import threading
from collections import OrderedDict
from typing import NamedTuple

import zmq

from zwatch.actors.auth.passwords import hash_password, verify_password, verify_unknown_user

# Logins (and password hashes of user_add / user_change_password) waiting for the worker at most.
MAX_QUEUED = 64
VERIFIED_CACHE_SIZE = 10_000
FAIL_BACKOFF_FIRST_S = 0.5
FAIL_BACKOFF_MAX_S = 30.0
# A back-off entry is forgotten this long after its last failure.
FAIL_FORGET_S = 300.0
MAX_LIMITER_KEYS = 100_000
class Job(NamedTuple):
    """kind "verify": password against stored (None: a user without a password or unknown);
    kind "hash": hash the password (user_add / user_change_password).  token: the caller's."""
    kind: str
    token: object
    password: bytes
    stored: str | None = None

    def __repr__(self):                    # never the password (nor the hash) in a repr
        return f"Job({self.kind!r}, token={self.token!r})"


class Done(NamedTuple):
    token: object
    ok: bool                 # verify: the password matched; hash: True
    result: str | None       # hash: the new stored hash


class PasswordWorker:
    """One thread doing the slow hashing; results come back on `socket` (register it for POLLIN
    in the loop and call `results()` when it is readable)."""

    def __init__(self, ctx: zmq.Context, max_queued: int = MAX_QUEUED):
        self.max_queued = max_queued
        self._jobs: queue.Queue = queue.Queue()
        self._results: list[Done] = []
        self._lock = threading.Lock()
        self.pending = 0
        addr = f"inproc://zwatch-passwords-{id(self)}"
        self.socket = ctx.socket(zmq.PAIR)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(addr)
        self._wake = ctx.socket(zmq.PAIR)
        self._wake.setsockopt(zmq.LINGER, 0)
        self._wake.connect(addr)
        self._thread = threading.Thread(target=self._run, name="zwatch-passwords", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """False if the queue is full (the caller refuses the request UNAVAILABLE)."""
        if self.pending >= self.max_queued:
            return False
        self.pending += 1
        self._jobs.put(job)
        return True

    def results(self) -> list[Done]:
        while True:
            try:
                self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        with self._lock:
            out, self._results = self._results, []
        self.pending -= len(out)
        return out

    def close(self):
        self._jobs.put(None)
        self._thread.join(timeout=5)
        self._wake.close()
        self.socket.close()

    def _run(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                if job.kind == "hash":
                    done = Done(job.token, True, hash_password(job.password))
                else:
                    # An unknown user (or one without a password) costs the same time as a
                    # wrong password: the refusal does not tell which user names exist.
                    if job.stored is None:
                        verify_unknown_user(job.password)
                        ok = False
                    else:
                        ok = verify_password(job.password, job.stored)
                    done = Done(job.token, ok, None)
            except Exception:          # never let the thread die: the login fails instead
                done = Done(job.token, False, None)
            with self._lock:
                self._results.append(done)
            try:
                self._wake.send(b"", zmq.NOBLOCK)
            except zmq.Again:          # the loop has a wake-up pending already
                pass


class VerifiedLogins:
    """(user, password, stored hash) triples verified once, as keyed digests (bounded LRU)."""

    def __init__(self, size: int = VERIFIED_CACHE_SIZE):
        self.size = size
        self._key = os.urandom(32)       # per process: a digest means nothing anywhere else
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def _digest(self, user: str, password: bytes, stored: str) -> bytes:
        msg = b"\0".join((user.encode(), stored.encode(), password))
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def known(self, user: str, password: bytes, stored: str | None) -> bool:
        if stored is None:
            return False
        d = self._digest(user, password, stored)
        if d in self._seen:
            self._seen.move_to_end(d)
            return True
        return False

    def add(self, user: str, password: bytes, stored: str):
        self._seen[self._digest(user, password, stored)] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)


class LoginLimiter:
    """Back-off after failed logins, per key: a tuple whose first item names its kind.  A key
    kind may tolerate some failures before its back-off starts (`thresholds`): an address shared
    by many clients (a NAT) is only backed off after several failures, so that one bad client
    does not lock out its neighbours, while a session, a user, or a user from one address is
    backed off at the first failure."""

    def __init__(self, first_s: float = FAIL_BACKOFF_FIRST_S, max_s: float = FAIL_BACKOFF_MAX_S,
                 max_keys: int = MAX_LIMITER_KEYS, thresholds: dict | None = None):
        self.first_s, self.max_s, self.max_keys = first_s, max_s, max_keys
        self.thresholds = thresholds or {}
        self._state: dict = {}           # key -> [blocked until, back-off, last failure, failures]
        self.failures = 0                # total, for the stats line
        self.refused = 0                 # logins refused during a back-off (no hash computed)

    def blocked_for(self, keys, now: float) -> float:
        """Seconds left of the longest back-off among keys (0: a login may be tried)."""
        left = 0.0
        for k in keys:
            st = self._state.get(k)
            if st is not None and st[0] > now:
                left = max(left, st[0] - now)
        return left

    def failed(self, keys, now: float) -> float:
        """A login failed: extend each key's back-off; returns the longest one."""
        self.failures += 1
        if len(self._state) >= self.max_keys:
            self._state = {k: v for k, v in self._state.items() if now - v[2] < FAIL_FORGET_S}
            if len(self._state) >= self.max_keys:
                self._state.clear()      # under a flood of keys: start over rather than grow
        longest = 0.0
        for k in keys:
            st = self._state.get(k)
            if st is None or now - st[2] > FAIL_FORGET_S:
                st = [now, 0.0, now, 0]
            failures = st[3] + 1
            if failures < self.thresholds.get(k[0], 1):
                self._state[k] = [now, 0.0, now, failures]      # tolerated: no back-off yet
                continue
            backoff = self.first_s if st[1] == 0 else min(st[1] * 2, self.max_s)
            self._state[k] = [now + backoff, backoff, now, failures]
            longest = max(longest, backoff)
        return longest

    def succeeded(self, keys):
        for k in keys:
            self._state.pop(k, None)


__all__ = ["PasswordWorker", "Job", "Done", "VerifiedLogins", "LoginLimiter", "MAX_QUEUED"]
