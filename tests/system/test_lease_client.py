"""The Python client's leases (protocol/client/lease.py) against real processes (issue #10).

Clusters run with ZWATCH_LEASE_MIN_TTL=1 so that 1-3 s TTLs are honoured; the cluster's clients
use a 0.5 s heartbeat (a dead fan-out is noticed after 1.5 s).  Batching is checked by counting
requests (the client's LeaseKeeper) and lease IDs renewed (the writer's stats), never by timing.
"""
from __future__ import annotations

import queue
import signal
import threading
import time

from zwatch import errors

MIN_TTL_1 = {"ZWATCH_LEASE_MIN_TTL": "1"}


def responses_until(w, n_events, timeout=10.0):
    """Watch responses (with events) until n_events events arrived."""
    out, got = [], 0
    deadline = time.monotonic() + timeout
    while got < n_events:
        left = deadline - time.monotonic()
        assert left > 0, f"got {got} of {n_events} events: {out}"
        try:
            r = w.get(timeout=left)
        except queue.Empty:
            continue
        assert r is not None, f"watch ended ({w.cancel_reason})"
        if r.events:
            out.append(r)
            got += len(r.events)
    return out


def no_events(w, wait):
    """Whatever events the watch delivers within wait seconds."""
    events = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            r = w.get(timeout=left)
        except queue.Empty:
            break
        if r is not None:
            events.extend(r.events)
    return events


def writer_keepalives(cluster) -> int:
    """Lease IDs the writer renewed so far (writer.stats gives them per interval)."""
    return sum(e.get("keepalives", 0) for e in cluster["writer"].events("writer.stats"))


def test_lease_context_manager_keeps_keys_alive_and_revokes_in_one_revision(make_cluster):
    c = make_cluster(env=MIN_TTL_1)
    client, watcher = c.client(), c.client()
    w = watcher.watch("svc/", prefix=True)
    keys = [b"svc/a", b"svc/b", b"svc/c"]
    with client.lease(1) as lease:
        assert lease.ttl == 1 and lease.alive
        for k in keys:
            client.put(k, "up", lease=lease)
        assert [e.type for r in responses_until(w, 3) for e in r.events] == ["PUT"] * 3
        # Four TTLs later, nothing expired: renewed in the background.
        assert no_events(w, 4.0) == []
        assert lease.alive and lease.keys == keys
        assert lease.remaining_ttl() >= 0
        assert client.lease_keeper.failures == 0 and client.lease_keeper.requests >= 8
    assert not lease.alive
    deletes = responses_until(w, 3)
    assert len(deletes) == 1, deletes                    # one response: one revision, delivered atomically
    assert [(e.type, e.kv.key) for e in deletes[0].events] == [("DELETE", k) for k in keys]
    assert len({e.kv.mod_revision for e in deletes[0].events}) == 1
    assert client.time_to_live(lease.id).ttl == -1
    assert len(client.lease_keeper) == 0                  # left the schedule


def test_lease_of_a_closed_client_expires_without_a_revoke(make_cluster):
    c = make_cluster(env=MIN_TTL_1)
    owner, watcher = c.client(), c.client()
    lease = owner.lease(1)
    owner.put("eph/k", "v", lease=lease)
    w = watcher.watch("eph/k")
    assert no_events(w, 2.5) == []                        # alive while the owner runs
    closed_at = time.monotonic()
    owner.close()
    (r,) = responses_until(w, 1, timeout=5)
    expired_after = time.monotonic() - closed_at
    assert r.events[0].type == "DELETE"
    # Not revoked by close(): the lease ran out its TTL from the last renewal (at most TTL/3 before
    # the close, so at least 2/3 TTL after it), then the writer expired it.
    assert 0.5 <= expired_after <= 1 + 1.5, expired_after
    assert watcher.time_to_live(lease.id).ttl == -1
    assert lease.id not in watcher.leases()


