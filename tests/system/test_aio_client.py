"""Issue #14.2: zwatch.aio.Client, the same scenarios as the sync client's, awaited.

It shares the sync client's request definitions (calls.py), I/O state machine (SessionIO) and
watch delivery (WatchRouter); these tests hold it to the same guarantees: KV and txn results,
a watch from history then live with no gap or duplicate, resume after its fan-out is SIGKILLed,
compaction, flow control under a slow coroutine, leases kept alive and revoked.
"""
from __future__ import annotations

import asyncio
import time

import pytest

import zwatch
import zwatch.aio
from zwatch import Put, Value


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def aclient(cl, endpoints=None, **kw):
    kw.setdefault("timeout", 5.0)
    kw.setdefault("heartbeat", 0.5)
    kw.setdefault("shuffle", False)
    return zwatch.aio.Client(endpoints or cl.fanout_eps[:1], **kw)


async def take(w, n, timeout=20.0):
    events = []
    async def loop():
        async for resp in w:
            events.extend(resp.events)
            if len(events) >= n:
                return
    await asyncio.wait_for(loop(), timeout)
    return events


def test_kv_txn_compact_status(cluster):
    async def main():
        async with aclient(cluster) as c:
            r1 = await c.put("a", "1")
            got = await c.get("a")
            assert got.kvs[0].value == b"1" and got.kvs[0].mod_revision == r1.header.revision
            t = await c.txn([Value("a") == "1"], [Put("a", "2")], [])
            assert t.succeeded
            assert (await c.get("a")).kvs[0].value == b"2"
            d = await c.delete("a", prev_kv=True)
            assert d.deleted == 1 and d.prev_kvs[0].value == b"2"
            await c.compact(d.header.revision)
            st = await c.status()
            assert st.header.revision == d.header.revision and st.actor == "fanout"
            assert (await c.health()).health
            with pytest.raises(zwatch.Compacted):
                await c.get("a", revision=r1.header.revision)
    run(main())


def test_watch_history_then_live_and_cancel(cluster):
    async def main():
        async with aclient(cluster) as c:
            first = (await c.put("w/0", "0")).header.revision
            for i in range(1, 5):
                await c.put(f"w/{i}", str(i))
            w = await c.watch("w/", prefix=True, start_revision=first)
            got = await take(w, 5)
            for i in range(5, 10):
                await c.put(f"w/{i}", str(i))
            got += await take(w, 5)
            assert [e.kv.mod_revision for e in got] == list(range(first, first + 10))
            await w.cancel()
            assert await w.get() is None
    run(main())


def test_watch_resumes_after_its_fanout_is_killed(make_cluster):
    cl = make_cluster(fanouts=2)

    async def main():
        async with aclient(cl, cl.fanout_eps) as watcher, aclient(cl, [cl.fanout_eps[1]]) as writer:
            start = (await writer.put("f/begin", "x")).header.revision + 1
            w = await watcher.watch("f/", prefix=True, start_revision=start)
            events = []

            async def consume():
                async for resp in w:
                    events.extend(resp.events)

            consumer = asyncio.create_task(consume())
            last = 0
            for i in range(300):
                if i == 100:
                    cl["fanout0"].kill()
                last = (await writer.put(f"f/{i % 5}", str(i))).header.revision
                await asyncio.sleep(0.002)
            deadline = time.monotonic() + 20
            while (not events or events[-1].kv.mod_revision < last) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            consumer.cancel()
            assert [e.kv.mod_revision for e in events] == list(range(start, last + 1))
            assert watcher.failovers >= 1 and watcher.endpoint == cl.fanout_eps[1]
    run(main())


def test_compacted_start_revision_ends_the_watch_with_compact_revision(cluster):
    async def main():
        async with aclient(cluster) as c:
            for i in range(5):
                rev = (await c.put("k", str(i))).header.revision
            await c.compact(rev)
            w = await c.watch("k", start_revision=2)
            resp = await w.get(timeout=10)
            assert resp.canceled and resp.compact_revision == rev
            assert await w.get() is None
    run(main())


def test_a_slow_coroutine_is_flow_control(make_cluster):
    window = 256 * 1024
    cl = make_cluster(env={"ZWATCH_SESSION_WINDOW_BYTES": str(window), "ZWATCH_STALL_S": "1"})

    async def main():
        async with aclient(cl) as reader, aclient(cl) as writer:
            w = await reader.watch("s/", prefix=True)
            start = (await writer.put("begin", "1")).header.revision + 1
            value = "v" * 16_000
            n = 80                                              # 1.3 MB, 5 windows
            for i in range(n):
                await writer.put(f"s/{i % 5}", value)
            events, held = [], 0
            async for resp in w:
                events.extend(resp.events)
                held = max(held, reader.buffered_bytes)
                await asyncio.sleep(0.01)
                if len(events) >= n:
                    break
            assert [e.kv.mod_revision for e in events] == list(range(start, start + n))
            assert reader._credit.max_held <= window + 256 * 1024 + 16_200
    run(main())


def test_leases_are_kept_alive_and_revoked(make_cluster):
    cl = make_cluster(env={"ZWATCH_LEASE_MIN_TTL": "1"})

    async def main():
        async with aclient(cl) as c:
            lease = await c.lease(2)
            await c.put("l/k", "v", lease=lease)
            await asyncio.sleep(3.5)                            # past its TTL: kept alive
            assert lease.alive and (await c.get("l/k")).count == 1
            assert 0 < await lease.remaining_ttl() <= 2
            await lease.revoke()
            assert (await c.get("l/k")).count == 0
            assert lease.id not in await c.leases()
    run(main())


def test_locks_one_holder_at_a_time_and_a_waiter_gets_it_on_release(cluster):
    async def main():
        async with aclient(cluster) as a, aclient(cluster) as b:
            la, lb = a.lock("aio/job", ttl=10), b.lock("aio/job", ttl=10)
            assert await la.acquire(timeout=5)
            assert not await lb.acquire(timeout=0.5)         # held by la: timed out, key gone
            waiter = asyncio.create_task(lb.acquire(timeout=10))
            await asyncio.sleep(0.3)
            assert not waiter.done()
            assert await la.release()
            assert await asyncio.wait_for(waiter, 5) is True
            assert await lb.is_acquired() and not await la.is_acquired()
            assert lb.key == b"aio/job/%x" % lb.lease.id
            async with a.lock("aio/other", ttl=10) as other:
                assert await other.is_acquired()
            await lb.release()
    run(main())


def test_election_campaign_observe_proclaim_resign(cluster):
    async def main():
        async with aclient(cluster) as a, aclient(cluster) as b, aclient(cluster) as watcher:
            ea, eb = a.election("aio/svc", ttl=10), b.election("aio/svc", ttl=10)
            seen = []
            observation = watcher.election("aio/svc").observe()

            async def observe():
                async for kv in observation:
                    seen.append(kv.value)

            observer = asyncio.create_task(observe())
            assert await ea.campaign("a1", timeout=5)
            second = asyncio.create_task(eb.campaign("b1", timeout=10))
            await ea.proclaim("a2")
            assert (await eb.leader()).value == b"a2"
            await ea.resign()
            assert await asyncio.wait_for(second, 5) is True
            assert (await ea.leader()).value == b"b1"
            deadline = time.monotonic() + 5
            while seen != [b"a1", b"a2", b"b1"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert seen == [b"a1", b"a2", b"b1"]
            with pytest.raises(zwatch.NotLeader):
                await ea.proclaim("late")
            await observation.cancel()
            await asyncio.wait_for(observer, 5)
            await eb.resign()
    run(main())
