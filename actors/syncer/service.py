"""The syncer actor's service: the socket, the poll loop, reads, the outbox.

What a batch decides (which watchers, one scan, per-group outputs, handoffs, compaction
cancels, when to start) is in batch.py, without I/O; this module feeds it LMDB snapshots and
sends what it returns.  The syncer serves reads and replays history to unsynced watchers.

Why the syncer serves Range: it is a reader of LMDB already, LMDB readers never wait for the
writer's fsync (MVCC snapshots), and a fan-out on another host than the LMDB file reaches it
over ZeroMQ like any other peer.  Replay runs in bounded chunks, so a read waits at most one
chunk behind a catch-up.

State machine::

    IDLE --unsynced watchers pending--> BATCH: take up to batch_size watchers (lowest next
         revision first), min_rev = their lowest next revision; cancel those below the
         compact revision (etcd #17529: before anything else about them advances)
    BATCH --chunk: ONE history scan from the cursor, bounded by revisions and bytes--> match
         each record against the batch's own KeyIndex, send per-watcher responses
         (whole revisions only) to the owning fan-outs
    BATCH --cursor passed the snapshot's current revision R--> "synced" at R for every watcher
         of the batch, back to IDLE

Between chunks it serves reads and takes new registrations (they join the next batch), and
stops scanning while a fan-out's pipe is full (its messages wait in an outbox).

Socket: ROUTER (ZWATCH_SYNCER_ENDPOINT).  Fan-outs speak the messages of zwatch.internal
(SPEC.md section 12); a forwarded client read arrives as [fanout, client_id, request].  A direct peer
may also send ["stats", id, {}] (counters for tests and operators).
"""
from __future__ import annotations

import os
import time
import uuid
from collections import deque
from contextlib import contextmanager
from functools import partial

import lmdb
import zmq

from zwatch import internal, messages, requests, streamhash, valuefilter
from zwatch.actors.auth.perms import READ
from zwatch.errors import FutureRevision, InvalidArgument, ZwatchError
from zwatch.limits import MAX_RESPONSE_BYTES

from .. import metrics, security
from ..common import (AlignedEvery, Every, StartupError, StopFlag, bind_error_line, data_dir_problem, drain,
                      make_socket, zmtp_heartbeats)
from ..logsetup import configure
from ..store import Store, authtx
from ..store import snapshot as store_snapshot
from ..store.defrag import Follower, swap_lock
from .batch import Batch, PendingQueue, StartPolicy, SyncWatcher
from .mapped import Releaser
from .state import StateRead, wants_state
from . import watchhash

SYNCER_OPS = (frozenset({"sync", "unsync", "ping", "stats", "range", "status", "auth_state"}) | messages.SNAPSHOT_OPS
              | messages.HASH_OPS | messages.TIME_OPS)
_LIST_BODY_OPS = frozenset({"sync", "unsync"})


