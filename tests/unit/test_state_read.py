"""Issue #16 items 1-2 without I/O: the syncer's state read (actors/syncer/state.py), the fan-out
core's handling of states and resyncs (actors/fanout/core.py), the request fields, the client's
delivery of state responses and the checker's State rule (SPEC.md section 7.7)."""
from __future__ import annotations

import threading

import msgpack
import pytest

from zwatch import internal, requests
from zwatch.actors.fanout.core import FanoutCore
from zwatch.actors.fanout.model import UNSYNCED, VICTIM, Session, StateOwner, WatchOut
from zwatch.actors.syncer.batch import SyncWatcher
from zwatch.actors.syncer.state import StateRead
from zwatch.client.delivery import WatchRouter
from zwatch.client.types import Header, KeyValue, WatchResponse, Event
from zwatch.errors import Compacted, InvalidArgument
from zwatch.tools import checker


# ---------------------------------------------------------------- the syncer's state read
class Snapshot:
    """What a ReadView gives a state read: current / compact revision and state_chunk(); the
    kvs alive at each revision are given whole.  Counts the kvs it hands out."""

    def __init__(self, states: dict[int, dict[bytes, list]], current: int, compact: int = 0):
        self.states, self.current_revision, self.compact_revision = states, current, compact
        self.read = 0

    def state_chunk(self, key, end, rev, max_keys, max_bytes):
        if rev < self.compact_revision:
            raise Compacted("compacted", compact_revision=self.compact_revision)
        keys = sorted(k for k in self.states[rev] if k >= key and (end is None or k < end))
        out, size = [], 0
        for k in keys:
            if len(out) >= max_keys or (out and size >= max_bytes):
                return out, k
            kv = self.states[rev][k]
            out.append(kv)
            self.read += 1
            size += len(kv[0]) + len(kv[4])
        return out, None


def kv(key: bytes, mod: int, value: bytes = b"v"):
    return [key, mod, mod, 1, value, 0]


def state_watcher(opts, key=b"a", end=b"z", next_rev=5):
    return SyncWatcher(b"f1", 7, 3, key, end, next_rev, 0, False, 70, False, b"s1", opts)


def run_state(read, view, max_keys=3, max_bytes=1 << 20, max_steps=100):
    items, handoffs = [], None
    for _ in range(max_steps):
        got, handoffs, _n = read.step(view, max_keys, max_bytes)
        items.extend(got)
        if handoffs is not None:
            return items, handoffs
    raise AssertionError("the state read never ended")


def decoded(items):
    out = []
    for _f, ev in items:
        ids, rev, evs, frag, ext = msgpack.unpackb(ev.response, raw=False)
        assert ev.extra["mark"] == ext["mark"] and ids == [70] and not frag
        if ext["mark"] != "reset":                    # where it starts: to go on from it if dropped
            assert ev.extra["state_rev"] == rev
        # a state item never moves the watcher's position
        assert (ev.first_rev, ev.last_rev) == (5, 4) and ev.members == [(7, 3)]
        out.append((ext["mark"], rev, [e[1][0] for e in evs], ext.get("same", [])))
    return out


def test_a_state_comes_in_bounded_chunks_at_one_revision_then_state_end_and_a_handoff_at_it():
    keys = {bytes([c]): kv(bytes([c]), 2 + i) for i, c in enumerate(b"abcdefgh")}
    keys[b"zz"] = kv(b"zz", 3)                                  # outside [a, z)
    view = Snapshot({20: keys}, current=20)
    items, handoffs = run_state(StateRead(state_watcher({"state": 1})), view)
    got = decoded(items)
    assert [g[0] for g in got] == ["state", "state", "state", "state_end"]
    assert [g[2] for g in got] == [[b"a", b"b", b"c"], [b"d", b"e", b"f"], [b"g", b"h"], []]
    assert {g[1] for g in got} == {20}
    assert handoffs == [(b"f1", internal.Handoff(7, 3, 20))]
    assert view.read == 8                                       # each kv read once


