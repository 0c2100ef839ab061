"""The asyncio client: ``from zwatch.aio import Client``.

    async with zwatch.aio.Client(["tcp://127.0.0.1:2379"]) as c:
        rev = (await c.put("config/a", "1")).header.revision
        async with c.watch("config/", prefix=True, start_revision=rev) as w:
            async for resp in w:
                ...

Same operations, same wire traffic and same guarantees as the sync client, from the same code:
the requests and their typed responses are ``calls.py``'s, the connection state machine,
heartbeats, acknowledgements, failover and watch resume are ``session.SessionIO``'s, the watch
delivery is ``delivery.WatchRouter``'s.  What differs is only how things wait: the I/O loop is a
task on the application's event loop polling pyzmq's asyncio Poller (no thread), a request is an
awaited future, a watch's queue is awaited.  Everything runs on the loop's thread, so the
sync client's locks are never contended.

Backpressure as in the sync client (credit.py): a response is acknowledged to the fan-out once
``async for`` took it, so a slow coroutine becomes flow control, then victims that catch up from
history, never a growing client.

Leases: ``await c.lease(ttl)`` returns a lease kept alive by one task per client (the sync
client's ``KeepAliveSchedule``).  Locks and elections: ``c.lock(name)`` / ``c.election(name)``
run the sync client's algorithm (concurrency.py's steps, written once as generators of effects)
with awaited effects.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import deque

import zmq
import zmq.asyncio

from .. import errors
from ..errors import LeaseNotFound, Unavailable, ZwatchError
from ..limits import MAX_KEEPALIVE_IDS
from . import calls, timeref
from .concurrency import AsyncStepper, ElectionSteps, LockSteps, _observe, arun
from .auth import Credentials
from .builders import endpoints_from_env, range_body, value_filter_fields
from .core import RETRY_AFTER_S, ClientBase, Watch, state_options
from .curve import resolve as resolve_curve
from .direct import DIRECT_OPS, FALLBACK, AsyncDirectWrites
from .lease import RETRY_AFTER, KeepAliveSchedule
from .cursor import AsyncCursor
from .types import WatchResponse


class _Done:
    """A request's completion as the I/O loop signals it (``event.set()``): a future."""
    __slots__ = ("future",)

    def __init__(self, loop):
        self.future = loop.create_future()

    def set(self):
        if not self.future.done():
            self.future.set_result(None)


class AsyncWatchQueue:
    """A watch's responses on the event loop; getting one releases its credit (credit.py)."""

    def __init__(self):
        self._items: deque = deque()
        self._waiter: asyncio.Future | None = None

    def put(self, item, ticket=None):
        if ticket is not None:
            ticket.hold()
        self._items.append((item, ticket))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float | None = None):
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except asyncio.TimeoutError:
                raise TimeoutError("no watch response within the timeout") from None
            finally:
                self._waiter = None
        item, ticket = self._items.popleft()
        if ticket is not None:
            ticket.release()
        return item

    def empty(self) -> bool:
        return not self._items

    def release_all(self):
        items, self._items = self._items, deque((item, None) for item, _ in self._items)
        for _, ticket in items:
            if ticket is not None:
                ticket.release()


class AsyncWatch(Watch):
    """``async for resp in watch``; ``await watch.cancel()``; an async context manager (cancels)."""

    def __init__(self, client, watch_id: int, body: dict):
        super().__init__(client, watch_id, body)
        self.queue = AsyncWatchQueue()

    def __aiter__(self):
        return self

    async def __anext__(self) -> WatchResponse:
        resp = await self.get()
        if resp is None:
            raise StopAsyncIteration
        return resp

    async def get(self, timeout: float | None = None) -> WatchResponse | None:  # type: ignore[override]
        """The next response; None once the watch is over (or its error, as the sync get())."""
        if self.canceled and self.queue.empty():
            return self._over()
        item = await self.queue.get(timeout)
        if item is None:
            return self._over()
        return item

    async def events(self):  # type: ignore[override]
        while True:
            resp = await self.get()
            if resp is None:
                return
            for ev in resp.events:
                yield ev

    async def cancel(self, timeout: float | None = None):  # type: ignore[override]
        if not self.canceled:
            await self.client._cancel_watch(self, timeout)

    async def request_progress(self, timeout: float | None = None) -> int:  # type: ignore[override]
        """As Watch.request_progress: this watch's own progress (SPEC.md section 7.9)."""
        return await self.client.watch_progress(self.watch_id, timeout)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.cancel()


