"""The writer actor: the only process that writes LMDB.

State machine (one thread, one loop)::

    IDLE --request(s) readable--> DRAIN (take everything queued, up to a bound)
         --> COMMIT (one LMDB write txn, applied request by request, one durable commit)
         --> PUBLISH (the new revisions, in order) --> REPLY (to every requester) --> IDLE
    IDLE --nothing to do, compaction pending--> COMPACT one bounded chunk --> IDLE
    IDLE --heartbeat due--> PUBLISH an empty heartbeat carrying the current revision
    IDLE --a lease's deadline passed--> COMMIT (its revoke: one revision of DELETEs) --> ...

Leases: the writer is the one clock owner (``lessor.Lessor``).  Grants and revokes are store
requests of the batch (durable, persisted with the keys they attach); a commit also carries up
to ``lease_revoke_batch`` expired leases, revoked BEFORE the batch's client requests (one
revision each), so a mass expiry is spread over commits and never holds writes back.
Keep-alives, time-to-live and lease lists are answered from the clock after the commit, with
the clock read once per batch (``now``), so a keep-alive and the expiry it races agree.

Cursors (SPEC.md 6.2): cursor_put/get/list/delete run in the batch like writes (a put is
durable before its reply); the writer's ``cursorclock.CursorClock`` holds their deadlines, read
with the lease clock's reading of the batch; a commit first drops the cursors past their TTL
(before the batch's client requests, so a compact of the same batch may pass them), logged as
writer.cursor_expired.  Compaction never passes the oldest cursor: a client's compact is refused
(store/cursors.py), the automatic policy's target is clamped to it (writer.compaction_held).

Nothing is replied or published before the commit returned: durability first (group commit).
The publish precedes the replies so that a fan-out has seen a revision (or a new compact
revision) by the time the client that caused it acts on the reply.

Sockets
-------
ROUTER (ZWATCH_WRITER_ENDPOINT): frames ``[peer, *route, request]``; the reply goes back as
``[peer, *route, reply]``.  A fan-out forwards a client's request as ``[client_id, user,
request]`` (user: the session's authenticated name, UTF-8, b"" = anonymous) so the reply finds
its way back without being decoded again.  At most two route frames.

Auth (security.md): the envelope ``[fanout, client_id, user]`` (two route frames) is a client's
request, checked as that user against the auth state of the moment it is applied in the batch;
any other shape (``[peer]``, ``[peer, route]``) is an internal peer (tools, tests), unchecked.
The writer keeps the AuthState in memory (loaded at start), runs the auth ops (messages.AUTH_OPS)
in the batch like writes, and swaps in the new state only after the commit.  `status` and
`ping` stay open to anyone.

PUB (ZWATCH_PUB_ENDPOINT): one frame per group commit (or heartbeat), zwatch.internal.Publish::

    ["pub", prev_revision, last_revision, [[revision, [event, ...]], ...], compact_revision,
     [auth_revision, [[after_revision, change], ...]], commit_time]
    event = [type, kv, prev_kv | nil]    (messages.py: kv = [key, create, mod, version, value, lease])

commit_time: µs since the epoch, taken after the commit is durable (a heartbeat: its send time).

The auth part (left out while the auth revision is 0) is on every publish, heartbeats included:
the auth revision after it, and the auth changes of the commit in commit order, each after the
KV revision that was current when it was applied.

prev_revision is the last revision of the previous publish: a subscriber whose own last
revision differs has missed a publish (PUB drops at its high-water mark, or it joined late)
and must recover the gap from history (the syncer).  Heartbeats have no revisions and
prev_revision == last_revision.
"""
from __future__ import annotations

import os
import sys
import time
import uuid

import lmdb
import zmq

from zwatch import __version__, internal, messages, settings
from zwatch.errors import Internal, ZwatchError
from zwatch.limits import PROTOCOL_VERSION
from .logsetup import configure

from zwatch import requests
from zwatch.errors import Compacted, CursorNotFound, InvalidArgument, LeaseNotFound
from zwatch.limits import DEFAULT_MIN_LEASE_TTL, MAX_TIMETOLIVE_KEYS, MAX_RESPONSE_BYTES
from . import metrics, security
from .common import (AlignedEvery, Every, RateLimitedLog, StartupError, StopFlag, bind_error_line, data_dir_problem, make_socket, zmtp_heartbeats,
                     percentile)
from .lessor import Lessor
from .cursorclock import CursorClock
from .auth.perms import READ
from .store import Store, authtx
from .store import defrag as store_defrag
from .store.quota import DEFAULT_QUOTA_BYTES
from . import compactor, direct

# Keep-alives / time-to-live / lease lists taken in one round at most.  They cost no commit, so
# a round full of them would only hold back the writes queued behind them (from other fan-outs:
# ZeroMQ takes one message from each peer in turn) for the time of answering them all.
CLOCK_OPS_PER_ROUND = 256
# ...and lease IDs in them: a keep-alive may carry 10,000, so 256 of those would be a long round.
CLOCK_IDS_PER_ROUND = 16_384
# A poll that returns this much later than its timeout means the process was paused.
PAUSE_S = 0.5
# Under a steady write load the loop is never idle: a pending physical compaction still gets one
# chunk (one durable txn of about 1000 keys and records) this often, so it cannot starve.
COMPACT_EVERY_S = 0.05
# writer.compaction_progress: at most one line this often while a physical compaction runs.
COMPACTION_PROGRESS_S = 1.0
# db_size / db_size_in_use are refreshed this often (one read txn and a stat per table).
SIZES_EVERY_S = 0.5


