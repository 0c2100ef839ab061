"""Bookmarks per watch, never starved (issue #16.3, SPEC.md section 7.9), on a real cluster.

A live watch shares its session with a sibling catching up on a long history (held back by the
syncer's batch delay, so it is reliably still catching up while we look) and a sibling waiting
for a future start.  The live watch's own progress requests are answered at once, its periodic
progress_notify keeps coming, and every bookmark is checked by the checker (never ahead of that
watch's undelivered events); the slow sibling gets its own bookmark once it is live.
"""
from __future__ import annotations

import asyncio
import queue
import time

import pytest

import zwatch
import zwatch.aio
from zwatch.tools.checker import HEvent, History, StreamRecord, WatchSpec, check_stream

from test_cli import Lines, watch_cmd

HISTORY = 300           # revisions of the catching-up sibling's key
HOLD_S = 8.0            # the syncer waits this long before it starts a batch
ENV = {"ZWATCH_RING_REVISIONS": "0", "ZWATCH_SYNC_QUIET_S": str(HOLD_S), "ZWATCH_SYNC_BATCH_DELAY_S": str(HOLD_S),
       "ZWATCH_PROGRESS_INTERVAL_S": "0.3"}


class Recorder:
    """What the client wrote, as the checker's history (puts only, from revision 2)."""

    def __init__(self):
        self.events: list[HEvent] = []
        self.versions: dict[bytes, tuple[int, int]] = {}

    def put(self, c, key: str, value: str) -> int:
        rev = c.put(key, value).header.revision
        k = key.encode()
        create, version = self.versions.get(k, (rev, 0))
        self.versions[k] = (create, version + 1)
        self.events.append(HEvent(rev, 0, "PUT", k, value.encode(), create, version + 1))
        return rev

    def history(self) -> History:
        return History(self.events)


def drain(w, into: list, wait: float = 0.0) -> list:
    while True:
        try:
            r = w.get(timeout=wait) if wait else w.queue.get_nowait()
        except queue.Empty:
            return into
        if r is None:
            return into
        into.append(r)


def progress_revs(resps) -> list[int]:
    return [r.header.revision for r in resps if not r.events and not r.canceled and not r.created]


def test_own_bookmarks_and_progress_notify_are_never_starved_by_slow_siblings(make_cluster):
    cluster = make_cluster(env=ENV)
    c = cluster.client()
    rec = Recorder()
    for i in range(HISTORY):
        rec.put(c, "h", str(i))
    live = c.watch("a", progress_notify=True)
    slow = c.watch("h", start_revision=2)                        # 300 revisions through the syncer
    head = c.get("x").header.revision
    future = c.watch("f", start_revision=head + 1000)
    live_resps: list = []
    replies: list = []
    for i in range(5):
        rec.put(c, "a", str(i))
        r = live.request_progress()
        drain(live, live_resps)                                  # the bookmark came before the reply
        replies.append((len(live_resps), r))
        assert progress_revs(live_resps)[-1] == r
    assert slow.queue.empty()                                    # the sibling is still catching up
    assert slow.request_progress() == 1                          # its position: nothing sent yet
    assert future.request_progress() == head + 999               # its start - 1: never above
    # progress_notify: the live watch's periodic notifications keep coming meanwhile.
    quiet_from = len(live_resps)
    deadline = time.monotonic() + 4.0          # ticks every 0.3 s; a loaded machine may be slow
    while len(progress_revs(live_resps[quiet_from:])) < 2 and time.monotonic() < deadline:
        drain(live, live_resps, wait=0.2)
    assert slow.queue.empty()
    assert len(progress_revs(live_resps[quiet_from:])) >= 2
    with pytest.raises(zwatch.FailedPrecondition) as exc:
        c._request(zwatch.client.calls.watch_progress(12345))
    assert exc.value.details.get("reason") == "WATCH_NOT_FOUND"
    # The slow sibling: its history, then its owed bookmark, after its events.
    last = rec.events[-1].revision
    slow_resps: list = []
    deadline = time.monotonic() + HOLD_S + 20
    while not any(p >= last for p in progress_revs(slow_resps)) and time.monotonic() < deadline:
        drain(slow, slow_resps, wait=0.2)
    n = len(slow_resps)
    r = slow.request_progress()                                  # live now: at once
    drain(slow, slow_resps)
    hist = rec.history()
    for name, spec, resps, bookmarks in (
            ("live", WatchSpec(b"a", b"", 0, start_bounds=(HISTORY + 2, HISTORY + 2)), live_resps, replies),
            ("slow", WatchSpec(b"h", b"", 2), slow_resps, [(len(slow_resps), r)])):
        result = check_stream(StreamRecord(name, spec, resps, final_revision=last, bookmark_replies=bookmarks), hist)
        assert result.ok, result.summary()
    assert len([e for x in slow_resps for e in x.events]) == HISTORY
    assert n < len(slow_resps) and progress_revs(slow_resps[:n])     # bookmarked before asked again


def test_asyncio_watch_request_progress(make_cluster):
    cluster = make_cluster(env=ENV)

    async def main():
        async with zwatch.aio.Client(cluster.fanout_eps[:1], timeout=5.0, heartbeat=0.5, shuffle=False) as c:
            await c.put("h", "0")
            live = await c.watch("a")
            slow = await c.watch("h", start_revision=2)
            rev = (await c.put("a", "1")).header.revision
            assert await live.request_progress() == rev
            got = [await live.get(), await live.get()]
            assert [len(x.events) for x in got] == [1, 0] and got[1].header.revision == rev
            assert await slow.request_progress() == 1              # held by the syncer: not live yet
    asyncio.run(asyncio.wait_for(main(), 60))


def test_cli_progress_every_prints_the_watch_s_own_bookmarks(make_cluster):
    cluster = make_cluster()
    ep = cluster.fanout_eps[0]
    c = cluster.client()
    rev = c.put("k", "1").header.revision
    w = Lines(watch_cmd(ep, "k", "--progress-every", "0.2"))
    try:
        first = w.take(1)[0]
        assert first.startswith("progress notify: ") and int(first.split(": ")[1]) >= rev
        c.put("k", "2")
        lines = w.take(6)
        assert ["PUT", "k", "2"] == [x for x in lines if not x.startswith("progress notify")][:3]
    finally:
        w.proc.terminate()
        w.proc.wait(10)
