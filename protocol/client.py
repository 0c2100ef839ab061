"""The Python client binding: ``from zwatch import Client``.

One background I/O thread owns the ZeroMQ socket (sockets are not thread-safe); application
threads hand it encoded requests through a queue and wait on a per-request slot.  The thread
sends heartbeats, notices a dead or silent fan-out (no message for ``3 x heartbeat``) and
moves to the next endpoint, where it re-creates every watch from
``max(last event revision, last progress revision) + 1`` with its original options, so the
application sees one continuous stream.

Retries: reads (get, status) are re-sent transparently after a failover.  Writes are never
re-sent blindly: a write whose reply was lost may or may not have been applied, so the caller
gets UNAVAILABLE and decides (e.g. a txn comparing mod_revision makes a retry safe).
"""
from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import msgpack
import zmq

from . import errors, messages, settings
from .errors import Unavailable, ZwatchError
from .limits import PROTOCOL_VERSION

DEFAULT_ENDPOINT = settings.default("ZWATCH_ENDPOINTS")[0]
_READ_OPS = frozenset({"range", "status", "watch_progress"})
_ACK_EVERY = 256 * 1024  # well inside the fan-out's session window (8 MiB by default)

log = logging.getLogger("zwatch.client")


def _b(x) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"keys and values are bytes or str, not {type(x).__name__}")


def endpoints_from_env(endpoints=None) -> list[str]:
    if endpoints is None:
        endpoints = settings.get("ZWATCH_ENDPOINTS")
    if isinstance(endpoints, str):
        endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
    out = []
    for e in endpoints:
        out.append(e if "://" in e else f"tcp://{e}")
    if not out:
        raise ValueError("no endpoints given")
    return out


# ---------------------------------------------------------------- typed responses
@dataclass(slots=True)
class Header:
    revision: int = 0


