"""Online defrag and snapshots end to end (actors/store/defrag.py, snapshot.py; SPEC.md "Defrag,
snapshots"): a real cluster under live load while defrag runs several times, and a writer
SIGKILLed at each step of the swap (ZW_TEST_DEFRAG_KILL_AT)."""
from __future__ import annotations

import os
import random
import threading
import time

import pytest

from zwatch import errors
from zwatch.actors.store import defrag
from zwatch.actors.store import snapshot as store_snapshot
from zwatch.tools import checker
from zwatch.tools.checker import AckedWrite, StreamRecord, WatchSpec
from zwatch.tools.load import check_store_history, read_stream

from support import retry_unavailable

DEFRAGS = 5
BIG = 2000            # 4 KB values written then deleted: the free pages a defrag gives back


def fill_then_free(c, n=BIG):
    """n keys of 4 KB, then all but 100 deleted and compacted physically: the file keeps its size."""
    retry_unavailable(lambda: c.put("ping", "1"))       # the writer answers (after a restart)
    for start in range(0, n, 100):
        c.txn(success=[checker_put(f"big/{i:05d}", "v" * 4096) for i in range(start, start + 100)])
    c.delete("big/0", range_end="big/1")               # big/00000 .. big/00999
    c.delete("big/01", range_end="big/019")            # .. big/01899: 100 keys stay
    rev = c.put("mark", "1").header.revision
    c.compact(rev, physical=True)
    return rev


def checker_put(key, value):
    from zwatch.client import Put
    return Put(key, value)


def drain_until(w, rec: StreamRecord, final: int, timeout=60.0):
    assert read_stream(w, rec, final, time.monotonic() + timeout), \
        f"{rec.name} reached {checker.stream_reached(rec)} of {final}"


def test_defrag_under_live_load_keeps_every_guarantee_and_gives_space_back(make_cluster):
    """2 fan-outs; 2 writers putting unique keys and reading each back at once through the same
    fan-out (read-your-writes: the read goes to the syncer, which must follow the swap); live
    watches on each fan-out and catch-up watches created every few puts from older revisions
    (no ring: they replay from the syncer's file) while `defrag` runs DEFRAGS times.  Then the
    guarantees checker over the store's history, every acknowledged write present, and the file
    shrunk by the first defrag."""
    cl = make_cluster(fanouts=2, env={"ZWATCH_RING_REVISIONS": "0"})
    admin = cl.client(timeout=30)
    start = fill_then_free(admin) + 1
    size_full = os.path.getsize(os.path.join(cl.data_dir, "data.mdb"))
    stop = threading.Event()
    acked: list[AckedWrite] = []
    stale_reads: list = []
    failures: list = []
    streams: list = []            # (StreamRecord, watch handle)
    lock = threading.Lock()

    for i, ep in enumerate(cl.fanout_eps):
        c = cl.client([ep], timeout=30)
        streams.append((StreamRecord(f"live{i}", WatchSpec(b"k/", b"k0", start), []),
                        c.watch("k/", prefix=True, start_revision=start)))

    def load(n: int):
        c = cl.client([cl.fanout_eps[n % 2]], timeout=30)
        rnd = random.Random(n)
        i = 0
        try:
            while not stop.is_set():
                key, value = f"k/{n}/{i:06d}", f"v{i}"
                rev = c.put(key, value).header.revision
                with lock:
                    acked.append(AckedWrite(rev, ((key.encode(), value.encode()),)))
                r = c.get(key)                                     # read-your-writes
                if r.header.revision < rev or not r.kvs or r.kvs[0].value != value.encode():
                    stale_reads.append((key, rev, r.header.revision))
                if i % 25 == 10:                                   # a catch-up from the syncer
                    frm = rnd.randint(start, rev)
                    w = c.watch("k/", prefix=True, start_revision=frm)
                    with lock:
                        streams.append((StreamRecord(f"w{n}.{i}", WatchSpec(b"k/", b"k0", frm), []), w))
                i += 1
        except Exception as exc:       # reported below: the test must not hang on a dead thread
            failures.append(repr(exc))

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(2)]
    for t in threads:
        t.start()
    results = []
    try:
        for _ in range(DEFRAGS):
            time.sleep(0.4)
            results.append(admin.defrag())
    finally:
        time.sleep(0.4)
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures
    final = admin.put("k/end", "1").header.revision
    for rec, w in streams:
        drain_until(w, rec, final)

    for r in results:
        print(f"defrag: {r.db_size_before} -> {r.db_size_after} bytes, writes held {r.took_ms} ms")
    held = [e["writes_held_ms"] for e in cl["writer"].events("writer.defragged")]
    reopened = cl["syncer"].events("syncer.store_reopened")
    print(f"file before the first defrag {size_full}, after {results[0].db_size_after}; {len(acked)} puts, "
          f"{len(streams)} watches, writes held (ms) {held}, syncer reopened {len(reopened)} times")
    assert len(held) == DEFRAGS and len(reopened) >= 1
    assert results[0].db_size_after * 4 < results[0].db_size_before, results[0]
    assert not stale_reads, f"reads that missed their own acknowledged write: {stale_reads[:5]}"
    assert len(acked) > DEFRAGS * 10                 # the load really ran across the defrags

    cl.stop()
    res = check_store_history(cl.data_dir, [rec for rec, _ in streams], acked=acked, first=start, final=final)
    print(res.summary())
    assert res.ok, res.summary()


