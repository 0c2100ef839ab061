"""Verified streams at the syncer (SPEC.md 7.10), without I/O: a verified group's ev items carry
the digest sum of exactly their events (also when an oversized list is cut into parts), plain
groups carry nothing, and watch_hash over history gives the same sums, in bounded pieces."""
from __future__ import annotations

from zwatch import internal, requests, streamhash
from zwatch.actors.syncer import watchhash
from zwatch.actors.syncer.batch import SyncWatcher

from test_syncer_batch import PUT, DELETE, History, batch_of, run


def vwatcher(uid, key=b"k", end=None, next_rev=1, verify=True, fragment=False, filter_bits=0):
    return SyncWatcher(b"f1", uid, 1, key, end, next_rev, filter_bits, False, uid, fragment, b"s1",
                       {"verify": True} if verify else {})


def item_sum(ev: internal.SyncEvent) -> int:
    return streamhash.sum_events(internal.unpack_response(ev.response)[2]) % streamhash.MOD


def test_verified_groups_carry_their_events_sum_and_plain_ones_nothing():
    h = History([(PUT, b"k", b"v%d" % i) if i % 3 else (DELETE, b"k", b"") for i in range(1, 31)])
    _, events, _, _ = run(batch_of([vwatcher(1), vwatcher(2, verify=False)], chunk_revisions=7), h)
    verified = [ev for f, ev in events if ev.members == [(1, 1)]]
    plain = [ev for f, ev in events if ev.members == [(2, 1)]]
    assert len(verified) == len(plain) > 1       # separate groups (opts are identity), several chunks
    assert all(ev.extra == {} for ev in plain)
    for ev in verified:
        assert streamhash.from_bytes(ev.extra["hash"]) == item_sum(ev)


def test_each_part_of_an_oversized_list_carries_its_own_sum():
    big = b"x" * 400_000
    h = History([(PUT, b"k", big) for _ in range(8)])            # ~3.2 MB: several parts
    _, events, _, _ = run(batch_of([vwatcher(1)], chunk_revisions=100), h)
    assert len(events) > 1
    for _, ev in events:
        assert streamhash.from_bytes(ev.extra["hash"]) == item_sum(ev)


def spec(body):
    return requests.normalize("watch_hash", dict(body, start_revision=body.get("start_revision", 1)))["spec"]


def test_watch_hash_matches_the_events_a_watch_gets_and_adds_up_in_pieces():
    events = [(PUT, b"a/%d" % (i % 5), b"v%d" % i) for i in range(1, 41)] + [(DELETE, b"a/1", b"")]
    h = History(events)
    s = spec({"key": b"a/", "range_end": b"a0", "filters": ["NOPUT"]})
    whole, n, _, through = watchhash.hash_history(h, s, 1, 41)
    assert (n, through) == (1, 41)
    s = spec({"key": b"a/", "range_end": b"a0"})
    whole, n, records, through = watchhash.hash_history(h, s, 3, 41)
    assert (n, records, through) == (39, 39, 41)
    want = sum(streamhash.digest(r[2], r[3]) for r in h.records if r[0] >= 3) % streamhash.MOD
    assert whole == want
    # Cut short by max_records: whole revisions, and the pieces add up.
    total, got, start = 0, 0, 3
    while start <= 41:
        part, k, records, through = watchhash.hash_history(h, s, start, 41, max_records=7, chunk_records=3)
        assert records <= 7 and through < 41 or through == 41
        total, got, start = (total + part) % streamhash.MOD, got + k, through + 1
    assert (total, got) == (whole, 39)
    single = spec({"key": b"a/2"})
    assert watchhash.hash_history(h, single, 1, 41)[1] == 8


def test_bad_watch_hash_and_verify_arguments_are_invalid_argument():
    import pytest
    from zwatch.errors import InvalidArgument
    for body in ({"key": b"k", "start_revision": 0}, {"key": b"k"}, {"key": b"k", "start_revision": 1, "x": 1},
                 {"key": b"k", "start_revision": 1, "revision": -1}, {"key": "k", "start_revision": 1},
                 {"key": b"k", "start_revision": 1, "filters": ["NOPE"]}, [], {"key": b"k", "start_revision": True}):
        with pytest.raises(InvalidArgument):
            requests.normalize("watch_hash", body)
    with pytest.raises(InvalidArgument, match="verify must be a boolean"):
        requests.normalize("watch_create", {"key": b"k", "verify": 1})
    assert requests.normalize("watch_create", {"key": b"k", "verify": True}).verify is True
    assert "verify" not in requests.normalize("watch_create", {"key": b"k"}).to_wire()


def test_a_fragment_going_on_with_a_revision_carries_the_sum_of_its_earlier_pieces():
    """A revision cut in fragments: each later piece says how much of that revision the earlier
    pieces hold ("carry"), for the fan-out's hash to go back to before the revision if the piece
    is dropped (the watch then resumes at the revision, replayed whole)."""
    big = b"x" * 400_000
    h = History([(PUT, b"k%d" % i, big) for i in range(8)])
    # One revision of 8 puts (a txn): every record at revision 1.
    h.records = [(1, i, t, [kv[0], 1, 1, 1, kv[4], 0], n) for i, (_r, _s, t, kv, n) in enumerate(h.records)]
    h.current_revision = 1
    _, events, _, _ = run(batch_of([vwatcher(1, key=b"k", end=b"l", fragment=True)], chunk_revisions=100), h)
    assert len(events) > 1
    before = 0
    for i, (_, ev) in enumerate(events):
        assert ev.first_rev == 1
        assert streamhash.from_bytes(ev.extra.get("carry", bytes(16))) == before % streamhash.MOD
        before += item_sum(ev)
