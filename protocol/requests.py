"""Every client request body, validated once (SPEC.md sections 3, 4 and 6): the field schemas,
``normalize(op, body)``, and etcd's key-range rules (``key_range``, ``prefix_end``).

Used by both sides of the edge: the fan-out reads the session and watch ops (hello, ack,
watch_create, watch_cancel) with it; the store validates range, put, delete_range, txn and
compact with it before it touches LMDB.  Every malformation is an InvalidArgument, nothing else.

Invariants:

* ``normalize`` returns a new value with every default filled in; it never changes ``body``.
* The error texts are part of the wire (clients and tests match them) and stay as they are.
  That is why there are two wordings: the store's ops are strict (unknown fields refused, each
  message names where in the request it is, ``txn.success[0].request_put.key``), the
  fan-out's ops are lenient (unknown fields ignored, the message names the field only).
* A txn tree is validated whole, both branches and every level, before any of it runs, and is
  bounded by MAX_TXN_OPS per list, MAX_TXN_DEPTH levels and MAX_TXN_TREE_OPS in all.

This module imports no msgpack: bodies arrive decoded (zwatch.messages does that).
"""
from __future__ import annotations

from .errors import InvalidArgument
from . import valuefilter
import re

from .limits import (MAX_CURSOR_NAME_BYTES, MAX_CURSOR_TTL, MIN_CURSOR_TTL, MAX_AUTH_NAME_BYTES, MAX_KEEPALIVE_IDS, MAX_KEY_BYTES, MAX_PASSWORD_BYTES, MAX_REQUEST_BYTES,
                     MAX_REVISION, MAX_TXN_DEPTH, MAX_TXN_OPS, MAX_TXN_TREE_OPS)

# ---------------------------------------------------------------------------------------------
# Key ranges: etcd's rules, in one place (SPEC.md section 4).

# A key no valid key reaches: LMDB keys are at most 511 bytes, so 512 x 0xff sorts above
# them all.  The watch index stores "all keys from here" (range_end b"\x00") with this end.
KEY_INFINITY = b"\xff" * (MAX_KEY_BYTES + 1)
FROM_KEY = b"\x00"


