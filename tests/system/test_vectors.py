"""Issue #14.6: protocol/vectors.json, the conformance vectors both bindings replay.

The Python side: every encoding vector is the exact msgpack of its message (and the SPEC's
worked examples are among them, byte for byte), and every scenario, replayed on a raw DEALER
against a real cluster, gets the replies and watch responses it names.  protocol/js replays the
same file (`npm test`, test/vectors.test.js).
"""
from __future__ import annotations

import json
import os
import time

import msgpack
import pytest

from zwatch.tools.cluster import raw_session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTORS = json.load(open(os.path.join(ROOT, "protocol", "vectors.json"), encoding="utf-8"))
SPEC = open(os.path.join(ROOT, "protocol", "SPEC.md"), encoding="utf-8").read()


def untag(x, env=None):
    if isinstance(x, dict):
        if "$bin" in x:
            return x["$bin"].encode()
        if "$hex" in x:
            return bytes.fromhex(x["$hex"])
        if "$int" in x:
            return int(x["$int"])
        if "$var" in x:
            return env[x["$var"]] + x.get("plus", 0)
        return {k: untag(v, env) for k, v in x.items()}
    if isinstance(x, list):
        return [untag(v, env) for v in x]
    return x


def at(body, path: str):
    for part in path.split("."):
        body = body[int(part)] if isinstance(body, list) else body[part]
    return body


@pytest.mark.parametrize("vector", VECTORS["encodings"], ids=lambda v: v["name"])
def test_encoding_vectors_are_the_exact_msgpack_of_their_message(vector):
    message = untag(vector["message"])
    raw = bytes.fromhex(vector["hex"])
    assert msgpack.packb(message, use_bin_type=True) == raw
    assert msgpack.unpackb(raw, raw=False) == message
    if vector["from"] == "SPEC section 11":
        assert vector["hex"] in SPEC, "not the bytes of SPEC.md section 11"


def test_the_spec_worked_examples_are_all_vectors():
    assert sum(v["from"] == "SPEC section 11" for v in VECTORS["encodings"]) == SPEC.count(" bytes\n    93 ")


class Inbox:
    """The frames of a session, kept until a step takes them: a watch event of a put may come
    before the put's reply (SPEC.md section 9), so nothing received is thrown away."""

    def __init__(self, sock):
        self.sock, self.frames = sock, []

    def take(self, match, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if match(frame):
                    return self.frames.pop(i)
            if time.monotonic() >= deadline:
                raise AssertionError(f"nothing matched; received {self.frames}")
            if self.sock.poll(100):
                self.frames.append(msgpack.unpackb(self.sock.recv(), raw=False))


def _reply(inbox, req_id):
    kind, _, body = inbox.take(lambda f: f[0] in ("ok", "err") and f[1] == req_id)
    return kind, body


def _watch_response(inbox, want, env):
    def matches(r):
        if "control" in want:
            return isinstance(r, dict) and all(r.get(k) == untag(v, env) for k, v in want["control"].items())
        if not isinstance(r, list):
            return False
        ids, header_rev, events, _ = r
        return ids == want["watch_ids"] and events == untag(want["events"], env) and \
            ("header_revision" not in want or header_rev == untag(want["header_revision"], env))
    inbox.take(lambda f: f[0] == "w" and any(matches(r) for r in f[2]))


@pytest.mark.parametrize("scenario", VECTORS["scenarios"], ids=lambda s: s["name"])
def test_scenario_vectors_against_a_cluster(make_cluster, scenario):
    cl = make_cluster()
    s = raw_session(cl.fanout_eps[0]) if scenario.get("hello", True) else _bare(cl.fanout_eps[0])
    inbox = Inbox(s)
    env: dict = {}
    req_id = 1 if scenario.get("hello", True) else 0      # raw_session's hello used req_id 1
    for step in scenario["steps"]:
        if "send" in step:
            op, body = step["send"]
            req_id += 1
            s.send(msgpack.packb([op, req_id, untag(body, env)], use_bin_type=True))
            kind, reply = _reply(inbox, req_id)
            expect = step["expect"]
            assert kind == expect["kind"], (step, reply)
            if "code" in expect:
                assert reply["code"] == expect["code"], (step, reply)
            for path, value in expect.get("fields", {}).items():
                assert at(reply, path) == untag(value, env), (step, path, reply)
            for name, path in step.get("capture", {}).items():
                env[name] = at(reply, path)
        else:
            _watch_response(inbox, step["expect_watch"], env)
    s.close()


def _bare(endpoint):
    import zmq
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s
