"""Unit tests of zwatch.tools.checker: every check passes on a good stream and fails on a crafted bad one."""
from __future__ import annotations

import pytest

from zwatch.client import Event, Header, KeyValue, WatchResponse
from zwatch.tools.checker import (AckedWrite, HEvent, History, StreamRecord, WatchSpec, check_all, check_history,
                                  check_stream, compare_histories, history_from_store_records, history_from_stream)

# revision 2: put a=1 / 3: put b=1 / 4: txn put a=2, put c=1 / 5: delete a / 6: put a=3 / 7: put b=2
H = [
    HEvent(2, 0, "PUT", b"a", b"1", 2, 1),
    HEvent(3, 0, "PUT", b"b", b"1", 3, 1),
    HEvent(4, 0, "PUT", b"a", b"2", 2, 2),
    HEvent(4, 1, "PUT", b"c", b"1", 4, 1),
    HEvent(5, 0, "DELETE", b"a"),
    HEvent(6, 0, "PUT", b"a", b"3", 6, 1),
    HEvent(7, 0, "PUT", b"b", b"2", 3, 2),
]
HIST = History(H)
BY = {(e.revision, e.key): e for e in H}


def kv(e: HEvent) -> KeyValue:
    return KeyValue(e.key, e.create_revision, e.revision, e.version, e.value)


def ev(rev, key, prev: HEvent | None = None, **change) -> Event:
    e = BY[(rev, key)]
    k = kv(e)
    for name, v in change.items():
        setattr(k, name, v)
    return Event(e.type, k, kv(prev) if prev is not None else None)


def resp(*events, header=None) -> WatchResponse:
    top = max(e.kv.mod_revision for e in events)
    return WatchResponse(1, Header(header if header is not None else top), list(events))


def progress(rev) -> WatchResponse:
    return WatchResponse(1, Header(rev))


def cancel(compact=0, reason="mvcc: required revision has been compacted") -> WatchResponse:
    return WatchResponse(1, Header(7), canceled=True, cancel_reason=reason, compact_revision=compact)


def all_keys(start=2, **kw) -> WatchSpec:
    return WatchSpec(b"\x00", b"\x00", start, **kw)


def good_all():
    return [resp(ev(2, b"a")), resp(ev(3, b"b")), resp(ev(4, b"a"), ev(4, b"c")), resp(ev(5, b"a")),
            resp(ev(6, b"a"), header=7), resp(ev(7, b"b"))]


def run(spec, responses, **kw):
    compact = kw.pop("compact_revision", 0)
    return check_stream(StreamRecord("w", spec, responses, **kw), HIST, compact_revision=compact)


def guarantees(result):
    return set(result.by_guarantee)


# ------------------------------------------------------------------------------------ good streams
def test_good_streams_pass():
    assert run(all_keys(), good_all()).ok
    # single key with prev_kv, deletes and re-creation
    r = run(WatchSpec(b"a", b"", 2, prev_kv=True),
            [resp(ev(2, b"a")), resp(ev(4, b"a", BY[(2, b"a")])), resp(ev(5, b"a", BY[(4, b"a")])),
             resp(ev(6, b"a")), progress(7)], final_revision=7)
    assert r.ok, r.violations
    # range [b, d) from 3, NOPUT sees nothing, NODELETE sees the puts
    assert run(WatchSpec(b"b", b"d", 3), [resp(ev(3, b"b")), resp(ev(4, b"c")), resp(ev(7, b"b"))]).ok
    assert run(WatchSpec(b"a", b"", 2, filters=("NOPUT",)), [resp(ev(5, b"a")), progress(7)]).ok
    assert run(WatchSpec(b"a", b"", 2, filters=("NODELETE",)),
               [resp(ev(2, b"a")), resp(ev(4, b"a")), resp(ev(6, b"a"))]).ok
    # progress notifications at any point that is already complete
    assert run(all_keys(4), [progress(3), resp(ev(4, b"a"), ev(4, b"c")), progress(4), resp(ev(5, b"a")),
                             progress(5)]).ok


