"""Command-line arguments shared by the verbs and by the request lines of a txn (etcdctl's flags)."""
from __future__ import annotations

import argparse
import os
import re
import sys

from .. import settings

# etcdctl's --sort-by names -> the wire's sort_target names.
SORT_TARGETS = {"KEY": "KEY", "VERSION": "VERSION", "CREATE": "CREATE", "MODIFY": "MOD", "VALUE": "VALUE"}


class UsageError(Exception):
    """Bad arguments that argparse cannot see by itself: `Error: <message>`, exit 128 (etcdctl's
    ExitBadArgs)."""


def cobra_text(message: str) -> str:
    """argparse's `unrecognized arguments: --bogus` in cobra's words (`unknown flag: --bogus`)."""
    words = message.split(": ", 1)[1].split() if message.startswith("unrecognized arguments: ") else []
    if words and words[0].startswith("--"):
        return f"unknown flag: {words[0]}"
    if words and words[0].startswith("-") and len(words[0]) > 1:
        return f"unknown shorthand flag: {words[0][1]!r} in {words[0]}"
    return message


class Parser(argparse.ArgumentParser):
    """argparse with etcdctl's exit codes: a missing or extra argument is ExitBadArgs (128), an
    unknown flag, a bad flag value or an unknown command is cobra's error (1)."""

    def error(self, message):
        # An extra word is a bad number of arguments (128); an unknown flag (`--bogus`) is cobra's.
        extra = message.startswith("unrecognized arguments: ") and not message.split(": ", 1)[1].startswith("-")
        flag_error = not extra and (message.startswith(("unrecognized arguments", "argument ", "invalid choice"))
                                    or " invalid " in message)
        if flag_error:
            self.print_usage(sys.stderr)         # cobra prints the command's help with its error
        print(f"Error: {cobra_text(message)}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR if flag_error else EXIT_BAD_ARGS)


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
    p.add_argument("--dial-timeout", type=parse_duration, default=d(2.0), metavar="SECONDS",
                   help="how long to wait for a fan-out to open the session before the command's own "
                        "--command-timeout starts (default 2s; seconds or 500ms, 2s, 1m)")
    p.add_argument("-w", "--write-out", default=d("simple"), metavar="FORMAT",
                   help="simple, json or fields (table and protobuf: etcdctl's `not supported` error, exit 4)")
    p.add_argument("--hex", action="store_true", default=d(False),
                   help="print keys and values as hex (\\x66\\x6f\\x6f) in the simple format")
    p.add_argument("--debug", action="store_true", default=d(False),
                   help="print the client's own log lines (lease expiries, retries) on stderr")
    p.add_argument("--user", default=d(None), metavar="NAME[:PASSWORD]",
                   help="log in as this user (default $ZWATCH_USER); asks for the password when not given")
    p.add_argument("--password", default=d(None), help="the password of --user (default $ZWATCH_PASSWORD)")


def add_range_args(p, with_extras: bool, key_optional: bool = False):
    p.add_argument("key", nargs="?" if key_optional else None)
    p.add_argument("range_end", nargs="?")
    p.add_argument("--prefix", action="store_true", help="operate on keys with the prefix KEY")
    p.add_argument("--from-key", action="store_true", help="operate on keys >= KEY")
    if with_extras:
        p.add_argument("--rev", type=int, default=0, help="read at this revision")


def add_put(p):
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="(read from stdin when omitted, as etcdctl does)")
    p.add_argument("--prev-kv", action="store_true", help="print the previous key-value")
    p.add_argument("--lease", default="0", metavar="ID", help="lease ID (in hex) to attach the key to")


def add_get(p):
    add_range_args(p, True)
    p.add_argument("--at", metavar="TIME",
                   help="read the state as of TIME (after every revision committed at or before it): ISO 8601, "
                        "'10 minutes ago', '2h ago', Unix seconds (not with --rev)")
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


# ---------------------------------------------------------------- lease, lock, elect (etcdctl's rules)
# etcdctl's exit codes (etcdctl/ctlv3/command/error.go) where scripts see them.
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2     # what etcdctl returns for a failed timetolive / list / keep-alive
EXIT_INVALID_INPUT = 3      # txn / watch -i input that cannot be read
EXIT_BAD_FEATURE = 4        # a valid flag with an unsupported value (-w table for get)
EXIT_INTERRUPTED = 5        # a watch the server canceled (compacted revision)
EXIT_IO = 6
EXIT_STREAM_DIVERGED = 7    # watch --verify: a bookmark's hash is not the hash of the events received
EXIT_BAD_ARGS = 128


class CommandError(Exception):
    """etcdctl's ExitWithError: one ``Error: <message>`` line on stderr and this exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def go_parse_int(s: str, base: int) -> int:
    """Go's strconv.ParseInt(s, base, 64): an optional sign and digits, no 0x prefix or
    underscores (those need base 0); raises ValueError with Go's message."""
    from .format import go_quote
    digits = "0123456789abcdef"[:base]
    body = s[1:] if s[:1] in "+-" else s
    if not body or any(ch not in digits for ch in body.lower()):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(os.fsencode(s))}: invalid syntax")
    n = int(s, base)
    if not INT64_MIN <= n <= INT64_MAX:
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(os.fsencode(s))}: value out of range")
    return n


def lease_id_arg(s: str) -> int:
    """A lease ID argument in hex, as etcdctl reads it (leaseFromArgs)."""
    try:
        return go_parse_int(s, 16)
    except ValueError as exc:
        raise CommandError(f"bad lease ID arg ({exc}), expecting ID in Hex", EXIT_BAD_ARGS) from None


def put_lease_arg(s: str) -> int:
    """put --lease=ID (hex), etcdctl's getPutOp."""
    try:
        return go_parse_int(s, 16)
    except ValueError as exc:
        raise CommandError(f"bad lease ID ({exc}), expecting ID in Hex", EXIT_BAD_ARGS) from None


def ttl_arg(s: str) -> int:
    try:
        return go_parse_int(s, 10)
    except ValueError as exc:
        raise CommandError(f"bad TTL ({exc})", EXIT_BAD_ARGS) from None


def add_lease(p, add_globals_to):
    # The positionals are collected as given and checked by the verb, so that a missing or
    # extra argument gets etcdctl's message and exit code (128) rather than argparse's.
    sub = p.add_subparsers(dest="lease_action", required=True, metavar="ACTION")

    def action(name, help_):
        q = sub.add_parser(name, help=help_)
        add_globals_to(q)
        q.add_argument("args", nargs="*")
        return q

    action("grant", "grant TTL: create a lease")
    action("revoke", "revoke ID: revoke a lease (deletes its keys)")
    action("timetolive", "timetolive ID: granted and remaining TTL").add_argument(
        "--keys", action="store_true", help="list the keys attached to the lease")
    action("list", "list every lease")
    action("keep-alive", "keep-alive ID: keep a lease alive until interrupted").add_argument(
        "--once", action="store_true", help="renew once and exit")


def add_lock(p):
    p.add_argument("args", nargs="*", metavar="NAME [CMD ARGS]")
    p.add_argument("--ttl", type=int, default=10, help="TTL of the lock's lease (etcdctl: 10)")


def add_elect(p):
    p.add_argument("args", nargs="*", metavar="NAME [PROPOSAL]")
    p.add_argument("-l", "--listen", action="store_true", help="observe the leaders instead of campaigning")
