"""`zwatch watch`: etcdctl 3.4's watch command (etcdctl/ctlv3/command/watch_command.go).

Each response is handled in etcdctl's order (printWatchCh): a canceled one says so on stderr
(`watch was canceled (REASON)`), a progress notification prints `progress notify: REV`, then the
response is printed in the -w format, then `-- CMD ARGS` runs once per event with etcdctl's
ETCD_WATCH_REVISION / _EVENT_TYPE / _KEY / _VALUE (Go %q-quoted, as etcdctl sets them) plus
zwatch's unquoted ZWATCH_WATCH_* twins; a command that fails ends the watch with
`command ["CMD" "ARG"] error (exit status N)` and exit 1.  A watch the server ends (a compacted
revision) exits 5 with `Error: watch is canceled by the server` (ExitInterrupted).  SIGINT and
SIGTERM end a watch with exit 0 (etcdctl dies of the signal).

`watch --cursor NAME [--cursor-ttl S]` (zwatch's, SPEC.md 6.2): the watch starts after the durable
cursor NAME's revision (the cursor is created over the watched range at the current revision if
it does not exist), and the cursor is advanced after each response is printed and its command
ran: a `zwatch watch --cursor` killed and started again prints nothing twice that it had
committed, and misses nothing (at least once: the response being printed when it died comes
again).

`watch -i` reads `watch [flags] KEY [RANGE_END] [-- CMD ARGS]` and `progress` lines from stdin
(etcdctl's watchInteractiveFunc): each watch prints as it goes; the end of stdin ends the command
with etcdctl's `Error: Error reading watch request line: EOF` (exit 3).
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

from ..client import Client
from ..errors import (STREAM_DIVERGED, Compacted, FutureRevision, PermissionDenied, StreamDiverged, Unauthenticated,
                      ZwatchError)
from .args import (EXIT_BAD_ARGS, EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_STREAM_DIVERGED, CommandError, UsageError,
                   add_range_args)
from .args import cobra_text, range_args
from .authcmd import watch_refused
from .format import go_quote, write_line
from .printers import printer
from .timeparse import time_option
from .txnparse import _RaisingParser, argify

COMPACTED_TEXT = "etcdserver: mvcc: required revision has been compacted"   # clientv3's ErrCompacted


def add_watch(p):
    add_range_args(p, True, key_optional=True)   # -i reads the keys from stdin
    p.add_argument("--prev-kv", action="store_true", help="get the previous key-value pair before the event happens")
    p.add_argument("--progress-notify", action="store_true",
                   help="ask for periodic progress notifications (printed as `progress notify: REV`)")
    p.add_argument("--cursor", metavar="NAME",
                   help="resume after the durable cursor NAME and advance it after each printed response "
                        "(created over the watched range if new)")
    p.add_argument("--cursor-ttl", type=int, default=3600, metavar="SECONDS",
                   help="the cursor's TTL: dropped when not advanced for this long (default 3600)")
    p.add_argument("--progress-every", type=_seconds, default=0.0, metavar="S",
                   help="every S seconds ask for this watch's own progress (printed as `progress notify: REV` "
                        "when it arrives: at once while the watch is live, once it is live otherwise)")
    p.add_argument("--since", metavar="TIME",
                   help="watch from the first revision committed at or after TIME: ISO 8601, 'now', "
                        "'10 minutes ago', '2h ago', Unix seconds (not with --rev)")
    # Issue #16 (SPEC.md section 7.7): not etcdctl's.
    p.add_argument("--initial-state", action="store_true",
                   help="print the range's current key-values first (as PUT events), then `state complete: REV`, "
                        "then every change after REV")
    p.add_argument("--on-compacted", choices=("cancel", "resync", "digest"), default="cancel",
                   help="when the watch's next revision is compacted: cancel (etcd's; exit 5), resync (print `reset`, "
                        "the range's state, `state complete: REV`, go on) or digest (as resync, but only the "
                        "key-values changed since the last revision printed; the unchanged keys as UNCHANGED)")
    # Keys-only and value-predicate watches (zwatch only, SPEC.md 7.8): filtered by the server.
    p.add_argument("--keys-only", action="store_true",
                   help="events without values (the value and the previous value are empty)")
    p.add_argument("--value-prefix", default=None,
                   help="deliver only the PUTs whose value starts with this (DELETEs always come)")
    p.add_argument("--value-equals", default=None,
                   help="deliver only the PUTs whose value is exactly this (DELETEs always come)")
    p.add_argument("--max-value-bytes", type=int, default=None,
                   help="deliver only the PUTs whose value is at most this many bytes (DELETEs always come)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="read `watch ...` and `progress` lines from stdin (etcdctl's interactive mode)")
    p.add_argument("--verify", action="store_true",
                   help="a verified stream: check every bookmark's hash against the events received; on a "
                        "mismatch print why and exit 7 (SPEC.md 7.10; `zwatch hash-watch` computes the same hash)")
    p.add_argument("--verify-interval", type=float, default=5.0, metavar="S",
                   help="with --verify: ask for a bookmark every S seconds (default 5)")


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v <= 86400:       # nan fails both comparisons
        raise ValueError(f"{text!r}: seconds, > 0 and at most 86400")
    return v


_seconds.__name__ = "seconds"   # argparse's message: "invalid seconds value: '0'"


def watch_env(resp, ev) -> dict:
    env = dict(os.environ)
    rev = str(resp.header.revision)
    # etcdctl's names and values (Go %q: quoted); the ZWATCH_ twins carry the raw text.
    env.update(ETCD_WATCH_REVISION=rev, ETCD_WATCH_EVENT_TYPE=f'"{ev.type}"', ETCD_WATCH_KEY=go_quote(ev.kv.key),
               ETCD_WATCH_VALUE=go_quote(ev.kv.value), ZWATCH_WATCH_REVISION=rev, ZWATCH_WATCH_EVENT_TYPE=ev.type)
    for name, b in (("ZWATCH_WATCH_KEY", ev.kv.key), ("ZWATCH_WATCH_VALUE", ev.kv.value)):
        # The environment cannot hold NUL bytes: such a value is passed quoted instead.
        env[name] = os.fsdecode(b) if b"\x00" not in b else go_quote(b)
    return env


def go_strings(args: list[str]) -> str:
    """Go's %q of a []string: `["sh" "-c" "exit 3"]`."""
    return "[" + " ".join(go_quote(os.fsencode(x)) for x in args) + "]"