def key_range(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    """etcd's (key, range_end) as a half-open [start, end); end None means no upper bound.

    range_end empty: exactly `key`; b"\\x00": every key >= key; otherwise [key, range_end),
    which selects nothing when key >= range_end (``range_is_empty``)."""
    if range_end == b"":
        return key, key + b"\x00"          # exactly `key`
    if range_end == FROM_KEY:
        return key, None                   # every key >= key
    return key, range_end                  # key >= range_end simply matches nothing


def range_is_empty(start: bytes, end: bytes | None) -> bool:
    """A [start, end) from key_range that no key can fall in (etcd: key >= range_end)."""
    return end is not None and start >= end


def prefix_end(prefix: bytes) -> bytes:
    """etcd's GetPrefixRangeEnd: increment the last byte below 0xff; all-0xff means "to the end"."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return FROM_KEY


# ---------------------------------------------------------------------------------------------
# The store's ops: strict schemas {field: (kind, default)}, messages prefixed with where.

REQUIRED = object()
_INT64 = (-(1 << 63), (1 << 63) - 1)
SORT_ORDERS = ("NONE", "ASCEND", "DESCEND")
SORT_TARGETS = {"KEY": 0, "CREATE": 1, "MOD": 2, "VERSION": 3, "VALUE": 4}     # index in a kv list
CMP_TARGETS = {"VERSION": ("version", 3), "CREATE": ("create_revision", 1),
               "MOD": ("mod_revision", 2), "VALUE": ("value", 4), "LEASE": ("lease", 5)}
CMP_RESULTS = ("EQUAL", "GREATER", "LESS", "NOT_EQUAL")

RANGE = {"key": ("key", REQUIRED), "range_end": ("bytes", b""), "limit": ("uint", 0),
         "revision": ("uint", 0), "sort_order": (SORT_ORDERS, "NONE"),
         "sort_target": (tuple(SORT_TARGETS), "KEY"), "serializable": ("bool", False),
         "keys_only": ("bool", False), "count_only": ("bool", False),
         "min_mod_revision": ("uint", 0), "max_mod_revision": ("uint", 0),
         "min_create_revision": ("uint", 0), "max_create_revision": ("uint", 0)}
PUT = {"key": ("key", REQUIRED), "value": ("bytes", b""), "lease": ("int64", 0),
       "prev_kv": ("bool", False), "ignore_value": ("bool", False), "ignore_lease": ("bool", False)}
DELETE_RANGE = {"key": ("key", REQUIRED), "range_end": ("bytes", b""), "prev_kv": ("bool", False)}
TXN = {"compare": ("list", []), "success": ("list", []), "failure": ("list", [])}
COMPARE = {"key": ("key", REQUIRED), "range_end": ("bytes", b""),
           "target": (tuple(CMP_TARGETS), "VERSION"), "result": (CMP_RESULTS, "EQUAL"),
           "version": ("int64", 0), "create_revision": ("int64", 0), "mod_revision": ("int64", 0),
           "lease": ("int64", 0), "value": ("bytes", b"")}
COMPACT = {"revision": ("uint", REQUIRED), "physical": ("bool", False)}
# Leases (etcd's field names: ID and TTL in capitals).  TTL and ID are int64 as in etcd: a TTL
# below the minimum (negative included) is raised to it, ID 0 asks the server to pick one.
LEASE_GRANT = {"TTL": ("int64", REQUIRED), "ID": ("int64", 0)}
LEASE_REVOKE = {"ID": ("int64", REQUIRED)}
LEASE_KEEPALIVE = {"IDs": ("list", REQUIRED)}
LEASE_TIMETOLIVE = {"ID": ("int64", REQUIRED), "keys": ("bool", False)}
LEASE_LEASES: dict = {}
# Durable named cursors (SPEC.md 6.2).  name: a UTF-8 string; revision 0 = "the cursor's own"
# (for a new cursor: the current revision); ttl: seconds it lives without a cursor_put.
CURSOR_PUT = {"name": ("str", REQUIRED), "key": ("key", REQUIRED), "range_end": ("bytes", b""),
              "revision": ("uint", 0), "ttl": ("int64", REQUIRED)}
CURSOR_NAMED = {"name": ("str", REQUIRED)}
# A txn request_op's one entry -> the op it holds.
TXN_OPS = {"request_range": "range", "request_put": "put",
           "request_delete_range": "delete_range", "request_txn": "txn"}


def is_int(v) -> bool:
    """An integer that is not a bool (msgpack keeps them apart; Python does not)."""
    return isinstance(v, int) and not isinstance(v, bool)


def check_fields(body, spec: dict, where: str) -> dict:
    """Check a request map against spec {field: (kind, default)}; return it with defaults filled in."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where} must be a map, got {type(body).__name__}")
    unknown = [k for k in body if k not in spec]
    if unknown:
        raise InvalidArgument(f"{where}: unknown field {unknown[0]!r}")
    out = {}
    for name, (kind, default) in spec.items():
        if name not in body:
            if default is REQUIRED:
                raise InvalidArgument(f"{where}.{name} is required")
            out[name] = default
            continue
        v = body[name]
        if kind in ("key", "bytes"):
            if not isinstance(v, bytes):
                raise InvalidArgument(f"{where}.{name} must be bytes, got {type(v).__name__}")
            if kind == "key" and not v:
                raise InvalidArgument(f"{where}.{name} must not be empty")
            if kind == "key" and len(v) > MAX_KEY_BYTES:
                raise InvalidArgument(f"{where}.{name} is {len(v)} bytes, the limit is {MAX_KEY_BYTES}")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise InvalidArgument(f"{where}.{name} must be a bool, got {type(v).__name__}")
        elif kind in ("uint", "int64"):
            lo, hi = (0, MAX_REVISION) if kind == "uint" else _INT64
            if not is_int(v):
                raise InvalidArgument(f"{where}.{name} must be an integer, got {type(v).__name__}")
            if not lo <= v <= hi:
                raise InvalidArgument(f"{where}.{name}={v} is outside [{lo}, {hi}]")
        elif kind == "str":
            if not isinstance(v, str):
                raise InvalidArgument(f"{where}.{name} must be a string, got {type(v).__name__}")
        elif kind == "list":
            if not isinstance(v, (list, tuple)):
                raise InvalidArgument(f"{where}.{name} must be a list, got {type(v).__name__}")
        elif v not in kind:                # an enum: a tuple of allowed strings
            raise InvalidArgument(f"{where}.{name} must be one of {', '.join(kind)}, got {v!r}")
        out[name] = v
    return out