class Syncer:
    loop_turned_at: float | None = None      # monotonic, at each turn of the loop: /livez (probes.py)

    def __init__(self, data_dir: str, endpoint: str, *, batch_size: int = 512, chunk_revisions: int = 2000,
                 chunk_bytes: int = 1 << 20, batch_delay_s: float = 0.1, quiet_s: float = 0.01,
                 fanout_timeout_s: float = 10.0,
                 stats_s: float = 10.0, metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 snapshot_dir: str | None = None, key_index_max_keys: int = 64, key_read_cost: float = 4.0):
        self.data_dir = data_dir
        self.key_index_max_keys = key_index_max_keys
        self.key_read_cost = key_read_cost
        self.snapshot_dir = snapshot_dir or os.path.join(data_dir, "snapshots")
        self.endpoint = endpoint
        self.batch_size = batch_size
        self.chunk_revisions = chunk_revisions
        self.chunk_bytes = min(chunk_bytes, MAX_RESPONSE_BYTES)
        self.fanout_timeout_s = fanout_timeout_s
        self.batch_delay_s = batch_delay_s
        self.quiet_s = quiet_s
        self.start_policy = StartPolicy(batch_size, quiet_s, batch_delay_s)
        self.stats_s = stats_s
        self.last_batch_lag_revisions = 0   # the last sync.batch's lag (metrics)
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        self.instance = f"syncer-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.log = configure("syncer").bind(instance=self.instance)
        self.stop = StopFlag()
        self.pending = PendingQueue()          # waiting for a batch
        self.batch: Batch | None = None
        # Watches reading a state (initial state, resync: state.py), in turn order, one chunk
        # each per loop turn.
        self.states: dict[tuple[bytes, int], StateRead] = {}
        self.batch_started = 0.0
        self.outbox: deque[tuple[bytes, bytes]] = deque()
        self.fanout_heard: dict[bytes, float] = {}
        # What each fan-out said of itself in its last ping: the member list every pong carries.
        self.members: dict[bytes, list] = {}
        self.totals = dict(batches=0, records_scanned=0, events_sent=0, handoffs=0, compacted=0, reads=0,
                           reads_denied=0, key_index_reads=0, state_reads=0, state_kvs=0, state_restarts=0,
                           watch_hashes=0)
        self._auth_cache = None            # (auth revision, AuthState) of the last snapshot that needed it
        self.st = dict(self.totals)

    @classmethod
    def from_env(cls) -> "Syncer":
        from zwatch import settings         # the declarations: protocol/settings.py
        return cls(**settings.actor_kwargs("syncer", cls))

    def _count(self, name, n=1):
        self.totals[name] += n
        self.st[name] += n

    # ------------------------------------------------------------------ loop
    def readiness(self) -> tuple[bool, str]:
        """/readyz (probes.py): serving once the loop turns."""
        return True, "ok"

    def run(self) -> int:
        # An unusable data dir or a port in use: one line and exit code 2 (main), no traceback.
        problem = data_dir_problem(self.data_dir)
        if problem is None:
            try:
                with swap_lock(self.data_dir, exclusive=False):    # never in the middle of a defrag's swap
                    self.store = Store(self.data_dir)
            except (OSError, lmdb.Error) as exc:
                problem = str(exc)
        if problem is not None:
            self.log.error("syncer.data_dir_unwritable", data_dir=os.path.abspath(self.data_dir), error=problem)
            raise StartupError(f"zwatch syncer: cannot use data dir {os.path.abspath(self.data_dir)}: {problem}")
        self.follower = Follower(self.store)
        # A long replay's pages of the LMDB map are unmapped as it goes (mapped.py): RSS bounded.
        self.map_pages = Releaser(os.path.join(self.data_dir, "data.mdb"))
        store_snapshot.remove_leftovers(self.snapshot_dir)
        self.snapshots = store_snapshot.Snapshots(self.snapshot_dir)
        ctx = zmq.Context()
        self.security = security.for_actor("syncer", ctx, self.log)   # CURVE + ZAP when ZWATCH_CURVE_DIR
        self.router = make_socket(ctx, zmq.ROUTER, sndhwm=1000, rcvhwm=100_000)
        zmtp_heartbeats(self.router, connecting=False)    # fan-outs on hosts that may vanish (common.py)
        self.security.server(self.router, security.INTERNAL, self.endpoint, self.log)
        try:
            self.router.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self.log.error("syncer.bind_failed", endpoint=self.endpoint, error=str(exc))
            self.security.stop()
            ctx.destroy(linger=0)
            raise StartupError(bind_error_line("syncer", self.endpoint, exc, "syncer")) from None
        self.log.info("syncer.start", data_dir=os.path.abspath(self.data_dir), endpoint=self.endpoint,
                      batch_size=self.batch_size, chunk_revisions=self.chunk_revisions,
                      chunk_bytes=self.chunk_bytes, quiet_s=self.quiet_s, batch_delay_s=self.batch_delay_s,
                      revision=self.store.current_revision())
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        # The snapshot copy thread wakes the loop through an inproc PAIR (its end used by that
        # thread only): the loop, never the thread, replies on the ROUTER.
        wake_ep = f"inproc://snapshot-done-{uuid.uuid4().hex}"
        self._snap_wake = [ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)]
        self._snap_wake[0].bind(wake_ep)
        self._snap_wake[1].connect(wake_ep)
        self.snapshots.notify = partial(self._snap_wake[1].send, b"", zmq.NOBLOCK)
        poller.register(self._snap_wake[0], zmq.POLLIN)
        stats = AlignedEvery(self.stats_s)   # wall-clock boundaries: lines of all actors join on `at`
        reap = Every(1.0)
        try:
            while not self.stop:
                self.loop_turned_at = time.monotonic()     # /livez, /readyz (actors/probes.py)
                self._flush_outbox()
                # Decided before the drain below, which may add registrations: they wait for
                # the next round (and its quiet window).
                due = self.start_policy.due(time.monotonic(), len(self.pending))
                busy = (self.batch is not None or due or bool(self.states)) and not self.outbox
                # Busy: just look for input between chunks.  Outbox full: the fan-out's pipe
                # drains fast, retry soon (not after a full idle wait: that stalled every chunk).
                timeout = 0 if busy else (2 if self.outbox else (5 if self.pending else 50))
                if poller.poll(timeout):
                    self._drain()
                if self.snapshots.copying:
                    self._snapshots_copied()
                self._flush_outbox()
                if not self.outbox:
                    if self.batch is None and due:
                        self._start_batch()
                    if self.batch is not None:
                        self._scan_chunk()
                if self.states and not self.outbox:
                    self._state_chunk()
                now = time.monotonic()
                if reap.due(now):
                    self._reap_fanouts(now)
                    self._follow()             # an idle syncer lets an old file go too
                    self.snapshots.expire()
                if stats.due():
                    self.log.info("syncer.stats", at=stats.at, pending=len(self.pending),
                                  batch=len(self.batch) if self.batch is not None else 0, outbox=len(self.outbox),
                                  interval_s=self.stats_s, **self.st)
                    self.st = dict.fromkeys(self.st, 0)
        finally:
            self.log.info("syncer.stop", signal=self.stop.signal, **self.totals)
            self.router.close()
            self.security.stop()                   # its ZAP sockets first: term() waits for them
            self.snapshots.close()                 # waits for a copy in progress (reads the store)
            for sock in getattr(self, "_snap_wake", ()):
                sock.close(linger=0)
            ctx.term()
            self.snapshots.close()
            self.store.close()
        return 0

    def _drain(self):
        for frames in drain(self.router, 1024):
            if not 2 <= len(frames) <= 4:
                self.log.warning("syncer.bad_envelope", frames=len(frames))
                continue
            envelope, raw = frames[:-1], frames[-1]
            peer = frames[0]
            req_id = None
            try:
                op, req_id, body = messages.decode_request(raw, SYNCER_OPS, _LIST_BODY_OPS)
                if op in _LIST_BODY_OPS:           # registrations: no read txn
                    reply = self._handle(peer, envelope, op, req_id, body)
                else:
                    with self._reading():
                        reply = self._handle(peer, envelope, op, req_id, body)
            except ZwatchError as err:
                rid = req_id if req_id is not None else messages.error_req_id(err)
                reply = messages.encode_error(rid, err)
            except Exception as exc:
                self.log.exception("syncer.request_failed")
                reply = messages.encode_error(req_id, ZwatchError(f"{type(exc).__name__}: {exc}"))
            if reply is not None:
                self._send(envelope, reply)

    @contextmanager
    def _reading(self):
        """Around every read txn: a defrag swapped a new file in?  Then read that one, and hold
        the shared swap lock meanwhile (store/defrag.py, Follower).  Checked after the request
        arrived, so a read sees every write acknowledged before it."""
        before = self.follower.reopens
        with self.follower.reading():
            if self.follower.reopens != before:
                self.log.info("syncer.store_reopened", revision=self.store.current_revision(),
                              db_size=self.store.db_size())
            yield

    def _follow(self):
        with self._reading():
            pass

    def _snapshot(self, envelope, op, req_id, body):
        """snapshot_begin / snapshot_read (store/snapshot.py).  Root only with auth enabled (etcd
        3.4's authMaintenanceServer.Snapshot); an internal peer is unchecked."""
        r = requests.normalize(op, body)
        if len(envelope) == 3:
            with self.store.reader() as view:
                self._auth_at(view).check_admin(envelope[2].decode("utf-8", "replace"))
        if op == "snapshot_begin":
            # Copied on the snapshot thread (store/snapshot.py); answered by _snapshots_copied.
            self.snapshots.start(self.store, (envelope, req_id, time.monotonic()))
            return None
        header = {"revision": self.store.current_revision()}
        return messages.encode_ok(req_id, {"header": header,
                                           "data": self.snapshots.read(r["token"], r["offset"])})

    def _snapshots_copied(self):
        """Answer each snapshot_begin whose copy is done (polled every loop round)."""
        try:
            while True:
                self._snap_wake[0].recv(zmq.NOBLOCK)
        except zmq.Again:
            pass
        for (envelope, req_id, t0), s in self.snapshots.finished():
            if isinstance(s, ZwatchError):
                reply = messages.encode_error(req_id, s)
            elif isinstance(s, Exception):
                self.log.error("syncer.request_failed", exc_info=s)
                reply = messages.encode_error(req_id, ZwatchError(f"{type(s).__name__}: {s}"))
            else:
                self.log.info("syncer.snapshot_begun", token=s.token[:8], size=s.size, revision=s.revision,
                              copy_s=round(time.monotonic() - t0, 3))
                with self._reading():
                    header = {"revision": self.store.current_revision()}
                reply = messages.encode_ok(req_id, {"header": header, "token": s.token, "size": s.size,
                                                    "revision": s.revision, "sha256": s.sha256})
            self._send(envelope, reply)

    def _hash_kv(self, envelope, req_id, body):
        """hash_kv (store/hashkv.py) of one snapshot; root only with auth enabled (etcd 3.4's
        authMaintenanceServer.HashKV); an internal peer is unchecked."""
        r = requests.normalize("hash_kv", body)
        with self.store.reader() as view:
            if len(envelope) == 3:
                self._auth_at(view).check_admin(envelope[2].decode("utf-8", "replace"))
            h, compact, rev = view.hash_kv(r["revision"])
            current = view.current_revision
        return messages.encode_ok(req_id, {"header": {"revision": current}, "hash": h,
                                           "compact_revision": compact, "hash_revision": rev})

    def _revision_at_time(self, envelope, req_id, body):
        """revision_at_time (store/times.py) of one snapshot.  It reveals revisions and commit
        times, no key or value: any authenticated user may ask when auth is enabled (as
        alarm_list); an internal peer is unchecked."""
        t_us = requests.normalize("revision_at_time", body)["time_us"]
        self._count("reads")
        with self.store.reader() as view:
            if len(envelope) == 3:
                authtx.require_user(self._auth_at(view), envelope[2].decode("utf-8", "replace"))
            answer = view.revision_at_time(t_us, time.time_ns() // 1000)
            answer["header"] = {"revision": view.current_revision}
        return messages.encode_ok(req_id, answer)

    def _watch_hash(self, envelope, req_id, body):
        """watch_hash (watchhash.py, SPEC.md 7.10) on one snapshot; root only with auth enabled
        (an operator's check, like hash_kv); an internal peer is unchecked."""
        r = requests.normalize("watch_hash", body)
        with self.store.reader() as view:
            if len(envelope) == 3:
                self._auth_at(view).check_admin(envelope[2].decode("utf-8", "replace"))
            current = view.current_revision
            rev = r["revision"] or current
            if rev > current:
                raise FutureRevision("mvcc: required revision is a future revision", current_revision=current)
            h, n, records, through = watchhash.hash_history(view, r["spec"], r["start_revision"], rev)
        self._count("watch_hashes")
        self.log.info("syncer.watch_hash", start_revision=r["start_revision"], revision=rev, through=through,
                      events=n, records=records)
        return messages.encode_ok(req_id, {"header": {"revision": current}, "hash": streamhash.to_bytes(h),
                                           "events": n, "start_revision": r["start_revision"],
                                           "revision": rev, "through": through})

    def _handle(self, peer, envelope, op, req_id, body):
        if op in messages.SNAPSHOT_OPS:
            return self._snapshot(envelope, op, req_id, body)
        if op == "hash_kv":
            return self._hash_kv(envelope, req_id, body)
        if op == "revision_at_time":
            return self._revision_at_time(envelope, req_id, body)
        if op == "watch_hash":
            return self._watch_hash(envelope, req_id, body)
        if op == "range":
            self._count("reads")
            # A fan-out forwards a client's read as [fanout, client_id, user]: checked as that user
            # (b"": anonymous); any other envelope is an internal peer (tests, tools).
            user = envelope[2].decode("utf-8", "replace") if len(envelope) == 3 else None
            return messages.encode_ok(req_id, self._range(body, user if len(envelope) == 3 else False))
        if op == "auth_state":
            with self.store.reader() as view:
                state = self._auth_at(view)
            return internal.AuthStateReply(req_id, state.to_wire()).encode()
        if op == "status":
            return messages.encode_ok(req_id, {"header": {"revision": self.store.current_revision()},
                                               "compact_revision": self.store.compact_revision(),
                                               "actor": "syncer", "instance": self.instance})
        if op == "stats":
            return internal.encode_stats_reply(req_id, dict(
                self.totals, pending=len(self.pending), batch=len(self.batch) if self.batch is not None else 0,
                instance=self.instance))
        if len(envelope) != 1:
            raise InvalidArgument(f"{op} is a fan-out message")
        self.fanout_heard[peer] = time.monotonic()
        if op == "ping":
            member = internal.decode_member(body)
            if member is not None:
                self.members[peer] = list(member.values())
            members = sorted(self.members.values())[:internal.MAX_MEMBERS]
            return internal.Pong(req_id, self.instance, self.store.current_revision(),
                                 {"members": members}).encode()
        if op == "sync":
            regs = internal.decode_sync(body)          # all checked before any is taken,
            for reg in regs:
                valuefilter.from_opts(reg.opts)         # their value filters too (SPEC.md 7.8)
            for reg in regs:
                k = (peer, reg.uid)
                self._forget(k)
                w = SyncWatcher(peer, *reg._replace(next_rev=max(1, reg.next_rev)))
                if wants_state(w.opts):            # a state read, not a replay (state.py)
                    self.states[k] = StateRead(w)
                    continue
                # Join the running batch if it may (batch.py, Batch.try_join), else wait.
                if self.batch is None or not self.batch.try_join(w):
                    self.start_policy.registered(time.monotonic(), first=not self.pending)
                    self.pending.add(k, w)
        elif op == "unsync":
            for uid, epoch in internal.decode_unsync(body):
                k = (peer, uid)
                w = self.pending.get(k) or (self.batch.get(k) if self.batch is not None else None)
                if w is None and k in self.states:
                    w = self.states[k].w
                if w is not None and w.epoch == epoch:
                    self._forget((peer, uid))
        return None

    def _auth_at(self, view):
        """The auth state of this snapshot (cached per auth revision: it changes rarely)."""
        rev = view.auth_revision()
        cached = self._auth_cache
        if cached is None or cached[0] != rev:
            cached = self._auth_cache = (rev, view.auth_state())
        return cached[1]

    def _range(self, body, user):
        """user False: an internal peer, unchecked; None: anonymous; else the user's name.  The
        check reads the auth tables of the same snapshot as the data."""
        with self.store.reader() as view:
            if user is not False:
                state = self._auth_at(view)
                if state.enabled:
                    r = requests.normalize("range", body)
                    try:
                        state.check(user or None, READ, r["key"], r["range_end"])
                    except ZwatchError:
                        self._count("reads_denied")
                        raise
            return view.range(body)

    def _forget(self, k):
        self.pending.discard(k)
        self.states.pop(k, None)
        if self.batch is not None:
            self.batch.forget(k)

    def _reap_fanouts(self, now):
        dead = [f for f, t in self.fanout_heard.items() if now - t > self.fanout_timeout_s]
        for fanout in dead:
            self._drop_fanout(fanout, "silent")

    def _drop_fanout(self, fanout: bytes, reason: str):
        self.fanout_heard.pop(fanout, None)
        self.members.pop(fanout, None)
        gone = [k for k in list(self.pending.keys()) + list(self.batch.keys() if self.batch is not None else ())
                + list(self.states) if k[0] == fanout]
        for k in gone:
            self._forget(k)
        self.outbox = deque((f, m) for f, m in self.outbox if f != fanout)
        self.log.info("syncer.fanout_dropped", fanout=fanout.decode(errors="replace"), reason=reason, watchers=len(gone))

    # ------------------------------------------------------------------ output
    def _send(self, envelope, frame) -> bool:
        try:
            self.router.send_multipart(envelope + [frame], zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError:  # EHOSTUNREACH: the peer is gone
            if len(envelope) == 1:
                self._drop_fanout(envelope[0], "unreachable")
            return True

    def _post_by_fanout(self, encode, pairs):
        """Frames per fan-out for (fanout, item) pairs; encode (internal.encode_events, ...)
        cuts them to a bounded size.

        Everything posted here grows with the number of watchers (or of groups x events): one
        message for all of them would be unbounded (issue #8.3)."""
        by_fanout: dict[bytes, list] = {}
        for fanout, item in pairs:
            by_fanout.setdefault(fanout, []).append(item)
        for fanout, items in by_fanout.items():
            for frame in encode(items):
                self.outbox.append((fanout, frame))

    def _flush_outbox(self):
        while self.outbox:
            fanout, frame = self.outbox[0]
            if not self._send([fanout], frame):
                return  # that fan-out's pipe is full: stop scanning until it drains
            if self.outbox and self.outbox[0][1] is frame:
                self.outbox.popleft()

    # ------------------------------------------------------------------ batches
    def _start_batch(self):
        chosen = self.pending.take(self.batch_size)
        self.start_policy.started(time.monotonic())
        if not chosen:
            return
        self.batch = Batch(chosen, max_watchers=self.batch_size, chunk_revisions=self.chunk_revisions,
                           chunk_bytes=self.chunk_bytes, key_index_max_keys=self.key_index_max_keys,
                           key_read_cost=self.key_read_cost)
        self.batch_started = time.perf_counter()
        self._count("batches")

    def _scan_chunk(self):
        with self._reading(), self.store.reader() as view:
            current = view.current_revision
            auth_rev = view.auth_revision()
            step = self.batch.step(view)
        # In this order: a compacted watcher is canceled before anything else about it
        # (etcd #17529), and the handoffs come after the last events.
        # Each frame names the snapshot's auth revision: a fan-out that has not applied the auth
        # changes up to it yet holds the frame until it has (a watch forbidden meanwhile must
        # not get these events).
        if step.cancels:
            self._post_by_fanout(partial(internal.encode_compacted, auth_rev=auth_rev), step.cancels)
            self._count("compacted", len(step.cancels))
        self._count("records_scanned", step.records)
        self.map_pages.read(step.records, batch_done=step.handoffs is not None)
        if step.by_key:
            self._count("key_index_reads")
        self._count("events_sent", step.events_sent)
        self._post_by_fanout(partial(internal.encode_events, auth_rev=auth_rev), step.events)
        if step.handoffs is not None:
            self._finish_batch(step.handoffs, current, auth_rev)

    def _state_chunk(self):
        """One chunk of the state read whose turn it is (state.py); it goes to the back of the
        line unless it is done.  Bounded like a batch's chunk: a huge range costs many turns,
        never one long one."""
        k = next(iter(self.states))
        read = self.states.pop(k)
        with self._reading(), self.store.reader() as view:
            auth_rev = view.auth_revision()
            restarts = read.restarts
            events, handoffs, kvs = read.step(view, self.chunk_revisions, self.chunk_bytes)
        self._count("state_kvs", kvs)
        self._count("state_restarts", read.restarts - restarts)
        self._post_by_fanout(partial(internal.encode_events, auth_rev=auth_rev), events)
        if handoffs is None:
            self.states[k] = read
            return
        self._post_by_fanout(partial(internal.encode_synced, auth_rev=auth_rev), handoffs)
        self._count("state_reads")
        w = read.w
        self.log.info("sync.state", fanout=w.fanout.decode("utf-8", "replace"), watch_id=w.watch_id,
                      revision=read.rev, kvs=read.kvs, chunks=read.chunks, restarts=read.restarts,
                      digest_since=read.since if read.mode == 2 else None)

    def _finish_batch(self, handoffs, current: int, auth_rev: int = 0):
        batch = self.batch
        self._post_by_fanout(partial(internal.encode_synced, auth_rev=auth_rev), handoffs)
        self._count("handoffs", len(handoffs))
        # Who the batch was for and how far behind it started (issue #12): a session that makes
        # the syncer rescan history again and again shows up here by name.
        fanouts = sorted({g[0] for g in batch.groups})
        sessions = sorted({(g[0], g[1]) for g in batch.groups})
        self.last_batch_lag_revisions = max(0, current - batch.min_rev)
        self.log.info("sync.batch", watchers=batch.joined, handed_off=len(handoffs),
                      min_revision=batch.min_rev, to_revision=current, rewinds=batch.rewinds,
                      records_scanned=batch.scanned, key_index_reads=batch.key_reads,
                      ms=round((time.perf_counter() - self.batch_started) * 1000, 3),
                      fanouts=[f.decode("utf-8", "replace") for f in fanouts[:MAX_NAMED]],
                      sessions=len(sessions),
                      session_names=[_printable(s) for _, s in sessions[:MAX_NAMED]],
                      lag_revisions=self.last_batch_lag_revisions, **self._batch_lag_s(batch.min_rev))
        self.batch = None

    def _batch_lag_s(self, revision: int) -> dict:
        """lag_s: the age of the batch's oldest start revision (its commit time from the time
        index, times.py); left out when the index does not know it (an older store)."""
        commit_us = self.store.commit_time_of(revision) if hasattr(self.store, "commit_time_of") else None
        if not commit_us:
            return {}
        return {"lag_s": round(max(0.0, time.time() - commit_us / 1e6), 3)}


MAX_NAMED = 5           # fan-outs and sessions named by a sync.batch line at most


def _printable(ident: bytes) -> str:
    """A session's routing id as the fan-out knows it: text if it is, else hex (ZeroMQ's own
    ids are 5 binary bytes)."""
    try:
        text = ident.decode("utf-8")
    except UnicodeDecodeError:
        return ident.hex()
    return text if text.isprintable() else ident.hex()


def main() -> int:
    syncer = Syncer.from_env()
    # /metrics first: a port in use (or prometheus_client missing) ends the process at once.
    try:
        return metrics.serve("syncer", syncer, syncer.metrics_port, syncer.metrics_host) or syncer.run()
    except StartupError as exc:
        import sys
        print(exc, file=sys.stderr)
        return 2

