"""The store's on-disk encoding: the ONLY module of the store that knows how bytes are laid out
in LMDB (and the only one that imports msgpack).

Named dbs in one env; only the writer process writes, syncers read from other processes:

* ``meta``:    b"current_rev", b"compact_rev" (8-byte BE), b"compact_done" (8-byte BE revision up
  to which physical compaction is finished, followed by the key to resume from while one is
  pending), b"format" (8-byte BE, FORMAT).  An empty store is at revision 1: the first write gets
  revision 2.
* ``history``: (main, sub) as 16 bytes BE -> msgpack ``[type, key, create, mod, version, value,
  lease]``.  Replay from a revision is one cursor scan.
* ``keyrev``:  user key -> dups of (main, sub) 16 bytes + flag (b"\\x01" tombstone, b"\\x00" put).
  Dups sort by revision, so "latest record <= R" is a seek, and compaction walks it key by key.

* ``lease``:   lease ID (8-byte BE of the int64 as uint64, etcd's encoding) -> msgpack ``[ttl]``,
  the granted TTL.  Only grants and revokes write it: keep-alives are not persisted (etcd does
  not persist them either); the writer's lease clock holds the deadlines in memory.
* ``leasekeys``: lease ID (8 bytes) -> dups of the user keys attached to it.  A key is attached
  while its current (live) kv names the lease; a put with another lease or a delete detaches it.
* ``authusers``: user name (UTF-8) -> msgpack ``[password_hash | nil, [role, ...]]`` (roles sorted).
* ``authroles``: role name (UTF-8) -> msgpack ``[[permType, key, range_end], ...]`` (sorted by
  (key, range_end)).
* meta ``alarms`` (msgpack ``[[member_id, "NOSPACE"], ...]``, absent = none) and ``member_id`` (8-byte
  BE, the writer's ID in alarm lists, drawn when the first alarm is raised): the active alarms
  survive restarts, as etcd's alarm bucket does.
* ``times``: a group commit's last revision (8-byte BE) -> its commit time (8-byte BE, µs since the
  epoch, the writer's clock), written in the commit's txn, pruned below the compact revision by
  compaction (times.py).  Created empty on open: a store written before it dates nothing.
* ``cursors``: a durable named cursor's name (UTF-8) -> msgpack ``[key, range_end, revision, ttl,
  created_us, updated_us]`` (cursors.py).  Created empty on open: a store written before it has
  no cursor, its exact state.
* meta ``auth_enabled`` (8-byte BE 0/1) and ``auth_rev`` (8-byte BE, one per auth change record):
  absent in a store written before auth, which reads as disabled at auth revision 0 with no user
  and no role, its exact state, so no migration is needed.

Invariants: history keys only grow (appended in (main, sub) order); every keyrev dup names a
history record that exists (compaction deletes both together); dups are 17 bytes (dupfixed).
"""
from __future__ import annotations

import struct

import msgpack

FORMAT = 1
PUT, DELETE = 0, 1                     # a history record's type (and a watch event's)

META, HISTORY, KEYREV, LEASE, LEASEKEYS = b"meta", b"history", b"keyrev", b"lease", b"leasekeys"
AUTHUSERS, AUTHROLES = b"authusers", b"authroles"
TIMES = b"times"                                         # the time index (times.py)
CURSORS = b"cursors"                                     # durable named cursors (cursors.py)
AUTH_ENABLED, AUTH_REV = b"auth_enabled", b"auth_rev"    # meta keys; absent = 0
ALARMS, MEMBER_ID = b"alarms", b"member_id"              # meta keys; absent = no alarm / not drawn yet
CURRENT_REV, COMPACT_REV, COMPACT_DONE, FORMAT_KEY = b"current_rev", b"compact_rev", b"compact_done", b"format"
# meta's values in an empty store
INITIAL_META = ((CURRENT_REV, 1), (COMPACT_REV, 0), (COMPACT_DONE, 0), (FORMAT_KEY, FORMAT))

Q = struct.Struct(">Q")                # a revision, 8 bytes BE
QQ = struct.Struct(">QQ")              # (main, sub), 16 bytes BE: a history key
LIVE, TOMB = b"\x00", b"\x01"          # the flag byte ending a keyrev dup
REV_KEY_BYTES = QQ.size


def pack_int(v: int) -> bytes:
    return Q.pack(v)


