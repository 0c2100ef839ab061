"""watch_hash is an operator's check (SPEC.md 13.3, as hash_kv): root only with auth enabled;
a verified watch itself needs only READ on its range, like any watch."""
from __future__ import annotations

import pytest

import zwatch

from support import collect
from test_auth_client import ALICE, enable_auth


def test_watch_hash_needs_root_and_a_reader_may_verify_her_watch(make_cluster):
    cl = make_cluster()
    root = enable_auth(cl)
    root.put("w/a", "1")
    alice = cl.client(cl.fanout_eps[:1], user=ALICE[0], password=ALICE[1])
    w = alice.watch("w/", prefix=True, start_revision=2, verify=True)
    assert [e.kv.value for e in collect(w, 1)] == [b"1"]
    with pytest.raises(zwatch.PermissionDenied):
        alice.watch_hash("w/", prefix=True, start_revision=2)
    assert root.watch_hash("w/", prefix=True, start_revision=2).events == 1
