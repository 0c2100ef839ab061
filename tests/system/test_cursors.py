"""Durable named cursors (SPEC.md 6.2) end to end: real processes, real sockets, real LMDB.

* a cursor survives writer restarts (SIGKILL) and holds compaction exactly: a client's compact
  past it is refused naming it, one to its revision + 1 passes; automatic compaction is clamped
  to it (writer.compaction_held) and goes on once the cursor advances;
* a cursor not advanced within its TTL is dropped, logged (writer.cursor_expired), and
  compaction may pass it;
* a consumer resumes by name after a restart of itself and of the writer, through the sync and
  the asyncio client: exactly the events after its last commit;
* the CLI: `zwatch cursor put|list|get|del` and `zwatch watch --cursor NAME`.
"""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest

from zwatch import errors
from zwatch.aio import Client as AsyncClient


def _events(w, n, timeout=10.0):
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n:
        resp = w.get(timeout=max(0.01, deadline - time.monotonic()))
        out += resp.events
    return out


def test_a_cursor_survives_writer_restarts_and_holds_compact_exactly(cluster):
    c = cluster.client()
    for i in range(5):
        c.put(f"a/{i}", "v")                                   # revisions 2..6
    cur = c.cursor("billing", "a/", prefix=True, ttl=600)
    assert cur.commit(4).revision == 4
    for i in range(3):
        c.put(f"a/x{i}", "w")                                  # 7..9
    cluster.restart("writer")
    got = c.cursor_get("billing").cursor
    assert (got.revision, got.lag_revisions, got.ttl) == (4, 5, 600)
    assert 590 <= got.ttl_remaining <= 600                     # a restart gives the full TTL again
    with pytest.raises(errors.FailedPrecondition) as exc:
        c.compact(6)
    assert exc.value.details["reason"] == "CURSOR_HOLDS" and exc.value.details["cursor"] == "billing"
    assert "'billing'" in exc.value.message
    c.compact(5)                                               # revision + 1: the resume point stays
    cluster.restart("writer")
    assert c.cursor_get("billing").cursor.revision == 4        # (a read: retried until the writer is back)
    with pytest.raises(errors.FailedPrecondition):
        c.compact(6)
    # The consumer resumes at 5 after all that: nothing lost.
    w = cur.watch()
    assert [e.kv.mod_revision for e in _events(w, 5)] == [5, 6, 7, 8, 9]
    w.cancel()
    cur.commit(9)
    assert c.put("a/y", "z").header.revision == 10
    c.compact(10)                                              # the advanced cursor's revision + 1
    c.put("a/y", "z")                                          # 11
    with pytest.raises(errors.FailedPrecondition):
        c.compact(11)


def test_auto_compaction_is_clamped_at_the_oldest_cursor(make_cluster):
    cl = make_cluster(env={"ZWATCH_AUTO_COMPACTION_MODE": "revision", "ZWATCH_AUTO_COMPACTION_RETENTION": "5",
                           "ZWATCH_AUTO_COMPACTION_INTERVAL_S": "0.2", "ZWATCH_STATS_S": "0.5"})
    c = cl.client()
    first = c.put("k/0", "v").header.revision                  # 2
    cur = c.cursor("slow", "k/", prefix=True, ttl=600)
    cur.commit(first + 1 - 1)                                  # at 2 (everything <= 2 consumed)
    for i in range(40):
        c.put(f"k/{i % 4}", "x")
    held = cl["writer"].wait_event("writer.compaction_held", timeout=15)[0]
    assert held["cursor"] == "slow" and held["cursor_revision"] == 2 and held["clamped_to"] == 3, held
    assert held["target"] > 3
    time.sleep(0.6)                                            # a few more ticks: still held
    assert c.status().compact_revision <= 3
    # Operators see the cursor holding compaction back in writer.stats (and /metrics).
    # (The last stats line read so far may come from the middle of the puts, on a loaded machine:
    # the lag is checked against that line's own revision.)
    stats = cl["writer"].events("writer.stats")[-1]
    assert stats["cursors"] == 1 and stats["cursor_oldest"] == "slow", stats
    assert stats["cursor_oldest_lag_revisions"] == stats["revision"] - 2 > 0, stats
    w = cur.watch()                                            # resumes at 3: not compacted
    assert _events(w, 1)[0].kv.mod_revision == 3
    w.cancel()
    cur.commit(30)
    deadline = time.monotonic() + 15
    while c.status().compact_revision < 31 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.status().compact_revision == 31                   # clamped to the advanced cursor, exactly
    cur.delete()
    deadline = time.monotonic() + 15
    while c.status().compact_revision <= 31 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.status().compact_revision > 31                    # free again: retention 5