def test_good_counts():
    r = run(all_keys(), good_all() + [progress(7)], final_revision=7)
    assert r.ok
    assert r.counts["events_delivered"] == 7 and r.counts["responses"] == 7
    assert r.counts["progress_notifications"] == 1


# ------------------------------------------------------------------------------------ each guarantee
def test_ordered_across_responses():
    g = good_all()
    g[1], g[2] = g[2], g[1]
    assert "Ordered" in guarantees(run(all_keys(), g))


def test_ordered_within_a_revision():
    g = good_all()
    g[2] = resp(ev(4, b"c"), ev(4, b"a"))
    r = run(all_keys(), g)
    assert guarantees(r) == {"Ordered"}, r.violations


def test_unique():
    g = good_all()
    g.insert(3, resp(ev(4, b"a"), ev(4, b"c")))
    r = run(all_keys(), g)
    assert "Unique" in guarantees(r) and r.counts["duplicates"] == 2


def test_reliable_gap():
    g = good_all()
    del g[1]                        # revision 3 never delivered
    r = run(all_keys(), g)
    assert guarantees(r) == {"Reliable"}, r.violations
    assert "rev 3" in r.violations[0]


def test_reliable_gap_at_the_end_is_seen_through_progress():
    r = run(WatchSpec(b"b", b"", 2), [resp(ev(3, b"b")), progress(7)])
    assert "Reliable" in guarantees(r)


def test_atomic_split():
    g = good_all()
    g[2:3] = [resp(ev(4, b"a")), resp(ev(4, b"c"))]
    assert guarantees(run(all_keys(), g)) == {"Atomic"}


def test_atomic_partial_revision():
    g = good_all()
    g[2] = resp(ev(4, b"a"))
    r = run(all_keys(), g)
    assert guarantees(r) == {"Atomic"}, r.violations


def test_bookmarkable():
    g = good_all()
    g.insert(2, progress(5))         # claims 4 and 5 were delivered, they come after
    r = run(all_keys(), g)
    assert guarantees(r) == {"Bookmarkable"}, r.violations


def test_filters():
    r = run(WatchSpec(b"a", b"", 2, filters=("NOPUT",)), [resp(ev(2, b"a")), resp(ev(5, b"a"))])
    assert "Filter" in guarantees(r)
    r = run(WatchSpec(b"a", b"", 2, filters=("NODELETE",)),
            [resp(ev(2, b"a")), resp(ev(4, b"a")), resp(ev(5, b"a")), resp(ev(6, b"a"))])
    assert guarantees(r) == {"Filter"}


def test_range():
    r = run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a")), resp(ev(3, b"b")), resp(ev(4, b"a"))])
    assert guarantees(r) == {"Range"}
    r = run(WatchSpec(b"b", b"c", 3), [resp(ev(3, b"b")), resp(ev(4, b"c"))])   # c is past the end
    assert guarantees(r) == {"Range"}


def test_start_revision():
    r = run(all_keys(4), good_all()[1:])
    assert guarantees(r) == {"StartRevision"}


def test_start_bounds_for_watches_from_now():
    # from "now", created while the store was at 2..3: starting at 3 or 4 is fine
    assert run(all_keys(0, start_bounds=(3, 4)), good_all()[1:]).ok
    assert run(all_keys(0, start_bounds=(3, 4)), good_all()[2:]).ok
    # starting at 5 lost revision 4
    assert "Reliable" in guarantees(run(all_keys(0, start_bounds=(3, 4)), good_all()[3:]))
    # starting at 2 delivered an event before it existed
    assert "StartRevision" in guarantees(run(all_keys(0, start_bounds=(3, 4)), good_all()))


def test_prev_kv_wrong_missing_unasked_and_invented():
    spec = WatchSpec(b"a", b"", 2, prev_kv=True)
    good = [resp(ev(2, b"a")), resp(ev(4, b"a", BY[(2, b"a")])), resp(ev(5, b"a", BY[(4, b"a")])), resp(ev(6, b"a"))]
    assert run(spec, good).ok
    wrong = list(good)
    wrong[2] = resp(ev(5, b"a", BY[(2, b"a")]))
    assert guarantees(run(spec, wrong)) == {"PrevKV"}
    missing = list(good)
    missing[1] = resp(ev(4, b"a"))
    assert guarantees(run(spec, missing)) == {"PrevKV"}
    # ... but absent is fine once compacted at or above the event
    assert run(spec, missing, compact_revision=4).ok
    invented = list(good)
    invented[3] = resp(ev(6, b"a", BY[(4, b"a")]))       # a was deleted at 5
    assert guarantees(run(spec, invented)) == {"PrevKV"}
    unasked = [resp(ev(2, b"a")), resp(ev(4, b"a", BY[(2, b"a")]))]
    assert guarantees(run(WatchSpec(b"a", b"", 2), unasked)) == {"PrevKV"}


