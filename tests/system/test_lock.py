"""Client.lock (protocol/client/concurrency.py, etcd's concurrency.Mutex) against real processes.

The contention test runs N plain processes (subprocess + a small zwatch.Client script) that take
one lock in a loop, and SIGKILLs the holder a few times.  Mutual exclusion is checked by what
only a holder may touch: an O_EXCL marker file it creates after acquire and removes before
release (a second marker means two holders), and a counter file it increments with a
read-sleep-write (two holders would write the same value).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

MIN_TTL_1 = {"ZWATCH_LEASE_MIN_TTL": "1"}

CONTENDER = r'''
import os, random, sys, time
from zwatch import Client

endpoints, workdir, ttl = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
marker, counter, log = (os.path.join(workdir, n) for n in ("holder", "counter", "log"))
pid = os.getpid()

def record(*fields):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())
    os.close(fd)

client = Client(endpoints, heartbeat=0.5, timeout=5)
lock = client.lock("jobs/lock", ttl=ttl)
record("STARTED", pid, time.time())
while True:
    lock.acquire()
    acquired = time.time()
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        record("VIOLATION", pid, acquired, open(marker).read())
        os._exit(3)
    os.write(fd, str(pid).encode())
    os.close(fd)
    record("ACQUIRED", pid, acquired, lock.key.decode())
    with open(counter) as f:
        value = int(f.read() or 0)
    time.sleep(random.uniform(0.05, 0.25))        # a second holder in here reads the same value
    with open(counter + f".{pid}", "w") as f:
        f.write(str(value + 1))
    os.replace(counter + f".{pid}", counter)
    record("INC", pid, value + 1)
    time.sleep(random.uniform(0.0, 0.15))
    os.remove(marker)
    record("RELEASED", pid, time.time())
    lock.release()
    time.sleep(random.uniform(0.0, 0.1))
'''


class Contenders:
    def __init__(self, endpoints, workdir, ttl):
        self.endpoints, self.workdir, self.ttl = endpoints, str(workdir), ttl
        self.script = os.path.join(self.workdir, "contender.py")
        with open(self.script, "w") as f:
            f.write(CONTENDER)
        with open(os.path.join(self.workdir, "counter"), "w") as f:
            f.write("0")
        self.procs: dict[int, subprocess.Popen] = {}
        self.killed: set[int] = set()

    def start(self) -> int:
        p = subprocess.Popen([sys.executable, self.script, ",".join(self.endpoints), self.workdir, str(self.ttl)],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.workdir, "stderr"), "a"))
        self.procs[p.pid] = p
        return p.pid

    def holder(self) -> int | None:
        try:
            with open(os.path.join(self.workdir, "holder")) as f:
                return int(f.read() or 0) or None
        except FileNotFoundError:
            return None

    def kill(self, pid: int):
        self.procs[pid].send_signal(signal.SIGKILL)
        self.procs[pid].wait(10)
        self.killed.add(pid)

    def log(self) -> list[list[str]]:
        with open(os.path.join(self.workdir, "log")) as f:
            return [line.split() for line in f]

    def stop(self):
        for pid, p in self.procs.items():
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_lock_under_holder_sigkills_one_holder_at_a_time_and_a_dead_holders_lock_freed_within_ttl(
        make_cluster, tmp_path):
    ttl = 2
    c = make_cluster(env=MIN_TTL_1)
    workdir = tmp_path / "lock"
    workdir.mkdir()
    contenders = Contenders(c.fanout_eps, workdir, ttl)
    for _ in range(4):
        contenders.start()
    holder_kills: list[tuple[int, float]] = []     # (pid, wall time of the kill) of holders killed holding
    try:
        end = time.monotonic() + 20
        next_kill = time.monotonic() + 3
        while time.monotonic() < end:
            for pid, p in contenders.procs.items():
                assert pid in contenders.killed or p.poll() is None, \
                    f"contender {pid} exited {p.returncode}: {open(workdir / 'stderr').read()[-2000:]}"
            holder = contenders.holder()
            if (end - ttl - 3 > time.monotonic() >= next_kill and holder in contenders.procs
                    and holder not in contenders.killed):
                contenders.kill(holder)
                killed_at = time.time()
                if contenders.holder() == holder:         # it died holding: only it could remove the marker
                    holder_kills.append((holder, killed_at))
                    os.remove(workdir / "holder")        # before its lease can expire (TTL 2 s)
                    next_kill = time.monotonic() + 3
                contenders.start()
            time.sleep(0.02)
    finally:
        contenders.stop()
    log = contenders.log()
    assert [r for r in log if r[0] == "VIOLATION"] == []
    acquired = [(int(r[1]), float(r[2])) for r in log if r[0] == "ACQUIRED"]
    released = {}
    intervals = []
    for r in log:
        if r[0] == "ACQUIRED":
            released[int(r[1])] = len(intervals)
            intervals.append([float(r[2]), None, int(r[1])])
        elif r[0] == "RELEASED":
            intervals[released.pop(int(r[1]))][1] = float(r[2])
    # Holding intervals (acquire returned .. release called; a killed holder's until its kill) never overlap.
    kill_time = dict(holder_kills)
    for interval in intervals:
        if interval[1] is None:
            interval[1] = kill_time.get(interval[2], float("inf"))
    intervals.sort()
    for a, b in zip(intervals, intervals[1:]):
        assert a[1] <= b[0], f"two holders: {a} and {b}"
    # The counter only a holder touches: each increment exactly once, in order.
    incs = [int(r[2]) for r in log if r[0] == "INC"]
    assert incs == sorted(set(incs)), incs
    # Every killed holder's lock went to the next contender within its TTL (plus the expiry's
    # revoke, the DELETE's delivery and the next contender's round trips).
    freed_after = []
    for pid, killed_at in holder_kills:
        after = [t for p, t in acquired if t > killed_at]
        assert after, f"no acquire after the kill of {pid} at {killed_at}"
        freed_after.append(round(after[0] - killed_at, 2))
    print(f"acquires={len(acquired)} holder_kills={len(holder_kills)} kill_to_next_acquire_s={freed_after}")
    assert max(freed_after, default=0) <= ttl + 1.5, freed_after
    assert len(holder_kills) >= 3 and len(incs) >= 15, (holder_kills, len(incs))
    keys = {r[3] for r in log if r[0] == "ACQUIRED"}
    assert all(k.startswith("jobs/lock/") and int(k.rsplit("/", 1)[1], 16) > 0 for k in keys)


def test_lock_api_acquire_timeout_release_and_key_format(cluster):
    a, b = cluster.client(), cluster.client()
    la, lb = a.lock("res", ttl=5), b.lock("res", ttl=5)
    assert not la.is_acquired() and la.release() is False
    assert la.acquire(timeout=2)
    assert la.key == b"res/%x" % la.lease.id            # etcdctl lock's key: <name>/<lease ID hex>
    kv = a.get(la.key).kvs[0]
    assert kv.value == b"" and kv.lease == la.lease.id  # etcdctl lock's value: empty
    assert la.is_acquired() and la.acquire(timeout=1)   # the same lease finds its own key: still held
    assert not lb.acquire(timeout=0.5)                  # timed out: its key and lease are gone again
    assert lb.key is None and lb.lease is None
    assert [k.key for k in a.get("res/", prefix=True).kvs] == [la.key]
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("b", lb.acquire(timeout=10)))
    t.start()
    time.sleep(0.5)
    assert not result and la.release() and not la.is_acquired()
    t.join(10)
    assert result == {"b": True} and lb.is_acquired()
    lease = lb.lease
    lb.release()
    assert not lease.alive and a.time_to_live(lease.id).ttl == -1   # release revokes the lease too
    assert a.get("res/", prefix=True).kvs == []
    with a.lock("res", ttl=5) as held:
        assert held.is_acquired()
    assert not held.is_acquired()


def test_waiters_get_the_lock_in_create_order(cluster):
    """etcd's Mutex: each contender waits for the DELETE of the key created just before its own,
    so the lock goes in create_revision order, one contender per release."""
    clients = [cluster.client() for _ in range(5)]
    locks = [c.lock("fifo", ttl=10) for c in clients]
    assert locks[0].acquire(timeout=2)
    order, done = [], threading.Event()
    lock_order = threading.Lock()

    def contend(i):
        assert locks[i].acquire(timeout=30)
        with lock_order:
            order.append(i)
        done.set()

    threads = []
    for i in range(1, 5):
        t = threading.Thread(target=contend, args=(i,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5                  # queue them one after the other
        while len(clients[0].get("fifo/", prefix=True).kvs) < i + 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    # No herd: each waiter watches one key, the one created just before its own (not the holder's).
    for i in range(1, 5):
        deadline = time.monotonic() + 5
        while len(clients[i]._watches) != 1:
            assert time.monotonic() < deadline, clients[i]._watches
            time.sleep(0.02)
        (watch,) = clients[i]._watches.values()
        assert watch.body["key"] == locks[i - 1].key and "range_end" not in watch.body
    locks[0].release()
    for expected in range(1, 5):
        assert done.wait(5)
        done.clear()
        time.sleep(0.3)                                  # nobody else may get it meanwhile
        assert order == list(range(1, expected + 1)), order
        locks[expected].release()
    for t in threads:
        t.join(5)
