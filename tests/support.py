"""What several test modules share: watch collectors, raw wire sessions, free ports.

No test module imports another test module; they import this one (pytest puts tests/ on
sys.path because tests/conftest.py lives there).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import msgpack
import zmq

from zwatch import errors

from zwatch.tools.cluster import free_port, raw_session  # noqa: F401  (re-exported for tests)


def collect(w, n_events, timeout=10.0):
    """Events of a watch until n_events arrived; asserts Atomic/Ordered per response on the way."""
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < n_events:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(events)} of {n_events} events, revisions ending "
                                 f"{[e.kv.mod_revision for e in events][-20:]}")
        try:
            r = w.get(timeout=left)
        except queue.Empty:
            continue
        if r is None:
            raise AssertionError(f"watch ended after {len(events)} events ({w.cancel_reason})")
        events.extend(r.events)
    return events


class Consumer:
    """An application that reads a watch as it comes, on its own thread (the client acks what
    the application consumed, so a watch nobody reads stalls its session by design)."""

    def __init__(self, w):
        self.w, self.events, self.ended = w, [], False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                r = self.w.get(timeout=0.1)
            except queue.Empty:
                continue
            if r is None:
                self.ended = True
                return
            self.events.extend(r.events)

    def collect(self, n_events, timeout=10.0):
        """Stops consuming once n_events arrived (or the timeout: asserts) and returns them."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n_events and time.monotonic() < deadline and not self.ended:
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(5)
        assert len(self.events) >= n_events, (
            f"got {len(self.events)} of {n_events} events, revisions ending {revs(self.events)[-20:]}")
        return self.events


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


