"""`zwatch auth|user|role` and `--user` / `--password` print what etcdctl 3.4 prints (issue #11).

Each scenario runs the same commands through a Transcript: every command's stdout, stderr and exit
code.  tests/system/fixtures/etcdctl_auth/<scenario>.txt is that transcript taken from etcdctl
3.4.23 on a fresh etcd; the tests run the scenario through `python -m zwatch.cli` on a fresh zwatch
cluster and compare after the same normalization (normalize()): the header fields only etcd has
(cluster_id, member_id, raft_term) are dropped, and etcdctl's noise on stderr is dropped (clientv3's
JSON log lines, the `stty` complaints of its password prompt when stdin is not a terminal).
Revisions are compared as they are: both servers start at revision 1 and auth changes are not
KV revisions in either.

etcdctl 3.4 has no `auth status` (3.5 added it): tests below hold zwatch's to 3.5's text.

The fixtures are regenerated (by hand, never by the tests) with etcd installed:
    .venv/bin/python tests/system/test_cli_auth.py capture [scenario...]
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

if __name__ == "__main__":      # run as a script (capture): support.py is in tests/
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import Transcript, capture_fixtures, clean_env, read_fixture, zwatch_transcript

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "etcdctl_auth")


ROOT = ("--user", "root:rootpw")


# ================================================================ the scenarios
def scenario_manage(t: Transcript):
    """Users, roles and permissions with auth disabled: every verb, simple and json, and the
    server's errors (exists, not found, not granted)."""
    t.run("user", "add", "root:rootpw")
    t.run("user", "add", "root:other")
    t.run("user", "add", "alice", "--interactive=false", stdin="alicepw\n")
    t.run("user", "add", "bob", "--new-user-password=bobpw", "-w", "json")
    t.run("user", "add", "carol", "--no-password")
    t.run("user", "add", "dave", stdin="davepw\ndavepw\n")                       # the prompt, twice
    t.run("user", "add", "erin", stdin="pw1\npw2\n")                             # they differ
    t.run("user", "add", "frank", stdin="\n")                                    # empty
    t.run("user", "add", ":pw")
    t.run("user", "list")
    t.run("user", "list", "-w", "json")
    t.run("user", "get", "alice")
    t.run("user", "get", "alice", "-w", "json")
    t.run("user", "get", "nobody")
    t.run("role", "add", "reader")
    t.run("role", "add", "reader")
    t.run("role", "add", "writer", "-w", "json")
    t.run("role", "add", "empty")
    t.run("role", "list")
    t.run("role", "list", "-w", "json")
    t.run("role", "get", "empty")
    t.run("role", "get", "empty", "-w", "json")
    t.run("role", "grant-permission", "reader", "read", "/a")
    t.run("role", "grant-permission", "reader", "read", "/p/", "--prefix")
    t.run("role", "grant-permission", "reader", "readwrite", "/z", "--from-key")
    t.run("role", "grant-permission", "reader", "write", "/r", "/s", "-w", "json")
    t.run("role", "grant-permission", "reader", "read", "", "--prefix")
    t.run("role", "grant-permission", "writer", "write", "", "--from-key")
    t.run("role", "grant-permission", "writer", "readwrite", "/w")
    t.run("role", "grant-permission", "nosuch", "read", "/a")
    t.run("role", "get", "reader")
    t.run("role", "get", "reader", "-w", "json")
    t.run("role", "get", "writer")
    t.run("role", "get", "nosuch")
    t.run("user", "grant-role", "alice", "reader")
    t.run("user", "grant-role", "alice", "writer", "-w", "json")
    t.run("user", "grant-role", "alice", "reader")
    t.run("user", "grant-role", "alice", "nosuch")
    t.run("user", "grant-role", "nobody", "reader")
    t.run("user", "get", "alice")
    t.run("user", "get", "alice", "--detail")
    t.run("user", "get", "alice", "--detail", "-w", "json")
    t.run("user", "revoke-role", "alice", "empty")
    t.run("user", "revoke-role", "alice", "writer")
    t.run("user", "revoke-role", "alice", "writer", "-w", "json")
    t.run("user", "revoke-role", "nobody", "writer")
    t.run("role", "revoke-permission", "reader", "/a")
    t.run("role", "revoke-permission", "reader", "/a")
    t.run("role", "revoke-permission", "reader", "/p/", "--prefix")
    t.run("role", "revoke-permission", "reader", "/z", "--from-key")
    t.run("role", "revoke-permission", "reader", "/r", "/s", "-w", "json")
    t.run("role", "revoke-permission", "nosuch", "/a")
    t.run("role", "get", "reader")
    t.run("user", "passwd", "alice", "--interactive=false", stdin="newpw\n")
    t.run("user", "passwd", "alice", "-w", "json", stdin="newpw2\nnewpw2\n")
    t.run("user", "passwd", "nobody", "--interactive=false", stdin="x\n")
    t.run("user", "grant-role", "bob", "writer")
    t.run("role", "delete", "writer")
    t.run("role", "delete", "writer")
    t.run("user", "get", "bob")
    t.run("role", "delete", "empty", "-w", "json")
    t.run("user", "delete", "carol")
    t.run("user", "delete", "carol")
    t.run("user", "delete", "bob", "-w", "json")
    t.run("user", "list")
    t.run("role", "list")


