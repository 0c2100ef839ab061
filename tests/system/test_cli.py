"""The `zwatch` CLI: etcdctl 3.4's output, byte for byte, through the real script on a real cluster.

Parsing and formatting are unit-tested on cli.py's functions; everything else runs
`python -m zwatch.cli` in a subprocess, the way a user or a script calls it.
"""
from __future__ import annotations

import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import zwatch
from zwatch import cli
from zwatch.client import DeleteRangeResponse, Event, Header, KeyValue, PutResponse, RangeResponse, TxnResponse
from zwatch.client import WatchResponse
from zwatch.errors import InvalidArgument

from support import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZWATCH_", "ETCD"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def zw(ep, *args, stdin: str | None = None, timeout: float = 30, env=None) -> subprocess.CompletedProcess:
    """Run the CLI against endpoint `ep` (None: no --endpoints flag)."""
    argv = [sys.executable, "-m", "zwatch.cli"] + (["--endpoints", ep] if ep else []) + list(args)
    return subprocess.run(argv, input=stdin if stdin is not None else "", capture_output=True, text=True,
                          timeout=timeout, env=env or _env())


def ok(ep, *args, **kw) -> str:
    r = zw(ep, *args, **kw)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stdout


class Lines:
    """A long-running CLI process whose stdout lines are read with a deadline."""

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env or _env())
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))

    def take(self, n, timeout=15.0) -> list[str]:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.q.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"got {out} of {n} lines; stderr: {self._stderr()}") from None
        return out

    def _stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read()

    def stop(self, sig=signal.SIGINT, timeout=10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)


def watch_cmd(ep, *args):
    return [sys.executable, "-m", "zwatch.cli", "--endpoints", ep, "watch", *args]


# ================================================================ no server needed
def test_go_quote_matches_go_strconv_quote():
    assert cli.go_quote(b"foo") == '"foo"'
    assert cli.go_quote(b'a"b\\c') == '"a\\"b\\\\c"'
    assert cli.go_quote(b"\x00\x01\n\t\x7f") == '"\\x00\\x01\\n\\t\\x7f"'
    assert cli.go_quote("é€".encode()) == '"é€"'
    assert cli.go_quote(b"\xff\xfe") == '"\\xff\\xfe"'          # invalid UTF-8: byte escapes
    assert cli.go_quote("\u200b".encode()) == '"\\u200b"'        # not printable


def test_go_unquote_and_argify():
    assert cli.go_unquote('"a\\x00b\\n\\"q\\" \\u00e9"') == b'a\x00b\n"q" \xc3\xa9'
    assert cli.go_unquote("`raw \\n`") == b"raw \\n"
    assert cli.argify("put k \"a b\"  'c d' e") == ["put", "k", "a b", "c d", "e"]


def test_humanize_bytes_like_go_humanize():
    assert [cli.humanize_bytes(n) for n in (0, 9, 10, 999, 1500, 20480, 69632, 1 << 30)] == \
        ["0 B", "9 B", "10 B", "999 B", "1.5 kB", "20 kB", "70 kB", "1.1 GB"]


def test_parse_compare_etcdctl_syntax():
    assert cli.parse_compare('mod("k") > "0"') == \
        {"key": b"k", "range_end": b"", "target": "MOD", "result": "GREATER", "mod_revision": 0}
    assert cli.parse_compare('value("k") = "v 1"')["value"] == b"v 1"
    assert cli.parse_compare('val("k") != "x"')["result"] == "NOT_EQUAL"
    assert cli.parse_compare('ver("k") < "3"') == \
        {"key": b"k", "range_end": b"", "target": "VERSION", "result": "LESS", "version": 3}
    assert cli.parse_compare('create("\\x00k") = "0"')["key"] == b"\x00k"
    for bad in ('mod("k") > 0', 'mod(k) > "0"', 'size("k") = "1"', 'mod("k") >= "1"', 'version("k") = "x"'):
        with pytest.raises(InvalidArgument):
            cli.parse_compare(bad)