def test_delete_event_shape():
    bad = [resp(ev(2, b"a")), resp(ev(4, b"a")), resp(ev(5, b"a", value=b"2", version=2)), resp(ev(6, b"a"))]
    assert "DeleteEvent" in guarantees(run(WatchSpec(b"a", b"", 2), bad))


def test_valid_content_and_existence():
    bad = [resp(ev(2, b"a", value=b"zzz"))]
    assert guarantees(run(WatchSpec(b"a", b"", 2), bad)) == {"Valid"}
    ghost = Event("PUT", KeyValue(b"a", 3, 3, 1, b"x"))
    r = run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a")), resp(ghost)])
    assert "Valid" in guarantees(r)
    as_delete = Event("DELETE", KeyValue(b"b", 0, 3, 0, b""))
    assert "Valid" in guarantees(run(WatchSpec(b"b", b"", 3), [resp(as_delete)]))


def test_header_below_events():
    assert guarantees(run(WatchSpec(b"b", b"", 3), [resp(ev(3, b"b"), header=2)])) == {"Header"}


def test_compaction_cancel():
    # a watch from 2 created after compact(5): must be canceled with compact_revision >= 5, no events
    spec = WatchSpec(b"a", b"", 2, compact_at_create=5)
    assert run(spec, [cancel(5)], compact_revision=5).ok
    assert "Compaction" in guarantees(run(spec, [resp(ev(2, b"a")), cancel(5)], compact_revision=5))
    assert "Compaction" in guarantees(run(spec, [resp(ev(2, b"a")), resp(ev(4, b"a"))], compact_revision=5))
    # a cancel naming a compaction that never happened, or one the watch did not need
    assert "Compaction" in guarantees(run(WatchSpec(b"a", b"", 2), [cancel(6)], compact_revision=5))
    r = run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a")), resp(ev(4, b"a")), resp(ev(5, b"a")), cancel(5)],
            compact_revision=5)
    assert guarantees(r) == {"Compaction"}, r.violations
    # needed revision 3 (< 5): a fair cancel
    assert run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a")), cancel(5)], compact_revision=5).ok


def test_unexpected_cancel_and_responses_after_cancel():
    assert guarantees(run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a")), cancel(0, "boom")])) == {"Cancel"}
    assert run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a")), cancel(0, "canceled by client")],
               canceled_by_client=True).ok
    assert run(WatchSpec(b"b", b"a", 2), [cancel(0, "etcdserver: key >= range_end: the range is empty")]).ok
    r = run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a")), cancel(3), resp(ev(4, b"a"))], compact_revision=3)
    assert "Cancel" in guarantees(r)


def test_liveness():
    assert "Liveness" in guarantees(run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a"))], final_revision=7))
    assert run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a")), resp(ev(4, b"a")), resp(ev(5, b"a")),
                                         resp(ev(6, b"a")), progress(7)], final_revision=7).ok
    # a future watch beyond the final revision is not stuck
    assert run(WatchSpec(b"a", b"", 9), [], final_revision=7).ok
    assert run(WatchSpec(b"a", b"", 2), [resp(ev(2, b"a"))], final_revision=7, canceled_by_client=True).ok


def test_failover_gap_and_duplicate_are_resumable_violations():
    g = good_all()
    del g[3]                                      # revision 5 lost across a failover
    r = run(all_keys(), g, epochs=[0, 0, 0, 1, 1])
    assert guarantees(r) == {"Resumable"}, r.violations
    assert "failover" in r.violations[0]
    g = good_all()
    g.insert(4, resp(ev(5, b"a")))                # replayed after a failover
    r = run(all_keys(), g, epochs=[0, 0, 0, 0, 1, 1, 1])
    assert guarantees(r) == {"Resumable"}
    # the same duplicate without a failover is a plain Unique violation
    assert guarantees(run(all_keys(), g)) == {"Unique"}


