"""Layering (issue #9): the actors do not load the client, the client does not speak msgpack itself.

Imports are checked in a fresh interpreter (a subprocess), since this test process has long
imported everything.
"""
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_importing_the_actors_does_not_import_the_client():
    r = _run("import sys\n"
             "import zwatch.actors.fanout, zwatch.actors.syncer, zwatch.actors.writer\n"
             "loaded = sorted(m for m in sys.modules if m.startswith(('zwatch.client', 'zwatch.cli')))\n"
             "assert 'zwatch.client' not in sys.modules, loaded\n"
             "assert not loaded, loaded\n"
             "assert 'zwatch.actors.logsetup' in sys.modules and 'zwatch.logsetup' not in sys.modules\n")
    assert r.returncode == 0, r.stderr


def test_the_package_still_exports_the_client_names():
    r = _run("import sys, zwatch\n"
             "assert 'zwatch.client' not in sys.modules\n"
             "from zwatch import (Client, CreateRevision, Delete, Event, Get, KeyValue, ModRevision, Put, Txn,\n"
             "                    Value, Version, Watch, WatchResponse, ZwatchError, __version__)\n"
             "import zwatch.client as c\n"
             "assert Client is c.Client and Put is c.Put\n"
             "assert set(zwatch.__all__) <= set(dir(zwatch))\n"
             "from zwatch.client import DeleteRangeResponse, Header, RangeResponse, TxnResponse, PutResponse\n"
             "from zwatch.cli import main, go_quote, read_txn, j_watch\n")
    assert r.returncode == 0, r.stderr


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path).read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_client_and_cli_do_not_import_msgpack():
    """Only the wire modules (messages.py) encode and decode frames."""
    offenders = []
    for package in ("client", "cli"):
        folder = os.path.join(ROOT, "protocol", package)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py") and "msgpack" in _imports(os.path.join(folder, name)):
                offenders.append(f"protocol/{package}/{name}")
    assert offenders == []


def test_actor_launcher_checks_its_settings_before_starting():
    """`python -m zwatch.actors syncer` (and its alias `zwatch syncer`): a malformed variable is
    one line on stderr and exit 2, before any socket or file is opened."""
    env = dict(os.environ, ZWATCH_SYNC_CHUNK_BYTES="1MiB")
    for argv in (["-m", "zwatch.actors", "syncer"], ["-m", "zwatch.cli", "syncer"]):
        r = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("zwatch syncer: ZWATCH_SYNC_CHUNK_BYTES='1MiB'") and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "zwatch.actors", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "fanout" in r.stdout
