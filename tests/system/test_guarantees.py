"""Model-based property test of etcd's watch guarantees on one real cluster (zwatch.tools.checker).

Each hypothesis example runs a random program -- puts, deletes, prefix deletes, txns,
compactions, watches from now / past / compacted / future revisions (single keys, prefixes,
ranges, from-key; prev_kv, filters) on two fan-outs, cancels and progress requests -- under
a fresh key prefix.  A Python model of the MVCC store predicts every write's revision and
events; the replies are compared with it, the store's own history is compared with it, and
every watch stream is checked against it.

The cluster is started once for the module; the model follows it across examples (it resyncs
from the store if an earlier failing example left them apart).

The tests at the end are minimal reproductions of bugs the chaos runner found (now regression tests).
"""
from __future__ import annotations

import itertools
import queue
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zwatch import Delete, Put, Version
from zwatch.actors.store import Store
from zwatch.client import DeleteRangeResponse
from zwatch.errors import Compacted, ZwatchError
from zwatch.tools import checker
from zwatch.tools.checker import DELETE, PUT, AckedWrite, HEvent, StreamRecord, WatchSpec
from zwatch.tools.cluster import Cluster
from zwatch.tools.load import take_queued

SUFFIXES = ["a", "b", "c", "d/1", "d/2"]


