"""The one request validator, zwatch.requests (issue #9): every client op's defaults, every refusal
with its exact message (the texts are part of the wire), and etcd's key-range rules as SPEC.md
section 4 states them.  In-process, no store, no socket."""
from __future__ import annotations

import os
import re

import pytest

from zwatch import messages, requests
from zwatch.errors import InvalidArgument
from zwatch.limits import MAX_KEY_BYTES, MAX_REVISION, MAX_TXN_DEPTH, MAX_TXN_OPS, MAX_TXN_TREE_OPS
from zwatch.requests import KEY_INFINITY, key_range, normalize, prefix_end, range_is_empty

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
SPEC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "protocol", "SPEC.md")


def refused(op, body) -> str:
    with pytest.raises(InvalidArgument) as e:
        normalize(op, body)
    return e.value.message


# ---------------------------------------------------------------- defaults

def test_range_defaults():
    assert normalize("range", {"key": b"a"}) == {
        "key": b"a", "range_end": b"", "limit": 0, "revision": 0, "sort_order": "NONE",
        "sort_target": "KEY", "serializable": False, "keys_only": False, "count_only": False,
        "min_mod_revision": 0, "max_mod_revision": 0, "min_create_revision": 0, "max_create_revision": 0}


def test_put_defaults():
    assert normalize("put", {"key": b"a"}) == {"key": b"a", "value": b"", "lease": 0, "prev_kv": False,
                                               "ignore_value": False, "ignore_lease": False}


def test_delete_range_defaults():
    assert normalize("delete_range", {"key": b"a"}) == {"key": b"a", "range_end": b"", "prev_kv": False}


def test_txn_defaults_and_normalized_tree():
    assert normalize("txn", {}) == {"compare": [], "success": [], "failure": []}
    t = normalize("txn", {"compare": [{"key": b"k"}],
                          "success": [{"request_put": {"key": b"k"}}, {"request_range": {"key": b"k"}}],
                          "failure": [{"request_delete_range": {"key": b"k"}}, {"request_txn": {}}]})
    assert t["compare"] == [{"key": b"k", "range_end": b"", "target": "VERSION", "result": "EQUAL",
                             "version": 0, "create_revision": 0, "mod_revision": 0, "lease": 0, "value": b""}]
    assert [op for op, _ in t["success"]] == ["put", "range"]
    assert [op for op, _ in t["failure"]] == ["delete_range", "txn"]
    assert t["success"][0][1]["value"] == b"" and t["failure"][1][1] == {"compare": [], "success": [],
                                                                         "failure": []}


def test_compact_defaults():
    assert normalize("compact", {"revision": 5}) == {"revision": 5, "physical": False}


def test_watch_create_defaults():
    spec = normalize("watch_create", {"key": b"a"})
    assert isinstance(spec, requests.WatchSpec) and spec.to_wire() == {
        "watch_id": 0, "key": b"a", "range_end": b"", "start_revision": 0, "prev_kv": False,
        "filters": [], "progress_notify": False, "fragment": False}
    assert spec.end is None and spec.filter_bits == 0 and not spec.empty_range
    assert normalize("watch_create", {}).key == b"\x00"      # etcd's watch server: "" is b"\x00"
    both = normalize("watch_create", {"key": b"a", "filters": ["NOPUT", "NODELETE"], "ignored": 1})
    assert both.filter_bits == 3


def test_session_op_defaults():
    assert normalize("watch_cancel", {}) == {"watch_id": 0}
    assert normalize("watch_cancel", {"watch_id": -1}) == {"watch_id": -1}
    assert normalize("ack", {}) == {"bytes": 0}
    assert normalize("hello", {}) == {"version": 0, "client": "", "user": None, "password": None, "window_bytes": 0}
    assert normalize("hello", {"version": 1, "client": "x" * 100}) == {
        "version": 1, "client": "x" * 64, "user": None, "password": None, "window_bytes": 0}
    assert normalize("hello", {"window_bytes": 1 << 20})["window_bytes"] == 1 << 20
    for bad in (-1, "1", 1.5, True):
        with pytest.raises(InvalidArgument):
            normalize("hello", {"window_bytes": bad})
    assert normalize("hello", {"user": "alice", "password": "pw"})["user"] == "alice"
    assert normalize("hello", {"client": 42, "extra": True})["client"] == "42"


