"""The syncer unmaps the LMDB map's pages a long replay touched (actors/syncer/mapped.py): the
process's file-backed RSS goes down, the data reads the same afterwards (Linux)."""
from __future__ import annotations

import mmap
import os
import sys

import pytest

from zwatch.actors.syncer import mapped

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and madvise")


def rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def test_release_unmaps_a_files_pages_and_they_read_the_same(tmp_path):
    path = tmp_path / "data.mdb"
    blob = os.urandom(1 << 16) * 512               # 32 MiB
    path.write_bytes(blob)
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    try:
        assert mapped.mappings_of(str(path))
        total = sum(m[i] for i in range(0, len(m), 4096))          # touch every page
        touched = rss_file_kib()
        assert mapped.release(str(path)) >= len(blob)
        assert rss_file_kib() < touched - 16 * 1024, "the 32 MiB of pages stayed mapped"
        assert sum(m[i] for i in range(0, len(m), 4096)) == total and m[:4096] == blob[:4096]
    finally:
        m.close()


def test_the_releaser_releases_after_enough_records(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(mapped, "release", lambda p: calls.append(p) or 1)
    r = mapped.Releaser(str(tmp_path / "data.mdb"), every=1000)
    assert not r.read(600) and not r.read(300)
    assert r.read(200) and calls == [str(tmp_path / "data.mdb")]
    assert not r.read(50, batch_done=True)          # a short batch: nothing to give back
    assert r.read(60, batch_done=True) and len(calls) == 2     # 110 >= 1000 // 10 at a batch's end