def _range(body, where: str) -> dict:
    return check_fields(body, RANGE, where)


def _put(body, where: str) -> dict:
    r = check_fields(body, PUT, where)
    if r["ignore_lease"] and r["lease"]:
        raise InvalidArgument(f"{where}: lease is provided together with ignore_lease")
    if r["ignore_value"] and r["value"]:
        raise InvalidArgument(f"{where}: value is provided together with ignore_value")
    return r


def _delete_range(body, where: str) -> dict:
    return check_fields(body, DELETE_RANGE, where)


def _compare(body, where: str) -> dict:
    c = check_fields(body, COMPARE, where)
    field = CMP_TARGETS[c["target"]][0]
    for other, _ in CMP_TARGETS.values():
        if other != field and other in body:
            raise InvalidArgument(f"{where}: target {c['target']} compares '{field}', not '{other}'")
    return c


def _txn(body, where: str, depth: int = 1, budget: list | None = None) -> dict:
    """Validate a whole txn tree up front (both branches, as etcd does) before anything runs.

    Returns {"compare": [compare], "success": [(op, body)], "failure": [(op, body)]}, each op
    normalized, nested txns too.  budget[0] is what is left of MAX_TXN_TREE_OPS for the tree."""
    if depth > MAX_TXN_DEPTH:
        raise InvalidArgument(f"{where}: txn nested deeper than {MAX_TXN_DEPTH}")
    if budget is None:
        budget = [MAX_TXN_TREE_OPS]
    t = check_fields(body, TXN, where)
    n = max(len(t["compare"]), len(t["success"]), len(t["failure"]))
    if n > MAX_TXN_OPS:
        raise InvalidArgument(f"{where}: too many operations in txn request ({n} > {MAX_TXN_OPS})")
    budget[0] -= len(t["compare"]) + len(t["success"]) + len(t["failure"])
    if budget[0] < 0:
        raise InvalidArgument(f"too many operations in txn request: more than {MAX_TXN_TREE_OPS} "
                              f"compares and ops in all nested txns together")
    t["compare"] = [_compare(c, f"{where}.compare[{i}]") for i, c in enumerate(t["compare"])]
    for branch in ("success", "failure"):
        ops = []
        for i, op in enumerate(t[branch]):
            w = f"{where}.{branch}[{i}]"
            if not isinstance(op, dict) or len(op) != 1 or next(iter(op)) not in TXN_OPS:
                raise InvalidArgument(f"{w} must be a map with exactly one of {', '.join(TXN_OPS)}")
            (name, sub), = op.items()
            kind = TXN_OPS[name]
            ops.append((kind, _STORE_OPS[kind](sub, f"{w}.{name}") if kind != "txn"
                        else _txn(sub, f"{w}.{name}", depth + 1, budget)))
        t[branch] = ops
    return t


def _compact(body, where: str) -> dict:
    return check_fields(body, COMPACT, where)


def _lease_grant(body, where: str) -> dict:
    return check_fields(body, LEASE_GRANT, where)


# ID 0 is valid on the wire, as in etcd 3.4: no lease has it, so a revoke of it is
# LEASE_NOT_FOUND and its time-to-live is TTL -1 (etcdctl: "lease 0000000000000000 already expired").
def _lease_revoke(body, where: str) -> dict:
    return check_fields(body, LEASE_REVOKE, where)


def _lease_timetolive(body, where: str) -> dict:
    return check_fields(body, LEASE_TIMETOLIVE, where)


