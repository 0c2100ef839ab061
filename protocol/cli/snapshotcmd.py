"""``zwatch defrag`` and ``zwatch snapshot save|status|restore``, as etcdctl 3.4 runs them
(etcdctl/ctlv3/command/defrag_command.go, snapshot_command.go, printer*.go's DBStatus).

* ``defrag``: ``Finished defragmenting etcd member[ENDPOINT]`` on stdout, exit 0; a failure:
  ``Failed to defragment etcd member[ENDPOINT] (ERROR)`` on stderr, exit 1.  There is one writer,
  so one defrag serves every endpoint: it runs once, through the first fan-out that answers.
  ``-w json`` prints the reply's figures (zwatch's own: etcd's DefragmentResponse has none).
* ``snapshot save FILE``: ``Snapshot saved at FILE``; a failure exits 5 (ExitInterrupted).
* ``snapshot status FILE``: ``HASH, REVISION, TOTAL KEYS, TOTAL SIZE`` (hash in hex, size as
  go-humanize), ``-w table`` etcdctl's table, ``-w json`` {"hash","revision","totalKey","totalSize"}.
  The hash is zwatch's (actors/store/snapshot.py: CRC-32 of the tables' names, keys and values).
* ``snapshot restore FILE --data-dir DIR [--bump-revision N --mark-compacted]``: offline; refuses
  a non-empty DIR; DIR/data.mdb is a copy of FILE, checked to open as a zwatch store (and hash
  the same); the bump is etcdutl 3.5's (snapshot.bump_revision); prints what to do next.
Argument count errors: etcdctl's text, exit 128.
"""
from __future__ import annotations

import os
import shutil
import sys

from ..client import Client
from ..errors import ZwatchError
from .args import EXIT_BAD_ARGS, EXIT_ERROR, EXIT_BAD_FEATURE, EXIT_INTERRUPTED, CommandError
from .format import error_text, humanize_bytes, json_line, write_line


def add_defrag(p):
    p.add_argument("args", nargs="*")


def add_snapshot(p, add_globals_to):
    sub = p.add_subparsers(dest="snapshot_action", required=True, metavar="ACTION")
    for name, help_ in (("save", "Stores an etcd node backend snapshot to a given file"),
                        ("status", "Gets backend snapshot status of a given file"),
                        ("restore", "Restores an etcd member snapshot to an etcd directory")):
        q = sub.add_parser(name, help=help_)
        add_globals_to(q)
        q.add_argument("args", nargs="*")
        if name == "restore":
            q.add_argument("--data-dir", default="", help="path to the data directory (empty, or absent)")
            q.add_argument("--bump-revision", type=int, default=0, metavar="N",
                           help="how much to increase the latest revision after restore (etcdutl 3.5's flag)")
            q.add_argument("--mark-compacted", action="store_true",
                           help="mark the latest revision after restore as compacted (required with "
                                "--bump-revision > 0): resumed watches are canceled and re-list")


def cmd_defrag(a, c: Client):
    # etcdctl 3.4's defrag ignores arguments (checked: `etcdctl defrag x` defragments, exit 0).
    ep = c.endpoint or a.endpoint_names[0]
    try:
        r = c.defrag()
    except ZwatchError as exc:                  # etcdctl's line, without its "Error: "
        print(f"Failed to defragment etcd member[{ep}] ({error_text(exc)})", file=sys.stderr)
        return EXIT_ERROR
    if a.write_out == "json":
        json_line({"header": {"revision": r.header.revision}, "db_size_before": r.db_size_before,
                   "db_size_after": r.db_size_after, "took_ms": r.took_ms})
    else:
        write_line(f"Finished defragmenting etcd member[{ep}]")
    return 0


def _one_file(a, what: str) -> str:
    if len(a.args) != 1:
        raise CommandError(what, EXIT_BAD_ARGS)
    return a.args[0]


def cmd_snapshot(a, c: Client):
    """`snapshot save` (needs a client)."""
    path = _one_file(a, "snapshot save expects one argument")
    try:
        c.snapshot_save(path)
    except (ZwatchError, OSError) as exc:
        msg = error_text(exc) if isinstance(exc, ZwatchError) else str(exc)
        raise CommandError(msg, EXIT_INTERRUPTED) from None
    write_line(f"Snapshot saved at {path}")
    return 0


