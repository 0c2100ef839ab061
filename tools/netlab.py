"""Hosts on one machine: Linux network namespaces joined by a userspace router that can delay,
lose and cut packets per directed link, for the multi-host test (tools/multihost.py).

    with Lab(["a", "b", "c"]) as lab:
        subprocess.Popen(lab.argv("b", ["python", "-m", "zwatch.actors.fanout", f"tcp://{lab.ip('b')}:2379"]))
        lab.impair("a", "b", delay_ms=20, jitter_ms=5)     # both directions
        lab.partition("a", "b"); ...; lab.heal("a", "b")
        lab.stats()                                        # packets forwarded / dropped per link

Each host is a namespace `zwlab<pid>-<host>` with `lo` up and ONE TUN device (`zl<pid>-<i>`,
address 10.<200-250>.<random>.<i>/24: a random /24 per run, so two runs never share one; mtu
1500).  The TUN fds are held by one router process (`python -m zwatch.tools.netlab router`, in
the root namespace, driven by JSON lines on its stdin/stdout): it reads every IP packet a host
sends, routes it by destination address to that host's TUN fd, and applies the rules of the
directed link (source host, destination host) on the way.  A TCP connection between two hosts
is therefore a real kernel TCP connection in each namespace; only the wire between them is ours.

Why userspace and not `tc netem` on veth pairs: the kernels this runs on have no sch_netem and
no tc classifiers/actions (`tc qdisc add ... netem` says "Specified qdisc kind is unknown"), and
no iptables/nft to drop packets.  The router applies netem's model instead: a fixed delay plus
a uniform jitter per packet (packets may be reordered by it, as with netem), a random loss
percentage, and "down" (every packet dropped: a partition; the hosts' links stay up, as when a
switch or firewall between them drops traffic).  Costs: every packet crosses a Python process
(a few thousand packets per second are fine for the test's load; the base latency is ~0.1 ms).

Cleanup: Lab.close() (also at exit and on the context's end) stops the router, which deletes the
TUN devices, and deletes the namespaces.  Namespaces left by a run that died hard (SIGKILL) are
removed by the next Lab: their names carry the creating pid, and a pid that is gone means stale.
"""
from __future__ import annotations

import atexit
import fcntl
import heapq
import itertools
import json
import os
import random
import re
import selectors
import shutil
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

NS_PREFIX = "zwlab"
_NS_RE = re.compile(rf"^{NS_PREFIX}(\d+)-")
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
MTU = 1500


# ------------------------------------------------------------------------------ pure logic
@dataclass
class Rule:
    """netem's model for one directed link."""
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    down: bool = False

    @property
    def clear(self) -> bool:
        return not (self.delay_ms or self.jitter_ms or self.loss_pct or self.down)


@dataclass
class LinkStats:
    forwarded: int = 0
    lost: int = 0          # dropped by loss_pct
    cut: int = 0           # dropped because the link is down
    delayed: int = 0       # queued with a delay above zero
    bytes: int = 0

    def as_dict(self) -> dict:
        return {"forwarded": self.forwarded, "lost": self.lost, "cut": self.cut, "delayed": self.delayed,
                "bytes": self.bytes}