def test_read_txn_sections_and_ops():
    text = ('mod("k") > "0"\n\nput k "new value"\nget k --prefix --keys-only\n\n'
            "del k --prev-kv\nput x 'y z'\n")
    compares, success, failure = cli.read_txn(io.StringIO(text))
    assert [c["target"] for c in compares] == ["MOD"]
    assert success == [{"request_put": {"key": b"k", "value": b"new value", "prev_kv": False}},
                       {"request_range": {"key": b"k", "range_end": b"l", "keys_only": True}}]
    assert failure == [{"request_delete_range": {"key": b"k", "prev_kv": True}},
                       {"request_put": {"key": b"x", "value": b"y z", "prev_kv": False}}]
    # No compares, EOF without the final blank line: still three sections.
    assert cli.read_txn(io.StringIO("\nput a 1")) == ([], [{"request_put": {"key": b"a", "value": b"1",
                                                                             "prev_kv": False}}], [])
    with pytest.raises(InvalidArgument, match="invalid txn request"):
        cli.read_txn(io.StringIO("\nfrobnicate k\n"))
    with pytest.raises(InvalidArgument, match="invalid txn request"):
        cli.read_txn(io.StringIO("\nput k\n"))


def test_json_is_etcdctl_json():
    kv = KeyValue(b"foo", 2, 5, 4, b"bar")
    dump = lambda o: json.dumps(o, separators=(",", ":"))  # noqa: E731
    assert dump(cli.j_range(RangeResponse(Header(5), [kv], False, 1))) == \
        '{"header":{"revision":5},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":5,"version":4,' \
        '"value":"YmFy"}],"count":1}'
    assert dump(cli.j_range(RangeResponse(Header(5), [], False, 0))) == '{"header":{"revision":5}}'
    txn = TxnResponse(Header(6), True, [PutResponse(Header(6)), DeleteRangeResponse(Header(6), 1, [kv])])
    assert dump(cli.j_txn(txn)) == \
        '{"header":{"revision":6},"succeeded":true,"responses":[{"Response":{"ResponsePut":' \
        '{"header":{"revision":6}}}},{"Response":{"ResponseDeleteRange":{"header":{"revision":6},' \
        '"deleted":1,"prev_kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":5,"version":4,"value":"YmFy"}]}}}]}'
    assert dump(cli.j_txn(TxnResponse(Header(6), False, []))) == '{"header":{"revision":6}}'
    ev = WatchResponse(1, Header(7), [Event("DELETE", KeyValue(b"foo", 0, 7, 0, b""), kv)])
    assert dump(cli.j_watch(ev)) == \
        '{"Header":{"revision":7},"Events":[{"type":1,"kv":{"key":"Zm9v","mod_revision":7},"prev_kv":' \
        '{"key":"Zm9v","create_revision":2,"mod_revision":5,"version":4,"value":"YmFy"}}],' \
        '"CompactRevision":0,"Canceled":false,"Created":false}'
    assert dump(cli.j_watch(WatchResponse(1, Header(8)))) == \
        '{"Header":{"revision":8},"Events":null,"CompactRevision":0,"Canceled":false,"Created":false}'


