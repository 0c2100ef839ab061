"""What several test modules share: watch collectors, raw wire sessions, free ports.

No test module imports another test module; they import this one (pytest puts tests/ on
sys.path because tests/conftest.py lives there).
"""
from __future__ import annotations

import contextlib
import itertools
import queue
import shutil
import subprocess
import tempfile
import time

import msgpack
import zmq

from zwatch.tools.cluster import free_port, raw_session  # noqa: F401  (re-exported for tests)


def collect(w, n_events, timeout=10.0):
    """Events of a watch until n_events arrived; asserts Atomic/Ordered per response on the way."""
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < n_events:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(events)} of {n_events} events: {events}")
        try:
            r = w.get(timeout=left)
        except queue.Empty:
            continue
        if r is None:
            raise AssertionError(f"watch ended after {len(events)} events ({w.cancel_reason})")
        events.extend(r.events)
    return events


def no_more(w, wait=0.4):
    try:
        r = w.get(timeout=wait)
    except queue.Empty:
        return True
    assert r is None or not r.events, f"unexpected response {r}"
    return True


def revs(events):
    return [e.kv.mod_revision for e in events]


def pipelined_watches(endpoint: str, n: int, body: dict, first_id: int = 1, sock=None):
    """Create n watches at once on one raw session (no waiting between creates)."""
    s = sock if sock is not None else raw_session(endpoint)
    for i in range(n):
        s.send(msgpack.packb(["watch_create", 10 + i, dict(body, watch_id=first_id + i)]))
    return s


def drain_counting(sock, until, timeout=30.0):
    """Read (and ack) a raw session until until() holds; returns events received per watch id."""
    received = 0
    per_watch: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while not until(per_watch) and time.monotonic() < deadline:
        if not sock.poll(100):
            continue
        raw = sock.recv()
        received += len(raw)
        kind, _, body = msgpack.unpackb(raw, raw=False)
        if kind == "w":
            for r in body:
                if isinstance(r, list):
                    for wid in r[0]:
                        per_watch[wid] = per_watch.get(wid, 0) + len(r[2])
        sock.send(msgpack.packb(["ack", 0, {"bytes": received}]), zmq.NOBLOCK)
    return per_watch


def bare_dealer(endpoint: str, **sockopts):
    """A DEALER connected to endpoint that has said nothing (no hello): for tests that send
    malformed or out-of-order frames themselves.  sockopts: zmq option name -> value."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    for name, value in sockopts.items():
        s.setsockopt(getattr(zmq, name), value)
    s.connect(endpoint)
    return s


_raw_ids = itertools.count(1000)


class Raw:
    """A DEALER session speaking the client wire itself (the auth tests forge what a client never
    sends): request/reply by req_id, watch frames collected and acked on the side."""

    def __init__(self, endpoint: str, user=None, password=None, routing_id: bytes | None = None, **sockopts):
        opts = dict(sockopts)
        if routing_id is not None:
            opts["ROUTING_ID"] = routing_id
        self.sock = bare_dealer(endpoint, **opts)
        self.received = 0
        self.watch = []                 # every watch response, in order
        self.hello = self.hello_again(user, password)

    def hello_again(self, user=None, password=None, timeout=10.0):
        body = {"version": 1, "client": "raw"}
        if user is not None:
            body["user"] = user
        if password is not None:
            body["password"] = password
        return self.call("hello", body, timeout=timeout)

    def send(self, op, body, req_id=None):
        req_id = next(_raw_ids) if req_id is None else req_id
        self.sock.send(msgpack.packb([op, req_id, body], use_bin_type=True))
        return req_id

    def call(self, op, body, timeout=10.0):
        """-> ("ok" | "err", body)"""
        req_id = self.send(op, body)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._recv(deadline)
            if msg is not None and msg[0] in ("ok", "err") and msg[1] == req_id:
                return msg[0], msg[2]
        raise TimeoutError(f"no reply to {op}")

    def _recv(self, deadline):
        if not self.sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            return None
        raw = self.sock.recv()
        self.received += len(raw)
        msg = msgpack.unpackb(raw, raw=False)
        if msg[0] == "w":
            self.watch.extend(msg[2])
            self.sock.send(msgpack.packb(["ack", 0, {"bytes": self.received}]), zmq.NOBLOCK)
        return msg

    def pump(self, until, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            self._recv(min(deadline, time.monotonic() + 0.1))
        return until()

    def events(self, wid):
        return [ev[1][2] for r in self.watch if isinstance(r, list) and wid in r[0] for ev in r[2]]

    def cancel(self, wid):
        for r in self.watch:
            if isinstance(r, dict) and r.get("watch_id") == wid and r.get("canceled"):
                return r
        return None

    def close(self):
        self.sock.close(linger=0)


def ok(reply):
    kind, body = reply
    assert kind == "ok", body
    return body


def err_code(reply):
    kind, body = reply
    assert kind == "err", body
    return body["code"]


@contextlib.contextmanager
def private_etcd(env: dict, *extra_args: str):
    """A real etcd 3.4 on free 127.0.0.1 ports and a temp data dir, for capturing etcdctl's
    behaviour into fixtures (never needed by the tests themselves): yields etcdctl's argv."""
    data = tempfile.mkdtemp(prefix="etcd-capture-")
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen(["etcd", "--data-dir", data, "--listen-client-urls", f"http://127.0.0.1:{client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"default=http://127.0.0.1:{peer}", *extra_args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        argv = ["etcdctl", f"--endpoints=127.0.0.1:{client}"]
        deadline = time.monotonic() + 20
        while subprocess.run(argv + ["endpoint", "health"], capture_output=True, env=env).returncode != 0:
            assert time.monotonic() < deadline, "etcd did not start"
            time.sleep(0.2)
        yield argv
    finally:
        etcd.terminate()
        etcd.wait(10)
        shutil.rmtree(data, ignore_errors=True)
