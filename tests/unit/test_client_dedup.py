"""The client's second line of defence against duplicate watch events (issue #8, defect 1).

The fan-out delivered some events twice after a watch was victimized; the fix is on the
server.  These tests reproduce what the client received then, without any server: synthetic
wire responses fed to the client's WatchRouter (what Client._on_watch_responses runs in the
I/O thread), checking what the application gets and the drop counters.
"""
import logging
import queue
import threading

import pytest

from zwatch.client import Watch, WatchRouter


def ev(rev: int, key: bytes = b"k", typ: int = 0) -> list:
    """A wire event: [type, [key, create_revision, mod_revision, version, value, lease]]."""
    return [typ, [key, 2, rev, 1, b"v%d" % rev, 0]]


def events_resp(ids, *revs, header=None, fragment=False) -> list:
    return [list(ids), header if header is not None else max(revs), [ev(r) for r in revs], fragment]


def progress(ids, rev) -> list:
    return [list(ids), rev, [], False]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def table():
    return {}


@pytest.fixture
def router(table, clock):
    return WatchRouter(table, threading.Lock(), "test-client", clock=clock)


def add_watch(table, watch_id, last_revision=0, shared_queue=None) -> Watch:
    w = Watch(None, watch_id, {"key": b"k", "watch_id": watch_id}, shared_queue)
    w.last_revision = last_revision
    w._live = True
    table[watch_id] = w
    return w


def drain(q) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def mods(resp) -> list:
    return [e.kv.mod_revision for e in resp.events]


def test_duplicate_events_after_victimization_are_dropped(table, router):
    """Reproduces #8: after a victimized watch caught up, the fan-out re-sent revisions the
    watch had already delivered, partly inside a response that also held new ones."""
    w = add_watch(table, 1, last_revision=1)
    router.on_watch_responses([events_resp([1], 2, 3)])
    router.on_watch_responses([events_resp([1], 3, 4)])        # 3 again, with the new 4
    router.on_watch_responses([events_resp([1], 2, 3, 4)])     # nothing new at all
    router.on_watch_responses([events_resp([1], 5)])
    got = drain(w.queue)
    assert [mods(r) for r in got] == [[2, 3], [4], [5]]
    assert w.last_revision == 5
    assert w.duplicates_dropped == 4 and router.duplicates_dropped == 4


def test_duplicate_after_progress_notification_is_dropped(table, router):
    """Reproduces #8 behind a progress notification: the notification at 10 says every event
    <= 10 was delivered, so events at 9 and 10 coming afterwards are duplicates."""
    w = add_watch(table, 1, last_revision=3)
    router.on_watch_responses([progress([1], 10)])
    router.on_watch_responses([events_resp([1], 9, 10, header=10)])
    router.on_watch_responses([events_resp([1], 10, 11)])
    got = drain(w.queue)
    assert [(r.is_progress_notify, r.header.revision, mods(r)) for r in got] == [(True, 10, []), (False, 11, [11])]
    assert w.duplicates_dropped == 3 and router.duplicates_dropped == 3


def test_progress_notification_is_delivered_even_at_an_old_revision(table, router):
    """A progress notification carries no event to drop: it is delivered as it is, and the
    resume point never moves backwards."""
    w = add_watch(table, 1, last_revision=7)
    router.on_watch_responses([progress([1], 5), progress([-1], 6)])
    got = drain(w.queue)
    assert [(r.is_progress_notify, r.header.revision) for r in got] == [(True, 5), (True, 6)]
    assert w.last_revision == 7 and router.duplicates_dropped == 0


def test_duplicate_fragmented_revision_is_dropped_whole(table, router):
    """A large revision arrives in fragments joined by the client; the same revision sent
    again (in fragments) must not reach the application, the next one must, whole."""
    w = add_watch(table, 1, last_revision=4)

    def fragmented(rev):
        return [[[1], rev, [ev(rev, b"a"), ev(rev, b"b")], True],
                [[1], rev, [ev(rev, b"c")], True],
                [[1], rev, [ev(rev, b"d")], False]]

    router.on_watch_responses(fragmented(5))
    router.on_watch_responses(fragmented(5))   # the duplicate
    router.on_watch_responses(fragmented(6))
    got = drain(w.queue)
    assert [mods(r) for r in got] == [[5, 5, 5, 5], [6, 6, 6, 6]]
    assert [e.kv.key for e in got[1].events] == [b"a", b"b", b"c", b"d"]
    assert w.duplicates_dropped == 4 and router.duplicates_dropped == 4
    assert w._fragments == []


def test_shared_queue_watches_at_different_revisions_each_get_their_new_events(table, router):
    """Watches sharing a queue get one response for all of them; when one of them already
    delivered part of it (#8), the response is split: each watch sees each revision once."""
    q = queue.SimpleQueue()
    a = add_watch(table, 1, last_revision=5, shared_queue=q)
    b = add_watch(table, 2, last_revision=3, shared_queue=q)
    c = add_watch(table, 3, last_revision=3, shared_queue=q)
    router.on_watch_responses([events_resp([1, 2, 3], 4, 5, 6)])
    got = drain(q)
    by_watches = {tuple(r.watch_ids): mods(r) for r in got}
    assert by_watches == {(1,): [6], (2, 3): [4, 5, 6]}
    assert a.duplicates_dropped == 2 and b.duplicates_dropped == 0 and c.duplicates_dropped == 0
    assert router.duplicates_dropped == 2
    assert a.last_revision == b.last_revision == c.last_revision == 6
    # All at 6 now: one response for the three again; a pure duplicate reaches nobody.
    router.on_watch_responses([events_resp([1, 2, 3], 6), events_resp([1, 2, 3], 7)])
    got = drain(q)
    assert [(r.watch_ids, mods(r)) for r in got] == [([1, 2, 3], [7])]
    assert router.duplicates_dropped == 2 + 3


def test_duplicates_are_logged_at_most_once_a_second(table, router, clock, caplog):
    """The drops are logged on "zwatch.client" at WARNING, one line per second at most, each
    with the count since the previous line (a flood of duplicates must not flood the log)."""
    caplog.set_level(logging.WARNING, logger="zwatch.client")
    add_watch(table, 1, last_revision=10)
    router.on_watch_responses([events_resp([1], 9, 10, 11)])   # 2 dropped: logged at once
    clock.now = 0.5
    router.on_watch_responses([events_resp([1], 11)])          # 1 dropped: held back
    router.flush_log()
    assert len(caplog.records) == 1
    clock.now = 1.2
    router.flush_log()                                         # the I/O loop calls this each turn
    router.flush_log()
    lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [("zwatch.client", logging.WARNING, "watch.duplicates_dropped client=test-client count=2 total=2"),
                     ("zwatch.client", logging.WARNING, "watch.duplicates_dropped client=test-client count=1 total=3")]
