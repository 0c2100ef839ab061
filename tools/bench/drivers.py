"""Client adapters used inside the bench's client processes: one connection = one object.

Both adapters hand watch responses to application code with the same shape (``resp.watch_id``,
``resp.canceled``, ``resp.events[i].kv.mod_revision / .value``), so one recorder serves both.

* zwatch: ``zwatch.Client`` (one DEALER session per connection).  The application side is one
  thread per connection reading the queue that all the connection's watches share
  (``client.watch(..., queue=q)``): the client puts one response per frame for all the
  watches it concerns (``resp.watch_ids``), as the fan-out sent it.
* etcd: grpcio's asyncio API (``grpc.aio``) with stubs generated from etcd's protos
  (etcd_stubs.py), the shape a user who cares about speed picks: ONE event loop per client
  process (in a thread of its own, the process's main thread being the bench's control
  thread), shared by all the process's connections; per connection one aio channel with a
  private subchannel (a TCP connection of its own) and one bidi Watch stream holding many
  watches.  The application code runs in the loop, as each response arrives.  A putter's loop
  runs in the event loop too (``put_loop``): each put is awaited on the aio stub, no thread
  hop per call.  ``--etcd-client sync`` keeps the blocking-stub shape for comparison.
"""
from __future__ import annotations

import queue
import threading
import time

_monotonic_ns = time.monotonic_ns
_STOP = object()


class ZwatchConn:
    multi_ids = True        # a response may list several watch ids (resp.watch_ids)

    def __init__(self, endpoint: str):
        import zwatch.client as zc
        self.client = zc.Client([endpoint], timeout=60.0, heartbeat=1.0)
        self.sink: queue.SimpleQueue = queue.SimpleQueue()
        self.client.request_progress()      # connected, session open
        self.handles = []
        self._reader = None

    def put(self, key: bytes, value: bytes) -> int:
        return self.client.put(key, value).header.revision

    def current_revision(self) -> int:
        return self.client.status().header.revision

    def start_reader(self, handler):
        def run():
            get = self.sink.get
            now = _monotonic_ns
            while True:
                r = get()
                if r is _STOP:
                    return
                if r is None:          # end-of-watch marker of the client
                    continue
                handler(r, now())
        self._reader = threading.Thread(target=run, name="bench-app", daemon=True)
        self._reader.start()

    def create_watches(self, specs):
        """specs: [(watch_id, key, range_end|None, start_revision)]; returns when all are created."""
        w = self.client.watch
        q = self.sink
        for wid, key, end, start in specs:
            if end is None:
                self.handles.append(w(key, start_revision=start, watch_id=wid, queue=q))
            else:
                self.handles.append(w(key, end, start_revision=start, watch_id=wid, queue=q))

    def close(self):
        try:
            self.client.close()
        finally:
            self.sink.put(_STOP)
            if self._reader is not None:
                self._reader.join(5)


_etcd = None


def etcd_modules(stub_path: str):
    global _etcd
    if _etcd is None:
        import sys
        if stub_path not in sys.path:
            sys.path.insert(0, stub_path)
        import grpc
        from zwbench_etcdpb import rpc_pb2, rpc_pb2_grpc
        _etcd = (grpc, rpc_pb2, rpc_pb2_grpc)
    return _etcd


def _on_response(conn, r, handler):
    """One WatchResponse of an etcd stream: count creations, hand events to the application."""
    if r.created:
        with conn.cond:
            conn.created += 1
            conn.cond.notify_all()
        if not r.events:
            return
    handler(r, _monotonic_ns())


def _stream_ended(conn, exc: Exception | None = None):
    """The stream failed with exc (kept unless we closed it), or ended: wake create_watches."""
    if exc is not None:
        if not getattr(conn, "_closing", False):
            conn.errors.append(repr(exc)[:300])
        return
    with conn.cond:
        conn.created = -1 if conn.created == 0 else conn.created
        conn.cond.notify_all()


def _create_requests(pb, specs) -> list:
    """etcd WatchRequests creating specs [(watch_id, key, range_end | None, start_revision)]."""
    out = []
    for wid, key, end, start in specs:
        cr = pb.WatchCreateRequest(key=key, start_revision=start, watch_id=wid)
        if end is not None:
            cr.range_end = end
        out.append(pb.WatchRequest(create_request=cr))
    return out


def _wait_created(conn, target: int, timeout: float):
    """Until conn's stream reader counted `target` created watches (or the stream ended)."""
    deadline = time.monotonic() + timeout
    with conn.cond:
        while 0 <= conn.created < target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"etcd: {conn.created} of {target} watches created")
            conn.cond.wait(left)
    if conn.created < 0:
        raise RuntimeError(f"etcd watch stream ended: {conn.errors}")