def scenario_enabled(t: Transcript):
    """auth enable (its preconditions), requests with and without a user, permissions denied,
    what a non-root user may still see, auth disable."""
    t.run("auth", "enable")                                    # no root user
    t.run("user", "add", "root:rootpw")
    t.run("user", "add", "alice:alicepw")
    t.run("role", "add", "reader")
    t.run("role", "grant-permission", "reader", "read", "/a/", "--prefix")
    t.run("role", "grant-permission", "reader", "readwrite", "/rw")
    t.run("user", "grant-role", "alice", "reader")
    t.run("put", "/a/1", "one")
    t.run("auth", "enable")                                    # etcdctl adds the root role itself
    t.run("user", "get", "root", *ROOT)
    t.run("role", "get", "root", *ROOT)
    t.run("auth", "enable", *ROOT)
    t.run("get", "/a/1")
    t.run("put", "k", "v")
    t.run("user", "list")
    t.run("get", "/a/1", "--user", "root:wrong")
    t.run("get", "/a/1", "--user", "nobody:pw")
    t.run("get", "/a/1", "--user", "root", "--password", "wrong")
    t.run("get", "/a/1", *ROOT)
    t.run("get", "/a/1", "--user", "root", "--password", "rootpw", "-w", "json")
    t.run("get", "/a/1", "--user", "root", stdin="rootpw\n")            # prompted
    t.run("get", "/a/1", "--user", "root", stdin="wrong\n")
    t.run("put", "/a/2", "two", *ROOT)
    t.run("get", "/a/", "--prefix", "--user", "alice:alicepw")
    t.run("get", "/a/1", "/a/3", "--user", "alice:alicepw")
    t.run("get", "/a/1", "--user", "alice:alicepw", "-w", "json")
    t.run("get", "/b", "--user", "alice:alicepw")
    t.run("get", "/a", "--prefix", "--user", "alice:alicepw")           # wider than /a/
    t.run("get", "/a/", "--from-key", "--user", "alice:alicepw")
    t.run("get", "", "--prefix", "--user", "alice:alicepw")
    t.run("put", "/a/1", "x", "--user", "alice:alicepw")
    t.run("put", "/rw", "x", "--user", "alice:alicepw")
    t.run("get", "/rw", "--user", "alice:alicepw")
    t.run("del", "/a/1", "--user", "alice:alicepw")
    t.run("del", "/rw", "--prev-kv", "--user", "alice:alicepw")
    t.run("txn", "--user", "alice:alicepw", stdin='value("/a/1") = "one"\n\nput /rw y\n\nput /b z\n\n')
    t.run("txn", "--user", "alice:alicepw", stdin='value("/a/1") = "one"\n\nput /rw y\n\nget /a/1\n\n')
    t.run("user", "list", "--user", "alice:alicepw")
    t.run("user", "get", "alice", "--user", "alice:alicepw")            # yourself: allowed
    t.run("user", "get", "root", "--user", "alice:alicepw")
    t.run("role", "get", "reader", "--user", "alice:alicepw")           # your own role: allowed
    t.run("role", "get", "root", "--user", "alice:alicepw")
    t.run("role", "add", "x", "--user", "alice:alicepw")
    t.run("user", "passwd", "alice", "--interactive=false", "--user", "alice:alicepw", stdin="pw\n")
    t.run("auth", "disable", "--user", "alice:alicepw")
    t.run("user", "delete", "root", *ROOT)                              # invalid auth management
    t.run("user", "revoke-role", "root", "root", *ROOT)
    t.run("user", "passwd", "alice", "--interactive=false", *ROOT, stdin="alicepw2\n")
    t.run("get", "/a/1", "--user", "alice:alicepw")
    t.run("get", "/a/1", "--user", "alice:alicepw2")
    t.run("role", "revoke-permission", "reader", "/a/", "--prefix", *ROOT)
    t.run("get", "/a/1", "--user", "alice:alicepw2")
    t.run("user", "delete", "alice", *ROOT)
    t.run("get", "/a/1", "--user", "alice:alicepw2")
    t.run("auth", "disable", *ROOT, "-w", "json")
    t.run("get", "/a/1")
    t.run("get", "/a/1", "--user", "root:wrong")
    t.run("auth", "disable")


