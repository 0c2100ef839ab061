"""msgpack stays behind the wire modules (issue #9 item 1).

Only the modules that define the wire format encode or decode msgpack: protocol/messages.py
(client <-> fan-out), protocol/internal.py (actor <-> actor) and the store's on-disk layout.
Everything else under actors/, protocol/ and tools/ goes through their functions, so that a
message's layout is written in one place.  Tests may use msgpack freely (they pin the bytes).

The sources are parsed (ast), not imported: a function-local import counts as much as a
top-level one, and nothing is executed.
"""
from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ("actors", "protocol", "tools")
WIRE_MODULES = {
    "protocol/messages.py",
    "protocol/internal.py",
    "actors/store/layout.py",
}
INSTEAD = ("use zwatch.messages (encode_request, decode_server_frame, pack/unpack, ...) for the "
           "client wire or zwatch.internal (Publish, Pong, StatsRequest, decode_stats_reply, ...) "
           "for actor messages; add a function there if none fits")


def msgpack_import_lines(source: str, filename: str = "<source>") -> list[int]:
    """Line numbers where source imports msgpack: import / from-import (any alias, any depth)
    and importlib.import_module("msgpack") / __import__("msgpack")."""
    lines = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            modules = [str(node.args[0].value)] if called in ("import_module", "__import__") else []
        else:
            continue
        if any(m == "msgpack" or m.startswith("msgpack.") for m in modules):
            lines.append(node.lineno)
    return sorted(lines)


def _python_files():
    for top in SCANNED:
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, ROOT).replace(os.sep, "/"), path


def test_only_the_wire_modules_and_the_store_layout_import_msgpack():
    offenders = []
    for rel, path in sorted(_python_files()):
        if rel in WIRE_MODULES:
            continue
        with open(path, encoding="utf-8") as f:
            source = f.read()
        offenders += [f"{rel}:{line} imports msgpack: {INSTEAD}" for line in msgpack_import_lines(source, rel)]
    assert not offenders, "\n".join(offenders)


def test_the_scan_sees_every_way_of_importing_msgpack():
    source = (
        "import msgpack\n"
        "import os, msgpack as mp\n"
        "from msgpack import packb\n"
        "from msgpack.exceptions import ExtraData\n"
        "def f():\n"
        "    import msgpack\n"
        "importlib.import_module('msgpack')\n"
        "__import__('msgpack')\n"
        "import msgpack_numpy, zmq\n"          # another package whose name starts alike
        "from .msgpack import x\n"             # a relative module of ours, not the library
    )
    assert msgpack_import_lines(source) == [1, 2, 3, 4, 6, 7, 8]


def test_the_wire_modules_are_where_the_list_says():
    """A renamed wire module must not leave a stale entry that would excuse another file."""
    present = {rel for rel, _ in _python_files()}
    assert {"protocol/messages.py", "protocol/internal.py"} <= present
    assert {"actors/store/layout.py", "actors/store.py"} & present, "the store's layout module moved"
