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

import zmq

from .. import errors, messages
from ..errors import Unavailable, ZwatchError
from .auth import AuthMixin, Credentials
from .builders import endpoints_from_env, range_body, value_filter_fields
from .resolve import expand as expand_endpoints
from .concurrency import Election, Lock
from .callbacks import CallbackDispatcher
from .credit import Credit, WatchQueue
from .curve import resolve as resolve_curve
from .delivery import WatchRouter
from .direct import DIRECT_OPS, FALLBACK, DirectWrites
from .lease import Lease, LeaseKeeper
from .cursor import Cursor
from .session import READ_OPS, Session, SessionIO
from . import calls, timeref
from .calls import MAINTENANCE_TIMEOUT_S
from .types import (AlarmMember, AlarmResponse, CompactResponse, CursorInfo, CursorResponse, DefragResponse, DeleteRangeResponse,  # noqa: F401
                    HashKVResponse, Header, HealthResponse, LeaseGrantResponse, LeaseTimeToLiveResponse,
                    MemberListResponse, PutResponse, RangeResponse, SnapshotInfo, StatusResponse, TxnResponse,
                    WatchResponse, header_of)


RETRY_AFTER_S = 0.1     # between attempts of a read that got UNAVAILABLE


class _Pending:
    __slots__ = ("op", "frame", "event", "result", "error", "deadline", "req_id", "watch_id")

    def __init__(self, op, frame, deadline, req_id):
        self.op, self.frame, self.deadline, self.req_id = op, frame, deadline, req_id
        self.event = threading.Event()
        self.result = None
        self.error = None
        self.watch_id = None


def state_options(initial_state: bool, on_compacted: str) -> dict:
    """watch_create's initial state / resync fields (SPEC.md section 7.7); none when unused, so a
    plain watch's request is what it was."""
    out = {}
    if initial_state:
        out["initial_state"] = True
    if on_compacted != "cancel":
        out["on_compacted"] = on_compacted
    return out


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
        # Between a state's start (initial_state, or a resync's reset) and its state_end: a
        # resume then reads the state again (SPEC.md section 7.7).
        self._in_state = bool(body.get("initial_state"))
        # A verified stream (SPEC.md 7.10): the digest sum of the events handed to the application
        # since the server-side watch's current start revision _vstart (reset when a failover
        # re-creates it at last + 1: the server's hash starts there too).
        self.verify = bool(body.get("verify"))
        self._vsum = 0
        self._vstart = body.get("start_revision", 0)
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

    def request_progress(self, timeout: float | None = None) -> int:
        """Ask the fan-out for this watch's own progress, whatever the client's other watches
        are doing (SPEC.md section 7.9).  Returns the revision the server answered: when the
        watch is live, R, and its progress notification at R (everything of this watch <= R
        delivered) is already on its stream, ahead of any later response; when it is still
        catching up or waits for a future start, its position so far, and its notification
        arrives on its stream once it is live.  Raises FailedPrecondition (reason
        WATCH_NOT_FOUND) for a watch the server no longer has."""
        return self.client.watch_progress(self.watch_id, timeout)

    def _start_revision(self) -> int:
        # Never resume below the original start: a session-wide progress notification may
        # claim a revision below a future watch's start (etcd #20221).
        start = self.body.get("start_revision", 0)
        if self.last_revision:
            return max(self.last_revision + 1, start)
        return start



