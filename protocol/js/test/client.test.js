// The JS client against a real cluster: the same guarantees as the Python client's tests.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Client, Compacted, FailedPrecondition, ZwatchError, compare, op } from "../src/index.js";
import { startCluster } from "./cluster.js";

let cluster;
const clients = [];

before(async () => { cluster = await startCluster({ fanouts: 2 }); });
after(async () => {
  for (const c of clients) await c.close();
  await cluster.stop();
});

function client(endpoints, opts = {}) {
  const c = new Client(endpoints ?? cluster.endpoints.slice(0, 1), { heartbeat: 300, timeout: 5000, shuffle: false, ...opts });
  clients.push(c);
  return c;
}

async function take(w, n, timeoutMs = 20000) {
  const events = [];
  const deadline = Date.now() + timeoutMs;
  while (events.length < n) {
    const left = deadline - Date.now();
    assert.ok(left > 0, `got ${events.length} of ${n} events`);
    const r = await Promise.race([w.next(), new Promise((_, rej) => setTimeout(() => rej(new Error("timeout")), left))]);
    assert.equal(r.done, false, "the watch ended");
    events.push(...r.value.events);
  }
  return events;
}

test("hello, put, get, delete, txn, status", async () => {
  const c = client();
  assert.ok(await c.waitConnected(5000));
  assert.equal(c.sessionInfo.version, 1);
  const p = await c.put("js/a", "1");
  const g = await c.get("js/a");
  assert.equal(g.kvs[0].value.toString(), "1");
  assert.equal(g.kvs[0].modRevision, p.header.revision);
  const t = await c.txn([compare("js/a", "VALUE", "==", "1")], [op.put("js/a", "2")], []);
  assert.equal(t.succeeded, true);
  const t2 = await c.txn([compare("js/a", "VALUE", "==", "1")], [op.put("js/a", "3")], [op.get("js/a")]);
  assert.equal(t2.succeeded, false);
  assert.equal((await c.get("js/", { prefix: true })).count, 1);
  const d = await c.delete("js/a", { prevKv: true });
  assert.equal(d.deleted, 1);
  assert.equal(d.prevKvs[0].value.toString(), "2");
  const st = await c.status();
  assert.equal(st.header.revision, d.header.revision);
});

test("errors are typed, with their details", async () => {
  const c = client();
  const r = await c.put("js/e", "x");
  await c.put("js/e", "y");
  await c.compact(r.header.revision + 1);
  await assert.rejects(c.get("js/e", { revision: r.header.revision }), (e) =>
    e instanceof Compacted && e instanceof ZwatchError && e.code === "COMPACTED" && Number(e.details.compact_revision) === r.header.revision + 1);
  const w = await c.watch("js/dup", { watchId: 77 });
  await assert.rejects(c.watch("js/dup", { watchId: 77 }), FailedPrecondition);
  await w.cancel();
});

test("lease IDs above 2^53 are BigInts and round-trip", async () => {
  const c = client();
  const g = await c.leaseGrant(30);
  assert.equal(typeof g.id, "bigint");
  assert.ok(g.id > 2n ** 53n);
  await c.put("js/leased", "v", { lease: g.id });
  assert.equal((await c.get("js/leased")).kvs[0].lease, g.id);
  const ttl = await c.leaseKeepAliveOnce([g.id]);
  assert.equal(ttl.get(g.id), 30);
  await c.leaseRevoke(g.id);
  assert.equal((await c.get("js/leased")).count, 0);
});

test("a watch from history then live: every revision once, in order", async () => {
  const c = client();
  const first = (await c.put("js/w/0", "0")).header.revision;
  for (let i = 1; i < 5; i++) await c.put(`js/w/${i}`, String(i));
  const w = await c.watch("js/w/", { prefix: true, startRevision: first });
  const got = await take(w, 5);
  for (let i = 5; i < 10; i++) await c.put(`js/w/${i}`, String(i));
  got.push(...await take(w, 5));
  assert.deepEqual(got.map((e) => e.kv.modRevision), Array.from({ length: 10 }, (_, i) => first + i));
  await w.cancel();
  assert.equal((await w.next()).done, true);
});

test("a watch from a compacted revision is canceled with the compact revision", async () => {
  const c = client();
  let rev = 0;
  for (let i = 0; i < 3; i++) rev = (await c.put("js/c", String(i))).header.revision;
  await c.compact(rev);
  const w = await c.watch("js/c", { startRevision: 2 });
  const r = await w.next();
  assert.equal(r.value.canceled, true);
  assert.equal(r.value.compactRevision, rev);
  assert.equal((await w.next()).done, true);
});

test("the watch resumes on the other fan-out after its fan-out is killed: no gap, no duplicate", async () => {
  const watcher = client(cluster.endpoints);
  const writer = client(cluster.endpoints.slice(1));
  const start = (await writer.put("js/f/begin", "x")).header.revision + 1;
  const w = await watcher.watch("js/f/", { prefix: true, startRevision: start });
  const seen = [];
  const consumer = (async () => { for await (const r of w) seen.push(...r.events.map((e) => e.kv.modRevision)); })();
  let last = 0;
  for (let i = 0; i < 200; i++) {
    if (i === 60) await cluster.command("kill fanout0");
    last = (await writer.put(`js/f/${i % 5}`, String(i))).header.revision;
  }
  const deadline = Date.now() + 20000;
  while ((seen.length === 0 || seen[seen.length - 1] < last) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(seen, Array.from({ length: last - start + 1 }, (_, i) => start + i));
  assert.ok(watcher.failovers >= 1);
  assert.equal(watcher.endpoint, cluster.endpoints[1]);
  await w.cancel();
  await consumer;
  await cluster.command("start fanout0");
});
