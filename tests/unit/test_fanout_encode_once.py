"""Issue #15: a publish's events are encoded once per session and list of matched events, not
once per watcher: many watchers of one session whose DIFFERENT specs match the same events get
ONE response naming them all (the client hands it to each); a watcher alone on its spec is in
the key index itself, without Group/Slot, and becomes a group when a second one shares it."""
from __future__ import annotations

import msgpack

from zwatch.actors.fanout.model import Group, Slot, Watcher, WatchOut

from test_fanout_core import events_of, joined, publish, session, take, watch


def responses(items) -> list[tuple[list[int], list[int]]]:
    """(watch ids, event revisions) of each queued watch response."""
    out = []
    for item in items:
        if isinstance(item, WatchOut):
            ids, _rev, evs, _frag = msgpack.unpackb(item.data, raw=False)
            out.append((sorted(ids), [e[1][2] for e in evs]))
    return out


def distinct_ranges(core, s, n, first_id=1):
    """n watches on n distinct ranges that all contain b"k" (b"k" <= key < end, ends differ)."""
    ws = []
    for i in range(n):
        ws.append(watch(core, s, wid=first_id + i, key=b"k", range_end=b"k\xff" + i.to_bytes(4, "big")))
    return ws


def test_distinct_specs_of_one_session_that_match_the_same_events_get_one_response():
    core = joined()
    s = session()
    ws = distinct_ranges(core, s, 1000)
    assert all(w.slot is w for w in ws), "each is alone on its spec: indexed itself"
    take(core, s)
    publish(core, 2, 2)
    got = responses(take(core, s))
    assert got == [(list(range(1, 1001)), [2])], f"{len(got)} responses for one event and 1,000 watches"
    assert core.st["responses"] == 1 and core.st["deliveries"] == 1000


def test_the_grouping_keeps_sessions_and_event_lists_apart():
    core = joined()
    a, b = session(b"a"), session(b"b")
    distinct_ranges(core, a, 3)
    distinct_ranges(core, b, 2, first_id=10)
    watch(core, a, wid=50, key=b"k")                     # an exact key: same events as the ranges
    watch(core, a, wid=60, key=b"k", filters=["NOPUT"])  # filtered out: nothing
    watch(core, a, wid=70, key=b"j", range_end=b"l")     # also gets b"j"'s event: another list
    core.take_output()
    core.on_publish(1, 2, [[2, [[0, [b"k", 2, 2, 1, b"v", 0], None], [0, [b"j", 2, 2, 1, b"v", 0], None]]]], 0)
    out = core.take_output()
    got_a, got_b = responses(out[a.ident]), responses(out[b.ident])
    assert sorted(got_a) == [([1, 2, 3, 50], [2]), ([70], [2, 2])]
    assert got_b == [([10, 11], [2])]


def test_a_second_watcher_of_a_spec_turns_the_lone_one_into_a_group_and_nothing_is_lost():
    core = joined()
    a, b = session(b"a"), session(b"b")
    first = watch(core, a, wid=1)
    assert isinstance(first, Watcher) and first.slot is first
    publish(core, 2, 2)
    second = watch(core, b, wid=1)
    assert isinstance(first.slot.group, Group) and first.slot.group is second.slot.group
    assert first.slot.last_event_rev == 2               # carried over (progress_notify's mark)
    publish(core, 3, 3)
    out = core.take_output()
    assert events_of(out[a.ident]) == [2, 3] and events_of(out[b.ident]) == [3]
    core.watch_cancel(a, 7, 1)
    publish(core, 4, 4)
    out = core.take_output()
    assert events_of(out[b.ident]) == [4] and events_of(out.get(a.ident, [])) == []
    core.watch_cancel(b, 8, 1)
    assert len(core.index) == 0


def test_a_dropped_session_takes_its_lone_watchers_out_of_the_index():
    core = joined()
    s = session()
    distinct_ranges(core, s, 5)
    watch(core, s, wid=99, key=b"x")
    assert len(core.index) == 6
    core.drop_session(s)
    assert len(core.index) == 0
    publish(core, 2, 2)
    assert core.take_output() == {}


def test_fanout_crash_merging_a_lone_watcher_into_a_groups_response_regression():
    """Chaos found it: a group's slot made the session's response first (its id list and a
    tuple of its watchers, which must not be changed), then a lone watcher with the same
    events was merged into it: AttributeError, the fan-out died.  Both orders, several slots."""
    core = joined()
    s = session()
    watch(core, s, wid=1, key=b"k")
    watch(core, s, wid=2, key=b"k")                               # a group on the exact key
    watch(core, s, wid=3, key=b"k", range_end=b"l")               # lone, same events (exact first)
    watch(core, s, wid=4, key=b"j", range_end=b"kz")              # lone too
    watch(core, s, wid=5, key=b"a", range_end=b"z")
    watch(core, s, wid=6, key=b"a", range_end=b"z")               # a group on a range
    other = session(b"s2")
    watch(core, other, wid=1, key=b"k")                           # joins the exact key's group
    core.take_output()
    publish(core, 2, 3)
    out = core.take_output()
    assert responses(out[s.ident]) == [([1, 2, 3, 4, 5, 6], [2, 3])]
    assert responses(out[other.ident]) == [([1], [2, 3])]
    group_ids = core.index.items(b"k", None)[0].slots[s.ident].ids
    assert group_ids == [1, 2], "the slot's own id list was not extended by the merge"