def test_normalize_leaves_the_body_alone():
    body = {"success": [{"request_put": {"key": b"k"}}]}
    normalize("txn", body)
    assert body == {"success": [{"request_put": {"key": b"k"}}]}


# ---------------------------------------------------------------- refusals, the store's ops

@pytest.mark.parametrize("op, body, message", [
    ("range", [], "range must be a map, got list"),
    ("range", {"key": b"a", "lmit": 1}, "range: unknown field 'lmit'"),
    ("range", {}, "range.key is required"),
    ("range", {"key": "a"}, "range.key must be bytes, got str"),
    ("range", {"key": b""}, "range.key must not be empty"),
    ("range", {"key": b"k" * (MAX_KEY_BYTES + 1)}, f"range.key is {MAX_KEY_BYTES + 1} bytes, the limit is 511"),
    ("range", {"key": b"a", "range_end": None}, "range.range_end must be bytes, got NoneType"),
    ("range", {"key": b"a", "keys_only": 1}, "range.keys_only must be a bool, got int"),
    ("range", {"key": b"a", "limit": True}, "range.limit must be an integer, got bool"),
    ("range", {"key": b"a", "revision": -1}, f"range.revision=-1 is outside [0, {MAX_REVISION}]"),
    ("range", {"key": b"a", "sort_order": "UP"}, "range.sort_order must be one of NONE, ASCEND, DESCEND, got 'UP'"),
    ("range", {"key": b"a", "sort_target": "KEYS"},
     "range.sort_target must be one of KEY, CREATE, MOD, VERSION, VALUE, got 'KEYS'"),
    ("put", {"key": b"a", "lease": 1 << 63}, f"put.lease={1 << 63} is outside [{INT64_MIN}, {INT64_MAX}]"),
    ("put", {"key": b"a", "lease": 7, "ignore_lease": True}, "put: lease is provided together with ignore_lease"),
    ("lease_grant", {}, "lease_grant.TTL is required"),
    ("lease_grant", {"TTL": 5, "ID": 1 << 63}, "lease_grant.ID=9223372036854775808 is outside [-9223372036854775808, 9223372036854775807]"),
    ("lease_keepalive", {"IDs": ["x"]}, "lease_keepalive.IDs[0] must be an int64 lease ID, got str"),
    ("lease_keepalive", {"IDs": list(range(10_001))}, "lease_keepalive.IDs holds 10001 IDs, the limit is 10000"),
    ("lease_timetolive", {"ID": 5, "keys": 1}, "lease_timetolive.keys must be a bool, got int"),
    ("put", {"key": b"a", "value": b"v", "ignore_value": True}, "put: value is provided together with ignore_value"),
    ("delete_range", {"key": b"a", "prev_kv": "yes"}, "delete_range.prev_kv must be a bool, got str"),
    ("compact", {}, "compact.revision is required"),
    ("compact", {"revision": 1, "physical": 0}, "compact.physical must be a bool, got int"),
    ("txn", {"success": {}}, "txn.success must be a list, got dict"),
    ("txn", {"compare": [{"key": b"a", "target": "MOD", "version": 1}]},
     "txn.compare[0]: target MOD compares 'mod_revision', not 'version'"),
    ("txn", {"compare": [{"key": b"a", "result": "LT"}]},
     "txn.compare[0].result must be one of EQUAL, GREATER, LESS, NOT_EQUAL, got 'LT'"),
    ("txn", {"success": [{"request_put": {"key": b"a"}, "request_range": {"key": b"a"}}]},
     "txn.success[0] must be a map with exactly one of request_range, request_put, request_delete_range, request_txn"),
    ("txn", {"failure": [{"request_watch": {}}]},
     "txn.failure[0] must be a map with exactly one of request_range, request_put, request_delete_range, request_txn"),
    ("txn", {"success": [{"request_txn": {"failure": [{"request_put": {"key": b""}}]}}]},
     "txn.success[0].request_txn.failure[0].request_put.key must not be empty"),
    ("txn", {"success": [{"request_put": {"key": b"a"}}] * (MAX_TXN_OPS + 1)},
     f"txn: too many operations in txn request ({MAX_TXN_OPS + 1} > {MAX_TXN_OPS})"),
])
def test_store_op_refusals(op, body, message):
    assert refused(op, body) == message


