"""`hash_kv`: one number that says whether two stores (or one store at two times) hold the same
history up to a revision (etcd's HashKV, for `zwatch endpoint hashkv`).

Definition (SPEC.md "hash_kv"): CRC-32 (zlib's, the IEEE polynomial) over, in order,
* the compact revision as 8 bytes big-endian, then
* for every history record whose revision main is in (compact_revision, revision], in (main, sub)
  order: its 16-byte key (main, sub as two 8-byte big-endian) followed by the record's stored bytes
  (layout.py: msgpack [type, key, create, mod, version, value, lease]).

Records at or below the compact revision are left out: what physical compaction has removed of
them yet depends on when it is asked, so including them would make the hash change while nothing
changed.  Cost: one cursor scan of the window, about 1 s per million records; the syncer serves it
like a read (nothing else waits on it but that connection's next request).
"""
from __future__ import annotations

import zlib

from .layout import Q, QQ


def hash_kv(txn, history_db, compact_revision: int, revision: int) -> int:
    h = zlib.crc32(Q.pack(compact_revision))
    cur = txn.cursor(db=history_db)
    if not cur.set_range(QQ.pack(compact_revision + 1, 0)):
        return h
    end = QQ.pack(revision + 1, 0)
    for k, v in cur.iternext():
        if k >= end:
            break
        h = zlib.crc32(v, zlib.crc32(k, h))
    return h
