"""The MVCC store (etcd v3's data model on LMDB), split by concept as etcd's server/storage/mvcc:

=============== =================================================================================
layout.py       the on-disk encoding: dbs, meta keys, history records, keyrev dups (the only
                module here that imports msgpack)
tx.py           one LMDB txn through etcd's model: reads, writes, txn, compare, duplicate keys
compaction.py   physical compaction in bounded chunks
authtx.py       auth in the batch: users/roles ops (etcd 3.4's auth store), permission checks
store.py        Store (env, group commit, map growth, NO_SPACE), ReadView (a snapshot)
=============== =================================================================================

Requests are validated by zwatch.requests before they reach any of it.
``from zwatch.actors.store import Store`` is the way in.
"""
from zwatch.limits import MAX_TXN_TREE_OPS  # noqa: F401  (moved to limits; kept importable here)

from .layout import DELETE, FORMAT, PUT  # noqa: F401
from .store import NO_SPACE_MARGIN_BYTES, ReadView, Store, free_bytes  # noqa: F401

__all__ = ["Store", "ReadView", "PUT", "DELETE", "FORMAT", "MAX_TXN_TREE_OPS", "NO_SPACE_MARGIN_BYTES",
           "free_bytes"]
