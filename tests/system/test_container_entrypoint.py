"""deploy/container/entrypoint.sh run as plain processes: everything the image runs, without a
container daemon (none runs on these machines).  Writer, syncer and fan-out each started through
the entry point as a separate process (as three containers would), with a temp data dir and random
loopback ports; the CLI through it; the HEALTHCHECK command (`entrypoint.sh health`) before the
fan-out joined the writer's stream (alone, and beside a ready syncer), after, and once it is cut
off; SIGTERM stops each actor with exit code 0 (the shell `exec`s the actor, so the signal
reaches it: a fan-out drains)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from zwatch.tools.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "container" / "entrypoint.sh"
BIN = Path(sys.executable).parent            # the venv's bin: `zwatch` is there, as in the image's PATH

UPSTREAM = ("ZWATCH_WRITER_ENDPOINT", "ZWATCH_PUB_ENDPOINT", "ZWATCH_SYNCER_ENDPOINT")

pytestmark = pytest.mark.skipif(not (BIN / "zwatch").exists(), reason=f"no zwatch script in {BIN} (pip install -e .)")


def base_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZWATCH_") and k != "PORT"}
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
                "ZWATCH_DATA_DIR": str(tmp_path / "data"), "ZWATCH_LOG_FORMAT": "json",
                "ZWATCH_WRITER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
                "ZWATCH_PUB_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
                "ZWATCH_SYNCER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
                "ZWATCH_METRICS_HOST": "127.0.0.1", "ZWATCH_DRAIN_S": "3",
                "ZWATCH_HEARTBEAT_S": "0.2", "ZWATCH_UPSTREAM_TIMEOUT_S": "1"})
    return env


class Role:
    """One `entrypoint.sh ROLE` process (one container), its output collected."""

    def __init__(self, args, env, cwd):
        self.args = args
        self.proc = subprocess.Popen(["sh", str(ENTRYPOINT), *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not any(text in x for x in list(self.lines)):
            assert self.proc.poll() is None, f"{self.args} exited {self.proc.returncode}:\n{''.join(self.lines[-30:])}"
            assert time.monotonic() < deadline, f"{self.args}: no {text!r}:\n{''.join(self.lines[-30:])}"
            time.sleep(0.05)

    def cmdline(self) -> list[str]:
        return Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")

    def stop(self, sig=signal.SIGTERM, timeout=30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"{self.args} still running {timeout} s after {sig!r}:\n{''.join(self.lines[-30:])}")


def run(args, env, cwd, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def health(env, cwd, **ports) -> subprocess.CompletedProcess:
    """The HEALTHCHECK command with the metrics ports of one container's actor(s) only."""
    env = {k: v for k, v in env.items() if not k.endswith("_METRICS_PORT")}
    env.update({f"ZWATCH_{actor.upper()}_METRICS_PORT": str(port) for actor, port in ports.items()})
    return run(["health"], env, cwd)


def wait_health(env, cwd, rc: int, timeout=30.0, **ports) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + timeout
    while (out := health(env, cwd, **ports)).returncode != rc:
        assert time.monotonic() < deadline, f"health {ports} never exited {rc}: {out.stdout} {out.stderr}"
        time.sleep(0.2)
    return out