def test_a_single_event_publish_uses_a_cached_plan_that_any_index_change_drops():
    """One event per publish (the common case) is delivered from a plan cached by key: the
    same responses as the general path, and a watcher created, canceled or moved between two
    publishes is seen by the next one."""
    core = joined()
    s, t = session(b"a"), session(b"b")
    distinct_ranges(core, s, 50)
    watch(core, t, wid=1, key=b"k")
    watch(core, t, wid=2, key=b"k", prev_kv=True)
    core.take_output()
    publish(core, 2, 2)
    out = core.take_output()
    assert responses(out[s.ident]) == [(list(range(1, 51)), [2])]
    assert responses(out[t.ident]) == [([1, 2], [2])]      # no prev_kv to send: the same event
    assert len(core._plans) == 1
    watch(core, s, wid=99, key=b"k")                        # a change: the plan is dropped
    assert not core._plans
    core.watch_cancel(t, 9, 1)
    publish(core, 3, 3)
    out = core.take_output()
    assert responses(out[s.ident]) == [(list(range(1, 51)) + [99], [3])]
    assert responses(out[t.ident]) == [([2], [3])]
    core.drop_session(s)
    publish(core, 4, 4)
    out = core.take_output()
    assert s.ident not in out and responses(out[t.ident]) == [([2], [4])]
    # Two events in one publish take the general path: the same grouping.
    core.on_publish(4, 5, [[5, [[0, [b"k", 2, 5, 1, b"v", 0], None], [0, [b"j", 2, 5, 1, b"v", 0], None]]]], 0)
    assert responses(core.take_output()[t.ident]) == [([2], [5])]


def test_distinct_specs_matching_a_publish_of_several_revisions_get_one_response():
    """The general path (several revisions in one publish, no cached plan): the same count."""
    core = joined()
    s = session()
    distinct_ranges(core, s, 1000)
    take(core, s)
    publish(core, 2, 4)
    got = responses(take(core, s))
    assert got == [(list(range(1, 1001)), [2, 3, 4])], f"{len(got)} responses for 3 revisions and 1,000 watches"
    assert core.st["responses"] == 1 and core.st["deliveries"] == 3000


def test_a_dropped_grouped_response_makes_every_watcher_it_names_a_victim_from_its_first_revision():
    from zwatch.actors.fanout.model import VICTIM
    core = joined()
    s = session()
    ws = distinct_ranges(core, s, 3) + [watch(core, s, wid=50, key=b"k"), watch(core, s, wid=51, key=b"k")]
    take(core, s)
    publish(core, 2, 2)
    publish(core, 3, 3)
    items = [i for i in take(core, s) if isinstance(i, WatchOut)]
    assert len(items) == 2 and all(len(i.owner.watchers) == 5 for i in items)
    for item in items:                                   # both frames dropped, in queue order
        core.victimize(item.owner, now=0.0)
    assert all(w.state == VICTIM and w.next_rev == 2 for w in ws)
    assert len(core.index) == 0


def test_a_group_down_to_one_watcher_is_indexed_itself_again():
    """The reverse of the lone -> group step: when a spec's group is left with one watcher (a
    cancel, a dropped session, a victim), that watcher is back in the index without Group/Slot,
    its progress mark carried over, and it keeps getting every event exactly once."""
    core = joined()
    a, b = session(b"a"), session(b"b")
    first, second = watch(core, a, wid=1), watch(core, b, wid=1)
    assert isinstance(second.slot.group, Group)
    publish(core, 2, 2)
    core.watch_cancel(a, 7, 1)                           # another session's slot goes: one left
    assert second.slot is second and core.index.items(b"k", None) == (second,)
    assert second.last_event_rev == 2
    publish(core, 3, 3)
    assert events_of(take(core, b)) == [2, 3]
    third = watch(core, b, wid=2)                        # grouped again (same session: one slot)
    assert third.slot is second.slot and isinstance(third.slot, Slot) and third.slot.last_event_rev == 3
    publish(core, 4, 4)
    core.watch_cancel(b, 8, 2)                           # the slot is down to one watcher
    assert second.slot is second and second.last_event_rev == 4
    c = session(b"c")
    watch(core, c, wid=1)
    core.drop_session(c)                                 # a dropped session leaves one too
    assert second.slot is second and len(core.index) == 1
    publish(core, 5, 5)
    got = take(core, b)
    assert events_of(got, 1) == [4, 5] and events_of(got, 2) == [4]
    core.watch_cancel(b, 9, 1)
    assert len(core.index) == 0
