"""Storage faults at the system level: a full store fails writes clearly and recovers."""
from __future__ import annotations

import time

import pytest

from zwatch import errors


def test_full_map_fails_writes_with_no_space_then_recovers(make_cluster):
    # A map that may grow from 256 KiB to 2 MiB only: the writer grows it on MapFullError,
    # then reports NO_SPACE; the store stays consistent and serves reads.
    cl = make_cluster(env={"ZWATCH_MAP_SIZE": str(256 << 10), "ZWATCH_MAX_MAP_SIZE": str(2 << 20)})
    c = cl.client()
    w = c.watch("fill/", prefix=True)
    value = "x" * 20_000
    acked = []
    with pytest.raises(errors.NoSpace):
        for i in range(500):
            acked.append(c.put(f"fill/{i % 20}", value).header.revision)
    assert len(acked) > 20                                   # the map grew past its first size
    before = c.get("fill/", prefix=True)
    assert before.header.revision == acked[-1] and before.count == 20
    # Every acknowledged write was delivered, none of the refused one.
    got = []
    while len(got) < len(acked):
        got.extend(e.kv.mod_revision for e in w.get(timeout=10).events)
    assert got == acked
    # Space returns: delete and compact; physical compaction frees pages LMDB reuses.
    c.delete("fill/", prefix=True)
    c.compact(c.get("x").header.revision)
    deadline = time.monotonic() + 20
    while True:
        try:
            c.put("fill/again", "ok")
            break
        except errors.NoSpace:
            assert time.monotonic() < deadline, "writes never succeeded again"
            time.sleep(0.2)
    assert c.get("fill/again").kvs[0].value == b"ok"
    assert cl["writer"].alive()