def test_a_chunk_is_bounded_by_bytes_too_and_a_big_kv_goes_alone():
    view = Snapshot({9: {b"a": kv(b"a", 2, b"x" * 100), b"b": kv(b"b", 3, b"x" * 100), b"c": kv(b"c", 4)}}, 9)
    got = decoded(run_state(StateRead(state_watcher({"state": 1})), view, max_keys=100, max_bytes=50)[0])
    assert [g[2] for g in got] == [[b"a"], [b"b"], [b"c"], []]


def test_a_compacted_state_revision_starts_over_at_a_newer_one_with_a_reset():
    view = Snapshot({10: {b"a": kv(b"a", 2), b"b": kv(b"b", 3), b"c": kv(b"c", 4), b"d": kv(b"d", 5)},
                     30: {b"a": kv(b"a", 2), b"d": kv(b"d", 25)}}, current=10)
    read = StateRead(state_watcher({"state": 1}))
    first, handoffs, _ = read.step(view, 2, 1 << 20)
    assert handoffs is None and decoded(first) == [("state", 10, [b"a", b"b"], [])]
    view.current_revision, view.compact_revision = 30, 20       # R = 10 compacted mid-state
    items, handoffs = run_state(read, view, max_keys=2)
    assert decoded(items) == [("reset", 30, [], []), ("state", 30, [b"a", b"d"], []), ("state_end", 30, [], [])]
    assert handoffs[0][1].revision == 30 and read.restarts == 1


def test_a_digest_sends_only_what_changed_since_and_names_the_rest():
    view = Snapshot({40: {b"a": kv(b"a", 5), b"b": kv(b"b", 12), b"c": kv(b"c", 9), b"d": kv(b"d", 31)}}, 40, 35)
    read = StateRead(state_watcher({"state": 2, "state_since": 10, "state_reset": True}))
    got = decoded(run_state(read, view, max_keys=10)[0])
    assert got == [("reset", 40, [], []), ("state", 40, [b"b", b"d"], [b"a", b"c"]), ("state_end", 40, [], [])]


def test_a_single_key_and_a_from_key_range():
    view = Snapshot({5: {b"k": kv(b"k", 2), b"k0": kv(b"k0", 3), b"z": kv(b"z", 4)}}, 5)
    one = decoded(run_state(StateRead(state_watcher({"state": 1}, key=b"k", end=None)), view)[0])
    assert one[0][2] == [b"k"]
    frm = decoded(run_state(StateRead(state_watcher({"state": 1}, key=b"k0", end=requests.KEY_INFINITY)), view)[0])
    assert frm[0][2] == [b"k0", b"z"]


# ---------------------------------------------------------------- the fan-out core
def joined(at=10, **kw):
    core = FanoutCore(**kw)
    core.on_publish(at, at, [], 0)
    return core


def state_item(w, mark, evs=(), rev=20):
    resp = msgpack.packb([[w.watch_id], rev, list(evs), False, {"mark": mark}])
    return ([(w.uid, w.epoch)], w.next_rev, w.next_rev - 1, resp, {"mark": mark})


def create(core, s, wid=1, **body):
    core.watch_create(s, 100 + wid, dict({"key": b"a", "range_end": b"z", "watch_id": wid}, **body))
    return s.watches.get(wid)