def test_txn_nesting_is_bounded():
    body = {}
    for _ in range(MAX_TXN_DEPTH - 1):
        body = {"success": [{"request_txn": body}]}
    assert normalize("txn", body)                                     # MAX_TXN_DEPTH levels in all
    where = "txn" + ".success[0].request_txn" * MAX_TXN_DEPTH
    assert refused("txn", {"success": [{"request_txn": body}]}) == f"{where}: txn nested deeper than {MAX_TXN_DEPTH}"


def test_txn_tree_is_bounded_by_max_txn_tree_ops():
    """Every level and both branches count, compares included."""
    def tree(txns, compares=0):
        return {"compare": [{"key": b"c"}] * compares,
                "success": [{"request_txn": {"success": [{"request_put": {"key": b"k"}}] * 127,
                                             "failure": [{"request_put": {"key": b"k"}}]}}
                            for _ in range(txns)]}
    fits = MAX_TXN_TREE_OPS // 129
    spare = MAX_TXN_TREE_OPS - fits * 129
    assert normalize("txn", tree(fits, spare))
    assert refused("txn", tree(fits, spare + 1)) == (
        f"too many operations in txn request: more than {MAX_TXN_TREE_OPS} compares and ops in all nested "
        f"txns together")


def test_unknown_op():
    assert refused("frobnicate", {}) == "unknown op 'frobnicate'"
    assert refused(None, {}) == "unknown op None"
    assert "status" not in requests.STORE_OPS and requests.STORE_OPS == {
        "range", "put", "delete_range", "txn", "compact", "lease_grant", "lease_revoke",
        "cursor_put", "cursor_get", "cursor_list", "cursor_delete"}


# ---------------------------------------------------------------- refusals, the fan-out's ops

@pytest.mark.parametrize("op, body, message", [
    ("watch_create", {"key": b"a", "watch_id": "1"}, "watch_id must be an integer"),
    ("watch_create", {"key": b"a", "watch_id": (1 << 62) + 1}, f"watch_id = {(1 << 62) + 1} is outside [0, {1 << 62}]"),
    ("watch_create", {"key": "a"}, "key must be bytes (msgpack bin)"),
    ("watch_create", {"key": b"k" * 512}, "key is 512 bytes, above the limit of 511"),
    ("watch_create", {"key": b"a", "range_end": b"e" * 513}, "range_end is 513 bytes, above the limit of 512"),
    ("watch_create", {"key": b"a", "start_revision": -1}, f"start_revision = -1 is outside [0, {MAX_REVISION}]"),
    ("watch_create", {"key": b"a", "prev_kv": 1}, "prev_kv must be a boolean"),
    ("watch_create", {"key": b"a", "progress_notify": None}, "progress_notify must be a boolean"),
    ("watch_create", {"key": b"a", "fragment": "no"}, "fragment must be a boolean"),
    ("watch_create", {"key": b"a", "filters": "NOPUT"}, "filters must be a list of NOPUT / NODELETE"),
    ("watch_create", {"key": b"a", "filters": ["NOPUT"] * 3}, "filters must be a list of NOPUT / NODELETE"),
    ("watch_create", {"key": b"a", "filters": ["NOGET"]}, "unknown filter 'NOGET'"),
    ("watch_cancel", {"watch_id": -2}, f"watch_id = -2 is outside [-1, {1 << 62}]"),
    ("watch_cancel", {"watch_id": 1.0}, "watch_id must be an integer"),
    ("ack", {"bytes": -1}, f"bytes = -1 is outside [0, {MAX_REVISION}]"),
    ("ack", {"bytes": False}, "bytes must be an integer"),
    ("hello", {"version": "1"}, "version must be an integer"),
    ("hello", {"version": 1 << 32}, f"version = {1 << 32} is outside [0, {1 << 31}]"),
    ("hello", [], "body must be a map"),
    ("hello", {"user": b"alice"}, "user must be a string"),
    ("hello", {"user": "u" * 129}, "user is longer than 128 bytes"),
    ("hello", {"password": 1234}, "password must be a string"),
    ("hello", {"password": "p" * 1025}, "password is longer than 1024 bytes"),
])
def test_fanout_op_refusals(op, body, message):
    assert refused(op, body) == message


