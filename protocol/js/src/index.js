// zwatch for Node.js: a client of protocol/SPEC.md written from the SPEC alone.
//
//   import { Client } from "zwatch";
//   const c = new Client(["tcp://127.0.0.1:2379", "tcp://127.0.0.1:2380"]);
//   const { header } = await c.put("config/a", "1");
//   const w = await c.watch("config/", { prefix: true, startRevision: header.revision });
//   for await (const resp of w) for (const ev of resp.events) console.log(ev.type, ev.kv.key.toString());
//   await c.close();
//
// One DEALER at a time (SPEC section 1); every send goes through one promise chain (zeromq.js
// allows one pending send per socket, SPEC section 1 "One send at a time").  Heartbeats every
// `heartbeat` ms; a fan-out silent for 3 heartbeats is left for the next endpoint, where every
// watch is re-created from max(last revision + 1, its start revision) (SPEC section 9): no gap,
// no duplicate.  Reads and watch ops are re-sent after a failover; writes fail Unavailable (their
// outcome is unknown).  Flow control (SPEC section 3 "ack"): a watch frame is acknowledged once
// the application took every response made from it out of its watch's iterator.
//
// Integers: decoded with BigInt for 64-bit encodings (lease IDs, member IDs, hashes are usually
// above 2^53); revisions are plain numbers (safe below 2^53); BigInts are encoded as integers.

import { Dealer } from "zeromq";
import { Decoder, Encoder } from "@msgpack/msgpack";
import { Compacted, FailedPrecondition, Unavailable, ZwatchError, errors } from "./errors.js";

export * from "./errors.js";

export const PROTOCOL_VERSION = 1;
const READ_OPS = new Set(["range", "status", "watch_progress", "lease_keepalive", "lease_timetolive", "lease_leases"]);
const RESENT_OPS = new Set([...READ_OPS, "watch_create", "watch_cancel"]);
const ACK_EVERY = 256 * 1024;
const EVENT_TYPES = ["PUT", "DELETE"];

const encoder = new Encoder({ useBigInt64: true });
const decoder = new Decoder({ useBigInt64: true });
const utf8 = new TextEncoder();

// With useBigInt64, @msgpack/msgpack encodes a Number integer beyond 32 bits as a float64, which
// the server refuses (an integer field must be a msgpack integer): such numbers go as BigInt,
// which encodes as int64/uint64 (the bytes msgpack-python produces, protocol/vectors.json).
function wideIntsAsBigInt(x) {
  if (typeof x === "number") {
    return Number.isInteger(x) && (x > 0xffffffff || x < -0x80000000) ? BigInt(x) : x;
  }
  if (Array.isArray(x)) return x.map(wideIntsAsBigInt);
  if (x !== null && typeof x === "object" && !(x instanceof Uint8Array)) {
    const out = {};
    for (const [k, v] of Object.entries(x)) out[k] = wideIntsAsBigInt(v);
    return out;
  }
  return x;
}

export function encode(value) {
  return encoder.encode(wideIntsAsBigInt(value));
}

export function decode(bytes) {
  return decoder.decode(bytes);
}

/** A key or value: a string (UTF-8) or bytes -> Uint8Array (msgpack bin). */
export function toBytes(x) {
  if (x instanceof Uint8Array) return x;
  if (typeof x === "string") return utf8.encode(x);
  throw new TypeError(`a key or value must be a string or bytes, got ${typeof x}`);
}

/** The end of the range of every key starting with prefix (etcd's rule, SPEC section 4). */
export function prefixEnd(prefix) {
  const b = Array.from(toBytes(prefix));
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      b[i] += 1;
      return Uint8Array.from(b.slice(0, i + 1));
    }
  }
  return Uint8Array.from([0]);
}

const num = (x) => (typeof x === "bigint" ? Number(x) : x ?? 0);
const buf = (u8) => (u8 instanceof Uint8Array ? Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength) : Buffer.alloc(0));