class World:
    """The cluster, two clients (one per fan-out) and the model of the store."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.c = [cluster.client([ep], timeout=5) for ep in cluster.fanout_eps]
        self.store = Store(cluster.data_dir)
        self.rev = 1
        self.compact = 0
        self.state: dict[bytes, HEvent] = {}
        self.history: list[HEvent] = []
        self.first_revision = 2
        self.examples = itertools.count()
        self.values = itertools.count()

    def resync(self):
        """Follow the store if it moved without the model (an earlier example failed midway)."""
        with self.store.reader() as v:
            cur, comp = v.current_revision, v.compact_revision
            if cur == self.rev and comp == self.compact:
                return
            recs = v.history(max(comp, 2), cur, max_records=1 << 30, max_bytes=1 << 40) if cur >= 2 else []
        self.history = checker.history_from_store_records(recs)
        self.first_revision = max(comp, 2)
        self.rev, self.compact = cur, comp
        self.state = {}
        for kv in self.c[0].get(b"\x00", from_key=True).kvs:
            self.state[kv.key] = HEvent(kv.mod_revision, 0, PUT, kv.key, kv.value, kv.create_revision, kv.version)

    # ---- the model's writes: return the events of the new revision (none: no new revision)
    def model_put(self, rev, sub, key, value) -> HEvent:
        prev = self.state.get(key)
        create, version = (prev.create_revision, prev.version + 1) if prev else (rev, 1)
        e = HEvent(rev, sub, PUT, key, value, create, version)
        self.state[key] = e
        return e

    def model_delete(self, rev, sub, key) -> HEvent | None:
        if key not in self.state:
            return None
        del self.state[key]
        return HEvent(rev, sub, DELETE, key)

    def commit(self, events):
        if events:
            self.rev += 1
            self.history.extend(events)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cl = Cluster(str(tmp_path_factory.mktemp("guarantees") / "data"), fanouts=2,
                 env={"ZWATCH_RING_REVISIONS": "20", "ZWATCH_PROGRESS_INTERVAL_S": "0.5"})
    try:
        cl.start()
        w = World(cl)
        yield w
        w.store.close()
    finally:
        cl.stop()


SPECS = [("key", 0), ("key", 3), ("prefix", "d/"), ("prefix", ""), ("prefix", ""), ("range", (1, 3)), ("from", 2)]

put_s = st.tuples(st.just("put"), st.integers(0, 4))
delete_s = st.tuples(st.just("delete"), st.integers(0, 4))
delete_prefix_s = st.tuples(st.just("delete_prefix"))
txn_s = st.tuples(st.just("txn"), st.integers(0, 4), st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True),
                  st.booleans())
compact_s = st.tuples(st.just("compact"), st.integers(0, 15))
watch_s = st.tuples(st.just("watch"), st.integers(0, len(SPECS) - 1),
                    st.sampled_from(["now", "past", "past", "compacted", "future"]), st.integers(0, 12), st.booleans(),
                    st.sampled_from([(), (), ("NOPUT",), ("NODELETE",)]), st.integers(0, 1))
cancel_s = st.tuples(st.just("cancel"), st.integers(0, 30))
progress_s = st.tuples(st.just("progress"), st.integers(0, 1))
write_s = st.one_of(put_s, put_s, put_s, txn_s, txn_s, delete_s, delete_prefix_s)
steps = st.one_of(write_s, write_s, write_s, watch_s, watch_s, compact_s, cancel_s, progress_s)
# writes first (so that there is a past), watches on it, then everything interleaved
programs = st.tuples(st.lists(write_s, min_size=3, max_size=15), st.lists(watch_s, min_size=2, max_size=6),
                     st.lists(steps, min_size=15, max_size=60))


def _spec_range(world_prefix: bytes, choice):
    kind, arg = choice
    if kind == "key":
        return world_prefix + SUFFIXES[arg].encode(), b""
    if kind == "prefix":
        p = world_prefix + arg.encode()
        return p, p[:-1] + bytes([p[-1] + 1])
    if kind == "range":
        return world_prefix + SUFFIXES[arg[0]].encode(), world_prefix + SUFFIXES[arg[1]].encode()
    return world_prefix + SUFFIXES[arg].encode(), b"\x00"     # from key: later examples' keys too


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(phases=programs)
def test_random_programs_keep_every_watch_guarantee(world, phases):
    w = world
    program = phases[0] + phases[1] + phases[2]
    w.resync()
    n = next(w.examples)
    prefix = f"g{n}/".encode()
    keys = [prefix + s.encode() for s in SUFFIXES]
    c = w.c[0]                                    # writes go through fan-out 0
    acked: list[AckedWrite] = []
    streams: list[tuple] = []                     # (StreamRecord, handle, client index)
    example_start = w.rev

    def value():
        return f"v{next(w.values)}".encode()

    for step in program:
        op = step[0]
        if op == "put":
            k, v = keys[step[1]], value()
            r = c.put(k, v, prev_kv=True)
            prev = w.state.get(k)
            e = w.model_put(w.rev + 1, 0, k, v)
            w.commit([e])
            assert r.header.revision == w.rev, (step, r)
            assert (r.prev_kv.value if r.prev_kv else None) == (prev.value if prev else None)
            acked.append(AckedWrite(r.header.revision, ((k, v),), what=f"put {k!r}"))
        elif op == "delete":
            k = keys[step[1]]
            r = c.delete(k)
            e = w.model_delete(w.rev + 1, 0, k)
            w.commit([e] if e else [])
            assert (r.header.revision, r.deleted) == (w.rev, 1 if e else 0), (step, r)
            acked.append(AckedWrite(r.header.revision, (), r.deleted, (k,) if e else (), what=f"delete {k!r}"))
        elif op == "delete_prefix":
            r = c.delete(prefix + b"d/", prefix=True)
            evs = [e for e in (w.model_delete(w.rev + 1, i, k) for i, k in enumerate(
                sorted(k for k in w.state if k.startswith(prefix + b"d/")))) if e]
            # subs: in key order, numbered from 0
            evs = [HEvent(e.revision, i, e.type, e.key) for i, e in enumerate(evs)]
            w.commit(evs)
            assert (r.header.revision, r.deleted) == (w.rev, len(evs)), (step, r)
            acked.append(AckedWrite(r.header.revision, (), r.deleted, tuple(e.key for e in evs), what="delete prefix"))
        elif op == "txn":
            _, ci, put_idx, with_delete = step
            cmp_key = keys[ci]
            puts = [(keys[i], value()) for i in put_idx]
            others = [k for i, k in enumerate(keys) if i not in put_idx]
            dkey = others[0] if with_delete and others else None
            fput = (cmp_key, value())
            succeed = cmp_key in w.state
            r = c.txn([Version(cmp_key) > 0], [Put(k, v) for k, v in puts] + ([Delete(dkey)] if dkey else []),
                      [Put(*fput)])
            assert r.succeeded == succeed, (step, r)
            rev = w.rev + 1
            if succeed:
                evs = [w.model_put(rev, i, k, v) for i, (k, v) in enumerate(puts)]
                d = w.model_delete(rev, len(evs), dkey) if dkey else None
                evs += [d] if d else []
                deleted = sum(x.deleted for x in r.responses if isinstance(x, DeleteRangeResponse))
                assert deleted == (1 if d else 0)
                acked.append(AckedWrite(r.header.revision, tuple(puts), deleted, (dkey,) if d else (), what="txn"))
            else:
                evs = [w.model_put(rev, 0, *fput)]
                acked.append(AckedWrite(r.header.revision, (fput,), what="txn (failure branch)"))
            w.commit(evs)
            assert r.header.revision == w.rev
        elif op == "compact":
            target = w.rev - step[1]
            if target > w.compact:
                c.compact(target)
                w.compact = target
            elif w.compact:
                with pytest.raises(Compacted):
                    c.compact(w.compact)
        elif op == "watch":
            _, si, when, off, prev_kv, filters, ci = step
            key, end = _spec_range(prefix, SPECS[si])
            if when == "now":
                start = 0
            elif when == "past":
                start = max(w.rev - off, 1)
            elif when == "compacted":
                start = max(w.compact - 1 - off, 1) if w.compact > 1 else max(w.rev - off, 1)
            else:
                start = w.rev + 1 + off
            spec = WatchSpec(key, end, start, filters, prev_kv, compact_at_create=w.compact)
            if start == 0:
                # fan-out 0 forwarded every write and saw it; fan-out 1 may lag behind the writer
                spec.start_bounds = (w.rev + 1, w.rev + 1) if ci == 0 else (1, w.rev + 1)
            kw = {"range_end": end} if end else {}
            h = w.c[ci].watch(key, start_revision=start, prev_kv=prev_kv, filters=list(filters),
                              progress_notify=bool(off % 2), **kw)
            streams.append((StreamRecord(f"{n}.{len(streams)}", spec, []), h, ci))
        elif op == "cancel":
            if streams:
                rec, h, _ci = streams[step[1] % len(streams)]
                if not rec.canceled_by_client:
                    rec.canceled_by_client = True
                    h.cancel()
        elif op == "progress":
            w.c[step[1]].request_progress()

    # ---- every live stream reaches the final revision, then everything is collected
    final = w.rev
    for cl in w.c:
        cl.request_progress()
    deadline = time.monotonic() + 15
    for rec, h, _ci in streams:
        if rec.spec.start_revision > final + 1:
            # A watch waiting for a future start gets no progress below it (etcd #20221), so it
            # cannot show that it reached `final`: take what it has, do not wait for it.
            while not h.queue.empty():
                r = h.get(timeout=0.05)
                if r is None:
                    break
                rec.responses.append(r)
            if not rec.canceled_by_client:
                rec.final_revision = final
            continue
        while True:
            try:
                r = h.get(timeout=0.05 if rec.canceled_by_client else max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if r is None:
                break
            rec.responses.append(r)
            if r.canceled or (checker.stream_reached(rec) >= final and not rec.canceled_by_client
                              and h.queue.empty()):
                break
            if time.monotonic() > deadline:
                break
        if not rec.canceled_by_client:
            rec.final_revision = final
    for rec, h, _ci in streams:
        if not rec.canceled_by_client:
            h.cancel()
            take_queued(h, rec, 0.2)           # whatever was still queued before the cancel
            rec.canceled_by_client = False     # liveness is judged on what came before the cancel

    # ---- the model against the store, then every stream against the model
    with w.store.reader() as v:
        assert (v.current_revision, v.compact_revision) == (w.rev, w.compact)
        lo = max(v.compact_revision, example_start + 1, 2)
        recs = v.history(lo, v.current_revision, max_records=1 << 30, max_bytes=1 << 40) if lo <= w.rev else []
    store_hist = checker.history_from_store_records(recs)
    assert not checker.compare_histories(w.history, store_hist, lo, w.rev, names=("model", "store"))
    hist = checker.History(w.history, w.first_revision, w.rev)
    result = checker.check_history(hist, acked=acked,
                                   final_kvs=c.get(b"\x00", from_key=True).kvs if w.first_revision == 2 else None)
    for rec, _h, _ci in streams:
        result.extend(checker.check_stream(rec, hist, compact_revision=w.compact))
    assert result.ok, "\n".join(result.violations)


# ------------------------------------------------------------------------------------------------
# Reproductions of bugs found by the chaos runner (zwatch.tools.chaos).

def test_watch_survives_restart_of_its_fanout_before_it_joined(make_cluster):
    """Was a client bug (found by the chaos runner, fixed): the re-created watch got UNAVAILABLE from a
    fan-out that had not joined the writer's stream yet, the client dropped that reply, the watch was dead."""
    cl = make_cluster()
    c = cl.client(timeout=3, heartbeat=0.5)
    c.put("k", "0")                                   # revision 2
    w = c.watch("k")                                  # from 3
    cl.restart("fanout0")                             # SIGKILL + start; no writes, so it joins on a heartbeat
    cl["fanout0"].wait_event("fanout.joined_stream", count=2)
    time.sleep(2.0)                                   # the client noticed (NO_SESSION) and re-created w
    for i in range(3):
        c.put("k", f"after{i}")                       # revisions 3..5
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        try:
            r = w.get(timeout=0.5)
        except queue.Empty:
            continue
        got += [e.kv.mod_revision for e in r.events]
    assert got == [3, 4, 5]


