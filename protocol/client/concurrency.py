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
"""
from __future__ import annotations

import queue
import time
from typing import TYPE_CHECKING, Iterator

from ..errors import Compacted, FailedPrecondition, LeaseNotFound, Unavailable, ZwatchError
from .builders import CreateRevision, Delete, Get, Put, to_bytes
from .lease import Lease
from .types import Header, KeyValue, TxnResponse

if TYPE_CHECKING:
    from .core import Client

DEFAULT_TTL = 60     # etcd's defaultSessionTTL
RETRY_EVERY = 0.1    # seconds between attempts of an idempotent request after UNAVAILABLE


class NotLeader(FailedPrecondition):
    """etcd's ErrElectionNotLeader: proclaim by a candidate that does not (or no longer) own its key."""

    def __init__(self, message: str = "election: not leader", code: str | None = None, **details):
        super().__init__(message, code, **details)


def _owner_key(prefix: bytes, lease: Lease) -> bytes:
    return prefix + b"%x" % lease.id       # etcd: fmt.Sprintf("%s%x", pfx, s.Lease())


def _first_created(prefix: bytes) -> dict:
    """etcd's OpGet(pfx, WithFirstCreate()...): the key of the prefix created first."""
    return Get(prefix, prefix=True, sort_order="ASCEND", sort_target="CREATE", limit=1)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _idempotent(client: "Client", deadline: float | None, request):
    """Run a request that may safely be sent twice, again after UNAVAILABLE (a failover lost its
    reply), until the deadline (or the client's timeout when there is none)."""
    give_up = deadline if deadline is not None else time.monotonic() + client.timeout
    while True:
        try:
            return request()
        except Unavailable:
            if client._closed or time.monotonic() + RETRY_EVERY >= give_up:
                raise
            time.sleep(RETRY_EVERY)


def _wait_delete(client: "Client", key: bytes, revision: int, deadline: float | None) -> bool:
    """etcd's waitDelete: watch key from revision until its DELETE.  False: the deadline came
    first.  True: deleted, or the watch ended (the caller looks again, as etcd's would fail)."""
    try:
        w = client.watch(key, start_revision=revision)
    except Compacted:
        return True        # compacted since the read (a race with a compaction): look again
    try:
        while True:
            left = _left(deadline)
            if left is not None and left <= 0:
                return False
            try:
                resp = w.get(timeout=left)
            except queue.Empty:
                return False
            if resp is None or resp.canceled:
                return True
            if any(ev.type == "DELETE" for ev in resp.events):
                return True
    finally:
        try:
            w.cancel()
        except ZwatchError:
            pass    # the client may be closing; the fan-out forgets the watch with the session


def _wait_deletes(client: "Client", prefix: bytes, max_create_revision: int,
                  deadline: float | None) -> Header | None:
    """etcd's waitDeletes: until no key of the prefix has a create_revision <= max_create_revision,
    wait for the DELETE of the last created one of them.  None: the deadline came first."""
    while True:
        resp = client.get(prefix, prefix=True, sort_order="DESCEND", sort_target="CREATE", limit=1,
                          max_create_revision=max_create_revision)     # etcd's WithMaxCreateRev
        if not resp.kvs:
            return resp.header
        if not _wait_delete(client, resp.kvs[0].key, resp.header.revision, deadline):
            return None


class _Contender:
    """What a lock contender and an election candidate share (etcd's concurrency.Session): a
    lease of its own, kept alive by the client, and one key under the prefix named after it."""

    def __init__(self, client: "Client", name, ttl: int = DEFAULT_TTL):
        self.client = client
        self.name = to_bytes(name)
        self.prefix = self.name + b"/"
        self.ttl = ttl
        self.lease: Lease | None = None
        self.key: bytes | None = None
        self.header: Header | None = None

    def _live_lease(self, deadline: float | None) -> Lease:
        """This contender's lease, granted again if it is gone (expired or revoked)."""
        if self.lease is None or not self.lease.alive:
            self.lease = _idempotent(self.client, deadline, lambda: self.client.lease(self.ttl))
        return self.lease

    @staticmethod
    def _revoke(lease: Lease | None):
        if lease is not None:
            try:
                lease.revoke()
            except LeaseNotFound:
                pass    # expired already


