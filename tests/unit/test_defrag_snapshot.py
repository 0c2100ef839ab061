"""Unit tests of the defrag swap and the snapshot pieces (actors/store/defrag.py, snapshot.py) on
real LMDB files in temp dirs, and of the ops' validation (protocol/requests.py)."""
from __future__ import annotations

import hashlib
import multiprocessing
import os

import pytest

from zwatch import requests
from zwatch.actors.store import Store, defrag, snapshot
from zwatch.errors import FailedPrecondition, InvalidArgument, ResourceExhausted


def fill_and_shrink(store: Store, keys=1500, value=b"x" * 2000):
    """Many big values, then deleted and compacted: most of the file is free pages."""
    for start in range(0, keys, 100):
        store.apply_batch([("put", {"key": b"k/%05d" % i, "value": value}) for i in range(start, start + 100)])
    store.apply_batch([("delete_range", {"key": b"k/", "range_end": b"k/01000"})])
    store.apply_batch([("put", {"key": b"last", "value": b"1"})])
    store.apply_batch([("compact", {"revision": store.current_revision()})])
    while store.compact_step(10_000):
        pass


def test_defrag_shrinks_the_file_and_keeps_the_content(tmp_path):
    store = Store(str(tmp_path))
    try:
        fill_and_shrink(store)
        rev = store.current_revision()
        snap_dir = str(tmp_path / "snaps")
        before = snapshot.status(snapshot.copy_store(store, snap_dir)[0])
        fig = defrag.defrag(store)
        print(f"defrag: {fig['db_size_before']} -> {fig['db_size_after']} bytes")
        assert fig["db_size_after"] * 2 < fig["db_size_before"], fig
        assert os.path.getsize(tmp_path / "data.mdb") == fig["db_size_after"]
        assert store.current_revision() == rev
        assert store.range({"key": b"last"})["kvs"][0]["value"] == b"1"
        assert store.range({"key": b"k/", "range_end": b"k0", "count_only": True})["count"] == 500
        assert not [n for n in os.listdir(tmp_path) if n.startswith(defrag.TMP_PREFIX)]
        # The store writes on after the swap, and its content hashes as before.
        after = snapshot.status(snapshot.copy_store(store, snap_dir)[0])
        assert (after["hash"], after["revision"], after["total_keys"]) == \
            (before["hash"], before["revision"], before["total_keys"])
        assert store.apply_batch([("put", {"key": b"new", "value": b"2"})])[0][0]["header"]["revision"] == rev + 1
    finally:
        store.close()


def test_leftover_copies_are_removed(tmp_path):
    (tmp_path / "defrag-abc.tmp").write_bytes(b"half a copy")
    (tmp_path / "data.mdb").write_bytes(b"")
    assert defrag.remove_leftovers(str(tmp_path)) == ["defrag-abc.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["data.mdb"]


def _reader(path, q_in, q_out):
    """Another process (LMDB: one env per file per process) following the writer's swaps."""
    store = Store(path)
    follower = defrag.Follower(store)
    while (cmd := q_in.get()) != "stop":
        reopened = follower.check()
        q_out.put((reopened, store.current_revision(), os.path.getsize(os.path.join(path, "data.mdb"))))
    store.close()


def test_a_reader_in_another_process_follows_the_swap(tmp_path):
    store = Store(str(tmp_path))
    ctx = multiprocessing.get_context("spawn")
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_reader, args=(str(tmp_path), q_in, q_out))
    p.start()
    try:
        fill_and_shrink(store)
        q_in.put("check")
        reopened, rev, _ = q_out.get(timeout=30)
        assert (reopened, rev) == (False, store.current_revision())
        defrag.defrag(store)
        store.apply_batch([("put", {"key": b"after", "value": b"x"})])   # only in the new file
        q_in.put("check")
        reopened, rev, _ = q_out.get(timeout=30)
        assert (reopened, rev) == (True, store.current_revision())
        q_in.put("check")
        assert q_out.get(timeout=30)[0] is False
    finally:
        q_in.put("stop")
        p.join(30)
        store.close()


def test_snapshots_are_read_in_chunks_and_removed_at_the_end(tmp_path):
    store = Store(str(tmp_path / "data"))
    try:
        fill_and_shrink(store, keys=2000, value=os.urandom(1500))
        now = [0.0]
        snaps = snapshot.Snapshots(str(tmp_path / "snaps"), idle_s=60, clock=lambda: now[0])
        s = snaps.begin(store)
        assert s.revision == store.current_revision() and len(s.token) == requests.SNAPSHOT_TOKEN_CHARS
        data, offset = b"", 0
        with pytest.raises(InvalidArgument):
            snaps.read(s.token, s.size + 1)
        while offset < s.size:
            chunk = snaps.read(s.token, offset)
            assert 0 < len(chunk) <= snapshot.CHUNK_BYTES
            data += chunk
            offset += len(chunk)
        assert s.size > snapshot.CHUNK_BYTES                     # more than one chunk was read
        assert hashlib.sha256(data).hexdigest() == s.sha256
        assert not os.path.exists(s.path)                        # gone after the last chunk
        with pytest.raises(FailedPrecondition):
            snaps.read(s.token, 0)
        # Idle ones expire; at most MAX_SNAPSHOTS at once.
        made = [snaps.begin(store) for _ in range(snapshot.MAX_SNAPSHOTS)]
        with pytest.raises(ResourceExhausted):
            snaps.begin(store)
        now[0] += 61
        assert snaps.expire() == snapshot.MAX_SNAPSHOTS
        assert not any(os.path.exists(m.path) for m in made)
    finally:
        store.close()


def test_status_refuses_what_is_not_a_store(tmp_path):
    bad = tmp_path / "x.db"
    bad.write_bytes(b"not lmdb" * 1000)
    with pytest.raises(InvalidArgument):
        snapshot.status(str(bad))


@pytest.mark.parametrize("body", [
    {}, {"offset": 0}, {"token": "a" * 32}, {"token": "A" * 32, "offset": 0}, {"token": "a" * 31, "offset": 0},
    {"token": b"a" * 32, "offset": 0}, {"token": "a" * 32, "offset": -1}, {"token": "a" * 32, "offset": "0"},
    {"token": "a" * 32, "offset": 0, "extra": 1}, [], None,
])
def test_snapshot_read_refuses_bad_input(body):
    with pytest.raises(InvalidArgument):
        requests.normalize("snapshot_read", body)


def test_maintenance_ops_take_empty_bodies():
    assert requests.normalize("defrag", {}) == {}
    assert requests.normalize("snapshot_begin", {}) == {}
    with pytest.raises(InvalidArgument):
        requests.normalize("defrag", {"x": 1})
    assert requests.normalize("snapshot_read", {"token": "0f" * 16, "offset": 7}) == {"token": "0f" * 16, "offset": 7}


def test_snapshot_status_table_is_etcdctls():
    """etcdctl 3.4.23 `snapshot status -w table` of a 1-key store, verbatim."""
    from zwatch.cli.snapshotcmd import table
    assert table(["hash", "revision", "total keys", "total size"], [["3a416a63", "2", "5", "20 kB"]], right=True) == [
        "+----------+----------+------------+------------+",
        "|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |",
        "+----------+----------+------------+------------+",
        "| 3a416a63 |        2 |          5 |      20 kB |",
        "+----------+----------+------------+------------+",
    ]
