"""messages.pack_watch_response_parts: the fan-out's cutting of event lists into watch responses.

The responses are spliced from events packed once (not packed whole again), so each must be
byte for byte what msgpack makes of [ids, header_rev, events, fragment]; and the cut must keep
etcd's rules: whole revisions only (Atomic), pieces of one revision only when the watch asked
for fragments, each response tagged with the revision of its first event (victims resume there).
"""
from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from zwatch import messages


@st.composite
def event_lists(draw):
    n = draw(st.integers(0, 40))
    rev, events = draw(st.integers(2, 1000)), []
    for i in range(n):
        rev += draw(st.sampled_from([0, 0, 1, 2]))
        value = b"v" * draw(st.sampled_from([0, 5, 60, 400, 3000]))
        kv = [b"k%d" % i, 1, rev, 1, value, draw(st.sampled_from([0, 7]))]
        events.append([draw(st.integers(0, 1)), kv] + ([[b"k", 1, 1, 1, value, 0]] if draw(st.booleans()) else []))
    return events


@settings(max_examples=400, deadline=None)
@given(events=event_lists(), fragment=st.booleans(), limit=st.sampled_from([64, 300, 2000, 1 << 20]))
def test_parts_are_the_bytes_of_whole_responses_cut_at_revisions(events, fragment, limit):
    ids, header_rev = [3, 1 << 40], (events[-1][1][2] if events else 9)
    parts = messages.pack_watch_response_parts(ids, header_rev, events, fragment, limit)
    got = []
    for i, (first_rev, raw) in enumerate(parts):
        r_ids, r_rev, r_events, r_fragment = msgpack.unpackb(raw, raw=False)
        assert raw == msgpack.packb([r_ids, r_rev, r_events, r_fragment], use_bin_type=True)
        assert (r_ids, r_rev) == (ids, header_rev)
        if r_events:
            assert first_rev == r_events[0][1][2]
        # The limit bounds the events' bytes; the response adds its ids, header and array headers.
        overhead = len(msgpack.packb(ids)) + len(msgpack.packb(header_rev)) + 7
        if len(raw) > limit + overhead:    # only what cannot be cut...
            if fragment:                   # ...with fragments: one event
                assert len(r_events) == 1
            else:                          # ...without: the revision that crossed the limit, whole
                last = r_events[-1][1][2]
                before = [ev for ev in r_events if ev[1][2] != last]
                assert sum(len(msgpack.packb(ev)) for ev in before) <= limit
        if r_fragment:                     # a piece of a revision that goes on in the next part
            assert fragment and i + 1 < len(parts)
            nxt = msgpack.unpackb(parts[i + 1][1], raw=False)[2]
            assert nxt and nxt[0][1][2] == r_events[-1][1][2]
        elif i + 1 < len(parts) and r_events:   # otherwise parts end on revision boundaries
            nxt = msgpack.unpackb(parts[i + 1][1], raw=False)[2]
            assert nxt[0][1][2] != r_events[-1][1][2]
        got += r_events
    assert got == events


def test_one_huge_revision_without_fragment_is_one_response():
    """A lease revoke of many keys is one revision: it goes out whole, unsplit."""
    events = [[1, [b"k%05d" % i, 0, 50, 0, b"", 0]] for i in range(5000)]
    parts = messages.pack_watch_response_parts([1], 50, events, False, limit=1000)
    assert len(parts) == 1 and parts[0][0] == 50
    assert parts[0][1] == msgpack.packb([[1], 50, events, False], use_bin_type=True)
    pieces = messages.pack_watch_response_parts([1], 50, events, True, limit=1000)
    assert len(pieces) > 1 and all(msgpack.unpackb(p, raw=False)[3] for _, p in pieces[:-1])
