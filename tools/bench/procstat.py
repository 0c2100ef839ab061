"""Process figures (CPU seconds, RSS) from /proc, percentiles, and the terminal counter."""
from __future__ import annotations

import os
import sys
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (children not included); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        try:
            import psutil
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system
        except Exception:
            return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK     # utime, stime (fields 14, 15)


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss // 1024
    except Exception:
        return None


def snapshot(pids: dict[str, int]) -> dict[str, dict]:
    return {name: {"cpu_s": cpu_seconds(pid), "rss_kib": rss_kib(pid)} for name, pid in pids.items()}


def delta_cpu(before: dict, after: dict) -> dict[str, float | None]:
    out = {}
    for name, a in after.items():
        b = before.get(name, {})
        if a.get("cpu_s") is None or b.get("cpu_s") is None:
            out[name] = None
        else:
            out[name] = round(a["cpu_s"] - b["cpu_s"], 3)
    return out


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def self_max_rss_kib() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def percentiles(values, qs=(0.5, 0.9, 0.99)) -> dict:
    """Nearest-rank percentiles (and max) of a sequence; values sorted in place if a list."""
    if not len(values):
        return {f"p{int(q * 100)}": None for q in qs} | {"max": None}
    s = sorted(values)
    n = len(s)
    out = {}
    for q in qs:
        out[f"p{int(round(q * 100))}"] = s[min(n - 1, max(0, int(q * n + 0.999999) - 1))]
    out["max"] = s[-1]
    return out


class Counter:
    """A running "label: done/total" line on stderr while a long phase runs (TTY only)."""

    def __init__(self, label: str, total: int, read, enabled: bool | None = None, period: float = 0.5):
        self.label, self.total, self.read, self.period = label, total, read, period
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.enabled:
            self._t0 = time.monotonic()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _line(self):
        done = self.read()
        el = time.monotonic() - self._t0
        rate = done / el if el > 0 else 0
        return f"\r  {self.label}: {done:,}/{self.total:,} ({rate:,.0f}/s, {el:.1f}s)\x1b[K"

    def _run(self):
        while not self._stop.wait(self.period):
            sys.stderr.write(self._line())
            sys.stderr.flush()

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            sys.stderr.write(self._line() + "\n")
            sys.stderr.flush()