def test_messages_keeps_the_names_of_the_field_readers():
    """zwatch.messages keeps the names the fan-out and clients used; they are requests' own."""
    assert messages.WatchSpec is requests.WatchSpec and messages.get_int is requests.get_int
    assert messages.prefix_end is requests.prefix_end and messages.KEY_INFINITY == KEY_INFINITY
    assert requests.get_key({"key": b"k"}) == b"k"
    with pytest.raises(InvalidArgument, match="key is not provided$"):
        requests.get_key({})
    assert requests.get_bytes({"v": bytearray(b"x")}, "v") == b"x"
    assert requests.get_bytes({}, "v", None) is None


# ---------------------------------------------------------------- key ranges (SPEC.md section 4)

def selects(key, range_end, candidates) -> list:
    start, end = key_range(key, range_end)
    return [k for k in candidates if start <= k and (end is None or k < end)]


KEYS = [b"\x00", b"a", b"a/", b"a/b", b"a0", b"a\xff", b"a\xff\x01", b"b", b"\xff", b"\xff\xff", b"\xff\xff\x01"]


@pytest.mark.parametrize("key, range_end, want", [
    (b"a/", b"", [b"a/"]),                                            # empty: exactly key
    (b"a/", b"\x00", KEYS[2:]),                                       # b"\x00": every key >= key
    (b"a/", prefix_end(b"a/"), [b"a/", b"a/b"]),                      # the prefix end: the prefix
    (b"a\xff", prefix_end(b"a\xff"), [b"a\xff", b"a\xff\x01"]),
    (b"\xff\xff", prefix_end(b"\xff\xff"), [b"\xff\xff", b"\xff\xff\x01"]),   # all-0xff: from key
    (b"a", b"b", [b"a", b"a/", b"a/b", b"a0", b"a\xff", b"a\xff\x01"]),     # any other: [key, range_end)
    (b"b", b"a", []),                                                 # key >= range_end: nothing
    (b"b", b"b", []),
    (b"\x00", b"\x00", KEYS),                                         # all keys
])
def test_key_range_follows_spec_section_4(key, range_end, want):
    assert selects(key, range_end, KEYS) == want


def test_key_range_values_and_emptiness():
    assert key_range(b"a", b"") == (b"a", b"a\x00")
    assert key_range(b"a", b"\x00") == (b"a", None)
    assert key_range(b"a", b"c") == (b"a", b"c")
    assert range_is_empty(*key_range(b"b", b"a")) and range_is_empty(*key_range(b"b", b"b"))
    assert not range_is_empty(*key_range(b"b", b"\x00")) and not range_is_empty(*key_range(b"b", b""))


def test_prefix_end_examples_from_the_spec():
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"


def test_watch_spec_end_is_the_index_form_of_key_range():
    assert normalize("watch_create", {"key": b"a"}).end is None
    assert normalize("watch_create", {"key": b"a", "range_end": b"\x00"}).end == KEY_INFINITY
    assert normalize("watch_create", {"key": b"a", "range_end": b"a0"}).end == b"a0"
    assert normalize("watch_create", {"key": b"b", "range_end": b"a"}).empty_range
    assert normalize("watch_create", {"key": b"b", "range_end": b"b"}).empty_range
    assert not normalize("watch_create", {"key": b"\xff" * 511, "range_end": b"\x00"}).empty_range