def test_an_expired_cursor_is_dropped_logged_and_compaction_passes_it(cluster):
    c = cluster.client()
    for i in range(4):
        c.put("e", str(i))                                     # 2..5
    c.cursor_put("brief", "e", ttl=1, revision=3)
    with pytest.raises(errors.FailedPrecondition):
        c.compact(5)
    ev = cluster["writer"].wait_event("writer.cursor_expired", timeout=10)[0]
    assert ev["cursor"] == "brief" and ev["revision"] == 3 and ev["ttl_s"] == 1 and ev["lag_revisions"] == 2, ev
    with pytest.raises(errors.CursorNotFound):
        c.cursor_get("brief")
    c.compact(5)
    assert c.cursor_list() == []


def test_a_consumer_resumes_by_name_after_restarts(cluster):
    c = cluster.client()
    cur = c.cursor("orders", "o/", prefix=True, ttl=600)
    w = cur.watch()                                            # created at the current revision
    revs = [c.put(f"o/{i}", str(i)).header.revision for i in range(6)]
    seen = []
    while len(seen) < 3:
        resp = w.get(timeout=10)
        seen += resp.events
        cur.commit_response(resp)
    committed = cur.revision
    c.close()                                                  # the consumer goes away...
    cluster.restart("writer")                                  # ...and so does the writer
    c2 = cluster.client()
    w2 = c2.cursor("orders", "o/", prefix=True, ttl=600).watch()
    again = _events(w2, len([r for r in revs if r > committed]))
    assert [e.kv.mod_revision for e in again] == [r for r in revs if r > committed]
    info = c2.cursor_list()
    assert [(i.name, i.revision) for i in info] == [("orders", committed)]
    assert info[0].lag_revisions == revs[-1] - committed and info[0].lag_seconds is not None


def test_asyncio_client_cursor(cluster):
    c = cluster.client()

    async def consume(expect):
        ac = AsyncClient(cluster.fanout_eps[:1], timeout=5.0, heartbeat=0.5)
        try:
            cur = ac.cursor("aio", "q/", prefix=True, ttl=600)
            w = await cur.watch()
            got = []
            while len(got) < expect:
                resp = await w.get(timeout=10)
                got += [e.kv.value for e in resp.events]
                await cur.commit_response(resp)
            await w.cancel()
            return got, (await cur.get()).revision
        finally:
            await ac.close()

    c.cursor_put("aio", "q/", ttl=600, prefix=True)            # at the current revision
    for i in range(3):
        c.put(f"q/{i}", str(i))
    got, rev = asyncio.run(consume(3))
    assert got == [b"0", b"1", b"2"] and rev == c.get("q/2").kvs[0].mod_revision
    c.put("q/3", "3")
    got, _ = asyncio.run(consume(1))
    assert got == [b"3"]                                       # nothing again, nothing lost
    assert (asyncio.run(_delete(cluster))).name == "aio"


async def _delete(cluster):
    ac = AsyncClient(cluster.fanout_eps[:1], timeout=5.0, heartbeat=0.5)
    try:
        return (await ac.cursor_delete("aio")).cursor
    finally:
        await ac.close()


def test_bad_requests_get_stable_codes_and_the_writer_serves_on(cluster):
    c = cluster.client()
    for body, code in (({"name": "", "key": b"k", "ttl": 5}, "INVALID_ARGUMENT"),
                       ({"name": "x" * 200, "key": b"k", "ttl": 5}, "INVALID_ARGUMENT"),
                       ({"name": "x", "key": b"k", "ttl": -1}, "INVALID_ARGUMENT"),
                       ({"name": "x", "key": b"k", "ttl": 1 << 40}, "INVALID_ARGUMENT"),
                       ({"name": "x", "key": b"k", "ttl": 5, "revision": 1 << 40}, "FUTURE_REVISION"),
                       ({"name": "x", "key": "str", "ttl": 5}, "INVALID_ARGUMENT"),
                       ({"name": "x", "ttl": 5}, "INVALID_ARGUMENT")):
        with pytest.raises(errors.ZwatchError) as exc:
            c._call("cursor_put", body)
        assert exc.value.code == code, (body, exc.value)
    with pytest.raises(errors.CursorNotFound):
        c.cursor_delete("x")
    assert c.put("k", "still serving").header.revision == 2


# ---------------------------------------------------------------- the CLI
def _cli(ep, *args, timeout=30):
    r = subprocess.run([sys.executable, "-m", "zwatch.cli", "--endpoints", ep, *args], capture_output=True,
                       text=True, timeout=timeout)
    return r