def test_explicit_resume():
    first = StreamRecord("w1", all_keys(2), good_all()[:3], canceled_by_client=True)
    ok = StreamRecord("w2", all_keys(5), good_all()[3:], resume_of="w1")
    assert check_all(H, [first, ok], final_revision=7).ok
    gap = StreamRecord("w2", all_keys(5), good_all()[4:], resume_of="w1")
    r = check_all(H, [first, gap], final_revision=7)
    assert "Resumable" in r.by_guarantee, r.violations
    wrong_start = StreamRecord("w2", all_keys(6), good_all()[4:], resume_of="w1")
    assert "Resumable" in check_all(H, [first, wrong_start], final_revision=7).by_guarantee
    # a future watch that only saw a progress notification resumes at its own start
    future = StreamRecord("f1", WatchSpec(b"b", b"", 7), [progress(4)], canceled_by_client=True)
    again = StreamRecord("f2", WatchSpec(b"b", b"", 7), [resp(ev(7, b"b"))], resume_of="f1")
    assert check_all(H, [future, again], final_revision=7).ok


# ------------------------------------------------------------------------------------ history
def test_history_consistency():
    assert check_history(HIST, final_revision=7).ok
    assert "History" in check_history(History([e for e in H if e.revision != 3]), final_revision=7).by_guarantee
    bad_version = [e if e.revision != 7 else HEvent(7, 0, "PUT", b"b", b"2", 3, 5) for e in H]
    assert "History" in check_history(History(bad_version)).by_guarantee
    dead_delete = H + [HEvent(8, 0, "DELETE", b"zz")]
    assert "History" in check_history(History(dead_delete)).by_guarantee
    bad_subs = [e if e.revision != 4 or e.sub != 1 else HEvent(4, 2, "PUT", b"c", b"1", 4, 1) for e in H]
    assert "History" in check_history(History(bad_subs)).by_guarantee


def test_final_state():
    final = [(b"a", b"3", 6, 6, 1), (b"b", b"2", 3, 7, 2), (b"c", b"1", 4, 4, 1)]
    assert check_history(HIST, final_kvs=final).ok
    assert "History" in check_history(HIST, final_kvs=final[:2]).by_guarantee
    assert "History" in check_history(HIST, final_kvs=[(b"a", b"2", 6, 6, 1)] + final[1:]).by_guarantee


def test_acknowledged_writes():
    acked = [AckedWrite(2, ((b"a", b"1"),), what="put a"), AckedWrite(4, ((b"a", b"2"), (b"c", b"1")), what="txn"),
             AckedWrite(5, (), 1, (b"a",), what="delete a"), AckedWrite(7, what="failed txn")]
    assert check_history(HIST, acked=acked).ok
    assert "Durability" in check_history(HIST, acked=[AckedWrite(3, ((b"b", b"other"),))]).by_guarantee
    assert "Durability" in check_history(HIST, acked=[AckedWrite(9, ((b"b", b"1"),))]).by_guarantee
    assert "Durability" in check_history(HIST, acked=[AckedWrite(4, ((b"a", b"2"),))]).by_guarantee   # c missing
    assert "Durability" in check_history(HIST, acked=[AckedWrite(5, (), 2)]).by_guarantee
    twice = [AckedWrite(3, ((b"b", b"1"),), what="w1"), AckedWrite(3, ((b"b", b"1"),), what="w2")]
    assert "Durability" in check_history(HIST, acked=twice).by_guarantee
    assert "Durability" in check_history(HIST, acked=[AckedWrite(20, what="nothing written")]).by_guarantee


def test_phantom_writes():
    attempted = [(e.key, e.value) for e in H if e.type == "PUT"]
    assert check_history(HIST, attempted=attempted).ok
    assert "Durability" in check_history(HIST, attempted=attempted[1:]).by_guarantee


