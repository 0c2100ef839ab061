"""Writes straight to the writer (SPEC.md §3, "Direct writes"), from the calling thread.

A fan-out whose hello reply carries ``writer: {endpoint, instance}`` lets the client send its
`put`, `delete_range` and `txn` requests to the writer's client endpoint: one process hop less
than through the fan-out.  Each application thread that writes gets a DEALER of its own and
does the round trip itself (send, poll, receive), so a call crosses no thread either: the
client's I/O thread is not involved.  Everything else (watches, reads, leases, auth, and any
write while the direct path is not usable) goes through the session as before.

A thread's socket is used only after the writer, pinged on it, named the instance the hello
named: a loopback address that reaches some other writer is never written to.  Falling back
is always safe when the writer refused the request (not connected yet, a failed check, or
UNAVAILABLE reason DIRECT_OFF while auth is enabled: nothing was applied).  A request sent but
not answered within its timeout raises UNAVAILABLE like a write lost with a fan-out: its
outcome is unknown, it is not resent.
"""
from __future__ import annotations

import threading
import time

import zmq

from .. import errors, messages
from ..errors import Unavailable, ZwatchError

DIRECT_OPS = frozenset({"put", "delete_range", "txn"})
CHECK_TIMEOUT_S = 1.0     # the instance check's ping on a new socket
MAX_SOCKETS = 64          # threads beyond this many use the session path
FALLBACK = object()       # _call's "not sent: use the session" answer


class _ThreadSocket:
    __slots__ = ("sock", "endpoint", "instance")

    def __init__(self, sock, endpoint, instance):
        self.sock, self.endpoint, self.instance = sock, endpoint, instance


class _DirectPath:
    """What both clients' direct paths decide alike: the offer, whether a write may take the
    path, and what a reply means (the write's result, its error, or a refusal to fall back on)."""

    def __init__(self):
        self.target: tuple[str, str] | None = None   # (endpoint, instance) from the last hello
        self.refused: set[tuple[str, str]] = set()     # targets whose check failed or that said DIRECT_OFF
        self.closed = False
        self.sent = 0                                  # writes that went the direct way
        self.fallbacks = 0                             # ... that were offered to it and went the session's

    def offered(self, hello: dict):
        """A hello reply: its `writer` field (absent: the direct path is off)."""
        w = hello.get("writer") if isinstance(hello, dict) else None
        if isinstance(w, dict) and isinstance(w.get("endpoint"), str) and isinstance(w.get("instance"), str):
            self.target = (w["endpoint"], w["instance"])
        else:
            self.target = None

    def _usable(self, op: str):
        """The target a write `op` may be sent to now, or None (it goes the session's way)."""
        target = self.target
        if op not in DIRECT_OPS or target is None or target in self.refused or self.closed:
            return None
        return target

    def _settle(self, target, kind: str, reply):
        """The reply of a write sent on the direct path: its body; raises its error; FALLBACK
        when the writer refused it without applying it (DIRECT_OFF: auth is enabled, and this
        target is done with)."""
        if kind == "ok":
            self.sent += 1
            return reply
        err = ZwatchError.from_wire(reply)
        if err.code == errors.UNAVAILABLE and err.details.get("reason") == "DIRECT_OFF":
            self.refused.add(target)
            self.fallbacks += 1
            return FALLBACK
        self.sent += 1
        raise err


class DirectWrites(_DirectPath):
    """The direct path of one client: per-thread sockets to the writer its fan-out named."""

    def __init__(self, ctx: zmq.Context, ids, curve=None):
        super().__init__()
        self._ctx, self._ids, self._curve = ctx, ids, curve
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sockets: list[zmq.Socket] = []

    def call(self, op: str, body: dict, deadline: float):
        """The write's reply body; raises its error; FALLBACK when it was not sent."""
        target = self._usable(op)
        if target is None:
            return FALLBACK
        ts = self._socket(target, deadline)
        if ts is None:
            self.fallbacks += 1
            return FALLBACK
        req_id = next(self._ids)
        try:
            ts.sock.send(messages.encode_request(op, req_id, body), zmq.NOBLOCK)
        except zmq.Again:                    # the writer is not connected (IMMEDIATE): nothing sent
            self.fallbacks += 1
            return FALLBACK
        kind, reply = self._await(ts.sock, req_id, deadline, op)
        return self._settle(target, kind, reply)

    def _await(self, sock, req_id: int, deadline: float, op: str):
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise Unavailable(f"{op}: no answer from the writer in time (its outcome is unknown)")
            if not sock.poll(max(1, int(left * 1000))):
                continue
            try:
                kind, rid, body = messages.decode_server_frame(sock.recv())
            except ZwatchError:
                continue
            if rid == req_id:                # else: a late reply to a call that timed out
                return kind, body

    def _socket(self, target, deadline) -> _ThreadSocket | None:
        ts = getattr(self._local, "ts", None)
        if ts is not None and (ts.endpoint, ts.instance) == target:
            return ts
        if ts is not None:                   # the hello named another writer: start over
            self._drop(ts)
            self._local.ts = None
        with self._lock:
            if len(self._sockets) >= MAX_SOCKETS:
                return None
            sock = self._ctx.socket(zmq.DEALER)
            self._sockets.append(sock)
        if self._curve is not None:
            self._curve.apply(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(target[0])
        ts = _ThreadSocket(sock, target[0], target[1])
        if not self._check(ts, min(deadline, time.monotonic() + CHECK_TIMEOUT_S)):
            self.refused.add(target)
            self._drop(ts)
            return None
        self._local.ts = ts
        return ts

    def _check(self, ts: _ThreadSocket, deadline: float) -> bool:
        """Ping on the new socket: is the writer there the instance the hello named?"""
        req_id = next(self._ids)
        frame = messages.encode_request("ping", req_id, {})
        while True:                          # IMMEDIATE: the send waits for the connection
            try:
                ts.sock.send(frame, zmq.NOBLOCK)
                break
            except zmq.Again:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)
        try:
            kind, body = self._await(ts.sock, req_id, deadline, "ping")
        except Unavailable:
            return False
        return kind == "pong" and isinstance(body, dict) and body.get("instance") == ts.instance

    def _drop(self, ts: _ThreadSocket):
        with self._lock:
            if ts.sock in self._sockets:
                self._sockets.remove(ts.sock)
        ts.sock.close(linger=0)

    def close(self):
        """Close every thread's socket (the client is closing: before its context ends)."""
        self.closed = True
        with self._lock:
            socks, self._sockets = self._sockets, []
        for sock in socks:
            sock.close(linger=0)