@pytest.mark.parametrize("bump", [0, 1000])
def test_snapshot_save_status_restore_round_trip(make_cluster, tmp_path, bump):
    """snapshot save through a fan-out while writes go on: the file's revision is exact (every key
    written up to it is in, none after), its sha256 checked; restored into a new data dir, a new
    cluster serves exactly that content and goes on from that revision (bump 0), or from that
    revision + bump with every older revision compacted (--bump-revision --mark-compacted: a
    watch resumed from before is canceled COMPACTED, so its client re-lists)."""
    cl = make_cluster()
    c = cl.client(timeout=30)
    for i in range(300):
        c.put(f"s/{i:04d}", os.urandom(3000).hex())
    path = str(tmp_path / "snap.db")
    info = c.snapshot_save(path)
    c.put("s/after", "x")
    st = store_snapshot.status(path)
    print(f"snapshot: {info.size} bytes at revision {info.revision}; status {st}")
    assert (st["revision"], st["total_size"]) == (info.revision, info.size)
    assert not os.path.exists(path + ".part")
    assert not os.listdir(os.path.join(cl.data_dir, "snapshots"))   # removed once read
    expected = {kv.key: kv.value for kv in c.get("s/", prefix=True, revision=info.revision).kvs}

    restored = tmp_path / "restored"
    from zwatch.cli.main import main as cli_main
    flags = ["--bump-revision", str(bump), "--mark-compacted"] if bump else []
    assert cli_main(["snapshot", "restore", path, "--data-dir", str(restored), "--bump-revision", "5"]) == 128
    assert cli_main(["snapshot", "restore", path, "--data-dir", str(restored), *flags]) == 0
    assert cli_main(["snapshot", "restore", path, "--data-dir", str(restored)]) == 1      # not empty
    cl2 = make_cluster(start=False)
    cl2.data_dir = str(restored)
    for a in cl2.actors.values():
        a.env = {**a.env, "ZWATCH_DATA_DIR": str(restored)}
    cl2.start()
    c2 = cl2.client(timeout=30)
    assert {kv.key: kv.value for kv in c2.get("s/", prefix=True).kvs} == expected
    assert c2.put("s/new", "1").header.revision == info.revision + bump + 1
    w = c2.watch("s/", prefix=True, start_revision=info.revision + 1)    # a watch resumed after a restore
    if bump:
        r = w.get(timeout=10)
        assert (r.canceled, r.compact_revision) == (True, info.revision + bump), r
    else:                                        # revisions went back: it sees the new writes only
        r = w.get(timeout=10)
        assert [e.kv.key for e in r.events] == [b"s/new"]


def test_maintenance_needs_root_with_auth(make_cluster, tmp_path):
    """etcd 3.4's authMaintenanceServer: Defragment and Snapshot need root (isAuthenticated =
    IsAdminPermitted)."""
    cl = make_cluster()
    c = cl.client(timeout=30)
    c.user_add("root", "rootpw")
    c.user_grant_role("root", "root")
    c.user_add("alice", "alicepw")
    c.auth_enable()
    alice = cl.client(user="alice", password="alicepw", timeout=30)
    with pytest.raises(errors.PermissionDenied):
        alice.defrag()
    with pytest.raises(errors.PermissionDenied):
        alice.snapshot_save(str(tmp_path / "a.db"))
    assert not os.path.exists(tmp_path / "a.db") and not os.path.exists(tmp_path / "a.db.part")
    root = cl.client(user="root", password="rootpw", timeout=30)
    assert root.defrag().db_size_after > 0
    assert root.snapshot_save(str(tmp_path / "r.db")).revision > 0


def test_bad_snapshot_reads_get_clear_errors(make_cluster):
    cl = make_cluster()
    c = cl.client(timeout=10)
    with pytest.raises(errors.InvalidArgument):
        c._call("snapshot_read", {"token": "nothex!", "offset": 0})
    with pytest.raises(errors.FailedPrecondition) as e:
        c._call("snapshot_read", {"token": "0" * 32, "offset": 0})
    assert e.value.details.get("reason") == "SNAPSHOT_NOT_FOUND"
    b = c._call("snapshot_begin", {})
    with pytest.raises(errors.InvalidArgument):
        c._call("snapshot_read", {"token": b["token"], "offset": b["size"] + 1})
    assert c.get("x").header.revision >= 1                   # and it keeps serving


