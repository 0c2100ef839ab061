"""`zwatch hash-watch KEY [RANGE_END] --from A [--to B]`: the stream hash of a verified watch,
computed from history (SPEC.md 7.10, the syncer's watch_hash).

It prints the very value a live `zwatch watch --verify` (or a client watch with verify=True) of
the same range and filters, started at revision A, carries in its bookmark at revision B: a
mismatch between the two says the live stream had a gap, a duplicate or a changed event, and
`hash-watch` over sub-intervals (the hash is a sum: intervals add up) finds where.
"""
from __future__ import annotations

from ..client import Client
from .args import CommandError, EXIT_BAD_ARGS, add_range_args, range_args
from .format import json_line, write_line


def add_hash_watch(p):
    add_range_args(p, False)
    p.add_argument("--from", dest="start", type=int, required=True, metavar="A",
                   help="the watch's start revision (the first revision the hash covers)")
    p.add_argument("--to", dest="to", type=int, default=0, metavar="B",
                   help="the bookmark's revision (the last revision it covers; default: the current one)")
    p.add_argument("--filters", default="", metavar="NOPUT,NODELETE",
                   help="the watch's filters (event types it does not get), comma separated")
    # The watch's keys-only / value predicate (SPEC.md 7.8): its events are hashed as delivered.
    p.add_argument("--keys-only", action="store_true", help="the watch is keys-only")
    p.add_argument("--value-prefix", default=None, help="the watch's value_prefix")
    p.add_argument("--value-equals", default=None, help="the watch's value_equals")
    p.add_argument("--max-value-bytes", type=int, default=None, help="the watch's max_value_bytes")


def cmd_hash_watch(a, c: Client) -> int:
    if a.start < 1:
        raise CommandError("--from must be a revision >= 1", EXIT_BAD_ARGS)
    filters = [f.strip().upper() for f in a.filters.split(",") if f.strip()]
    key, kw = range_args(a)
    r = c.watch_hash(key, **kw, filters=filters, start_revision=a.start, revision=a.to, keys_only=a.keys_only,
                     value_prefix=a.value_prefix, value_equals=a.value_equals, max_value_bytes=a.max_value_bytes)
    if a.write_out == "json":
        json_line({"header": {"revision": r.header.revision}, "hash": r.hash.hex(), "events": r.events,
                   "start_revision": r.start_revision, "revision": r.revision})
    else:
        write_line(f"{r.hash.hex()} {r.events} events in revisions [{r.start_revision}, {r.revision}]")
    return 0
