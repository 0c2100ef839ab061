"""Locks and leader elections on leases: etcd's clientv3/concurrency Mutex and Election, in Python.

    with client.lock("jobs/nightly", ttl=10):           # etcdctl lock jobs/nightly
        ...
    e = client.election("svc/leader")
    e.campaign(b"10.0.0.7")                             # blocks until this one leads
    for kv in client.election("svc/leader").observe():  # each leader (and each proclaim), in order

The algorithm is etcd's (mutex.go, election.go, key.go of clientv3/concurrency, release 3.4),
so a zwatch lock or election interoperates with etcdctl's semantics:

* Each contender has a lease (etcd's Session) and ONE key ``<name>/<lease ID in lowercase hex>``
  attached to it, created by a txn comparing ``create_revision == 0`` (so a retry after a
  failover, or a second acquire on the same lease, finds its own key instead of adding one).
  A lock's value is empty (etcdctl's); an election's is the candidate's proposal.
* Contenders are ordered by create_revision; the one with the lowest holds the lock / leads.
* A contender waits for the DELETE of the key with the highest create_revision below its own
  (a range sorted by create_revision, descending, limit 1, max_create_revision = mine - 1),
  watched from the revision of that read, then looks again: no polling, and a release wakes
  only the next contender (no herd).
* A holder that dies stops renewing its lease: the lease expires within its TTL, the server
  deletes the key, and the next contender's watch fires.

Unlike etcd's Mutex (whose Session outlives it), ``Lock.release`` and ``Election.resign`` also
revoke the lease, as ``etcdctl lock`` / ``etcdctl elect`` do when they exit; the next acquire or
campaign grants a new one.

One algorithm, two clients: the steps are written once, as generators that yield *effects*
(``Call``: a client request or a lease/watch method, ``Next``: a watch's next response, ``Emit``:
a value for the application) and receive their results, without doing any I/O themselves (the
shape of dask's worker state machine).  ``run`` / ``Stepper`` drive them with the sync client;
``arun`` / ``AsyncStepper`` (used by zwatch.aio) await the same effects on the asyncio client.
"""

from __future__ import annotations

import queue
import time
from typing import TYPE_CHECKING, Any, Generator, NamedTuple

from ..errors import Compacted, FailedPrecondition, LeaseNotFound, Unavailable, ZwatchError
from .builders import CreateRevision, Delete, Get, Put, to_bytes
from .types import Header, KeyValue, TxnResponse

if TYPE_CHECKING:
    from .core import Client

DEFAULT_TTL = 60     # etcd's defaultSessionTTL
RETRY_EVERY = 0.1    # seconds between attempts of an idempotent request after UNAVAILABLE


class NotLeader(FailedPrecondition):
    """etcd's ErrElectionNotLeader: proclaim by a candidate that does not (or no longer) own its key."""

    def __init__(self, message: str = "election: not leader", code: str | None = None, **details):
        super().__init__(message, code, **details)


# ------------------------------------------------------------------ effects and their drivers
class Call(NamedTuple):
    """target.method(*args, **kwargs); target None: the client.  retry: may safely be sent
    twice, so it is sent again after UNAVAILABLE (a failover lost its reply) until deadline (or
    the client's timeout when there is none).  quiet: a ZwatchError is swallowed (returns None)."""
    target: Any
    method: str
    args: tuple = ()
    kwargs: dict = {}
    retry: bool = False
    deadline: float | None = None
    quiet: bool = False


class Next(NamedTuple):
    """The watch's next response (None once it is over), or TIMEOUT after timeout seconds."""
    watch: Any
    timeout: float | None


class Emit(NamedTuple):
    """A value for the application (Observation's leaders)."""
    value: Any


TIMEOUT = object()
Steps = Generator[Any, Any, Any]


def _target(client, eff: Call):
    """The bound method eff names, and when to stop retrying it."""
    fn = getattr(client if eff.target is None else eff.target, eff.method)
    return fn, (eff.deadline if eff.deadline is not None else time.monotonic() + client.timeout)


