"""`zwatch up` (actors/supervise.py) with real processes, and the one-line start-up errors of the
actors (a port in use, an unusable data dir: exit code 2, no traceback, a log event)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from zwatch.tools.cluster import free_port
from zwatch import Client


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env.update({"ZWATCH_DATA_DIR": str(tmp_path / "data"), "ZWATCH_WRITER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
                "ZWATCH_PUB_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
                "ZWATCH_SYNCER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}", "ZWATCH_LOG_FORMAT": "json",
                "ZWATCH_DRAIN_S": "3", "PYTHONUNBUFFERED": "1"})
    env.pop("PORT", None)
    env.update(extra)
    return env


class Up:
    def __init__(self, argv, env):
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern, count=1, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in (re.search(pattern, x) for x in list(self.lines)) if m]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"no {pattern!r} x{count}:\n" + "".join(self.lines[-40:]))


def test_up_restarts_a_dead_child_and_stops_everything_on_sigterm(tmp_path):
    base = free_port()
    while True:                              # two free ports in a row for two fan-outs
        if base < 65000:
            try:
                import socket
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + 1))
                break
            except OSError:
                pass
        base = free_port()
    up = Up([sys.executable, "-m", "zwatch.cli", "up", "-c", "fanout=2", "-p", str(base)], _env(tmp_path))
    try:
        up.wait_for(r"fanout\.\d +\| .*fanout\.joined_stream", 2)
        pids = {m.group(1): int(m.group(2)) for m in up.wait_for(r"supervisor +\| (\S+) started \(pid (\d+)\)", 4)}
        assert set(pids) == {"writer", "syncer", "fanout.1", "fanout.2"}
        c = Client([f"tcp://127.0.0.1:{base}", f"tcp://127.0.0.1:{base + 1}"], timeout=10)
        c.put("up/a", "1")
        os.kill(pids["fanout.1"], signal.SIGKILL)            # a child dies: it comes back
        up.wait_for(r"supervisor +\| fanout\.1 started \(pid (\d+)\)", 2)
        up.wait_for(r"fanout\.1 +\| .*fanout\.start", 2)
        restarted = [json.loads(x[x.index("{"):]) for x in up.lines if "supervisor.restarted" in x]
        print(restarted)
        assert len(restarted) == 1 and restarted[0]["child"] == "fanout.1" and restarted[0]["backoff_s"] == 0.1
        os.kill(pids["writer"], signal.SIGKILL)              # the writer too; writes work again after
        up.wait_for(r"supervisor +\| writer started \(pid (\d+)\)", 2)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert c.put("up/b", "2").header.revision >= 3
                break
            except Exception:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        c.close()
        up.proc.send_signal(signal.SIGTERM)                  # forwarded: everything stops cleanly
        code = up.proc.wait(30)
        assert code == 0, "".join(up.lines[-30:])
        up.wait_for(r"every child stopped")
        stopped = [x for x in up.lines if "supervisor.stopped" in x][0]
        codes = json.loads(stopped[stopped.index("{"):])["exit_codes"]
        print(stopped)
        assert codes == {"writer": 0, "syncer": 0, "fanout.1": 0, "fanout.2": 0}, codes
        assert not any("Traceback" in x for x in up.lines)
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait(10)


def _run_actor(actor, env, timeout=30):
    return subprocess.run([sys.executable, "-m", "zwatch.actors", actor], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_port_in_use_is_one_line_and_exit_code_2(tmp_path):
    import socket
    for actor, var in (("fanout", "ZWATCH_FANOUT_ENDPOINT"), ("writer", "ZWATCH_WRITER_ENDPOINT"),
                       ("syncer", "ZWATCH_SYNCER_ENDPOINT")):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            ep = f"tcp://127.0.0.1:{s.getsockname()[1]}"
            r = _run_actor(actor, _env(tmp_path, **{var: ep}))
        what = {"fanout": "fan-out"}.get(actor, actor)
        assert r.returncode == 2, (actor, r.stdout, r.stderr)
        assert r.stderr == f"zwatch {actor}: cannot bind {ep}: address already in use (is another {what} running?)\n"
        assert f'"{actor}.bind_failed"' in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_an_unusable_data_dir_is_one_line_and_exit_code_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for actor in ("writer", "syncer"):
        r = _run_actor(actor, _env(tmp_path, ZWATCH_DATA_DIR=str(blocker / "data")))
        assert r.returncode == 2, (actor, r.stdout, r.stderr)
        assert r.stderr.startswith(f"zwatch {actor}: cannot use data dir {blocker / 'data'}: ") and \
            r.stderr.count("\n") == 1, r.stderr
        assert f'"{actor}.data_dir_unwritable"' in r.stdout and "Traceback" not in r.stdout + r.stderr