def test_history_from_stream_and_compare():
    events, problems = history_from_stream(good_all())
    assert not problems and events == H
    events, problems = history_from_stream(good_all()[:1] + good_all()[2:])
    assert problems and "revision(s): 3" in problems[0]
    _, problems = history_from_stream(good_all(), last_revision=9)
    assert problems and "8-9" in problems[0]
    assert compare_histories(H, events) and not compare_histories(H, H)
    assert not compare_histories(H, events, lo=4)


def test_history_from_store_records():
    recs = [(2, 0, 0, [b"a", 2, 2, 1, b"1", 0], 20), (5, 0, 1, [b"a", 0, 5, 0, b"", 0], 10)]
    assert history_from_store_records(recs) == [H[0], H[4]]


def test_check_all_aggregates():
    streams = [StreamRecord("all", all_keys(), good_all(), final_revision=7),
               StreamRecord("bad", WatchSpec(b"a", b"", 2, filters=("NOPUT",)), [resp(ev(2, b"a"))])]
    r = check_all(H, streams, final_revision=7)
    assert not r.ok and set(r.by_guarantee) >= {"Filter"}
    assert r.counts["streams"] == 2 and r.counts["history_revisions"] == 6


@pytest.mark.parametrize("n", [1, 20])
def test_violation_messages_are_capped(n):
    g = []
    for _ in range(n):
        g += [resp(ev(2, b"a"))]
    r = run(WatchSpec(b"a", b"", 2), g)
    assert r.by_guarantee["Unique"] == n - 1
    assert len(r.violations) <= 6


# -- leases ---------------------------------------------------------------------------------------
# lease 5 gets k1, k2, k3 (k3 in the same revision as an unrelated put), k2 moves to lease 6,
# k4 is put under 5 and then re-put without it; revoke/expiry of 5 at revision 8 deletes k1 and k3.
L5, L6 = 5, 6
LH = [
    HEvent(2, 0, "PUT", b"k1", b"v", 2, 1, L5),
    HEvent(3, 0, "PUT", b"k2", b"v", 3, 1, L5),
    HEvent(4, 0, "PUT", b"k3", b"v", 4, 1, L5),
    HEvent(4, 1, "PUT", b"x", b"v", 4, 1),
    HEvent(5, 0, "PUT", b"k2", b"w", 3, 2, L6),       # k2 moves to lease 6
    HEvent(6, 0, "PUT", b"k4", b"v", 6, 1, L5),
    HEvent(7, 0, "PUT", b"k4", b"w", 6, 2),           # k4 re-put without a lease: detached
    HEvent(8, 0, "DELETE", b"k1"),
    HEvent(8, 1, "DELETE", b"k3"),
]


def lease_check(events, lives, **kw):
    from zwatch.tools.checker import check_leases
    return check_leases(History(events), lives, **kw)


def lease_lives(end5="expired", end6="alive", rev5=0):
    from zwatch.tools.checker import LeaseLife
    return [LeaseLife(L5, end5, rev5), LeaseLife(L6, end6)]


@pytest.mark.parametrize("client_deletes", [True, False])
def test_lease_revoke_of_exactly_the_attached_keys_passes(client_deletes):
    res = lease_check(LH, lease_lives(), client_deletes_lease_keys=client_deletes)
    assert res.ok, res.violations
    assert res.counts["lease_revocations"] == 1 and res.counts["leases_checked"] == 2
    assert lease_check(LH, lease_lives("revoked", rev5=8)).ok


def test_lease_revoke_missing_a_delete_is_reported():
    broken = LH[:-1]                                  # k3's DELETE never came
    res = lease_check(broken, lease_lives(), client_deletes_lease_keys=False)
    assert res.by_guarantee["LeaseRevoke"] == 2, res.violations     # the revision, and k3 left alive
    assert any("missing [b'k3']" in v for v in res.violations), res.violations
    assert any("stay alive attached" in v for v in res.violations), res.violations
    res = lease_check(broken, lease_lives())          # general mode: the key left alive
    assert any("stay alive attached" in v and "k3" in v for v in res.violations), res.violations


