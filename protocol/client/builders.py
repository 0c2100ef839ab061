"""What the client sends: endpoint lists, txn comparisons and ops (python-etcd3 style), range bodies.

    Txn(compare=[ModRevision("k") == 0], success=[Put("k", "v")], failure=[Get("k")])
"""
from __future__ import annotations

from .. import messages, settings

DEFAULT_ENDPOINT = settings.default("ZWATCH_ENDPOINTS")[0]


def to_bytes(x) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"keys and values are bytes or str, not {type(x).__name__}")


def endpoints_from_env(endpoints=None) -> list[str]:
    if endpoints is None:
        endpoints = settings.get("ZWATCH_ENDPOINTS")
    if isinstance(endpoints, str):
        endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
    out = []
    for e in endpoints:
        out.append(e if "://" in e else f"tcp://{e}")
    if not out:
        raise ValueError("no endpoints given")
    return out


class _Target:
    target = ""
    field = ""

    def __init__(self, key, range_end=None):
        self.key = to_bytes(key)
        self.range_end = to_bytes(range_end) if range_end is not None else b""

    def _cmp(self, result, value):
        if self.target == "VALUE":
            value = to_bytes(value)
        return {"key": self.key, "range_end": self.range_end, "target": self.target, "result": result,
                self.field: value}

    def __eq__(self, other):
        return self._cmp("EQUAL", other)

    def __ne__(self, other):
        return self._cmp("NOT_EQUAL", other)

    def __lt__(self, other):
        return self._cmp("LESS", other)

    def __gt__(self, other):
        return self._cmp("GREATER", other)

    __hash__ = None


class Value(_Target):
    target, field = "VALUE", "value"


class Version(_Target):
    target, field = "VERSION", "version"


class CreateRevision(_Target):
    target, field = "CREATE", "create_revision"


class ModRevision(_Target):
    target, field = "MOD", "mod_revision"


def range_body(key, range_end=None, *, prefix=False, from_key=False, revision=0, limit=0, keys_only=False,
                count_only=False, sort_order="NONE", sort_target="KEY", min_mod_revision=0, max_mod_revision=0,
                min_create_revision=0, max_create_revision=0) -> dict:
    key = to_bytes(key)
    body = {"key": key}
    if prefix:
        body["range_end"] = messages.prefix_end(key)
    elif from_key:
        body["range_end"] = b"\x00"
    elif range_end is not None:
        body["range_end"] = to_bytes(range_end)
    for name, v, default in (("revision", revision, 0), ("limit", limit, 0), ("keys_only", keys_only, False),
                             ("count_only", count_only, False), ("sort_order", sort_order, "NONE"),
                             ("sort_target", sort_target, "KEY"), ("min_mod_revision", min_mod_revision, 0),
                             ("max_mod_revision", max_mod_revision, 0), ("min_create_revision", min_create_revision, 0),
                             ("max_create_revision", max_create_revision, 0)):
        if v != default:
            body[name] = v
    return body


def Get(key, range_end=None, **kw) -> dict:
    return {"request_range": range_body(key, range_end, **kw)}


def Put(key, value, *, prev_kv=False, lease=0) -> dict:
    body = {"key": to_bytes(key), "value": to_bytes(value), "prev_kv": prev_kv}
    if lease:
        body["lease"] = lease_id_of(lease)
    return {"request_put": body}


def lease_id_of(lease) -> int:
    """A lease ID from an int or anything with an ``id`` (a Lease)."""
    return lease if isinstance(lease, int) else lease.id


def Delete(key, range_end=None, *, prefix=False, from_key=False, prev_kv=False) -> dict:
    body = range_body(key, range_end, prefix=prefix, from_key=from_key)
    body["prev_kv"] = prev_kv
    return {"request_delete_range": body}


def Txn(compare=(), success=(), failure=()) -> dict:
    return {"request_txn": {"compare": list(compare), "success": list(success), "failure": list(failure)}}


def value_filter_fields(keys_only=False, value_prefix=None, value_equals=None, max_value_bytes=None) -> dict:
    """A watch_create's keys-only / value-predicate fields (SPEC.md 7.8); only the ones set, so
    a plain watch's body is what it always was.  Values are bytes or str (UTF-8)."""
    body = {}
    if keys_only:
        body["keys_only"] = True
    if value_prefix is not None:
        body["value_prefix"] = to_bytes(value_prefix)
    if value_equals is not None:
        body["value_equals"] = to_bytes(value_equals)
    if max_value_bytes is not None:
        body["max_value_bytes"] = max_value_bytes
    return body