def scenario_args(t: Transcript):
    """Arguments etcdctl refuses before asking the server (exit 128)."""
    for args in (("auth", "enable", "x"), ("auth", "disable", "x"),
                 ("user", "add"), ("user", "add", "a", "b"), ("user", "delete"), ("user", "get"),
                 ("user", "list", "x"), ("user", "passwd"), ("user", "grant-role", "a"),
                 ("user", "revoke-role", "a"), ("role", "add"), ("role", "delete"), ("role", "get"),
                 ("role", "list", "x"), ("role", "grant-permission", "r", "read"),
                 ("role", "grant-permission", "r", "bad", "/k"),
                 ("role", "grant-permission", "r", "read", "/k", "--prefix", "--from-key"),
                 ("role", "grant-permission", "r", "read", "/k", "/l", "--prefix"),
                 ("role", "grant-permission", "r", "read", "/k", "/l", "--from-key"),
                 ("role", "grant-permission", "r", "read", "", "--prefix", "--from-key"),
                 ("role", "revoke-permission", "r"),
                 ("role", "revoke-permission", "r", "/k", "/l", "--prefix")):
        t.run(*args)
    t.run("user", "add", "x:y", "--no-password")
    t.run("user", "get", "x")
    t.run("user", "add", "p", "--new-user-password=q", "--no-password")
    t.run("user", "get", "p")
    t.run("role", "grant-permission", "r", "READ", "/k")      # the type in capitals: no such role


def scenario_watch(t: Transcript):
    """A watch the user may not read, whole or by a prefix / a range wider than its permission: refused at once."""
    t.run("user", "add", "root:rootpw")
    t.run("user", "add", "alice:alicepw")
    t.run("role", "add", "reader")
    t.run("role", "grant-permission", "reader", "read", "/a/", "--prefix")
    t.run("user", "grant-role", "alice", "reader")
    t.run("auth", "enable")
    t.run("watch", "/b", "--user", "alice:alicepw")
    t.run("watch", "/a", "--prefix", "--user", "alice:alicepw")
    t.run("watch", "/a/", "/c", "--user", "alice:alicepw", "-w", "json")
    t.run("watch", "/b", "--user", "alice:wrong")
    t.run("watch", "/b")
    t.run("auth", "disable", *ROOT)


SCENARIOS = {"manage": scenario_manage, "enabled": scenario_enabled, "args": scenario_args, "watch": scenario_watch}


# ================================================================ normalization
def normalize(text: str) -> str:
    # Header fields only etcd has (zwatch's header is the revision alone, as in get / put -w json).
    text = re.sub(r'"cluster_id":\d+,"member_id":\d+,', "", text)
    return re.sub(r',"raft_term":\d+', "", text)


def transcript_text(t: Transcript) -> str:
    return normalize("\n".join(t.text) + "\n")


# ================================================================ the tests
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_auth_commands_print_what_etcdctl_prints(cluster, name):
    t = zwatch_transcript(cluster)
    SCENARIOS[name](t)
    assert transcript_text(t) == read_fixture(FIXTURES, name)


def _zwatch(cluster, *args, stdin="", env=None, **popen):
    argv = [sys.executable, "-m", "zwatch.cli", "--endpoints", cluster.fanout_eps[0], *args]
    return subprocess.run(argv, capture_output=True, text=True, input=stdin, timeout=60, env=clean_env(**(env or {})))


