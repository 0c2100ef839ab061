"""``zwatch``: an etcdctl (v3.4) look-alike over the zwatch client; the verbs and their dispatch.

    zwatch put foo bar                  zwatch get foo --prefix -w json
    zwatch del foo --prev-kv            zwatch txn -i
    zwatch compaction 42                zwatch endpoint status
    zwatch watch foo --prefix -- sh -c 'echo $ETCD_WATCH_KEY'
    zwatch lease grant 10               zwatch put k v --lease=694d7ee5a1a1e40b
    zwatch lease timetolive 694d7ee5a1a1e40b --keys     zwatch lease keep-alive --once ID
    zwatch lock jobs/nightly -- make nightly            zwatch elect svc/leader 10.0.0.7
    zwatch user add root:secret; zwatch auth enable     zwatch --user alice get /app/ --prefix
    zwatch role grant-permission reader read /app/ --prefix         zwatch user grant-role alice reader
    zwatch writer | syncer | fanout [--listen tcp://127.0.0.1:2379]   (= python -m zwatch.actors ...)

Errors are one ``Error: ...`` line on stderr (etcd's text where etcd has one, ``CODE: message``
otherwise) and etcdctl's exit codes (args.py): 1 an error (also an unknown flag or command, as
cobra), 2 a refused login, 3 unreadable watch -i input, 4 an output format the verb does not
support (-w table for get), 5 a watch the server canceled, 128 a missing or extra argument.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import settings
from ..client import Client
from ..client.curve import CurveKeyError, resolve as resolve_curve
from ..errors import Compacted, FutureRevision, InvalidArgument, ZwatchError
from .. import __version__
from .args import (EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_BAD_FEATURE, EXIT_INVALID_INPUT, CommandError, Parser,
                   UsageError, add_del, add_elect, add_get, add_globals, add_lease, add_lock, add_put, get_kwargs,
                   put_lease_arg, range_args)
from .format import error_text, json_line, write_line
from .printers import FORMATS, printer
from .watchcmd import add_watch, check_watch_args, cmd_watch
from .hashwatchcmd import add_hash_watch, cmd_hash_watch
from .authcmd import add_auth, add_role, add_user, cmd_auth, cmd_role, cmd_user, login
from .keygen import KeygenError, add_keygen, cmd_keygen
from .logscmd import add_logs, cmd_logs
from .upcmd import add_up, cmd_up
from .probecmd import add_probe, cmd_probe
from .endpointcmd import add_endpoint, add_member, cmd_endpoint, cmd_member
from .leasecmd import LEASE_COMMANDS, cmd_elect, cmd_lock
from .cursorcmd import add_cursor, cmd_cursor
from .alarmcmd import add_alarm, cmd_alarm
from .snapshotcmd import add_defrag, add_snapshot, cmd_defrag, cmd_snapshot, snapshot_offline
from .timeparse import time_option
from .txnparse import read_txn

ACTORS = ("writer", "syncer", "fanout")
VERBS = ACTORS + ("put", "get", "del", "txn", "compaction", "endpoint", "watch", "lease", "lock", "elect",
                  "keygen", "auth", "user", "role", "alarm", "version", "logs", "cursor",
                  "defrag", "snapshot", "up", "probe", "hash-watch")
API_VERSION = "3.4"                 # the etcd API (and etcdctl) whose behaviour zwatch mirrors
EXEC_VERBS = ("watch", "lock")      # `VERB ... -- CMD ARGS` runs CMD


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zwatch", description="etcdctl-compatible client and actor launcher")
    add_globals(parser, False)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    def verb(name, help_):
        p = sub.add_parser(name, help=help_)
        add_globals(p, True)
        p.set_defaults(parser=p)
        return p

    verb("writer", "run the writer actor")
    verb("syncer", "run the syncer actor")
    fanout = verb("fanout", "run a fan-out actor")
    fanout.add_argument(
        "--listen", help="client endpoint to bind (default tcp://127.0.0.1:$PORT, else $ZWATCH_FANOUT_ENDPOINT)")
    fanout.add_argument("--metrics-port", type=int, metavar="N",   # several fan-outs on one host: one port each
                        help="serve Prometheus /metrics on port N (default $ZWATCH_FANOUT_METRICS_PORT; unset: off)")
    add_put(verb("put", "put KEY VALUE"))
    add_get(verb("get", "get KEY [RANGE_END]"))
    add_del(verb("del", "delete KEY [RANGE_END]"))
    verb("txn", "a transaction read from stdin (etcdctl's format)").add_argument(
        "-i", "--interactive", action="store_true", help="prompt for each section")
    p = verb("compaction", "compact the history up to REV")
    p.add_argument("rev", type=int)
    p.add_argument("--physical", action="store_true",
                   help="wait for compaction to physically remove all old revisions (etcdctl's flag: the writer "
                        "answers once the old records are gone from the store)")
    add_endpoint(verb("endpoint", "endpoint health|status|hashkv: each endpoint on its own"))
    add_member(verb("member", "member list: the fan-outs serving this cluster"))
    add_watch(verb("watch", "watch KEY [RANGE_END] [-- CMD ARGS...] | watch -i (watch lines from stdin)"))
    add_hash_watch(verb("hash-watch", "hash-watch KEY [RANGE_END] --from A [--to B]: the stream hash a verified "
                                      "watch's bookmark carries, computed from history"))
    verb("version", "print zwatch's version and the etcd API version it mirrors")
    add_lease(verb("lease", "lease grant|revoke|timetolive|list|keep-alive"), lambda q: add_globals(q, True))
    add_cursor(verb("cursor", "cursor list|get|put|del: durable named cursors (they hold compaction back)"),
               lambda q: add_globals(q, True))
    add_lock(verb("lock", "lock NAME [-- CMD ARGS]: hold a lock (while CMD runs)"))
    add_elect(verb("elect", "elect NAME PROPOSAL | elect -l NAME: campaign, or observe the leaders"))
    add_auth(verb("auth", "auth enable|disable|status"), lambda q: add_globals(q, True))
    add_user(verb("user", "user add|delete|get|list|passwd|grant-role|revoke-role"), lambda q: add_globals(q, True))
    add_role(verb("role", "role add|delete|get|list|grant-permission|revoke-permission"),
             lambda q: add_globals(q, True))
    add_alarm(verb("alarm", "alarm list|disarm: the NOSPACE alarm (DB size quota)"), lambda q: add_globals(q, True))
    add_defrag(verb("defrag", "defragment the store: give the LMDB file's free pages back to the disk"))
    add_snapshot(verb("snapshot", "snapshot save|status|restore FILE"), lambda q: add_globals(q, True))
    add_up(verb("up", "up [-c fanout=N] [-p BASEPORT]: writer, syncer and N fan-outs, restarted when they die"))
    add_probe(verb("probe", "probe live|ready --port N: an actor's /livez or /readyz (container health checks)"))
    add_logs(verb("logs", "logs [FILE...]: summarize the actors' log lines (health, rates, lag, compaction)"))
    add_keygen(verb("keygen", "keygen DIR NAME | keygen --cluster DIR [--client NAME...]: CURVE key files"))
    return parser


def cmd_put(a, c: Client):
    put_lease_arg(a.lease)                       # a bad ID is refused before stdin is read
    value = a.value
    if value is None:
        value = sys.stdin.buffer.read()          # etcdctl: the value comes from stdin when omitted
    else:
        value = os.fsencode(value)
    r = c.put(os.fsencode(a.key), value, prev_kv=a.prev_kv, lease=put_lease_arg(a.lease))
    printer(a.write_out, a.hex).put(r)
    return 0


def cmd_get(a, c: Client):
    if a.print_value_only and a.write_out != "simple":
        raise UsageError("print-value-only is only for `--write-out=simple`")
    key, kw = range_args(a)
    at = at_of(a)
    try:
        r = c.get(key, **kw, **get_kwargs(a), at=at)
    except (Compacted, FutureRevision) as exc:
        if at is None:
            raise
        raise CommandError(f"--at {a.at}: {exc.message}") from None
    printer(a.write_out, a.hex, a.print_value_only, a.count_only).get(r)
    return 0


def at_of(a):
    """get --at TIME as a datetime (None without it); UsageError for a bad one or with --rev."""
    try:
        return time_option(a.at, a.rev, "--at")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_del(a, c: Client):
    key, kw = range_args(a)
    r = c.delete(key, **kw, prev_kv=a.prev_kv)
    printer(a.write_out, a.hex).delete(r)
    return 0


def cmd_txn(a, c: Client):
    try:
        compares, success, failure = read_txn(sys.stdin, a.interactive)
    except InvalidArgument as exc:               # etcdctl: unreadable txn input is ExitInvalidInput
        raise CommandError(exc.message, EXIT_INVALID_INPUT) from None
    r = c.txn(compares, success, failure)
    printer(a.write_out, a.hex).txn(r)
    return 0


def cmd_compaction(a, c: Client):
    c.compact(a.rev, physical=a.physical)
    write_line(f"compacted revision {a.rev}")   # etcdctl prints this whatever -w says
    return 0


def cmd_lease(a, c: Client):
    return LEASE_COMMANDS[a.lease_action](a, c)


COMMANDS = {"put": cmd_put, "get": cmd_get, "del": cmd_del, "txn": cmd_txn, "compaction": cmd_compaction,
            "endpoint": cmd_endpoint, "member": cmd_member, "watch": cmd_watch, "lease": cmd_lease, "lock": cmd_lock, "elect": cmd_elect,
            "cursor": cmd_cursor,
            "auth": cmd_auth, "user": cmd_user, "role": cmd_role, "alarm": cmd_alarm,
            "defrag": cmd_defrag, "snapshot": cmd_snapshot, "hash-watch": cmd_hash_watch}


def check_args(a):
    """The argument checks etcdctl makes before it connects (exit 128 without a server)."""
    if a.verb == "watch":
        check_watch_args(a)
    elif a.verb in ("get", "del"):
        range_args(a)
    if a.verb == "get":
        at_of(a)
    if a.verb == "get" and a.print_value_only and a.write_out != "simple":
        raise UsageError("print-value-only is only for `--write-out=simple`")


def cmd_version(_a) -> int:
    # etcdctl's two lines, labelled honestly: zwatch's own version, then the etcd API it mirrors.
    write_line(f"zwatch version: {__version__}")
    write_line(f"API version: {API_VERSION}")
    return 0


def run_actor(a) -> int:
    """`zwatch writer|syncer|fanout`: an alias of `python -m zwatch.actors ...`."""
    from zwatch.actors.__main__ import run   # imported here: the client verbs need no lmdb
    return run(a.verb, getattr(a, "listen", None), getattr(a, "metrics_port", None))


def split_exec(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`watch ... -- CMD ARGS`, `lock NAME -- CMD ARGS`: everything after the first `--` is the
    command (etcdctl's rule).  Other verbs keep `--` for argparse (`put -- -key value`)."""
    verb = next((x for x in argv if x in VERBS), None)
    if verb not in EXEC_VERBS or "--" not in argv[argv.index(verb):]:
        return argv, None
    i = argv.index("--", argv.index(verb))
    return argv[:i], argv[i + 1:]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    argv, exec_args = split_exec(argv)
    try:
        a = parser.parse_args(argv)
        if exec_args is not None and not exec_args and a.verb == "watch":   # etcdctl's lock just holds
            a.parser.error("bad number of arguments (found separator --, but no commands)")
    except SystemExit as exc:                    # argparse: --help (0) or bad usage (Parser: 1 or 128)
        return exc.code if isinstance(exc.code, int) else 2
    a.exec = exec_args
    if a.verb in ACTORS:
        return run_actor(a)
    if a.verb == "version":                      # no endpoint, no client (etcdctl's asks no server either)
        return cmd_version(a)
    if a.write_out not in FORMATS:
        print("Error: unsupported output format", file=sys.stderr)
        return EXIT_BAD_FEATURE
    if a.verb == "logs":                         # no endpoint, no client: log lines only
        return cmd_logs(a)
    if a.verb == "up":                           # a supervisor of actor processes, no client
        return cmd_up(a)
    if a.verb == "probe":                        # HTTP to an actor's metrics port, no client
        return cmd_probe(a)
    if a.verb == "snapshot" and a.snapshot_action != "save":   # files only
        try:
            return snapshot_offline(a)
        except CommandError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return exc.exit_code
    if a.verb == "keygen":                       # no endpoint, no client: files only
        try:
            return cmd_keygen(a)
        except KeygenError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    # The client's warnings (a lease the server forgot, a failed keep-alive) stay off stderr unless
    # --debug, so that stderr holds only the `Error: ...` line scripts read (etcdctl's retry warnings
    # are its own logger's JSON lines, which are no part of its output either).
    if a.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    else:
        logging.getLogger("zwatch.client").addHandler(logging.NullHandler())
    # Endpoints as given (etcdctl prints them so in `endpoint status`); bare host:port is fine.
    given = a.endpoints.split(",") if a.endpoints else settings.get("ZWATCH_ENDPOINTS")
    a.endpoint_names = [e.strip() for e in given if e.strip()]
    if not a.endpoint_names:
        return _usage(a.parser, "no endpoints given")
    client = None
    try:
        check_args(a)
        resolve_curve(None, None)    # ZWATCH_CURVE_* checked once here: `endpoint` makes clients in threads
        if a.verb != "endpoint":
            # etcdctl's --user NAME[:PASSWORD] / --password (or ZWATCH_USER / ZWATCH_PASSWORD), asked for
            # when missing; anonymous without a user.
            user, password = login(a.user if a.user is not None else settings.get("ZWATCH_USER"),
                                   a.password if a.password is not None else settings.get("ZWATCH_PASSWORD"))
            client = Client(a.endpoint_names, timeout=a.command_timeout, user=user or "", password=password)
            if not client.wait_connected(a.dial_timeout):
                # --dial-timeout bounds the connect; --command-timeout then bounds the request.
                raise CommandError(f"UNAVAILABLE: no fan-out answered within the dial timeout ({a.dial_timeout:g}s): "
                                   f"{','.join(a.endpoint_names)}")
        return COMMANDS[a.verb](a, client)
    except UsageError as exc:
        _flush_quietly()
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS
    except CommandError as exc:
        _flush_quietly()
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except CurveKeyError as exc:                 # ZWATCH_CURVE_* naming a missing or unusable key
        _flush_quietly()
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS
    except ZwatchError as exc:
        _flush_quietly()
        print(f"Error: {error_text(exc)}", file=sys.stderr)
        # A login the fan-outs refused: etcdctl fails to make its client (ExitBadConnection).
        return EXIT_BAD_CONNECTION if client is not None and client.login_error is not None else 1
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
