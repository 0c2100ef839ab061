"""Keys-only and value-predicate watches (issue #16 item 4, SPEC.md 7.8), without I/O: the
request's validation, the fan-out core's delivery paths (one event, several, ring catch-up),
progress for filtered watches, the syncer batch, and the counts that must not grow with watchers.
"""
from __future__ import annotations

import sys

import msgpack
import pytest

from zwatch import internal, requests, valuefilter
from zwatch.actors.fanout.model import FilteredWatcher, Owner, Watcher
from zwatch.actors.syncer.batch import Batch, SyncWatcher
from zwatch.errors import InvalidArgument

from test_fanout_core import KEY, joined, progress_of, session, take, watch
from test_syncer_batch import History, run

PUT, DELETE = 0, 1


def kv(rev, value, key=KEY, version=1):
    return [key, 2, rev, version, value, 7]


def put_ev(rev, value, key=KEY, prev_value=None):
    prev = None if prev_value is None else [key, 2, rev - 1, 1, prev_value, 7]
    return [PUT, kv(rev, value, key), prev]


def del_ev(rev, key=KEY, prev_value=b"old"):
    return [DELETE, [key, 0, rev, 0, b"", 0], [key, 2, rev - 1, 1, prev_value, 7]]


def pub(core, rev, *events):
    """One revision with these events, as one publish."""
    core.on_publish(rev - 1, rev, [[rev, list(events)]], 0)


def responses(items) -> list[tuple[list, list]]:
    """(watch ids, events) of each queued event array that has events."""
    out = []
    for item in items:
        if hasattr(item, "data"):
            ids, _rev, evs, _frag = msgpack.unpackb(item.data, raw=False)
            if evs:
                out.append((sorted(ids), evs))
    return out


def by_watch(items) -> dict[int, list]:
    out: dict[int, list] = {}
    for ids, evs in responses(items):
        for wid in ids:
            out.setdefault(wid, []).extend(evs)
    return out


# ---------------------------------------------------------------- the request
def test_plain_watch_has_no_filter_and_its_wire_form_is_unchanged():
    spec = requests.normalize("watch_create", {"key": b"k"})
    assert spec.vfilter is None
    assert set(spec.to_wire()) == {"watch_id", "key", "range_end", "start_revision", "prev_kv", "filters",
                                   "progress_notify", "fragment"}


def test_filters_are_validated_bounded_and_interned():
    body = {"key": b"k", "keys_only": True, "value_prefix": b"ab", "value_equals": b"abc", "max_value_bytes": 10}
    a = requests.normalize("watch_create", dict(body)).vfilter
    b = requests.normalize("watch_create", dict(body)).vfilter
    assert a is b                                    # one shared object per distinct filter
    assert a.opts == {"keys_only": True, "value_prefix": b"ab", "value_equals": b"abc", "max_value_bytes": 10}
    assert requests.normalize("watch_create", dict(body)).to_wire()["value_equals"] == b"abc"
    # value_equals b"" is a predicate (empty values only); value_prefix b"" is none.
    assert requests.normalize("watch_create", {"key": b"k", "value_prefix": b""}).vfilter is None
    assert requests.normalize("watch_create", {"key": b"k", "value_equals": b""}).vfilter.has_predicate
    limit = valuefilter.MAX_VALUE_PREDICATE_BYTES
    assert requests.normalize("watch_create", {"key": b"k", "value_prefix": b"x" * limit}).vfilter
    for bad in ({"keys_only": 1}, {"value_prefix": "str"}, {"value_equals": 5},
                {"value_prefix": b"x" * (limit + 1)}, {"value_equals": b"x" * (limit + 1)},
                {"max_value_bytes": -1}, {"max_value_bytes": True}, {"max_value_bytes": 1.5},
                {"max_value_bytes": valuefilter.MAX_VALUE_BYTES_LIMIT + 1}):
        with pytest.raises(InvalidArgument):
            requests.normalize("watch_create", {"key": b"k", **bad})
    # Every option fits a registration's opts (4 KiB) with room to spare.
    big = valuefilter.value_filter(True, b"p" * limit, b"e" * limit, 1 << 31)
    internal.Registration.decode([1, 1, b"k", None, 1, 0, False, 1, False, b"s", big.opts])


def test_predicates_apply_to_puts_only():
    f = valuefilter.value_filter(value_prefix=b"ok", max_value_bytes=4)
    assert f.passes(PUT, kv(2, b"ok!")) and not f.passes(PUT, kv(2, b"no")) and not f.passes(PUT, kv(2, b"ok123"))
    assert f.passes(DELETE, [KEY, 0, 3, 0, b"", 0])
    eq = valuefilter.value_filter(value_equals=b"")
    assert eq.passes(PUT, kv(2, b"")) and not eq.passes(PUT, kv(2, b"x"))