@dataclass
class Links:
    """Rules, counters and the queue of delayed packets: no I/O, so tests drive it with a fake
    clock and a seeded RNG.  Hosts are names; `route` maps an IPv4 address (4 bytes) to a host."""
    rng: random.Random = field(default_factory=random.Random)
    rules: dict = field(default_factory=dict)            # (src, dst) -> Rule
    stats: dict = field(default_factory=dict)            # (src, dst) -> LinkStats
    route: dict = field(default_factory=dict)            # dst address bytes -> host
    unroutable: int = 0
    _heap: list = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)

    def rule(self, src: str, dst: str) -> Rule:
        return self.rules.get((src, dst)) or Rule()

    def set_rule(self, src: str, dst: str, rule: Rule):
        if rule.clear:
            self.rules.pop((src, dst), None)
        else:
            self.rules[(src, dst)] = rule

    def link_stats(self, src: str, dst: str) -> LinkStats:
        st = self.stats.get((src, dst))
        if st is None:
            st = self.stats[(src, dst)] = LinkStats()
        return st

    def submit(self, src: str, packet: bytes, now: float) -> float | None:
        """A packet host `src` sent at `now`: queue it for its destination host.  Returns when it
        is due (seconds, same clock as now), or None when it was dropped."""
        dst = self.destination(packet)
        if dst is None:
            self.unroutable += 1
            return None
        st = self.link_stats(src, dst)
        r = self.rule(src, dst)
        if r.down:
            st.cut += 1
            return None
        if r.loss_pct and self.rng.random() * 100.0 < r.loss_pct:
            st.lost += 1
            return None
        delay = r.delay_ms
        if r.jitter_ms:
            delay += self.rng.uniform(-r.jitter_ms, r.jitter_ms)
        if delay > 0:
            st.delayed += 1
        due = now + max(0.0, delay) / 1000.0
        heapq.heappush(self._heap, (due, next(self._seq), src, dst, packet))
        return due

    def destination(self, packet: bytes) -> str | None:
        if len(packet) < 20 or packet[0] >> 4 != 4:      # IPv4 only (the kernel's IPv6 chatter is not routed)
            return None
        return self.route.get(bytes(packet[16:20]))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, str, bytes]]:
        """(src, dst, packet) of every packet due by `now`, in due order.  A link cut while a
        packet was in flight drops it (the partition starts at once, as a pulled cable)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            _due, _n, src, dst, packet = heapq.heappop(self._heap)
            st = self.link_stats(src, dst)
            if self.rule(src, dst).down:
                st.cut += 1
                continue
            st.forwarded += 1
            st.bytes += len(packet)
            out.append((src, dst, packet))
        return out

    def snapshot(self) -> dict:
        return {f"{s}>{d}": st.as_dict() for (s, d), st in sorted(self.stats.items())} | {
            "unroutable": self.unroutable, "queued": len(self._heap)}


# ------------------------------------------------------------------------------ the router process
def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Router:
    """One thread: a selector over stdin (commands) and every TUN fd, a heap of due packets."""

    def __init__(self, out=sys.stdout, seed: int | None = None):
        self.links = Links(rng=random.Random(seed))
        self.fds: dict[str, int] = {}          # host -> TUN fd
        self.sel = selectors.DefaultSelector()
        self.out = out
        self.write_errors = 0
        self._inbuf = b""
        self.running = True

    def command(self, msg: dict) -> dict:
        op = msg.get("op")
        if op == "add":                          # {"op": "add", "host", "ifname", "ip"}
            fd = open_tun(msg["ifname"])
            self.fds[msg["host"]] = fd
            self.links.route[bytes(map(int, msg["ip"].split(".")))] = msg["host"]
            self.sel.register(fd, selectors.EVENT_READ, msg["host"])
            return {"ok": True}
        if op == "rule":                         # {"op": "rule", "src", "dst", delay_ms, jitter_ms, loss_pct, down}
            self.links.set_rule(msg["src"], msg["dst"], Rule(
                float(msg.get("delay_ms", 0)), float(msg.get("jitter_ms", 0)),
                float(msg.get("loss_pct", 0)), bool(msg.get("down", False))))
            return {"ok": True}
        if op == "clear":
            self.links.rules.clear()
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "stats": self.links.snapshot(), "write_errors": self.write_errors}
        if op == "quit":
            self.running = False
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _stdin(self):
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            return
        if not chunk:                            # the Lab is gone: so are we
            self.running = False
            return
        self._inbuf += chunk
        while b"\n" in self._inbuf:
            line, self._inbuf = self._inbuf.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                reply = self.command(json.loads(line))
            except Exception as exc:              # a bad command is answered, the router goes on
                reply = {"ok": False, "error": repr(exc)}
            self.out.write(json.dumps(reply) + "\n")
            self.out.flush()

    def _read_tun(self, host: str, fd: int, now: float):
        for _ in range(256):                     # bounded: other hosts and the heap get their turn
            try:
                packet = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.links.submit(host, packet, now)

    def _deliver(self, now: float):
        for _src, dst, packet in self.links.pop_due(now):
            try:
                os.write(self.fds[dst], packet)
            except OSError:                      # the destination's queue is full: a drop, as on a wire
                self.write_errors += 1

    def run(self):
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, None)
        while self.running:
            due = self.links.next_due()
            now = time.monotonic()
            timeout = None if due is None else max(0.0, due - now)
            for key, _ev in self.sel.select(timeout):
                if key.data is None:
                    self._stdin()
                else:
                    self._read_tun(key.data, key.fd, time.monotonic())
            self._deliver(time.monotonic())


# ------------------------------------------------------------------------------ the lab
def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def die_with_parent():
    """Popen preexec_fn: the child gets SIGKILL when the process that started it dies, even by
    SIGKILL (PR_SET_PDEATHSIG survives `ip netns exec`'s exec), so that a lab killed hard leaves
    no router or actor running.  Start children from the main thread: it is that thread's exit
    that counts."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)      # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    p = _run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def sweep() -> list[str]:
    """Delete the namespaces of labs whose process is gone, after killing what still runs in them
    (the actors of a run that was SIGKILLed: they would keep the namespace alive for ever);
    returns their names."""
    gone = []
    for ns in list_namespaces():
        m = _NS_RE.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            for pid in _run("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _run("ip", "netns", "delete", ns, check=False)
            gone.append(ns)
    return gone


class Lab:
    def __init__(self, hosts, seed: int | None = None):
        self.hosts = list(hosts)
        if len(set(self.hosts)) != len(self.hosts) or not self.hosts:
            raise ValueError(f"host names must be unique: {self.hosts}")
        self.pid = os.getpid()
        rng = random.Random(seed)
        self.net = f"10.{rng.randint(200, 250)}.{rng.randint(0, 255)}"
        self.ns = {h: f"{NS_PREFIX}{self.pid}-{h}" for h in self.hosts}
        self.ifname = {h: f"zl{self.pid}-{i}"[:15] for i, h in enumerate(self.hosts)}
        self.addr = {h: f"{self.net}.{i + 1}" for i, h in enumerate(self.hosts)}
        self.router: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._made: list[str] = []
        self.swept: list[str] = []

    # -------------------------------------------------------------- availability
    @staticmethod
    def available() -> tuple[bool, str]:
        """(True, "") when namespaces and TUN devices can be made here, else (False, why)."""
        if not sys.platform.startswith("linux"):
            return False, "network namespaces need Linux"
        if os.geteuid() != 0:
            return False, "network namespaces need root (run as root)"
        if shutil.which("ip") is None:
            return False, "iproute2's `ip` command is not installed"
        try:
            os.close(os.open("/dev/net/tun", os.O_RDWR))
        except OSError as exc:
            return False, f"/dev/net/tun cannot be opened: {exc}"
        probe = f"{NS_PREFIX}{os.getpid()}-probe{random.randrange(1 << 30)}"
        p = _run("ip", "netns", "add", probe, check=False)
        if p.returncode != 0:
            return False, f"cannot create a network namespace: {p.stderr.strip()}"
        _run("ip", "netns", "delete", probe, check=False)
        return True, ""

    # -------------------------------------------------------------- lifetime
    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def start(self) -> Lab:
        atexit.register(self.close)
        self.swept = sweep()
        self.router = subprocess.Popen([sys.executable, "-m", "zwatch.tools.netlab", "router"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                       preexec_fn=die_with_parent)
        try:
            for h in self.hosts:
                ns = self.ns[h]
                _run("ip", "netns", "add", ns)
                self._made.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                self._call({"op": "add", "host": h, "ifname": self.ifname[h], "ip": self.addr[h]})
                _run("ip", "link", "set", self.ifname[h], "netns", ns)
                _run("ip", "-n", ns, "addr", "add", f"{self.addr[h]}/24", "dev", self.ifname[h])
                _run("ip", "-n", ns, "link", "set", self.ifname[h], "mtu", str(MTU), "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        """Stop the router (its TUN devices go with it) and delete the namespaces. Idempotent.
        Processes still running in a namespace keep it alive: stop them first."""
        if self._closed:
            return
        self._closed = True
        r = self.router
        if r is not None and r.poll() is None:
            try:
                r.stdin.close()                 # EOF: the router exits
                r.wait(5)
            except Exception:
                r.kill()
                r.wait(5)
        for ns in self._made:
            _run("ip", "netns", "delete", ns, check=False)
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    def _call(self, msg: dict) -> dict:
        with self._lock:
            if self.router is None or self.router.poll() is not None:
                raise RuntimeError("the lab's router is not running")
            self.router.stdin.write(json.dumps(msg) + "\n")
            self.router.stdin.flush()
            line = self.router.stdout.readline()
        if not line:
            raise RuntimeError("the lab's router exited")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"router refused {msg}: {reply.get('error')}")
        return reply

    # -------------------------------------------------------------- hosts
    def ip(self, host: str) -> str:
        return self.addr[host]

    def argv(self, host: str, argv) -> list[str]:
        """argv run in `host`'s namespace."""
        return ["ip", "netns", "exec", self.ns[host], *argv]

    # -------------------------------------------------------------- links
    def _pairs(self, a: str, b: str, both: bool):
        return [(a, b), (b, a)] if both else [(a, b)]

    def impair(self, a: str, b: str, *, delay_ms: float = 0, jitter_ms: float = 0, loss_pct: float = 0,
               both: bool = True):
        """netem's delay/jitter/loss on the link a->b (and b->a unless both=False); replaces its rule."""
        for s, d in self._pairs(a, b, both):
            self._call({"op": "rule", "src": s, "dst": d, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
                        "loss_pct": loss_pct})

    def partition(self, a: str, b: str, both: bool = True):
        for s, d in self._pairs(a, b, both):
            self._call({"op": "rule", "src": s, "dst": d, "down": True})

    def heal(self, a: str, b: str, both: bool = True):
        for s, d in self._pairs(a, b, both):
            self._call({"op": "rule", "src": s, "dst": d})

    def isolate(self, a: str):
        for b in self.hosts:
            if b != a:
                self.partition(a, b)

    def clear(self):
        self._call({"op": "clear"})

    def stats(self) -> dict:
        """{"a>b": {"forwarded", "lost", "cut", "delayed", "bytes"}, ..., "unroutable", "queued"}."""
        return self._call({"op": "stats"})["stats"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["router"]:
        Router().run()
        return 0
    if argv[:1] == ["sweep"]:
        for ns in sweep():
            print(f"deleted {ns}")
        return 0
    if argv[:1] == ["check"]:
        ok, why = Lab.available()
        print("ok" if ok else why)
        return 0 if ok else 1
    print("usage: python -m zwatch.tools.netlab router|sweep|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