def test_an_initial_state_watch_registers_a_state_read_and_its_items_do_not_move_its_position():
    core = joined()
    s = Session(b"s1", "s1")
    w = create(core, s, initial_state=True)
    _, sync = core.take_syncer_work()
    assert w.state == UNSYNCED and sync[0].opts == {"state": 1, "state_reset": False}
    before = w.next_rev
    core.on_sync_events([state_item(w, "state", [[0, [b"b", 3, 3, 1, b"v", 0]], [0, [b"c", 2, 2, 1, b"v", 0]]])])
    assert w.next_rev == before
    core.on_sync_events([state_item(w, "state_end")])
    out = core.take_output()[s.ident]
    assert [type(o.owner) for o in out if isinstance(o, WatchOut)] == [StateOwner, StateOwner]
    assert w.uid not in core.state_reads
    core.on_synced([(w.uid, w.epoch, 10)])                     # handoff at R = 10 = last_seen
    assert w.state == "synced"
    # a plain watch of the same fan-out registers with {} opts, as before
    plain = create(core, s, wid=2, start_revision=3)
    assert core.take_syncer_work()[1][0].opts == {} and plain.state == UNSYNCED


def test_a_dropped_state_item_reads_the_state_again_from_a_reset():
    core = joined()
    s = Session(b"s1", "s1")
    w = create(core, s, initial_state=True)
    core.take_syncer_work()
    core.on_sync_events([state_item(w, "state", [[0, [b"b", 3, 3, 1, b"v", 0]]])])   # no resume point
    (item,) = [o for o in core.take_output()[s.ident] if isinstance(o, WatchOut)]
    core.victimize(item.owner, now=0.0)
    assert w.state == VICTIM
    core.retry_victims(now=100.0)
    _, sync = core.take_syncer_work()
    assert sync[0].opts == {"state": 1, "state_reset": True}


def test_a_dropped_state_piece_goes_on_from_it_at_the_same_revision_without_a_reset():
    """Regression: a slow client's state was read again from a reset each time one of its pieces
    was dropped, so a state that could not be delivered in one go without a stall never
    completed (livelock).  It now goes on from the first piece the client lacks, at the same R."""
    core = joined()
    s = Session(b"s1", "s1")
    w = create(core, s, initial_state=True)
    core.take_syncer_work()

    def piece(key, start):
        resp = msgpack.packb([[w.watch_id], 20, [[0, [key, 3, 3, 1, b"v", 0]]], False, {"mark": "state"}])
        return ([(w.uid, w.epoch)], w.next_rev, w.next_rev - 1, resp,
                {"mark": "state", "state_rev": 20, "state_from": start})

    core.on_sync_events([piece(b"b", b"a"), piece(b"d", b"c"), piece(b"f", b"e")])
    items = [o for o in core.take_output()[s.ident] if isinstance(o, WatchOut)]
    for dropped in items[1:]:                  # the first piece went out; the two others are dropped
        core.victimize(dropped.owner, now=0.0)
    core.retry_victims(now=100.0)
    _, sync = core.take_syncer_work()
    assert sync[-1].opts == {"state": 1, "state_reset": False, "state_rev": 20, "state_from": b"c"}
    # The syncer goes on from there: same R, from b"c", no reset.
    view = Snapshot({20: {b"b": kv(b"b", 3), b"d": kv(b"d", 3), b"f": kv(b"f", 3)}}, current=25)
    got = decoded(run_state(StateRead(state_watcher(sync[-1].opts)), view)[0])
    assert got[0][:3] == ("state", 20, [b"d", b"f"]) and got[-1][0] == "state_end"
    # A new syncer (or any other re-registration) reads it again from a reset.
    core.on_syncer_instance("another")
    _, sync = core.take_syncer_work()
    assert sync[-1].opts == {"state": 1, "state_reset": True}


def test_a_dropped_state_end_after_the_handoff_reads_the_state_again():
    """state_end was taken (the watch then handed off and live) but its frame was dropped: the
    client never saw the state complete, so it must not get live events on a partial state."""
    core = joined()
    s = Session(b"s1", "s1")
    w = create(core, s, initial_state=True)
    core.take_syncer_work()
    core.on_sync_events([state_item(w, "state_end", rev=10)])
    core.on_synced([(w.uid, w.epoch, 10)])
    items = [o for o in core.take_output()[s.ident] if isinstance(o, WatchOut)]
    assert w.state == "synced"
    core.victimize(items[0].owner, now=0.0)
    core.retry_victims(now=100.0)
    _, sync = core.take_syncer_work()
    assert sync and sync[-1].opts.get("state") == 1 and sync[-1].opts["state_reset"] is True