def test_roles_as_separate_processes_cli_healthcheck_and_sigterm(tmp_path):
    env = base_env(tmp_path)
    client_port, ports = free_port(), {"fanout": free_port(), "writer": free_port(), "syncer": free_port()}
    endpoints = ["--endpoints", f"127.0.0.1:{client_port}"]
    roles: dict[str, Role] = {}
    try:
        # The fan-out first: nothing to join yet, so the health check says unhealthy.
        # It dials the writer and syncer by host name, as in deploy/ (tcp://zwatch-store:2480, tcp://writer:2480).
        by_name = {k: env[k].replace("127.0.0.1", "localhost") for k in UPSTREAM}
        roles["fanout"] = Role(["fanout"], {**env, **by_name, "ZWATCH_FANOUT_ENDPOINT": f"tcp://127.0.0.1:{client_port}",
                                            "ZWATCH_FANOUT_METRICS_PORT": str(ports["fanout"]),
                                            "PORT": "1"}, tmp_path)   # PORT: the entry point ignores it
        roles["fanout"].wait_for('"metrics.serving"')
        before = health(env, tmp_path, fanout=ports["fanout"])
        print("health before the writer:", before.returncode, before.stdout.strip())
        assert before.returncode == 1 and "not joined" in before.stdout

        # The syncer next: ready on its own, while the fan-out still waits for the writer's
        # stream.  One "not ready" makes the container unhealthy, whatever else answers ok.
        roles["syncer"] = Role(["syncer"], {**env, "ZWATCH_SYNCER_METRICS_PORT": str(ports["syncer"])}, tmp_path)
        wait_health(env, tmp_path, 0, syncer=ports["syncer"])
        mixed = health(env, tmp_path, fanout=ports["fanout"], syncer=ports["syncer"])
        print("fan-out not joined, syncer ready:", mixed.returncode, mixed.stdout.strip())
        assert mixed.returncode == 1 and "not joined" in mixed.stdout

        roles["writer"] = Role(["writer"], {**env, "ZWATCH_WRITER_METRICS_PORT": str(ports["writer"])}, tmp_path)
        roles["fanout"].wait_for('"fanout.joined_stream"')
        for name, role in roles.items():   # `exec`: the pid started as `sh entrypoint.sh` is the actor now
            argv = role.cmdline()
            assert Path(argv[1]).name == "zwatch" and argv[2] == name, argv
        after = wait_health(env, tmp_path, 0, fanout=ports["fanout"])
        print("health after it joined:", after.returncode, after.stdout.strip())
        assert after.stdout.strip() == f"{ports['fanout']}: ok"
        both = health(env, tmp_path, writer=ports["writer"], syncer=ports["syncer"])   # the writer+syncer pod
        assert both.returncode == 0 and both.stdout.count(": ok") == 2, both.stdout
        nobody = health(env, tmp_path, fanout=free_port())
        assert nobody.returncode == 1 and "no zwatch actor answers" in nobody.stdout

        # The CLI through the entry point: `docker run IMG put ...` and `docker run IMG zwatch get ...`.
        put = run([*endpoints, "put", "container/k", "v1"], env, tmp_path)
        assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
        got = run(["zwatch", *endpoints, "get", "container/k"], env, tmp_path)
        assert (got.returncode, got.stdout.split()) == (0, ["container/k", "v1"]), got.stderr
        eh = run([*endpoints, "endpoint", "health"], env, tmp_path)
        assert eh.returncode == 0 and "is healthy" in eh.stdout + eh.stderr

        # deploy/compose.yaml's client container: its command, pointed at this fan-out.
        cmd = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]["client"]["command"]
        cmd[cmd.index("--endpoints") + 1] = f"127.0.0.1:{client_port}"
        prefix = cmd[cmd.index("--prefix") + 1]
        roles["client"] = Role(cmd, env, tmp_path)
        deadline = time.monotonic() + 30
        while not any(f"{prefix}hello" in x for x in list(roles["client"].lines)):
            assert time.monotonic() < deadline, "".join(roles["client"].lines)
            assert run([*endpoints, "put", f"{prefix}hello", "world"], env, tmp_path).returncode == 0
            time.sleep(0.5)       # the watch may start after a put: put again until one is seen
        roles.pop("client").stop(signal.SIGINT)

        # SIGTERM reaches each actor (no shell in between): rc 0.  Writer and syncer first: the
        # fan-out, cut off from both, is no longer ready.
        stopped = {name: roles[name].stop() for name in ("writer", "syncer")}
        lost = wait_health(env, tmp_path, 1, fanout=ports["fanout"])
        print("health with writer and syncer gone:", lost.returncode, lost.stdout.strip())
        assert "not ready" in lost.stdout
        stopped["fanout"] = roles["fanout"].stop()
        print("exit codes on SIGTERM:", stopped)
        assert stopped == {"writer": 0, "fanout": 0, "syncer": 0}, {n: "".join(r.lines[-10:]) for n, r in roles.items()}
        assert any('"fanout.drained"' in x for x in roles["fanout"].lines)
        assert any('"signal": "SIGTERM"' in x for x in roles["writer"].lines)
    finally:
        for role in roles.values():
            if role.proc.poll() is None:
                role.proc.kill()
                role.proc.wait(10)


def test_up_role_serves_and_stops_on_sigterm(tmp_path):
    env = base_env(tmp_path)
    base = free_port()
    up = Role(["up", "-c", "fanout=1", "-p", str(base)], env, tmp_path)
    try:
        up.wait_for('"fanout.joined_stream"')
        deadline = time.monotonic() + 30
        while (put := run(["--endpoints", f"127.0.0.1:{base}", "put", "up/k", "v"], env, tmp_path)).returncode:
            assert time.monotonic() < deadline, put.stderr
            time.sleep(0.2)
        assert up.stop() == 0, "".join(up.lines[-20:])
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait(10)


def test_no_argument_prints_the_roles(tmp_path):
    out = run([], base_env(tmp_path), tmp_path)
    assert out.returncode == 0
    for role in ("writer | syncer", "fanout", "up", "health"):
        assert role in out.stdout, out.stdout
