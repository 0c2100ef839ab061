"""`zwatch` prints what etcdctl 3.4 prints: -w json/fields/table, --hex, watch -- CMD, watch -i,
compacted watches and exit codes (issue #12, item 9).

Each scenario runs the same commands through a Transcript (tests/system/test_cli_lease.py: every
command's stdout, stderr and exit code).  tests/system/fixtures/etcdctl_formats/<scenario>.txt is
that transcript taken from etcdctl 3.4.23 on a fresh etcd; the tests run it through
`python -m zwatch.cli` on a fresh zwatch cluster and compare byte for byte after normalize(),
which only rewrites what must differ:
- the header fields only etcd has: cluster_id, member_id and raft_term are dropped from the JSON
  (zwatch's header is the revision alone) and their numbers become <C>, <M>, <T> in -w fields
  (zwatch prints 0: it has no cluster ID, member ID or raft term);
- the first line of `version` (`etcdctl version: 3.4.23` vs `zwatch version: 0.1.0`);
- clientv3's own JSON log lines on stderr (retries), which are no part of etcdctl's output.
Revisions are compared as they are: both servers start at revision 1.  A usage error is compared
by its exit code alone (cobra's help text and argparse's usage line differ).

The fixtures are regenerated (by hand, never by the tests) with etcd installed:
    .venv/bin/python tests/system/test_cli_formats.py capture [scenario...]
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

if __name__ == "__main__":      # run as a script (capture): support.py is in tests/
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import Background, Transcript, capture_fixtures, read_fixture, run_scenario, zwatch_transcript

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "etcdctl_formats")
TXN = 'value("k1") = "v1"\n\nput k2 v2\nget k1\ndel k9 --prev-kv\n\nput k3 v3\n\n'


# ================================================================ the scenarios
def scenario_kv(t: Transcript):
    """put / get / del / txn in every -w format, --hex, and the formats etcdctl refuses."""
    t.run("put", "k1", "v1")
    t.run("put", "k1", "v1", "-w", "fields")
    t.run("put", "k1", "v1", "--prev-kv", "-w", "fields")
    t.run("put", "k1", "v1", "-w", "table")                 # done, then refused: exit 4
    t.run("put", "bin", "a\tb\"c\\d é")
    t.run("get", "k1", "-w", "fields")
    t.run("get", "k", "--prefix", "--limit", "1", "-w", "fields")
    t.run("get", "bin", "-w", "fields")
    t.run("get", "missing", "-w", "fields")
    t.run("get", "k1", "-w", "table")
    t.run("get", "k1", "--hex")
    t.run("--hex", "get", "bin")
    t.run("get", "bin", "--hex", "-w", "json")
    t.run("get", "k1", "--hex", "-w", "fields")
    t.run("put", "k1", "v2", "--prev-kv", "--hex")
    t.run("get", "k1", "--hex", "--print-value-only")
    t.run("put", "k9", "nine")
    t.run("txn", "-w", "json", stdin=TXN)                   # k1 is v2: the failure branch
    t.run("put", "k9", "nine")
    t.run("put", "k1", "v1")
    t.run("txn", "-w", "fields", stdin=TXN)
    t.run("txn", "--hex", stdin=TXN)
    t.run("txn", "-w", "json", stdin=TXN)                   # success: nested headers, k9 already gone
    t.run("txn", "-w", "table", stdin=TXN)
    t.run("del", "k", "--prefix", "--prev-kv", "-w", "fields")
    t.run("del", "nothing", "-w", "fields")
    t.run("del", "bin", "--prev-kv", "--hex")
    t.run("del", "x", "-w", "table")
    t.run("get", "", "--prefix", "-w", "json")
    t.run("version")


def scenario_readme(t: Transcript):
    """The README's CLI walk-through (its txn example must be valid etcdctl input)."""
    t.run("put", "greeting", "hello")
    t.run("get", "greeting", "-w", "json")
    t.run("txn", stdin=_readme_txn())
    t.run("get", "greeting")
    t.run("compaction", "3")
    t.run("compaction", "3")
    t.run("get", "greeting", "--rev", "2")
    t.run("get", "greeting", "--rev", "99")