def test_lease_revoke_split_over_two_revisions_is_reported():
    split = LH[:-2] + [HEvent(8, 0, "DELETE", b"k1"), HEvent(9, 0, "DELETE", b"k3")]
    res = lease_check(split, lease_lives(), client_deletes_lease_keys=False)
    assert not res.ok
    assert any("revision 8 deletes [b'k1'], attached were [b'k1', b'k3']" in v for v in res.violations), \
        res.violations
    assert any("revoked twice" in v for v in res.violations), res.violations
    # general mode: revision 8 is taken for the revoke (it could be a client's delete of k1 only
    # if a client claimed it), so it misses k3
    res = lease_check(split, lease_lives())
    assert any("missing [b'k3']" in v for v in res.violations), res.violations


def test_lease_revoke_deleting_a_detached_key_or_sharing_its_revision_is_reported():
    extra = LH + [HEvent(8, 2, "DELETE", b"k4")]      # k4 was re-put without the lease
    res = lease_check(extra, lease_lives(), client_deletes_lease_keys=False)
    assert any("shares its revision" in v for v in res.violations), res.violations
    unsorted = LH[:-2] + [HEvent(8, 0, "DELETE", b"k3"), HEvent(8, 1, "DELETE", b"k1")]
    res = lease_check(unsorted, lease_lives(), client_deletes_lease_keys=False)
    assert any("not sorted by key" in v for v in res.violations), res.violations


def test_lease_kept_alive_must_not_expire():
    res = lease_check(LH, lease_lives(end5="alive"))
    assert res.by_guarantee["LeaseAlive"] == 1, res.violations


def test_acknowledged_revoke_at_another_revision_and_puts_after_a_revoke_are_reported():
    res = lease_check(LH, lease_lives("revoked", rev5=9))
    assert any("acknowledged at revision 9" in v for v in res.violations), res.violations
    after = LH + [HEvent(9, 0, "PUT", b"k9", b"v", 9, 1, L5)]
    res = lease_check(after, lease_lives())
    assert any("put under lease 0x5, revoked at revision 8" in v for v in res.violations), res.violations


def test_client_delete_of_a_lease_key_is_not_a_revoke_in_general_mode():
    # revision 8 is an acknowledged client delete of k1 only; the expiry at 9 deletes k3
    hist = LH[:-2] + [HEvent(8, 0, "DELETE", b"k1"), HEvent(9, 0, "DELETE", b"k3")]
    acked = [AckedWrite(8, (), 1, (b"k1",), what="delete k1")]
    res = lease_check(hist, lease_lives(), acked=acked)
    assert res.ok, res.violations


def test_check_all_runs_the_lease_checks_and_events_carry_the_lease():
    from zwatch.tools.checker import LeaseLife
    res = check_all(LH[:-1], [], leases=[LeaseLife(L5, "expired")])
    assert res.by_guarantee["LeaseRevoke"] >= 1
    # a delivered PUT with the wrong lease is not Valid
    k = KeyValue(b"k1", 2, 2, 1, b"v", 7)
    res = check_stream(StreamRecord("w", all_keys(), [WatchResponse(1, Header(2), [Event("PUT", k)])]),
                       History(LH))
    assert res.by_guarantee["Valid"] == 1, res.violations
    assert history_from_store_records([(2, 0, 0, [b"k1", 2, 2, 1, b"v", L5], 10)])[0].lease == L5


def test_per_watch_bookmark_replies_must_follow_their_bookmark_and_its_events():
    """Issue #16.3: a watch's own progress reply "live at R" means its bookmark at R, behind
    every matching event <= R, had arrived before the reply."""
    spec = WatchSpec(b"a", b"", 2)
    stream = [resp(ev(2, b"a")), resp(ev(4, b"a")), progress(4), resp(ev(5, b"a")), resp(ev(6, b"a")), progress(7)]
    assert run(spec, stream, bookmark_replies=[(3, 4), (6, 7), (6, 3)]).ok
    assert guarantees(run(spec, stream, bookmark_replies=[(2, 4)])) == {"Bookmarkable"}   # no bookmark yet
    assert guarantees(run(spec, stream, bookmark_replies=[(5, 6)])) == {"Bookmarkable"}   # 4 < 6: not at 6