def test_keepalive_batching_one_request_per_tick_for_50_leases(make_cluster):
    c = make_cluster(env=MIN_TTL_1)
    client = c.client()
    leases = [client.lease(3) for _ in range(50)]
    keeper = client.lease_keeper
    time.sleep(3.6)                                       # three renewal intervals (TTL/3 = 1 s)
    requests, renewals = keeper.requests, keeper.renewals
    client.close()
    assert keeper.failures == 0
    assert 3 <= requests <= 4, requests                   # one per tick, not one per lease
    assert renewals == 50 * requests and keeper.last_batch == 50
    assert all(lease.alive for lease in leases)
    # The writer renewed exactly what the client sent (writer.stats counts lease IDs renewed per
    # interval): 50 per request.
    deadline = time.monotonic() + 5
    while writer_keepalives(c) != renewals:
        assert time.monotonic() < deadline, (writer_keepalives(c), renewals)
        time.sleep(0.1)


def test_client_holding_leases_fails_over_under_load_without_losing_one(make_cluster):
    """SIGKILL the fan-out a lease holder uses, three times, while another client puts at a steady
    rate.  Each kill comes at the worst moment: just before the holder's next keep-alive, which
    then goes into the dead session and waits for the failover (3 heartbeats = 1.5 s, plus a
    reconnect) to be re-sent.  Renewed at TTL/3 = 1 s, the leases still have 2 s: no lease
    expires, no attached key is deleted."""
    c = make_cluster(fanouts=2, env=MIN_TTL_1)
    eps = c.fanout_eps
    holder = c.client(endpoints=eps)
    watcher = c.client(endpoints=eps[::-1])
    leases = [holder.lease(3) for _ in range(20)]
    for i, lease in enumerate(leases):
        holder.put(f"lease/{i:02d}", "v", lease=lease)
    w = watcher.watch("lease/", prefix=True, start_revision=watcher.get("lease/00").kvs[0].mod_revision)
    assert len(responses_until(w, 20)) >= 1

    loader = c.client(endpoints=eps[::-1])
    stop = threading.Event()
    puts = {"ok": 0, "unavailable": 0}

    def load():                                           # ~100 puts/s, whatever fan-out is up
        while not stop.is_set():
            try:
                loader.put("load/k", "x" * 100)
                puts["ok"] += 1
            except errors.Unavailable:
                puts["unavailable"] += 1
            time.sleep(0.01)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        for round_ in range(3):
            used = holder.endpoint
            name = f"fanout{eps.index(used)}"
            failovers = holder.failovers
            time.sleep(max(0.0, holder.lease_keeper.next_tick() - 0.1 - time.monotonic()))
            c[name].kill(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while holder.failovers == failovers or holder.endpoint == used:
                assert time.monotonic() < deadline, "holder did not fail over"
                time.sleep(0.05)
            time.sleep(4.0)                               # more than a TTL on the other fan-out
            assert all(lease.alive for lease in leases), f"round {round_}: {leases}"
            c.restart(name)
            c[name].wait_event("fanout.joined_stream", count=c[name].starts, timeout=15)
    finally:
        stop.set()
        t.join(5)
    assert holder.failovers >= 3
    assert puts["ok"] > 300, puts
    assert no_events(w, 0.5) == []                        # not one DELETE of an attached key
    assert all(lease.alive for lease in leases)
    for lease in leases:
        assert holder.time_to_live(lease.id).ttl >= 1
    assert len(holder.get("lease/", prefix=True).kvs) == 20
    stats = c["writer"].wait_event("writer.stats")[-1]
    assert stats["leases_expired"] == 0, stats


def test_lease_revoked_elsewhere_is_dropped_at_its_next_keepalive(make_cluster):
    c = make_cluster(env=MIN_TTL_1)
    client, other = c.client(), c.client()
    lease, kept = client.lease(3), client.lease(3)
    other.lease_revoke(lease.id)
    deadline = time.monotonic() + 3                       # the next tick is at most TTL/3 = 1 s away
    while lease.alive:
        assert time.monotonic() < deadline, lease
        time.sleep(0.05)
    assert kept.alive and len(client.lease_keeper) == 1   # TTL 0 answered: it left the schedule
    assert lease.refresh() == 0 and kept.refresh() == 3
