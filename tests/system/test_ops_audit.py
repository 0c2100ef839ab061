"""Audit of issue #12's operations features (defrag, snapshots, quota, metrics) as an operator
and a hostile client would use them: each test is named after the bug it pins down.  Tests of
bugs not fixed yet are strict xfails (the owner fixes them; the xfail then turns into a failure
that says so)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zwatch.actors.store import Store


def _store_file(tmp_path) -> str:
    """A real zwatch store of ~1.4 MB (300 puts of 3 KB)."""
    d = str(tmp_path / "store")
    s = Store(d)
    try:
        for i in range(300):
            s.apply_batch([("put", {"key": f"k{i:05d}".encode(), "value": os.urandom(3000)})])
    finally:
        s.close()
    return os.path.join(d, "data.mdb")


def _zwatch(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "zwatch.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.mark.xfail(strict=True, reason="snapshot.status() maps a truncated file and reads past its end: "
                   "SIGBUS (exit 135, no message) instead of a clear error; owner H6 (actors/store/snapshot.py): "
                   "compare (env.info()['last_pgno'] + 1) * env.stat()['psize'] with the file size first")
@pytest.mark.parametrize("cmd", ["status", "restore"])
def test_truncated_snapshot_is_refused_with_a_clear_error_not_a_sigbus(tmp_path, cmd):
    """A snapshot cut short (a copy interrupted by a full disk, a partial scp, a `.part` file
    renamed by hand) is what an operator most often feeds `snapshot status` / `restore`."""
    full = _store_file(tmp_path)
    cut = str(tmp_path / "cut.db")
    with open(full, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(os.path.getsize(full) // 3))
    args = ["snapshot", "status", cut] if cmd == "status" else \
        ["snapshot", "restore", cut, "--data-dir", str(tmp_path / "restored")]
    r = _zwatch(*args)
    print(r.returncode, r.stdout, r.stderr)
    assert r.returncode == 1, (r.returncode, r.stderr)          # etcdctl's ExitError, not a signal
    assert "Error:" in r.stderr and "cut.db" in r.stderr
    assert not os.path.exists(tmp_path / "restored" / "data.mdb")
