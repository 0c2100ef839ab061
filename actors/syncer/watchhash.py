"""watch_hash (SPEC.md 7.10): the hash a verified watch's bookmark carries, computed from history.

For a watch spec (key, range_end, filters) started at start_revision, the stream hash of a
bookmark at revision R is the digest sum (zwatch.streamhash) of the events the watch is given
with revisions in [start_revision, R].  Computed here from the store's history alone, it is the
operator's independent check of a live stream: the same number, or a gap, a duplicate or a
divergence somewhere in between.

I/O-free but for the `view` it is handed (history(from, to, max_records=, max_bytes=) as the
syncer's batch uses it).  One request reads at most `max_records` records, in chunks of whole
revisions, and says how far it got (`through`): the hash is additive, so a caller hashes a long
interval piece by piece and adds the pieces (mod 2**128) without ever blocking the syncer for
long."""
from __future__ import annotations

from zwatch import streamhash

CHUNK_RECORDS = 10_000
CHUNK_BYTES = 16 << 20
MAX_RECORDS = 200_000      # per request: ~0.5 s of reading and hashing (docs/design.md)


def hash_history(view, spec, from_rev: int, to_rev: int, max_records: int = MAX_RECORDS,
                 chunk_records: int = CHUNK_RECORDS) -> tuple[int, int, int, int]:
    """-> (digest sum mod 2**128, events hashed, records read, through): every event of the spec
    with from_rev <= revision <= through is in the sum; through == to_rev unless max_records
    cut the read short (then through < to_rev, a whole revision boundary)."""
    key, end, bits = spec.key, spec.end, spec.filter_bits
    vf = spec.vfilter         # keys_only / value predicate: the events as the watch gets them
    total = events = records = 0
    cursor = from_rev
    digest = streamhash.digest
    while cursor <= to_rev and records < max_records:
        chunk = view.history(cursor, to_rev, max_records=min(chunk_records, max_records - records) or 1,
                             max_bytes=CHUNK_BYTES)
        if not chunk:
            cursor = to_rev + 1
            break
        for _main, _sub, t, kv, _nbytes in chunk:
            k = kv[0]
            if (k != key if end is None else not key <= k < end) or bits & (1 << t):
                continue
            if vf is not None:
                if not vf.passes(t, kv):
                    continue
                if vf.keys_only:
                    kv = [kv[0], kv[1], kv[2], kv[3], b"", kv[5]]
            total += digest(t, kv)
            events += 1
        records += len(chunk)
        cursor = chunk[-1][0] + 1       # history() returns whole revisions only
    return total % streamhash.MOD, events, records, min(cursor - 1, to_rev)
