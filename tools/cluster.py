"""A real zwatch cluster for tests, benchmarks and the chaos runner: actor processes on random loopback ports, a tmp LMDB dir.

Every actor's JSON log lines are collected so that tests can read the figures they log
(records scanned, victims...) instead of timing anything.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import zmq

from zwatch import Client, messages


class RawSession(zmq.Socket):
    """A DEALER that keeps the size of its hello reply (zmq.Socket only lets declared
    attributes be set: others are taken for socket options)."""
    hello_reply_bytes: int = 0


def raw_session(endpoint: str, **sockopts) -> RawSession:
    """A bare DEALER that has said hello to a fan-out: for tests that must speak the wire
    protocol themselves (stalled or pipelining clients).  sockopts: zmq option name -> value."""
    s = zmq.Context.instance().socket(zmq.DEALER, socket_class=RawSession)
    s.setsockopt(zmq.LINGER, 0)
    for name, value in sockopts.items():
        s.setsockopt(getattr(zmq, name), value)
    s.connect(endpoint)
    s.send(messages.encode_request("hello", 1, {"version": 1}))
    if not s.poll(5000):
        s.close()
        raise TimeoutError(f"no hello reply from {endpoint}")
    # Flow control counts every byte received on the session, the hello reply included: a
    # test that acks must start from this (otherwise its acks stay short of what was sent).
    s.hello_reply_bytes = len(s.recv())
    return s


# Ports handed out come from below the kernel's ephemeral range (32768-60999 by default):
# a port the kernel picked with bind(0) is free now, but every outgoing connection (a client,
# the writer's own links) draws its local port from that same range, so by the time the actor
# binds it an unrelated connection may hold it (CI: writer.bind_failed "Address already in
# use" on 58369). Below the range only another listener can take it, and this process never
# hands the same port out twice.
_PORT_RANGE = (20000, 32000)
_ports_given: set[int] = set()


def free_port() -> int:
    import random
    for _ in range(1000):
        port = random.randrange(*_PORT_RANGE)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    with socket.socket() as s:  # the range is exhausted: fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Actor:
    def __init__(self, name: str, argv: list[str], env: dict):
        self.name, self.argv, self.env = name, argv, env
        self.proc: subprocess.Popen | None = None
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self.starts = 0

    def start(self):
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, **self.popen_options())
        self.starts += 1
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def popen_options(self) -> dict:
        """More subprocess.Popen arguments (a subclass: stdin, preexec_fn)."""
        return {}

    def _read(self, proc):
        for line in proc.stdout:
            self.raw.append(line)
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            self.on_line(parsed)

    def on_line(self, parsed):
        """A JSON line of the actor's output."""
        self.lines.append(parsed)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL, timeout=10):
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def events(self, name: str) -> list[dict]:
        return [line for line in list(self.lines) if line.get("event") == name]

    def wait_event(self, name: str, timeout: float = 10.0, count: int = 1) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            if not self.alive():
                raise RuntimeError(f"{self.name} died:\n{''.join(self.raw[-30:])}")
            time.sleep(0.02)
        raise TimeoutError(f"{self.name}: no {name} x{count} within {timeout}s:\n{''.join(self.raw[-30:])}")


def curve_keypair_sockopts(server_public: bytes) -> dict:
    """raw_session() options of a CURVE client with a fresh keypair trusting server_public (z85)."""
    public, secret = zmq.curve_keypair()
    return {"CURVE_SERVERKEY": server_public, "CURVE_PUBLICKEY": public, "CURVE_SECRETKEY": secret}


