"""`zwatch cursor list|get|put|del`: durable named cursors (SPEC.md 6.2; not in etcdctl).

    zwatch cursor put billing orders/ --prefix --ttl 3600     create (at the current revision) or refresh
    zwatch cursor put billing orders/ --prefix --ttl 3600 --rev 42    advance to 42 (never back)
    zwatch cursor list                                          every cursor with its lag
    zwatch cursor get billing          zwatch cursor del billing

The simple format prints one line per cursor, fields as `name=value` (greppable, stable order):
``NAME revision=R lag_revisions=N lag_seconds=S ttl=T ttl_remaining=X key=K range_end=E``;
-w json prints the wire's map (keys base64, as etcdctl prints keys in JSON).
`zwatch watch --cursor NAME` (watchcmd.py) watches from a cursor and advances it.
"""
from __future__ import annotations

import base64
import os

from ..client import Client
from ..client.types import CursorInfo
from .args import EXIT_BAD_ARGS, CommandError, range_args
from .format import json_line, write_line


def add_cursor(p, add_globals_to):
    sub = p.add_subparsers(dest="cursor_action", required=True, metavar="ACTION")

    def action(name, help_):
        q = sub.add_parser(name, help=help_)
        add_globals_to(q)
        return q

    action("list", "every cursor, with its lag (revisions and seconds) and remaining TTL")
    action("get", "get NAME: one cursor").add_argument("name")
    action("del", "del NAME: drop a cursor (compaction may pass it)").add_argument("name")
    q = action("put", "put NAME KEY [RANGE_END] --ttl S [--rev R]: create, refresh or advance a cursor")
    q.add_argument("name")
    q.add_argument("key")
    q.add_argument("range_end", nargs="?")
    q.add_argument("--prefix", action="store_true", help="a cursor over the keys with the prefix KEY")
    q.add_argument("--from-key", action="store_true", help="a cursor over the keys >= KEY")
    q.add_argument("--ttl", type=int, required=True, help="seconds it lives without being advanced or refreshed")
    q.add_argument("--rev", type=int, default=0,
                   help="advance it to this revision (never back; default: unchanged, or the current one when new)")


def _text(b: bytes) -> str:
    return os.fsdecode(b)


def cursor_line(ci) -> str:
    return (f"{ci.name} revision={ci.revision} lag_revisions={ci.lag_revisions} "
            f"lag_seconds={'-' if ci.lag_seconds is None else ci.lag_seconds} ttl={ci.ttl} "
            f"ttl_remaining={ci.ttl_remaining} key={_text(ci.key)} range_end={_text(ci.range_end)}")


def j_cursor(ci) -> dict:
    return {"name": ci.name, "key": base64.b64encode(ci.key).decode(), "range_end": base64.b64encode(ci.range_end).decode(),
            "revision": ci.revision, "ttl": ci.ttl, "ttl_remaining": ci.ttl_remaining,
            "lag_revisions": ci.lag_revisions, "lag_seconds": ci.lag_seconds,
            "created_us": ci.created_us, "updated_us": ci.updated_us}


def _show(a, header_revision: int, cursors: list):
    if a.write_out == "json":
        json_line({"header": {"revision": header_revision}, "cursors": [j_cursor(ci) for ci in cursors]})
    else:
        for ci in cursors:
            write_line(cursor_line(ci))


def cmd_cursor(a, c: Client) -> int:
    act = a.cursor_action
    if act == "list":
        b = c._call("cursor_list", {})        # the header too, for -w json
        _show(a, b.get("header", {}).get("revision", 0), [CursorInfo.from_wire(d) for d in b.get("cursors", ())])
        return 0
    if act == "get":
        r = c.cursor_get(a.name)
    elif act == "del":
        r = c.cursor_delete(a.name)
    else:
        if a.prefix and a.range_end is not None:
            raise CommandError("`range_end` and `--prefix` are mutually exclusive", EXIT_BAD_ARGS)
        key, kw = range_args(a)
        r = c.cursor_put(a.name, key, ttl=a.ttl, revision=a.rev, **kw)
    _show(a, r.header.revision, [r.cursor])
    return 0