class AsyncDirectWrites(_DirectPath):
    """The asyncio client's direct path: one DEALER to the writer on the client's event loop;
    concurrent writes share it (pipelined), a reader task hands each reply to its awaiting call.
    Same offer, instance check and fallbacks as DirectWrites."""

    def __init__(self, ctx: zmq.Context, ids, loop):
        super().__init__()
        self._ctx, self._ids, self._loop = ctx, ids, loop
        self._sock = None                     # zmq.asyncio socket, for self._sock_target
        self._raw = None                      # the plain socket under it
        self._checking = None                 # a new socket while its instance is checked
        self._sock_target = None
        self._waiting: dict = {}              # req_id -> future of (kind, body)
        self._reader = None
        self._opening = None                  # asyncio.Lock, made on the loop

    async def call(self, op: str, body: dict, deadline: float):
        import asyncio
        target = self._usable(op)
        if target is None:
            return FALLBACK
        sock = await self._socket(target, deadline)
        if sock is None:
            self.fallbacks += 1
            return FALLBACK
        req_id = next(self._ids)
        try:
            kind, reply = await self._ask(messages.encode_request(op, req_id, body), req_id, deadline)
        except zmq.Again:
            self.fallbacks += 1
            return FALLBACK
        except asyncio.TimeoutError:
            raise Unavailable(f"{op}: no answer from the writer in time (its outcome is unknown)") from None
        return self._settle(target, kind, reply)

    async def _ask(self, frame: bytes, req_id: int, deadline: float):
        import asyncio
        fut = self._loop.create_future()
        self._waiting[req_id] = fut
        try:
            self._raw.send(frame, zmq.NOBLOCK)    # zmq.Again: not connected (IMMEDIATE), nothing sent
            return await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
        finally:
            self._waiting.pop(req_id, None)

    async def _socket(self, target, deadline):
        import asyncio
        import zmq.asyncio
        if self._sock is not None and self._sock_target == target:
            return self._sock
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._sock is not None and self._sock_target == target:
                return self._sock
            self._drop()
            if target in self.refused or self.closed:
                return None
            raw = self._ctx.socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.setsockopt(zmq.IMMEDIATE, 1)
            raw.connect(target[0])
            sock = zmq.asyncio.Socket.from_socket(raw)
            # Sends go through the plain socket (same thread, the loop's): with NOBLOCK it
            # raises zmq.Again at once, where the asyncio wrapper would return a future.
            # Published as self._sock only once checked: a concurrent call must not use it before.
            self._raw = raw
            self._checking = sock
            self._reader = self._loop.create_task(self._read(sock), name="zwatch-aio-direct")
            check_until = min(deadline, time.monotonic() + CHECK_TIMEOUT_S)
            ok = False
            while time.monotonic() < check_until:
                req_id = next(self._ids)
                try:
                    kind, body = await self._ask(messages.encode_request("ping", req_id, {}), req_id, check_until)
                    ok = kind == "pong" and isinstance(body, dict) and body.get("instance") == target[1]
                    break
                except zmq.Again:             # IMMEDIATE: not connected yet
                    await asyncio.sleep(0.002)
                except asyncio.TimeoutError:
                    break
            if not ok:
                self.refused.add(target)
                self._drop()
                return None
            self._sock, self._sock_target, self._checking = sock, target, None
            return sock

    async def _read(self, sock):
        while True:
            raw = await sock.recv()
            try:
                kind, rid, body = messages.decode_server_frame(raw)
            except ZwatchError:
                continue
            fut = self._waiting.get(rid)
            if fut is not None and not fut.done():
                fut.set_result((kind, body))

    def _drop(self):
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        for sock in (self._sock, self._checking):
            if sock is not None:
                sock.close(linger=0)
        self._sock = self._sock_target = self._raw = self._checking = None

    def close(self):
        self.closed = True
        self._drop()
