"""A packet capture of a put over CURVE contains neither the key nor the value (issue #11).

The loopback traffic of a real cluster is captured while a client puts a unique key and value,
reads it back and watches it (client <-> fan-out, fan-out <-> writer, the PUB stream, fan-out <->
syncer).  Over CURVE neither byte string may appear anywhere in the capture; without CURVE both
must (the control that shows the capture really sees the cluster's traffic).

Capture: tcpdump when installed (Debian's package), else a raw AF_PACKET socket on `lo` (stdlib,
needs root or CAP_NET_RAW); skipped with the reason when neither works.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest

ETH_P_ALL = 0x0003


class RawCapture:
    """TCP payload bytes of the given loopback ports, from an AF_PACKET socket on `lo`."""

    def __init__(self, ports: set[int]):
        self.ports = ports
        self.packets = 0
        self.payload = bytearray()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        while not self.stopping.is_set():
            try:
                frame, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue                      # lo shows every packet twice: keep the incoming copy
            self._take(frame)

    def _take(self, frame: bytes):
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":      # Ethernet, IPv4 only (127.0.0.1)
            return
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:                                                 # TCP
            return
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
        src, dst = struct.unpack("!HH", tcp[:4])
        if src not in self.ports and dst not in self.ports:
            return
        self.packets += 1
        self.payload += tcp[(tcp[12] >> 4) * 4:]

    def stop(self) -> bytes:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
        return bytes(self.payload)


class TcpdumpCapture:
    """The same through tcpdump: the whole pcap file is searched (headers included: harmless)."""

    def __init__(self, ports: set[int], path: str):
        self.path = path
        self.packets = 0
        self.dropped = 0
        self.stderr: list[str] = []
        self.listening = threading.Event()
        expr = " or ".join(f"tcp port {p}" for p in sorted(ports))
        # --immediate-mode: packets reach tcpdump as they come (otherwise libpcap hands them over
        # in blocks, and those still in the kernel when SIGINT arrives are never written);
        # -U: each packet written as it comes; -B: a 16 MiB kernel buffer, so that a loaded
        # machine does not drop packets (the drop count is checked).
        self.proc = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-n", "-s", "0", "-B", "16384",
                                      "-w", path, expr],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "listening on" in line:
                self.listening.set()

    def start(self):
        if not self.listening.wait(15):
            self.proc.kill()
            raise OSError("".join(self.stderr).strip() or "tcpdump never said it was listening")
        return self

    def stop(self) -> bytes:
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        time.sleep(0.1)                        # the last stderr lines reach the reader thread
        for line in self.stderr:
            words = line.split()
            if "packets captured" in line:
                self.packets = int(words[0])
            elif "dropped by kernel" in line:
                self.dropped = int(words[0])
        with open(self.path, "rb") as f:
            return f.read()


def _capture(ports: set[int], tmp_path):
    if shutil.which("tcpdump"):
        try:
            return TcpdumpCapture(ports, str(tmp_path / "lo.pcap")).start()
        except OSError as exc:
            tcpdump_failed = f"tcpdump failed ({exc}); "
    else:
        tcpdump_failed = "tcpdump is not installed; "
    if not hasattr(socket, "AF_PACKET"):
        pytest.skip(tcpdump_failed + "no AF_PACKET sockets on this platform")
    try:
        return RawCapture(ports).start()
    except PermissionError:
        pytest.skip(tcpdump_failed + "a raw AF_PACKET socket needs root or CAP_NET_RAW")
    except OSError as exc:
        pytest.skip(tcpdump_failed + f"cannot open a raw socket on lo: {exc}")


def _ports(cluster) -> set[int]:
    return {int(ep.rsplit(":", 1)[1]) for ep in (cluster.writer_ep, cluster.pub_ep, cluster.syncer_ep,
                                                 *cluster.fanout_eps)}


@pytest.mark.parametrize("curve", [True, False], ids=["curve", "plain-control"])
def test_a_put_over_curve_shows_neither_key_nor_value_on_the_wire(make_cluster, tmp_path, curve):
    env = {"ZWATCH_CURVE_DIR": str(tmp_path / "curve")} if curve else {}
    c = make_cluster(env=env, start=False)
    capture = _capture(_ports(c), tmp_path)   # before the actors start: every handshake is in it
    try:
        c.start()
        client = c.client()
        assert (client.curve is not None) is curve
        key = f"capture/{uuid.uuid4().hex}".encode()
        value = os.urandom(8).hex().encode() + b"-the-value"
        w = client.watch(key)
        r = client.put(key, value)
        assert client.get(key).kvs[0].value == value
        assert w.get(timeout=5).events[0].kv.value == value
        history = client.watch(key, start_revision=r.header.revision).get(timeout=5)   # via the syncer
        assert history.events[0].kv.key == key
        time.sleep(0.3)                        # the last segments reach the capture
    finally:
        wire = capture.stop()
    assert capture.packets > 10 and len(wire) > 1000, "the capture saw no traffic of the cluster"
    assert getattr(capture, "dropped", 0) == 0, "the capture dropped packets: it proves nothing"
    if curve:
        assert key not in wire and value not in wire
    else:
        assert key in wire and value in wire