def test_spec_limits_table_states_the_txn_bounds():
    """SPEC.md section 10 gives the bounds requests enforces, with limits.py's values."""
    with open(SPEC_PATH, encoding="utf-8") as f:
        text = f.read()
    for name, value in (("MAX_TXN_OPS", MAX_TXN_OPS), ("MAX_TXN_DEPTH", MAX_TXN_DEPTH),
                        ("MAX_TXN_TREE_OPS", MAX_TXN_TREE_OPS)):
        row = re.search(rf"^\| `{name}` \| ([\d,]+) ", text, re.M)
        assert row, f"SPEC.md's limits table has no row for {name}"
        assert int(row.group(1).replace(",", "")) == value, name


# ---------------------------------------------------------------- auth ops (SPEC.md section 13)
HASH = "scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="


def test_every_auth_op_is_a_client_op_and_normalized():
    assert messages.AUTH_OPS == requests.AUTH_STORE_OPS and messages.AUTH_OPS <= messages.CLIENT_OPS
    assert not requests.AUTH_STORE_OPS & requests.STORE_OPS
    for op in ("auth_enable", "auth_disable", "auth_status", "user_list", "role_list"):
        assert normalize(op, {}) == {}


def test_auth_op_defaults_use_etcds_field_names():
    assert normalize("user_add", {"name": "u", "password": "pw"}) == {
        "name": "u", "password": "pw", "hashed_password": None, "options": {"no_password": False}}
    assert normalize("user_add", {"name": "u", "hashed_password": HASH, "options": {"no_password": False}}) == {
        "name": "u", "password": None, "hashed_password": HASH, "options": {"no_password": False}}
    assert normalize("user_add", {"name": "u", "options": {"no_password": True}})["options"] == {"no_password": True}
    assert normalize("user_get", {"name": "u"}) == {"name": "u"}
    assert normalize("user_delete", {"name": "u"}) == {"name": "u"}
    assert normalize("user_change_password", {"name": "u", "password": ""}) == {
        "name": "u", "password": "", "hashed_password": None}
    assert normalize("user_grant_role", {"user": "u", "role": "r"}) == {"user": "u", "role": "r"}
    assert normalize("user_revoke_role", {"name": "u", "role": "r"}) == {"name": "u", "role": "r"}
    assert normalize("role_add", {"name": "r"}) == {"name": "r"}
    assert normalize("role_get", {"role": "r"}) == {"role": "r"}
    assert normalize("role_delete", {"role": "r"}) == {"role": "r"}
    assert normalize("role_grant_permission", {"name": "r", "perm": {"permType": "READ", "key": b"a"}}) == {
        "name": "r", "perm": {"permType": "READ", "key": b"a", "range_end": b""}}
    # etcd's "every key": key "" with range_end "\x00"
    assert normalize("role_grant_permission", {"name": "r", "perm": {"permType": "READWRITE", "range_end": b"\x00"}}
                     )["perm"] == {"permType": "READWRITE", "key": b"", "range_end": b"\x00"}
    assert normalize("role_revoke_permission", {"role": "r", "key": b"a", "range_end": b"b"}) == {
        "role": "r", "key": b"a", "range_end": b"b"}
    assert normalize("user_get", {"name": "é" * 64}) == {"name": "é" * 64}      # 128 bytes of UTF-8