def _lease_keepalive(body, where: str) -> dict:
    r = check_fields(body, LEASE_KEEPALIVE, where)
    ids = r["IDs"]
    if len(ids) > MAX_KEEPALIVE_IDS:
        raise InvalidArgument(f"{where}.IDs holds {len(ids)} IDs, the limit is {MAX_KEEPALIVE_IDS}")
    for i, v in enumerate(ids):
        if not is_int(v) or not _INT64[0] <= v <= _INT64[1]:
            raise InvalidArgument(f"{where}.IDs[{i}] must be an int64 lease ID, got {type(v).__name__}")
    return r


def _lease_leases(body, where: str) -> dict:
    return check_fields(body, LEASE_LEASES, where)


# ---------------------------------------------------------------------------------------------
# Authentication and authorization ops (SPEC.md section 13): strict like the store's ops, with
# etcd's field names.  The writer runs them (AUTH_STORE_OPS); the fan-out normalizes user_add and
# user_change_password first, then replaces the plaintext `password` with `hashed_password`.

PERM_TYPES = ("READ", "WRITE", "READWRITE")
# What passwords.hash_password stores: "scrypt$N$r$p$<salt b64>$<key b64>".  Only the shape is
# checked here (the parameters' bounds are passwords.py's); the length bound keeps a forged hash
# from bloating the auth state.
MAX_PASSWORD_HASH_CHARS = 256
_HASH_SHAPE = re.compile(r"scrypt\$[0-9]{1,10}\$[0-9]{1,4}\$[0-9]{1,4}\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}")
# Which kind of name a field holds: etcd's "user name is empty" / "role name is empty".
_NAME_KINDS = {"user": "user", "role": "role"}

AUTH_EMPTY = {}
USER_ADD = {"name": ("user", REQUIRED), "password": ("password", None), "hashed_password": ("hash", None),
            "options": ("user_options", None)}
USER_NAME = {"name": ("user", REQUIRED)}
USER_CHANGE_PASSWORD = {"name": ("user", REQUIRED), "password": ("password", None),
                        "hashed_password": ("hash", None)}
USER_GRANT_ROLE = {"user": ("user", REQUIRED), "role": ("role", REQUIRED)}
USER_REVOKE_ROLE = {"name": ("user", REQUIRED), "role": ("role", REQUIRED)}
ROLE_NAME = {"name": ("role", REQUIRED)}
ROLE_ROLE = {"role": ("role", REQUIRED)}
ROLE_GRANT_PERMISSION = {"name": ("role", REQUIRED), "perm": ("perm", REQUIRED)}
ROLE_REVOKE_PERMISSION = {"role": ("role", REQUIRED), "key": ("perm_key", b""), "range_end": ("perm_end", b"")}
PERM = {"permType": (PERM_TYPES, REQUIRED), "key": ("perm_key", b""), "range_end": ("perm_end", b"")}
USER_OPTIONS = {"no_password": ("bool", False)}


def _auth_value(kind: str, v, where: str):
    """One field of an auth op; raises InvalidArgument with etcd's words where etcd has some."""
    if kind in _NAME_KINDS:
        if not isinstance(v, str):
            raise InvalidArgument(f"{where} must be a string, got {type(v).__name__}")
        if not v:
            raise InvalidArgument(f"etcdserver: {_NAME_KINDS[kind]} name is empty")
        if len(v.encode("utf-8", "surrogatepass")) > MAX_AUTH_NAME_BYTES:
            raise InvalidArgument(f"{where} is longer than {MAX_AUTH_NAME_BYTES} bytes")
        return v
    if kind == "password":
        if not isinstance(v, str):
            raise InvalidArgument(f"{where} must be a string, got {type(v).__name__}")
        if len(v.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
            raise InvalidArgument(f"{where} is longer than {MAX_PASSWORD_BYTES} bytes")
        return v
    if kind == "hash":
        if not isinstance(v, str) or len(v) > MAX_PASSWORD_HASH_CHARS or not _HASH_SHAPE.fullmatch(v):
            raise InvalidArgument(f"{where} is not a password hash of this server's format")
        return v
    if kind in ("perm_key", "perm_end"):
        # A permission's key may be empty: etcd's "all keys" is key "" with range_end "\x00".
        limit = MAX_KEY_BYTES if kind == "perm_key" else MAX_KEY_BYTES + 1
        if not isinstance(v, bytes):
            raise InvalidArgument(f"{where} must be bytes, got {type(v).__name__}")
        if len(v) > limit:
            raise InvalidArgument(f"{where} is {len(v)} bytes, the limit is {limit}")
        return v
    if kind == "perm":
        return _auth_fields(v, PERM, where)
    if kind == "user_options":
        return check_fields(v, USER_OPTIONS, where)
    if v not in kind:                      # an enum
        raise InvalidArgument(f"{where} must be one of {', '.join(kind)}, got {str(v)[:32]!r}")
    return v


def _auth_fields(body, spec: dict, where: str) -> dict:
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where} must be a map, got {type(body).__name__}")
    unknown = [k for k in body if k not in spec]
    if unknown:
        raise InvalidArgument(f"{where}: unknown field {str(unknown[0])[:64]!r}")
    out = {}
    for name, (kind, default) in spec.items():
        if name not in body or (body[name] is None and default is None):
            if default is REQUIRED:
                if kind in _NAME_KINDS:        # etcd: a missing name is an empty name
                    raise InvalidArgument(f"etcdserver: {_NAME_KINDS[kind]} name is empty")
                raise InvalidArgument(f"{where}.{name} is required")
            out[name] = default
            continue
        out[name] = _auth_value(kind, body[name], f"{where}.{name}")
    return out