def _again(client, eff: Call, give_up: float, error: ZwatchError) -> bool:
    """After error: True to send eff again (retry after UNAVAILABLE, before give_up), False to
    answer None (quiet); otherwise the error is raised."""
    if isinstance(error, Unavailable) and eff.retry and not client._closed and \
            time.monotonic() + RETRY_EVERY < give_up:
        return True
    if eff.quiet:
        return False
    raise error


def _perform(client, eff):
    if isinstance(eff, Next):
        try:
            return eff.watch.get(timeout=eff.timeout)
        except queue.Empty:
            return TIMEOUT
    fn, give_up = _target(client, eff)
    while True:
        try:
            return fn(*eff.args, **eff.kwargs)
        except ZwatchError as e:
            if not _again(client, eff, give_up, e):
                return None
        time.sleep(RETRY_EVERY)


async def _aperform(client, eff):
    import asyncio
    if isinstance(eff, Next):
        try:
            return await eff.watch.get(timeout=eff.timeout)
        except TimeoutError:
            return TIMEOUT
    fn, give_up = _target(client, eff)
    while True:
        try:
            return await fn(*eff.args, **eff.kwargs)
        except ZwatchError as e:
            if not _again(client, eff, give_up, e):
                return None
        await asyncio.sleep(RETRY_EVERY)


class _Done(NamedTuple):
    value: Any


class Stepper:
    """Drives steps with the sync client: ``run()`` to their end, ``emitted()`` to the next Emit."""

    def __init__(self, steps: Steps, client):
        self.steps, self.client = steps, client
        self._send, self._throw = None, None

    def _effect(self):
        """The steps' next effect, or _Done(result) once they returned."""
        try:
            if self._throw is not None:
                eff, self._throw = self.steps.throw(self._throw), None
            else:
                eff, self._send = self.steps.send(self._send), None
        except StopIteration as stop:
            return _Done(stop.value)
        return eff

    def _advance(self):
        """Performs Calls and Nexts until an Emit or the end (_Done)."""
        while True:
            eff = self._effect()
            if isinstance(eff, (Emit, _Done)):
                return eff
            try:
                self._send = _perform(self.client, eff)
            except BaseException as e:
                self._throw = e

    def run(self):
        eff = self._advance()
        if isinstance(eff, Emit):
            raise RuntimeError(f"steps emitted {eff!r} where a result was expected")
        return eff.value

    def emitted(self):
        eff = self._advance()
        if isinstance(eff, _Done):
            raise StopIteration
        return eff.value


class AsyncStepper(Stepper):
    """The same with the asyncio client: ``await arun()``, ``await aemitted()``."""

    async def _aadvance(self):
        while True:
            eff = self._effect()
            if isinstance(eff, (Emit, _Done)):
                return eff
            try:
                self._send = await _aperform(self.client, eff)
            except BaseException as e:
                self._throw = e

    async def arun(self):
        eff = await self._aadvance()
        if isinstance(eff, Emit):
            raise RuntimeError(f"steps emitted {eff!r} where a result was expected")
        return eff.value

    async def aemitted(self):
        eff = await self._aadvance()
        if isinstance(eff, _Done):
            raise StopAsyncIteration
        return eff.value


def run(steps: Steps, client):
    return Stepper(steps, client).run()


async def arun(steps: Steps, client):
    return await AsyncStepper(steps, client).arun()


# ------------------------------------------------------------------ the algorithm (etcd's)
def _owner_key(prefix: bytes, lease) -> bytes:
    return prefix + b"%x" % lease.id       # etcd: fmt.Sprintf("%s%x", pfx, s.Lease())


def _first_created(prefix: bytes) -> dict:
    """etcd's OpGet(pfx, WithFirstCreate()...): the key of the prefix created first."""
    return Get(prefix, prefix=True, sort_order="ASCEND", sort_target="CREATE", limit=1)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _wait_delete(key: bytes, revision: int, deadline: float | None) -> Steps:
    """etcd's waitDelete: watch key from revision until its DELETE.  False: the deadline came
    first.  True: deleted, or the watch ended (the caller looks again, as etcd's would fail)."""
    try:
        w = yield Call(None, "watch", (key,), {"start_revision": revision})
    except Compacted:
        return True        # compacted since the read (a race with a compaction): look again
    try:
        while True:
            left = _left(deadline)
            if left is not None and left <= 0:
                return False
            resp = yield Next(w, left)
            if resp is TIMEOUT:
                return False
            if resp is None or resp.canceled:
                return True
            if any(ev.type == "DELETE" for ev in resp.events):
                return True
    finally:
        # the client may be closing; the fan-out forgets the watch with the session
        yield Call(w, "cancel", quiet=True)