def test_progress_reply_does_not_reach_a_watch_still_being_created(make_cluster):
    cl = make_cluster()
    c = cl.client(timeout=5)
    for i in range(30):
        c.put("k", str(i))                            # revisions 2..31
    bad = []
    for _ in range(5):
        t = threading.Thread(target=c.request_progress)
        t.start()                                     # the progress request is queued first ...
        w = c.watch("k", start_revision=20)           # ... the create right behind it
        t.join()
        rec = StreamRecord("w", WatchSpec(b"k", b"", 20), [])
        while checker.stream_reached(rec) < 31 or not any(r.events for r in rec.responses):
            rec.responses.append(w.get(timeout=5))
        res = checker.check_stream(rec, checker.History([HEvent(r, 0, PUT, b"k", str(r - 2).encode(), 2, r - 1)
                                                         for r in range(2, 32)]))
        bad += res.violations
        w.cancel()
    assert not bad, bad


def test_watch_created_while_its_fanout_dies_survives_the_failover(make_cluster):
    cl = make_cluster(fanouts=2)
    c = cl.client(cl.fanout_eps, timeout=5, heartbeat=0.5)   # on fanout0, fanout1 as the spare
    c.put("k", "0")                                          # revision 2
    cl["fanout0"].kill(signal.SIGKILL)                       # dead, not noticed by the client yet
    w = c.watch("k", start_revision=3)                       # the create goes again on fanout1
    time.sleep(1.0)
    c.put("k", "1")                                          # revision 3
    r = w.get(timeout=5)
    assert not r.canceled, r.cancel_reason
    assert [e.kv.mod_revision for e in r.events] == [3]
