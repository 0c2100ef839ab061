// protocol/vectors.json replayed by the JS binding: the same bytes and the same scenarios as
// tests/system/test_vectors.py, through this package's encode/decode and a raw DEALER.
// One cluster for all the scenarios, in file order (the vectors keep their keys apart and put the
// compaction last, so that they also hold on a shared cluster).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Dealer } from "zeromq";
import { decode, encode } from "../src/index.js";
import { startCluster } from "./cluster.js";

const VECTORS = JSON.parse(readFileSync(new URL("../../vectors.json", import.meta.url), "utf8"));
const utf8 = new TextEncoder();

function untag(x, env = {}) {
  if (Array.isArray(x)) return x.map((v) => untag(v, env));
  if (x !== null && typeof x === "object") {
    if ("$bin" in x) return utf8.encode(x.$bin);
    if ("$hex" in x) return Uint8Array.from(Buffer.from(x.$hex, "hex"));
    if ("$int" in x) return BigInt(x.$int);
    if ("$var" in x) return env[x.$var] + (x.plus ?? 0);
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, untag(v, env)]));
  }
  return x;
}

// Integers compare by value whether they came as number or BigInt (64-bit encodings decode to BigInt).
function same(a, b) {
  if ((typeof a === "bigint" || typeof a === "number") && (typeof b === "bigint" || typeof b === "number")) {
    return Number.isInteger(Number(a)) && Number.isInteger(Number(b)) ? BigInt(a) === BigInt(b) : a === b;
  }
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.from(a).equals(Buffer.from(b));
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => same(v, b[i]));
  if (a && b && typeof a === "object" && typeof b === "object") {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => same(a[k], b[k]));
  }
  return a === b;
}

const at = (body, path) => path.split(".").reduce((v, p) => (Array.isArray(v) ? v[Number(p)] : v?.[p]), body);
const hex = (u8) => Buffer.from(u8).toString("hex").match(/../g).join(" ");

for (const v of VECTORS.encodings) {
  test(`encoding: ${v.name}`, () => {
    const message = untag(v.message);
    assert.equal(hex(encode(message)), v.hex);
    assert.ok(same(decode(Buffer.from(v.hex.replaceAll(" ", ""), "hex")), message));
  });
}

let cluster;
before(async () => { cluster = await startCluster({ fanouts: 1 }); });
after(async () => { await cluster.stop(); });

class Inbox {
  // Keeps every frame until a step takes it: an event may come before the reply (SPEC section 9).
  constructor(sock) {
    this.sock = sock;
    this.frames = [];
  }

  async take(match, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(match);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      const left = deadline - Date.now();
      assert.ok(left > 0, `nothing matched; received ${JSON.stringify(this.frames, (k, x) => (typeof x === "bigint" ? String(x) : x))}`);
      const got = await Promise.race([this.sock.receive(), new Promise((r) => setTimeout(() => r(null), left))]);
      if (got) this.frames.push(decode(got[0]));
    }
  }
}

for (const scenario of VECTORS.scenarios) {
  test(`scenario: ${scenario.name}`, async () => {
    const sock = new Dealer({ linger: 0 });
    sock.connect(cluster.endpoints[0]);
    const inbox = new Inbox(sock);
    let reqId = 0;
    if (scenario.hello ?? true) {
      reqId = 1;
      await sock.send(encode(["hello", 1, { version: 1 }]));
      const [kind] = await inbox.take((f) => f[1] === 1);
      assert.equal(kind, "ok");
    }
    const env = {};
    try {
      for (const step of scenario.steps) {
        if (step.send) {
          const [op, body] = step.send;
          reqId += 1;
          const id = reqId;
          await sock.send(encode([op, id, untag(body, env)]));
          const [kind, , reply] = await inbox.take((f) => (f[0] === "ok" || f[0] === "err") && Number(f[1]) === id);
          const e = step.expect;
          assert.equal(kind, e.kind, JSON.stringify(step));
          if (e.code) assert.equal(reply.code, e.code);
          for (const [path, value] of Object.entries(e.fields ?? {})) {
            assert.ok(same(at(reply, path), untag(value, env)), `${path}: ${String(at(reply, path))}`);
          }
          for (const [name, path] of Object.entries(step.capture ?? {})) env[name] = Number(at(reply, path));
        } else {
          const want = step.expect_watch;
          const matches = (r) => {
            if (want.control) {
              return !Array.isArray(r) && Object.entries(want.control).every(([k, v]) => same(r[k], untag(v, env)));
            }
            if (!Array.isArray(r)) return false;
            const [ids, headerRev, events] = r;
            return same(ids, want.watch_ids) && same(events, untag(want.events, env))
              && (want.header_revision === undefined || same(headerRev, untag(want.header_revision, env)));
          };
          await inbox.take((f) => f[0] === "w" && f[2].some(matches));
        }
      }
    } finally {
      sock.close();
    }
  });
}
