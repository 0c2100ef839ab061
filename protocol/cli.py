"""``zwatch``: an etcdctl (v3.4) look-alike over the zwatch client, plus the actor launchers.

    zwatch put foo bar                  zwatch get foo --prefix -w json
    zwatch del foo --prev-kv            zwatch txn -i
    zwatch compaction 42                zwatch endpoint status
    zwatch watch foo --prefix -- sh -c 'echo $ETCD_WATCH_KEY'
    zwatch writer | syncer | fanout [--listen tcp://127.0.0.1:2379]

Output follows etcdctl 3.4 byte for byte where etcd has the same data: the simple printer writes
raw key/value bytes, ``-w json`` marshals like Go's encoding/json over etcd's protobuf structs
(snake_case tags, omitempty, bytes in base64, WatchResponse with its untagged Go field names).
Errors are one ``Error: CODE: message`` line on stderr and exit code 1; bad usage exits 2.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading

from . import settings
from .client import (Client, CreateRevision, Delete, DeleteRangeResponse, Get, ModRevision,
                     Put, PutResponse, RangeResponse, TxnResponse, Value, Version)
from .errors import InvalidArgument, ZwatchError

ACTORS = ("writer", "syncer", "fanout")
VERBS = ACTORS + ("put", "get", "del", "txn", "compaction", "endpoint", "watch")
# etcdctl's --sort-by names -> the wire's sort_target names.
SORT_TARGETS = {"KEY": "KEY", "VERSION": "VERSION", "CREATE": "CREATE", "MODIFY": "MOD", "VALUE": "VALUE"}


class UsageError(Exception):
    """Bad flags or arguments that argparse cannot see by itself: exit 2 like argparse."""


# ================================================================ output helpers
def _out(data: bytes | str = b""):
    # Raw bytes: keys and values are printed as stored, like etcdctl (no decoding).
    sys.stdout.buffer.write((data.encode() if isinstance(data, str) else data) + b"\n")


def _json_line(obj):
    # Go's encoding/json: compact, UTF-8 as is.
    _out(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))


def _print_kv(kv, value_only=False):
    if not value_only:
        _out(kv.key)
    _out(kv.value)


def go_quote(b: bytes) -> str:
    """Go's %q of a []byte (strconv.Quote): what etcdctl puts in ETCD_WATCH_KEY / _VALUE."""
    out = ['"']
    for ch in b.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:                 # an invalid UTF-8 byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def humanize_bytes(n: int) -> str:
    """go-humanize's Bytes (SI units), as etcdctl prints the db size."""
    if n < 10:
        return f"{n} B"
    e = min(int(math.floor(math.log(n, 1000))), 6)
    val = math.floor(n / 1000 ** e * 10 + 0.5) / 10
    return f"{val:.{0 if val >= 10 else 1}f} {('B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB')[e]}"


# ---------------------------------------------------------------- etcd JSON (encoding/json over pb structs)
def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def j_header(h) -> dict:
    return {"revision": h.revision} if h.revision else {}


def j_kv(kv) -> dict:
    d = {}
    if kv.key:
        d["key"] = _b64(kv.key)
    for name in ("create_revision", "mod_revision", "version"):
        if getattr(kv, name):
            d[name] = getattr(kv, name)
    if kv.value:
        d["value"] = _b64(kv.value)
    if kv.lease:
        d["lease"] = kv.lease
    return d


def j_range(r: RangeResponse) -> dict:
    d = {"header": j_header(r.header)}
    if r.kvs:
        d["kvs"] = [j_kv(kv) for kv in r.kvs]
    if r.more:
        d["more"] = True
    if r.count:
        d["count"] = r.count
    return d


def j_put(r: PutResponse) -> dict:
    d = {"header": j_header(r.header)}
    if r.prev_kv is not None:
        d["prev_kv"] = j_kv(r.prev_kv)
    return d