def test_auth_status_prints_what_etcdctl_3_5_prints(cluster):
    """etcdctl 3.4 has no `auth status`; zwatch's prints 3.5's text and JSON (zero fields omitted)."""
    r = _zwatch(cluster, "auth", "status")
    assert (r.stdout, r.stderr, r.returncode) == ("Authentication Status: false\nAuthRevision: 0\n", "", 0)
    assert _zwatch(cluster, "auth", "status", "-w", "json").stdout == '{"header":{"revision":1}}\n'
    for args in (("user", "add", "root:rootpw"), ("auth", "enable")):     # + role root and its grant: 4 changes
        assert _zwatch(cluster, *args).returncode == 0
    r = _zwatch(cluster, "auth", "status", *ROOT)
    assert (r.stdout, r.returncode) == ("Authentication Status: true\nAuthRevision: 4\n", 0)
    assert _zwatch(cluster, "auth", "status", "-w", "json", *ROOT).stdout == \
        '{"header":{"revision":1},"enabled":true,"authRevision":4}\n'
    r = _zwatch(cluster, "auth", "status", "x", *ROOT)
    assert (r.stderr, r.returncode) == ("Error: auth status command does not accept any arguments\n", 128)


def test_login_from_the_environment_and_compaction_needs_root(cluster):
    """ZWATCH_USER / ZWATCH_PASSWORD work as --user / --password; compaction needs root (etcd 3.4
    let any user compact: issue #11 asks for root, as etcd 3.5 does)."""
    for args in (("user", "add", "root:rootpw"), ("user", "add", "alice:alicepw"), ("auth", "enable")):
        assert _zwatch(cluster, *args).returncode == 0
    assert _zwatch(cluster, "put", "k", "v", env={"ZWATCH_USER": "root:rootpw"}).stdout == "OK\n"
    r = _zwatch(cluster, "get", "k", env={"ZWATCH_USER": "root", "ZWATCH_PASSWORD": "rootpw"})
    assert (r.stdout, r.returncode) == ("k\nv\n", 0)
    r = _zwatch(cluster, "get", "k", stdin="rootpw\n", env={"ZWATCH_USER": "root"})
    assert (r.stdout, r.returncode) == ("Password: \nk\nv\n", 0)          # asked, not echoed
    r = _zwatch(cluster, "get", "k", env={"ZWATCH_USER": "root:nope"})
    assert (r.stderr, r.returncode) == ("Error: etcdserver: authentication failed, invalid user ID or password\n", 2)
    assert "nope" not in r.stdout + r.stderr
    r = _zwatch(cluster, "compaction", "2", "--user", "alice:alicepw")
    assert (r.stderr, r.returncode) == ("Error: etcdserver: permission denied\n", 1)
    assert _zwatch(cluster, "compaction", "2", *ROOT).stdout == "compacted revision 2\n"


def test_a_watch_whose_permission_is_revoked_ends_as_etcdctl_ends_a_canceled_watch(cluster):
    """zwatch cancels the watch at the revocation (etcd 3.4 would go on delivering): the CLI prints
    etcdctl's words for a watch the server canceled for permission and exits 5."""
    for args in (("user", "add", "root:rootpw"), ("user", "add", "alice:alicepw"), ("role", "add", "reader"),
                 ("role", "grant-permission", "reader", "read", "/a/", "--prefix"),
                 ("user", "grant-role", "alice", "reader"), ("auth", "enable")):
        assert _zwatch(cluster, *args).returncode == 0
    assert _zwatch(cluster, "put", "/a/1", "one", *ROOT).stdout == "OK\n"           # revision 2
    argv = [sys.executable, "-m", "zwatch.cli", "--endpoints", cluster.fanout_eps[0], "watch", "/a/", "--prefix",
            "--rev", "2", "--user", "alice:alicepw"]
    watch = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert [watch.stdout.readline() for _ in range(3)] == ["PUT\n", "/a/1\n", "one\n"]    # live
        assert _zwatch(cluster, "role", "revoke-permission", "reader", "/a/", "--prefix", *ROOT).returncode == 0
        assert _zwatch(cluster, "put", "/a/2", "secret", *ROOT).returncode == 0
        out, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert out == ""                                                  # nothing after the revocation
    assert err == ("watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)\n"
                   "Error: watch is canceled by the server\n")
    assert watch.returncode == 5


# ================================================================ capturing the fixtures from etcd
if __name__ == "__main__":
    if sys.argv[1:2] != ["capture"]:
        sys.exit("usage: test_cli_auth.py capture [scenario...]")
    capture_fixtures(FIXTURES, SCENARIOS, sys.argv[2:] or list(SCENARIOS), transcript_text)
