"""The DB size quota and the NOSPACE alarm, etcd 3.4's rules (etcdserver/quota.go, apply.go,
api/v3rpc/quota.go), without I/O: the store asks ``BatchQuota.check`` before each request of a
batch and writes the alarm it raises.

What grows the DB: a put (cost ``256 + len(key) + len(value)``), a txn (the larger of its success
and failure branches' put costs; nested txns count too, where etcd 3.4 forgets them) and a lease
grant (cost 64).  Everything else costs 0 and always passes: deletes, compaction, reads, auth ops.

* No alarm: a request with cost > 0 passes while ``db_size + cost < quota``; otherwise the
  NOSPACE alarm is raised (persisted with the batch's commit) and the request fails NO_SPACE.
  db_size is the LMDB file size at the batch's start plus the cost of the requests of the
  batch already admitted (etcd reads bolt's size, the file size, per request).
* Alarm active: every request with cost > 0 fails NO_SPACE (etcd's applierV3Capped), until an
  operator disarms it; a request at or over the quota raises it again.
* quota <= 0: no quota (etcd: a negative quota disables it; 0 means the default, which the
  writer resolves before it gets here).

The error is etcd's gRPC text, so `zwatch put` prints what etcdctl prints.
"""
from __future__ import annotations

from zwatch.errors import NoSpace

NOSPACE = "NOSPACE"
ALARM_TYPES = (NOSPACE,)
NO_SPACE_MESSAGE = "etcdserver: mvcc: database space exceeded"
DEFAULT_QUOTA_BYTES = 2 << 30          # etcd's DefaultQuotaBytes
MAX_QUOTA_BYTES = 8 << 30              # etcd's MaxQuotaBytes: above it etcd warns
KV_OVERHEAD = 256                      # etcd's kvOverhead: a key's metadata
LEASE_OVERHEAD = 64                    # etcd's leaseOverhead
_MAX_DEPTH = 16                        # deeper txns are refused by validation anyway


def _blen(v) -> int:
    return len(v) if isinstance(v, (bytes, str)) else 0


def _put_cost(body) -> int:
    if not isinstance(body, dict):
        return 0
    return KV_OVERHEAD + _blen(body.get("key")) + _blen(body.get("value"))


def _txn_cost(body, depth: int = 0) -> int:
    if not isinstance(body, dict) or depth > _MAX_DEPTH:
        return 0
    best = 0
    for branch in ("success", "failure"):
        ops = body.get(branch)
        total = 0
        for op in ops if isinstance(ops, list) else ():
            if not isinstance(op, dict) or len(op) != 1:
                continue
            (name, sub), = op.items()
            if name == "request_put":
                total += _put_cost(sub)
            elif name == "request_txn":
                total += _txn_cost(sub, depth + 1)
        best = max(best, total)
    return best


def cost(op: str, body) -> int:
    """The charge of a request against the quota, from its wire body (not validated yet: a
    malformed body costs what can be read of it, and its validation fails it later)."""
    if op == "put":
        return _put_cost(body)
    if op == "txn":
        return _txn_cost(body)
    if op == "lease_grant":
        return LEASE_OVERHEAD
    return 0


def no_space() -> NoSpace:
    return NoSpace(NO_SPACE_MESSAGE)


class BatchQuota:
    """The quota through one batch: the size estimate grows with each admitted request."""

    def __init__(self, quota_bytes: int, db_size: int, alarms):
        self.quota = quota_bytes
        self.size = db_size
        self.alarmed = NOSPACE in alarms
        self.raised = False            # this batch raised the alarm (write it, log it)

    def check(self, op: str, body) -> int:
        """Raises NoSpace if the request may not run; else returns its cost (pass it to admit()
        once it succeeded)."""
        c = cost(op, body)
        if c == 0:
            return 0
        if self.alarmed:
            raise no_space()
        if self.quota > 0 and self.size + c >= self.quota:
            self.alarmed = self.raised = True
            raise no_space()
        return c

    def admit(self, c: int):
        self.size += c