class ClientBase(SessionIO):
    """What the sync Client and the asyncio Client (aio.py) share besides SessionIO: the request
    and watch tables, and the steps of a request and of a watch that do not wait."""

    _direct: DirectWrites | None = None     # the sync client's direct writes (direct.py)

    def _init_io_state(self, shuffle: bool, max_buffered_bytes: int):
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
        self._session = Session(self.endpoints, self.heartbeat, shuffle=shuffle, resolver=expand_endpoints)
        # Backpressure (credit.py): watch responses are acknowledged to the fan-out once the
        # application took them from their watch's queue, so a slow application slows the stream
        # (and, if it stays slow, its watches catch up from history later) instead of piling
        # responses up here.  Unconsumed bytes stay within the fan-out's session window (8 MiB by
        # default), or within max_buffered_bytes when that is smaller.
        self._credit = Credit(self._wake)
        self._session.credit = self._credit
        self._session.max_buffered_bytes = max(0, int(max_buffered_bytes))
        self.moves = 0                              # goaways followed (the fan-out drained)
        self._resume_reqs: dict[int, Watch] = {}   # req_id of a resume create -> its watch
        self._resume_pending = False                # some watch waits to be re-created
        self._closed = False
        self.endpoint = None
        self.session_info: dict = {}
        self.failovers = 0

    def _open_wake(self):
        """An inproc PAIR: application code wakes the I/O loop (a request queued, credit released)."""
        self._wake_addr = f"inproc://zwatch-client-{uuid.uuid4().hex}"
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.setsockopt(zmq.LINGER, 0)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PAIR)
        self._wake_tx.setsockopt(zmq.LINGER, 0)
        self._wake_tx.connect(self._wake_addr)

    def _submit(self, op: str, body: dict, deadline: float) -> "_Pending":
        """Queue a request for the I/O loop (the caller wakes it and waits for p.event)."""
        refused = self.login_error
        if refused is not None:
            raise type(refused)(refused.message, refused.code)
        req_id = next(self._ids)
        p = _Pending(op, messages.encode_request(op, req_id, body), deadline, req_id)
        if op == "watch_create":
            p.watch_id = body.get("watch_id")
        with self._lock:
            self._pending[req_id] = p
            self._outq.append(p)
        return p

    def _deadline(self, timeout) -> float:
        if self._closed:
            raise Unavailable("client is closed")
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    @staticmethod
    def _may_retry(op: str, deadline: float) -> bool:
        """After UNAVAILABLE: reads are retried transparently (e.g. while the syncer restarts)
        until the deadline; writes never are: their outcome is unknown."""
        return op in READ_OPS and time.monotonic() + RETRY_AFTER_S < deadline

    @staticmethod
    def _outcome(p: "_Pending"):
        if p.error is not None:
            raise p.error
        return p.result

    def _register_watch(self, body: dict, watch_id: int, make) -> "Watch":
        """A new watch handle (make(watch_id)) in the table, before its create is sent."""
        with self._lock:
            if watch_id == 0:
                watch_id = next(self._watch_ids)
                while watch_id in self._watches:
                    watch_id = next(self._watch_ids)
            elif watch_id in self._watches:
                raise errors.FailedPrecondition(f"watch_id {watch_id} already exists in this client")
            body["watch_id"] = watch_id
            handle = make(watch_id)
            self._watches[watch_id] = handle
        return handle

    @staticmethod
    def _watch_created(handle: "Watch", created: dict):
        if handle.body.get("initial_state"):
            return       # it stands at the state's revision once state_end arrives
        if not handle.body.get("start_revision") and not handle.last_revision:
            handle.last_revision = created.get("header", {}).get("revision", 0)
            handle._vstart = handle.last_revision + 1

    def _watch_canceled(self, w: "Watch"):
        """The application canceled w (its cancel was answered, or could not be)."""
        with self._lock:
            self._watches.pop(w.watch_id, None)
        if not w.shared and hasattr(w.queue, "release_all"):
            w.queue.release_all()      # it will not be read: give the fan-out its credit back
        if not w.canceled:
            w.canceled = True
            w.cancel_reason = w.cancel_reason or "canceled by client"
            if w.shared:   # a shared queue outlives its watches: say which one ended
                w.queue.put(WatchResponse(w.watch_id, Header(w.last_revision), canceled=True,
                                          cancel_reason=w.cancel_reason, watch_ids=[w.watch_id]))
            else:
                w.queue.put(None)

    def _close_watches(self):
        for w in list(self._watches.values()):
            w.canceled = True
            if not w.shared:
                w.queue.put(None)