class EtcdConn:
    multi_ids = False       # one WatchResponse per watch

    def __init__(self, endpoint: str, stub_path: str):
        grpc, pb, pbg = etcd_modules(stub_path)
        self.pb = pb
        self.channel = grpc.insecure_channel(endpoint, options=[
            ("grpc.use_local_subchannel_pool", 1),          # a TCP connection of its own
            ("grpc.max_receive_message_length", 64 << 20)])
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.kv = pbg.KVStub(self.channel)
        self.maint = pbg.MaintenanceStub(self.channel)
        self.watch_stub = pbg.WatchStub(self.channel)
        self.reqs = None
        self.created = 0
        self.cond = threading.Condition()
        self._reader = None
        self.errors = []

    def put(self, key: bytes, value: bytes) -> int:
        return self.kv.Put(self.pb.PutRequest(key=key, value=value), timeout=60).header.revision

    def current_revision(self) -> int:
        return self.maint.Status(self.pb.StatusRequest(), timeout=30).header.revision

    def start_reader(self, handler):
        self.reqs = queue.SimpleQueue()
        stream = self.watch_stub.Watch(iter(self.reqs.get, _STOP))
        self._stream = stream

        def run():
            try:
                for r in stream:
                    _on_response(self, r, handler)
            except Exception as exc:  # stream closed by close(), or the server went away
                _stream_ended(self, exc)
            _stream_ended(self)
        self._reader = threading.Thread(target=run, name="bench-app", daemon=True)
        self._reader.start()

    def create_watches(self, specs, timeout: float = 120.0):
        target = self.created + len(specs)
        for r in _create_requests(self.pb, specs):
            self.reqs.put(r)
        _wait_created(self, target, timeout)

    def close(self):
        self._closing = True
        if self.reqs is not None:
            self.reqs.put(_STOP)
        try:
            if self.reqs is not None:
                self._stream.cancel()
        except Exception:
            pass
        self.channel.close()
        if self._reader is not None:
            self._reader.join(5)


_process_loop = None
_process_loop_lock = threading.Lock()


def process_loop():
    """The client process's one asyncio event loop (started on first use, in a daemon thread):
    every grpc.aio channel, stream and putter of the process runs in it."""
    global _process_loop
    with _process_loop_lock:
        if _process_loop is None:
            import asyncio
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="bench-etcd-aio", daemon=True).start()
            _process_loop = loop
        return _process_loop


class EtcdAioConn:
    """etcd through grpc.aio: the process's event loop (process_loop) runs this connection's
    channel, its watch stream and (put_loop) the putter; put() from another thread is for the
    rare calls."""
    multi_ids = False

    def __init__(self, endpoint: str, stub_path: str):
        import asyncio
        grpc, pb, pbg = etcd_modules(stub_path)
        self.pb, self._asyncio = pb, asyncio
        self.loop = process_loop()
        self.created = 0
        self.cond = threading.Condition()
        self.errors = []
        self._handler = None
        self._reqs = None
        self._stream_task = None

        async def open_channel():
            ch = grpc.aio.insecure_channel(endpoint, options=[
                ("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)])
            await asyncio.wait_for(ch.channel_ready(), 30)
            return ch
        self.channel = self._run(open_channel())
        self.kv = pbg.KVStub(self.channel)
        self.maint = pbg.MaintenanceStub(self.channel)
        self.watch_stub = pbg.WatchStub(self.channel)

    def _run(self, coro, timeout=120):
        return self._asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _await(self, make_call):
        """Run make_call() (an aio call: awaitable, not a coroutine) in the loop and wait for it."""
        async def run():
            return await make_call()
        return self._run(run())

    def put(self, key: bytes, value: bytes) -> int:
        req = self.pb.PutRequest(key=key, value=value)
        return self._await(lambda: self.kv.Put(req, timeout=60)).header.revision

    def put_loop(self, keys, make_value, period_ns: int, on_put):
        """The putter's loop, in the event loop: awaited puts one after the other (paced every
        period_ns if > 0); on_put(rev | exception, latency_ns) after each."""
        asyncio, pb, put = self._asyncio, self.pb, self.kv.Put

        async def run():
            t_first = _monotonic_ns()
            for k, key in enumerate(keys):
                if period_ns:
                    wait = t_first + k * period_ns - _monotonic_ns()
                    if wait > 0:
                        await asyncio.sleep(wait / 1e9)
                value = make_value()
                t0 = _monotonic_ns()
                try:
                    r = await put(pb.PutRequest(key=key, value=value), timeout=60)
                    on_put(r.header.revision, _monotonic_ns() - t0)
                except Exception as exc:
                    on_put(exc, 0)
        self._run(run(), timeout=None)

    def current_revision(self) -> int:
        return self._await(lambda: self.maint.Status(self.pb.StatusRequest(), timeout=30)).header.revision

    def start_reader(self, handler):
        asyncio = self._asyncio
        self._handler = handler

        async def open_stream():
            self._reqs = asyncio.Queue()

            async def requests():
                while True:
                    r = await self._reqs.get()
                    if r is _STOP:
                        return
                    yield r
            call = self.watch_stub.Watch(requests())
            self._call = call
            try:
                async for r in call:
                    _on_response(self, r, handler)
            except Exception as exc:
                _stream_ended(self, exc)
            _stream_ended(self)

        async def start():
            self._stream_task = asyncio.ensure_future(open_stream())
        self._run(start())

    def create_watches(self, specs, timeout: float = 120.0):
        target = self.created + len(specs)
        reqs = _create_requests(self.pb, specs)

        async def send():
            for r in reqs:
                self._reqs.put_nowait(r)
        self._run(send())
        _wait_created(self, target, timeout)

    def close(self):
        self._closing = True

        async def shut():
            if self._reqs is not None:
                self._reqs.put_nowait(_STOP)
            if self._stream_task is not None:
                self._stream_task.cancel()
            await self.channel.close()
        try:
            self._run(shut(), timeout=10)
        except Exception:
            pass
        # The loop is the process's: it stops with the process.


def connect(system: dict, endpoint: str):
    if system["kind"] == "etcd":
        if system.get("client") == "sync":
            return EtcdConn(endpoint, system["stub_path"])
        return EtcdAioConn(endpoint, system["stub_path"])
    return ZwatchConn(endpoint)
