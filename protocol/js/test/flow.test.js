// Flow control (SPEC section 3 "ack"): the client acknowledges what the application took from
// the iterator, so a slow consumer holds at most the session window (plus one frame) and still
// gets every revision once, in order (its watch becomes a victim and catches up from history).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Client } from "../src/index.js";
import { startCluster } from "./cluster.js";

const WINDOW = 256 * 1024;
const ONE_FRAME = 256 * 1024;        // live frames are cut at 256 KiB; catch-up chunks are kept below it here
let cluster;

before(async () => {
  cluster = await startCluster({ fanouts: 1, env: { ZWATCH_SESSION_WINDOW_BYTES: WINDOW, ZWATCH_STALL_S: 1, ZWATCH_SYNC_CHUNK_BYTES: 65536 } });
});
after(async () => { await cluster.stop(); });

test("a sleeping consumer holds at most the window and misses nothing", async () => {
  const reader = new Client(cluster.endpoints, { heartbeat: 300, shuffle: false });
  const writer = new Client(cluster.endpoints, { heartbeat: 300, shuffle: false });
  try {
    const w = await reader.watch("flow/", { prefix: true });
    const start = (await writer.put("begin", "x")).header.revision + 1;
    const value = "v".repeat(16000);
    const n = 120;                                   // 1.9 MB: seven windows
    for (let i = 0; i < n; i++) await writer.put(`flow/${i % 10}`, value);
    const revs = [];
    for await (const resp of w) {
      revs.push(...resp.events.map((e) => e.kv.modRevision));
      await new Promise((r) => setTimeout(r, 50));
      if (revs.length >= n) break;
    }
    assert.deepEqual(revs, Array.from({ length: n }, (_, i) => start + i));
    assert.equal(reader.sessionInfo.window_bytes, WINDOW);
    assert.ok(reader.maxBufferedSeen <= WINDOW + ONE_FRAME + 16200, `held ${reader.maxBufferedSeen}`);
  } finally {
    await reader.close();
    await writer.close();
  }
});