def _auth_op(spec: dict):
    return lambda body, where: _auth_fields(body, spec, where)


def _with_password(spec: dict):
    """user_add / user_change_password: a plaintext `password` (client -> fan-out) or a
    `hashed_password` (fan-out -> writer), never both."""
    def normalize_it(body, where: str) -> dict:
        r = _auth_fields(body, spec, where)
        if r["password"] is not None and r["hashed_password"] is not None:
            raise InvalidArgument(f"{where}: password and hashed_password are exclusive")
        if "options" in r:
            r["options"] = r["options"] or {"no_password": False}
        return r
    return normalize_it


_AUTH_OPS = {
    "auth_enable": _auth_op(AUTH_EMPTY), "auth_disable": _auth_op(AUTH_EMPTY), "auth_status": _auth_op(AUTH_EMPTY),
    "user_add": _with_password(USER_ADD), "user_get": _auth_op(USER_NAME), "user_list": _auth_op(AUTH_EMPTY),
    "user_delete": _auth_op(USER_NAME), "user_change_password": _with_password(USER_CHANGE_PASSWORD),
    "user_grant_role": _auth_op(USER_GRANT_ROLE), "user_revoke_role": _auth_op(USER_REVOKE_ROLE),
    "role_add": _auth_op(ROLE_NAME), "role_get": _auth_op(ROLE_ROLE), "role_list": _auth_op(AUTH_EMPTY),
    "role_delete": _auth_op(ROLE_ROLE), "role_grant_permission": _auth_op(ROLE_GRANT_PERMISSION),
    "role_revoke_permission": _auth_op(ROLE_REVOKE_PERMISSION),
}
# The auth ops the writer serves (every one of messages.AUTH_OPS).
AUTH_STORE_OPS = frozenset(_AUTH_OPS)


def _cursor_name(r: dict, where: str) -> dict:
    n = len(r["name"].encode("utf-8", "surrogatepass"))
    if not 1 <= n <= MAX_CURSOR_NAME_BYTES:
        raise InvalidArgument(f"{where}.name is {n} bytes of UTF-8, it must be 1..{MAX_CURSOR_NAME_BYTES}")
    try:
        r["name"].encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{where}.name is not valid UTF-8") from None
    return r


def _cursor_put(body, where: str) -> dict:
    r = _cursor_name(check_fields(body, CURSOR_PUT, where), where)
    if not MIN_CURSOR_TTL <= r["ttl"] <= MAX_CURSOR_TTL:
        raise InvalidArgument(f"{where}.ttl={r['ttl']} is outside [{MIN_CURSOR_TTL}, {MAX_CURSOR_TTL}] seconds")
    return r


def _cursor_named(body, where: str) -> dict:
    return _cursor_name(check_fields(body, CURSOR_NAMED, where), where)