def test_usage_errors_exit_like_etcdctl(capsys):
    # etcdctl 3.4.23: a missing/extra argument is ExitBadArgs (128), an unknown flag or command or a
    # bad flag value is cobra's 1, an unknown -w format ExitBadFeature (4).
    assert cli.main(["get"]) == 128
    assert cli.main(["watch"]) == 128
    assert cli.main(["get", "a", "--prefix", "--from-key"]) == 128
    assert cli.main(["get", "a", "b", "--prefix"]) == 128
    assert cli.main(["watch", "a", "b", "--prefix"]) == 128
    assert cli.main(["get", "a", "-w", "json", "--print-value-only"]) == 128
    assert cli.main(["watch", "a", "--"]) == 128
    assert cli.main(["-w", "yaml", "get", "a"]) == 4
    assert capsys.readouterr().err.endswith("Error: unsupported output format\n")
    assert cli.main(["compaction", "x"]) == 1
    assert cli.main(["get", "a", "--bogus"]) == 1
    assert cli.main(["get", "a", "--limit", "x"]) == 1
    assert cli.main(["nosuchverb"]) == 1
    assert cli.main(["--help"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_version_is_etcdctls_two_lines_honestly_labelled(capsys):
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out == f"zwatch version: {zwatch.__version__}\nAPI version: 3.4\n"


def test_hex_is_etcdctls_escaped_bytes():
    assert cli.format.hex_text(b"k1\x00\xff") == b"\\x6b\\x31\\x00\\xff"
    assert cli.format.hex_text(b"") == b""


def test_split_exec_only_for_watch():
    assert cli.split_exec(["watch", "k", "--rev", "3", "--", "echo", "--", "x"]) == \
        (["watch", "k", "--rev", "3"], ["echo", "--", "x"])
    assert cli.split_exec(["put", "--", "-k", "v"]) == (["put", "--", "-k", "v"], None)
    assert cli.split_exec(["-w", "json", "watch", "k"]) == (["-w", "json", "watch", "k"], None)


def test_global_flags_before_or_after_the_verb():
    p = cli.build_parser()
    a = p.parse_args(["-w", "json", "--endpoints", "h:1", "get", "k"])
    assert (a.write_out, a.endpoints, a.command_timeout) == ("json", "h:1", 5.0)
    a = p.parse_args(["--endpoints", "h:1", "get", "k", "-w", "json", "--command-timeout", "500ms"])
    assert (a.write_out, a.endpoints, a.command_timeout) == ("json", "h:1", 0.5)


def test_no_server_is_one_error_line_not_a_traceback():
    t0 = time.monotonic()
    r = zw(f"127.0.0.1:{free_port()}", "get", "foo", "--dial-timeout", "500ms", "--command-timeout", "30s")
    assert r.returncode == 1 and r.stdout == ""
    # --dial-timeout bounds the connect, whatever --command-timeout says.
    assert r.stderr.startswith("Error: UNAVAILABLE: no fan-out answered within the dial timeout (0.5s)")
    assert r.stderr.count("\n") == 1, r.stderr
    print(f"failed after {time.monotonic() - t0:.2f}s")


# ================================================================ against a cluster
def test_kv_commands_print_like_etcdctl(cluster):
    ep = cluster.fanout_eps[0]
    assert ok(ep, "put", "foo", "bar") == "OK\n"
    assert ok(ep, "put", "foo", "baz", "--prev-kv") == "OK\nfoo\nbar\n"
    assert ok(ep, "get", "foo") == "foo\nbaz\n"
    assert ok(ep, "get", "foo", "-w", "json") == \
        '{"header":{"revision":3},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,' \
        '"value":"YmF6"}],"count":1}\n'
    ok(ep, "put", "fob", "x")
    ok(ep, "put", "zed", "last")
    assert ok(ep, "get", "fo", "--prefix") == "fob\nx\nfoo\nbaz\n"
    assert ok(ep, "get", "fo", "--prefix", "--keys-only") == "fob\n\nfoo\n\n"
    assert ok(ep, "get", "fo", "--prefix", "--print-value-only") == "x\nbaz\n"
    assert ok(ep, "get", "fo", "--prefix", "--sort-by", "value", "--order", "DESCEND") == "fob\nx\nfoo\nbaz\n"
    assert ok(ep, "get", "fo", "--prefix", "--order", "DESCEND", "--limit", "1") == "foo\nbaz\n"
    assert ok(ep, "get", "fob", "--from-key", "--keys-only") == "fob\n\nfoo\n\nzed\n\n"
    assert ok(ep, "get", "", "--prefix", "--count-only") == "3\n"
    assert ok(ep, "get", "fo", "--prefix", "--limit", "1", "-w", "json") == \
        '{"header":{"revision":5},"kvs":[{"key":"Zm9i","create_revision":4,"mod_revision":4,"version":1,' \
        '"value":"eA=="}],"more":true,"count":2}\n'
    assert ok(ep, "get", "foo", "--rev", "2") == "foo\nbar\n"
    assert ok(ep, "get", "missing") == ""
    assert ok(ep, "put", "stdin-key", stdin="from\nstdin") == "OK\n"       # etcdctl: value from stdin
    assert ok(ep, "get", "stdin-key", "--print-value-only") == "from\nstdin\n"
    assert ok(ep, "del", "fo", "--prefix", "--prev-kv") == "2\nfob\nx\nfoo\nbaz\n"
    assert ok(ep, "del", "nothing") == "0\n"
    assert ok(ep, "del", "zed", "-w", "json") == '{"header":{"revision":8},"deleted":1}\n'
    assert ok(ep, "put", "k", "v", "-w", "json") == '{"header":{"revision":9}}\n'


def test_txn_from_stdin(cluster):
    ep = cluster.fanout_eps[0]
    ok(ep, "put", "k", "v1")                                                  # revision 2
    stdin = 'mod("k") > "0"\nvalue("k") = "v1"\n\nput k v2\nget k\n\nput k failed\n\n'
    assert ok(ep, "txn", stdin=stdin) == "SUCCESS\n\nOK\n\nk\nv2\n"
    assert ok(ep, "txn", stdin=stdin) == "FAILURE\n\nOK\n"                    # value is v2 now
    assert ok(ep, "get", "k", "--print-value-only") == "failed\n"
    out = ok(ep, "txn", "-w", "json", stdin='version("k") = "3"\n\ndel k --prev-kv\n\n\n')
    assert json.loads(out) == {"header": {"revision": 5}, "succeeded": True, "responses": [
        {"Response": {"ResponseDeleteRange": {"header": {"revision": 5}, "deleted": 1, "prev_kvs": [
            {"key": "aw==", "create_revision": 2, "mod_revision": 4, "version": 3, "value": "ZmFpbGVk"}]}}}]}
    out = ok(ep, "txn", "-i", stdin='create("k") = "0"\n\nput k new\n\n\n')
    assert out == ("compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
                   "SUCCESS\n\nOK\n")
    r = zw(ep, "txn", stdin='bogus("k") = "1"\n\n\n')
    assert r.returncode == 3 and r.stderr.startswith("Error: malformed comparison")      # ExitInvalidInput


def test_compaction_status_and_errors(cluster):
    ep = cluster.fanout_eps[0]
    for i in range(3):
        ok(ep, "put", "k", f"v{i}")                                          # revisions 2..4
    # etcdctl's columns: endpoint, ID, version, DB size, is leader, is learner, raft term, raft index
    # (the writer's revision), raft applied index (the fan-out's), errors
    line = ok(ep, "endpoint", "status")
    name, member, version, size, leader, learner, term, index, applied, errors = line.rstrip("\n").split(", ")
    assert (name, leader, learner, term, index, applied, errors) == (ep, "false", "false", "0", "4", "4", "")
    assert version and size.endswith("B") and int(member, 16) > 0
    assert ok(ep, "compaction", "3") == "compacted revision 3\n"
    r = zw(ep, "compaction", "3")                                             # etcd: already compacted
    assert r.returncode == 1 and r.stderr == "Error: etcdserver: mvcc: required revision has been compacted\n"
    assert ok(ep, "compaction", "4", "--physical", "-w", "json") == "compacted revision 4\n"
    r = zw(ep, "get", "k", "--rev", "2")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == "Error: etcdserver: mvcc: required revision has been compacted\n"
    r = zw(ep, "get", "k", "--rev", "99")
    assert r.returncode == 1 and r.stderr == "Error: etcdserver: mvcc: required revision is a future revision\n"
    (st,) = json.loads(ok(ep, "endpoint", "status", "-w", "json"))
    assert st["Endpoint"] == ep and st["Status"]["header"]["revision"] == 4
    assert st["Status"]["raftAppliedIndex"] == 4 and st["Status"]["dbSize"] >= st["Status"]["dbSizeInUse"] > 0
    # One endpoint down: the live one is printed, the dead one reported, exit 1.
    dead = f"127.0.0.1:{free_port()}"
    r = zw(f"{ep},{dead}", "endpoint", "status", "--command-timeout", "0.5")
    assert r.returncode == 1 and r.stdout.startswith(ep + ", ")
    assert r.stderr.startswith(f"Failed to get the status of endpoint {dead} (")


def test_watch_simple_and_json_output(cluster):
    ep = cluster.fanout_eps[0]
    ok(ep, "put", "w/a", "1")                                                # revision 2
    # --rev 2 replays history first, so no race with the watch's creation.
    simple = Lines(watch_cmd(ep, "w/", "--prefix", "--prev-kv", "--rev", "2"))
    js = Lines(watch_cmd(ep, "w/a", "--rev", "2", "-w", "json"))
    try:
        assert simple.take(3) == ["PUT", "w/a", "1"]
        assert json.loads(js.take(1)[0])["Events"][0]["kv"]["value"] == "MQ=="
        ok(ep, "put", "w/a", "2")
        ok(ep, "del", "w/a")
        assert simple.take(5) == ["PUT", "w/a", "1", "w/a", "2"]             # prev kv first, then kv
        assert simple.take(5) == ["DELETE", "w/a", "2", "w/a", ""]
        second, third = (json.loads(x) for x in js.take(2))
        assert second == {"Header": {"revision": 3}, "Events": [{"kv": {
            "key": "dy9h", "create_revision": 2, "mod_revision": 3, "version": 2, "value": "Mg=="}}],
            "CompactRevision": 0, "Canceled": False, "Created": False}
        assert third["Events"] == [{"type": 1, "kv": {"key": "dy9h", "mod_revision": 4}}]
    finally:
        assert simple.stop(signal.SIGINT) == 0
        assert js.stop(signal.SIGTERM) == 0


def test_watch_prints_each_event_then_runs_the_command(cluster, tmp_path):
    ep = cluster.fanout_eps[0]
    ok(ep, "put", "x", "hello world")                                        # revision 2
    out = tmp_path / "events.jsonl"
    script = ("import json, os, sys; open(sys.argv[1], 'a').write(json.dumps({k: v for k, v in os.environ.items()"
              " if k.startswith(('ETCD_WATCH_', 'ZWATCH_WATCH_'))}) + '\\n'); print('ran', flush=True)")
    w = Lines(watch_cmd(ep, "x", "--rev", "2", "--", sys.executable, "-c", script, str(out)))
    try:
        assert w.take(4) == ["PUT", "x", "hello world", "ran"]              # etcdctl: printed, then run
        ok(ep, "put", "x", 'q"uote')
        assert w.take(4) == ["PUT", "x", 'q"uote', "ran"]
        first, second = [json.loads(x) for x in out.read_text().splitlines()]
    finally:
        assert w.stop() == 0
    assert first == {"ETCD_WATCH_REVISION": "2", "ETCD_WATCH_EVENT_TYPE": '"PUT"', "ETCD_WATCH_KEY": '"x"',
                     "ETCD_WATCH_VALUE": '"hello world"', "ZWATCH_WATCH_REVISION": "2",
                     "ZWATCH_WATCH_EVENT_TYPE": "PUT", "ZWATCH_WATCH_KEY": "x", "ZWATCH_WATCH_VALUE": "hello world"}
    assert second["ETCD_WATCH_VALUE"] == '"q\\"uote"' and second["ZWATCH_WATCH_VALUE"] == 'q"uote'
    assert second["ETCD_WATCH_REVISION"] == "3"
    # A failing command ends the watch: etcdctl's line (Go's %q of the argv) and exit 1.
    r = subprocess.run(watch_cmd(ep, "x", "--rev", "3", "--", "sh", "-c", "exit 3"), capture_output=True, text=True,
                       timeout=30, env=_env())
    assert (r.returncode, r.stdout, r.stderr) == (1, 'PUT\nx\nq"uote\n',
                                                  'command ["sh" "-c" "exit 3"] error (exit status 3)\n')


def test_watch_progress_notify_prints_etcdctls_line(make_cluster):
    # etcdctl 3.5's --progress-notify (3.4 prints the same line for a requested progress, see
    # test_cli_formats.py's watch -i): `progress notify: REV`, then the response in the -w format.
    ep = make_cluster(env={"ZWATCH_PROGRESS_INTERVAL_S": "0.2"}).fanout_eps[0]
    ok(ep, "put", "other", "x")                                              # revision 2
    simple = Lines(watch_cmd(ep, "p", "--progress-notify"))
    js = Lines(watch_cmd(ep, "p", "--progress-notify", "-w", "json"))
    try:
        assert simple.take(2) == ["progress notify: 2"] * 2
        first, second = js.take(2)
        assert first == "progress notify: 2"
        assert json.loads(second) == {"Header": {"revision": 2}, "Events": None, "CompactRevision": 0,
                                      "Canceled": False, "Created": False}
    finally:
        assert simple.stop() == 0 and js.stop() == 0
    ok(ep, "put", "p", "v")                                                  # revision 3
    plain = Lines(watch_cmd(ep, "p", "--rev", "3"))                          # not asked for: none
    try:
        assert plain.take(3) == ["PUT", "p", "v"]
        time.sleep(1)                                                        # 5 intervals of 0.2 s
        ok(ep, "put", "p", "w")
        assert plain.take(3) == ["PUT", "p", "w"]
    finally:
        assert plain.stop() == 0


def test_watch_canceled_by_compaction_exits_5(cluster):
    ep = cluster.fanout_eps[0]
    for i in range(3):
        ok(ep, "put", "c", str(i))
    ok(ep, "compaction", "3")
    r = subprocess.run(watch_cmd(ep, "c", "--rev", "2"), capture_output=True, text=True, timeout=30, env=_env())
    assert (r.returncode, r.stdout) == (5, "")
    assert r.stderr == ("watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
                        "Error: watch is canceled by the server\n")


def test_watch_initial_state_and_on_compacted_resync_and_digest(cluster):
    """Issue #16 (SPEC.md section 7.7): --initial-state prints the range's kvs as PUT events,
    `state complete: REV`, then the changes; --on-compacted resync / digest print `reset` and
    the state instead of exiting 5 (digest: only what changed since --rev - 1, the rest named)."""
    ep = cluster.fanout_eps[0]
    ok(ep, "put", "s/a", "1")                                                # revision 2
    ok(ep, "put", "s/b", "2")                                                # 3
    st = Lines(watch_cmd(ep, "s/", "--prefix", "--initial-state"))
    js = Lines(watch_cmd(ep, "s/a", "--initial-state", "-w", "json"))
    try:
        assert st.take(5) == ["PUT", "s/a", "1", "PUT", "s/b"] and st.take(2) == ["2", "state complete: 3"]
        first, end = (json.loads(x) for x in js.take(2))
        assert first["Mark"] == "state" and first["Events"][0]["kv"]["value"] == "MQ=="
        assert end["Mark"] == "state_end" and end["Header"]["revision"] == 3 and end["Events"] is None
        ok(ep, "put", "s/c", "3")                                            # 4
        assert st.take(3) == ["PUT", "s/c", "3"]
    finally:
        assert st.stop() == 0 and js.stop() == 0
    ok(ep, "put", "s/a", "new")                                              # 5
    ok(ep, "del", "s/b")                                                     # 6
    ok(ep, "compaction", "6")
    rs = Lines(watch_cmd(ep, "s/", "--prefix", "--rev", "4", "--on-compacted", "resync"))
    dg = Lines(watch_cmd(ep, "s/", "--prefix", "--rev", "5", "--on-compacted", "digest"))
    try:
        assert rs.take(8) == ["reset", "PUT", "s/a", "new", "PUT", "s/c", "3", "state complete: 6"]
        # the client held revision 4: s/a changed after it, s/c did not, s/b is gone (not named)
        assert dg.take(7) == ["reset", "UNCHANGED", "s/c", "PUT", "s/a", "new", "state complete: 6"]
        ok(ep, "put", "s/d", "4")
        assert rs.take(3) == ["PUT", "s/d", "4"] and dg.take(3) == ["PUT", "s/d", "4"]
    finally:
        assert rs.stop() == 0 and dg.stop() == 0


# ================================================================ the launchers and the Procfile
def _wait_status(ep, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        r = zw(ep, "endpoint", "health", "--command-timeout", "1")      # writer and syncer answer too
        if r.returncode == 0:
            return r.stdout
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.2)


def _stop(procs, sig=signal.SIGTERM):
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(10))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait(5))
    return codes