function kvFromMap(m) {
  return {
    key: buf(m.key), createRevision: num(m.create_revision), modRevision: num(m.mod_revision),
    version: num(m.version), value: buf(m.value), lease: m.lease ?? 0,
  };
}

function kvFromArray(a) {
  return { key: buf(a[0]), createRevision: num(a[1]), modRevision: num(a[2]), version: num(a[3]), value: buf(a[4]), lease: a[5] ?? 0 };
}

function header(body) {
  return { revision: num(body?.header?.revision) };
}

function rangeBody(key, opts = {}) {
  const body = { key: toBytes(key) };
  if (opts.rangeEnd !== undefined) body.range_end = toBytes(opts.rangeEnd);
  else if (opts.prefix) body.range_end = prefixEnd(key);
  else if (opts.fromKey) body.range_end = Uint8Array.from([0]);
  return body;
}

/** The next endpoint order: each client its own random order (SPEC section 9), unless told not to. */
function shuffled(list) {
  const a = [...list];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

class Ticket {
  // One watch frame: held until every response made from it was taken by the application.
  constructor(client, nbytes, epoch) {
    this.client = client;
    this.nbytes = nbytes;
    this.epoch = epoch;
    this.refs = 1;
  }

  hold() {
    this.refs += 1;
  }

  release() {
    this.refs -= 1;
    if (this.refs === 0) this.client._released(this);
  }
}

const END = Symbol("end");

export class Watch {
  constructor(client, watchId, body) {
    this.client = client;
    this.watchId = watchId;
    this.body = body;
    this.lastRevision = 0;           // max(last event revision, last progress revision)
    this.canceled = false;
    this.cancelReason = "";
    this.error = null;
    this.live = false;
    this._queue = [];
    this._waiter = null;
    this._fragments = [];
    this._resuming = false;
  }

  _push(item, ticket) {
    if (ticket) ticket.hold();
    this._queue.push([item, ticket]);
    if (this._waiter) {
      const w = this._waiter;
      this._waiter = null;
      w();
    }
  }

  /** The next response: {value, done} (an async iterator); a canceled watch ends after its last one. */
  async next() {
    while (this._queue.length === 0) {
      await new Promise((resolve) => { this._waiter = resolve; });
    }
    const [item, ticket] = this._queue.shift();
    if (ticket) ticket.release();
    if (item === END) {
      this._queue.unshift([END, null]);          // stays over
      if (this.error) throw this.error;
      return { value: undefined, done: true };
    }
    return { value: item, done: false };
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  async cancel() {
    if (this.canceled) return;
    try {
      await this.client._call("watch_cancel", { watch_id: this.watchId });
    } catch (e) {
      if (!(e instanceof ZwatchError)) throw e;
    } finally {
      this.client._watches.delete(this.watchId);
      for (const [, ticket] of this._queue) if (ticket) ticket.release();
      this._queue = this._queue.map(([item]) => [item, null]);
      if (!this.canceled) this._end("canceled by client", 0, null, false);
    }
  }

  _startRevision() {
    const start = this.body.start_revision ?? 0;
    return this.lastRevision ? Math.max(this.lastRevision + 1, start) : start;
  }

  _end(reason, compactRevision, error, deliver = true) {
    this.canceled = true;
    this.cancelReason = reason;
    this.error = error;
    if (deliver) {
      this._push({ watchId: this.watchId, revision: this.lastRevision, events: [], canceled: true,
                   cancelReason: reason, compactRevision, isProgressNotify: false }, null);
    }
    this._push(END, null);
  }
}

export class Client {
  /**
   * endpoints: ["tcp://host:port", ...] (default $ZWATCH_ENDPOINTS or tcp://127.0.0.1:2379).
   * options: timeout (ms, 5000), heartbeat (ms, 1000), shuffle (true), name.
   */
  constructor(endpoints, { timeout = 5000, heartbeat = 1000, shuffle = true, name = `js-${process.pid}` } = {}) {
    const given = endpoints ?? (process.env.ZWATCH_ENDPOINTS ?? "tcp://127.0.0.1:2379").split(",");
    this.endpoints = shuffle ? shuffled(given) : [...given];
    this.timeout = timeout;
    this.heartbeat = heartbeat;
    this.name = name;
    this.endpoint = null;
    this.failovers = 0;
    this.maxBufferedSeen = 0;       // the most bytes ever held unconsumed (the window bounds it)
    this.sessionInfo = {};
    this._next = 0;                 // the next endpoint to try
    this._ids = 1;
    this._watchIds = 1;
    this._pending = new Map();      // req_id -> request
    this._watches = new Map();      // watch_id -> Watch
    this._resumes = new Map();      // req_id -> Watch being re-created
    this._epoch = 0;                // the current session (credit of older ones is ignored)
    this._closed = false;
    this._ready = false;
    this._readyWaiters = [];
    this._connect();
    this._timer = setInterval(() => this._tick(), Math.max(20, Math.min(100, heartbeat / 4)));
  }

  // ---------------------------------------------------------------- connection
  _connect() {
    if (this._sock) this._sock.close();
    this._epoch += 1;
    this._ready = false;
    this.endpoint = this.endpoints[this._next % this.endpoints.length];
    this._next += 1;
    const sock = new Dealer({ linger: 0, immediate: true, receiveHighWaterMark: 0 });
    sock.connect(this.endpoint);
    this._sock = sock;
    this._chain = Promise.resolve();
    this._received = 0;
    this._held = 0;
    this._acked = 0;
    this._window = 0;
    const now = Date.now();
    this._openedAt = now;
    this._lastHeard = now;
    this._pingAt = now + this.heartbeat;
    this._helloId = this._ids++;
    this._send(encode(["hello", this._helloId, { version: PROTOCOL_VERSION, client: this.name }]));
    this._readLoop(sock, this._epoch);
  }

  _send(frame) {
    const sock = this._sock;
    // One send at a time per socket: zeromq.js refuses a second pending send (EBUSY).
    this._chain = this._chain.then(() => sock.send(frame)).catch(() => {});
  }

  async _readLoop(sock, epoch) {
    try {
      for (;;) {
        const [msg] = await sock.receive();
        if (epoch !== this._epoch) return;
        this._onFrame(msg);
      }
    } catch {
      // closed (a failover or close()): the new socket has its own loop
    }
  }

  _failover(reason) {
    if (this._closed) return;
    if (this._ready) this.failovers += 1;
    // Reads and watch ops go again on the next session; writes fail (outcome unknown).
    for (const [id, p] of this._pending) {
      if (!p.sent) continue;
      if (RESENT_OPS.has(p.op)) {
        p.sent = false;
      } else {
        this._pending.delete(id);
        clearTimeout(p.timer);
        p.reject(new Unavailable(`${p.op}: connection to the fan-out lost before the reply (${reason}); `
          + "the write may or may not have been applied", "UNAVAILABLE"));
      }
    }
    this._resumes.clear();
    for (const w of this._watches.values()) {
      w._resuming = true;
      w.live = false;
      w._fragments = [];
    }
    this._connect();
  }

  _tick() {
    if (this._closed) return;
    const now = Date.now();
    if (now - this._lastHeard > 3 * this.heartbeat) {
      this._failover("silent");
      return;
    }
    if (this._ready && now >= this._pingAt) {
      this._pingAt = now + this.heartbeat;
      this._send(encode(["ping", this._ids++, {}]));
      this._ack(true);
    }
    if (this._goawayAt && now >= this._goawayAt) {
      this._goawayAt = 0;
      this._send(encode(["bye", this._ids++, {}]));
      this._failover("goaway");
    }
  }

  _ack(withPing = false) {
    if (!this._ready) return;
    const value = this._received - this._held;
    const every = this._window ? Math.min(ACK_EVERY, Math.floor(this._window / 4)) : ACK_EVERY;
    if (value > this._acked && (withPing || value - this._acked >= every)) {
      this._acked = value;
      this._send(encode(["ack", 0, { bytes: value }]));
    }
  }

  _released(ticket) {
    if (ticket.epoch !== this._epoch) return;   // a frame of an earlier session: its count is gone
    this._held -= ticket.nbytes;
    this._ack();
  }

  /** Bytes of watch frames received and not yet taken by the application. */
  get bufferedBytes() {
    return this._held;
  }

  _onFrame(msg) {
    this._received += msg.length;
    this._lastHeard = Date.now();
    let frame;
    try {
      frame = decode(msg);
    } catch {
      return;                                    // not a frame of the protocol
    }
    if (!Array.isArray(frame) || frame.length !== 3) return;
    const [kind, reqIdRaw, body] = frame;
    const reqId = num(reqIdRaw);
    if (kind === "w") {
      const ticket = new Ticket(this, msg.length, this._epoch);
      this._held += msg.length;
      if (this._held > this.maxBufferedSeen) this.maxBufferedSeen = this._held;
      try {
        this._onWatchResponses(body, ticket);
      } finally {
        ticket.release();
      }
      return;
    }
    if (kind === "goaway") {
      const delay = Math.max(0, Math.min(num(body?.delay_ms), 600000));
      this._goawayAt = Date.now() + Math.random() * delay;
      return;
    }
    if (reqId === this._helloId && (kind === "ok" || kind === "err")) {
      if (kind !== "ok") {
        this._connectSoon();
        return;
      }
      this.sessionInfo = body;
      this._window = num(body?.window_bytes);
      this._ready = true;
      this._resumeWatches();
      for (const p of this._pending.values()) if (!p.sent) this._sendRequest(p);
      for (const r of this._readyWaiters.splice(0)) r();
      return;
    }
    if (kind === "err" && body?.reason === "NO_SESSION") {
      this._next -= 1;                           // the same fan-out, restarted: a new session there
      this._failover("no session");
      return;
    }
    if (this._resumes.has(reqId)) {
      const w = this._resumes.get(reqId);
      this._resumes.delete(reqId);
      if (kind === "ok") {
        w.live = true;
      } else if (!w.canceled) {
        const err = ZwatchError.fromWire(body);
        if (err.code === "UNAVAILABLE") {
          setTimeout(() => { if (this._ready && !w.canceled) this._resume(w); }, 100);
        } else {
          this._watches.delete(w.watchId);
          w._end(`resume failed: ${err.message}`, 0, err.code === "PERMISSION_DENIED" || err.code === "UNAUTHENTICATED" ? err : null);
        }
      }
      return;
    }
    if (kind === "ok" || kind === "err") {
      const p = this._pending.get(reqId);
      if (!p) return;                            // a late reply after a timeout
      this._pending.delete(reqId);
      clearTimeout(p.timer);
      if (kind === "ok") p.resolve(body);
      else p.reject(ZwatchError.fromWire(body));
    }
  }

  _connectSoon() {
    // A refused hello (draining, version, cut off): the next endpoint, after a short pause.
    this._ready = false;
    setTimeout(() => { if (!this._closed) this._failover("refused"); }, 50 + Math.random() * 200);
  }

  _resumeWatches() {
    const creating = new Set([...this._pending.values()].filter((p) => p.op === "watch_create").map((p) => p.body.watch_id));
    for (const w of this._watches.values()) {
      if (creating.has(w.watchId)) w._resuming = false;     // its own create is re-sent as it was
      else if (w._resuming && !w.canceled) this._resume(w);
    }
  }

  _resume(w) {
    w._resuming = false;
    const id = this._ids++;
    this._resumes.set(id, w);
    this._send(encode(["watch_create", id, { ...w.body, start_revision: w._startRevision() }]));
  }

  _onWatchResponses(responses, ticket) {
    for (const r of responses) {
      if (!Array.isArray(r)) {                   // a control map: a cancellation
        const w = this._watches.get(num(r?.watch_id));
        if (!w || !r.canceled) continue;
        this._watches.delete(w.watchId);
        const code = r.cancel_code ?? "";
        const compact = num(r.compact_revision);
        const error = code ? ZwatchError.fromWire({ code, message: r.cancel_reason }) : null;
        w._end(r.cancel_reason ?? "", compact, error);
        continue;
      }
      const [ids, revRaw, evs, fragment] = r;
      const rev = num(revRaw);
      const events = evs.map((e) => ({ type: EVENT_TYPES[e[0]], kv: kvFromArray(e[1]), prevKv: e[2] ? kvFromArray(e[2]) : null }));
      const targets = ids.length === 1 && num(ids[0]) === -1
        ? [...this._watches.values()].filter((w) => w.live)
        : ids.map((i) => this._watches.get(num(i)));
      for (const w of targets) {
        if (!w || w.canceled) continue;
        // Events at or below what the watch already has are duplicates (never sent; dropped if so)
        const fresh = events.filter((e) => e.kv.modRevision > w.lastRevision);
        if (fragment) {
          w._fragments.push(...fresh);
          continue;
        }
        const all = w._fragments.length ? [...w._fragments, ...fresh] : fresh;
        w._fragments = [];
        if (events.length && !all.length) continue;
        const top = all.length ? all[all.length - 1].kv.modRevision : rev;
        if (top > w.lastRevision) w.lastRevision = top;
        w._push({ watchId: w.watchId, revision: rev, events: all, canceled: false, cancelReason: "",
                  compactRevision: 0, isProgressNotify: all.length === 0 }, ticket);
      }
    }
  }

  // ---------------------------------------------------------------- requests
  _sendRequest(p) {
    p.sent = true;
    this._send(encode([p.op, p.id, p.body]));
  }

  _call(op, body, timeout = this.timeout) {
    if (this._closed) return Promise.reject(new Unavailable("client is closed", "UNAVAILABLE"));
    return new Promise((resolve, reject) => {
      const id = this._ids++;
      const p = { id, op, body, resolve, reject, sent: false };
      p.timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new Unavailable(`${op}: no answer within ${timeout} ms${this._ready ? "" : " (no fan-out reachable)"}`, "UNAVAILABLE"));
      }, timeout);
      this._pending.set(id, p);
      if (this._ready) this._sendRequest(p);
    });
  }

  /** Resolves once a fan-out opened the session (false after timeout ms). */
  waitConnected(timeout = this.timeout) {
    if (this._ready) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeout);
      this._readyWaiters.push(() => { clearTimeout(t); resolve(true); });
    });
  }

  async get(key, opts = {}) {
    const body = rangeBody(key, opts);
    for (const [js, wire] of [["revision", "revision"], ["limit", "limit"], ["keysOnly", "keys_only"],
      ["countOnly", "count_only"], ["sortOrder", "sort_order"], ["sortTarget", "sort_target"]]) {
      if (opts[js] !== undefined) body[wire] = opts[js];
    }
    const b = await this._call("range", body, opts.timeout);
    return { header: header(b), kvs: (b.kvs ?? []).map(kvFromMap), more: !!b.more, count: num(b.count) };
  }

  async put(key, value, opts = {}) {
    const body = { key: toBytes(key), value: toBytes(value) };
    if (opts.prevKv) body.prev_kv = true;
    if (opts.lease) body.lease = opts.lease;
    const b = await this._call("put", body, opts.timeout);
    return { header: header(b), prevKv: b.prev_kv ? kvFromMap(b.prev_kv) : null };
  }

  async delete(key, opts = {}) {
    const body = rangeBody(key, opts);
    if (opts.prevKv) body.prev_kv = true;
    const b = await this._call("delete_range", body, opts.timeout);
    return { header: header(b), deleted: num(b.deleted), prevKvs: (b.prev_kvs ?? []).map(kvFromMap) };
  }

  /** compare/success/failure in the wire's shape (SPEC "txn"); see the builders below. */
  async txn(compare = [], success = [], failure = [], opts = {}) {
    const b = await this._call("txn", { compare, success, failure }, opts.timeout);
    return { header: header(b), succeeded: !!b.succeeded, responses: b.responses ?? [] };
  }

  async compact(revision, opts = {}) {
    return { header: header(await this._call("compact", { revision, physical: !!opts.physical }, opts.timeout)) };
  }

  async status(opts = {}) {
    const b = await this._call("status", {}, opts.timeout);
    return { ...b, header: header(b) };
  }

  async leaseGrant(ttl, opts = {}) {
    const b = await this._call("lease_grant", { TTL: ttl, ID: opts.id ?? 0 }, opts.timeout);
    return { header: header(b), id: b.ID, ttl: num(b.TTL) };
  }

  async leaseRevoke(id, opts = {}) {
    return { header: header(await this._call("lease_revoke", { ID: id }, opts.timeout)) };
  }

  async leaseKeepAliveOnce(ids, opts = {}) {
    const b = await this._call("lease_keepalive", { IDs: ids }, opts.timeout);
    return new Map((b.leases ?? []).map((d) => [d.ID, num(d.TTL)]));
  }

  async requestProgress(opts = {}) {
    return header(await this._call("watch_progress", {}, opts.timeout)).revision;
  }

  /**
   * Watch a key, a prefix (prefix: true), [key, rangeEnd) or everything from key (fromKey: true).
   * Options: startRevision, prevKv, filters (["NOPUT"] / ["NODELETE"]), progressNotify, fragment.
   * Resolves with the watch once created: an async iterator of responses.
   */
  async watch(key, opts = {}) {
    const body = rangeBody(key, opts);
    Object.assign(body, {
      start_revision: opts.startRevision ?? 0, prev_kv: !!opts.prevKv, filters: opts.filters ?? [],
      progress_notify: !!opts.progressNotify, fragment: !!opts.fragment,
    });
    let id = opts.watchId ?? 0;
    if (id === 0) {
      do { id = this._watchIds++; } while (this._watches.has(id));
    } else if (this._watches.has(id)) {
      throw new FailedPrecondition(`watch_id ${id} already exists in this client`, "FAILED_PRECONDITION");
    }
    body.watch_id = id;
    const w = new Watch(this, id, body);
    this._watches.set(id, w);
    let created;
    try {
      created = await this._call("watch_create", body, opts.timeout);
    } catch (e) {
      this._watches.delete(id);
      throw e;
    }
    w.live = true;
    if (!body.start_revision && !w.lastRevision) w.lastRevision = header(created).revision;
    return w;
  }

  async close() {
    if (this._closed) return;
    if (this._ready) {
      this._send(encode(["bye", this._ids++, {}]));
      await Promise.race([this._chain, new Promise((r) => setTimeout(r, 200))]);
    }
    this._closed = true;
    clearInterval(this._timer);
    this._epoch += 1;
    this._sock?.close();
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Unavailable("client closed", "UNAVAILABLE"));
    }
    this._pending.clear();
    for (const w of this._watches.values()) if (!w.canceled) w._end("client closed", 0, null, false);
    this._watches.clear();
  }
}

// ---------------------------------------------------------------- txn builders (SPEC "txn")
const TARGET_FIELD = { VERSION: "version", CREATE: "create_revision", MOD: "mod_revision", LEASE: "lease", VALUE: "value" };
const RESULTS = { "==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS" };

/** compare(key, "VALUE" | "VERSION" | "CREATE" | "MOD" | "LEASE", "==" | "!=" | ">" | "<", operand) */
export function compare(key, target, op, operand) {
  if (!(target in TARGET_FIELD)) throw new TypeError(`unknown compare target ${target}`);
  if (!(op in RESULTS)) throw new TypeError(`unknown compare operator ${op}`);
  return { key: toBytes(key), target, result: RESULTS[op], [TARGET_FIELD[target]]: target === "VALUE" ? toBytes(operand) : operand };
}

export const op = {
  put: (key, value, opts = {}) => ({ request_put: { key: toBytes(key), value: toBytes(value), ...(opts.lease ? { lease: opts.lease } : {}) } }),
  get: (key, opts = {}) => ({ request_range: rangeBody(key, opts) }),
  delete: (key, opts = {}) => ({ request_delete_range: rangeBody(key, opts) }),
};