_CURSOR_OPS = {"cursor_put": _cursor_put, "cursor_get": _cursor_named, "cursor_delete": _cursor_named,
               "cursor_list": lambda body, where: check_fields(body, {}, where)}

_STORE_OPS = {"range": _range, "put": _put, "delete_range": _delete_range, "txn": _txn,
              "compact": _compact, "lease_grant": _lease_grant, "lease_revoke": _lease_revoke,
              **_CURSOR_OPS}
# The ops the store serves (anything else reaching it is an "unknown op").
STORE_OPS = frozenset(_STORE_OPS)
# The lease ops the writer answers from its lease clock, without a commit.
_LEASE_CLOCK_OPS = {"lease_keepalive": _lease_keepalive, "lease_timetolive": _lease_timetolive,
                    "lease_leases": _lease_leases}


# ---------------------------------------------------------------------------------------------
# The fan-out's ops: lenient field readers (unknown fields ignored), messages name the field.

FILTER_NOPUT, FILTER_NODELETE = "NOPUT", "NODELETE"
# Bit per filtered event type, indexed by event type (PUT=0 -> bit 1, DELETE=1 -> bit 2).
FILTER_BITS = {FILTER_NOPUT: 1, FILTER_NODELETE: 2}
MAX_WATCH_ID = 1 << 62


def get_bytes(body: dict, name: str, default: bytes | None = b"", max_len: int = MAX_REQUEST_BYTES) -> bytes:
    v = body.get(name, default)
    if v is None and default is None:
        return None
    if not isinstance(v, (bytes, bytearray)):
        raise InvalidArgument(f"{name} must be bytes (msgpack bin)")
    if len(v) > max_len:
        raise InvalidArgument(f"{name} is {len(v)} bytes, above the limit of {max_len}")
    return bytes(v)


def get_int(body: dict, name: str, default: int = 0, lo: int = 0, hi: int = MAX_REVISION) -> int:
    v = body.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidArgument(f"{name} must be an integer")
    if not lo <= v <= hi:
        raise InvalidArgument(f"{name} = {v} is outside [{lo}, {hi}]")
    return v


def get_bool(body: dict, name: str, default: bool = False) -> bool:
    v = body.get(name, default)
    if not isinstance(v, bool):
        raise InvalidArgument(f"{name} must be a boolean")
    return v


def get_key(body: dict, name: str = "key") -> bytes:
    key = get_bytes(body, name, b"", MAX_KEY_BYTES)
    if not key:
        raise InvalidArgument(f"{name} is not provided")
    return key


ON_COMPACTED = ("cancel", "resync", "digest")     # watch_create on_compacted (SPEC.md section 7.7)