def test_a_plain_watcher_pays_nothing_for_the_feature():
    """Memory per plain watcher as before: no new slot (class attribute vfilter = None)."""
    core = joined()
    s = session()
    plain = watch(core, s, 1)
    filtered = watch(core, s, 2, keys_only=True)
    assert type(plain) is Watcher and type(filtered) is FilteredWatcher
    assert "vfilter" not in Watcher.__slots__ and plain.vfilter is None
    assert sys.getsizeof(filtered) == sys.getsizeof(plain) + 8


# ---------------------------------------------------------------- the fan-out core
def test_keys_only_strips_the_value_and_prev_value_and_keeps_the_metadata():
    core = joined(at=1)
    s = session()
    watch(core, s, 1, keys_only=True, prev_kv=True)
    watch(core, s, 2, prev_kv=True)                       # a plain watcher of the same key
    take(core, s)
    pub(core, 2, put_ev(2, b"big value", prev_value=b"older"))
    got = by_watch(take(core, s))
    assert got[1] == [[PUT, [KEY, 2, 2, 1, b"", 7], [KEY, 2, 1, 1, b"", 7]]]
    assert got[2] == [[PUT, [KEY, 2, 2, 1, b"big value", 7], [KEY, 2, 1, 1, b"older", 7]]]


def test_predicates_filter_puts_and_let_deletes_through_on_every_path():
    """One event per publish (_deliver_one's cached plans), several (_deliver), and both again
    with a plan cached before: a plan must never freeze a verdict."""
    core = joined(at=1)
    s = session()
    watch(core, s, 1, value_prefix=b"yes")
    take(core, s)
    pub(core, 2, put_ev(2, b"yes-1"))
    pub(core, 3, put_ev(3, b"no-1"))                      # same (key, type): the cached plan
    pub(core, 4, put_ev(4, b"yes-2"))
    pub(core, 5, del_ev(5, prev_value=b"no"))
    core.on_publish(5, 7, [[6, [put_ev(6, b"no-2"), put_ev(6, b"yes-3", key=b"other")]],
                           [7, [put_ev(7, b"yes-4"), del_ev(7)]]], 0)
    got = by_watch(take(core, s))
    assert [(e[0], e[1][2], e[1][4]) for e in got[1]] == [(PUT, 2, b"yes-1"), (PUT, 4, b"yes-2"), (DELETE, 5, b""),
                                                           (PUT, 7, b"yes-4"), (DELETE, 7, b"")]


def test_different_filters_never_share_a_group_and_identical_ones_do():
    core = joined(at=1)
    s1, s2 = session(b"s1"), session(b"s2")
    a = watch(core, s1, 1, value_equals=b"x")
    b = watch(core, s1, 2, value_equals=b"x")              # same filter, same session: one response
    c = watch(core, s1, 3, value_equals=b"y")
    d = watch(core, s2, 1, value_equals=b"x", keys_only=True)
    e = watch(core, s2, 2)
    assert a.slot is b.slot and a.slot.group.vfilter is a.vfilter
    assert c.slot is c and d.slot is d and e.slot is e    # alone on their spec
    core.take_output()
    pub(core, 2, put_ev(2, b"x"))
    out = core.take_output()                               # every session's output at once
    r1, r2 = responses(out[s1.ident]), responses(out[s2.ident])
    assert r1 == [([1, 2], [[PUT, kv(2, b"x")]])]
    assert sorted(r2) == [([1], [[PUT, kv(2, b"")]]), ([2], [[PUT, kv(2, b"x")]])]
    core.watch_cancel(s1, 9, 2)                            # back to a lone watcher: keeps its filter
    pub(core, 3, put_ev(3, b"y"))
    assert responses(take(core, s1)) == [([3], [[PUT, kv(3, b"y")]])]


