"""``zwatch up``: a small supervisor for development and single-host runs.

honcho (the Procfile) stops everything when one process exits, so the README's restart story
cannot be tried under it.  ``zwatch up [-c fanout=N] [-p BASEPORT]`` starts the writer, the
syncer and N fan-outs (fan-out k binds 127.0.0.1:BASEPORT+k through ``PORT``, as under honcho)
as child processes, prints their output prefixed like honcho (``07:01:02 fanout.1 | ...``),
and restarts a child that dies: after 0.1 s, doubling up to 5 s for a child that keeps dying,
back to 0.1 s once it stayed up 10 s (``supervisor.restarted`` with the figures).  A child that
exits with code 2 (a configuration error: a port in use, an unusable data dir, a bad setting)
would only fail again: it is not restarted (``supervisor.gave_up``, once); the others keep
running.  With ZWATCH_FANOUT_METRICS_PORT set, fan-out k gets that port + k (as its client
port is BASEPORT + k): one shared port made every fan-out but one exit.  SIGTERM or
SIGINT is forwarded as SIGTERM to every child (fan-outs drain: their clients move first); a
second one is forwarded again (fan-outs then stop at once); the supervisor exits once every
child is gone.

Backoff is the I/O-free policy (tests/unit/test_supervise.py); Supervisor does the processes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from .logsetup import configure

FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
STABLE_S = 10.0          # a child up this long starts again from FIRST_BACKOFF_S when it dies
CONFIG_ERROR = 2         # the actors' exit code for a configuration error (StartupError): never restarted


class Backoff:
    """Restart delays of one child: 0.1 s doubling to 5 s, reset after 10 s up."""

    def __init__(self, first: float = FIRST_BACKOFF_S, cap: float = MAX_BACKOFF_S, stable: float = STABLE_S):
        self.first, self.cap, self.stable = first, cap, stable
        self.next = first

    def died(self, uptime_s: float) -> float:
        """The delay before the restart of a child that died after uptime_s."""
        if uptime_s >= self.stable:
            self.next = self.first
        delay = self.next
        self.next = min(self.cap, self.next * 2)
        return delay


class Child:
    def __init__(self, name: str, argv: list[str], env: dict):
        self.name, self.argv, self.env = name, argv, env
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.restarts = 0
        self.backoff = Backoff()
        self.gave_up = False


def children(fanouts: int, base_port: int, python: str = sys.executable) -> list[Child]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("PORT", None)
    actor = [python, "-m", "zwatch.actors"]
    out = [Child("writer", actor + ["writer"], env), Child("syncer", actor + ["syncer"], env)]
    metrics = env.get("ZWATCH_FANOUT_METRICS_PORT", "").strip()
    for k in range(fanouts):
        kid_env = {**env, "PORT": str(base_port + k)}
        if metrics.isdigit():              # anything else: the fan-out reports the bad setting
            kid_env["ZWATCH_FANOUT_METRICS_PORT"] = str(int(metrics) + k)
        out.append(Child(f"fanout.{k + 1}", actor + ["fanout"], kid_env))
    return out


class Supervisor:
    def __init__(self, kids: list[Child], out=None):
        self.kids = kids
        self.out = out or sys.stdout
        self.width = max(len(k.name) for k in kids + [Child("supervisor", [], {})])
        self.lock = threading.Lock()
        self.stopping = 0            # signals received
        self.log = configure("supervisor")

    def emit(self, name: str, line: str):
        with self.lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {name.ljust(self.width)} | {line.rstrip()}\n")
            self.out.flush()

    def _pump(self, kid: Child, proc: subprocess.Popen):
        for line in proc.stdout:
            self.emit(kid.name, line)

    def start(self, kid: Child):
        # Its own session: a Ctrl-C in the terminal reaches only the supervisor, which forwards
        # SIGTERM (a fan-out drains) instead of every child getting SIGINT (stop at once).
        kid.proc = subprocess.Popen(kid.argv, env=kid.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1, start_new_session=True)
        kid.started_at = time.monotonic()
        kid.restart_at = None
        threading.Thread(target=self._pump, args=(kid, kid.proc), daemon=True).start()
        self.emit("supervisor", f"{kid.name} started (pid {kid.proc.pid})")

    def _signal(self, signum, frame):
        self.stopping += 1
        for kid in self.kids:
            if kid.proc is not None and kid.proc.poll() is None:
                try:
                    kid.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        for kid in self.kids:
            self.start(kid)
        while True:
            now = time.monotonic()
            alive = 0
            for kid in self.kids:
                if kid.proc is not None and kid.proc.poll() is None:
                    alive += 1
                    continue
                if self.stopping or kid.gave_up:
                    continue
                if kid.proc is not None and kid.proc.returncode == CONFIG_ERROR:
                    kid.gave_up = True
                    uptime = now - kid.started_at
                    self.log.error("supervisor.gave_up", child=kid.name, exit_code=CONFIG_ERROR,
                                   uptime_s=round(uptime, 3), restarts=kid.restarts)
                    self.emit("supervisor", f"{kid.name} exited with code {CONFIG_ERROR} (a configuration error: "
                                            f"see its last line) after {uptime:.1f} s: not restarted")
                    continue
                if kid.restart_at is None:            # it just died: schedule its restart
                    uptime = now - kid.started_at
                    delay = kid.backoff.died(uptime)
                    kid.restart_at = now + delay
                    kid.restarts += 1
                    code = kid.proc.returncode if kid.proc is not None else None
                    self.log.warning("supervisor.restarted", child=kid.name, exit_code=code,
                                     uptime_s=round(uptime, 3), backoff_s=delay, restarts=kid.restarts)
                    self.emit("supervisor", f"{kid.name} exited with code {code} after {uptime:.1f} s: "
                                            f"restart #{kid.restarts} in {delay:.1f} s")
                    alive += 1
                elif now >= kid.restart_at:
                    self.start(kid)
                    alive += 1
                else:
                    alive += 1
            if alive == 0 and (self.stopping or all(k.gave_up for k in self.kids)):
                codes = {k.name: k.proc.returncode for k in self.kids if k.proc is not None}
                self.log.info("supervisor.stopped", exit_codes=codes, restarts=sum(k.restarts for k in self.kids))
                self.emit("supervisor", f"every child stopped: {codes}")
                return 0 if self.stopping else CONFIG_ERROR      # else: every child gave up
            time.sleep(0.05)


def main(fanouts: int = 1, base_port: int = 2379) -> int:
    return Supervisor(children(fanouts, base_port)).run()
