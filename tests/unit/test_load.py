"""tools/load.py without a cluster: read_stream stops at the final revision, at the stream's end
(None) or at the deadline (False); PutAllAlong records acknowledged puts and counts caught errors."""
from __future__ import annotations

import queue
import time
from types import SimpleNamespace

from zwatch import errors
from zwatch.tools.checker import StreamRecord, WatchSpec
from zwatch.tools.load import PutAllAlong, read_stream


class FakeWatch:
    def __init__(self, items):
        self.q: queue.Queue = queue.Queue()
        for x in items:
            self.q.put(x)

    def get(self, timeout):
        return self.q.get(timeout=min(timeout, 0.05))


def response(rev):
    ev = SimpleNamespace(kv=SimpleNamespace(mod_revision=rev, key=b"k/a", value=b"v", create_revision=rev,
                                            version=1, lease=0), type=0, prev_kv=None)
    return SimpleNamespace(events=[ev], header=SimpleNamespace(revision=rev), created=False, canceled=False,
                           compact_revision=0, fragment=False, watch_id=1)


def record():
    return StreamRecord("w", WatchSpec(b"k/", b"k0", 2), [])


def test_read_stream_stops_at_final_at_end_of_stream_and_at_deadline():
    rec = record()
    assert read_stream(FakeWatch([response(2), response(3), response(4)]), rec, 3, time.monotonic() + 5)
    assert len(rec.responses) == 2                       # revision 4 not read: 3 was the final one
    rec = record()
    assert read_stream(FakeWatch([response(2), None]), rec, 9, time.monotonic() + 5)   # ended: the checker judges
    rec = record()
    assert not read_stream(FakeWatch([response(2)]), rec, 9, time.monotonic() + 0.3)
    assert len(rec.responses) == 1


def test_put_all_along_records_acks_and_counts_caught_errors():
    class Client:
        n = 0

        def put(self, key, value):
            self.n += 1
            if self.n % 2 == 0:
                raise errors.Unavailable("down")
            return SimpleNamespace(header=SimpleNamespace(revision=self.n + 1))

    w = PutAllAlong(Client(), lambda n: f"k/{n}", 0.001, catch=errors.ZwatchError).start()
    deadline = time.monotonic() + 10
    while len(w.acked) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    w.stop()
    assert w.failures and all("down" in f for f in w.failures)
    assert [a.revision for a in w.acked[:3]] == [2, 4, 6]
    assert w.acked[0].puts == ((b"k/0", b"v0"),)


def test_take_queued_takes_what_is_queued_and_stops_at_the_end_of_the_stream():
    from zwatch.tools.load import take_queued
    rec = record()
    w = FakeWatch([response(2), response(3)])
    assert take_queued(w, rec) == 2 and take_queued(w, rec) == 0
    assert take_queued(FakeWatch([response(4), None, response(5)]), rec, 0.1) == 1
    assert len(rec.responses) == 3