class WatchSpec:
    """A validated watch_create body (SPEC.md, "watch_create").

    ``end`` is the watch index's form of the range: None for the single key `key`, KEY_INFINITY
    for "every key from `key`", else range_end."""

    __slots__ = ("watch_id", "key", "range_end", "end", "start_revision", "prev_kv",
                 "filter_bits", "progress_notify", "fragment", "initial_state", "on_compacted", "verify", "vfilter")

    def __init__(self, body: dict):
        self.watch_id = get_int(body, "watch_id", 0, 0, MAX_WATCH_ID)
        # etcd's watch server: an empty key means b"\x00", the smallest key (so key "" with
        # range_end "\x00" watches everything) (issue #8.14).  Reads and writes still refuse it.
        self.key = get_bytes(body, "key", b"", MAX_KEY_BYTES) or b"\x00"
        self.range_end = get_bytes(body, "range_end", b"", MAX_KEY_BYTES + 1)
        self.start_revision = get_int(body, "start_revision")
        self.prev_kv = get_bool(body, "prev_kv")
        self.progress_notify = get_bool(body, "progress_notify")
        self.fragment = get_bool(body, "fragment")
        # A verified stream (SPEC.md 7.10): its bookmarks carry the hash of its events.
        self.verify = get_bool(body, "verify")
        filters = body.get("filters", [])
        if not isinstance(filters, list) or len(filters) > 2:
            raise InvalidArgument("filters must be a list of NOPUT / NODELETE")
        bits = 0
        for f in filters:
            if f not in FILTER_BITS:
                raise InvalidArgument(f"unknown filter {str(f)[:32]!r}")
            bits |= FILTER_BITS[f]
        self.filter_bits = bits
        # keys_only / value_prefix / value_equals / max_value_bytes (SPEC.md 7.8): one shared
        # ValueFilter, None for a plain watch.
        self.vfilter = valuefilter.from_body(body)
        # The index keeps single keys in a table (end None) and needs a finite from-key end.
        _, end = key_range(self.key, self.range_end)
        self.end = None if not self.range_end else KEY_INFINITY if end is None else end
        # Issue #16 (SPEC.md section 7.7): the range's state at R first, then changes after R;
        # and what a compacted next revision does (etcd: cancel).
        self.initial_state = get_bool(body, "initial_state")
        on_compacted = body.get("on_compacted", "cancel")
        if on_compacted not in ON_COMPACTED:
            raise InvalidArgument("on_compacted must be one of " + ", ".join(ON_COMPACTED))
        self.on_compacted = on_compacted
        if self.initial_state and self.start_revision:
            raise InvalidArgument("initial_state starts at the current revision: it takes no start_revision")

    @property
    def empty_range(self) -> bool:
        """etcd: key >= range_end (other than the from-key marker) can never match."""
        return self.end is not None and range_is_empty(self.key, self.end)

    def to_wire(self) -> dict:
        filters = [f for f, bit in FILTER_BITS.items() if self.filter_bits & bit]
        wire = {"watch_id": self.watch_id, "key": self.key, "range_end": self.range_end,
                "start_revision": self.start_revision, "prev_kv": self.prev_kv,
                "filters": filters, "progress_notify": self.progress_notify, "fragment": self.fragment,
                **({"initial_state": True} if self.initial_state else {}),
                **({"on_compacted": self.on_compacted} if self.on_compacted != "cancel" else {}),
                **({"verify": True} if self.verify else {})}
        if self.vfilter is not None:
            wire.update(self.vfilter.opts)
        return wire


def _watch_create(body, where: str) -> WatchSpec:
    return WatchSpec(body)