class Lock(_Contender):
    """A distributed lock (python-etcd3's ``lock()`` shape, etcd's concurrency.Mutex algorithm).

    ``acquire(timeout=None) -> bool``, ``release() -> bool``, ``is_acquired()``, a context manager;
    ``key`` (this contender's key, once acquire ran) and ``lease`` (its lease, kept alive by the
    client).  The lock is held as long as the lease lives: a holder that dies frees it within ``ttl``.
    """

    def __init__(self, client: "Client", name, ttl: int = DEFAULT_TTL):
        super().__init__(client, name, ttl)
        self.revision = -1            # create_revision of self.key (etcd's myRev)
        self._acquired = False

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait until this contender holds the lock (True) or timeout seconds passed (False, and
        its key and lease are gone again).  timeout None waits for as long as it takes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lease = self._live_lease(deadline)
            key = _owner_key(self.prefix, lease)
            owner = _first_created(self.prefix)
            # put self in the waiters via key (the oldest waiter holds the lock); on a retry, or
            # when this lease holds the lock already, find the key instead; either way learn
            # the current holder in the same round trip.
            resp: TxnResponse = _idempotent(self.client, deadline, lambda: self.client.txn(
                [CreateRevision(key) == 0], [Put(key, b"", lease=lease), owner], [Get(key), owner]))
            self.key, self.revision = key, resp.header.revision
            if not resp.succeeded:
                self.revision = resp.responses[0].kvs[0].create_revision
            holders = resp.responses[1].kvs
            try:
                if holders and holders[0].create_revision != self.revision:
                    header = _wait_deletes(self.client, self.prefix, self.revision - 1, deadline)
                    if header is None:
                        self._unlock()
                        return False
                    self.header = header
                else:
                    self.header = resp.header
            except BaseException:
                self._unlock()       # etcd: release the lock key if the wait failed
                raise
            if lease.alive:
                self._acquired = True
                return True
            # The lease expired while waiting (its key went with it): start over with a new one.
            self._unlock()
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def release(self) -> bool:
        """Delete the key (etcd's Unlock) and revoke the lease.  True if this held the lock until now."""
        if self.key is None:
            return False
        held = self._acquired
        deleted = self._unlock()
        return held and deleted

    def is_acquired(self) -> bool:
        """True if this contender holds the lock: acquired, and its key still exists with its create_revision."""
        if not self._acquired or self.key is None:
            return False
        kvs = self.client.get(self.key).kvs
        return bool(kvs) and kvs[0].create_revision == self.revision

    def refresh(self) -> int:
        """Renew the lease now (python-etcd3's Lock.refresh); the client renews it anyway."""
        if self.lease is None:
            raise LeaseNotFound("the lock has no lease (not acquired)")
        return self.lease.refresh()

    def _unlock(self) -> bool:
        """Delete the key, revoke the lease; True if the key was still there."""
        key, lease = self.key, self.lease
        self.key, self.revision, self.lease, self._acquired = None, -1, None, False
        deleted = False
        try:
            if key is not None:
                deleted = _idempotent(self.client, None, lambda: self.client.delete(key)).deleted > 0
        finally:
            self._revoke(lease)
        return deleted

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def __repr__(self):
        return f"Lock(name={self.name!r}, key={self.key!r}, acquired={self._acquired})"


