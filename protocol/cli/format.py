"""etcdctl (v3.4) output, byte for byte where etcd has the same data.

The simple printer writes raw key/value bytes; ``-w json`` marshals like Go's encoding/json over
etcd's protobuf structs (snake_case tags, omitempty, bytes in base64, WatchResponse with its
untagged Go field names).
"""
from __future__ import annotations

import base64
import json
import math
import sys

from ..client import DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse


def write_line(data: bytes | str = b""):
    # Raw bytes: keys and values are printed as stored, like etcdctl (no decoding).
    sys.stdout.buffer.write((data.encode() if isinstance(data, str) else data) + b"\n")


def json_line(obj):
    # Go's encoding/json: compact, UTF-8 as is.
    write_line(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))


def hex_text(b: bytes) -> bytes:
    """etcdctl's --hex: every byte as \\xNN (its addHexPrefix over hex.EncodeToString)."""
    return "".join(f"\\x{x:02x}" for x in b).encode()


def _print_kv(kv, value_only=False, is_hex=False):
    k, v = (hex_text(kv.key), hex_text(kv.value)) if is_hex else (kv.key, kv.value)
    if not value_only:
        write_line(k)
    write_line(v)


def go_quote(b: bytes) -> str:
    """Go's %q of a []byte (strconv.Quote): what etcdctl puts in ETCD_WATCH_KEY / _VALUE."""
    out = ['"']
    for ch in b.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:                 # an invalid UTF-8 byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def humanize_bytes(n: int) -> str:
    """go-humanize's Bytes (SI units), as etcdctl prints the db size."""
    if n < 10:
        return f"{n} B"
    e = min(int(math.floor(math.log(n, 1000))), 6)
    val = math.floor(n / 1000 ** e * 10 + 0.5) / 10
    return f"{val:.{0 if val >= 10 else 1}f} {('B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB')[e]}"


# ---------------------------------------------------------------- etcd JSON (encoding/json over pb structs)
def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def j_header(h) -> dict:
    return {"revision": h.revision} if h.revision else {}


def j_kv(kv) -> dict:
    d = {}
    if kv.key:
        d["key"] = _b64(kv.key)
    for name in ("create_revision", "mod_revision", "version"):
        if getattr(kv, name):
            d[name] = getattr(kv, name)
    if kv.value:
        d["value"] = _b64(kv.value)
    if kv.lease:
        d["lease"] = kv.lease
    return d


def j_range(r: RangeResponse) -> dict:
    d = {"header": j_header(r.header)}
    if r.kvs:
        d["kvs"] = [j_kv(kv) for kv in r.kvs]
    if r.more:
        d["more"] = True
    if r.count:
        d["count"] = r.count
    return d


def j_put(r: PutResponse) -> dict:
    d = {"header": j_header(r.header)}
    if r.prev_kv is not None:
        d["prev_kv"] = j_kv(r.prev_kv)
    return d


def j_del(r: DeleteRangeResponse) -> dict:
    d = {"header": j_header(r.header)}
    if r.deleted:
        d["deleted"] = r.deleted
    if r.prev_kvs:
        d["prev_kvs"] = [j_kv(kv) for kv in r.prev_kvs]
    return d


def j_txn(r: TxnResponse) -> dict:
    d = {"header": j_header(r.header)}
    if r.succeeded:
        d["succeeded"] = True
    if r.responses:
        # The oneof travels as Go's untagged interface field "Response" wrapping the variant's
        # struct, whose one field has no json tag either: Go's names (ResponsePut, ...).
        d["responses"] = [{"Response": _j_op(x)} for x in r.responses]
    return d


def _j_op(r) -> dict:
    if isinstance(r, RangeResponse):
        return {"ResponseRange": j_range(r)}
    if isinstance(r, PutResponse):
        return {"ResponsePut": j_put(r)}
    if isinstance(r, DeleteRangeResponse):
        return {"ResponseDeleteRange": j_del(r)}
    return {"ResponseTxn": j_txn(r)}


def j_watch(resp) -> dict:
    """clientv3.WatchResponse has no json tags: Go field names, no omitempty, nil Events -> null."""
    events = []
    for ev in resp.events:
        e = {}
        if ev.type == "DELETE":
            e["type"] = 1                          # PUT is 0 and omitted
        e["kv"] = j_kv(ev.kv)
        if ev.prev_kv is not None:
            e["prev_kv"] = j_kv(ev.prev_kv)
        events.append(e)
    # etcd's compacted cancel carries an empty, non-nil event list (printed []); others have nil.
    out = {"Header": j_header(resp.header), "Events": events or ([] if resp.compact_revision else None),
           "CompactRevision": resp.compact_revision, "Canceled": resp.canceled, "Created": resp.created}
    ext = getattr(resp, "ext", None)
    if ext is not None:
        # An initial state / resync response (SPEC.md section 7.7; not etcd's): its mark, and a
        # digest's unchanged keys (base64, as every key here).
        out["Mark"] = ext.get("mark")
        if resp.unchanged_keys:
            out["Unchanged"] = [_b64(k) for k in resp.unchanged_keys]
    return out


