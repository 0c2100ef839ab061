"""`zwatch watch --verify` on a divergence (SPEC.md 7.10), without a server: the real watch
command, Watch and WatchRouter, fed a bookmark whose hash does not match the events; the
command prints the error with both hashes and exits 7.  (A real cluster never diverges on
purpose; tests/system/test_cli_verify.py covers the agreeing case end to end.)"""
from __future__ import annotations

import threading

from zwatch import cli, streamhash
from zwatch.cli.watchcmd import cmd_watch
from zwatch.client import Watch, WatchRouter


def ev(rev):
    return [0, [b"k", 2, rev, rev - 1, b"v", 0]]


class Responses:
    """The client's I/O side replaced by a fixed list of wire responses."""

    def __init__(self, responses):
        self.table = {}
        self.router = WatchRouter(self.table, threading.Lock(), "test")
        self.responses = responses
        self.login_error = None

    def watch(self, key, **kw):
        w = Watch(None, 1, {"key": key, "watch_id": 1, "start_revision": kw.get("start_revision", 0),
                            "verify": kw.get("verify", False)})
        w._live = True
        self.table[1] = w
        self.router.on_watch_responses(self.responses)
        return w

    def request_progress(self):
        return 0


def run(capsys, responses, *flags):
    a = cli.build_parser().parse_args(["watch", "k", "--rev", "2", "--verify-interval", "100", *flags])
    a.exec = None
    rc = cmd_watch(a, Responses(responses))
    return rc, capsys.readouterr()


def test_a_divergence_prints_both_hashes_and_exits_7(capsys):
    right = streamhash.to_bytes(streamhash.sum_events([ev(2), ev(3)]))
    wrong = streamhash.to_bytes(streamhash.sum_events([ev(2)]))
    rc, out = run(capsys, [[[1], 2, [ev(2)], False], [[1], 3, [], False, {"hash": right}]], "--verify")
    assert rc == 7
    assert f"Error: watch 1: stream diverged at revision 3: the server's hash of the events since revision 2 " \
           f"is {right.hex()}, the events this client delivered hash to {wrong.hex()}" in out.err
    assert out.out.count("PUT") == 1 and "Traceback" not in out.err