def _wait_deletes(prefix: bytes, max_create_revision: int, deadline: float | None) -> Steps:
    """etcd's waitDeletes: until no key of the prefix has a create_revision <= max_create_revision,
    wait for the DELETE of the last created one of them.  None: the deadline came first."""
    while True:
        resp = yield Call(None, "get", (prefix,), dict(prefix=True, sort_order="DESCEND", sort_target="CREATE",
                                                       limit=1, max_create_revision=max_create_revision))
        if not resp.kvs:
            return resp.header
        if not (yield from _wait_delete(resp.kvs[0].key, resp.header.revision, deadline)):
            return None


class _Contender:
    """What a lock contender and an election candidate share (etcd's concurrency.Session): a
    lease of its own, kept alive by the client, and one key under the prefix named after it."""

    def __init__(self, client, name, ttl: int = DEFAULT_TTL):
        self.client = client
        self.name = to_bytes(name)
        self.prefix = self.name + b"/"
        self.ttl = ttl
        self.lease = None
        self.key: bytes | None = None
        self.header: Header | None = None

    def _live_lease(self, deadline: float | None) -> Steps:
        """This contender's lease, granted again if it is gone (expired or revoked)."""
        if self.lease is None or not self.lease.alive:
            self.lease = yield Call(None, "lease", (self.ttl,), retry=True, deadline=deadline)
        return self.lease

    @staticmethod
    def _revoke(lease) -> Steps:
        if lease is not None:
            try:
                yield Call(lease, "revoke")
            except LeaseNotFound:
                pass    # expired already


class LockSteps(_Contender):
    """A lock's algorithm and state (etcd's concurrency.Mutex); Lock and zwatch.aio's AsyncLock
    drive it."""

    def __init__(self, client, name, ttl: int = DEFAULT_TTL):
        super().__init__(client, name, ttl)
        self.revision = -1            # create_revision of self.key (etcd's myRev)
        self._acquired = False

    def _acquire(self, timeout: float | None) -> Steps:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lease = yield from self._live_lease(deadline)
            key = _owner_key(self.prefix, lease)
            owner = _first_created(self.prefix)
            # put self in the waiters via key (the oldest waiter holds the lock); on a retry, or
            # when this lease holds the lock already, find the key instead; either way learn
            # the current holder in the same round trip.
            resp: TxnResponse = yield Call(None, "txn", ([CreateRevision(key) == 0], [Put(key, b"", lease=lease), owner],
                                                         [Get(key), owner]), retry=True, deadline=deadline)
            self.key, self.revision = key, resp.header.revision
            if not resp.succeeded:
                self.revision = resp.responses[0].kvs[0].create_revision
            holders = resp.responses[1].kvs
            try:
                if holders and holders[0].create_revision != self.revision:
                    header = yield from _wait_deletes(self.prefix, self.revision - 1, deadline)
                    if header is None:
                        yield from self._unlock()
                        return False
                    self.header = header
                else:
                    self.header = resp.header
            except GeneratorExit:
                raise
            except BaseException:
                yield from self._unlock()       # etcd: release the lock key if the wait failed
                raise
            if lease.alive:
                self._acquired = True
                return True
            # The lease expired while waiting (its key went with it): start over with a new one.
            yield from self._unlock()
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _release(self) -> Steps:
        if self.key is None:
            return False
        held = self._acquired
        deleted = yield from self._unlock()
        return held and deleted

    def _is_acquired(self) -> Steps:
        if not self._acquired or self.key is None:
            return False
        kvs = (yield Call(None, "get", (self.key,))).kvs
        return bool(kvs) and kvs[0].create_revision == self.revision

    def _unlock(self) -> Steps:
        """Delete the key, revoke the lease; True if the key was still there."""
        key, lease = self.key, self.lease
        self.key, self.revision, self.lease, self._acquired = None, -1, None, False
        deleted = False
        try:
            if key is not None:
                deleted = (yield Call(None, "delete", (key,), retry=True)).deleted > 0
        finally:
            yield from self._revoke(lease)
        return deleted

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, key={self.key!r}, acquired={self._acquired})"