def is_progress_notify(resp) -> bool:
    # clientv3's WatchResponse.IsProgressNotify; a state's responses (section 7.7) are not.
    return (not resp.events and not resp.canceled and not resp.created and not resp.compact_revision
            and resp.header.revision != 0 and getattr(resp, "ext", None) is None)


class ExecFailed(Exception):
    """The command of `watch -- CMD` failed: etcdctl prints its line (no `Error: `) and exits 1."""


class WatchPrinter:
    """printWatchCh for one watch; several watches (watch -i) share the lock around stdout."""

    def __init__(self, display, exec_args, lock: threading.Lock):
        self.display, self.exec_args, self.lock = display, exec_args, lock

    def show(self, resp) -> None:
        """One response; raises ExecFailed when its command failed."""
        with self.lock:
            if resp.canceled:
                reason = COMPACTED_TEXT if resp.compact_revision else resp.cancel_reason
                sys.stderr.write(f"watch was canceled ({reason})\n")
                sys.stderr.flush()
            if is_progress_notify(resp):
                write_line(f"progress notify: {resp.header.revision}")
            if resp.reset:
                write_line("reset")            # drop what you printed so far: a state follows
            for key in resp.unchanged_keys:
                write_line("UNCHANGED")         # a digest: this key is as last printed
                write_line(os.fsdecode(key) if b"\x00" not in key else go_quote(key))
            self.display.watch(resp)
            if resp.state_complete:
                write_line(f"state complete: {resp.header.revision}")
            sys.stdout.flush()
            for ev in resp.events if self.exec_args else ():
                try:
                    rc = subprocess.call(self.exec_args, env=watch_env(resp, ev))
                    # Go's exec.ExitError texts.
                    err = f"exit status {rc}" if rc > 0 else f"signal: {signal.strsignal(-rc).lower()}" if rc else ""
                except FileNotFoundError:
                    err = f"exec: {go_quote(os.fsencode(self.exec_args[0]))}: executable file not found in $PATH"
                except OSError as exc:
                    err = f"fork/exec {self.exec_args[0]}: {(exc.strerror or str(exc)).lower()}"
                sys.stdout.flush()
                if err:
                    raise ExecFailed(f"command {go_strings(self.exec_args)} error ({err})")


