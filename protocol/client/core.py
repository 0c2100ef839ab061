"""The Python client binding: ``from zwatch import Client``.

One background I/O thread owns the ZeroMQ socket (sockets are not thread-safe); application
threads hand it encoded requests through a queue and wait on a per-request slot.  The thread
sends heartbeats, notices a dead or silent fan-out (no message for ``3 x heartbeat``) and
moves to the next endpoint, where it re-creates every watch from
``max(last event revision, last progress revision) + 1`` with its original options, so the
application sees one continuous stream.  The I/O thread is ``session.SessionIO``; this module
is the application's side: the request methods and the watch handles.

Retries: reads (get, status) are re-sent transparently after a failover.  Writes are never
re-sent blindly: a write whose reply was lost may or may not have been applied, so the caller
gets UNAVAILABLE and decides (e.g. a txn comparing mod_revision makes a retry safe).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import queue
import threading
import time
import uuid
from collections import deque
from typing import NamedTuple

import zmq

from .. import errors, messages
from ..errors import Unavailable, ZwatchError
from .auth import AuthMixin, Credentials
from .builders import endpoints_from_env, lease_id_of, range_body, to_bytes
from .resolve import expand as expand_endpoints
from .concurrency import Election, Lock
from .callbacks import CallbackDispatcher
from .credit import Credit, WatchQueue
from .curve import resolve as resolve_curve
from .delivery import WatchRouter
from .lease import Lease, LeaseKeeper
from .session import READ_OPS, Session, SessionIO
from .types import (CompactResponse, DeleteRangeResponse, HashKVResponse, Header, HealthResponse, Member, MemberListResponse, LeaseGrantResponse, LeaseTimeToLiveResponse,
                    PutResponse, RangeResponse, StatusResponse, TxnResponse, WatchResponse, delete_range_response, header_of, put_response, range_response,
                    txn_response)


class AlarmMember(NamedTuple):
    member_id: int        # the writer's ID (persisted with the alarm)
    alarm: str            # "NOSPACE"


class AlarmResponse(NamedTuple):
    header: Header
    alarms: list          # [AlarmMember]


class DefragResponse(NamedTuple):
    header: Header
    db_size_before: int   # bytes of the LMDB file before and after
    db_size_after: int
    took_ms: float        # how long writes were held


class SnapshotInfo(NamedTuple):
    header: Header
    revision: int         # the snapshot's revision, exact (the copy and the revision share one read txn)
    size: int             # bytes
    sha256: str           # hex, of the whole file


# A defrag or a snapshot copy takes ~seconds per GB: their default timeout (the client's own
# is sized for ordinary requests).
MAINTENANCE_TIMEOUT_S = 300.0


def _alarm_response(b: dict) -> AlarmResponse:
    return AlarmResponse(header_of(b), [AlarmMember(a["memberID"], a["alarm"]) for a in b.get("alarms", ())])


class _Pending:
    __slots__ = ("op", "frame", "event", "result", "error", "deadline", "req_id", "watch_id")

    def __init__(self, op, frame, deadline, req_id):
        self.op, self.frame, self.deadline, self.req_id = op, frame, deadline, req_id
        self.event = threading.Event()
        self.result = None
        self.error = None
        self.watch_id = None


class Watch:
    """A watch handle: iterate it for WatchResponse objects; cancel() ends it."""

    def __init__(self, client: "Client", watch_id: int, body: dict, shared_queue=None):
        self.client = client
        self.watch_id = watch_id
        self.body = body                      # original options, re-sent on resume
        self.shared = shared_queue is not None
        # Its own queue is a WatchQueue: taking a response out is what acknowledges it (credit.py)
        self.queue = shared_queue if self.shared else WatchQueue()
        self.last_revision = 0                # max(last event revision, last progress revision)
        self.duplicates_dropped = 0           # events at or below last_revision the client dropped
        self.canceled = False
        self.cancel_reason = ""
        self.cancel_code = ""                 # PERMISSION_DENIED / UNAUTHENTICATED: see error
        self.error: ZwatchError | None = None # what ends the iterator instead of StopIteration
        self.compact_revision = 0
        self._fragments: list = []
        self._resuming = False
        # True once this session's fan-out confirmed the watch: only then does a session-wide
        # progress notification (watch_ids [-1]) speak for it.
        self._live = False

    def __iter__(self):
        return self

    def __next__(self) -> WatchResponse:
        resp = self.get()
        if resp is None:
            raise StopIteration
        return resp

    def get(self, timeout: float | None = None) -> WatchResponse | None:
        """The next response; None once the watch is over and drained.  Raises queue.Empty on timeout.

        A watch the server canceled because its user may no longer read the range (or is no longer
        logged in) delivers its canceled response, then raises zwatch.PermissionDenied (or
        zwatch.Unauthenticated) instead of returning None: it is not resumed."""
        if self.canceled and self.queue.empty():
            return self._over()
        item = self.queue.get(timeout=timeout) if timeout is not None else self.queue.get()
        if item is None:
            return self._over()
        return item

    def _over(self):
        if self.error is not None:
            raise self.error
        return None

    def _end(self, header: Header, reason: str, code: str = "", error: ZwatchError | None = None,
             compact_revision: int = 0):
        """The watch is over (canceled by the server, or it could not be resumed): its last
        response, then the end of its iterator (with `error` when there is one)."""
        self.canceled = True
        self.cancel_reason = reason
        self.cancel_code = code
        self.error = error
        self.compact_revision = compact_revision
        self.queue.put(WatchResponse(self.watch_id, header, canceled=True, cancel_reason=reason,
                                     compact_revision=compact_revision, cancel_code=code,
                                     watch_ids=[self.watch_id] if self.shared else None))
        if not self.shared:
            self.queue.put(None)

    def events(self, timeout: float | None = None):
        """Iterate events only (skips created / progress responses); ends when the watch ends."""
        while True:
            resp = self.get(timeout)
            if resp is None:
                return
            yield from resp.events

    def cancel(self, timeout: float | None = None):
        if not self.canceled:
            self.client._cancel_watch(self, timeout)

    def _start_revision(self) -> int:
        # Never resume below the original start: a session-wide progress notification may
        # claim a revision below a future watch's start (etcd #20221).
        start = self.body.get("start_revision", 0)
        if self.last_revision:
            return max(self.last_revision + 1, start)
        return start



class Client(AuthMixin, SessionIO):
    """user: `name` or `name:password` (default ZWATCH_USER), password (default ZWATCH_PASSWORD):
    the session logs in as that user in its hello, again at every failover (auth.py).  A login the
    fan-outs refuse makes every request raise zwatch.Unauthenticated.  curve_server_key /
    curve_client_key: CURVE on the connection (curve.py; default ZWATCH_CURVE_SERVER_KEY /
    ZWATCH_CURVE_CLIENT_KEY)."""

    def __init__(self, endpoints=None, timeout: float = 5.0, heartbeat: float = 1.0, name: str | None = None,
                 user: str | None = None, password: str | None = None, curve_server_key=None,
                 curve_client_key=None, shuffle: bool = True, max_buffered_bytes: int = 0):
        self.endpoints = endpoints_from_env(endpoints)
        self.credentials = Credentials.resolve(user, password)
        self.curve = resolve_curve(curve_server_key, curve_client_key)   # SessionIO applies it
        self.login_error: ZwatchError | None = None     # set once the credentials were refused for good
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.name = name or f"py-{os.getpid()}"
        self._ctx = zmq.Context()
        self._ids = itertools.count(1)
        self._watch_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._outq: deque = deque()
        self._watches: dict[int, Watch] = {}
        self._router = WatchRouter(self._watches, self._lock, self.name)
        # shuffle: each client tries the endpoints in its own random order (os.urandom seed), so the
        # clients of a fan-out that dies or drains spread over the others (session.py).
        # Names (a headless Service) stand for every address they resolve to (resolve.py).
        self._session = Session(self.endpoints, heartbeat, shuffle=shuffle, resolver=expand_endpoints)
        # Backpressure (credit.py): watch responses are acknowledged to the fan-out once the
        # application took them from their watch's queue, so a slow application slows the stream
        # (and, if it stays slow, its watches catch up from history later) instead of piling
        # responses up here.  Unconsumed bytes stay within the fan-out's session window (8 MiB by
        # default), or within max_buffered_bytes when that is smaller.
        self._credit = Credit(self._wake)
        self._session.credit = self._credit
        self._session.max_buffered_bytes = max(0, int(max_buffered_bytes))
        self._callbacks = CallbackDispatcher(self.name)     # add_watch_callback's thread
        self.moves = 0                              # goaways followed (the fan-out drained)
        self._resume_reqs: dict[int, Watch] = {}   # req_id of a resume create -> its watch
        self._resume_pending = False                # some watch waits to be re-created
        self._closed = False
        self._connected = threading.Event()
        self.endpoint = None
        self.session_info: dict = {}
        self.failovers = 0
        self.lease_keeper = LeaseKeeper(self)        # its thread starts with the first lease()
        self._wake_addr = f"inproc://zwatch-client-{uuid.uuid4().hex}"
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.setsockopt(zmq.LINGER, 0)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PAIR)
        self._wake_tx.setsockopt(zmq.LINGER, 0)
        self._wake_tx.connect(self._wake_addr)
        self._thread = threading.Thread(target=self._io_main, name="zwatch-client-io", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ public API
    def get(self, key, range_end=None, *, prefix=False, from_key=False, revision=0, limit=0, keys_only=False,
            count_only=False, sort_order="NONE", sort_target="KEY", min_mod_revision=0, max_mod_revision=0,
            min_create_revision=0, max_create_revision=0, timeout=None) -> RangeResponse:
        body = range_body(key, range_end, prefix=prefix, from_key=from_key, revision=revision, limit=limit,
                          keys_only=keys_only, count_only=count_only, sort_order=sort_order,
                          sort_target=sort_target, min_mod_revision=min_mod_revision,
                          max_mod_revision=max_mod_revision, min_create_revision=min_create_revision,
                          max_create_revision=max_create_revision)
        return range_response(self._call("range", body, timeout))

    def put(self, key, value, *, prev_kv=False, lease=0, timeout=None) -> PutResponse:
        """lease: a lease ID or a Lease; the key is deleted when the lease is revoked or expires."""
        body = {"key": to_bytes(key), "value": to_bytes(value)}
        if prev_kv:
            body["prev_kv"] = True
        if lease:
            body["lease"] = lease_id_of(lease)
        return put_response(self._call("put", body, timeout))

    def delete(self, key, range_end=None, *, prefix=False, from_key=False, prev_kv=False,
               timeout=None) -> DeleteRangeResponse:
        body = range_body(key, range_end, prefix=prefix, from_key=from_key)
        if prev_kv:
            body["prev_kv"] = True
        return delete_range_response(self._call("delete_range", body, timeout))

    def txn(self, compare=(), success=(), failure=(), timeout=None) -> TxnResponse:
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        return txn_response(self._call("txn", body, timeout))

    def compact(self, revision: int, physical: bool = False, timeout=None) -> CompactResponse:
        return CompactResponse(header_of(self._call("compact", {"revision": revision, "physical": physical}, timeout)))

    def status(self, timeout=None) -> StatusResponse:
        """The fan-out's status, answered at once from what it knows of the writer (SPEC.md "status")."""
        b = self._call("status", {}, timeout)
        return StatusResponse(header_of(b), b.get("version", ""), b.get("protocol_version", 0),
                              b.get("compact_revision", 0), b.get("db_size", 0), self.endpoint or "",
                              b.get("db_size_in_use", 0), b.get("header", {}).get("member_id", 0), b.get("leader", 0),
                              b.get("raft_index", 0), b.get("raft_applied_index", 0), list(b.get("errors", ())),
                              b.get("actor", ""), b.get("instance", ""), b.get("sessions", 0), b.get("watchers", 0))

    def health(self, timeout=None) -> HealthResponse:
        """The fan-out pings the writer and the syncer behind it and says whether both answered
        (within about a second), SPEC.md "health"."""
        b = self._call("health", {}, timeout)
        return HealthResponse(bool(b.get("health")), b.get("reason", ""), b.get("took_ms", 0.0), b.get("revision", 0),
                              list(b.get("alarms", ())))

    def member_list(self, timeout=None) -> MemberListResponse:
        """The fan-outs serving this cluster (those that ping its syncer)."""
        b = self._call("member_list", {}, timeout)
        members = [Member(m["ID"], m.get("name", ""), list(m.get("clientURLs", ())), list(m.get("peerURLs", ())),
                          m.get("started", 0.0), m.get("sessions", 0), m.get("watchers", 0)) for m in b.get("members", ())]
        return MemberListResponse(header_of(b), b.get("header", {}).get("member_id", 0), members)

    def hash_kv(self, revision: int = 0, timeout=None) -> HashKVResponse:
        """A hash of the store's history in (compact revision, revision] (0: the current one);
        root only with auth enabled.  SPEC.md "hash_kv"."""
        b = self._call("hash_kv", {"revision": revision}, timeout)
        return HashKVResponse(header_of(b), b["hash"], b.get("compact_revision", 0), b.get("hash_revision", 0))

    # ------------------------------------------------------------ alarms (etcd's Maintenance.Alarm)
    def alarm_list(self, timeout=None) -> "AlarmResponse":
        """The active alarms (NOSPACE: the DB reached ZWATCH_QUOTA_BACKEND_BYTES).  With auth
        enabled: any authenticated user."""
        return _alarm_response(self._call("alarm_list", {}, timeout))

    def alarm_disarm(self, alarm: str = "", timeout=None) -> "AlarmResponse":
        """Disarm `alarm` ("": every active one, as `etcdctl alarm disarm`); returns the alarms
        that were disarmed.  Root only with auth enabled."""
        return _alarm_response(self._call("alarm_disarm", {"alarm": alarm} if alarm else {}, timeout))

    # ------------------------------------------------------------ defrag, snapshots (etcd's Maintenance)
    def defrag(self, timeout=None) -> DefragResponse:
        """Give the LMDB file's free pages back to the disk: the writer swaps a compacting copy
        in, holding writes meanwhile (SPEC.md "Defrag, snapshots").  Root only with auth enabled."""
        b = self._call("defrag", {}, MAINTENANCE_TIMEOUT_S if timeout is None else timeout)
        return DefragResponse(header_of(b), b["db_size_before"], b["db_size_after"], b["took_ms"])

    def snapshot_save(self, path: str, timeout=None) -> SnapshotInfo:
        """Write a consistent snapshot of the store to path (written as path + ".part", its
        sha256 checked, then renamed).  Root only with auth enabled."""
        t = MAINTENANCE_TIMEOUT_S if timeout is None else timeout
        b = self._call("snapshot_begin", {}, t)
        info = SnapshotInfo(header_of(b), b["revision"], b["size"], b["sha256"])
        part = path + ".part"
        h = hashlib.sha256()
        try:
            with open(part, "wb") as f:
                offset = 0
                while offset < info.size:
                    data = self._call("snapshot_read", {"token": b["token"], "offset": offset}, t)["data"]
                    if not data:
                        raise errors.Internal(f"snapshot ended at {offset} of {info.size} bytes")
                    f.write(data)
                    h.update(data)
                    offset += len(data)
                f.flush()
                os.fsync(f.fileno())
            if h.hexdigest() != info.sha256:
                raise errors.Internal(f"snapshot sha256 mismatch: got {h.hexdigest()}, expected {info.sha256}")
            os.rename(part, path)
        except BaseException:
            try:
                os.unlink(part)
            except FileNotFoundError:
                pass
            raise
        return info

    # ------------------------------------------------------------ leases (etcd's Lease API)
    def lease_grant(self, ttl: int, lease_id: int = 0, timeout=None) -> LeaseGrantResponse:
        """Grant a lease (ID 0: the server picks one).  Not retried after a failover: a grant whose
        reply was lost may exist; it expires by itself when nobody keeps it alive."""
        b = self._call("lease_grant", {"TTL": ttl, "ID": lease_id}, timeout)
        return LeaseGrantResponse(header_of(b), b["ID"], b["TTL"])

    def lease_revoke(self, lease, timeout=None) -> Header:
        """Delete every key attached to the lease (one revision) and forget it."""
        return header_of(self._call("lease_revoke", {"ID": lease_id_of(lease)}, timeout))

    def lease_keepalive_once(self, leases, timeout=None) -> dict:
        """Renew leases once: {ID: new TTL}, TTL 0 for a lease that no longer exists."""
        ids = [lease_id_of(x) for x in leases]
        b = self._call("lease_keepalive", {"IDs": ids}, timeout)
        return {d["ID"]: d["TTL"] for d in b.get("leases", [])}

    def time_to_live(self, lease, keys: bool = False, timeout=None) -> LeaseTimeToLiveResponse:
        b = self._call("lease_timetolive", {"ID": lease_id_of(lease), "keys": keys}, timeout)
        return LeaseTimeToLiveResponse(header_of(b), b.get("ID", 0), b.get("TTL", -1), b.get("grantedTTL", 0),
                                       list(b.get("keys", [])), b.get("keys_truncated", False))

    def leases(self, timeout=None) -> list[int]:
        """Every lease ID granted (and not yet revoked or expired)."""
        return [d["ID"] for d in self._call("lease_leases", {}, timeout).get("leases", [])]

    def lease(self, ttl: int, lease_id: int = 0, timeout=None) -> Lease:
        """Grant a lease and keep it alive in the background (lease.py) until revoked; a context manager."""
        return Lease.grant(self, ttl, lease_id, timeout)

    def lock(self, name, ttl: int = 60) -> Lock:
        """A distributed lock named name (etcd's concurrency.Mutex; concurrency.py)."""
        return Lock(self, name, ttl)

    def election(self, name, ttl: int = 60) -> Election:
        """A leader election named name (etcd's concurrency.Election; concurrency.py)."""
        return Election(self, name, ttl)

    def watch(self, key, range_end=None, *, prefix=False, from_key=False, start_revision=0, prev_kv=False,
              filters=(), progress_notify=False, watch_id=0, fragment=False, timeout=None,
              queue=None) -> Watch:
        """Watch a key or range; returns a handle that iterates WatchResponse objects.

        queue: deliver this watch's responses into an object with put() (e.g. a SimpleQueue)
        shared by many watches instead of the handle's own queue.  Watches that share a queue
        get ONE response per frame for all of them (response.watch_ids lists them; the events
        are identical), which costs the client nothing per watcher: the way to hold thousands
        of watches in one process.  The handle's own get()/iteration is then unused; the end
        of a watch is signalled by a canceled response.
        """
        body = range_body(key, range_end, prefix=prefix, from_key=from_key)     # key, range_end as get's
        body.update({"start_revision": start_revision, "prev_kv": prev_kv, "filters": list(filters),
                     "progress_notify": progress_notify, "fragment": fragment})
        with self._lock:
            if watch_id == 0:
                watch_id = next(self._watch_ids)
                while watch_id in self._watches:
                    watch_id = next(self._watch_ids)
            elif watch_id in self._watches:
                raise errors.FailedPrecondition(f"watch_id {watch_id} already exists in this client")
            body["watch_id"] = watch_id
            handle = Watch(self, watch_id, body, queue)
            self._watches[watch_id] = handle
        try:
            created = self._call("watch_create", body, timeout)
        except ZwatchError:
            with self._lock:
                self._watches.pop(watch_id, None)
            raise
        if not start_revision and not handle.last_revision:
            handle.last_revision = created.get("header", {}).get("revision", 0)
        return handle

    # ------------------------------------------------------------ callbacks (python-etcd3's API)
    def add_watch_callback(self, key, callback, range_end=None, **kwargs) -> int:
        """Watch key (or [key, range_end)) and call callback(response) for each response, on the
        client's one callback thread (callbacks.py: what it receives when the watch ends).
        kwargs: watch()'s options (start_revision, prev_kv, filters, progress_notify, prefix...).
        Returns the watch id, for cancel_watch()."""
        if "queue" in kwargs:
            raise TypeError("add_watch_callback delivers to its callback: no queue")
        handle = self.watch(key, range_end, queue=self._callbacks.queue, **kwargs)
        self._callbacks.add(handle.watch_id, callback)
        return handle.watch_id

    def add_watch_prefix_callback(self, key_prefix, callback, **kwargs) -> int:
        """add_watch_callback over every key starting with key_prefix."""
        return self.add_watch_callback(key_prefix, callback, prefix=True, **kwargs)

    def cancel_watch(self, watch_id: int, timeout=None) -> None:
        """Cancel a watch by id (one of add_watch_callback's, or any watch of this client): its
        callback is not called again once this returns."""
        self._callbacks.remove(watch_id)
        with self._lock:
            w = self._watches.get(watch_id)
        if w is not None:
            w.cancel(timeout)

    def wait_connected(self, timeout: float) -> bool:
        """True once a fan-out answered the hello (or the login was refused for good: the next
        request raises why); False if none did within `timeout` seconds (etcdctl's --dial-timeout)."""
        deadline = time.monotonic() + timeout
        while not self._connected.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self.login_error is not None:
                return True
            if time.monotonic() >= deadline:
                return False
        return True

    def request_progress(self, timeout=None) -> int:
        """Ask for a progress notification on every watch; returns the revision it claims."""
        return header_of(self._call("watch_progress", {}, timeout)).revision

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._callbacks.close()
        self._wake()
        self._thread.join(timeout=2)
        self.lease_keeper.stop()     # no revoke: an abandoned lease expires at the server (etcd)
        for w in list(self._watches.values()):
            w.canceled = True
            if not w.shared:
                w.queue.put(None)
        self._wake_tx.close()
        self._ctx.term() if not self._thread.is_alive() else None

    @property
    def buffered_bytes(self) -> int:
        """Bytes of watch frames received and not yet consumed by the application (credit.py)."""
        return self._credit.held

    @property
    def max_buffered_seen(self) -> int:
        """The most bytes ever buffered unconsumed at once (bounded by the session window, or by
        max_buffered_bytes when smaller, plus one frame)."""
        return self._credit.max_held

    @property
    def duplicates_dropped(self) -> int:
        """Events the client dropped as duplicates (issue #8), one per event per watch."""
        return self._router.duplicates_dropped

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ app-side plumbing
    def _wake(self):
        with self._lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _call(self, op: str, body: dict, timeout=None):
        if self._closed:
            raise Unavailable("client is closed")
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._call_once(op, body, deadline)
            except Unavailable:
                # Reads are retried transparently (e.g. while the syncer restarts) until the
                # deadline; writes never are: their outcome is unknown.
                if op not in READ_OPS or time.monotonic() + 0.1 >= deadline:
                    raise
                time.sleep(0.1)

    def _call_once(self, op: str, body: dict, deadline: float):
        refused = self.login_error
        if refused is not None:
            raise type(refused)(refused.message, refused.code)
        timeout = max(0.0, deadline - time.monotonic())
        req_id = next(self._ids)
        frame = messages.encode_request(op, req_id, body)
        p = _Pending(op, frame, deadline, req_id)
        if op == "watch_create":
            p.watch_id = body.get("watch_id")
        with self._lock:
            self._pending[req_id] = p
            self._outq.append(p)
        self._wake()
        if not p.event.wait(timeout + 1.0):
            with self._lock:
                self._pending.pop(req_id, None)
            raise Unavailable(f"{op}: no answer within {timeout}s")
        if p.error is not None:
            raise p.error
        return p.result

    def _cancel_watch(self, w: Watch, timeout=None):
        try:
            self._call("watch_cancel", {"watch_id": w.watch_id}, timeout)
        except errors.InvalidArgument:
            pass  # already gone on the server
        finally:
            with self._lock:
                self._watches.pop(w.watch_id, None)
            if isinstance(w.queue, WatchQueue) and not w.shared:
                w.queue.release_all()      # it will not be read: give the fan-out its credit back
            if not w.canceled:
                w.canceled = True
                w.cancel_reason = w.cancel_reason or "canceled by client"
                if w.shared:   # a shared queue outlives its watches: say which one ended
                    w.queue.put(WatchResponse(w.watch_id, Header(w.last_revision), canceled=True,
                                              cancel_reason=w.cancel_reason, watch_ids=[w.watch_id]))
                else:
                    w.queue.put(None)