def j_del(r: DeleteRangeResponse) -> dict:
    d = {"header": j_header(r.header)}
    if r.deleted:
        d["deleted"] = r.deleted
    if r.prev_kvs:
        d["prev_kvs"] = [j_kv(kv) for kv in r.prev_kvs]
    return d


def j_txn(r: TxnResponse) -> dict:
    d = {"header": j_header(r.header)}
    if r.succeeded:
        d["succeeded"] = True
    if r.responses:
        # The oneof travels as Go's untagged interface field "Response" wrapping the tagged variant.
        d["responses"] = [{"Response": _j_op(x)} for x in r.responses]
    return d


def _j_op(r) -> dict:
    if isinstance(r, RangeResponse):
        return {"response_range": j_range(r)}
    if isinstance(r, PutResponse):
        return {"response_put": j_put(r)}
    if isinstance(r, DeleteRangeResponse):
        return {"response_delete_range": j_del(r)}
    return {"response_txn": j_txn(r)}


def j_watch(resp) -> dict:
    """clientv3.WatchResponse has no json tags: Go field names, no omitempty, nil Events -> null."""
    events = []
    for ev in resp.events:
        e = {}
        if ev.type == "DELETE":
            e["type"] = 1                          # PUT is 0 and omitted
        e["kv"] = j_kv(ev.kv)
        if ev.prev_kv is not None:
            e["prev_kv"] = j_kv(ev.prev_kv)
        events.append(e)
    return {"Header": j_header(resp.header), "Events": events or None,
            "CompactRevision": resp.compact_revision, "Canceled": resp.canceled, "Created": resp.created}


# ---------------------------------------------------------------- simple printer
def print_get(r: RangeResponse, value_only=False, count_only=False):
    if count_only:
        _out(str(r.count))                       # etcdctl refuses this in simple mode; a count is more useful
        return
    for kv in r.kvs:
        _print_kv(kv, value_only)


def print_put(r: PutResponse):
    _out("OK")
    if r.prev_kv is not None:
        _print_kv(r.prev_kv)


def print_del(r: DeleteRangeResponse):
    _out(str(r.deleted))
    for kv in r.prev_kvs:
        _print_kv(kv)


def print_txn(r: TxnResponse):
    _out("SUCCESS" if r.succeeded else "FAILURE")
    for x in r.responses:
        _out()
        {RangeResponse: print_get, PutResponse: print_put, DeleteRangeResponse: print_del}.get(
            type(x), print_txn)(x)


def print_watch(resp):
    for ev in resp.events:
        _out(ev.type)
        if ev.prev_kv is not None:
            _print_kv(ev.prev_kv)
        _print_kv(ev.kv)


