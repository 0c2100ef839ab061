"""Issue #16 items 1 and 2 (SPEC.md section 7.7): a watch's initial state, then its changes; and
a resync (or a digest) instead of a cancel when the watch's next revision was compacted.

Through the real client against real processes.  The syncer's state chunks are made small here
(ZWATCH_SYNC_CHUNK_REVISIONS bounds a chunk's keys) so that every state spans many chunks.  Each
test checks the state against the truth: a range read at the state's revision R (checker.py,
check_state), and the changes after it against the writes.
"""
from __future__ import annotations

import asyncio
import queue
import time

import pytest

import zwatch
import zwatch.aio
from zwatch.tools.checker import apply_state, check_state, check_state_order

SMALL_CHUNKS = {"ZWATCH_SYNC_CHUNK_REVISIONS": "7"}


def _truth(c, prefix: str, revision: int) -> dict:
    return {kv.key: (kv.value, kv.mod_revision) for kv in c.get(prefix, prefix=True, revision=revision).kvs}


def _responses(w, until, timeout=20.0) -> list:
    """Responses of w until until(resp) is true for one (included)."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = w.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"timed out; got {[(r.ext, len(r.events)) for r in out]}")
        assert resp is not None and not resp.canceled, (resp, out)
        out.append(resp)
        if until(resp):
            return out


def test_initial_state_then_changes_in_one_watch(make_cluster):
    cl = make_cluster(env=SMALL_CHUNKS)
    c = cl.client()
    for i in range(50):
        c.put(f"st/{i:03d}", f"v{i}")
    c.delete("st/010")
    c.put("st/020", "again")
    c.put("other", "x")
    w = c.watch("st/", prefix=True, initial_state=True)
    got = _responses(w, lambda r: r.state_complete)
    chunks = [r for r in got if r.initial_state]
    end = got[-1]
    rev = end.header.revision
    assert len(chunks) >= 7, "the state came in one piece: the chunk bound did not apply"
    assert all(r.header.revision == rev for r in chunks) and not any(r.reset for r in got)
    assert all(len(r.events) <= 7 for r in chunks)
    assert check_state_order(got) == []
    held = apply_state({}, got)
    assert not check_state(held, _truth(c, "st/", rev), rev)
    assert held[b"st/020"] == (b"again", held[b"st/020"][1]) and b"st/010" not in held
    assert w.last_revision == rev
    # every change after R, none before it
    r1 = c.put("st/new", "n").header.revision
    r2 = c.delete("st/000").header.revision
    live = _responses(w, lambda r: any(e.kv.mod_revision == r2 for e in r.events))
    evs = [(e.type, e.kv.key, e.kv.mod_revision) for r in live for e in r.events]
    assert evs == [("PUT", b"st/new", r1), ("DELETE", b"st/000", r2)]
    assert not any(r.ext for r in live)
    w.cancel()


def test_initial_state_of_an_empty_range_and_a_single_key(cluster):
    c = cluster.client()
    c.put("one", "1")
    # A reset may come first: a fan-out that learns its syncer's instance (its first pong) after
    # the watch registered sends the registration again, and a state read registered twice
    # starts with a reset (the first one may have sent pieces); nothing else may.
    w = c.watch("nothing/", prefix=True, initial_state=True)
    got = [r for r in _responses(w, lambda r: r.state_complete) if not r.reset]
    assert [r.ext["mark"] for r in got] == ["state_end"] and got[0].is_progress_notify
    w1 = c.watch("one", initial_state=True)
    got = [r for r in _responses(w1, lambda r: r.state_complete) if not r.reset]
    assert [(r.ext["mark"], [e.kv.value for e in r.events]) for r in got] == [("state", [b"1"]), ("state_end", [])]


def test_initial_state_refuses_a_start_revision_and_bad_on_compacted(cluster):
    c = cluster.client()
    with pytest.raises(zwatch.InvalidArgument, match="start_revision"):
        c.watch("k", initial_state=True, start_revision=3)
    with pytest.raises(zwatch.InvalidArgument, match="on_compacted"):
        c.watch("k", on_compacted="relist")
    assert c.put("k", "still serving").header.revision > 0


def _compacted_history(c, prefix="rs/"):
    """Writes, a revision `base` the client 'holds', more writes, then a compaction past base."""
    for i in range(30):
        c.put(f"{prefix}{i:02d}", f"a{i}")
    base = c.put(f"{prefix}00", "base").header.revision
    held = _truth(c, prefix, base)
    for i in range(0, 30, 3):
        c.put(f"{prefix}{i:02d}", f"b{i}")
    for i in range(1, 30, 7):
        c.delete(f"{prefix}{i:02d}")
    c.put(f"{prefix}new", "n")
    top = c.put("unrelated", "u").header.revision
    c.compact(top)
    return base, held, top


@pytest.mark.parametrize("mode", ["resync", "digest"])
def test_on_compacted_resync_and_digest_instead_of_a_cancel(make_cluster, mode):
    cl = make_cluster(env=SMALL_CHUNKS)
    c = cl.client()
    base, held, top = _compacted_history(c)
    w = c.watch("rs/", prefix=True, start_revision=base + 1, on_compacted=mode)
    got = _responses(w, lambda r: r.state_complete)
    assert got[0].reset and all(r.initial_state for r in got[1:-1])
    rev = got[-1].header.revision
    assert rev >= top
    sent = sum(len(r.events) for r in got)
    if mode == "digest":
        # only what changed after base comes with its value; the rest by name
        assert all(e.kv.mod_revision > base for r in got for e in r.events)
        assert sum(len(r.unchanged_keys) for r in got) > 0
    else:
        assert sent == len(_truth(c, "rs/", rev))
    mine = apply_state(dict(held), got)
    assert not check_state(mine, _truth(c, "rs/", rev), rev)
    r1 = c.put("rs/after", "x").header.revision
    live = _responses(w, lambda r: bool(r.events))
    assert [(e.kv.key, e.kv.mod_revision) for r in live for e in r.events] == [(b"rs/after", r1)]
    # a plain watch is still canceled, as etcd
    plain = c.watch("rs/", prefix=True, start_revision=base + 1)
    resp = plain.get(timeout=10)
    assert resp.canceled and resp.compact_revision == top


def test_resync_when_compacted_while_catching_up_from_the_syncer(make_cluster):
    """The compaction is found by the syncer's batch (not at create): the fan-out turns its
    compacted cancel into a resync."""
    # The batch starts 1.5 s after the registration (quiet window and batch delay): the
    # compaction is in by then, so it is the batch that finds the watch compacted.
    cl = make_cluster(env={"ZWATCH_SYNC_CHUNK_REVISIONS": "5", "ZWATCH_RING_REVISIONS": "4",
                           "ZWATCH_SYNC_QUIET_S": "1.5", "ZWATCH_SYNC_BATCH_DELAY_S": "1.5"})
    c = cl.client()
    for i in range(40):
        c.put(f"cu/{i % 9}", f"v{i}")
    base = 2
    w = c.watch("cu/", prefix=True, start_revision=base + 1, on_compacted="resync")
    top = c.put("cu/last", "L").header.revision
    c.compact(top)
    got = []
    deadline = time.monotonic() + 20
    while not (got and got[-1].state_complete):
        resp = w.get(timeout=max(0.01, deadline - time.monotonic()))
        assert not resp.canceled, resp
        got.append(resp)
    # some history may have come before the reset; from the reset on, the state at R
    resets = [i for i, r in enumerate(got) if r.reset]
    assert resets, "the watch caught up before the compaction: nothing was resynced"
    from zwatch.tools.bench.systems import syncer_stats_at
    assert syncer_stats_at(cl.syncer_ep)["compacted"] >= 1, "not found compacted by the syncer's batch"
    rev = got[-1].header.revision
    assert not check_state(apply_state({}, got[resets[-1]:]), _truth(c, "cu/", rev), rev)


def test_asyncio_client_initial_state_and_resync(make_cluster):
    cl = make_cluster(env=SMALL_CHUNKS)
    c = cl.client()
    base, held, top = _compacted_history(c, "as/")

    async def main():
        async with zwatch.aio.Client(cl.fanout_eps[:1], timeout=5.0) as ac:
            w = await ac.watch("as/", prefix=True, initial_state=True)
            got = []
            async for resp in w:
                got.append(resp)
                if resp.state_complete:
                    break
            rs = await ac.watch("as/", prefix=True, start_revision=base + 1, on_compacted="digest")
            got2 = []
            async for resp in rs:
                got2.append(resp)
                if resp.state_complete:
                    break
            return got, got2

    got, got2 = asyncio.run(asyncio.wait_for(main(), 60))
    rev = got[-1].header.revision
    assert not check_state(apply_state({}, got), _truth(c, "as/", rev), rev)
    assert got2[0].reset
    rev2 = got2[-1].header.revision
    assert not check_state(apply_state(dict(held), got2), _truth(c, "as/", rev2), rev2)


def test_initial_state_across_a_fanout_kill(make_cluster):
    """The client's resume: a state cut by a failover is read again after a reset (the
    application never sees a mix); a state completed before it resumes as a plain watch."""
    cl = make_cluster(fanouts=2, env=SMALL_CHUNKS)
    writer = cl.client([cl.fanout_eps[1]], timeout=10)
    for i in range(1000):
        writer.put(f"fo/{i:04d}", "v" * 200)
    reader = cl.client(cl.fanout_eps, timeout=10)
    w = reader.watch("fo/", prefix=True, initial_state=True)
    first = w.get(timeout=10)
    assert first.initial_state
    cl["fanout0"].kill()
    got = [first] + _responses(w, lambda r: r.state_complete, timeout=30)
    assert check_state_order(got) == []          # the application never sees two states mixed
    assert [r.reset for r in got].count(True) == 1, "the state was complete before the kill: nothing was cut"
    rev = got[-1].header.revision
    assert not check_state(apply_state({}, got), _truth(writer, "fo/", rev), rev)
    r1 = writer.put("fo/after", "x").header.revision
    live = _responses(w, lambda r: bool(r.events))
    assert [(e.kv.key, e.kv.mod_revision) for r in live for e in r.events] == [(b"fo/after", r1)]


def test_a_slow_client_that_loses_state_pieces_goes_on_from_the_first_one_it_lacks(make_cluster):
    """Section 7.6 and 7.7: a session that does not read while its state arrives has its held
    pieces dropped (victims); its state then goes on at the same revision from the first piece
    it lacks (never from a hole, never read again from the start: that livelocked a client too
    slow to take a whole state between two stalls), and the application ends with the exact
    state and the changes after it."""
    cl = make_cluster(env={"ZWATCH_SESSION_WINDOW_BYTES": str(128 << 10), "ZWATCH_STALL_S": "0.3",
                           "ZWATCH_SYNC_CHUNK_REVISIONS": "20"})
    c = cl.client()
    from zwatch import Put
    for i in range(0, 2000, 100):
        c.txn([], [Put(f"sl/{k:05d}", "v" * 1000) for k in range(i, i + 100)], [])
    w = c.watch("sl/", prefix=True, initial_state=True)
    time.sleep(2.0)                     # not reading: the window fills, held pieces are dropped
    assert cl["fanout0"].events("watch.victim"), "the session never became a victim: nothing was dropped"
    got = _responses(w, lambda r: r.state_complete, timeout=60)
    assert not any(r.reset for r in got), "the state went on at its revision: no reset"
    assert len({r.header.revision for r in got}) == 1
    pieces = [e.kv.key for r in got for e in r.events]
    assert pieces == sorted(set(pieces)), "each key once, in key order: no piece twice, none lost"
    assert check_state_order(got) == []
    rev = got[-1].header.revision
    assert not check_state(apply_state({}, got), _truth(c, "sl/", rev), rev)
    r1 = c.put("sl/after", "x").header.revision
    live = _responses(w, lambda r: bool(r.events))
    assert [(e.kv.key, e.kv.mod_revision) for r in live for e in r.events] == [(b"sl/after", r1)]