def test_actor_launchers(tmp_path):
    """`zwatch writer|syncer|fanout`: the fan-out binds tcp://127.0.0.1:$PORT without --listen."""
    port = free_port()
    env = _env(ZWATCH_DATA_DIR=str(tmp_path / "data"), ZWATCH_WRITER_ENDPOINT=f"tcp://127.0.0.1:{free_port()}",
               ZWATCH_PUB_ENDPOINT=f"tcp://127.0.0.1:{free_port()}",
               ZWATCH_SYNCER_ENDPOINT=f"tcp://127.0.0.1:{free_port()}", ZWATCH_LOG_FORMAT="json")
    procs = []
    try:
        for verb, extra in (("writer", {}), ("syncer", {}), ("fanout", {"PORT": str(port)})):
            procs.append(subprocess.Popen([sys.executable, "-m", "zwatch.cli", verb], env={**env, **extra},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ep = f"127.0.0.1:{port}"
        _wait_status(ep)
        assert ok(ep, "put", "a", "1") == "OK\n"
        assert ok(ep, "get", "a") == "a\n1\n"
    finally:
        codes = _stop(procs)
    assert codes == [0, 0, 0]                                                # SIGTERM is a clean stop


def _free_base_port() -> int:
    for _ in range(50):
        p = free_port()
        if p < 65000 and all(_port_free(p + d) for d in (1, 100, 200)):
            return p
    raise RuntimeError("no free port range")


def _port_free(port) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.skipif(shutil.which("honcho", path=os.path.dirname(sys.executable)) is None,
                    reason="honcho (dev extra) not installed")
def test_procfile_under_honcho(tmp_path):
    """The Procfile as shipped: fan-outs first, so `-p P -c fanout=2` puts them on P and P+1."""
    shutil.copy(os.path.join(ROOT, "Procfile"), tmp_path / "Procfile")
    base = _free_base_port()
    bindir = os.path.dirname(sys.executable)
    env = _env(PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
               ZWATCH_WRITER_ENDPOINT=f"tcp://127.0.0.1:{free_port()}",
               ZWATCH_PUB_ENDPOINT=f"tcp://127.0.0.1:{free_port()}",
               ZWATCH_SYNCER_ENDPOINT=f"tcp://127.0.0.1:{free_port()}")
    honcho = subprocess.Popen([os.path.join(bindir, "honcho"), "start", "-p", str(base), "-c", "fanout=2"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        first, second = f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"
        _wait_status(first)
        _wait_status(second)
        assert ok(first, "put", "p", "1") == "OK\n"
        assert ok(second, "get", "p", "--print-value-only") == "1\n"
        assert (tmp_path / "default.zwatch").is_dir()                        # the default data dir
    finally:
        honcho.send_signal(signal.SIGINT)
        try:
            out, _ = honcho.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            out, _ = honcho.communicate(timeout=5)
    for name in ("fanout.1", "fanout.2", "writer.1", "syncer.1"):
        assert f"{name} started" in out, out


def test_endpoint_status_table_with_every_endpoint_down_prints_an_empty_table_not_a_traceback():
    r = subprocess.run([sys.executable, "-m", "zwatch.cli", "--endpoints", f"127.0.0.1:{free_port()}", "--dial-timeout",
                        "0.5", "endpoint", "status", "-w", "table"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "| ENDPOINT |" in r.stdout


def test_a_curve_client_key_without_a_server_key_is_one_error_line_not_a_traceback(tmp_path):
    env = dict(os.environ, ZWATCH_CURVE_CLIENT_KEY=str(tmp_path / "none.key_secret"))
    env.pop("ZWATCH_CURVE_SERVER_KEY", None)
    for verb in (["get", "foo"], ["endpoint", "health"]):
        r = subprocess.run([sys.executable, "-m", "zwatch.cli", "--endpoints", f"127.0.0.1:{free_port()}", *verb],
                           capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 128 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("Error: ZWATCH_CURVE_CLIENT_KEY is set but no server key"), r.stderr