def _watch_hash(body, where: str) -> dict:
    """watch_hash (SPEC.md 7.10): the stream hash a verified watch of this spec starting at
    start_revision would carry in a bookmark at `revision` (0: the current one)."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where} must be a map, got {type(body).__name__}")
    # A keys-only / value-predicate watch's events are hashed as delivered (SPEC.md 7.8, 7.10).
    known = ("key", "range_end", "filters", "start_revision", "revision",
             "keys_only", "value_prefix", "value_equals", "max_value_bytes")
    unknown = [k for k in body if k not in known]
    if unknown:
        raise InvalidArgument(f"{where} has unknown field {str(unknown[0])[:32]!r}")
    spec = WatchSpec({k: body[k] for k in known if k in body and k != "revision"})
    if spec.start_revision < 1:
        raise InvalidArgument(f"{where}.start_revision must be at least 1")
    return {"spec": spec, "start_revision": spec.start_revision, "revision": get_int(body, "revision")}


def _watch_cancel(body, where: str) -> dict:
    # -1 is accepted: it is the id of the session-wide progress response, never of a watch, so
    # cancelling it gets the idempotent "canceled" reply like any unknown id.
    return {"watch_id": get_int(body, "watch_id", 0, -1, MAX_WATCH_ID)}


def _watch_progress(body, where: str) -> dict:
    """watch_id: None (absent, nil or -1) asks for every watch of the session; an id asks for
    that watch alone (SPEC.md "watch_progress", section 7.9)."""
    wid = body.get("watch_id")
    if wid is None or (type(wid) is int and wid == -1):
        return {"watch_id": None}
    return {"watch_id": get_int(body, "watch_id", 0, 1, MAX_WATCH_ID)}


def _ack(body, where: str) -> dict:
    return {"bytes": get_int(body, "bytes")}


def _get_str(body: dict, name: str, max_bytes: int) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise InvalidArgument(f"{name} must be a string")
    if len(v.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(f"{name} is longer than {max_bytes} bytes")
    return v


def _hello(body, where: str) -> dict:
    """user / password: optional credentials (SPEC.md section 13); None when absent."""
    return {"version": get_int(body, "version", 0, 0, 1 << 31),
            "client": str(body.get("client", ""))[:64],   # a name for logs, any type
            "user": _get_str(body, "user", MAX_AUTH_NAME_BYTES),
            "password": _get_str(body, "password", MAX_PASSWORD_BYTES),
            # The client's own bound on unconsumed bytes (0: the fan-out's window), SPEC.md "ack"
            "window_bytes": get_int(body, "window_bytes", 0, 0, 1 << 62)}


# Alarms (etcd's AlarmRequest): a disarm names one alarm type, or "" for every active alarm.
ALARM_NAMES = ("NOSPACE",)
ALARM_LIST: dict = {}
ALARM_DISARM = {"alarm": (("",) + ALARM_NAMES, "")}
_ALARM_OPS = {"alarm_list": lambda body, where: check_fields(body, ALARM_LIST, where),
              "alarm_disarm": lambda body, where: check_fields(body, ALARM_DISARM, where)}

# Defrag and snapshots (SPEC.md "Defrag, snapshots"): a snapshot token is the 32 lowercase hex
# characters snapshot_begin returned; offset a byte offset into the snapshot.
SNAPSHOT_TOKEN_CHARS = 32


def _snapshot_read(body, where: str) -> dict:
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where} must be a map, got {type(body).__name__}")
    r = check_fields({k: v for k, v in body.items() if k != "token"}, {"offset": ("uint", REQUIRED)}, where)
    if "token" not in body:
        raise InvalidArgument(f"{where}.token is required")
    t = r["token"] = body["token"]
    if not isinstance(t, str) or len(t) != SNAPSHOT_TOKEN_CHARS or t.strip("0123456789abcdef"):
        raise InvalidArgument(f"{where}.token must be the {SNAPSHOT_TOKEN_CHARS} hex characters "
                              f"snapshot_begin returned, got {t!r:.40}")
    return r


_MAINTENANCE_OPS = {"defrag": lambda body, where: check_fields(body, {}, where),
                    "snapshot_begin": lambda body, where: check_fields(body, {}, where),
                    "snapshot_read": _snapshot_read}

_INFO_OPS = {"status": lambda body, where: check_fields(body, {}, where),
             "health": lambda body, where: check_fields(body, {}, where),
             "member_list": lambda body, where: check_fields(body, {}, where),
             # revision 0: the current one (etcd's HashKV)
             "hash_kv": lambda body, where: check_fields(body, {"revision": ("uint", 0)}, where),
             # microseconds since the Unix epoch (SPEC.md "revision_at_time", issue #16)
             "revision_at_time": lambda body, where: check_fields(body, {"time_us": ("uint", REQUIRED)}, where),
             "watch_hash": _watch_hash}

_NORMALIZERS = {**_STORE_OPS, **_LEASE_CLOCK_OPS, **_AUTH_OPS, "watch_create": _watch_create, "watch_cancel": _watch_cancel,
                "watch_progress": _watch_progress, "ack": _ack, "hello": _hello, **_ALARM_OPS, **_MAINTENANCE_OPS, **_INFO_OPS}


def normalize(op: str, body):
    """Validate the body of client op `op`; return it with every default filled in.

    range / put / delete_range / compact -> dict; txn -> dict whose success and failure are
    lists of (op, normalized body); watch_create -> WatchSpec; watch_cancel -> {"watch_id"};
    watch_progress -> {"watch_id": int | None}; ack -> {"bytes"}; hello -> {"version", "client", "user", "password", "window_bytes"}; an auth op -> dict
    with every field of its schema (absent optional ones None).  Raises InvalidArgument."""
    if not isinstance(op, str) or op not in _NORMALIZERS:
        raise InvalidArgument(f"unknown op {op!r}")
    if op not in STORE_OPS and op not in _LEASE_CLOCK_OPS and not isinstance(body, dict):
        raise InvalidArgument("body must be a map")    # decode_request's words for the same fault
    return _NORMALIZERS[op](body, op)