class Observation:
    """What ``Election.observe()`` returns: an iterator of the leader's KeyValue each time the
    leadership (or the leader's value) changes, etcd's Election.Observe.  ``cancel()`` ends it
    from any thread."""

    def __init__(self, election: "Election"):
        self._election = election
        self._watch = None
        self._canceled = False
        self._gen = self._run()

    def __iter__(self):
        return self

    def __next__(self) -> KeyValue:
        return next(self._gen)

    def cancel(self):
        self._canceled = True
        w = self._watch
        if w is not None:
            w.cancel()

    def _watch_from(self, key: bytes, revision: int, prefix: bool):
        self._watch = self._election.client.watch(key, prefix=prefix, start_revision=revision)
        if self._canceled:          # cancel() ran before the watch existed
            self._watch.cancel()
        return self._watch

    def _run(self) -> Iterator[KeyValue]:
        client, prefix = self._election.client, self._election.prefix
        last = None          # (key, mod_revision) yielded last: a watch ended early never repeats it
        while not self._canceled:
            resp = client.get(prefix, prefix=True, sort_order="ASCEND", sort_target="CREATE", limit=1)
            if resp.kvs:
                kv, revision = resp.kvs[0], resp.header.revision
            else:
                # No leader: wait for the first key put on the prefix (only PUTs: a DELETE here
                # would make this spin).
                kv = None
                w = self._watch_from(prefix, resp.header.revision, prefix=True)
                try:
                    for ev in w.events():
                        if ev.type == "PUT":
                            kv = ev.kv
                            break
                finally:
                    w.cancel()
                if kv is None:
                    if self._canceled:
                        return
                    continue            # the watch ended (e.g. compacted): look again
                revision = kv.mod_revision
            if (kv.key, kv.mod_revision) != last:
                last = (kv.key, kv.mod_revision)
                yield kv
            # Every change of the leader's key until its DELETE: proclaims yield the new value.
            w = self._watch_from(kv.key, revision + 1, prefix=False)
            try:
                for ev in w.events():
                    if ev.type == "DELETE":
                        break
                    last = (ev.kv.key, ev.kv.mod_revision)
                    yield ev.kv
            finally:
                w.cancel()


class Election(_Contender):
    """Leader election (etcd's concurrency.Election): ``campaign(value, timeout=None) -> bool``,
    ``proclaim(value)``, ``leader() -> KeyValue | None``, ``observe()``, ``resign()``.
    ``key`` / ``rev``: this candidate's key and its create_revision while campaigning or leading."""

    def __init__(self, client: "Client", name, ttl: int = DEFAULT_TTL):
        super().__init__(client, name, ttl)     # key: etcd's leaderKey (None when not a candidate)
        self.rev = -1                           # etcd's leaderRev

    def campaign(self, value, timeout: float | None = None) -> bool:
        """Become a candidate and wait until this one leads (True), or timeout seconds passed
        (False, resigned).  A candidate already campaigning on the same lease keeps its place
        and proclaims the new value."""
        value = to_bytes(value)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lease = self._live_lease(deadline)
            key = _owner_key(self.prefix, lease)
            resp: TxnResponse = _idempotent(self.client, deadline, lambda: self.client.txn(
                [CreateRevision(key) == 0], [Put(key, value, lease=lease)], [Get(key)]))
            self.key, self.rev = key, resp.header.revision
            try:
                if not resp.succeeded:
                    kv = resp.responses[0].kvs[0]
                    self.rev = kv.create_revision
                    if kv.value != value:
                        self.proclaim(value)
                header = _wait_deletes(self.client, self.prefix, self.rev - 1, deadline)
            except BaseException:
                self.resign()
                raise
            if header is None:
                self.resign()
                return False
            if lease.alive:
                self.header = resp.header
                return True
            self.resign()        # the lease expired while waiting: campaign again on a new one
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def proclaim(self, value):
        """Change the leader's value without an election (NotLeader: this candidate's key is gone)."""
        if self.key is None:
            raise NotLeader()
        resp = self.client.txn([CreateRevision(self.key) == self.rev],
                               [Put(self.key, to_bytes(value), lease=self.lease)], [])
        if not resp.succeeded:
            self.key = None
            raise NotLeader()
        self.header = resp.header

    def resign(self):
        """Give up leadership (or the candidacy): delete the key if it is still ours, revoke the lease."""
        key, rev, lease = self.key, self.rev, self.lease
        self.key, self.rev, self.lease = None, -1, None
        try:
            if key is not None:
                resp = _idempotent(self.client, None, lambda: self.client.txn(
                    [CreateRevision(key) == rev], [Delete(key)], []))
                self.header = resp.header
        finally:
            self._revoke(lease)

    def leader(self) -> KeyValue | None:
        """The current leader's key and value (None: no leader)."""
        kvs = self.client.get(self.prefix, prefix=True, sort_order="ASCEND", sort_target="CREATE", limit=1).kvs
        return kvs[0] if kvs else None

    def observe(self) -> Observation:
        return Observation(self)

    def __repr__(self):
        return f"Election(name={self.name!r}, key={self.key!r})"