@pytest.mark.parametrize("mode,opts", [("resync", {"state": 1, "state_reset": True}),
                                       ("digest", {"state": 2, "state_reset": True, "state_since": 6})])
def test_on_compacted_turns_a_compaction_cancel_into_a_state_read(mode, opts):
    core = joined()
    s = Session(b"s1", "s1")
    w = create(core, s, start_revision=4, on_compacted=mode)
    core.take_syncer_work()
    core.on_sync_events([([(w.uid, w.epoch)], 4, 6, msgpack.packb([[1], 10, [[0, [b"b", 5, 5, 1, b"v", 0]]], False]), {})])
    assert w.next_rev == 7
    core.on_compacted([(w.uid, w.epoch, 8)])
    _, sync = core.take_syncer_work()
    assert sync[0].opts == opts and w.state == UNSYNCED and core.st["resyncs"] == 1
    assert not any(getattr(o, "data", b"").startswith(b"\x86") for o in core.take_output().get(s.ident, []))


def test_a_create_below_the_compact_revision_resyncs_only_when_asked():
    core = FanoutCore()
    core.on_publish(10, 10, [], 8)
    s = Session(b"s1", "s1")
    dg = create(core, s, wid=1, start_revision=3, on_compacted="digest")
    _, sync = core.take_syncer_work()
    assert sync[0].opts == {"state": 2, "state_reset": True, "state_since": 2} and dg.state == UNSYNCED
    plain = create(core, s, wid=2, start_revision=3)
    assert plain is None                                        # canceled (compacted), as etcd
    assert not core.take_syncer_work()[1]


def test_watch_create_validates_the_state_fields():
    spec = requests.normalize("watch_create", {"key": b"a", "initial_state": True, "on_compacted": "digest"})
    assert spec.initial_state and spec.on_compacted == "digest"
    assert spec.to_wire()["initial_state"] is True
    plain = requests.normalize("watch_create", {"key": b"a"})
    assert (plain.initial_state, plain.on_compacted) == (False, "cancel")
    assert "initial_state" not in plain.to_wire() and "on_compacted" not in plain.to_wire()
    for bad in ({"initial_state": 1}, {"on_compacted": "relist"}, {"on_compacted": 1},
                {"initial_state": True, "start_revision": 5}):
        with pytest.raises(InvalidArgument):
            requests.normalize("watch_create", dict({"key": b"a"}, **bad))


def test_repack_keeps_the_ext_map():
    resp = msgpack.packb([[1, 2], 9, [], False, {"mark": "state_end"}])
    assert msgpack.unpackb(internal.repack_response([2], resp), raw=False) == [[2], 9, [], False, {"mark": "state_end"}]


# ---------------------------------------------------------------- the client's delivery
class _W:
    def __init__(self, wid):
        import queue
        self.watch_id, self.queue, self.shared = wid, queue.Queue(), False
        self.last_revision, self.canceled, self._fragments, self.duplicates_dropped = 0, False, [], 0
        self.body = {"initial_state": True}
        self._in_state = True
        self.verify = False


def test_the_router_never_drops_state_events_and_stands_at_r_after_state_end():
    w = _W(1)
    router = WatchRouter({1: w}, threading.Lock())
    kvs = [[b"b", 9, 9, 1, b"v", 0], [b"c", 3, 3, 1, b"v", 0]]    # mod_revisions not increasing
    router.on_watch_responses([[[1], 12, [[0, kvs[0]]], False, {"mark": "state"}],
                               [[1], 12, [[0, kvs[1]]], False, {"mark": "state"}],
                               [[1], 12, [], False, {"mark": "state_end"}]])
    got = [w.queue.get_nowait() for _ in range(3)]
    assert [r.initial_state for r in got] == [True, True, False] and got[2].state_complete
    assert [e.kv.key for r in got for e in r.events] == [b"b", b"c"]
    assert w.last_revision == 12 and not w._in_state and "initial_state" not in w.body
    assert not got[0].is_progress_notify and got[2].is_progress_notify
    router.on_watch_responses([[[1], 12, [[0, [b"d", 12, 12, 1, b"v", 0]]], False]])   # <= R: a duplicate
    assert w.queue.empty() and w.duplicates_dropped == 1