def table(header: list[str], rows: list[list[str]], right: bool = False) -> list[str]:
    """olekukonko/tablewriter as etcdctl 3.4 sets it up: headers upper-cased and centered, cells
    left-aligned (numbers right-aligned), one space of padding; right=True: every cell
    right-aligned (etcdctl's SetAlignment(ALIGN_RIGHT) of the endpoint and member tables)."""
    cols = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]   # rows may be none
    sep = "+" + "+".join("-" * (w + 2) for w in cols) + "+"

    def cell(s, w, numeric):
        return s.rjust(w) if numeric else s.ljust(w)

    def center(s, w):
        pad = w - len(s)
        return " " * (pad // 2) + s + " " * (pad - pad // 2)
    out = [sep, "| " + " | ".join(center(h.upper(), w) for h, w in zip(header, cols)) + " |", sep]
    for r in rows:
        out.append("| " + " | ".join(cell(s, w, right or s.isdigit()) for s, w in zip(r, cols)) + " |")
    out.append(sep)
    return out


def snapshot_offline(a) -> int:
    """`snapshot status` / `snapshot restore`: files only, no endpoint."""
    from zwatch.actors.store import snapshot    # lmdb: only these verbs need it
    if a.snapshot_action == "status":
        path = _one_file(a, "snapshot status requires exactly one argument")
        if a.write_out not in ("simple", "json", "table"):
            raise CommandError(f"{a.write_out} not supported as output format", EXIT_BAD_FEATURE)
        if not os.path.isfile(path):
            raise CommandError(f"stat {path}: no such file or directory")
        try:
            st = snapshot.status(path)
        except ZwatchError as exc:
            raise CommandError(error_text(exc)) from None
        row = [f"{st['hash']:x}", str(st["revision"]), str(st["total_keys"]), humanize_bytes(st["total_size"])]
        if a.write_out == "json":
            json_line({"hash": st["hash"], "revision": st["revision"], "totalKey": st["total_keys"],
                       "totalSize": st["total_size"]})
        elif a.write_out == "table":
            for line in table(["hash", "revision", "total keys", "total size"], [row], right=True):
                write_line(line)
        else:
            write_line(", ".join(row))
        return 0
    path = _one_file(a, "snapshot restore requires exactly one argument")
    data_dir = a.data_dir
    if not data_dir:
        raise CommandError("snapshot restore needs --data-dir DIR (an empty or absent directory)", EXIT_BAD_ARGS)
    if a.bump_revision < 0:
        raise CommandError("--bump-revision must not be negative", EXIT_BAD_ARGS)
    if (a.bump_revision > 0) != a.mark_compacted:      # etcdutl's rule
        raise CommandError("--mark-compacted is required if --bump-revision > 0, and allowed only then",
                           EXIT_BAD_ARGS)
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise CommandError(f"data-dir {data_dir!r} exists and is not empty: restore into an empty directory")
    try:
        st = snapshot.status(path)              # a zwatch store, or refused before anything is written
    except ZwatchError as exc:
        raise CommandError(error_text(exc)) from None
    os.makedirs(data_dir, exist_ok=True)
    target = os.path.join(data_dir, "data.mdb")
    shutil.copyfile(path, target + ".part")
    with open(target + ".part", "rb+") as f:
        os.fsync(f.fileno())
    os.rename(target + ".part", target)
    check = snapshot.status(target)
    if check["hash"] != st["hash"]:
        raise CommandError(f"restored {target} does not match {path} (hash {check['hash']:x} != {st['hash']:x})")
    write_line(f"Restored snapshot {path} (revision {st['revision']}, {st['total_keys']} keys, "
               f"{humanize_bytes(st['total_size'])}) into {target}")
    if a.bump_revision:
        old, new = snapshot.bump_revision(data_dir, a.bump_revision)
        for name in ("lock.mdb",):              # made by the bump's open: recreated at need
            try:
                os.unlink(os.path.join(data_dir, name))
            except FileNotFoundError:
                pass
        write_line(f"Revision bumped from {old} to {new} and marked compacted: watches resumed from an "
                   "older revision are canceled (compacted) and re-list.")
        after = f"continue from {new}"
    else:
        after = (f"go back to {st['revision']}: watchers must re-list (or restore with --bump-revision N "
                 "--mark-compacted)")
    write_line(f"Next: stop every actor (writer, syncer, every fan-out), point ZWATCH_DATA_DIR at {data_dir}, "
               f"start them all; clients reconnect by themselves. Revisions {after}. "
               "See docs/operations.md, 'Defrag, snapshots, restore'.")
    return 0