@pytest.mark.parametrize("op, body, message", [
    ("auth_enable", {"x": 1}, "auth_enable: unknown field 'x'"),
    ("auth_status", [], "body must be a map"),
    ("user_add", {"name": ""}, "etcdserver: user name is empty"),
    ("user_add", {"password": "pw"}, "etcdserver: user name is empty"),
    ("user_add", {"name": b"u"}, "user_add.name must be a string, got bytes"),
    ("user_add", {"name": "u" * 129}, "user_add.name is longer than 128 bytes"),
    ("user_add", {"name": "é" * 65}, "user_add.name is longer than 128 bytes"),
    ("user_add", {"name": "u", "password": b"pw"}, "user_add.password must be a string, got bytes"),
    ("user_add", {"name": "u", "password": "p" * 1025}, "user_add.password is longer than 1024 bytes"),
    ("user_add", {"name": "u", "password": "pw", "hashed_password": HASH},
     "user_add: password and hashed_password are exclusive"),
    ("user_add", {"name": "u", "hashed_password": "plain"}, "user_add.hashed_password is not a password hash of this server's format"),
    ("user_add", {"name": "u", "hashed_password": HASH + "x" * 200},
     "user_add.hashed_password is not a password hash of this server's format"),
    ("user_add", {"name": "u", "hashed_password": "bcrypt$16384$8$1$c2FsdA==$a2V5"},
     "user_add.hashed_password is not a password hash of this server's format"),
    ("user_add", {"name": "u", "options": {"no_password": 1}}, "user_add.options.no_password must be a bool, got int"),
    ("user_add", {"name": "u", "options": {"nopass": True}}, "user_add.options: unknown field 'nopass'"),
    ("user_add", {"name": "u", "options": []}, "user_add.options must be a map, got list"),
    ("user_get", {}, "etcdserver: user name is empty"),
    ("user_get", {"name": None}, "user_get.name must be a string, got NoneType"),
    ("user_change_password", {"name": "u", "password": 5}, "user_change_password.password must be a string, got int"),
    ("user_grant_role", {"user": "u"}, "etcdserver: role name is empty"),
    ("user_grant_role", {"user": "", "role": "r"}, "etcdserver: user name is empty"),
    ("user_grant_role", {"name": "u", "role": "r"}, "user_grant_role: unknown field 'name'"),
    ("user_revoke_role", {"name": "u", "role": ""}, "etcdserver: role name is empty"),
    ("role_add", {"name": ""}, "etcdserver: role name is empty"),
    ("role_get", {"name": "r"}, "role_get: unknown field 'name'"),
    ("role_delete", {"role": 7}, "role_delete.role must be a string, got int"),
    ("role_grant_permission", {"name": "r"}, "role_grant_permission.perm is required"),
    ("role_grant_permission", {"name": "r", "perm": {"key": b"a"}}, "role_grant_permission.perm.permType is required"),
    ("role_grant_permission", {"name": "r", "perm": {"permType": "read", "key": b"a"}},
     "role_grant_permission.perm.permType must be one of READ, WRITE, READWRITE, got 'read'"),
    ("role_grant_permission", {"name": "r", "perm": {"permType": 0, "key": b"a"}},
     "role_grant_permission.perm.permType must be one of READ, WRITE, READWRITE, got '0'"),
    ("role_grant_permission", {"name": "r", "perm": {"permType": "READ", "key": "a"}},
     "role_grant_permission.perm.key must be bytes, got str"),
    ("role_grant_permission", {"name": "r", "perm": {"permType": "READ", "key": b"a" * 512}},
     "role_grant_permission.perm.key is 512 bytes, the limit is 511"),
    ("role_grant_permission", {"name": "r", "perm": {"permType": "READ", "key": b"a", "range_end": b"b" * 513}},
     "role_grant_permission.perm.range_end is 513 bytes, the limit is 512"),
    ("role_grant_permission", {"name": "r", "perm": {"permType": "READ", "key": b"a", "x": 1}},
     "role_grant_permission.perm: unknown field 'x'"),
    ("role_grant_permission", {"name": "r", "perm": [["READ", b"a", b""]]},
     "role_grant_permission.perm must be a map, got list"),
    ("role_revoke_permission", {"role": "r", "key": "a"}, "role_revoke_permission.key must be bytes, got str"),
    ("role_revoke_permission", {"key": b"a"}, "etcdserver: role name is empty"),
])
def test_auth_op_refusals(op, body, message):
    assert refused(op, body) == message