def retry_unavailable(call, deadline_s: float = 20.0, pause: float = 0.1):
    """call() once the fan-out reaches the (restarted) writer again: Unavailable until then."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return call()
        except errors.Unavailable:
            assert time.monotonic() < deadline, "the writer never came back"
            time.sleep(pause)


# ================================================================ CLI transcripts (etcdctl vs zwatch)
def clean_env(**extra) -> dict:
    """The environment for a CLI under test: no ZWATCH_/ETCD settings leak in from the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZWATCH_", "ETCD"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Background:
    """A long-running command; its stdout lines are read as they come."""

    def __init__(self, args, proc):
        self.args, self.proc = args, proc
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[str]:
        """Wait until `count` lines were printed in all; returns them."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            try:
                self.seen.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{self.args}: {len(self.seen)} of {count} lines: {self.seen}") from None
        return self.seen[:count]

    def wait_until(self, text: str, timeout: float = 20.0):
        while not any(text in x for x in self.seen):
            self.wait_for(len(self.seen) + 1, timeout)

    def quiet(self, seconds: float) -> bool:
        """True if nothing more was printed for `seconds`."""
        try:
            self.seen.append(self.lines.get(timeout=seconds))
            return False
        except queue.Empty:
            return True


class Transcript:
    """Runs commands through one CLI (etcdctl or zwatch) and writes down what they did: the same
    scenario run with both gives two texts the transcript tests compare byte for byte."""

    def __init__(self, argv: list[str], env: dict):
        self.argv, self.env = argv, env
        self.text: list[str] = []
        self.spawned: list[Background] = []

    def _record(self, title, out, err, rc, dedup=False):
        self.text.append(f"$ {title}")
        lines = out.splitlines()
        if dedup:
            lines = [x for i, x in enumerate(lines) if i == 0 or x != lines[i - 1]]
        self.text.extend(lines)
        for line in err.splitlines():
            if not line.startswith(('{"level":', "stty: ")):
                # clientv3's logger (retries), the password prompt's stty on a pipe: not etcdctl's output
                self.text.append(f"stderr: {line}")
        self.text.append(f"exit {rc}" if rc >= 0 else f"exit signal {signal.Signals(-rc).name}")

    def run(self, *args, stdin: str | None = None, env: dict | None = None, timeout=30) -> subprocess.CompletedProcess:
        """Run one command to its end (`env`: extra variables for it alone, written in the title)."""
        r = subprocess.run(self.argv + list(args), capture_output=True, text=True, input=stdin or "",
                           timeout=timeout, env={**self.env, **(env or {})})
        title = shlex.join(args) + (f" <<< {stdin!r}" if stdin else "")
        if env:
            title = " ".join(f"{k}={v}" for k, v in env.items()) + " " + title
        self._record(title, r.stdout, r.stderr, r.returncode)
        return r

    def spawn(self, *args) -> Background:
        self.text.append(f"$ {shlex.join(args)} &")
        proc = subprocess.Popen(self.argv + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=self.env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.spawned.append(Background(args, proc))
        return self.spawned[-1]

    def close(self):
        """Kill what a failed scenario left running."""
        for bg in self.spawned:
            if bg.proc.poll() is None:
                bg.proc.kill()
                bg.proc.wait(5)

    def finish(self, bg: Background, sig=signal.SIGINT, timeout=20.0, dedup=False):
        """Stop a background command (sig None: wait for it to end) and write down what it printed.
        A watch's exit status is not compared: etcdctl dies of the signal, zwatch's watch exits 0
        on it (tests/system/test_cli.py holds it to that)."""
        if sig is not None and bg.proc.poll() is None:
            bg.proc.send_signal(sig)
        try:
            bg.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            bg.proc.kill()
            bg.proc.wait(5)
            self.text.append(f"(still running {timeout}s after {sig}: killed)")
        rest = []
        while True:
            try:
                rest.append(bg.lines.get(timeout=0.5))
            except queue.Empty:
                break
        rc = bg.proc.returncode
        if bg.args[0] == "watch" and sig is not None and rc in (0, -sig):
            rc = -sig
        self._record(f"[{shlex.join(bg.args)}] stopped by {sig.name if sig else 'itself'}",
                     "".join(bg.seen + rest), bg.proc.stderr.read(), rc, dedup)

    def note(self, text: str):
        self.text.append(f"# {text}")

    def wait_keys(self, prefix: str, count: int, timeout: float = 20.0):
        """Wait (unrecorded) until `count` keys exist under prefix: a background contender's key
        is in place before the next one starts, so both servers see the same order of revisions."""
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run(self.argv + ["get", prefix, "--prefix", "--keys-only", "-w", "json"],
                               capture_output=True, text=True, env=self.env, timeout=timeout)
            m = re.search(r'"count":(\d+)', r.stdout)
            if (int(m.group(1)) if m else 0) == count:
                return
            assert time.monotonic() < deadline, (prefix, count, r.stdout, r.stderr)
            time.sleep(0.1)


def zwatch_transcript(cluster) -> Transcript:
    """A transcript of zwatch's CLI against a test cluster's first fan-out."""
    return Transcript([sys.executable, "-m", "zwatch.cli", "--endpoints", cluster.fanout_eps[0]], clean_env())


def run_scenario(t: Transcript, scenario) -> Transcript:
    """Run a scenario on a transcript, killing whatever it left running even when it fails."""
    try:
        scenario(t)
    finally:
        t.close()
    return t


def read_fixture(fixtures: str, name: str) -> str:
    with open(os.path.join(fixtures, f"{name}.txt")) as f:
        return f.read()


def capture_fixtures(fixtures: str, scenarios: dict, names, transcript_text):
    """Run the scenarios with etcdctl on a fresh etcd each (needs /usr/bin/etcd and etcdctl) and
    write each transcript_text() to fixtures/<name>.txt, what the transcript tests compare with."""
    os.makedirs(fixtures, exist_ok=True)
    for name in names:
        env = clean_env(ETCDCTL_API="3")
        with private_etcd(env) as argv:
            t = run_scenario(Transcript(argv, env), scenarios[name])
            with open(os.path.join(fixtures, f"{name}.txt"), "w") as f:
                f.write(transcript_text(t))
            print(f"{name}: {len(t.text)} lines")