# ---------------------------------------------------------------- the checker's State rule
def _resp(rev, events=(), mark=None, same=None):
    """events: (type, key, value, mod_revision); every key here is created once, never re-put."""
    ext = None if mark is None else dict({"mark": mark}, **({"same": same} if same else {}))
    return WatchResponse(1, Header(rev), [Event(t, KeyValue(k, m, m, 1, v) if t == "PUT" else KeyValue(k, 0, m, 0, b""))
                                          for t, k, v, m in events], ext=ext)


def test_the_checker_applies_a_digest_and_flags_a_wrong_state():
    held = {b"a": (b"1", 2), b"b": (b"2", 3), b"c": (b"3", 4)}
    resps = [_resp(9, mark="reset"), _resp(9, [("PUT", b"b", b"new", 8)], "state", [b"a"]), _resp(9, mark="state_end"),
             _resp(10, [("DELETE", b"a", b"", 10)])]
    assert checker.apply_state(held, resps) == {b"b": (b"new", 8)}
    truth = {b"a": (b"1", 2), b"b": (b"new", 8)}
    assert checker.check_state(checker.apply_state(held, resps[:3]), truth, 9) == []
    bad = checker.check_state({b"b": (b"new", 8)}, truth, 9)
    assert len(bad) == 1 and bad[0].startswith("[State]") and "b'a'" in bad[0]


def test_check_all_checks_a_state_stream_against_the_history_and_its_tail_from_r_plus_1():
    hist = [checker.HEvent(2, 0, "PUT", b"a", b"1", 2, 1), checker.HEvent(3, 0, "PUT", b"b", b"2", 3, 1),
            checker.HEvent(4, 0, "DELETE", b"a"), checker.HEvent(5, 0, "PUT", b"c", b"3", 5, 1)]
    spec = checker.WatchSpec(b"a", b"z")
    good = [_resp(3, [("PUT", b"a", b"1", 2), ("PUT", b"b", b"2", 3)], "state"), _resp(3, mark="state_end"),
            _resp(4, [("DELETE", b"a", b"", 4)]), _resp(5, [("PUT", b"c", b"3", 5)])]
    res = checker.check_all(hist, [checker.StreamRecord("w", spec, good)])
    assert res.ok, res.violations
    assert res.counts["states"] == 1
    wrong = [_resp(4, [("PUT", b"a", b"1", 2), ("PUT", b"b", b"2", 3)], "state"),
             _resp(4, mark="state_end")] + good[3:]             # a at R = 4, deleted at 4: wrong
    res = checker.check_all(hist, [checker.StreamRecord("w", spec, wrong)])
    assert res.by_guarantee["State"] == 1
    gap = good[:2] + good[3:]                                    # the tail misses revision 4
    assert not checker.check_all(hist, [checker.StreamRecord("w", spec, gap)]).ok


def test_the_checker_flags_two_states_mixed_without_a_reset():
    a, b = ("PUT", b"a", b"1", 2), ("PUT", b"b", b"2", 3)
    ok = [_resp(5, [a], "state"), _resp(7, mark="reset"), _resp(7, [a], "state"), _resp(7, [b], "state"),
          _resp(7, mark="state_end")]
    assert checker.check_state_order(ok) == []
    mixed = [_resp(5, [a], "state"), _resp(7, [a], "state"), _resp(7, [b], "state"), _resp(7, mark="state_end")]
    assert len(checker.check_state_order(mixed)) == 2        # another revision, and a key again