def meta_int(txn, meta_db, name: bytes) -> int:
    """current_rev or compact_rev (exactly 8 bytes; compact_done has its own reader)."""
    return Q.unpack(txn.get(name, db=meta_db))[0]


def pack_compact_done(done_rev: int, resume: bytes = b"") -> bytes:
    return Q.pack(done_rev) + resume


def unpack_compact_done(raw: bytes) -> tuple[int, bytes]:
    """-> (revision physical compaction is done up to, key to resume from or b"")."""
    return Q.unpack_from(raw)[0], raw[8:]


def pack_lease_id(lease_id: int) -> bytes:
    """etcd's int64ToBytes: the int64 as its uint64 two's complement, 8 bytes BE."""
    return Q.pack(lease_id & 0xFFFF_FFFF_FFFF_FFFF)


def unpack_lease_id(raw: bytes) -> int:
    v = Q.unpack(raw)[0]
    return v - (1 << 64) if v >= 1 << 63 else v


def pack_lease(ttl: int) -> bytes:
    return msgpack.packb([ttl])


def unpack_lease(raw: bytes) -> int:
    """-> the granted TTL"""
    return msgpack.unpackb(raw)[0]


def pack_cursor(record: list) -> bytes:
    """[key, range_end, revision, ttl, created_us, updated_us] (keys are bytes: msgpack bin)"""
    return msgpack.packb(record, use_bin_type=True)


def unpack_cursor(raw: bytes) -> list:
    return msgpack.unpackb(raw, raw=False)


def meta_int_or_zero(txn, meta_db, name: bytes) -> int:
    """A meta integer that an older store may not have (auth_enabled, auth_rev): absent = 0."""
    raw = txn.get(name, db=meta_db)
    return 0 if raw is None else Q.unpack(raw)[0]


def pack_alarms(alarms: list) -> bytes:
    """[[member_id, alarm name], ...]"""
    return msgpack.packb([[int(m), str(a)] for m, a in alarms])


def unpack_alarms(raw: bytes | None) -> list:
    return [] if raw is None else [[m, a] for m, a in msgpack.unpackb(raw, raw=False)]


def pack_auth_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


def unpack_auth_name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def pack_user(record: list) -> bytes:
    """[password_hash | None, [role, ...]]"""
    return msgpack.packb(record, use_bin_type=True)


def pack_role(perms: list) -> bytes:
    """[[permType, key, range_end], ...] (keys are bytes: msgpack bin)"""
    return msgpack.packb(perms, use_bin_type=True)


def unpack_auth_record(raw: bytes) -> list:
    """A user or role value: str stays str, bin stays bytes."""
    return msgpack.unpackb(raw, raw=False)


def packed_bytes(obj) -> int:
    """The msgpack size of obj (the auth state's size bound is on its encoded form)."""
    return len(msgpack.packb(obj, use_bin_type=True))


# One packer for every history record (msgpack.packb builds a Packer per call): records are
# packed by the writer's one thread only.
_record_packer = msgpack.Packer(use_bin_type=True)


def pack_record(typ: int, kv: list) -> bytes:
    """A history value: [type, key, create, mod, version, value, lease]."""
    return _record_packer.pack([typ, *kv])


def unpack_record(raw: bytes) -> list:
    """-> [type, key, create, mod, version, value, lease]"""
    return msgpack.unpackb(raw, raw=False)


def dup_value(rev_key: bytes, tombstone: bool) -> bytes:
    return rev_key + (TOMB if tombstone else LIVE)


def dup_is_live(dv: bytes) -> bool:
    return dv[16:] == LIVE


def dup_main(dv: bytes) -> int:
    return Q.unpack_from(dv)[0]


def latest_dup(cur, rev: int):
    """cur is on some key of keyrev: return that key's latest dup with main <= rev, or None.

    The cursor stays on the key either way, so next_nodup() moves to the next key."""
    cur.last_dup()
    dv = cur.value()
    if Q.unpack_from(dv)[0] <= rev:
        return dv                          # the common case: reading the current state
    key = cur.key()
    # An 8-byte probe sorts before every 17-byte dup with that prefix: lands on the first main > rev,
    # which exists because the last dup is newer than rev.
    cur.set_range_dup(key, Q.pack(rev + 1))
    if cur.prev_dup():
        return cur.value()
    cur.set_key(key)                       # a failed prev_dup leaves the cursor unpositioned
    return None
