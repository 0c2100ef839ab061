"""etcdctl's txn input: compares, a blank line, success requests, a blank line, failure requests."""
from __future__ import annotations

import argparse
import os
import re
import sys

from ..client import CreateRevision, Delete, Get, ModRevision, Put, Value, Version
from ..errors import InvalidArgument
from .args import CommandError, UsageError, add_del, add_get, add_put, get_kwargs, put_lease_arg, range_args
from .format import write_line

_QUOTED = r'"(?:[^"\\]|\\.)*"|`[^`]*`'
_COMPARE = re.compile(rf"^([a-z]+)\(\s*({_QUOTED})\s*\)\s*(!=|=|<|>)\s*({_QUOTED})$")
_ESCAPES = {"a": b"\a", "b": b"\b", "f": b"\f", "n": b"\n", "r": b"\r", "t": b"\t", "v": b"\v",
            "\\": b"\\", '"': b'"', "'": b"'"}


def go_unquote(s: str) -> bytes:
    """A Go quoted string ("..." with Go escapes, or `raw`) -> bytes (\\x escapes are bytes, not runes)."""
    if s.startswith("`"):
        return s[1:-1].replace("\r", "").encode()
    body, out, i = s[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        e = body[i + 1:i + 2]
        if e in _ESCAPES:
            out += _ESCAPES[e]
            i += 2
        elif e == "x":
            out.append(int(body[i + 2:i + 4], 16))
            i += 4
        elif e in ("u", "U"):
            n = 4 if e == "u" else 8
            out += chr(int(body[i + 2:i + 2 + n], 16)).encode()
            i += 2 + n
        elif e and e in "01234567":
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        else:
            raise ValueError(f"bad escape \\{e}")
    return bytes(out)


def parse_compare(line: str) -> dict:
    """etcdctl's `target("key") op "value"` with target ver[sion], c[reate], m[od], val[ue]."""
    m = _COMPARE.match(line)
    if not m:
        raise InvalidArgument(f"malformed comparison: {line}")
    target, key, op, val = m.groups()
    try:
        key, val = go_unquote(key), go_unquote(val)
        builder = {"ver": Version, "version": Version, "c": CreateRevision, "create": CreateRevision,
                   "m": ModRevision, "mod": ModRevision, "val": Value, "value": Value}.get(target)
        if builder is None:
            raise InvalidArgument(f"malformed comparison: {line} (unknown target {target})")
        t = builder(key)
        rhs = val if builder is Value else int(val.decode())
    except ValueError as exc:
        raise InvalidArgument(f"malformed comparison: {line} ({exc})") from None
    return {"=": t.__eq__, "!=": t.__ne__, "<": t.__lt__, ">": t.__gt__}[op](rhs)


def argify(line: str) -> list[str]:
    """etcdctl's argify: whitespace-separated words, "double" (Go escapes) or 'single' quoted."""
    out = []
    for w in re.findall(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^\'"\s]\S*[^\'"\s]?', line):
        if w.startswith("'"):
            w = w[1:-1]
        elif w.startswith('"'):
            w = os.fsdecode(go_unquote(w))
        out.append(w)
    return out


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _op_parser() -> argparse.ArgumentParser:
    p = _RaisingParser(prog="txn", add_help=False)
    sub = p.add_subparsers(dest="verb", required=True)
    add_put(sub.add_parser("put", add_help=False))
    add_get(sub.add_parser("get", add_help=False))
    add_del(sub.add_parser("del", add_help=False))
    return p


def parse_op(line: str, parser=None) -> dict:
    """One request line of a txn (`put k v`, `get k --prefix`, `del k`) -> a txn op."""
    try:
        a = (parser or _op_parser()).parse_args(argify(line))
        if a.verb == "put":
            if a.value is None:
                raise UsageError("put needs a value")
            return Put(os.fsencode(a.key), os.fsencode(a.value), prev_kv=a.prev_kv, lease=put_lease_arg(a.lease))
        key, kw = range_args(a)
        if a.verb == "get":
            return Get(key, **kw, **get_kwargs(a))
        return Delete(key, **kw, prev_kv=a.prev_kv)
    except (UsageError, CommandError, ValueError) as exc:
        raise InvalidArgument(f"invalid txn request: {line} ({exc})") from None


def read_txn(stream, interactive=False) -> tuple[list, list, list]:
    """Compares, a blank line, success ops, a blank line, failure ops.  EOF ends a section too."""
    def section(prompt, parse):
        if interactive:
            write_line(prompt)
            sys.stdout.flush()
        items = []
        for raw in iter(stream.readline, ""):
            line = raw.strip()
            if not line:
                break
            items.append(parse(line))
        return items

    op_parser = _op_parser()
    compares = section("compares:", parse_compare)
    success = section("success requests (get, put, del):", lambda ln: parse_op(ln, op_parser))
    failure = section("failure requests (get, put, del):", lambda ln: parse_op(ln, op_parser))
    return compares, success, failure