@dataclass(slots=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0

    @classmethod
    def from_wire(cls, d: dict) -> "KeyValue":
        return cls(d["key"], d.get("create_revision", 0), d.get("mod_revision", 0), d.get("version", 0),
                   d.get("value", b""), d.get("lease", 0))

    @classmethod
    def from_list(cls, kv: list) -> "KeyValue":
        return cls(kv[0], kv[1], kv[2], kv[3], kv[4], kv[5])


@dataclass(slots=True)
class RangeResponse:
    header: Header
    kvs: list
    more: bool = False
    count: int = 0


@dataclass(slots=True)
class PutResponse:
    header: Header
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class DeleteRangeResponse:
    header: Header
    deleted: int = 0
    prev_kvs: list = field(default_factory=list)


@dataclass(slots=True)
class TxnResponse:
    header: Header
    succeeded: bool
    responses: list   # RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse


@dataclass(slots=True)
class CompactResponse:
    header: Header


@dataclass(slots=True)
class StatusResponse:
    header: Header
    version: str = ""
    protocol_version: int = 0
    compact_revision: int = 0
    db_size: int = 0
    endpoint: str = ""


@dataclass(slots=True)
class Event:
    type: str            # "PUT" | "DELETE"
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class WatchResponse:
    watch_id: int
    header: Header
    events: list = field(default_factory=list)
    created: bool = False
    canceled: bool = False
    cancel_reason: str = ""
    compact_revision: int = 0
    fragment: bool = False
    # Set on responses delivered to a shared queue (watch(..., queue=q)): every watch of that
    # queue this response is for.  The events are the same for each of them.
    watch_ids: list | None = None

    @property
    def is_progress_notify(self) -> bool:
        return not self.events and not self.created and not self.canceled


def _hdr(body) -> Header:
    return Header(body.get("header", {}).get("revision", 0))


def _range_resp(b) -> RangeResponse:
    return RangeResponse(_hdr(b), [KeyValue.from_wire(kv) for kv in b.get("kvs", [])], b.get("more", False),
                         b.get("count", 0))


def _put_resp(b) -> PutResponse:
    pkv = b.get("prev_kv")
    return PutResponse(_hdr(b), KeyValue.from_wire(pkv) if pkv else None)


def _del_resp(b) -> DeleteRangeResponse:
    return DeleteRangeResponse(_hdr(b), b.get("deleted", 0), [KeyValue.from_wire(kv) for kv in b.get("prev_kvs", [])])


def _txn_resp(b) -> TxnResponse:
    out = []
    for r in b.get("responses", []):
        (kind, body), = r.items()
        out.append({"response_range": _range_resp, "response_put": _put_resp,
                    "response_delete_range": _del_resp, "response_txn": _txn_resp}[kind](body))
    return TxnResponse(_hdr(b), b.get("succeeded", False), out)


# ---------------------------------------------------------------- txn builders (python-etcd3 style)
class _Target:
    target = ""
    field = ""

    def __init__(self, key, range_end=None):
        self.key = _b(key)
        self.range_end = _b(range_end) if range_end is not None else b""

    def _cmp(self, result, value):
        if self.target == "VALUE":
            value = _b(value)
        return {"key": self.key, "range_end": self.range_end, "target": self.target, "result": result,
                self.field: value}

    def __eq__(self, other):
        return self._cmp("EQUAL", other)

    def __ne__(self, other):
        return self._cmp("NOT_EQUAL", other)

    def __lt__(self, other):
        return self._cmp("LESS", other)

    def __gt__(self, other):
        return self._cmp("GREATER", other)

    __hash__ = None


class Value(_Target):
    target, field = "VALUE", "value"


class Version(_Target):
    target, field = "VERSION", "version"


class CreateRevision(_Target):
    target, field = "CREATE", "create_revision"


class ModRevision(_Target):
    target, field = "MOD", "mod_revision"


def _range_body(key, range_end=None, *, prefix=False, from_key=False, revision=0, limit=0, keys_only=False,
                count_only=False, sort_order="NONE", sort_target="KEY") -> dict:
    key = _b(key)
    body = {"key": key}
    if prefix:
        body["range_end"] = messages.prefix_end(key)
    elif from_key:
        body["range_end"] = b"\x00"
    elif range_end is not None:
        body["range_end"] = _b(range_end)
    for name, v, default in (("revision", revision, 0), ("limit", limit, 0), ("keys_only", keys_only, False),
                             ("count_only", count_only, False), ("sort_order", sort_order, "NONE"),
                             ("sort_target", sort_target, "KEY")):
        if v != default:
            body[name] = v
    return body


def Get(key, range_end=None, **kw) -> dict:
    return {"request_range": _range_body(key, range_end, **kw)}


def Put(key, value, *, prev_kv=False) -> dict:
    return {"request_put": {"key": _b(key), "value": _b(value), "prev_kv": prev_kv}}


def Delete(key, range_end=None, *, prefix=False, from_key=False, prev_kv=False) -> dict:
    body = _range_body(key, range_end, prefix=prefix, from_key=from_key)
    body["prev_kv"] = prev_kv
    return {"request_delete_range": body}


def Txn(compare=(), success=(), failure=()) -> dict:
    return {"request_txn": {"compare": list(compare), "success": list(success), "failure": list(failure)}}


# ---------------------------------------------------------------- plumbing
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
        self.queue = shared_queue if self.shared else queue.SimpleQueue()
        self.last_revision = 0                # max(last event revision, last progress revision)
        self.duplicates_dropped = 0           # events at or below last_revision the client dropped
        self.canceled = False
        self.cancel_reason = ""
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
        """The next response; None once the watch is over and drained.  Raises queue.Empty on timeout."""
        if self.canceled and self.queue.empty():
            return None
        item = self.queue.get(timeout=timeout) if timeout is not None else self.queue.get()
        if item is None:
            return None
        return item

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


_unpack_opts = dict(raw=False, strict_map_key=False)


class Client:
    def __init__(self, endpoints=None, timeout: float = 5.0, heartbeat: float = 1.0, name: str | None = None):
        self.endpoints = endpoints_from_env(endpoints)
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
        self._resume_reqs: dict[int, Watch] = {}   # req_id of a resume create -> its watch
        self._resume_pending = False                # some watch waits to be re-created
        self._closed = False
        self._connected = threading.Event()
        self.endpoint = None
        self.session_info: dict = {}
        self.failovers = 0
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
            count_only=False, sort_order="NONE", sort_target="KEY", timeout=None) -> RangeResponse:
        body = _range_body(key, range_end, prefix=prefix, from_key=from_key, revision=revision, limit=limit,
                           keys_only=keys_only, count_only=count_only, sort_order=sort_order,
                           sort_target=sort_target)
        return _range_resp(self._call("range", body, timeout))

    def put(self, key, value, *, prev_kv=False, timeout=None) -> PutResponse:
        body = {"key": _b(key), "value": _b(value)}
        if prev_kv:
            body["prev_kv"] = True
        return _put_resp(self._call("put", body, timeout))

    def delete(self, key, range_end=None, *, prefix=False, from_key=False, prev_kv=False,
               timeout=None) -> DeleteRangeResponse:
        body = _range_body(key, range_end, prefix=prefix, from_key=from_key)
        if prev_kv:
            body["prev_kv"] = True
        return _del_resp(self._call("delete_range", body, timeout))

    def txn(self, compare=(), success=(), failure=(), timeout=None) -> TxnResponse:
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        return _txn_resp(self._call("txn", body, timeout))

    def compact(self, revision: int, physical: bool = False, timeout=None) -> CompactResponse:
        return CompactResponse(_hdr(self._call("compact", {"revision": revision, "physical": physical}, timeout)))

    def status(self, timeout=None) -> StatusResponse:
        b = self._call("status", {}, timeout)
        return StatusResponse(_hdr(b), b.get("version", ""), b.get("protocol_version", 0),
                              b.get("compact_revision", 0), b.get("db_size", 0), self.endpoint or "")

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
        key = _b(key)
        body = {"key": key, "start_revision": start_revision, "prev_kv": prev_kv, "filters": list(filters),
                "progress_notify": progress_notify, "fragment": fragment}
        if prefix:
            body["range_end"] = messages.prefix_end(key)
        elif from_key:
            body["range_end"] = b"\x00"
        elif range_end is not None:
            body["range_end"] = _b(range_end)
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

    def request_progress(self, timeout=None) -> int:
        """Ask for a progress notification on every watch; returns the revision it claims."""
        return _hdr(self._call("watch_progress", {}, timeout)).revision

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._thread.join(timeout=2)
        for w in list(self._watches.values()):
            w.canceled = True
            if not w.shared:
                w.queue.put(None)
        self._wake_tx.close()
        self._ctx.term() if not self._thread.is_alive() else None

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
                if op not in _READ_OPS or time.monotonic() + 0.1 >= deadline:
                    raise
                time.sleep(0.1)

    def _call_once(self, op: str, body: dict, deadline: float):
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
            if not w.canceled:
                w.canceled = True
                w.cancel_reason = w.cancel_reason or "canceled by client"
                if w.shared:   # a shared queue outlives its watches: say which one ended
                    w.queue.put(WatchResponse(w.watch_id, Header(w.last_revision), canceled=True,
                                              cancel_reason=w.cancel_reason, watch_ids=[w.watch_id]))
                else:
                    w.queue.put(None)

    # ------------------------------------------------------------ I/O thread
    def _io_main(self):
        ep_index = 0
        sock = None
        poller = zmq.Poller()
        poller.register(self._wake_rx, zmq.POLLIN)
        state = "connect"
        hello_id = None
        last_heard = last_ping = last_resume = 0.0
        hb = self.heartbeat
        while not self._closed:
            now = time.monotonic()
            if state == "connect":
                if sock is not None:
                    poller.unregister(sock)
                    sock.close(0)
                self.endpoint = self.endpoints[ep_index % len(self.endpoints)]
                ep_index += 1
                sock = self._ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVHWM, 0)  # never drop what the fan-out sent us
                sock.setsockopt(zmq.IMMEDIATE, 1)
                sock.connect(self.endpoint)
                poller.register(sock, zmq.POLLIN)
                hello_id = next(self._ids)
                received = acked = 0  # flow-control counters are per session
                hello = messages.encode_request("hello", hello_id, {"version": PROTOCOL_VERSION, "client": self.name})
                state = "hello"
                hello_sent_at = 0.0
                last_heard = now
            if state == "hello" and now - hello_sent_at > hb:
                try:
                    sock.send(hello, zmq.NOBLOCK)
                    hello_sent_at = now
                except zmq.Again:
                    pass  # not connected yet (IMMEDIATE): poll briefly and try again
            if state == "ready":
                if self._resume_pending and now - last_resume >= 0.1:
                    last_resume = now
                    self._resume_watches(sock)
                self._send_queued(sock)
                if now - last_ping >= hb:
                    last_ping = now
                    try:
                        sock.send(messages.encode_request("ping", next(self._ids), {}), zmq.NOBLOCK)
                        if received != acked:
                            sock.send(messages.encode_request("ack", 0, {"bytes": received}), zmq.NOBLOCK)
                            acked = received
                    except zmq.Again:
                        pass
            self._expire_pending(now, state == "ready")
            self._router.flush_log(now)
            if now - last_heard > 3 * hb:
                # Dead or silent fan-out: move on (a single endpoint reconnects to itself).
                if state == "ready":
                    self._connected.clear()
                    self._lost_connection()
                    self.failovers += 1
                state = "connect"
                continue
            wait_ms = 5 if state == "hello" and hello_sent_at == 0.0 else int(hb * 250)
            if state == "ready" and received - acked >= _ACK_EVERY:
                try:
                    sock.send(messages.encode_request("ack", 0, {"bytes": received}), zmq.NOBLOCK)
                    acked = received
                except zmq.Again:
                    pass
            for s, _ in poller.poll(wait_ms):
                if s is self._wake_rx:
                    while True:
                        try:
                            self._wake_rx.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                    continue
                for _ in range(1000):
                    try:
                        raw = sock.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    last_heard = time.monotonic()
                    received += len(raw)
                    try:
                        msg = msgpack.unpackb(raw, **_unpack_opts)
                        kind, req_id, body = msg
                    except Exception:
                        continue
                    if kind == "w":
                        self._on_watch_responses(body)
                    elif state == "hello" and req_id == hello_id:
                        if kind == "ok":
                            self.session_info = body
                            state = "ready"
                            self._resume_watches(sock)
                            self._connected.set()
                        else:
                            state = "connect"  # refused (version, limits): try the next endpoint
                            break
                    elif kind == "err" and isinstance(body, dict) and body.get("reason") == "NO_SESSION":
                        # The fan-out restarted under the same address: open a new session.
                        self._lost_connection(resend_all=True, req_id=req_id)
                        state = "connect"
                        ep_index -= 1
                        break
                    elif req_id in self._resume_reqs:
                        self._resumed(self._resume_reqs.pop(req_id), kind, body)
                    elif kind in ("ok", "err"):
                        self._complete(req_id, kind, body)
        if sock is not None:
            if state == "ready":
                # Free the session (and its watches) at once instead of after the idle timeout.
                try:
                    sock.send(messages.encode_request("bye", next(self._ids), {}), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
            sock.close(200)
        self._wake_rx.close()
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for p in pending:
            p.error = Unavailable("client closed")
            p.event.set()

    def _send_queued(self, sock):
        while self._outq:
            with self._lock:
                if not self._outq:
                    break
                p = self._outq[0]
            try:
                sock.send(p.frame, zmq.NOBLOCK)
            except zmq.Again:
                return
            with self._lock:
                self._outq.popleft()

    def _expire_pending(self, now, ready):
        expired = []
        with self._lock:
            for req_id, p in list(self._pending.items()):
                if now > p.deadline:
                    expired.append(self._pending.pop(req_id))
            if expired:
                gone = set(id(p) for p in expired)
                self._outq = deque(p for p in self._outq if id(p) not in gone)
        for p in expired:
            p.error = Unavailable(f"{p.op}: no answer within the timeout" + ("" if ready else " (no fan-out reachable)"))
            p.event.set()

    def _lost_connection(self, resend_all=False, req_id=None):
        """Failover: reads and watch creates go again on the next session; writes fail UNAVAILABLE."""
        with self._lock:
            again, failed = [], []
            queued = set(id(p) for p in self._outq)
            for p in self._pending.values():
                if id(p) in queued:
                    continue
                if p.op in _READ_OPS or p.op in ("watch_create", "watch_cancel") or (resend_all and p.req_id == req_id):
                    again.append(p)
                else:
                    failed.append(p)
            for p in failed:
                self._pending.pop(p.req_id, None)
            self._outq.extendleft(reversed(again))
            for w in self._watches.values():
                w._resuming = True
                w._live = False
        for p in failed:
            p.error = Unavailable(f"{p.op}: connection to the fan-out lost before the reply; "
                                  "the write may or may not have been applied")
            p.event.set()

    def _resume_watches(self, sock):
        self._resume_pending = False
        with self._lock:
            # A watch whose own create is still waiting for its reply is re-sent as it was
            # (queued by _lost_connection); the others resume from their last revision + 1.
            creating = {p.watch_id for p in self._pending.values() if p.op == "watch_create"}
            current = list(self._watches.values())
        handles = []
        for w in current:
            if w.watch_id in creating:
                w._resuming = False      # its own create, re-sent as it was, brings it back
            elif w._resuming and not w.canceled:
                handles.append(w)
        for w in handles:
            w._resuming = False
            w._fragments = []  # a revision cut by the failover is sent again whole
            body = dict(w.body)
            body["start_revision"] = w._start_revision()
            req_id = next(self._ids)
            self._resume_reqs[req_id] = w
            try:
                sock.send(messages.encode_request("watch_create", req_id, body), zmq.NOBLOCK)
            except zmq.Again:
                w._resuming = True
                self._resume_pending = True

    def _resumed(self, w: Watch, kind, body):
        """The answer to a watch re-created after a failover."""
        if kind == "ok":
            w._live = True
            return
        if w.canceled:
            return
        err = ZwatchError.from_wire(body)
        if err.code == errors.UNAVAILABLE:
            w._resuming = True              # the new fan-out is not ready yet: try again shortly
            self._resume_pending = True
            return
        w.canceled = True
        w.cancel_reason = f"resume failed: {err}"
        w.queue.put(WatchResponse(w.watch_id, Header(w.last_revision), canceled=True,
                                  cancel_reason=w.cancel_reason, watch_ids=[w.watch_id] if w.shared else None))
        if not w.shared:
            w.queue.put(None)
        with self._lock:
            self._watches.pop(w.watch_id, None)

    def _complete(self, req_id, kind, body):
        with self._lock:
            p = self._pending.pop(req_id, None)
        if p is None:
            return  # a late reply after a timeout
        if kind == "ok":
            if p.op == "watch_create":
                w = self._watches.get(p.watch_id)
                if w is not None:
                    w._live = True
            p.result = body
        else:
            p.error = ZwatchError.from_wire(body)
        p.event.set()

    def _on_watch_responses(self, responses):
        self._router.on_watch_responses(responses)


class WatchRouter:
    """Turns the fan-out's watch responses into WatchResponse objects on the watches' queues.

    It also drops, as a second line of defence (issue #8), any event at or below the last
    revision a watch already delivered (``Watch.last_revision``): the fan-out must never send
    one (the fix is on the server), but should it, the application still sees each revision
    once.  Drops are counted per watch and per client (``duplicates_dropped``: one per event
    per watch it was meant for) and logged on the "zwatch.client" logger at WARNING, at most
    one line per ``LOG_EVERY`` seconds with the count since the previous line.

    One revision's events always arrive in one response (or in consecutive fragments joined
    here), so comparing each event with the watch's last revision *before* the response is
    exact: a revision is either wholly new or wholly a duplicate.
    """

    LOG_EVERY = 1.0

    def __init__(self, watches: dict, lock, name: str = "", clock=time.monotonic):
        self.watches = watches          # the client's watch table (shared, mutated in place)
        self.lock = lock                # guards the table against the application threads
        self.name = name
        self.clock = clock
        self.duplicates_dropped = 0
        self._unlogged = 0              # dropped since the last log line
        self._logged_at: float | None = None

    def on_watch_responses(self, responses):
        watches = self.watches
        for r in responses:
            if isinstance(r, dict):  # control: canceled (created comes as the create's reply)
                self._on_control(r)
                continue
            ids, rev, evs, fragment = r
            events = [Event(messages.EVENT_TYPE_NAMES[e[0]], KeyValue.from_list(e[1]),
                            KeyValue.from_list(e[2]) if len(e) > 2 and e[2] else None) for e in evs]
            if ids == [-1]:
                with self.lock:
                    targets = [w for w in watches.values() if w._live]
            else:
                targets = [watches.get(i) for i in ids]
            # Shared-queue watches get one response per (queue, last revision): watches of one
            # queue that stand at different revisions would not drop the same events.
            shared: dict[tuple, tuple] = {}
            for w in targets:
                if w is None or w.canceled:
                    continue
                if w.shared and not fragment and not w._fragments:
                    group = shared.get((id(w.queue), w.last_revision))
                    if group is None:
                        shared[(id(w.queue), w.last_revision)] = (w.queue, w.last_revision, [w])
                    else:
                        group[2].append(w)
                    continue
                fresh = self._fresh(events, w.last_revision, (w,))
                if fragment:
                    w._fragments.extend(fresh)
                    continue
                if w._fragments:
                    events_w = w._fragments + fresh
                    w._fragments = []
                else:
                    events_w = fresh
                if events and not events_w:
                    continue  # nothing but duplicates: not a progress notification either
                top = events_w[-1].kv.mod_revision if events_w else rev
                if top > w.last_revision:
                    w.last_revision = top
                w.queue.put(WatchResponse(w.watch_id, Header(rev), events_w,
                                          watch_ids=[w.watch_id] if w.shared else None))
            for q, last_revision, group in shared.values():
                fresh = self._fresh(events, last_revision, group)
                if events and not fresh:
                    continue
                top = fresh[-1].kv.mod_revision if fresh else rev
                for w in group:
                    if top > w.last_revision:
                        w.last_revision = top
                q.put(WatchResponse(group[0].watch_id, Header(rev), fresh, watch_ids=[w.watch_id for w in group]))

    def _fresh(self, events: list, last_revision: int, for_watches) -> list:
        """The events above last_revision (the list itself when none is a duplicate)."""
        # Events of a response are in revision order: the first one decides the common case.
        if not events or events[0].kv.mod_revision > last_revision:
            return events
        fresh = [e for e in events if e.kv.mod_revision > last_revision]
        dropped = len(events) - len(fresh)
        for w in for_watches:
            w.duplicates_dropped += dropped
        self.duplicates_dropped += dropped * len(for_watches)
        self._unlogged += dropped * len(for_watches)
        self.flush_log()
        return fresh

    def flush_log(self, now: float | None = None):
        """Log the drops not logged yet, unless a line went out less than LOG_EVERY ago."""
        if not self._unlogged:
            return
        now = self.clock() if now is None else now
        if self._logged_at is not None and now - self._logged_at < self.LOG_EVERY:
            return
        log.warning("watch.duplicates_dropped client=%s count=%d total=%d", self.name, self._unlogged,
                    self.duplicates_dropped)
        self._logged_at = now
        self._unlogged = 0

    def _on_control(self, r: dict):
        w = self.watches.get(r.get("watch_id"))
        if w is None or not r.get("canceled"):
            return
        w.canceled = True
        w.cancel_reason = r.get("cancel_reason", "")
        w.compact_revision = r.get("compact_revision", 0)
        w.queue.put(WatchResponse(w.watch_id, Header(r.get("header", {}).get("revision", 0)),
                                  canceled=True, cancel_reason=w.cancel_reason,
                                  compact_revision=w.compact_revision,
                                  watch_ids=[w.watch_id] if w.shared else None))
        if not w.shared:
            w.queue.put(None)
        with self.lock:
            self.watches.pop(w.watch_id, None)
