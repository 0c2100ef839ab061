"""etcdctl's -w printers for put / get / del / txn / watch: simple (with --hex), json, fields, and
the formats etcdctl refuses for these verbs (table, protobuf), chosen once per command like
etcdctl's global `display` (etcdctl/ctlv3/command/printer*.go).

The fields printer is printer_fields.go line for line: `"Name" : value`, strings in Go's %q, the
header's four fields (zwatch has no cluster, member or raft term: those print 0, as etcd prints
them in the headers of a txn's inner responses).  A format etcdctl does not support for a verb
fails when the response is printed, after the request was done (etcdctl's printerUnsupported:
`Error: table not supported as output format`, exit 4).
"""
from __future__ import annotations

from ..client import DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse
from .args import EXIT_BAD_FEATURE, CommandError
from .format import (go_quote, j_del, j_put, j_range, j_txn, j_watch, json_line, print_del, print_get, print_put,
                     print_txn, print_watch, write_line)

FORMATS = ("simple", "json", "fields", "table", "protobuf")   # what -w accepts (etcdctl's list)


class Simple:
    def __init__(self, is_hex=False, value_only=False, count_only=False):
        self.is_hex, self.value_only, self.count_only = is_hex, value_only, count_only

    def put(self, r):
        print_put(r, self.is_hex)

    def get(self, r):
        print_get(r, self.value_only, self.count_only, self.is_hex)

    def delete(self, r):
        print_del(r, self.is_hex)

    def txn(self, r):
        print_txn(r, self.is_hex)

    def watch(self, resp):
        print_watch(resp, self.is_hex)


class Json:
    """encoding/json over the protobuf structs (format.py's j_* functions); --hex changes nothing."""

    def put(self, r):
        json_line(j_put(r))

    def get(self, r):
        json_line(j_range(r))

    def delete(self, r):
        json_line(j_del(r))

    def txn(self, r):
        json_line(j_txn(r))

    def watch(self, resp):
        json_line(j_watch(resp))


def _line(name: str, value) -> None:
    # Go's fmt.Println(`"Name" :`, v): bools as true/false, ints in decimal.
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    write_line(f'"{name}" : {text}')


class Fields:
    """printer_fields.go; --hex changes nothing (the fields printer quotes the raw bytes)."""

    def _hdr(self, h):
        _line("ClusterID", 0)
        _line("MemberID", 0)
        _line("Revision", h.revision)
        _line("RaftTerm", 0)

    def _kv(self, pfx: str, kv):
        write_line(f'"{pfx}Key" : {go_quote(kv.key)}')
        _line(f"{pfx}CreateRevision", kv.create_revision)
        _line(f"{pfx}ModRevision", kv.mod_revision)
        _line(f"{pfx}Version", kv.version)
        write_line(f'"{pfx}Value" : {go_quote(kv.value)}')
        _line(f"{pfx}Lease", kv.lease)

    def put(self, r):
        self._hdr(r.header)
        if r.prev_kv is not None:
            self._kv("Prev", r.prev_kv)

    def get(self, r):
        self._hdr(r.header)
        for kv in r.kvs:
            self._kv("", kv)
        _line("More", bool(r.more))
        _line("Count", r.count)

    def delete(self, r):
        self._hdr(r.header)
        _line("Deleted", r.deleted)
        for kv in r.prev_kvs:
            self._kv("Prev", kv)

    def txn(self, r):
        self._hdr(r.header)
        _line("Succeeded", bool(r.succeeded))
        for x in r.responses:
            if isinstance(x, DeleteRangeResponse):
                self.delete(x)
            elif isinstance(x, PutResponse):
                self.put(x)
            elif isinstance(x, RangeResponse):
                self.get(x)
            elif isinstance(x, TxnResponse):   # etcdctl 3.4 prints an inner txn as %+v: no stable text
                write_line('"Unknown" : "ResponseTxn"')

    def watch(self, resp):
        self._hdr(resp.header)
        for ev in resp.events:
            _line("Type", ev.type)
            if ev.prev_kv is not None:
                self._kv("Prev", ev.prev_kv)
            self._kv("", ev.kv)


class Unsupported:
    """A format etcdctl knows but does not print these responses in: the request was done, the
    printing fails (exit 4, ExitBadFeature)."""

    def __init__(self, name: str):
        self.name = name

    def _fail(self, _r):
        raise CommandError(f"{self.name} not supported as output format", EXIT_BAD_FEATURE)

    put = get = delete = txn = watch = _fail


def printer(write_out: str, is_hex: bool = False, value_only: bool = False, count_only: bool = False):
    """The printer of -w FORMAT (main() refused unknown names before any request)."""
    if write_out == "json":
        return Json()
    if write_out == "fields":
        return Fields()
    if write_out in ("table", "protobuf"):
        return Unsupported(write_out)
    return Simple(is_hex, value_only, count_only)