def test_a_digest_is_taken_against_what_the_client_really_got():
    """History frames queued before the resync and dropped afterwards: the client's copy is
    older than the position the digest was computed from, so the digest's `since` is lowered to
    the first revision it lost - 1 and the state is read again from a reset."""
    core = joined()
    s = Session(b"s1", "s1")
    w = create(core, s, start_revision=4, on_compacted="digest")
    core.take_syncer_work()
    core.on_sync_events([([(w.uid, w.epoch)], 5, 6, msgpack.packb([[1], 10, [[0, [b"b", 5, 5, 1, b"v", 0]]], False]), {})])
    core.on_compacted([(w.uid, w.epoch, 8)])
    assert core.take_syncer_work()[1][0].opts["state_since"] == 6
    history = [o for o in core.take_output()[s.ident] if isinstance(o, WatchOut)][0]
    core.victimize(history.owner, now=0.0)                      # revision 5's frame never left
    core.retry_victims(now=100.0)
    assert core.take_syncer_work()[1][-1].opts == {"state": 2, "state_since": 4, "state_reset": True}


def test_a_resync_starts_a_verified_watchs_hash_again_at_its_state_end():
    """Issue #16 items 2 and 5 together (SPEC.md 7.10): a verified watch that had events, then
    found its next revision compacted and was resynced, carries in its bookmarks the hash of the
    changes after the state's revision only: its state_end sets the hash back to 0 (the client
    does the same), and the registration for the state carries both kinds' opts."""
    from zwatch import streamhash
    core = joined()
    s = Session(b"s1", "s1")
    w = create(core, s, start_revision=4, on_compacted="resync", verify=True)
    _, sync = core.take_syncer_work()
    assert sync[0].opts == {"verify": True}
    ev = [0, [b"b", 5, 5, 1, b"v", 0]]
    core.on_sync_events([([(w.uid, w.epoch)], 4, 6, msgpack.packb([[1], 10, [ev], False]),
                          {"hash": streamhash.to_bytes(streamhash.digest(0, ev[1]))})])
    assert w.vhash == streamhash.digest(0, ev[1])
    core.on_compacted([(w.uid, w.epoch, 8)])
    _, sync = core.take_syncer_work()
    assert sync[0].opts == {"state": 1, "state_reset": True, "verify": True}
    core.on_sync_events([state_item(w, "reset", rev=12), state_item(w, "state", [ev], rev=12),
                         state_item(w, "state_end", rev=12)])
    core.on_synced([(w.uid, w.epoch, 12)])
    assert w.vhash == 0, "the state is not hashed and its end starts the hash again"


def test_a_state_read_going_on_at_a_compacted_revision_starts_over_with_a_reset():
    states = {20: {b"b": kv(b"b", 3), b"d": kv(b"d", 3)}, 30: {b"b": kv(b"b", 3), b"d": kv(b"d", 28)}}
    opts = {"state": 1, "state_reset": False, "state_rev": 20, "state_from": b"c"}
    got = decoded(run_state(StateRead(state_watcher(opts)), Snapshot(states, current=30, compact=25))[0])
    assert [g[0] for g in got] == ["reset", "state", "state_end"] and got[1][1:3] == (30, [b"b", b"d"])
    # Only state_end was lost: it alone again, at R, then the handoff at R (if R stands).
    done = {"state": 1, "state_reset": False, "state_rev": 20, "state_done": True}
    items, handoffs = run_state(StateRead(state_watcher(done)), Snapshot(states, current=30))
    assert [g[0] for g in decoded(items)] == ["state_end"] and handoffs[0][1].revision == 20
    items, handoffs = run_state(StateRead(state_watcher(done)), Snapshot(states, current=30, compact=25))
    assert [g[0] for g in decoded(items)] == ["reset", "state", "state_end"] and handoffs[0][1].revision == 30