@pytest.mark.parametrize("step", ["copied", "unlinked", "renamed"])
def test_writer_killed_mid_defrag_recovers_every_acknowledged_write(make_cluster, step):
    """SIGKILL the writer at a step of the swap (after the fsynced copy; after closing its env and
    unlinking lock.mdb; after the rename, before reopening).  Meanwhile the syncer keeps serving
    reads (it opens whatever pair is on disk under the shared swap lock); the restarted writer
    removes a leftover copy and opens a consistent store with every acknowledged write, the next
    put gets the next revision, and a live watch sees it without a gap."""
    cl = make_cluster()
    c = cl.client(timeout=30)
    writer = cl["writer"]
    writer.env = {**writer.env, defrag.KILL_AT_ENV: step}     # a writer that dies in a defrag
    writer.kill()
    writer.start()
    writer.wait_event("writer.start", count=2)
    fill_then_free(c)
    acked = {}
    for i in range(200):
        acked[f"k/{i:04d}"] = c.put(f"k/{i:04d}", f"v{i}").header.revision
    last = max(acked.values())
    w = c.watch("k/", prefix=True, start_revision=last + 1)
    with pytest.raises(errors.ZwatchError):
        c.defrag(timeout=10)                     # the writer dies at `step`: no answer
    deadline = time.monotonic() + 20
    while writer.alive():
        assert time.monotonic() < deadline, "".join(writer.raw[-15:])
        time.sleep(0.05)
    files = sorted(os.listdir(cl.data_dir))
    print(f"after the kill at {step}: {files}")
    leftover = [f for f in files if f.startswith(defrag.TMP_PREFIX)]
    # (lock.mdb may be back: the syncer, finding it gone, reopens and so creates a fresh one.)
    assert len(leftover) == {"copied": 1, "unlinked": 1, "renamed": 0}[step], files
    # The syncer still serves every acknowledged write while the writer is down.
    got = {kv.key.decode(): kv.mod_revision for kv in c.get("k/", prefix=True).kvs}
    assert got == acked

    writer.env = {k: v for k, v in writer.env.items() if k != defrag.KILL_AT_ENV}
    writer.start()
    writer.wait_event("writer.start", count=3)
    assert writer.events("writer.start")[-1]["revision"] == last
    assert writer.events("writer.defrag_started")
    assert not [f for f in os.listdir(cl.data_dir) if f.startswith(defrag.TMP_PREFIX)]
    rev = retry_unavailable(lambda: c.put("k/after", "1").header.revision)
    assert rev == last + 1
    r = c.get("k/after")                         # read-your-writes through the syncer
    assert (r.kvs[0].value, r.header.revision >= rev) == (b"1", True)
    got = {kv.key.decode(): kv.mod_revision for kv in c.get("k/", prefix=True).kvs}
    assert got == {**acked, "k/after": rev}
    ev = w.get(timeout=15)
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in ev.events] == [("PUT", b"k/after", rev)]
    # And a defrag now works (the store after the crash is a sound one).
    assert c.defrag().db_size_after > 0
    assert c.get("k/after").kvs[0].value == b"1"


def test_cli_defrag_and_snapshot_print_etcdctls_lines(make_cluster, tmp_path):
    """etcdctl 3.4.23's texts: `Finished defragmenting etcd member[EP]`, `Snapshot saved at FILE`,
    `HASH, REV, KEYS, SIZE`, and its exit codes for a wrong argument count (128)."""
    import subprocess
    import sys
    from zwatch.cli.format import humanize_bytes
    cl = make_cluster()
    ep = cl.fanout_eps[0]
    cl.client().put("a", "b")

    def z(*args):
        p = subprocess.run([sys.executable, "-m", "zwatch.cli", "--endpoints", ep, *args],
                           capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr
    assert z("defrag") == (0, f"Finished defragmenting etcd member[{ep}]\n", "")
    path = str(tmp_path / "s.db")
    assert z("snapshot", "save", path) == (0, f"Snapshot saved at {path}\n", "")
    rc, out, _ = z("snapshot", "status", path)
    st = store_snapshot.status(path)
    assert (rc, out) == (0, f"{st['hash']:x}, {st['revision']}, {st['total_keys']}, "
                            f"{humanize_bytes(st['total_size'])}\n"), out
    assert z("snapshot", "save")[::2] == (128, "Error: snapshot save expects one argument\n")
    assert z("snapshot", "status")[::2] == (128, "Error: snapshot status requires exactly one argument\n")
