"""Limits of the wire protocol, shared by the actors and the client (SPEC.md, "Limits").

Defaults follow etcd where etcd has one; every actor can lower or raise them by
configuration, but these are what a conforming client may rely on.
"""
from __future__ import annotations

PROTOCOL_VERSION = 1

# etcd's --max-request-bytes default (1.5 MiB): a larger frame is answered RESOURCE_EXHAUSTED
# before msgpack sees it.
MAX_REQUEST_BYTES = 1536 * 1024
# ZMQ_MAXMSGSIZE of every actor's inbound sockets: libzmq drops the connection of a peer sending
# a larger frame before it is ever buffered whole (SPEC.md section 1, "Frame size").
SOCKET_MAX_MSG_BYTES = 4 * MAX_REQUEST_BYTES
# LMDB's compiled-in key limit (env.max_key_size()); the store indexes user keys directly.
MAX_KEY_BYTES = 511
# etcd's --max-txn-ops default.
MAX_TXN_OPS = 128
# Compares plus request ops of a whole txn tree, every nesting level and both branches counted.
# etcd bounds a tree only by the request size (1.5 MiB holds ~31,000 tiny ops); this bounds the
# work one request can make the single writer do.  64 full etcd txns' worth: no sane txn nears it.
MAX_TXN_TREE_OPS = 8192
# Nested txn depth (etcd has no explicit limit but bounds it by request size; we bound recursion).
MAX_TXN_DEPTH = 8
# Largest revision a request may name: revisions are stored as 8-byte big-endian unsigned, but
# msgpack ints travel as int64, so anything above this is absurd and refused.
MAX_REVISION = (1 << 63) - 1
# A watch response (one frame to a client) is split when it would exceed this and the watch
# asked for fragments; replay batches from the syncer are bounded by it too.
MAX_RESPONSE_BYTES = 1536 * 1024
# Watches per session and sessions per fan-out (RESOURCE_EXHAUSTED beyond).
MAX_WATCHES_PER_SESSION = 100_000
MAX_SESSIONS_PER_FANOUT = 10_000
# etcd's MaxLeaseTTL: a grant above it is LEASE_TTL_TOO_LARGE ("too large lease TTL").
MAX_LEASE_TTL = 9_000_000_000
# The smallest TTL a grant gets (a smaller or negative one is raised to it, as etcd raises to its
# minLeaseTTL).  It must outlast a client's failover: 3 missed heartbeats (3 s at the default 1 s)
# plus a reconnect, after the last keep-alive sent at TTL/3.  The writer's setting
# ZWATCH_LEASE_MIN_TTL may raise or lower it (tests use 1-2 s with fast heartbeats).
DEFAULT_MIN_LEASE_TTL = 5
# Lease IDs one lease_keepalive may carry (one session keeps all its leases alive with one).
MAX_KEEPALIVE_IDS = 10_000
# Attached keys a lease_timetolive reply lists at most (keys=true); beyond it the reply says
# "keys_truncated" (etcd lists every key, which for 100,000 keys is a 50 MB reply).
MAX_TIMETOLIVE_KEYS = 10_000
# Requests one session may have forwarded to the writer and the syncer without a reply yet
# (a keep-alive counts 1 + IDs // 64): a client pipelining more gets RESOURCE_EXHAUSTED at once,
# so one flooding session cannot queue thousands of requests ahead of other sessions' writes.
MAX_PENDING_REQUESTS_PER_SESSION = 256
# Authentication (SPEC.md section 13).  User and role names are UTF-8 strings of 1..128 bytes;
# a plaintext password is at most 1 KiB (the fan-out hashes it, a slow hash of a huge input is
# a cheap way to burn its CPU).
MAX_AUTH_NAME_BYTES = 128
MAX_PASSWORD_BYTES = 1024
MAX_ROLES_PER_USER = 1000
MAX_PERMS_PER_ROLE = 10_000
# The whole auth state (users, roles, permissions, msgpack-encoded) a change may grow it to:
# every fan-out and the syncer hold a copy, and a fan-out fetches it whole (syncer auth_state).
MAX_AUTH_STATE_BYTES = 8 * 1024 * 1024
# Durable named cursors (SPEC.md 6.2): names are UTF-8 strings of 1..128 bytes; a cursor
# declares how long it lives without being advanced or refreshed (ttl, seconds): at least 1 s,
# at most 30 days, so that no forgotten cursor holds compaction back forever (the failure mode
# of a replication slot whose consumer is gone: the disk fills); at most MAX_CURSORS exist
# (every compaction reads them all, and so does `cursor_list`).
MAX_CURSOR_NAME_BYTES = 128
MIN_CURSOR_TTL = 1
MAX_CURSOR_TTL = 30 * 24 * 3600
MAX_CURSORS = 1000
