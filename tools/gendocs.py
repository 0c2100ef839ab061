"""Write `.env.example` and the "Environment variables" table of docs/operations.md from
zwatch.settings, the one place where variables are declared.

    python -m zwatch.tools.gendocs            # rewrite both files in the repository
    python -m zwatch.tools.gendocs --check    # exit 1 and say what differs, write nothing
    python -m zwatch.tools.gendocs --table    # print the table only

tests/unit/test_settings.py runs the same comparison, so a declaration changed without
re-running this tool fails the unit tests.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys

from zwatch import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_EXAMPLE = os.path.join(ROOT, ".env.example")
OPERATIONS = os.path.join(ROOT, "docs", "operations.md")
TABLE_SECTION = "## Environment variables"
TABLE_HEADER = "| Variable | Default | Read by | Meaning |\n|---|---|---|---|\n"

ENV_EXAMPLE_HEAD = """\
# Every variable the zwatch actors and clients read, with its default.  Copy to .env (honcho reads
# it) or to /etc/zwatch/zwatch.env (systemd units).  Comments stay on their own lines: systemd has
# no inline comments.  Do not set PORT here: in .env it overrides `honcho -p`.
# Generated from protocol/settings.py by `python -m zwatch.tools.gendocs`: edit the declarations.
"""


def render_env_example() -> str:
    out = [ENV_EXAMPLE_HEAD]
    section = None
    for s in settings.SETTINGS:
        if not s.env_example:
            continue
        if s.section != section:
            section = s.section
            out.append(f"\n# --- {section}\n")
        out.append(f"# {s.doc}\n{s.name}={s.render_default()}\n")
    return "".join(out)


def render_table() -> str:
    rows = [TABLE_HEADER]
    for s in settings.SETTINGS:
        shown = "unset" if s.default is None else f"`{s.render_default()}`"
        rows.append(f"| `{s.name}` | {shown} | {s.render_read_by()} | {s.doc} |\n")
    return "".join(rows)


def table_span(text: str) -> tuple[int, int]:
    """Start and end offsets of the table under TABLE_SECTION (header row to last row)."""
    section = text.index(TABLE_SECTION)
    start = text.index("| Variable |", section)
    end = start
    for line in text[start:].splitlines(keepends=True):
        if not line.startswith("|"):
            break
        end += len(line)
    return start, end


def render_operations(current: str) -> str:
    start, end = table_span(current)
    return current[:start] + render_table() + current[end:]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def outdated() -> dict[str, tuple[str, str]]:
    """{path: (committed, generated)} for every file that differs from the declarations."""
    ops = _read(OPERATIONS)
    wanted = {ENV_EXAMPLE: (_read(ENV_EXAMPLE), render_env_example()),
              OPERATIONS: (ops, render_operations(ops))}
    return {path: pair for path, pair in wanted.items() if pair[0] != pair[1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zwatch.tools.gendocs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="report differences, write nothing")
    ap.add_argument("--table", action="store_true", help="print the docs table and exit")
    a = ap.parse_args(argv)
    if a.table:
        sys.stdout.write(render_table())
        return 0
    stale = outdated()
    for path, (old, new) in stale.items():
        rel = os.path.relpath(path, ROOT)
        if a.check:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       f"{rel} (committed)", f"{rel} (from protocol/settings.py)"))
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"wrote {rel}")
    return 1 if (a.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