# ---------------------------------------------------------------- simple printer
def print_get(r: RangeResponse, value_only=False, count_only=False, is_hex=False):
    if count_only:
        write_line(str(r.count))                 # etcdctl refuses this in simple mode; a count is more useful
        return
    for kv in r.kvs:
        _print_kv(kv, value_only, is_hex)


def print_put(r: PutResponse, is_hex=False):
    write_line("OK")
    if r.prev_kv is not None:
        _print_kv(r.prev_kv, False, is_hex)


def print_del(r: DeleteRangeResponse, is_hex=False):
    write_line(str(r.deleted))
    for kv in r.prev_kvs:
        _print_kv(kv, False, is_hex)


def print_txn(r: TxnResponse, is_hex=False):
    write_line("SUCCESS" if r.succeeded else "FAILURE")
    for x in r.responses:
        write_line()
        if isinstance(x, RangeResponse):
            print_get(x, is_hex=is_hex)
        elif isinstance(x, PutResponse):
            print_put(x, is_hex)
        elif isinstance(x, DeleteRangeResponse):
            print_del(x, is_hex)
        else:
            print_txn(x, is_hex)


def print_watch(resp, is_hex=False):
    for ev in resp.events:
        write_line(ev.type)
        if ev.prev_kv is not None:
            _print_kv(ev.prev_kv, False, is_hex)
        _print_kv(ev.kv, False, is_hex)


# ---------------------------------------------------------------- leases (etcdctl's printer_simple.go / printJSON)
def lease_hex(lease_id: int) -> str:
    """Go's %016x of a LeaseID, as etcdctl prints every lease ID."""
    return f"{lease_id:016x}"


def print_lease_grant(r):
    write_line(f"lease {lease_hex(r.id)} granted with TTL({r.ttl}s)")


def print_lease_revoke(lease_id: int):
    write_line(f"lease {lease_hex(lease_id)} revoked")


def print_time_to_live(r, keys: bool):
    if r.granted_ttl == 0 and r.ttl == -1:
        write_line(f"lease {lease_hex(r.id)} already expired")
        return
    line = f"lease {lease_hex(r.id)} granted with TTL({r.granted_ttl}s), remaining({r.ttl}s)".encode()
    if keys:
        # Go's %v of a []string: the raw strings between brackets, separated by spaces.
        line += b", attached keys([" + b" ".join(r.keys) + b"])"
    write_line(line)


def print_keepalive(lease_id: int, ttl: int):
    write_line(f"lease {lease_hex(lease_id)} keepalived with TTL({ttl})")


def print_leases(ids: list[int]):
    write_line(f"found {len(ids)} leases")
    for lease_id in ids:
        write_line(lease_hex(lease_id))


# clientv3's lease responses embed *pb.ResponseHeader: its fields are printed at the top level,
# next to the response's own (untagged ID/TTL for grant and keep-alive, tagged for the others).
def j_lease_grant(r) -> dict:
    return {**j_header(r.header), "ID": r.id, "TTL": r.ttl, "Error": ""}


def j_lease_revoke(header) -> dict:
    return {"header": j_header(header)}          # pb.LeaseRevokeResponse itself


def j_time_to_live(r) -> dict:
    return {**j_header(r.header), "id": r.id, "ttl": r.ttl, "granted-ttl": r.granted_ttl,
            "keys": [_b64(k) for k in r.keys] or None}


def j_keepalive(header, lease_id: int, ttl: int) -> dict:
    return {**j_header(header), "ID": lease_id, "TTL": ttl}


def j_leases(header, ids: list[int]) -> dict:
    return {**j_header(header), "leases": [{"id": x} for x in ids]}


# etcd's texts of the lease and revision errors (rpctypes), which scripts match on.
ETCD_ERROR_TEXTS = {
    "LEASE_NOT_FOUND": "etcdserver: requested lease not found",
    "LEASE_EXISTS": "etcdserver: lease already exists",
    "LEASE_TTL_TOO_LARGE": "etcdserver: too large lease TTL",
    "COMPACTED": "etcdserver: mvcc: required revision has been compacted",
    "FUTURE_REVISION": "etcdserver: mvcc: required revision is a future revision",
}


def error_text(exc) -> str:
    """What follows ``Error: ``: etcd's text for the lease errors, the message alone when it is
    already etcd's (the auth errors: ``etcdserver: permission denied``), ``CODE: message`` otherwise."""
    message = getattr(exc, "message", "")
    if isinstance(message, str) and message.startswith("etcdserver: "):
        return message
    return ETCD_ERROR_TEXTS.get(getattr(exc, "code", None)) or str(exc)