class Lock(LockSteps):
    """A distributed lock (python-etcd3's ``lock()`` shape, etcd's concurrency.Mutex algorithm).

    ``acquire(timeout=None) -> bool``, ``release() -> bool``, ``is_acquired()``, a context manager;
    ``key`` (this contender's key, once acquire ran) and ``lease`` (its lease, kept alive by the
    client).  The lock is held as long as the lease lives: a holder that dies frees it within ``ttl``.
    """

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait until this contender holds the lock (True) or timeout seconds passed (False, and
        its key and lease are gone again).  timeout None waits for as long as it takes."""
        return run(self._acquire(timeout), self.client)

    def release(self) -> bool:
        """Delete the key (etcd's Unlock) and revoke the lease.  True if this held the lock until now."""
        return run(self._release(), self.client)

    def is_acquired(self) -> bool:
        """True if this contender holds the lock: acquired, and its key still exists with its create_revision."""
        return run(self._is_acquired(), self.client)

    def refresh(self) -> int:
        """Renew the lease now (python-etcd3's Lock.refresh); the client renews it anyway."""
        if self.lease is None:
            raise LeaseNotFound("the lock has no lease (not acquired)")
        return self.lease.refresh()

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _observe(election: "ElectionSteps", observation) -> Steps:
    """etcd's Election.Observe: Emit the leader's KeyValue each time the leadership (or the
    leader's value) changes.  observation.watch is the watch open now (its cancel() ends this)."""
    prefix = election.prefix
    last = None          # (key, mod_revision) emitted last: a watch ended early never repeats it
    while not observation.canceled:
        resp = yield Call(None, "get", (prefix,), dict(prefix=True, sort_order="ASCEND", sort_target="CREATE", limit=1))
        if resp.kvs:
            kv, revision = resp.kvs[0], resp.header.revision
        else:
            # No leader: wait for the first key put on the prefix (only PUTs: a DELETE here
            # would make this spin).
            kv = None
            w = yield from _observed_watch(observation, prefix, resp.header.revision, True)
            closing = False
            try:
                while kv is None:
                    resp = yield Next(w, None)
                    if resp is None or resp.canceled:
                        break
                    kv = next((ev.kv for ev in resp.events if ev.type == "PUT"), None)
            except GeneratorExit:
                closing = True      # abandoned: Observation.cancel() cancels its watch
                raise
            finally:
                if not closing:
                    yield Call(w, "cancel", quiet=True)
            if kv is None:
                if observation.canceled:
                    return
                continue            # the watch ended (e.g. compacted): look again
            revision = kv.mod_revision
        if (kv.key, kv.mod_revision) != last:
            last = (kv.key, kv.mod_revision)
            yield Emit(kv)
        # Every change of the leader's key until its DELETE: proclaims emit the new value.
        w = yield from _observed_watch(observation, kv.key, revision + 1, False)
        closing = False
        try:
            deleted = False
            while not deleted:
                resp = yield Next(w, None)
                if resp is None or resp.canceled:
                    break
                for ev in resp.events:
                    if ev.type == "DELETE":
                        deleted = True
                        break
                    last = (ev.kv.key, ev.kv.mod_revision)
                    yield Emit(ev.kv)
        except GeneratorExit:
            closing = True
            raise
        finally:
            if not closing:
                yield Call(w, "cancel", quiet=True)


def _observed_watch(observation, key: bytes, revision: int, prefix: bool) -> Steps:
    w = yield Call(None, "watch", (key,), {"prefix": prefix, "start_revision": revision})
    observation.watch = w
    if observation.canceled:          # cancel() ran before the watch existed
        yield Call(w, "cancel", quiet=True)
    return w


class Observation:
    """What ``Election.observe()`` returns: an iterator of the leader's KeyValue each time the
    leadership (or the leader's value) changes, etcd's Election.Observe.  ``cancel()`` ends it
    from any thread."""

    def __init__(self, election: "ElectionSteps"):
        self.watch = None
        self.canceled = False
        self._stepper = Stepper(_observe(election, self), election.client)

    def __iter__(self):
        return self

    def __next__(self) -> KeyValue:
        return self._stepper.emitted()

    def cancel(self):
        self.canceled = True
        w = self.watch
        if w is not None:
            w.cancel()


class ElectionSteps(_Contender):
    """An election's algorithm and state (etcd's concurrency.Election); Election and zwatch.aio's
    AsyncElection drive it.  ``key`` / ``rev``: this candidate's key and its create_revision."""

    def __init__(self, client, name, ttl: int = DEFAULT_TTL):
        super().__init__(client, name, ttl)     # key: etcd's leaderKey (None when not a candidate)
        self.rev = -1                           # etcd's leaderRev

    def _campaign(self, value, timeout: float | None) -> Steps:
        value = to_bytes(value)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lease = yield from self._live_lease(deadline)
            key = _owner_key(self.prefix, lease)
            resp: TxnResponse = yield Call(None, "txn", ([CreateRevision(key) == 0], [Put(key, value, lease=lease)],
                                                         [Get(key)]), retry=True, deadline=deadline)
            self.key, self.rev = key, resp.header.revision
            try:
                if not resp.succeeded:
                    kv = resp.responses[0].kvs[0]
                    self.rev = kv.create_revision
                    if kv.value != value:
                        yield from self._proclaim(value)
                header = yield from _wait_deletes(self.prefix, self.rev - 1, deadline)
            except GeneratorExit:
                raise
            except BaseException:
                yield from self._resign()
                raise
            if header is None:
                yield from self._resign()
                return False
            if lease.alive:
                self.header = resp.header
                return True
            yield from self._resign()   # the lease expired while waiting: campaign again on a new one
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _proclaim(self, value) -> Steps:
        if self.key is None:
            raise NotLeader()
        resp = yield Call(None, "txn", ([CreateRevision(self.key) == self.rev],
                                        [Put(self.key, to_bytes(value), lease=self.lease)], []))
        if not resp.succeeded:
            self.key = None
            raise NotLeader()
        self.header = resp.header

    def _resign(self) -> Steps:
        key, rev, lease = self.key, self.rev, self.lease
        self.key, self.rev, self.lease = None, -1, None
        try:
            if key is not None:
                resp = yield Call(None, "txn", ([CreateRevision(key) == rev], [Delete(key)], []), retry=True)
                self.header = resp.header
        finally:
            yield from self._revoke(lease)

    def _leader(self) -> Steps:
        kvs = (yield Call(None, "get", (self.prefix,), dict(prefix=True, sort_order="ASCEND",
                                                            sort_target="CREATE", limit=1))).kvs
        return kvs[0] if kvs else None

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, key={self.key!r})"


class Election(ElectionSteps):
    """Leader election (etcd's concurrency.Election): ``campaign(value, timeout=None) -> bool``,
    ``proclaim(value)``, ``leader() -> KeyValue | None``, ``observe()``, ``resign()``."""

    def campaign(self, value, timeout: float | None = None) -> bool:
        """Become a candidate and wait until this one leads (True), or timeout seconds passed
        (False, resigned).  A candidate already campaigning on the same lease keeps its place
        and proclaims the new value."""
        return run(self._campaign(value, timeout), self.client)

    def proclaim(self, value):
        """Change the leader's value without an election (NotLeader: this candidate's key is gone)."""
        return run(self._proclaim(value), self.client)

    def resign(self):
        """Give up leadership (or the candidacy): delete the key if it is still ours, revoke the lease."""
        return run(self._resign(), self.client)

    def leader(self) -> KeyValue | None:
        """The current leader's key and value (None: no leader)."""
        return run(self._leader(), self.client)

    def observe(self) -> Observation:
        return Observation(self)