# ================================================================ arguments
def parse_duration(s: str) -> float:
    """Seconds, or a Go-style duration: 500ms, 5s, 1m."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {s!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _add_globals(p, suppress: bool):
    # Defined on the main parser and again on every verb, so that `zwatch get k -w json` works as
    # with etcdctl's persistent flags; SUPPRESS keeps a verb from resetting a value given earlier.
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--endpoints", default=d(None),
                   help="comma-separated fan-out endpoints (default: $ZWATCH_ENDPOINTS or "
                        f"{','.join(settings.default('ZWATCH_ENDPOINTS'))})")
    p.add_argument("--command-timeout", type=parse_duration, default=d(5.0), metavar="SECONDS",
                   help="timeout of one request (default 5s)")
    p.add_argument("-w", "--write-out", choices=("simple", "json"), default=d("simple"))


def _add_range_args(p, with_extras: bool):
    p.add_argument("key")
    p.add_argument("range_end", nargs="?")
    p.add_argument("--prefix", action="store_true", help="operate on keys with the prefix KEY")
    p.add_argument("--from-key", action="store_true", help="operate on keys >= KEY")
    if with_extras:
        p.add_argument("--rev", type=int, default=0, help="read at this revision")


def _add_put(p):
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="(read from stdin when omitted, as etcdctl does)")
    p.add_argument("--prev-kv", action="store_true", help="print the previous key-value")


def _add_get(p):
    _add_range_args(p, True)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--keys-only", action="store_true")
    p.add_argument("--count-only", action="store_true")
    p.add_argument("--print-value-only", action="store_true")
    p.add_argument("--order", type=str.upper, choices=("ASCEND", "DESCEND"))
    p.add_argument("--sort-by", type=str.upper, choices=tuple(SORT_TARGETS))


def _add_del(p):
    _add_range_args(p, False)
    p.add_argument("--prev-kv", action="store_true", help="print the deleted key-values")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zwatch", description="etcdctl-compatible client and actor launcher")
    _add_globals(parser, False)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    def verb(name, help_):
        p = sub.add_parser(name, help=help_)
        _add_globals(p, True)
        p.set_defaults(parser=p)
        return p

    verb("writer", "run the writer actor")
    verb("syncer", "run the syncer actor")
    verb("fanout", "run a fan-out actor").add_argument(
        "--listen", help="client endpoint to bind (default tcp://127.0.0.1:$PORT, else $ZWATCH_FANOUT_ENDPOINT)")
    _add_put(verb("put", "put KEY VALUE"))
    _add_get(verb("get", "get KEY [RANGE_END]"))
    _add_del(verb("del", "delete KEY [RANGE_END]"))
    verb("txn", "a transaction read from stdin (etcdctl's format)").add_argument(
        "-i", "--interactive", action="store_true", help="prompt for each section")
    p = verb("compaction", "compact the history up to REV")
    p.add_argument("rev", type=int)
    p.add_argument("--physical", action="store_true", help="wait until the old revisions are removed")
    verb("endpoint", "endpoint status").add_argument("action", choices=("status",))
    p = verb("watch", "watch KEY [RANGE_END] [-- CMD ARGS...]")
    _add_range_args(p, True)
    p.add_argument("--prev-kv", action="store_true")
    p.add_argument("--progress-notify", action="store_true")
    return parser


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


# ================================================================ txn input (etcdctl's format)
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
    _add_put(sub.add_parser("put", add_help=False))
    _add_get(sub.add_parser("get", add_help=False))
    _add_del(sub.add_parser("del", add_help=False))
    return p


def parse_op(line: str, parser=None) -> dict:
    """One request line of a txn (`put k v`, `get k --prefix`, `del k`) -> a txn op."""
    try:
        a = (parser or _op_parser()).parse_args(argify(line))
        if a.verb == "put":
            if a.value is None:
                raise UsageError("put needs a value")
            return Put(os.fsencode(a.key), os.fsencode(a.value), prev_kv=a.prev_kv)
        key, kw = range_args(a)
        if a.verb == "get":
            return Get(key, **kw, **get_kwargs(a))
        return Delete(key, **kw, prev_kv=a.prev_kv)
    except (UsageError, ValueError) as exc:
        raise InvalidArgument(f"invalid txn request: {line} ({exc})") from None


def read_txn(stream, interactive=False) -> tuple[list, list, list]:
    """Compares, a blank line, success ops, a blank line, failure ops.  EOF ends a section too."""
    def section(prompt, parse):
        if interactive:
            _out(prompt)
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


# ================================================================ commands
def cmd_put(a, c: Client):
    value = a.value
    if value is None:
        value = sys.stdin.buffer.read()          # etcdctl: the value comes from stdin when omitted
    else:
        value = os.fsencode(value)
    r = c.put(os.fsencode(a.key), value, prev_kv=a.prev_kv)
    _json_line(j_put(r)) if a.write_out == "json" else print_put(r)
    return 0


def cmd_get(a, c: Client):
    if a.print_value_only and a.write_out != "simple":
        raise UsageError("print-value-only is only for `--write-out=simple`")
    key, kw = range_args(a)
    r = c.get(key, **kw, **get_kwargs(a))
    _json_line(j_range(r)) if a.write_out == "json" else print_get(r, a.print_value_only, a.count_only)
    return 0


def cmd_del(a, c: Client):
    key, kw = range_args(a)
    r = c.delete(key, **kw, prev_kv=a.prev_kv)
    _json_line(j_del(r)) if a.write_out == "json" else print_del(r)
    return 0


def cmd_txn(a, c: Client):
    compares, success, failure = read_txn(sys.stdin, a.interactive)
    r = c.txn(compares, success, failure)
    _json_line(j_txn(r)) if a.write_out == "json" else print_txn(r)
    return 0


def cmd_compaction(a, c: Client):
    c.compact(a.rev, physical=a.physical)
    _out(f"compacted revision {a.rev}")         # etcdctl prints this whatever -w says
    return 0


def cmd_endpoint(a, _c):
    # etcdctl asks every endpoint in --endpoints on its own, prints those that answered, then fails.
    # Asked in parallel so that dead endpoints cost one timeout, not one each.
    results = {}

    def ask(ep):
        c = Client([ep], timeout=a.command_timeout)
        try:
            results[ep] = c.status()
        except ZwatchError as exc:
            results[ep] = exc
        finally:
            c.close()

    threads = [threading.Thread(target=ask, args=(ep,), daemon=True) for ep in a.endpoint_names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows, failed = [], False
    for ep in a.endpoint_names:
        r = results.get(ep) or ZwatchError("no answer", "UNAVAILABLE")
        if isinstance(r, ZwatchError):
            print(f"Error: {r.code}: failed to get the status of endpoint {ep} ({r.message})", file=sys.stderr)
            failed = True
        else:
            rows.append((ep, r))
    if a.write_out == "json":
        out = []
        for ep, s in rows:
            st = {"header": j_header(s.header)}
            for name, v in (("version", s.version), ("dbSize", s.db_size), ("compactRevision", s.compact_revision)):
                if v:
                    st[name] = v
            out.append({"Endpoint": ep, "Status": st})
        _json_line(out)
    else:
        for ep, s in rows:
            _out(", ".join((ep, s.version, humanize_bytes(s.db_size), str(s.header.revision),
                            str(s.compact_revision))))
    return 1 if failed else 0


def _watch_env(resp, ev) -> dict:
    env = dict(os.environ)
    rev = str(resp.header.revision)
    # etcdctl's names and values (Go %q: quoted); the ZWATCH_ twins carry the raw text.
    env.update(ETCD_WATCH_REVISION=rev, ETCD_WATCH_EVENT_TYPE=f'"{ev.type}"', ETCD_WATCH_KEY=go_quote(ev.kv.key),
               ETCD_WATCH_VALUE=go_quote(ev.kv.value), ZWATCH_WATCH_REVISION=rev, ZWATCH_WATCH_EVENT_TYPE=ev.type)
    for name, b in (("ZWATCH_WATCH_KEY", ev.kv.key), ("ZWATCH_WATCH_VALUE", ev.kv.value)):
        # The environment cannot hold NUL bytes: such a value is passed quoted instead.
        env[name] = os.fsdecode(b) if b"\x00" not in b else go_quote(b)
    return env


def cmd_watch(a, c: Client):
    key, kw = range_args(a)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, lambda *_: stop.set())
        except ValueError:
            pass                                  # not the main thread (in-process tests): no handler
    w = c.watch(key, **kw, start_revision=a.rev, prev_kv=a.prev_kv, progress_notify=a.progress_notify)
    while not stop.is_set():
        try:
            resp = w.get(timeout=0.2)             # short waits so that a signal is seen promptly
        except queue.Empty:
            continue
        if resp is None:
            break
        if resp.canceled:
            if a.write_out == "json" and not a.exec:
                _json_line(j_watch(resp))
                sys.stdout.flush()
            print(f"watch was canceled ({resp.cancel_reason or 'canceled by the server'})", file=sys.stderr)
            return 1
        if resp.created or (resp.is_progress_notify and (a.write_out != "json" or a.exec)):
            continue
        if a.exec:
            for ev in resp.events:
                sys.stdout.flush()
                try:
                    rc = subprocess.call(a.exec, env=_watch_env(resp, ev))
                except OSError as exc:
                    rc = exc
                if rc != 0:
                    print(f"command {a.exec!r} error ({rc if isinstance(rc, OSError) else f'exit status {rc}'})",
                          file=sys.stderr)
                    return 1
            continue
        _json_line(j_watch(resp)) if a.write_out == "json" else print_watch(resp)
        sys.stdout.flush()
    return 0


COMMANDS = {"put": cmd_put, "get": cmd_get, "del": cmd_del, "txn": cmd_txn, "compaction": cmd_compaction,
            "endpoint": cmd_endpoint, "watch": cmd_watch}


def run_actor(a) -> int:
    # Every variable the actor reads is parsed before anything starts: a malformed one ends the
    # process with one line naming it, not a traceback from deep inside a constructor.
    try:
        settings.check(a.verb)
    except settings.SettingError as exc:
        print(f"zwatch {a.verb}: {exc}", file=sys.stderr)
        return 2
    # Imported here: the client verbs must not need the actors' dependencies (lmdb) loaded.
    if a.verb == "writer":
        from zwatch.actors.writer import main as actor_main
        return actor_main() or 0
    if a.verb == "syncer":
        from zwatch.actors.syncer import main as actor_main
        return actor_main() or 0
    from zwatch.actors.fanout import main as actor_main
    port = settings.get("PORT")                  # honcho's; writer and syncer ignore it
    listen = a.listen or (f"tcp://127.0.0.1:{port}" if port else None)
    return actor_main(listen) or 0


def split_exec(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`watch ... -- CMD ARGS`: everything after the first `--` is the command (etcdctl's rule).
    Other verbs keep `--` for argparse (`put -- -key value`)."""
    verb = next((x for x in argv if x in VERBS), None)
    if verb != "watch" or "--" not in argv[argv.index("watch"):]:
        return argv, None
    i = argv.index("--", argv.index("watch"))
    return argv[:i], argv[i + 1:]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    argv, exec_args = split_exec(argv)
    try:
        a = parser.parse_args(argv)
        if exec_args is not None and not exec_args:
            a.parser.error("bad number of arguments (found separator --, but no commands)")
    except SystemExit as exc:                    # argparse: --help (0) or bad usage (2)
        return exc.code if isinstance(exc.code, int) else 2
    a.exec = exec_args
    if a.verb in ACTORS:
        return run_actor(a)
    # Endpoints as given (etcdctl prints them so in `endpoint status`); bare host:port is fine.
    given = a.endpoints.split(",") if a.endpoints else settings.get("ZWATCH_ENDPOINTS")
    a.endpoint_names = [e.strip() for e in given if e.strip()]
    if not a.endpoint_names:
        return _usage(a.parser, "no endpoints given")
    client = None
    try:
        if a.verb != "endpoint":
            client = Client(a.endpoint_names, timeout=a.command_timeout)
        return COMMANDS[a.verb](a, client)
    except UsageError as exc:
        return _usage(a.parser, str(exc))
    except ZwatchError as exc:
        _flush_quietly()
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _flush_quietly()                         # `zwatch watch k | head -1`: the reader left
        return 0
    finally:
        if client is not None:
            client.close()
        _flush_quietly()


def _usage(parser, message: str) -> int:
    try:
        parser.error(message)                    # usage + message on stderr, SystemExit(2)
    except SystemExit as exc:
        return exc.code


def _flush_quietly():
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Nobody reads stdout any more: point it at /dev/null so that the interpreter's own
        # flush at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except ValueError:
        pass


if __name__ == "__main__":
    sys.exit(main())