def _readme_txn() -> str:
    """The heredoc of README.md's `zwatch txn <<'EOF'` example, as the shell passes it."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "README.md")) as f:
        m = re.search(r"^zwatch txn <<'EOF'\n(.*?)^EOF$", f.read(), re.S | re.M)
    assert m, "README.md has no `zwatch txn <<'EOF'` example"
    return m.group(1)


def scenario_watch(t: Transcript):
    """watch in every format, watch -- CMD (printed, then run, with etcdctl's environment), a
    failing command, a compacted revision (exit 5), -w table (exit 4 at the first event)."""
    for i in range(3):
        t.run("put", "w", f"v{i}")                          # revisions 2, 3, 4
    # From revision 4: one event of history (several may come as one response, differently).
    fields = t.spawn("watch", "w", "--rev", "4", "-w", "fields")
    hexed = t.spawn("watch", "w", "--rev", "4", "--prev-kv", "--hex")
    cmd = t.spawn("watch", "w", "--rev", "4", "--", "sh", "-c",
                  'echo "ran: rev=$ETCD_WATCH_REVISION type=$ETCD_WATCH_EVENT_TYPE key=$ETCD_WATCH_KEY '
                  'value=$ETCD_WATCH_VALUE"')
    fields.wait_for(11)
    hexed.wait_for(5)
    cmd.wait_for(4)
    t.run("del", "w")                                       # revision 5: a DELETE for all three
    fields.wait_for(22)
    hexed.wait_for(10)
    cmd.wait_for(8)
    t.finish(fields)
    t.finish(hexed)
    t.finish(cmd)
    t.run("put", "w", 'q"uote')                             # revision 6
    t.run("watch", "w", "--rev", "6", "--", "sh", "-c", "exit 3")
    t.run("watch", "w", "--rev", "6", "-w", "table")
    js = t.spawn("watch", "w", "--rev", "6", "-w", "json", "--", "sh", "-c", "echo $ETCD_WATCH_KEY")
    js.wait_for(2)                                          # the response, then the command's line
    t.finish(js)
    t.run("compaction", "4")
    t.run("watch", "w", "--rev", "2")
    t.run("watch", "w", "--rev", "2", "-w", "json")
    t.run("watch", "w", "--rev", "2", "-w", "fields")
    t.run("watch", "w", "--rev", "2", "--", "echo", "never")


def scenario_interactive(t: Transcript):
    """watch -i: watch lines (with flags and -- CMD), a progress request, bad lines, EOF (exit 3)."""
    t.run("put", "a", "1")                                  # revision 2
    t.run("put", "b", "2")                                  # revision 3
    t.text.append("$ watch -i &")
    proc = subprocess.Popen(t.argv + ["watch", "-i"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=t.env)
    bg = Background(("watch", "-i"), proc)
    t.spawned.append(bg)

    def send(line: str):
        t.text.append(f"stdin: {line}")
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    send("watch a --rev 2")
    bg.wait_for(3)
    # Double quotes: etcdctl 3.4's argify cuts a 'single-quoted' word to the wrong length.
    send('watch b --rev 3 --prev-kv -- sh -c "echo ran $ETCD_WATCH_KEY"')
    bg.wait_for(3 + 4)
    for bad in ("bogus", "", "watch", "watch a b --prefix"):
        send(bad)
    t.run("put", "a", "3")                                  # revision 4: printed by the first watch
    bg.wait_for(7 + 3)
    send("progress")
    bg.wait_for(10 + 2)                                     # one progress notification per watch
    proc.stdin.close()                                      # EOF: etcdctl's exit 3
    proc.wait(20)
    t.text.append(f"stdout: {bg.seen}")
    t._record("[watch -i] ended by EOF", "", proc.stderr.read(), proc.returncode)
    for stdin in ("watch a --\n", "watch a --bogus\n", ""):
        t.run("watch", "-i", stdin=stdin)


def scenario_args(t: Transcript):
    """Exit codes of bad usage (the texts differ: cobra's help vs argparse's usage)."""
    for args in (("get",), ("put",), ("del",), ("watch",), ("watch", "k", "--"), ("watch", "a", "b", "--prefix"),
                 ("get", "a", "--prefix", "--from-key"), ("get", "a", "b", "--prefix"),
                 ("get", "a", "-w", "json", "--print-value-only"), ("txn", "extra"), ("compaction",),
                 ("compaction", "1", "2"), ("get", "a", "--bogus"), ("get", "a", "--limit", "x"), ("bogus",),
                 ("compaction", "x"), ("-w", "xml", "get", "a")):
        r = subprocess.run(t.argv + list(args), capture_output=True, text=True, env=t.env, timeout=30)
        t.note(f"{shlex.join(args)}: exit {r.returncode}")
    t.run("txn", stdin='bogus("k") = "1"\n\n\n\n')
    t.run("watch", "k", "--", stdin="")


SCENARIOS = {"kv": scenario_kv, "readme": scenario_readme, "watch": scenario_watch,
             "interactive": scenario_interactive, "args": scenario_args}


# ================================================================ normalization
def normalize(text: str) -> str:
    text = "\n".join(x for x in text.split("\n") if not x.startswith('stderr: {"level":'))
    text = re.sub(r'"(cluster_id|member_id|raft_term)":\d+,?', "", text).replace(",}", "}")
    for name, label in (("ClusterID", "<C>"), ("MemberID", "<M>"), ("RaftTerm", "<T>")):
        text = re.sub(rf'^"{name}" : \d+$', f'"{name}" : {label}', text, flags=re.M)
    return re.sub(r"^(etcdctl|zwatch) version: \S+$", "<CLI> version: <V>", text, flags=re.M)


def transcript_text(t: Transcript) -> str:
    return normalize("\n".join(t.text) + "\n")


# ================================================================ the tests
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_cli_prints_what_etcdctl_prints(cluster, name):
    t0 = time.monotonic()
    t = run_scenario(zwatch_transcript(cluster), SCENARIOS[name])
    print(f"{name}: {len(t.text)} lines in {time.monotonic() - t0:.1f}s")
    assert transcript_text(t) == read_fixture(FIXTURES, name)


def test_normalize_only_touches_what_must_differ():
    etcd = ('{"header":{"cluster_id":1,"member_id":2,"revision":3,"raft_term":4}}\n"ClusterID" : 1\n'
            '"MemberID" : 2\n"Revision" : 3\n"RaftTerm" : 4\n"Key" : "ClusterID"\netcdctl version: 3.4.23\n'
            '{"Header":{"cluster_id":1,"member_id":2,"raft_term":2},"Events":[]}\n')
    zw = ('{"header":{"revision":3}}\n"ClusterID" : 0\n"MemberID" : 0\n"Revision" : 3\n"RaftTerm" : 0\n'
          '"Key" : "ClusterID"\nzwatch version: 0.1.0\n{"Header":{},"Events":[]}\n')
    assert normalize(etcd) == normalize(zw)
    assert normalize(zw.replace('"Revision" : 3', '"Revision" : 4')) != normalize(etcd)


# ================================================================ capturing the fixtures from etcd
if __name__ == "__main__":
    if sys.argv[1:2] != ["capture"]:
        sys.exit("usage: test_cli_formats.py capture [scenario...]")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    capture_fixtures(FIXTURES, SCENARIOS, sys.argv[2:] or list(SCENARIOS), transcript_text)