class Client(AuthMixin, ClientBase):
    """user: `name` or `name:password` (default ZWATCH_USER), password (default ZWATCH_PASSWORD):
    the session logs in as that user in its hello, again at every failover (auth.py).  A login the
    fan-outs refuse makes every request raise zwatch.Unauthenticated.  curve_server_key /
    curve_client_key: CURVE on the connection (curve.py; default ZWATCH_CURVE_SERVER_KEY /
    ZWATCH_CURVE_CLIENT_KEY)."""

    def __init__(self, endpoints=None, timeout: float = 5.0, heartbeat: float = 1.0, name: str | None = None,
                 user: str | None = None, password: str | None = None, curve_server_key=None,
                 curve_client_key=None, shuffle: bool = True, max_buffered_bytes: int = 0,
                 direct_writes: bool = True):
        self.endpoints = endpoints_from_env(endpoints)
        self.credentials = Credentials.resolve(user, password)
        self.curve = resolve_curve(curve_server_key, curve_client_key)   # SessionIO applies it
        self.login_error: ZwatchError | None = None     # set once the credentials were refused for good
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.name = name or f"py-{os.getpid()}"
        self._init_io_state(shuffle, max_buffered_bytes)
        self._ctx = zmq.Context()
        # Writes straight to the writer when the fan-out offers it (direct.py), from the calling
        # thread; everything else, and every write when it is not offered, goes through the session.
        self._direct = DirectWrites(self._ctx, self._ids) if direct_writes else None
        self._callbacks = CallbackDispatcher(self.name)     # add_watch_callback's thread
        self._connected = threading.Event()
        self.lease_keeper = LeaseKeeper(self)        # its thread starts with the first lease()
        self._open_wake()
        self._thread = threading.Thread(target=self._io_main, name="zwatch-client-io", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ public API
    def get(self, key, range_end=None, *, prefix=False, from_key=False, revision=0, limit=0, keys_only=False,
            count_only=False, sort_order="NONE", sort_target="KEY", min_mod_revision=0, max_mod_revision=0,
            min_create_revision=0, max_create_revision=0, timeout=None, at=None) -> RangeResponse:
        """at: read the state as of this time (a datetime, naive = local, or Unix seconds) instead
        of a revision: after every revision committed at or before it and none later (timeref.py)."""
        if at is not None:
            if revision:
                raise errors.InvalidArgument("get: revision and at are exclusive")
            answer = self._request(calls._revision_after(at), timeout)
            revision = timeref.read_revision_at(answer, at)
        return self._request(calls.get(key, range_end, prefix=prefix, from_key=from_key, revision=revision,
                                       limit=limit, keys_only=keys_only, count_only=count_only,
                                       sort_order=sort_order, sort_target=sort_target,
                                       min_mod_revision=min_mod_revision, max_mod_revision=max_mod_revision,
                                       min_create_revision=min_create_revision,
                                       max_create_revision=max_create_revision), timeout)

    def put(self, key, value, *, prev_kv=False, lease=0, timeout=None) -> PutResponse:
        """lease: a lease ID or a Lease; the key is deleted when the lease is revoked or expires."""
        return self._request(calls.put(key, value, prev_kv=prev_kv, lease=lease), timeout)

    def delete(self, key, range_end=None, *, prefix=False, from_key=False, prev_kv=False,
               timeout=None) -> DeleteRangeResponse:
        return self._request(calls.delete(key, range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv),
                             timeout)

    def txn(self, compare=(), success=(), failure=(), timeout=None) -> TxnResponse:
        return self._request(calls.txn(compare, success, failure), timeout)

    def compact(self, revision: int, physical: bool = False, timeout=None) -> CompactResponse:
        return self._request(calls.compact(revision, physical), timeout)

    def status(self, timeout=None) -> StatusResponse:
        """The fan-out's status, answered at once from what it knows of the writer (SPEC.md "status")."""
        return self._request(calls.status(), timeout)

    def health(self, timeout=None) -> HealthResponse:
        """The fan-out pings the writer and the syncer behind it and says whether both answered
        (within about a second), SPEC.md "health"."""
        return self._request(calls.health(), timeout)

    def member_list(self, timeout=None) -> MemberListResponse:
        """The fan-outs serving this cluster (those that ping its syncer)."""
        return self._request(calls.member_list(), timeout)

    def watch_hash(self, key, range_end=None, *, prefix=False, from_key=False, filters=(), start_revision: int,
                   revision: int = 0, keys_only=False, value_prefix=None, value_equals=None,
                   max_value_bytes=None, timeout=None):
        """The stream hash a verified watch (watch(..., verify=True)) of this range and filters,
        started at start_revision, carries in a bookmark at `revision` (0: the current one),
        computed by the syncer from history in bounded pieces (SPEC.md 7.10); root only with
        auth enabled.  keys_only, value_prefix, value_equals, max_value_bytes: the
        watch's (SPEC.md 7.8).  -> WatchHashResponse (hash: 16 bytes, events: how many)."""
        steps = calls.watch_hash(key, range_end, prefix=prefix, from_key=from_key, filters=filters,
                                 start_revision=start_revision, revision=revision, keys_only=keys_only,
                                 value_prefix=value_prefix, value_equals=value_equals,
                                 max_value_bytes=max_value_bytes)
        call = next(steps)
        try:
            while True:
                call = steps.send(self._request(call, timeout))
        except StopIteration as done:
            return done.value

    def hash_kv(self, revision: int = 0, timeout=None) -> HashKVResponse:
        """A hash of the store's history in (compact revision, revision] (0: the current one);
        root only with auth enabled.  SPEC.md "hash_kv"."""
        return self._request(calls.hash_kv(revision), timeout)

    # ------------------------------------------------------------ alarms (etcd's Maintenance.Alarm)
    def alarm_list(self, timeout=None) -> "AlarmResponse":
        """The active alarms (NOSPACE: the DB reached ZWATCH_QUOTA_BACKEND_BYTES).  With auth
        enabled: any authenticated user."""
        return self._request(calls.alarm_list(), timeout)

    def alarm_disarm(self, alarm: str = "", timeout=None) -> "AlarmResponse":
        """Disarm `alarm` ("": every active one, as `etcdctl alarm disarm`); returns the alarms
        that were disarmed.  Root only with auth enabled."""
        return self._request(calls.alarm_disarm(alarm), timeout)

    # ------------------------------------------------------------ defrag, snapshots (etcd's Maintenance)
    def defrag(self, timeout=None) -> DefragResponse:
        """Give the LMDB file's free pages back to the disk: the writer swaps a compacting copy
        in, holding writes meanwhile (SPEC.md "Defrag, snapshots").  Root only with auth enabled."""
        return self._request(calls.defrag(), timeout)

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
        return self._request(calls.lease_grant(ttl, lease_id), timeout)

    def lease_revoke(self, lease, timeout=None) -> Header:
        """Delete every key attached to the lease (one revision) and forget it."""
        return self._request(calls.lease_revoke(lease), timeout)

    def lease_keepalive_once(self, leases, timeout=None) -> dict:
        """Renew leases once: {ID: new TTL}, TTL 0 for a lease that no longer exists."""
        return self._request(calls.lease_keepalive_once(leases), timeout)

    def time_to_live(self, lease, keys: bool = False, timeout=None) -> LeaseTimeToLiveResponse:
        return self._request(calls.time_to_live(lease, keys), timeout)

    def leases(self, timeout=None) -> list[int]:
        """Every lease ID granted (and not yet revoked or expired)."""
        return self._request(calls.leases(), timeout)

    def lease(self, ttl: int, lease_id: int = 0, timeout=None) -> Lease:
        """Grant a lease and keep it alive in the background (lease.py) until revoked; a context manager."""
        return Lease.grant(self, ttl, lease_id, timeout)

    # ------------------------------------------------------------ durable named cursors (SPEC.md 6.2)
    def cursor(self, name: str, key, range_end=None, *, prefix=False, from_key=False, ttl: int = 3600) -> Cursor:
        """A durable named cursor over a key or range (cursor.py): watch() resumes after its
        last commit, commit() advances it; the server holds compaction back at it, for as long
        as it is advanced or refreshed within `ttl` seconds."""
        return Cursor(self, name, key, range_end, prefix=prefix, from_key=from_key, ttl=ttl)

    def cursor_put(self, name: str, key, range_end=None, *, ttl: int, revision: int = 0, prefix=False,
                   from_key=False, timeout=None) -> CursorResponse:
        """Create, advance or refresh a cursor (revision 0: its own, or the current one when new)."""
        return self._request(calls.cursor_put(name, key, range_end, ttl=ttl, revision=revision, prefix=prefix,
                                              from_key=from_key), timeout)

    def cursor_get(self, name: str, timeout=None) -> CursorResponse:
        return self._request(calls.cursor_get(name), timeout)

    def cursor_list(self, timeout=None) -> list[CursorInfo]:
        """Every cursor (with auth: those over a range you may read), with its lag."""
        return self._request(calls.cursor_list(), timeout)

    def cursor_delete(self, name: str, timeout=None) -> CursorResponse:
        return self._request(calls.cursor_delete(name), timeout)

    def lock(self, name, ttl: int = 60) -> Lock:
        """A distributed lock named name (etcd's concurrency.Mutex; concurrency.py)."""
        return Lock(self, name, ttl)

    def election(self, name, ttl: int = 60) -> Election:
        """A leader election named name (etcd's concurrency.Election; concurrency.py)."""
        return Election(self, name, ttl)

    def watch(self, key, range_end=None, *, prefix=False, from_key=False, start_revision=0, prev_kv=False,
              filters=(), progress_notify=False, watch_id=0, fragment=False, timeout=None,
              queue=None, start_time=None, initial_state=False, on_compacted="cancel", verify=False,
              keys_only=False, value_prefix=None, value_equals=None, max_value_bytes=None) -> Watch:
        """Watch a key or range; returns a handle that iterates WatchResponse objects.

        queue: deliver this watch's responses into an object with put() (e.g. a SimpleQueue)
        shared by many watches instead of the handle's own queue.  Watches that share a queue
        get ONE response per frame for all of them (response.watch_ids lists them; the events
        are identical), which costs the client nothing per watcher: the way to hold thousands
        of watches in one process.  The handle's own get()/iteration is then unused; the end
        of a watch is signalled by a canceled response.

        start_time: watch from the first revision committed at or after this time (a datetime,
        naive = local, or Unix seconds) instead of start_revision; resolved once, here, so the
        watch then resumes by revision like any other.  Raises Compacted (older than the
        retained history) or FutureRevision (later than the server's clock).
        initial_state: the range's current kvs first (responses with ``initial_state``, at one
        revision R), then ``state_complete`` at R, then every change after R (SPEC.md section
        7.7).  on_compacted: "cancel" (etcd's behaviour), "resync" (a ``reset`` response, the
        range's state at a revision >= the compact revision, ``state_complete``, changes) or
        "digest" (as resync, but the state resends only kvs changed since the watch's last
        revision and names the unchanged keys: ``unchanged_keys``).
        verify: a verified stream (SPEC.md 7.10): each bookmark (progress notification) carries
        the server's hash of the events it sent, which the client checks against the events it
        delivered; on a mismatch the watch ends with zwatch.StreamDiverged (a gap, a duplicate
        or a changed event), named in its error.
        keys_only: events without values (kv.value and prev_kv.value are b"").  value_prefix /
        value_equals / max_value_bytes: deliver only the PUTs whose value starts with / equals /
        is at most that long (all given must hold); DELETEs always come (SPEC.md 7.8).
        """
        if start_time is not None:
            if start_revision:
                raise errors.InvalidArgument("watch: start_revision and start_time are exclusive")
            start_revision = timeref.start_revision_at(self.revision_at_time(start_time, timeout), start_time)
        body = range_body(key, range_end, prefix=prefix, from_key=from_key)     # key, range_end as get's
        body.update({"start_revision": start_revision, "prev_kv": prev_kv, "filters": list(filters),
                     "progress_notify": progress_notify, "fragment": fragment})
        body.update(state_options(initial_state, on_compacted))
        if verify:
            body["verify"] = True
        # keys_only / value predicate (SPEC.md 7.8): kept in the body, so a resume re-creates the
        # same filtered watch from last revision + 1.
        body.update(value_filter_fields(keys_only, value_prefix, value_equals, max_value_bytes))
        handle = self._register_watch(body, watch_id, lambda wid: Watch(self, wid, body, queue))
        try:
            created = self._call("watch_create", body, timeout)
        except ZwatchError:
            with self._lock:
                self._watches.pop(handle.watch_id, None)
            raise
        self._watch_created(handle, created)
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
        return self._request(calls.request_progress(), timeout)

    def revision_at_time(self, when, timeout=None) -> timeref.RevisionAtTime:
        """The first revision committed at or after `when` (a datetime, naive = local, or Unix
        seconds), with the compact revision and whether the answer is usable (SPEC.md
        "revision_at_time")."""
        return self._request(calls.revision_at_time(when), timeout)

    def watch_progress(self, watch_id: int, timeout=None) -> int:
        """One watch's own progress, by id (e.g. one of add_watch_callback's): Watch.request_progress."""
        return self._request(calls.watch_progress(watch_id), timeout)

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._callbacks.close()
        self._wake()
        self._thread.join(timeout=2)
        self.lease_keeper.stop()     # no revoke: an abandoned lease expires at the server (etcd)
        self._close_watches()
        self._wake_tx.close()
        if self._direct is not None:
            self._direct.close()
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
        deadline = self._deadline(timeout)
        while True:
            try:
                return self._call_once(op, body, deadline)
            except Unavailable:
                if not self._may_retry(op, deadline):
                    raise
                time.sleep(RETRY_AFTER_S)

    def _call_once(self, op: str, body: dict, deadline: float):
        if self._direct is not None and op in DIRECT_OPS:
            result = self._direct.call(op, body, deadline)
            if result is not FALLBACK:
                return result
        timeout = max(0.0, deadline - time.monotonic())
        p = self._submit(op, body, deadline)
        self._wake()
        if not p.event.wait(timeout + 1.0):
            with self._lock:
                self._pending.pop(p.req_id, None)
            raise Unavailable(f"{op}: no answer within {timeout}s")
        return self._outcome(p)

    def _request(self, call: calls.Call, timeout=None):
        """A calls.py request, answered: its typed response."""
        t = timeout if timeout is not None else (call.timeout or self.timeout)
        return call.parse(self._call(call.op, call.body, t), self)

    def _cancel_watch(self, w: Watch, timeout=None):
        try:
            self._call("watch_cancel", {"watch_id": w.watch_id}, timeout)
        except errors.InvalidArgument:
            pass  # already gone on the server
        finally:
            self._watch_canceled(w)
