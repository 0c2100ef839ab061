"""Start-up errors an operator fixes (issue #12, item 8): a port already in use gives one clear
line on stderr, a log event (`*.bind_failed`), exit code 2 and no traceback; ZWATCH_LOG_FORMAT=console gives readable lines through a pipe (no JSON,
no colour codes: stdout is not a TTY).  Real processes, loopback ports, temp dirs."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from zwatch.tools.cluster import free_port


def env_for(tmp_path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"ZWATCH_DATA_DIR": str(tmp_path / "data"), "ZWATCH_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                "ZWATCH_WRITER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
                "ZWATCH_PUB_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
                "ZWATCH_SYNCER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}"})
    for k in ("ZWATCH_WRITER_METRICS_PORT", "ZWATCH_SYNCER_METRICS_PORT", "ZWATCH_FANOUT_METRICS_PORT"):
        env.pop(k, None)
    env.update(extra)
    return env


def run_actor(actor: str, env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zwatch.actors", actor, *args], env=env, capture_output=True,
                          text=True, timeout=60)


def one_clear_line(r: subprocess.CompletedProcess, event: str):
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() and r.stderr.strip().count("\n") == 0, r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr + r.stdout
    assert f'"{event}"' in r.stdout, r.stdout


@pytest.fixture
def taken_port():
    """A loopback TCP port held by a listening socket for the test."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


# Each actor's client/internal endpoint and the data dir: tests/system/test_up.py.  Here: the second
# socket the writer binds (its publish endpoint), and the console format.
def test_writer_publish_port_in_use(tmp_path, taken_port):
    ep = f"tcp://127.0.0.1:{taken_port}"
    r = run_actor("writer", env_for(tmp_path, ZWATCH_PUB_ENDPOINT=ep))
    one_clear_line(r, "writer.bind_failed")
    assert r.stderr.strip() == f"zwatch writer: cannot bind {ep}: address already in use (is another writer running?)"


def test_console_log_format_is_readable_through_a_pipe(tmp_path, taken_port):
    ep = f"tcp://127.0.0.1:{taken_port}"
    r = run_actor("fanout", env_for(tmp_path, ZWATCH_LOG_FORMAT="console"), "--listen", ep)
    assert r.returncode == 2
    lines = [ln for ln in r.stdout.splitlines() if "fanout.bind_failed" in ln]
    assert lines, r.stdout
    assert not lines[0].lstrip().startswith("{") and "\x1b[" not in r.stdout, r.stdout   # no JSON, no colours
    assert f"endpoint={ep}" in lines[0], lines[0]