class AsyncLease:
    """A granted lease kept alive by the client's keep-alive task; ``async with`` revokes it."""

    def __init__(self, client: "Client", lease_id: int, ttl: int):
        self.client, self.id, self.ttl, self.alive = client, lease_id, ttl, True

    async def revoke(self, timeout=None):
        self.client._lease_forget(self)
        self.alive = False
        try:
            return await self.client.lease_revoke(self.id, timeout=timeout)
        except LeaseNotFound:
            return None

    async def remaining_ttl(self, timeout=None) -> int:
        return (await self.client.time_to_live(self.id, timeout=timeout)).ttl

    def __int__(self) -> int:
        return self.id

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.revoke()


class AsyncLock(LockSteps):
    """``async with c.lock(name)``: the sync Lock's algorithm (concurrency.LockSteps), awaited."""

    async def acquire(self, timeout: float | None = None) -> bool:
        return await arun(self._acquire(timeout), self.client)

    async def release(self) -> bool:
        return await arun(self._release(), self.client)

    async def is_acquired(self) -> bool:
        return await arun(self._is_acquired(), self.client)

    async def __aenter__(self):
        await self.acquire()
        return self

    async def __aexit__(self, *exc):
        await self.release()


class AsyncObservation:
    """``async for kv in election.observe()``: each leader (and each proclaim), in order."""

    def __init__(self, election: "AsyncElection"):
        self.watch = None
        self.canceled = False
        self._stepper = AsyncStepper(_observe(election, self), election.client)

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._stepper.aemitted()

    async def cancel(self):
        self.canceled = True
        if self.watch is not None:
            await self.watch.cancel()


class AsyncElection(ElectionSteps):
    """The sync Election's algorithm (concurrency.ElectionSteps), awaited."""

    async def campaign(self, value, timeout: float | None = None) -> bool:
        return await arun(self._campaign(value, timeout), self.client)

    async def proclaim(self, value):
        return await arun(self._proclaim(value), self.client)

    async def resign(self):
        return await arun(self._resign(), self.client)

    async def leader(self):
        return await arun(self._leader(), self.client)

    def observe(self) -> AsyncObservation:
        return AsyncObservation(self)