class Writer:
    loop_turned_at: float | None = None      # monotonic, at each turn of the loop: /livez (probes.py)

    def __init__(self, data_dir: str, endpoint: str, pub_endpoint: str, *, max_batch: int = 4096,
                 heartbeat_s: float = 1.0, stats_s: float = 10.0, map_size: int = 1 << 30,
                 max_map_size: int = 1 << 40, lease_min_ttl: int = DEFAULT_MIN_LEASE_TTL,
                 lease_revoke_batch: int = 100, auto_compaction_mode: str = "periodic",
                 auto_compaction_retention: str = "1h", auto_compaction_interval_s: float = 300.0,
                 quota_backend_bytes: int = DEFAULT_QUOTA_BYTES, compaction_batch_limit: int = 1000, metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", client_endpoint: str | None = "tcp://127.0.0.1:2483"):
        self.data_dir = data_dir
        # Clients' writes straight to the writer (direct.py): None or "" = off.
        self.client_endpoint = client_endpoint or None
        self.direct: zmq.Socket | None = None
        # Told in every pong: a client checks, on its direct connection, that it reached the
        # writer its fan-out named (not another cluster's writer at the same address).
        self.instance = uuid.uuid4().hex
        self.endpoint = endpoint
        self.pub_endpoint = pub_endpoint
        self.max_batch = max_batch
        self.heartbeat_s = heartbeat_s
        self.join_heartbeat = False      # a starting fan-out asked for a heartbeat (internal.Ping.join)
        self.stats_s = stats_s
        self.map_size = map_size
        self.max_map_size = max_map_size
        self.lease_min_ttl = lease_min_ttl
        self.lease_revoke_batch = max(1, lease_revoke_batch)
        # Automatic compaction (compactor.py; None: off).  SettingError (one line) if the
        # retention does not fit the mode: main() prints it and exits.
        self.compactor = compactor.make_policy(auto_compaction_mode, auto_compaction_retention,
                                               time.monotonic(), auto_compaction_interval_s)
        self.auto_compaction = (auto_compaction_mode, auto_compaction_retention)
        # etcd: 0 = the default quota, negative = none
        self.quota_bytes = quota_backend_bytes if quota_backend_bytes > 0 else (
            DEFAULT_QUOTA_BYTES if quota_backend_bytes == 0 else 0)
        # The quota never lets the DB reach the largest map: at a full map even a delete or a
        # compaction cannot commit (they copy pages too), so the alarm fires with headroom left
        # for them (an eighth of the map, at most 1 GiB), whatever the configured quota.
        ceiling = self.max_map_size - min(self.max_map_size // 8, 1 << 30)
        if ceiling > 0 and (self.quota_bytes <= 0 or self.quota_bytes > ceiling):
            self.quota_bytes = ceiling
        self.alarms: list[str] = []        # active alarm names (the pong's `alarms`), as in LMDB
        self.compaction: dict | None = None  # the physical compaction running, its figures
        self.physical_waiters: list = []   # [(revision, reply frames)]: compact {physical: true}
        self.compaction_records_removed = 0  # by physical compaction since start (metrics)
        self.compaction_batch_limit = max(1, compaction_batch_limit)
        # Sizes for the pong, stats, metrics (read from other threads: plain ints, refreshed by
        # the loop at most every SIZES_EVERY_S and after each compaction; no LMDB txn elsewhere).
        self.db_size = 0
        self.db_size_in_use = 0
        self._sizes_at = -1e9
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        # Cumulative figures for /metrics (actors/metrics.py reads them when scraped; the
        # writer.stats ones are per interval): commit durations, requests by op and code.
        self.commit_seconds = metrics.Buckets(metrics.COMMIT_BUCKETS)
        self.requests_meter = metrics.RequestMeter()
        self.publish_dropped = 0
        self.last_commit_time = 0          # µs since the epoch of the last durable commit published
        self.lessor = Lessor()
        self.cursor_clock = CursorClock()
        self.cursors_expired = 0           # since start (metrics)
        # Figures of writer.leases_expired since its last line (at most one line a second; the
        # main loop writes the held-back totals once the second is over, so none is lost when
        # the expiries stop): leases, keys deleted, commits carrying them, most leases one
        # commit carried, last revision, revokes being retried.
        self._expired_unlogged = dict.fromkeys(("leases", "keys_deleted", "commits", "max_per_commit",
                                                "last_revision", "retrying"), 0)
        self._expired_logged_at = -1e9
        self.log = configure("writer")
        self.stop = StopFlag()
        self._reset_stats()
        # writer.commit_failed: one line a second at most while the storage keeps failing
        self.log_limited = RateLimitedLog(1.0)

    @classmethod
    def from_env(cls) -> "Writer":
        return cls(**settings.actor_kwargs("writer", cls))

    def _reset_stats(self):
        self.st_commits = 0
        self.st_requests = 0
        self.st_errors = 0
        self.st_revisions = 0
        self.st_commit_ms: list[float] = []
        self.st_max_batch = 0
        self.st_first_revision = 0
        self.st_last_revision = 0
        self.st_keepalives = 0
        self.st_leases_expired = 0

    # ------------------------------------------------------------------ main loop
    def readiness(self) -> tuple[bool, str]:
        """/readyz (probes.py): serving once the loop turns; a NOSPACE alarm still serves reads,
        deletes and compaction, so it does not take the writer out."""
        return True, "ok"

    def run(self) -> int:
        # An unusable data dir or a port in use: one line and exit code 2 (main), no traceback.
        problem = data_dir_problem(self.data_dir)
        if problem is None:
            try:
                store_defrag.remove_leftovers(self.data_dir)   # a defrag killed before its swap
                with store_defrag.open_exclusive(self.data_dir):   # no syncer read on an old lock.mdb
                    self.store = Store(self.data_dir, map_size=self.map_size, max_map_size=self.max_map_size,
                                       min_lease_ttl=self.lease_min_ttl, quota_bytes=self.quota_bytes)
            except (OSError, lmdb.Error) as exc:
                problem = str(exc)
        if problem is not None:
            self.log.error("writer.data_dir_unwritable", data_dir=os.path.abspath(self.data_dir), error=problem)
            raise StartupError(f"zwatch writer: cannot use data dir {os.path.abspath(self.data_dir)}: {problem}")
        self.alarms = [name for _, name in self.store.alarms()]
        self.last_published = self.store.current_revision()
        # The lease clock: monotonic time minus the time the process was paused (SIGSTOP, a VM
        # or swap stall while it slept in poll): nobody could reach the clock then, so, as over
        # a restart, those seconds do not count against any lease.
        self.paused_s = 0.0
        self.queue_empty_at = self.lease_now()   # (lease clock) the last moment nothing was queued
        # Every lease gets its full TTL again: nothing expires early because the writer was down.
        self.lessor.restore(self.store.leases(), self.lease_now())
        # Likewise every cursor (cursorclock.py).
        self.cursor_clock.restore(self.store.cursors(), self.lease_now())
        self.compact_rev = self.store.compact_revision()  # cached: only a compact changes it
        self.auth = self.store.auth_state()   # in memory; replaced after each commit that changes it
        self.auth_changes: list = []          # [(after_revision, change)] not published yet
        ctx = zmq.Context()
        self.security = security.for_actor("writer", ctx, self.log)   # CURVE + ZAP when ZWATCH_CURVE_DIR
        self.router = make_socket(ctx, zmq.ROUTER, rcvhwm=100_000, sndhwm=100_000)
        self.pub = make_socket(ctx, zmq.PUB, max_msg=None, sndhwm=100_000)
        for sock in (self.router, self.pub):
            zmtp_heartbeats(sock, connecting=False)    # fan-outs on hosts that may vanish (common.py)
        self.security.server(self.router, security.INTERNAL, self.endpoint, self.log)
        self.security.server(self.pub, security.INTERNAL, self.pub_endpoint, self.log)
        binds = [(self.router, self.endpoint), (self.pub, self.pub_endpoint)]
        if self.client_endpoint is not None:
            self._bind_direct(ctx)
        for sock, endpoint in binds:
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                self.log.error("writer.bind_failed", endpoint=endpoint, error=str(exc))
                self.store.close()
                self.security.stop()
                ctx.destroy(linger=0)
                raise StartupError(bind_error_line("writer", endpoint, exc, "writer")) from None
        self.log.info("writer.start", data_dir=os.path.abspath(self.data_dir), endpoint=self.endpoint,
                      client_endpoint=self.client_endpoint if self.direct is not None else None,
                      pub_endpoint=self.pub_endpoint, revision=self.last_published,
                      compact_revision=self.store.compact_revision(), max_batch=self.max_batch,
                      heartbeat_s=self.heartbeat_s, leases=len(self.lessor), cursors=len(self.cursor_clock),
                      lease_min_ttl=self.lease_min_ttl, auth_enabled=self.auth.enabled,
                      auth_revision=self.auth.revision, version=__version__,
                      auto_compaction_mode=self.compactor.mode if self.compactor else None,
                      auto_compaction_retention=self.auto_compaction[1] if self.compactor else None,
                      quota_backend_bytes=self.quota_bytes, alarms=self.alarms)
        if self.auth.enabled:
            self._warn_if_without_curve()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.direct is not None:
            poller.register(self.direct, zmq.POLLIN)
        heartbeat = Every(self.heartbeat_s)
        stats = self.stats_clock = AlignedEvery(self.stats_s)   # wall-clock boundaries: lines join on `at`
        compaction_pending = self._resume_compaction()   # a crash may have left one half done
        last_chunk = 0.0
        try:
            while not self.stop:
                next_deadline = min(self.lessor.next_deadline(), self.cursor_clock.next_deadline())
                lease_ms = max(0, int(min(next_deadline - self.lease_now(), 0.2) * 1000) + 1)
                timeout = 0 if compaction_pending else min(heartbeat.remaining_ms(), 200, lease_ms)
                polled_at = self.loop_turned_at = time.monotonic()     # /livez (probes.py)
                ready = poller.poll(timeout)
                paused = time.monotonic() - polled_at - timeout / 1000
                if paused > PAUSE_S:
                    self.paused_s += paused
                    self.log.warning("writer.paused", paused_s=round(paused, 3))
                elif not ready:
                    self.queue_empty_at = self.lease_now()
                if ready or min(self.lessor.next_deadline(), self.cursor_clock.next_deadline()) <= self.lease_now():
                    compaction_pending |= self._group_commit()
                    if compaction_pending and time.monotonic() - last_chunk >= COMPACT_EVERY_S:
                        compaction_pending = self._compact_chunk()      # busy: it must not starve
                        last_chunk = time.monotonic()
                elif compaction_pending:
                    compaction_pending = self._compact_chunk()
                    last_chunk = time.monotonic()
                now = time.monotonic()
                if self.compactor is not None and now >= self.compactor.next_at:
                    compaction_pending |= self._auto_compact(now)
                if now - self._sizes_at >= SIZES_EVERY_S:
                    self._refresh_sizes(now)
                if heartbeat.due(now) or self.join_heartbeat:
                    self.join_heartbeat = False
                    self._publish([])
                self._log_expired(now)             # totals held back by the one-a-second limit
                if stats.due():
                    self._log_stats()
        finally:
            self._log_expired(float("inf"))
            self.log.info("writer.stop", revision=self.last_published, signal=self.stop.signal)
            self.router.close()
            self.pub.close()
            if self.direct is not None:
                self.direct.close()
            self.security.stop()                   # its ZAP sockets first: term() waits for them
            ctx.term()
            self.store.close()
        return 0

    def _group_commit(self) -> bool:
        """Drain every queued request into one durable commit.  Returns True if a compaction began."""
        batch: list[tuple[list[bytes], int, str, dict, str | None]] = []
        replies: list[list[bytes]] = []
        started = time.perf_counter()      # every request of the round was read after this
        clock_ops: list[tuple[list[bytes], int, str, dict, str | None]] = []
        now = self.lease_now()             # the lease clock's one reading for this batch
        queued_since = self.queue_empty_at  # what is read now arrived after this moment
        clock_ids = 0
        defrags: list = []                 # after this round's commit and replies (store_defrag)
        while (len(batch) + len(clock_ops) < self.max_batch and len(clock_ops) < CLOCK_OPS_PER_ROUND
               and clock_ids < CLOCK_IDS_PER_ROUND):
            if not self.router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self.queue_empty_at = self.lease_now()
                break  # drained (cheaper than ending on a zmq.Again exception)
            frames = self.router.recv_multipart(zmq.NOBLOCK, copy=True)
            if not 2 <= len(frames) <= 4:
                self.log.warning("writer.bad_envelope", frames=len(frames))
                self.st_errors += 1
                continue
            envelope, raw = frames[:-1], frames[-1]
            try:
                op, req_id, body = messages.decode_request(raw)
            except ZwatchError as err:
                self.st_errors += 1
                replies.append(envelope + [messages.encode_error(messages.error_req_id(err), err)])
                continue
            # [fanout, client_id, user]: a client's request, checked as that user (b"": anonymous);
            # any other envelope is an internal peer (None: unchecked).
            user = None
            if len(envelope) == 3:
                try:
                    user = envelope[2].decode("utf-8")
                except UnicodeDecodeError:
                    self.st_errors += 1
                    replies.append(envelope + [messages.encode_error(
                        req_id, InvalidArgument("the user frame is not UTF-8"))])
                    continue
            if op == "status":
                replies.append(envelope + [messages.encode_ok(req_id, self._status())])
                self.requests_meter.count(op)
            elif op in messages.ALARM_OPS:     # rare: answered (and a disarm committed) at once
                reply = self._alarm_op(op, req_id, body, user)
                replies.append(envelope + [reply])
                self.requests_meter.count(op, messages.reply_error_code(reply)
                                          if messages.reply_head(reply)[0] == "err" else "OK")
            elif op in messages.DEFRAG_OPS:
                defrags.append((envelope, req_id, body, user))
            elif op == "ping":
                # A fan-out's ping every 0.5 s: what its `status` and `health` answer from.  A
                # starting fan-out's ping asks for a heartbeat now, to join the stream at once.
                if user is None and type(body) is dict and body.get("join") is True:
                    self.join_heartbeat = True
                replies.append(envelope + [internal.Pong(req_id, self.instance, self.last_published, {
                    "compact_revision": self.compact_rev, "db_size": self.db_size,
                    "db_size_in_use": self.db_size_in_use, "alarms": list(self.alarms),
                    "leases": len(self.lessor), "commit_time": self.last_commit_time,
                    "direct": self.direct is not None}).encode()])
            elif (op in messages.WRITE_OPS or op in messages.READ_OPS or op in messages.AUTH_OPS
                  or op in messages.CURSOR_OPS):
                batch.append((envelope, req_id, op, body, user))
            elif op in messages.LEASE_CLOCK_OPS:
                try:
                    r = requests.normalize(op, body)
                    clock_ops.append((envelope, req_id, op, r, user))
                    clock_ids += len(r.get("IDs", ())) or 1
                except ZwatchError as err:
                    self.st_errors += 1
                    self.requests_meter.count(op, err.code)
                    replies.append(envelope + [messages.encode_error(req_id, err)])
            else:
                replies.append(envelope + [messages.encode_error(
                    req_id, ZwatchError(f"op {op} is not served by the writer", "UNIMPLEMENTED"))])
        if self.direct is not None:
            self._read_direct(batch, replies, self.max_batch - len(batch) - len(clock_ops))
        began_compaction = False
        published = []
        # Keep-alives read now may have waited in the queue through a long commit (or fsync)
        # since before their lease's deadline: they count from then, before anything expires, so
        # a busy writer never expires a lease that was kept alive in time.
        for _, _, op, r, _ in clock_ops:
            if op == "lease_keepalive":
                for lease_id in r["IDs"]:
                    self.lessor.keepalive_queued(lease_id, queued_since)
        expired = self.lessor.expired(now, self.lease_revoke_batch)
        # Cursors past their TTL: dropped by this commit, after the lease expiries and before
        # the client requests (an internal peer's cursor_delete: user None).
        dropped = self.cursor_clock.expired(now)
        if batch or expired or dropped:
            t0 = time.perf_counter()
            work = [("lease_revoke", {"ID": lease_id}, None) for lease_id in expired]
            work += [("cursor_delete", {"name": name}, None) for name in dropped]
            work += [(op, body, user) for _, _, op, body, user in batch]
            try:
                results, published = self.store.apply_batch(work, self.auth)
                if self.store.auth_changes:     # committed: the new state is the writer's now
                    self._auth_changed(work, self.store.auth_after, self.store.auth_changes,
                                       self.store.auth_change_requests)
            except ZwatchError as err:  # a whole-batch failure (e.g. storage) fails every request
                results = [err] * len(work)
            except Exception as exc:  # never die on one bad batch; report it with a stable code
                self.log.exception("writer.batch_failed")
                results = [Internal(f"{type(exc).__name__}: {exc}")] * len(work)
            if expired:
                self._expired_done(expired, results[:len(expired)], published, now)
                results = results[len(expired):]
            if dropped:
                self._cursors_dropped(dropped, results[:len(dropped)], now)
                results = results[len(dropped):]
            ms = (time.perf_counter() - t0) * 1000
            if self.store.commit_failure:
                self._commit_failed(self.store.commit_failure, len(batch))
            self.commit_seconds.observe(ms / 1000)
            self.st_commits += 1
            self.st_requests += len(batch)
            self.st_commit_ms.append(ms)
            self.st_max_batch = max(self.st_max_batch, len(batch))
            if published:
                self.st_revisions += len(published)
                self.st_first_revision = self.st_first_revision or published[0][0]
                self.st_last_revision = published[-1][0]
                # Every commit at debug; at info only the slow ones (an operator's red flag), so
                # that a busy writer does not log thousands of lines a second.
                log = self.log.info if ms >= 100 else self.log.debug
                log("writer.commit", batch=len(batch), first_revision=published[0][0],
                    last_revision=published[-1][0], commit_ms=round(ms, 3))
            for (envelope, req_id, op, body, _), result in zip(batch, results):
                self.requests_meter.count(op, result.code if isinstance(result, ZwatchError) else "OK")
                if isinstance(result, ZwatchError):
                    self.st_errors += 1
                    replies.append(envelope + [messages.encode_error(req_id, result)])
                else:
                    if op == "compact":
                        began_compaction = True
                        self._compaction_began(body["revision"], "request")
                        if body.get("physical") is True:   # replied once the records are gone
                            self.physical_waiters.append(
                                (body["revision"], envelope + [messages.encode_ok(req_id, result)]))
                            continue
                    elif op == "lease_grant":
                        self.lessor.grant(result["ID"], result["TTL"], now)
                    elif op == "lease_revoke":
                        self.lessor.forget(body["ID"])
                    elif op in messages.CURSOR_OPS:
                        self._cursor_done(op, result, now)
                    replies.append(envelope + [messages.encode_ok(req_id, result)])
        # Both after the durable commit.  The publish goes first so that a fan-out knows a new
        # compact revision (or revision) by the time the client that caused it acts on the reply.
        if self.store.alarm_raised:
            self._alarm_raised()
        if began_compaction:
            self.compact_rev = self.store.compact_revision()
        if published or began_compaction or self.auth_changes:
            self._publish(published)
        self._send_replies(replies)
        self.requests_meter.settle(time.perf_counter() - started)
        # After the commit (they see its grants and revokes), and after the writes' replies: a
        # keep-alive flood through one fan-out holds a put of another fan-out back by one round
        # of CLOCK_OPS_PER_ROUND at most (measured in tests/system/test_leases.py).
        replies = []
        for envelope, req_id, op, body, user in clock_ops:
            try:
                if user is not None:       # any authenticated user, as of after the commit
                    authtx.require_user(self.auth, user)
                replies.append(envelope + [messages.encode_ok(req_id, self._lease_clock(op, body, now, user))])
                self.requests_meter.count(op)
            except ZwatchError as err:
                self.st_errors += 1
                self.requests_meter.count(op, err.code)
                replies.append(envelope + [messages.encode_error(req_id, err)])
        self._send_replies(replies)
        self.requests_meter.settle(time.perf_counter() - started)
        if defrags:
            self._defrag(defrags)
        return began_compaction

    def _defrag(self, reqs):
        """The defrag requests of one round, answered by one defrag (store/defrag.py).  Writes
        are held meanwhile: this loop is single-threaded, requests queue in the ROUTER.  Root
        only with auth enabled (etcd 3.4's authMaintenanceServer.Defragment)."""
        allowed, replies = [], []
        for envelope, req_id, body, user in reqs:
            try:
                requests.normalize("defrag", body)
                if user is not None:
                    self.auth.check_admin(user)
                allowed.append((envelope, req_id))
            except ZwatchError as err:
                self.st_errors += 1
                self.requests_meter.count("defrag", err.code)
                replies.append(envelope + [messages.encode_error(req_id, err)])
        if allowed:
            t0 = time.perf_counter()
            self.log.info("writer.defrag_started", db_size=self.store.db_size(), revision=self.last_published,
                          db_size_in_use=self.db_size_in_use, requests=len(allowed))
            try:
                fig = store_defrag.defrag(self.store)
                took = time.perf_counter() - t0
                self.log.info("writer.defragged", db_size_before=fig["db_size_before"],
                              db_size_after=fig["db_size_after"], duration_s=round(took, 3),
                              writes_held_ms=round(took * 1000, 3), copy_ms=round(fig["copy_s"] * 1000, 3),
                              swap_ms=round(fig["swap_s"] * 1000, 3), revision=self.last_published)
                body = {"header": {"revision": self.last_published}, "db_size_before": fig["db_size_before"],
                        "db_size_after": fig["db_size_after"], "took_ms": round(took * 1000, 3)}
                replies += [env + [messages.encode_ok(req_id, body)] for env, req_id in allowed]
                code = "OK"
                self._refresh_sizes()
            except Exception as exc:           # the store is open again (old or new file): keep serving
                err = exc if isinstance(exc, ZwatchError) else Internal(f"defrag failed: {type(exc).__name__}: {exc}")
                self.log.error("writer.defrag_failed", error=str(err), revision=self.last_published)
                replies += [env + [messages.encode_error(req_id, err)] for env, req_id in allowed]
                code = err.code
            for _ in allowed:
                self.requests_meter.count("defrag", code)
        self._send_replies(replies)

    def _auth_changed(self, work, state, changes, change_requests):
        """A commit changed the auth state: adopt it, queue its changes for the publish, log them
        (op, who, what; never a password or its hash)."""
        rev = self.auth.revision
        for (after, change), i in zip(changes, change_requests):
            rev += 1
            op, _, user = work[i]
            self.log.info("writer.auth_changed", op=op, user=user, kind=change[0],
                          name=change[1] if change[0] != "enabled" else None,
                          enabled=change[1] if change[0] == "enabled" else None,
                          deleted=change[0] != "enabled" and change[2] is None,
                          auth_revision=rev, after_revision=after)
            if change == ["enabled", True]:
                self._warn_if_without_curve()
        self.auth = state
        self.auth_changes += changes

    def _warn_if_without_curve(self):
        """Passwords and permissions mean little when anyone on the path can read the frames."""
        security = getattr(self, "security", None)
        if not (security is not None and getattr(security, "on", False)):
            self.log.warning("writer.auth_without_curve", auth_revision=self.auth.revision,
                             endpoint=self.endpoint, pub_endpoint=self.pub_endpoint)

    def _bind_direct(self, ctx):
        """The clients' direct endpoint (direct.py), an accelerator: when it cannot be had (CURVE
        on, the address taken) the writer runs without it, says so, and its pongs say so, so
        that no fan-out offers it."""
        if self.security.on:
            self.log.warning("writer.direct_off", endpoint=self.client_endpoint,
                             reason="CURVE is on: clients reach the writer through the fan-outs only")
            return
        sock = make_socket(ctx, zmq.ROUTER, rcvhwm=direct.RCVHWM, sndhwm=direct.SNDHWM)
        try:
            sock.bind(self.client_endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            self.log.warning("writer.direct_off", endpoint=self.client_endpoint, reason=str(exc))
            return
        self.direct = sock

    def _read_direct(self, batch: list, replies: list, room: int):
        """Requests of clients connected straight to the writer (direct.py), after the fan-outs'
        and within the same round's budget: they join this round's group commit."""
        sock = self.direct
        while room > 0 and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            if len(frames) != 2:
                self.st_errors += 1
                self.log_limited(self.log.warning, "writer.bad_envelope", frames=len(frames), direct=True)
                continue
            envelope = [direct.DIRECT, frames[0], b""]
            item, reply = direct.admit(frames[1], self.auth.enabled, self._direct_pong)
            if reply is not None:
                if reply[0] == "err":
                    self.st_errors += 1
                replies.append(envelope + [reply[1]])
                continue
            op, req_id, body = item
            # As the anonymous user: were auth enabled by a request earlier in this very batch,
            # the store refuses it (PERMISSION_DENIED) rather than applying it unchecked.
            batch.append((envelope, req_id, op, body, ""))
            room -= 1

    def _direct_pong(self, req_id: int) -> bytes:
        return internal.Pong(req_id, self.instance, self.last_published).encode()

    def _send_replies(self, replies):
        for frames in replies:
            try:
                if frames[0] is direct.DIRECT:
                    self.direct.send_multipart(frames[1:2] + frames[3:], zmq.NOBLOCK)
                    continue
                self.router.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # requester gone (EHOSTUNREACH) or its pipe full
                # Rate-limited: a direct client that never reads has every reply dropped here,
                # which was one line per reply (125,000 lines for a 200,000-put flood).
                direct_reply = frames[0] is direct.DIRECT
                self.log_limited(self.log.warning, "writer.reply_dropped", key=direct_reply, error=str(exc),
                                 direct=direct_reply)

    def _expired_done(self, expired, results, published, now):
        """Settle the clock after a commit that carried expiry revokes and count it for
        writer.leases_expired."""
        done, last, failed = 0, 0, []
        for lease_id, result in zip(expired, results):
            if isinstance(result, LeaseNotFound) or not isinstance(result, ZwatchError):
                self.lessor.forget(lease_id)   # revoked now (or already, by a client)
                done += 1
                if isinstance(result, dict):
                    last = max(last, result["header"]["revision"])
            else:
                failed.append(lease_id)        # storage fault: try again next commit
        self.lessor.requeue(failed, now)
        if done:
            self.st_leases_expired += done
            # The expiries ran first: their revisions are the batch's first ones, up to `last`.
            revisions = [p for p in published if self.last_published < p[0] <= last]
            acc = self._expired_unlogged
            acc["leases"] += done
            acc["keys_deleted"] += sum(len(events) for _, events in revisions)
            acc["commits"] += 1
            acc["max_per_commit"] = max(acc["max_per_commit"], done)
            acc["last_revision"] = max([acc["last_revision"]] + [rev for rev, _ in revisions])
            acc["retrying"] = len(failed)
            self._log_expired(time.monotonic())

    def _cursor_done(self, op: str, result: dict, now: float):
        """After the commit: a cursor op's effect on the clock, and the remaining TTL (``ttl_remaining``,
        seconds, from the clock) on every cursor the reply shows."""
        if op == "cursor_put":
            c = result["cursor"]
            self.cursor_clock.touch(c["name"], c["revision"], c["ttl"], now)
        elif op == "cursor_delete":
            self.cursor_clock.forget(result["cursor"]["name"])
        for c in result.get("cursors") or ([result["cursor"]] if "cursor" in result else []):
            c["ttl_remaining"] = self.cursor_clock.remaining(c["name"], now) if op != "cursor_delete" else 0

    def _cursors_dropped(self, names, results, now: float):
        """Cursors dropped for their expiry (results: their cursor_delete's): one writer.cursor_expired
        line each (rare: a consumer gone for a whole TTL), with the figures an operator needs."""
        failed = []
        for name, result in zip(names, results):
            if isinstance(result, ZwatchError) and not isinstance(result, CursorNotFound):
                failed.append(name)            # storage fault: try again next commit
                continue
            ttl = self.cursor_clock.ttl.get(name)
            self.cursor_clock.forget(name)
            if isinstance(result, dict):
                c = result["cursor"]
                self.cursors_expired += 1
                self.log.warning("writer.cursor_expired", cursor=name, revision=c["revision"], ttl_s=ttl,
                                 lag_revisions=c["lag_revisions"], lag_seconds=c["lag_seconds"],
                                 idle_s=round(max(0, time.time_ns() // 1000 - c["updated_us"]) / 1e6, 3),
                                 key=c["key"].decode("utf-8", "backslashreplace"),
                                 range_end=c["range_end"].decode("utf-8", "backslashreplace"),
                                 revision_now=self.last_published)
        self.cursor_clock.requeue(failed, now)

    def lease_now(self) -> float:
        return time.monotonic() - self.paused_s

    def _log_expired(self, now: float):
        """One writer.leases_expired line a second at most, its figures the totals since the
        previous one; `repeated`: the commits with expiries not logged on their own."""
        acc = self._expired_unlogged
        if acc["commits"] and now - self._expired_logged_at >= 1.0:
            self.log.info("writer.leases_expired", **acc, repeated=acc["commits"] - 1)
            self._expired_logged_at = now
            for k in acc:
                acc[k] = 0

    def _lease_clock(self, op: str, r: dict, now: float, user: str | None = None) -> dict:
        """lease_keepalive / lease_timetolive / lease_leases (r normalized), answered from memory
        (no fsync).  user: who asks (None: an internal peer); a time-to-live with keys needs READ
        on every attached key (etcd 3.4.26's checkLeaseTimeToLive, CVE-2023-32082)."""
        header = {"revision": self.last_published}
        if op == "lease_keepalive":
            self.st_keepalives += len(r["IDs"])
            return {"header": header, "leases": [{"ID": i, "TTL": self.lessor.keepalive(i, now)} for i in r["IDs"]]}
        if op == "lease_leases":
            return {"header": header, "leases": [{"ID": i} for i in self.lessor.ids()]}
        lease_id = r["ID"]
        remaining = self.lessor.remaining(lease_id, now)
        with self.store.reader() as view:
            if r["keys"] and user is not None and self.auth.enabled and not self.auth.is_root(user):
                for key in view.lease_keys(lease_id):
                    self.auth.check(user or None, READ, key)
            info = view.lease(lease_id, MAX_TIMETOLIVE_KEYS if r["keys"] else 0, MAX_RESPONSE_BYTES // 2)
        if info is None or remaining < 0:  # etcd: not found is TTL -1, not an error
            return {"header": header, "ID": lease_id, "TTL": -1, "grantedTTL": 0, "keys": []}
        granted, keys, truncated = info
        resp = {"header": header, "ID": lease_id, "TTL": remaining, "grantedTTL": granted, "keys": keys}
        if truncated:
            resp["keys_truncated"] = True
        return resp

    def _commit_failed(self, failure: dict, requests: int):
        """One log line per failed batch; if they come faster than one a second, the next line
        says how many were not logged (`repeated`) so a full disk cannot flood the log."""
        self.log_limited(self.log.error, "writer.commit_failed", code=failure["code"], requests=requests,
                         error=failure["error"], free_bytes=failure["free_bytes"])

    def _publish(self, published):
        last = published[-1][0] if published else self.last_published
        changes, self.auth_changes = self.auth_changes, []
        # Called after the commit is durable: its time (µs since the epoch) rides on the publish
        # so that fan-outs measure their time lag; a heartbeat carries its send time.
        sent_us = time.time_ns() // 1000
        if published:
            self.last_commit_time = sent_us
        try:
            self.pub.send(internal.Publish(self.last_published, last, published, self.compact_rev,
                                           self.auth.revision, changes, sent_us).encode(), zmq.NOBLOCK)
        except zmq.Again:  # PUB never blocks; subscribers detect the gap by prev_revision
            self.publish_dropped += 1
            self.log.warning("writer.publish_dropped", revision=last, auth_revision=self.auth.revision)
        self.last_published = last

    # ------------------------------------------------------------------ compaction
    @property
    def compacting(self) -> bool:
        """A physical compaction is running (metrics)."""
        return self.compaction is not None

    def _refresh_sizes(self, now: float | None = None):
        self.db_size = self.store.db_size()
        self.db_size_in_use = self.store.db_size_in_use()
        self._sizes_at = time.monotonic() if now is None else now

    def _resume_compaction(self) -> bool:
        """At start: an unfinished physical compaction (a crash, a stop) goes on.  True if one is."""
        done, target = self.store.compaction_state()
        if done >= target:
            return False
        self.compaction = None
        self._compaction_began(target, "resume", previous=done)
        return True

    def _compaction_began(self, revision: int, trigger: str, previous: int | None = None):
        """A compact committed (or found unfinished): log it, start counting its physical work.
        A compact that comes while another is running takes over its figures (the physical
        pass restarts from the first key for the new revision)."""
        if previous is None:
            previous = self.compaction["compact_revision"] if self.compaction else self.compact_rev
        self.log.info("writer.compaction_started", compact_revision=revision, previous=previous,
                      trigger=trigger, revision=self.last_published)
        now = time.monotonic()
        c = self.compaction or {"started": now, "keys_scanned": 0, "records_removed": 0, "logged": now}
        c.update(compact_revision=revision, trigger=trigger)
        self.compaction = c

    def _auto_compact(self, now: float) -> bool:
        """The policy's tick; on a decision, compact like a client's `compact` (one commit, then
        published).  True if a compaction began."""
        rev = self.compactor.tick(now, self.last_published, self.compact_rev)
        if rev is None:
            return False
        if self.compaction is not None:
            # The previous one is still removing records: restarting its pass from the first
            # key could keep a large store from ever finishing.  Retried at the next tick.
            self.compactor.done(now, False)
            return False
        # Never past the oldest cursor (SPEC.md 6.2): clamped to its revision + 1, and reported
        # as not done, so the policy tries again at its next tick (the cursor may have moved).
        held = self.cursor_clock.oldest_revision
        if held is not None and rev > held + 1:
            self.log.info("writer.compaction_held", target=rev, clamped_to=held + 1,
                          cursor=self.cursor_clock.oldest_name, cursor_revision=held,
                          compact_revision=self.compact_rev, revision=self.last_published)
            if held + 1 <= self.compact_rev:
                self.compactor.done(now, False)
                return False
            rev = held + 1
            clamped = True
        else:
            clamped = False
        try:
            results, published = self.store.apply_batch([("compact", {"revision": rev}, None)], self.auth)
            result = results[0]
        except Exception as exc:               # never die on it: the policy retries later
            result = Internal(f"{type(exc).__name__}: {exc}")
        ok = not isinstance(result, ZwatchError) or isinstance(result, Compacted)
        self.compactor.done(time.monotonic(), ok and not clamped)
        if isinstance(result, ZwatchError):
            if not ok:
                self.log.error("writer.compact_failed", error=str(result), compact_revision=rev, trigger="auto")
            return False
        self._compaction_began(rev, "auto")
        self.compact_rev = self.store.compact_revision()
        self._publish(published)               # fan-outs learn the new compact revision
        return True

    def _compact_chunk(self) -> bool:
        try:
            more = self.store.compact_step(self.compaction_batch_limit)
        except ZwatchError as err:
            self.log.error("writer.compact_failed", error=str(err),
                           compact_revision=self.compaction["compact_revision"] if self.compaction else None)
            self._release_physical(err)
            return False
        c = self.compaction
        now = time.monotonic()
        if c is None:                          # nothing was pending (or not known to be)
            self._release_physical()
            return more
        c["keys_scanned"] += self.store.compact_figures["keys"]
        c["records_removed"] += self.store.compact_figures["records"]
        self.compaction_records_removed += self.store.compact_figures["records"]
        if more:
            if now - c["logged"] >= COMPACTION_PROGRESS_S:
                c["logged"] = now
                self.log.info("writer.compaction_progress", compact_revision=c["compact_revision"],
                              keys_scanned=c["keys_scanned"], records_removed=c["records_removed"],
                              elapsed_s=round(now - c["started"], 3))
            return True
        self.compaction = None
        self._refresh_sizes()                  # the sizes this compaction left
        self.log.info("writer.compacted", compact_revision=c["compact_revision"], trigger=c["trigger"],
                      duration_s=round(now - c["started"], 3), keys_scanned=c["keys_scanned"],
                      records_removed=c["records_removed"], db_size=self.db_size,
                      db_size_in_use=self.db_size_in_use)
        self._release_physical()
        return False

    def _release_physical(self, err: ZwatchError | None = None):
        """Reply to the compacts that asked to wait for the physical compaction (`physical`):
        every one at or below what is now physically done, or all of them with err."""
        if not self.physical_waiters:
            return
        done, _ = self.store.compaction_state()
        ready = [w for w in self.physical_waiters if err is not None or w[0] <= done]
        self.physical_waiters = [w for w in self.physical_waiters if w not in ready]
        frames = [w[1] if err is None else w[1][:-1] + [messages.encode_error(
            messages.unpack(w[1][-1])[1], err)] for w in ready]
        self._send_replies(frames)

    # ------------------------------------------------------------------ alarms
    def _alarm_raised(self):
        self.store.alarm_raised = False    # handled (a round without a batch must not log it again)
        self.alarms = [name for _, name in self.store.alarms()]
        self.log.warning("writer.alarm_raised", alarm="NOSPACE", db_size=self.store.db_size(),
                         quota_backend_bytes=self.quota_bytes, revision=self.last_published)

    def _alarm_op(self, op: str, req_id: int, body, user: str | None) -> bytes:
        """alarm_list / alarm_disarm (etcd 3.4.45's authMaintenanceServer.Alarm: listing needs
        any authenticated user, disarming needs root)."""
        try:
            r = requests.normalize(op, body)
            if user is not None:
                if op == "alarm_list":
                    authtx.require_user(self.auth, user)
                else:
                    self.auth.check_admin(user)
            header = {"revision": self.last_published}
            if op == "alarm_list":
                alarms = self.store.alarms()
            else:
                alarms = self.store.alarm_disarm(r.get("alarm") or None)
                self.alarms = [name for _, name in self.store.alarms()]
                for member, name in alarms:
                    self.log.warning("writer.alarm_disarmed", alarm=name, member_id=member,
                                     user=user, db_size=self.store.db_size(),
                                     quota_backend_bytes=self.quota_bytes)
            return messages.encode_ok(req_id, {"header": header, "alarms": [
                {"memberID": member, "alarm": name} for member, name in alarms]})
        except ZwatchError as err:
            self.st_errors += 1
            return messages.encode_error(req_id, err)

    def _status(self) -> dict:
        return {"header": {"revision": self.last_published}, "version": __version__,
                "protocol_version": PROTOCOL_VERSION, "compact_revision": self.store.compact_revision(),
                "db_size": _db_size(self.data_dir), "actor": "writer", "leases": len(self.lessor),
                "db_size_in_use": self.db_size_in_use, "alarms": list(self.alarms)}

    def _log_stats(self):
        ms = sorted(self.st_commit_ms)
        # Kept for /metrics, whose thread must not open LMDB transactions of its own.
        self.db_size, self.db_size_in_use = self.store.db_size(), self.store.db_size_in_use()
        self.log.info("writer.stats", at=self.stats_clock.at, commits=self.st_commits, requests=self.st_requests,
                      revisions=self.st_revisions, errors=self.st_errors, max_batch=self.st_max_batch,
                      commit_ms_p50=round(percentile(ms, 0.5), 3), commit_ms_p99=round(percentile(ms, 0.99), 3),
                      first_revision=self.st_first_revision, last_revision=self.st_last_revision,
                      revision=self.last_published, leases=len(self.lessor), keepalives=self.st_keepalives,
                      leases_expired=self.st_leases_expired, interval_s=self.stats_s,
                      cursors=len(self.cursor_clock), cursor_oldest=self.cursor_clock.oldest_name,
                      cursor_oldest_lag_revisions=(self.last_published - self.cursor_clock.oldest_revision
                                                   if self.cursor_clock.oldest_revision is not None else None),
                      db_size=self.db_size, db_size_in_use=self.db_size_in_use,
                      compact_revision=self.compact_rev, alarms=self.alarms,
                      commit_time=self.last_commit_time)
        self._reset_stats()


def _db_size(data_dir: str) -> int:
    try:
        return os.path.getsize(os.path.join(data_dir, "data.mdb"))
    except OSError:
        return 0


def main() -> int:
    try:
        writer = Writer.from_env()
    except settings.SettingError as exc:   # e.g. a retention that does not fit the mode: one line
        print(f"zwatch writer: {exc}", file=sys.stderr)
        return 2
    # /metrics first: a port in use (or prometheus_client missing) ends the process at once.
    try:
        return metrics.serve("writer", writer, writer.metrics_port, writer.metrics_host) or writer.run()
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
