"""Command-line arguments shared by the verbs and by the request lines of a txn (etcdctl's flags)."""
from __future__ import annotations

import argparse
import os
import re

from .. import settings

# etcdctl's --sort-by names -> the wire's sort_target names.
SORT_TARGETS = {"KEY": "KEY", "VERSION": "VERSION", "CREATE": "CREATE", "MODIFY": "MOD", "VALUE": "VALUE"}


class UsageError(Exception):
    """Bad flags or arguments that argparse cannot see by itself: exit 2 like argparse."""


def parse_duration(s: str) -> float:
    """Seconds, or a Go-style duration: 500ms, 5s, 1m."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {s!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def add_globals(p, suppress: bool):
    # Defined on the main parser and again on every verb, so that `zwatch get k -w json` works as
    # with etcdctl's persistent flags; SUPPRESS keeps a verb from resetting a value given earlier.
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--endpoints", default=d(None),
                   help="comma-separated fan-out endpoints (default: $ZWATCH_ENDPOINTS or "
                        f"{','.join(settings.default('ZWATCH_ENDPOINTS'))})")
    p.add_argument("--command-timeout", type=parse_duration, default=d(5.0), metavar="SECONDS",
                   help="timeout of one request (default 5s)")
    p.add_argument("-w", "--write-out", choices=("simple", "json"), default=d("simple"))


def add_range_args(p, with_extras: bool):
    p.add_argument("key")
    p.add_argument("range_end", nargs="?")
    p.add_argument("--prefix", action="store_true", help="operate on keys with the prefix KEY")
    p.add_argument("--from-key", action="store_true", help="operate on keys >= KEY")
    if with_extras:
        p.add_argument("--rev", type=int, default=0, help="read at this revision")


def add_put(p):
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="(read from stdin when omitted, as etcdctl does)")
    p.add_argument("--prev-kv", action="store_true", help="print the previous key-value")


def add_get(p):
    add_range_args(p, True)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--keys-only", action="store_true")
    p.add_argument("--count-only", action="store_true")
    p.add_argument("--print-value-only", action="store_true")
    p.add_argument("--order", type=str.upper, choices=("ASCEND", "DESCEND"))
    p.add_argument("--sort-by", type=str.upper, choices=tuple(SORT_TARGETS))


def add_del(p):
    add_range_args(p, False)
    p.add_argument("--prev-kv", action="store_true", help="print the deleted key-values")


def range_args(a) -> tuple[bytes, dict]:
    """etcdctl's key / range_end / --prefix / --from-key rules -> (key, Client keyword arguments)."""
    if a.prefix and a.from_key:
        raise UsageError("`--prefix` and `--from-key` cannot be set at the same time, choose one")
    if (a.prefix or a.from_key) and a.range_end is not None:
        raise UsageError("too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
    key = os.fsencode(a.key)                     # argv bytes back as given (surrogateescape)
    if not key and (a.prefix or a.from_key):
        return b"\x00", {"range_end": b"\x00"}  # clientv3: an empty prefix / from-key means every key
    if a.prefix:
        return key, {"prefix": True}
    if a.from_key:
        return key, {"from_key": True}
    return key, ({"range_end": os.fsencode(a.range_end)} if a.range_end is not None else {})


def get_kwargs(a) -> dict:
    # clientv3.WithSort: KEY+ASCEND is the natural order (sent as NONE); the server sorts ASCEND
    # by default when the target is not KEY.
    target = SORT_TARGETS[a.sort_by] if a.sort_by else "KEY"
    order = a.order or ("ASCEND" if target != "KEY" else "NONE")
    if target == "KEY" and order == "ASCEND":
        order = "NONE"
    return dict(revision=a.rev, limit=a.limit, keys_only=a.keys_only, count_only=a.count_only,
                sort_order=order, sort_target=target)