def _err(lock, message: str):
    with lock:                                   # one write: watches of watch -i print from threads
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def _watch_range(w_args):
    if w_args.prefix and w_args.range_end is not None:     # etcdctl's getWatchChan
        raise UsageError("`range_end` and `--prefix` are mutually exclusive")
    return range_args(w_args)


def _open(c: Client, w_args, cursor=None):
    if cursor is not None:
        return cursor.watch(prev_kv=w_args.prev_kv, progress_notify=w_args.progress_notify)
    key, kw = _watch_range(w_args)
    since = since_of(w_args)
    try:
        return c.watch(key, **kw, start_revision=w_args.rev, prev_kv=w_args.prev_kv,
                       progress_notify=w_args.progress_notify, start_time=since,
                       initial_state=w_args.initial_state, on_compacted=w_args.on_compacted,
                       verify=getattr(w_args, "verify", False), keys_only=w_args.keys_only,
                       value_prefix=w_args.value_prefix, value_equals=w_args.value_equals,
                       max_value_bytes=w_args.max_value_bytes)
    except (Compacted, FutureRevision) as exc:
        if since is None:
            raise
        raise CommandError(f"--since {w_args.since}: {exc.message}") from None


def since_of(w_args):
    """--since TIME as a datetime (None without it); UsageError for a bad one or with --rev."""
    try:
        return time_option(getattr(w_args, "since", None), w_args.rev, "--since")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cursor(c: Client, a):
    """The durable cursor of `watch --cursor NAME`, over the watched range (None without it)."""
    if not getattr(a, "cursor", None):
        return None
    key, kw = _watch_range(a)
    return c.cursor(a.cursor, key, ttl=a.cursor_ttl, **kw)


def _display(a):
    return printer(a.write_out, a.hex)


def check_watch_args(a):
    """etcdctl checks the arguments before it connects (exit 128)."""
    if a.interactive:
        return
    if a.key is None:
        raise CommandError("bad number of arguments", EXIT_BAD_ARGS)
    if a.cursor and (a.rev or getattr(a, "since", None)):
        raise CommandError("`--cursor` and `--rev`/`--since` are mutually exclusive: a cursor's watch starts after it",
                           EXIT_BAD_ARGS)
    try:
        _watch_range(a)
        since_of(a)
    except UsageError as exc:
        raise CommandError(str(exc), EXIT_BAD_ARGS) from None


def cmd_watch(a, c: Client):
    if a.interactive:
        return cmd_watch_interactive(a, c)
    check_watch_args(a)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, lambda *_: stop.set())
        except ValueError:
            pass                                  # not the main thread (in-process tests): no handler
    try:
        cursor = _cursor(c, a)
        w = _open(c, a, cursor)
    except (PermissionDenied, Unauthenticated) as exc:
        if c.login_error is not None:
            raise                                 # the login itself: etcdctl's exit 2
        return watch_refused(a, exc.code, exc.message)
    out = WatchPrinter(_display(a), a.exec, threading.Lock())
    every = getattr(a, "progress_every", 0.0)
    next_progress = time.monotonic() + every
    if a.verify:
        # Bookmarks are what carries the hash: ask for one every --verify-interval seconds.
        threading.Thread(target=_ask_bookmarks, args=(c, a.verify_interval, stop), daemon=True).start()
    while not stop.is_set():
        if every and time.monotonic() >= next_progress:
            next_progress = time.monotonic() + every
            try:
                w.request_progress()             # its notification arrives on w, printed below
            except ZwatchError:
                pass                             # ended meanwhile (its cancel follows) or the fan-out is moving
        try:
            resp = w.get(timeout=0.2)             # short waits so that a signal is seen promptly
        except queue.Empty:
            continue
        except StreamDiverged as exc:
            return _diverged(exc)
        if resp is None:
            break
        if resp.canceled and resp.cancel_code == STREAM_DIVERGED:
            continue                              # its error (StreamDiverged) follows
        if a.verify and resp.stream_hash is not None:
            # Checked by the client: say so on stderr (stdout stays etcdctl's), with the hash
            # `zwatch hash-watch --from START --to REV` prints for the same range.
            print(f"verified: revision {resp.header.revision}, stream hash {resp.stream_hash.hex()} "
                  f"(events since revision {resp.stream_start})", file=sys.stderr, flush=True)
            if not a.progress_notify:
                continue                          # our own bookmarks are not printed as progress
        if resp.canceled and resp.cancel_code:    # the user may no longer read the range
            return watch_refused(a, resp.cancel_code, resp.cancel_reason, resp)
        if resp.created:
            continue                              # clientv3 does not hand the created response over
        try:
            out.show(resp)
        except ExecFailed as exc:
            print(exc, file=sys.stderr)
            return 1
        if cursor is not None:
            cursor.commit_response(resp)          # printed (and its command ran): consumed
        if resp.canceled:
            break
    if stop.is_set():
        return 0
    raise CommandError("watch is canceled by the server", EXIT_INTERRUPTED)


