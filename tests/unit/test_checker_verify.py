"""The checker's "Verified" guarantee (tools/checker.py, SPEC.md 7.10): a verified bookmark's hash
is recomputed from the history alone and must match; a stream the client ended as diverged is a
violation.  Synthetic streams, no cluster."""
from __future__ import annotations

from zwatch.client import Event, Header, KeyValue, WatchResponse
from zwatch.tools import checker
from zwatch.tools.checker import HEvent, StreamRecord, WatchSpec

def _history():
    out, created, versions = [], {}, {}
    for r in range(2, 12):
        key = b"k" if r % 2 else b"j"
        created.setdefault(key, r)
        versions[key] = versions.get(key, 0) + 1
        out.append(HEvent(r, 0, "PUT", key, b"v%d" % r, created[key], versions[key]))
    return out


HISTORY = _history()


def event(e: HEvent) -> Event:
    return Event(e.type, KeyValue(e.key, e.create_revision, e.revision, e.version, e.value, e.lease))


def stream(hash_of, start=3, canceled=None):
    spec = WatchSpec(b"k", b"", start)
    evs = [event(e) for e in HISTORY if e.key == b"k" and e.revision >= start]
    resps = [WatchResponse(1, Header(11), evs),
             WatchResponse(1, Header(11), [], stream_hash=hash_of, stream_start=start)]
    if canceled:
        resps.append(canceled)
    return StreamRecord("w", spec, resps)


def check(rec):
    return checker.check_all(HISTORY, [rec], final_revision=11)


def test_a_bookmark_with_the_historys_hash_passes():
    good = checker.stream_hash_of([e for e in HISTORY if e.key == b"k" and e.revision >= 3])
    res = check(stream(good))
    assert res.violations == [] and res.counts["verified_bookmarks"] == 1


def test_a_wrong_hash_is_a_verified_violation():
    wrong = checker.stream_hash_of([e for e in HISTORY if e.key == b"k" and e.revision >= 5])   # a gap
    res = check(stream(wrong))
    assert dict(res.by_guarantee) == {"Verified": 1} and "bookmark at 11" in res.violations[0]


def test_a_stream_the_client_ended_as_diverged_is_a_violation():
    good = checker.stream_hash_of([e for e in HISTORY if e.key == b"k" and e.revision >= 3])
    diverged = WatchResponse(1, Header(11), canceled=True, cancel_reason="watch 1: stream diverged at revision 11",
                             cancel_code="STREAM_DIVERGED")
    res = check(stream(good, canceled=diverged))
    assert dict(res.by_guarantee) == {"Verified": 1} and "stream diverged" in res.violations[0]