class Client(ClientBase):
    """The asyncio client; create it inside a running event loop (``async with`` or ``await c.close()``)."""

    def __init__(self, endpoints=None, timeout: float = 5.0, heartbeat: float = 1.0, name: str | None = None,
                 user: str | None = None, password: str | None = None, curve_server_key=None,
                 curve_client_key=None, shuffle: bool = True, max_buffered_bytes: int = 0,
                 direct_writes: bool = True):
        self._loop = asyncio.get_running_loop()
        self.endpoints = endpoints_from_env(endpoints)
        self.credentials = Credentials.resolve(user, password)
        self.curve = resolve_curve(curve_server_key, curve_client_key)
        self.login_error: ZwatchError | None = None
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.name = name or f"py-aio-{os.getpid()}"
        self._init_io_state(shuffle, max_buffered_bytes)
        self._ctx = zmq.Context()
        # put/delete/txn straight to the writer when the fan-out offers it (direct.py)
        self._direct = AsyncDirectWrites(self._ctx, self._ids, self._loop) if direct_writes else None
        self._connected = asyncio.Event()
        self._open_wake()
        self._poller = zmq.asyncio.Poller()
        self._async_of: dict = {}           # sync socket -> its asyncio wrapper (polled)
        self._poller.register(self._wrap(self._wake_rx), zmq.POLLIN)
        self._lease_schedule = KeepAliveSchedule()
        self._leases: dict[int, AsyncLease] = {}
        self._lease_task: asyncio.Task | None = None
        self._lease_wake = asyncio.Event()
        self._task = self._loop.create_task(self._io_main_async(), name="zwatch-aio-io")

    # ------------------------------------------------------------ the I/O task
    def _wrap(self, sock):
        a = zmq.asyncio.Socket.from_socket(sock)
        self._async_of[sock] = a
        return a

    def _poll_register(self, sock):
        self._poller.register(self._wrap(sock), zmq.POLLIN)

    def _poll_unregister(self, sock):
        a = self._async_of.pop(sock, None)
        if a is not None:
            self._poller.unregister(a)

    async def _io_main_async(self):
        wake = self._async_of[self._wake_rx]
        try:
            while not self._closed:
                step = self._io_step(time.monotonic())
                if step is None:
                    await asyncio.sleep(0)
                    continue
                wait_ms, read = step
                for s, _ in await self._poller.poll(wait_ms):
                    if s is wake:
                        self._drain_wake()
                    elif read and self._sock is not None and s is self._async_of.get(self._sock):
                        self._receive(self._sock, self._session)
        finally:
            self._io_finish()

    def _wake(self):
        try:
            self._wake_tx.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # ------------------------------------------------------------ requests
    async def _call(self, op: str, body: dict, timeout=None):
        deadline = self._deadline(timeout)
        while True:
            try:
                return await self._call_once(op, body, deadline)
            except Unavailable:
                if not self._may_retry(op, deadline):
                    raise
                await asyncio.sleep(RETRY_AFTER_S)

    async def _call_once(self, op: str, body: dict, deadline: float):
        if self._direct is not None and op in DIRECT_OPS:
            result = await self._direct.call(op, body, deadline)
            if result is not FALLBACK:
                return result
        p = self._submit(op, body, deadline)
        p.event = _Done(self._loop)
        self._wake()
        try:
            await asyncio.wait_for(asyncio.shield(p.event.future), max(0.0, deadline - time.monotonic()) + 1.0)
        except asyncio.TimeoutError:
            self._pending.pop(p.req_id, None)
            raise Unavailable(f"{op}: no answer within the timeout") from None
        return self._outcome(p)

    async def _request(self, call: calls.Call, timeout=None):
        t = timeout if timeout is not None else (call.timeout or self.timeout)
        return call.parse(await self._call(call.op, call.body, t), self)

    # ------------------------------------------------------------ public API (calls.py)
    async def get(self, key, range_end=None, *, timeout=None, at=None, **kw):
        """As Client.get: prefix, from_key, revision, limit, keys_only, count_only, sort_order, ...,
        and at (the state as of a time: timeref.py)."""
        if at is not None:
            if kw.get("revision"):
                raise errors.InvalidArgument("get: revision and at are exclusive")
            answer = await self._request(calls._revision_after(at), timeout)
            kw["revision"] = timeref.read_revision_at(answer, at)
        return await self._request(calls.get(key, range_end, **kw), timeout)

    async def revision_at_time(self, when, timeout=None) -> timeref.RevisionAtTime:
        """As Client.revision_at_time."""
        return await self._request(calls.revision_at_time(when), timeout)

    async def watch_progress(self, watch_id: int, timeout=None) -> int:
        """As Client.watch_progress."""
        return await self._request(calls.watch_progress(watch_id), timeout)

    async def put(self, key, value, *, prev_kv=False, lease=0, timeout=None):
        return await self._request(calls.put(key, value, prev_kv=prev_kv, lease=lease), timeout)

    async def delete(self, key, range_end=None, *, prefix=False, from_key=False, prev_kv=False, timeout=None):
        return await self._request(calls.delete(key, range_end, prefix=prefix, from_key=from_key,
                                                prev_kv=prev_kv), timeout)

    async def txn(self, compare=(), success=(), failure=(), timeout=None):
        return await self._request(calls.txn(compare, success, failure), timeout)

    async def compact(self, revision: int, physical: bool = False, timeout=None):
        return await self._request(calls.compact(revision, physical), timeout)

    async def status(self, timeout=None):
        return await self._request(calls.status(), timeout)

    async def health(self, timeout=None):
        return await self._request(calls.health(), timeout)

    async def member_list(self, timeout=None):
        return await self._request(calls.member_list(), timeout)

    async def watch_hash(self, key, range_end=None, *, prefix=False, from_key=False, filters=(),
                         start_revision: int, revision: int = 0, keys_only=False, value_prefix=None, value_equals=None,
                   max_value_bytes=None, timeout=None):
        """As Client.watch_hash."""
        steps = calls.watch_hash(key, range_end, prefix=prefix, from_key=from_key, filters=filters,
                                 start_revision=start_revision, revision=revision, keys_only=keys_only,
                                 value_prefix=value_prefix, value_equals=value_equals,
                                 max_value_bytes=max_value_bytes)
        call = next(steps)
        try:
            while True:
                call = steps.send(await self._request(call, timeout))
        except StopIteration as done:
            return done.value

    async def hash_kv(self, revision: int = 0, timeout=None):
        return await self._request(calls.hash_kv(revision), timeout)

    async def alarm_list(self, timeout=None):
        return await self._request(calls.alarm_list(), timeout)

    async def alarm_disarm(self, alarm: str = "", timeout=None):
        return await self._request(calls.alarm_disarm(alarm), timeout)

    async def defrag(self, timeout=None):
        return await self._request(calls.defrag(), timeout)

    async def request_progress(self, timeout=None) -> int:
        return await self._request(calls.request_progress(), timeout)

    async def lease_grant(self, ttl: int, lease_id: int = 0, timeout=None):
        return await self._request(calls.lease_grant(ttl, lease_id), timeout)

    async def lease_revoke(self, lease, timeout=None):
        return await self._request(calls.lease_revoke(lease), timeout)

    async def lease_keepalive_once(self, leases, timeout=None) -> dict:
        return await self._request(calls.lease_keepalive_once(leases), timeout)

    async def time_to_live(self, lease, keys: bool = False, timeout=None):
        return await self._request(calls.time_to_live(lease, keys), timeout)

    async def leases(self, timeout=None) -> list[int]:
        return await self._request(calls.leases(), timeout)

    async def watch(self, key, range_end=None, *, prefix=False, from_key=False, start_revision=0, prev_kv=False,
                    filters=(), progress_notify=False, watch_id=0, fragment=False, timeout=None,
                    start_time=None, initial_state=False, on_compacted="cancel", verify=False,
                    keys_only=False, value_prefix=None, value_equals=None, max_value_bytes=None) -> AsyncWatch:
        """As Client.watch (without a shared queue): ``async for resp in await c.watch(...)``;
        start_time, initial_state, on_compacted, verify, keys_only and the value predicates as
        there (SPEC.md sections 7.7, 7.8, 7.10, 7.11; a verified stream ends with
        zwatch.StreamDiverged)."""
        if start_time is not None:
            if start_revision:
                raise errors.InvalidArgument("watch: start_revision and start_time are exclusive")
            start_revision = timeref.start_revision_at(await self.revision_at_time(start_time, timeout), start_time)
        body = range_body(key, range_end, prefix=prefix, from_key=from_key)
        body.update({"start_revision": start_revision, "prev_kv": prev_kv, "filters": list(filters),
                     "progress_notify": progress_notify, "fragment": fragment})
        body.update(state_options(initial_state, on_compacted))
        if verify:
            body["verify"] = True
        # keys_only / value predicate (SPEC.md 7.8): kept in the body, so a resume re-creates the
        # same filtered watch from last revision + 1.
        body.update(value_filter_fields(keys_only, value_prefix, value_equals, max_value_bytes))
        handle = self._register_watch(body, watch_id, lambda wid: AsyncWatch(self, wid, body))
        try:
            created = await self._call("watch_create", body, timeout)
        except ZwatchError:
            self._watches.pop(handle.watch_id, None)
            raise
        self._watch_created(handle, created)
        return handle

    async def _cancel_watch(self, w: AsyncWatch, timeout=None):
        try:
            await self._call("watch_cancel", {"watch_id": w.watch_id}, timeout)
        except errors.InvalidArgument:
            pass
        finally:
            self._watch_canceled(w)

    # ------------------------------------------------------------ leases
    # durable named cursors (SPEC.md 6.2; cursor.py)
    def cursor(self, name: str, key, range_end=None, *, prefix=False, from_key=False, ttl: int = 3600) -> AsyncCursor:
        """As Client.cursor: ``async for resp in await cur.watch(): ...; await cur.commit_response(resp)``."""
        return AsyncCursor(self, name, key, range_end, prefix=prefix, from_key=from_key, ttl=ttl)

    async def cursor_put(self, name: str, key, range_end=None, *, ttl: int, revision: int = 0, prefix=False,
                         from_key=False, timeout=None):
        return await self._request(calls.cursor_put(name, key, range_end, ttl=ttl, revision=revision,
                                                    prefix=prefix, from_key=from_key), timeout)

    async def cursor_get(self, name: str, timeout=None):
        return await self._request(calls.cursor_get(name), timeout)

    async def cursor_list(self, timeout=None):
        return await self._request(calls.cursor_list(), timeout)

    async def cursor_delete(self, name: str, timeout=None):
        return await self._request(calls.cursor_delete(name), timeout)

    async def lease(self, ttl: int, lease_id: int = 0, timeout=None) -> AsyncLease:
        """Grant a lease and keep it alive (TTL/3, one keep-alive request per tick for all)."""
        granted_at = time.monotonic()
        g = await self.lease_grant(ttl, lease_id, timeout)
        lease = AsyncLease(self, g.id, g.ttl)
        self._lease_schedule.add(lease.id, lease.ttl, granted_at)
        self._leases[lease.id] = lease
        if self._lease_task is None:
            self._lease_task = self._loop.create_task(self._keep_leases(), name="zwatch-aio-leases")
        self._lease_wake.set()
        return lease

    def lock(self, name, ttl: int = 60) -> AsyncLock:
        """A distributed lock named name (etcd's concurrency.Mutex, the sync client's algorithm)."""
        return AsyncLock(self, name, ttl)

    def election(self, name, ttl: int = 60) -> AsyncElection:
        """A leader election named name (etcd's concurrency.Election, the sync client's algorithm)."""
        return AsyncElection(self, name, ttl)

    def _lease_forget(self, lease: AsyncLease):
        if self._leases.pop(lease.id, None) is not None:
            self._lease_schedule.remove(lease.id)
        self._lease_wake.set()

    async def _keep_leases(self):
        while not self._closed:
            now = time.monotonic()
            due = self._lease_schedule.take_due(now)
            if not due:
                wake = self._lease_schedule.next_wakeup()
                self._lease_wake.clear()
                try:
                    await asyncio.wait_for(self._lease_wake.wait(), None if wake is None else max(0.0, wake - now))
                except asyncio.TimeoutError:
                    pass
                continue
            first_deadline = min(self._lease_schedule.deadline(i) for i in due)
            for start in range(0, len(due), MAX_KEEPALIVE_IDS):
                ids = due[start:start + MAX_KEEPALIVE_IDS]
                sent_at = time.monotonic()
                t = min(max(first_deadline - sent_at, RETRY_AFTER), self.timeout)
                try:
                    answers = await self.lease_keepalive_once(ids, timeout=t)
                except ZwatchError:
                    gone = self._lease_schedule.failed(ids, time.monotonic())
                else:
                    gone = self._lease_schedule.renewed({i: answers.get(i, 0) for i in ids}, sent_at)
                for i in gone:
                    lease = self._leases.pop(i, None)
                    if lease is not None:
                        lease.alive = False

    # ------------------------------------------------------------ lifecycle
    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return self.login_error is not None

    async def close(self):
        if self._closed:
            return
        self._closed = True
        self._wake()
        for task in (self._task, self._lease_task):
            if task is not None:
                try:
                    await asyncio.wait_for(task, 2)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    task.cancel()
        self._close_watches()
        self._wake_tx.close()
        if self._direct is not None:
            self._direct.close()
        self._ctx.term()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    @property
    def buffered_bytes(self) -> int:
        return self._credit.held

    @property
    def duplicates_dropped(self) -> int:
        return self._router.duplicates_dropped