def _ask_bookmarks(c: Client, interval: float, stop: threading.Event):
    while not stop.wait(max(0.05, interval)):
        try:
            c.request_progress()
        except ZwatchError:
            pass                                  # a failover: the next round asks again


def _diverged(exc: StreamDiverged) -> int:
    print(f"Error: {exc.message}", file=sys.stderr, flush=True)
    return EXIT_STREAM_DIVERGED


def _line_parser():
    p = _RaisingParser(prog="watch", add_help=False)
    add_watch(p)
    return p


def cmd_watch_interactive(a, c: Client):
    lock = threading.Lock()
    display = _display(a)

    def pump(w, out: WatchPrinter, cursor=None):
        try:
            for resp in w:
                if not resp.created:
                    out.show(resp)
                    if cursor is not None:
                        cursor.commit_response(resp)
        except ExecFailed as exc:            # its command failed: etcdctl's os.Exit(1) from the goroutine
            _err(lock, str(exc))
            sys.stdout.flush()
            os._exit(1)
        except ZwatchError as exc:
            _err(lock, f"watch was canceled ({exc.message})")

    while True:
        raw = sys.stdin.readline()
        if not raw:
            raise CommandError("Error reading watch request line: EOF", EXIT_INVALID_INPUT)
        line = raw[:-1] if raw.endswith("\n") else raw
        args = argify(line)
        if not args:
            _err(lock, f"Invalid command: {line} (watch and progress supported)")
            continue
        if args[0] == "progress":
            c.request_progress()
            continue
        if args[0] != "watch":
            _err(lock, f"Invalid command {line} (only support watch)")
            continue
        if len(args) < 2:
            _err(lock, f"Invalid command {line} (command type or key is not provided)")
            continue
        words, exec_args = args[1:], None
        if "--" in words:
            i = words.index("--")
            words, exec_args = words[:i], words[i + 1:]
            if not exec_args:
                raise CommandError("bad number of arguments (found separator --, but no commands)", EXIT_BAD_ARGS)
        try:
            w_args = _line_parser().parse_intermixed_args(words)   # flags between KEY and RANGE_END
        except UsageError as exc:
            raise CommandError(cobra_text(str(exc)), EXIT_BAD_ARGS) from None
        if w_args.key is None:
            raise CommandError("bad number of arguments", EXIT_BAD_ARGS)
        if w_args.cursor and w_args.rev:
            _err(lock, f"Invalid command {line} (`--cursor` and `--rev` are mutually exclusive)")
            continue
        try:
            cursor = _cursor(c, w_args)
            w = _open(c, w_args, cursor)
        except (UsageError, ZwatchError) as exc:
            _err(lock, f"Invalid command {line} ({exc})")
            continue
        threading.Thread(target=pump, args=(w, WatchPrinter(display, exec_args, lock), cursor), daemon=True).start()
