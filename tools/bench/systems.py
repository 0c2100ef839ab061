"""The systems under test: a zwatch cluster (or given endpoints) and an etcd server."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import zmq
import zmq.auth

from zwatch import internal
from zwatch.errors import InvalidArgument
from zwatch.tools.cluster import Cluster, free_port


def syncer_stats_at(ep: str, curve: tuple | None = None) -> dict | None:
    """The running totals of the syncer at ep (its ``stats`` op); curve = (server key, public,
    secret) when the cluster runs CURVE.  None if it does not answer within 5 s."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    try:
        if curve:
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = curve
        s.connect(ep)
        s.send(internal.StatsRequest(1).encode())
        if not s.poll(5000):
            return None
        try:
            return internal.decode_stats_reply(s.recv())
        except InvalidArgument:         # an error reply, or not a stats reply at all
            return None
    finally:
        s.close()


class ZwatchSystem:
    kind = "zwatch"

    def __init__(self, *, fanouts: int = 1, endpoints: list[str] | None = None, server_pids: dict | None = None,
                 env: dict | None = None, profile_dir: str | None = None, keep: bool = False, curve: bool = False):
        self.fanouts = fanouts
        self.curve = curve
        self.given = endpoints
        self.given_pids = server_pids or {}
        self.env = dict(env or {})
        self.profile_dir = profile_dir
        self.keep = keep
        self.cluster = None
        self.tmp = None
        self.tag = ""

    def start(self, tag: str = ""):
        self.tag = tag
        if self.given:
            return self
        self.tmp = tempfile.mkdtemp(prefix="zwatch-bench-")
        env = {"ZWATCH_STATS_S": "10"}
        env.update(self.env)
        curve_dir = os.path.join(self.tmp, "curve") if self.curve else None
        c = Cluster(os.path.join(self.tmp, "data"), fanouts=self.fanouts, env=env, curve_dir=curve_dir)
        if curve_dir:
            # Every client of the bench (worker processes inherit it) trusts this cluster's key.
            self._saved_server_key = os.environ.get("ZWATCH_CURVE_SERVER_KEY")
            os.environ["ZWATCH_CURVE_SERVER_KEY"] = c.fanout_public_key_path
        if self.profile_dir:
            os.makedirs(self.profile_dir, exist_ok=True)
            for name, actor in c.actors.items():
                out = os.path.join(self.profile_dir, f"{tag or 'run'}-{name}.prof")
                # python -m cProfile -o OUT -m zwatch.actors.X ...: the stats are written when
                # the actor returns from SIGTERM (cProfile catches SystemExit).
                actor.argv = actor.argv[:1] + ["-m", "cProfile", "-o", out] + actor.argv[1:]
        self.cluster = c.start()
        return self

    @property
    def endpoints(self) -> list[str]:
        return list(self.given) if self.given else list(self.cluster.fanout_eps)

    def server_pids(self) -> dict[str, int]:
        if self.cluster is None:
            return dict(self.given_pids)
        return {name: a.proc.pid for name, a in self.cluster.actors.items() if a.alive()}

    def client_spec(self) -> dict:
        return {"kind": "zwatch"}

    def alive(self) -> bool:
        return self.cluster is None or all(a.alive() for a in self.cluster.actors.values())

    def syncer_stats(self) -> dict | None:
        """The syncer's running totals (records_scanned, batches, ...), when we know where it is."""
        if self.cluster is None:
            ep = os.environ.get("ZWATCH_SYNCER_ENDPOINT")
            if not ep:
                return None
            return syncer_stats_at(ep)
        cluster = self.cluster
        curve = None
        if cluster.curve_dir:
            # The syncer admits only internal/ keys: ask as the fan-outs do.
            public, secret = zmq.auth.load_certificate(os.path.join(cluster.curve_dir, "fanout.key_secret"))
            curve = (cluster.public_key("syncer"), public, secret)
        return syncer_stats_at(cluster.syncer_ep, curve)

    def stop(self):
        if self.cluster is not None:
            self.cluster.stop()
            if self.cluster.curve_dir:
                os.environ.pop("ZWATCH_CURVE_SERVER_KEY", None)
                if self._saved_server_key is not None:
                    os.environ["ZWATCH_CURVE_SERVER_KEY"] = self._saved_server_key
            self.cluster = None
        if self.tmp and not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None


class EtcdSystem:
    kind = "etcd"

    def __init__(self, *, binary: str = "etcd", extra_args: list[str] | None = None, keep: bool = False,
                 client: str = "aio"):
        from . import etcd_stubs
        self.client = client          # "aio" (grpc.aio, the default) or "sync" (blocking stubs)
        self.binary = shutil.which(binary) or binary
        self.extra_args = extra_args or []
        self.keep = keep
        self.stub_path = etcd_stubs.ensure_stubs()
        self.proc = None
        self.tmp = None

    def version(self) -> str:
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10).stdout
            return out.splitlines()[0].split(":", 1)[1].strip()
        except Exception:
            return "?"

    def start(self, tag: str = ""):
        self.tmp = tempfile.mkdtemp(prefix="etcd-bench-")
        self.client_port, peer = free_port(), free_port()
        curl, purl = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{peer}"
        argv = [self.binary, "--name", "bench", "--data-dir", os.path.join(self.tmp, "data"),
                "--listen-client-urls", curl, "--advertise-client-urls", curl,
                "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                "--initial-cluster", f"bench={purl}", "--initial-cluster-state", "new",
                "--logger", "zap", "--log-level", "error"] + self.extra_args
        self.log = open(os.path.join(self.tmp, "etcd.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{curl}/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") in ("true", True):
                        break
            except Exception:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("etcd did not start: " + open(os.path.join(self.tmp, "etcd.log")).read()[-2000:])
            time.sleep(0.1)
        return self

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{self.client_port}"]

    def server_pids(self) -> dict[str, int]:
        return {"etcd": self.proc.pid} if self.proc and self.proc.poll() is None else {}

    def client_spec(self) -> dict:
        return {"kind": "etcd", "stub_path": self.stub_path, "client": self.client}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def syncer_stats(self):
        return None

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
            self.log.close()
        if self.tmp and not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None