class Cluster:
    """curve_dir (or ZWATCH_CURVE_DIR in env): every socket with CURVE + ZAP, keys from that
    directory (written by `zwatch keygen --cluster` first when it holds none, with one client
    keypair "test"); `client()` then trusts its fanout.key."""

    def __init__(self, data_dir: str, fanouts: int = 1, env: dict | None = None, curve_dir: str | None = None):
        self.data_dir = data_dir
        host = "tcp://127.0.0.1"
        self.writer_ep = f"{host}:{free_port()}"
        self.pub_ep = f"{host}:{free_port()}"
        self.syncer_ep = f"{host}:{free_port()}"
        self.writer_client_ep = f"{host}:{free_port()}"
        self.fanout_eps = [f"{host}:{free_port()}" for _ in range(fanouts)]
        base = dict(os.environ)
        base.update({"ZWATCH_DATA_DIR": data_dir, "ZWATCH_WRITER_ENDPOINT": self.writer_ep,
                     "ZWATCH_PUB_ENDPOINT": self.pub_ep, "ZWATCH_SYNCER_ENDPOINT": self.syncer_ep,
                     "ZWATCH_WRITER_CLIENT_ENDPOINT": self.writer_client_ep,
                     "ZWATCH_LOG_FORMAT": "json", "ZWATCH_STATS_S": "1", "PYTHONUNBUFFERED": "1"})
        base.update(env or {})
        if curve_dir:
            base["ZWATCH_CURVE_DIR"] = curve_dir
        self.curve_dir = base.get("ZWATCH_CURVE_DIR") or None
        if self.curve_dir and not os.path.exists(os.path.join(self.curve_dir, "fanout.key_secret")):
            from zwatch.cli.keygen import keygen_cluster
            keygen_cluster(self.curve_dir, ["test"])
        self.env = base
        py = sys.executable
        self.actors = {
            "writer": Actor("writer", [py, "-m", "zwatch.actors.writer"], base),
            "syncer": Actor("syncer", [py, "-m", "zwatch.actors.syncer"], base),
        }
        for i, ep in enumerate(self.fanout_eps):
            self.actors[f"fanout{i}"] = Actor(f"fanout{i}", [py, "-m", "zwatch.actors.fanout", ep], base)
        self.clients: list[Client] = []

    def __getitem__(self, name) -> Actor:
        return self.actors[name]

    def start(self):
        self.actors["writer"].start()
        self.actors["writer"].wait_event("writer.start")
        self.actors["syncer"].start()
        for name, a in self.actors.items():
            if name.startswith("fanout"):
                a.start()
        for name, a in self.actors.items():
            a.wait_event(f"{name.rstrip('0123456789')}.start")
        for name, a in self.actors.items():
            if name.startswith("fanout"):
                a.wait_event("fanout.joined_stream", timeout=15)
        return self

    def restart(self, name: str, sig=signal.SIGKILL):
        a = self.actors[name]
        a.kill(sig)
        before = len(a.events(f"{name.rstrip('0123456789')}.start"))
        a.start()
        a.wait_event(f"{name.rstrip('0123456789')}.start", count=before + 1)

    def client(self, endpoints=None, **kw) -> Client:
        kw.setdefault("timeout", 5.0)
        kw.setdefault("heartbeat", 0.5)
        # Tests kill "the fan-out the client is on" by position: their clients start on the first
        # endpoint given unless they ask for the shuffle real clients do (test_drain, bench drain).
        kw.setdefault("shuffle", False)
        if self.curve_dir:
            kw.setdefault("curve_server_key", self.fanout_public_key_path)
        c = Client(endpoints or self.fanout_eps[:1], **kw)
        self.clients.append(c)
        return c

    @property
    def fanout_public_key_path(self) -> str:
        return os.path.join(self.curve_dir, "fanout.key")

    def public_key(self, name: str) -> bytes:
        """z85 public key of NAME.key in the CURVE directory (writer, syncer, fanout)."""
        import zmq.auth
        return zmq.auth.load_certificate(os.path.join(self.curve_dir, f"{name}.key"))[0]

    def stop(self):
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass
        for name, a in self.actors.items():
            # SIGTERM makes a fan-out drain (up to ZWATCH_DRAIN_S while a raw session stays open);
            # SIGINT stops it at once: a test's teardown need not wait for that.
            a.kill(signal.SIGINT if name.startswith("fanout") else signal.SIGTERM, timeout=5)

    def dump_logs(self) -> str:
        return "\n".join(f"--- {n}\n" + "".join(a.raw[-40:]) for n, a in self.actors.items())


def main(argv=None) -> int:
    """``python -m zwatch.tools.cluster [--fanouts N]``: a test cluster for another language's
    tests (protocol/js's `npm test`): starts it in a temp dir, prints one JSON line
    ``{"endpoints": [...], "data_dir": ...}``, then obeys lines on stdin, answering each with one
    JSON line: ``kill NAME`` (SIGKILL: fanout0, writer, syncer), ``start NAME``, ``restart NAME``,
    ``stop`` (or end of input: stops the cluster and exits)."""
    import argparse
    import shutil
    import tempfile
    ap = argparse.ArgumentParser(prog="python -m zwatch.tools.cluster", description=main.__doc__.split("\n\n")[0])
    ap.add_argument("--fanouts", type=int, default=2)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for every actor (e.g. ZWATCH_SESSION_WINDOW_BYTES=262144)")
    a = ap.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in a.env)
    data = tempfile.mkdtemp(prefix="zw-cluster-")
    cl = Cluster(data, fanouts=a.fanouts, env=env).start()
    try:
        print(json.dumps({"endpoints": cl.fanout_eps, "data_dir": data}), flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            cmd, name = words[0], (words[1] if len(words) > 1 else "")
            try:
                if cmd == "stop":
                    break
                if name not in cl.actors:
                    raise KeyError(f"no actor {name!r}: {sorted(cl.actors)}")
                if cmd == "kill":
                    cl[name].kill()
                elif cmd == "start":
                    cl[name].start()
                    base = name.rstrip("0123456789")
                    cl[name].wait_event(f"{base}.start", count=cl[name].starts)
                elif cmd == "restart":
                    cl.restart(name)
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                print(json.dumps({"ok": True}), flush=True)
            except Exception as e:
                print(json.dumps({"ok": False, "error": str(e)}), flush=True)
    finally:
        cl.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