def test_cli_cursor_verbs_and_watch_with_a_cursor(cluster):
    ep = cluster.fanout_eps[0]
    c = cluster.client()
    for i in range(3):
        c.put(f"w/{i}", f"v{i}")                               # 2..4
    r = _cli(ep, "cursor", "put", "tail", "w/", "--prefix", "--ttl", "300", "--rev", "2")
    assert r.returncode == 0 and r.stdout.startswith("tail revision=2 lag_revisions=2 "), (r.stdout, r.stderr)
    out = _cli(ep, "cursor", "list").stdout
    assert out.startswith("tail revision=2 lag_revisions=2 ") and "key=w/ range_end=w0" in out, out
    js = json.loads(_cli(ep, "cursor", "get", "tail", "-w", "json").stdout)
    assert js["cursors"][0]["revision"] == 2 and js["cursors"][0]["ttl"] == 300
    # watch --cursor: from revision 3, advancing the cursor after each printed response.
    p = subprocess.Popen([sys.executable, "-m", "zwatch.cli", "--endpoints", ep, "watch", "w/", "--prefix",
                          "--cursor", "tail", "--cursor-ttl", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        lines = [p.stdout.readline().rstrip("\n") for _ in range(6)]
        assert lines == ["PUT", "w/1", "v1", "PUT", "w/2", "v2"], lines
        deadline = time.monotonic() + 10
        while c.cursor_get("tail").cursor.revision != 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.cursor_get("tail").cursor.revision == 4
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    c.put("w/3", "v3")                                         # 5: while nobody watches
    p = subprocess.Popen([sys.executable, "-m", "zwatch.cli", "--endpoints", ep, "watch", "w/", "--prefix",
                          "--cursor", "tail"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert [p.stdout.readline().rstrip("\n") for _ in range(3)] == ["PUT", "w/3", "v3"]   # only the new one
        deadline = time.monotonic() + 10
        while c.cursor_get("tail").cursor.revision != 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.cursor_get("tail").cursor.revision == 5
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    r = _cli(ep, "watch", "w/", "--prefix", "--cursor", "tail", "--rev", "2")
    assert r.returncode == 128 and "mutually exclusive" in r.stderr, (r.returncode, r.stderr)
    c.put("other", "1")
    c.put("other", "2")                                        # 7: the cursor (at 5) holds 6 and 7
    r = _cli(ep, "compaction", "7")
    assert r.returncode != 0 and "cursor 'tail'" in r.stderr, (r.returncode, r.stderr)
    assert _cli(ep, "cursor", "del", "tail").returncode == 0
    r = _cli(ep, "cursor", "get", "tail")
    assert r.returncode != 0 and "CURSOR_NOT_FOUND" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _cli(ep, "compaction", "7").returncode == 0


def test_with_auth_a_cursor_needs_read_on_its_range(cluster):
    """Through the fan-out with real logins: nobody holds back (or releases, or sees) history
    they cannot read (SPEC.md 6.2, 13.3)."""
    admin = cluster.client()
    admin.user_add("root", "root-pw")
    admin.role_add("root")
    admin.user_grant_role("root", "root")
    admin.user_add("alice", "alice-pw")
    admin.role_add("reader")
    admin.role_grant_permission("reader", "READ", "w/", prefix=True)
    admin.user_grant_role("alice", "reader")
    admin.auth_enable()
    admin.close()
    root = cluster.client(user="root", password="root-pw")
    alice = cluster.client(user="alice", password="alice-pw")
    root.put("w/a", "1")
    assert alice.cursor("mine", "w/", prefix=True, ttl=60).open().revision == 2
    with pytest.raises(errors.PermissionDenied):
        alice.cursor_put("wide", "a", from_key=True, ttl=60)             # every key from a: more than w/
    root.cursor_put("roots", "z", ttl=60)
    with pytest.raises(errors.PermissionDenied):
        alice.cursor_delete("roots")
    assert [ci.name for ci in alice.cursor_list()] == ["mine"]
    assert [ci.name for ci in root.cursor_list()] == ["mine", "roots"]


def test_cli_interactive_watch_lines_take_a_cursor(cluster):
    ep = cluster.fanout_eps[0]
    c = cluster.client()
    c.put("i/a", "1")                                          # 2
    c.cursor_put("inter", "i/", prefix=True, ttl=300, revision=1)
    p = subprocess.Popen([sys.executable, "-m", "zwatch.cli", "--endpoints", ep, "watch", "-i"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write("watch i/ --prefix --cursor inter\n")
        p.stdin.flush()
        assert [p.stdout.readline().rstrip("\n") for _ in range(3)] == ["PUT", "i/a", "1"]   # from revision 2
        deadline = time.monotonic() + 10
        while c.cursor_get("inter").cursor.revision != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.cursor_get("inter").cursor.revision == 2
    finally:
        p.kill()
        p.wait(10)


def test_a_writer_restart_gives_a_cursor_its_full_ttl_again(cluster):
    """As for leases: a cursor never expires early because the writer was down; the deadline
    counts from the restart."""
    c = cluster.client()
    c.put("r", "1")
    c.cursor_put("patient", "r", ttl=3)
    time.sleep(2.0)
    cluster.restart("writer")
    time.sleep(1.5)                                            # 3.5 s since the put, 1.5 s since the restart
    assert c.cursor_get("patient").cursor.name == "patient"
    assert not cluster["writer"].events("writer.cursor_expired")
    ev = cluster["writer"].wait_event("writer.cursor_expired", timeout=10)[0]
    assert ev["cursor"] == "patient" and ev["ttl_s"] == 3