@pytest.mark.parametrize("events_per_publish", [1, 3])
def test_the_predicate_is_evaluated_once_per_event_however_many_watchers_and_sessions(events_per_publish):
    """The cost that must not grow with watchers: 300 watchers in 30 sessions, on one key and on
    a range, share one filter, judged once per event (count, not time)."""
    core = joined(at=1)
    f = requests.normalize("watch_create", {"key": b"k", "value_prefix": b"p"}).vfilter
    sessions = [session(b"s%d" % i) for i in range(30)]
    for s in sessions:
        for wid in range(1, 6):
            watch(core, s, wid, value_prefix=b"p")
        for wid in range(6, 11):
            watch(core, s, wid, value_prefix=b"p", range_end=b"l")
    core.take_output()
    before = f.evaluations
    rev = 2
    for i in range(4):
        evs = [put_ev(rev, b"p%d" % j if j % 2 == 0 else b"q") for j in range(events_per_publish)]
        pub(core, rev, *evs)
        rev += 1
    assert f.evaluations - before == 4 * events_per_publish
    delivered = by_watch(core.take_output()[sessions[7].ident])
    assert all(len(v) == 4 * ((events_per_publish + 1) // 2) for v in delivered.values()) and len(delivered) == 10


def test_keys_only_events_are_built_once_per_event_not_per_watcher(monkeypatch):
    calls = []
    real = valuefilter.strip_event        # what Judged builds keys-only forms with
    monkeypatch.setattr(valuefilter, "strip_event", lambda ev: calls.append(1) or real(ev))
    core = joined(at=1)
    sessions = [session(b"s%d" % i) for i in range(20)]
    for s in sessions:
        watch(core, s, 1, keys_only=True)
        watch(core, s, 2, keys_only=True, range_end=b"l")
    pub(core, 2, put_ev(2, b"v"))                                   # _deliver_one
    core.on_publish(2, 3, [[3, [put_ev(3, b"v"), put_ev(3, b"w", key=b"k2")]]], 0)   # _deliver
    assert len(calls) == 1 + 2
    out = core.take_output()
    for s in sessions:
        got = by_watch(out[s.ident])
        assert [e[1][4] for e in got[1]] == [b""] * 2 and [e[1][0] for e in got[2]] == [b"k", b"k", b"k2"]


def test_filtered_out_events_leave_progress_notify_ticking_and_positions_exact():
    core = joined(at=1)
    s = session()
    filtered = watch(core, s, 1, value_equals=b"wanted", progress_notify=True)
    watch(core, s, 2, progress_notify=True)
    take(core, s)
    core.progress_tick()                                           # mark at 1
    for rev in range(2, 6):
        pub(core, rev, put_ev(rev, b"unwanted"))
    take(core, s)
    core.progress_tick()
    items = take(core, s)
    # The filtered watch had no event since the last tick: it is told every event <= 5 was
    # delivered; the plain one had events, so it is not.
    assert progress_of(items, 1) == [5] and progress_of(items, 2) == []
    # Victimized at its implicit position, it resumes at the next revision, not at the last
    # event it was given.
    core.victimize(Owner((filtered,), 6), 0.0)
    assert filtered.next_rev == 6


def test_ring_catch_up_filters_and_strips():
    core = joined(at=1, ring_revisions=100)
    for rev, value in ((2, b"a1"), (3, b"b1"), (4, b"a22")):
        pub(core, rev, put_ev(rev, value))
    pub(core, 5, del_ev(5))
    s = session()
    w = watch(core, s, 1, start=2, value_prefix=b"a", keys_only=True)
    assert w.state == "synced"
    got = by_watch(take(core, s))[1]
    assert [(e[0], e[1][2], e[1][4]) for e in got] == [(PUT, 2, b""), (PUT, 4, b""), (DELETE, 5, b"")]


def test_registration_with_the_syncer_carries_the_filter_as_opts():
    core = joined(at=1, ring_revisions=1)
    for rev in range(2, 6):
        pub(core, rev, put_ev(rev, b"v"))
    s = session()
    watch(core, s, 1, start=2, value_prefix=b"v", max_value_bytes=9)
    watch(core, s, 2, start=2)
    _, sync = core.take_syncer_work()
    assert [r.opts for r in sync] == [{"value_prefix": b"v", "max_value_bytes": 9}, {}]
    decoded = internal.Registration.decode(msgpack.unpackb(msgpack.packb(list(sync[0])), raw=False))
    assert valuefilter.from_opts(decoded.opts) is s.watches[1].vfilter


# ---------------------------------------------------------------- the syncer batch
def sync_watcher(uid, session=b"s1", next_rev=1, prev_kv=False, opts=None):
    return SyncWatcher(b"f1", uid, 1, b"k", None, next_rev, 0, prev_kv, uid, False, session, opts or {})


def test_syncer_batch_filters_once_per_record_strips_and_hands_off_past_filtered_events():
    opts = {"value_prefix": b"a", "keys_only": True}
    f = valuefilter.from_opts(opts)
    ws = [sync_watcher(1, b"s1", prev_kv=True, opts=opts), sync_watcher(2, b"s2", opts=opts),
          sync_watcher(3, b"s3", opts={"value_prefix": b"a"}), sync_watcher(4, b"s4")]
    batch = Batch(ws, max_watchers=10, chunk_revisions=3, chunk_bytes=1 << 20)
    assert len({id(g) for same in batch.groups.values() for g in same}) == 4
    view = History([(PUT, b"k", b"a1"), (PUT, b"k", b"b1"), (PUT, b"k", b"a2"), (DELETE, b"k", b""),
                    (PUT, b"k", b"b2"), (PUT, b"k", b"b3")])
    before = f.evaluations
    _, events, handoffs, _ = run(batch, view)
    assert f.evaluations - before == 5                      # 5 PUT records, whatever the groups
    got: dict[int, list] = {}
    for _fanout, ev in events:
        ids, _rev, evs, _frag = internal.unpack_response(ev.response)
        for wid in ids:
            got.setdefault(wid, []).extend(evs)
    assert [(e[0], e[1][2], e[1][4]) for e in got[2]] == [(PUT, 1, b""), (PUT, 3, b""), (DELETE, 4, b"")]
    assert [e[2][4] for e in got[1] if len(e) > 2] == [b"", b""]         # prev values stripped too
    assert [(e[1][2], e[1][4]) for e in got[3]] == [(1, b"a1"), (3, b"a2"), (4, b"")]
    assert len(got[4]) == 6
    # Handed off at the current revision: the filtered-out PUTs at 5 and 6 are behind them all.
    assert sorted(h.revision for _f, h in handoffs) == [6, 6, 6, 6]


def test_interned_filters_do_not_outlive_their_watches():
    """A client creating ever-new predicates leaves nothing behind once its watches are gone."""
    import gc
    core = joined(at=1)
    s = session()
    gc.collect()                    # earlier tests' cores (cycles) let go of their filters first
    before = len(valuefilter._interned)
    for i in range(50):
        watch(core, s, i + 1, value_equals=b"unique-%d" % i)
    assert len(valuefilter._interned) == before + 50
    core.drop_session(s)
    core.take_output(), core.take_syncer_work()
    gc.collect()
    assert len(valuefilter._interned) == before


def test_syncer_builds_keys_only_events_once_per_record_not_per_group(monkeypatch):
    calls = []
    real = valuefilter.strip_event        # what Judged builds keys-only forms with
    monkeypatch.setattr(valuefilter, "strip_event", lambda ev: calls.append(1) or real(ev))
    ws = [sync_watcher(i, b"s%d" % i, opts={"keys_only": True}) for i in range(1, 21)]
    batch = Batch(ws, max_watchers=30, chunk_revisions=10, chunk_bytes=1 << 20)
    view = History([(PUT, b"k", b"v1"), (PUT, b"k", b"v2"), (DELETE, b"k", b"")])
    _, events, _, _ = run(batch, view)
    assert len(calls) == 3 and len(events) == 20


def _filtered_index_items(core) -> set:
    return {id(item) for item in core.index.all_items() if item.vfilter is not None}


def test_distinct_filters_on_one_key_are_found_without_scanning_the_key(monkeypatch):
    """A hostile client may put thousands of distinct predicates on one key: a filtered watcher
    finds its group through the spec table, never by walking the key's items (that walk made
    creating n of them O(n^2)); the table stays exactly the filtered items of the index through
    grouping, ungrouping, cancels, a dropped session and a publish gap."""
    core = joined(at=1)
    s1, s2 = session(b"s1"), session(b"s2")
    scans = []
    from zwatch.actors.index import KeyIndex
    real = KeyIndex.items
    monkeypatch.setattr(KeyIndex, "items", lambda self, key, end: scans.append(key) or real(self, key, end))
    for i in range(500):
        watch(core, s1, i + 1, value_equals=b"v%d" % i)
    for i in range(500):
        watch(core, s2, i + 1, value_equals=b"v%d" % (i % 250))      # joins s1's groups
    assert scans == []
    watch(core, s1, 1000)                                            # a plain one scans (<= 16 plain)
    assert len(scans) == 1
    assert set(map(id, core._vitems.values())) == _filtered_index_items(core)
    assert len(core._vitems) == 500
    for i in range(0, 500, 3):
        core.watch_cancel(s1, 1, i + 1)                              # groups back to lone watchers
    assert set(map(id, core._vitems.values())) == _filtered_index_items(core)
    core.drop_session(s2)
    assert set(map(id, core._vitems.values())) == _filtered_index_items(core)
    core.on_publish(5, 5, [], 0)                                     # a gap: everyone to the syncer
    assert core._vitems == {} and _filtered_index_items(core) == set()
