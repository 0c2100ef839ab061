"""The checker on keys-only and value-predicate watches (tools/checker.py, SPEC.md 7.8): a
filtered stream is checked against the history's events that pass its predicate, as the watch
gets them (keys-only: values empty); a PUT that fails the predicate, a value a keys-only watch
should not see, or a passing PUT left out are violations.  Synthetic streams, no cluster."""
from __future__ import annotations

from zwatch import streamhash
from zwatch.client import Event, Header, KeyValue, WatchResponse
from zwatch.tools import checker
from zwatch.tools.checker import HEvent, StreamRecord, WatchSpec

# revisions 2..9: k = a0, b1, a2, b3, ..., alternately "a"- and "b"-prefixed values; 10: delete k
HISTORY = [HEvent(r, 0, "PUT", b"k", (b"a%d" if r % 2 == 0 else b"b%d") % r, 2, r - 1) for r in range(2, 10)]
HISTORY.append(HEvent(10, 0, "DELETE", b"k"))


def event(e: HEvent, keys_only=False) -> Event:
    value = b"" if keys_only else e.value
    return Event(e.type, KeyValue(e.key, e.create_revision, e.revision, e.version, value, e.lease))


def check(spec, events, progress=10):
    resps = [WatchResponse(1, Header(e.kv.mod_revision), [e]) for e in events]
    resps.append(WatchResponse(1, Header(progress)))
    return checker.check_all(HISTORY, [StreamRecord("w", spec, resps)], final_revision=10)


def test_a_predicate_watch_gets_exactly_the_passing_puts_and_every_delete():
    spec = WatchSpec(b"k", b"", 2, value_prefix=b"a")
    good = [event(e) for e in HISTORY if e.type == "DELETE" or e.value.startswith(b"a")]
    assert check(spec, good).ok
    # A PUT that fails the predicate delivered: a Filter violation (and, with nothing lost, no other).
    extra = sorted(good + [event(HISTORY[1])], key=lambda e: e.kv.mod_revision)
    res = check(spec, extra)
    assert not res.ok and res.by_guarantee["Filter"] == 1, res.summary()
    # A passing PUT left out: a gap before the bookmark.
    res = check(spec, good[1:])
    assert not res.ok, res.summary()


def test_a_keys_only_watch_gets_every_event_without_its_value():
    spec = WatchSpec(b"k", b"", 2, keys_only=True)
    assert check(spec, [event(e, keys_only=True) for e in HISTORY]).ok
    res = check(spec, [event(e) for e in HISTORY])              # values delivered: not keys-only
    assert not res.ok and res.by_guarantee["Valid"] == 8, res.summary()


def test_a_verified_filtered_watch_is_hashed_on_what_it_gets():
    spec = WatchSpec(b"k", b"", 2, keys_only=True, max_value_bytes=2)       # a2, b3, ... a8, b9 pass
    passing = [e for e in HISTORY if e.type == "DELETE" or len(e.value) <= 2]
    h = checker.stream_hash_of(passing, keys_only=True)
    resps = [WatchResponse(1, Header(e.revision), [event(e, keys_only=True)]) for e in passing]
    resps.append(WatchResponse(1, Header(10), [], stream_hash=h, stream_start=2))
    res = checker.check_all(HISTORY, [StreamRecord("w", spec, resps)], final_revision=10)
    assert res.ok and res.counts["verified_bookmarks"] == 1, res.summary()
    with_values = checker.stream_hash_of(passing)
    assert with_values != h and h != streamhash.to_bytes(0)
