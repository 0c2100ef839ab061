"""Every zwatch message, defined once (SPEC.md is the language-neutral text of this module).

Wire format
-----------
Every message is ONE ZeroMQ frame holding one msgpack value (keys/values as bin, names as
str, no int map keys).  A ROUTER in front adds its routing frames; replies carry them back.

Client -> fan-out (DEALER -> ROUTER)::

    [op: str, req_id: int, body: map]

    op in: hello, ping, ack, bye, status, range, put, delete_range, txn, compact,
           watch_create, watch_cancel, watch_progress, lease_grant, lease_revoke,
           lease_keepalive, lease_timetolive, lease_leases,
           auth_enable, auth_disable, auth_status, user_add, user_get, user_list, user_delete,
           user_change_password, user_grant_role, user_revoke_role, role_add, role_get,
           role_list, role_delete, role_grant_permission, role_revoke_permission,
           alarm_list, alarm_disarm

    ack {"bytes": n}: flow control.  n = total bytes of frames received on this session.  A
    fan-out keeps at most its session window (default 8 MiB) of watch frames unacknowledged;
    beyond it the session's watches become victims and catch up later from history.  Clients
    should ack at least every 1 MiB received (and with every ping).

Fan-out -> client::

    ["ok",  req_id, body: map]                reply to a request
    ["err", req_id | nil, {"code", "message", ...}]   error reply (nil: not tied to a request)
    ["w",   0, [watch_response, ...]]         watch responses, in order (see below)
    ["pong", req_id, {"revision": R}]         heartbeat answer

A watch_response is either a control map (created / canceled / error)::

    {"watch_id", "created": bool, "canceled": bool, "cancel_reason": str,
     "compact_revision": int, "header": {"revision": R}}

or an event array, the hot path, shared by every watch of the session it names::

    [watch_ids: [int], header_revision: int, events: [event], fragment: bool]

    event   = [type, kv] or [type, kv, prev_kv]        type 0 = PUT, 1 = DELETE
    kv      = [key, create_revision, mod_revision, version, value, lease]

An event array with no events is a progress notification at header_revision (etcd's
semantics: every event <= header_revision was delivered).  watch_ids [-1] answers
watch_progress for the whole session.

Internal messages (actor <-> actor) are in the same envelope; see the actor modules.
"""
from __future__ import annotations

import msgpack

from . import errors
from .errors import InvalidArgument, ZwatchError
from .limits import MAX_KEY_BYTES, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, MAX_REVISION
# Request bodies are validated in zwatch.requests; these names are kept here for their users.
from .requests import (FILTER_BITS, FILTER_NODELETE, FILTER_NOPUT, KEY_INFINITY,  # noqa: F401
                       WatchSpec, get_bool, get_bytes, get_int, get_key, prefix_end)

PUT, DELETE = 0, 1
EVENT_TYPE_NAMES = ("PUT", "DELETE")

# Ops a client may send, and who serves them.
WRITE_OPS = frozenset({"put", "delete_range", "txn", "compact", "lease_grant", "lease_revoke"})
READ_OPS = frozenset({"range"})
# Served by the writer from its lease clock (memory), without a commit.
LEASE_CLOCK_OPS = frozenset({"lease_keepalive", "lease_timetolive", "lease_leases"})
WATCH_OPS = frozenset({"watch_create", "watch_cancel", "watch_progress"})
SESSION_OPS = frozenset({"hello", "ping", "ack", "bye", "status"})
# Authentication and authorization (SPEC.md section 13): forwarded to the writer, which keeps the
# users and roles in LMDB (user_add / user_change_password after the fan-out hashed the password).
AUTH_OPS = frozenset({"auth_enable", "auth_disable", "auth_status",
                      "user_add", "user_get", "user_list", "user_delete", "user_change_password",
                      "user_grant_role", "user_revoke_role",
                      "role_add", "role_get", "role_list", "role_delete",
                      "role_grant_permission", "role_revoke_permission"})
# Alarms (SPEC.md "Alarms"): answered by the writer at once, a disarm committed on its own.
ALARM_OPS = frozenset({"alarm_list", "alarm_disarm"})
# Defrag (writer: holds writes while it swaps a compacting copy in) and snapshots (syncer: a
# consistent copy pulled in chunks, one reply per request).  SPEC.md "Defrag, snapshots".
DEFRAG_OPS = frozenset({"defrag"})
SNAPSHOT_OPS = frozenset({"snapshot_begin", "snapshot_read"})
# Answered by the fan-out itself from what its pings learnt (SPEC.md "health", "member_list").
FANOUT_INFO_OPS = frozenset({"health", "member_list"})
# A hash of the store up to a revision (syncer), to compare stores or a store over time.
# watch_hash: the hash a verified watch's bookmark carries, computed from history (SPEC.md 7.10).
HASH_OPS = frozenset({"hash_kv", "watch_hash"})
# Durable named cursors (SPEC.md 6.2): forwarded to the writer, which keeps them in LMDB (written
# in its group commit) and holds compaction back at the oldest one.
CURSOR_OPS = frozenset({"cursor_put", "cursor_get", "cursor_list", "cursor_delete"})
# Served by the syncer from the time index (SPEC.md "revision_at_time", issue #16).
TIME_OPS = frozenset({"revision_at_time"})
CLIENT_OPS = (WRITE_OPS | READ_OPS | LEASE_CLOCK_OPS | WATCH_OPS | SESSION_OPS | AUTH_OPS | ALARM_OPS
              | DEFRAG_OPS | SNAPSHOT_OPS | FANOUT_INFO_OPS | HASH_OPS | CURSOR_OPS | TIME_OPS)

def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _refuse_ext(code, data):
    raise InvalidArgument(f"msgpack ext type {code} is not part of the protocol")


def unpack(raw: bytes, max_bytes: int = MAX_REQUEST_BYTES):
    """Decode untrusted bytes.  Any malformation becomes InvalidArgument, never another error."""
    if len(raw) > max_bytes:
        raise errors.ResourceExhausted(f"message of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(
            raw, raw=False, strict_map_key=True, use_list=True, ext_hook=_refuse_ext,
            max_str_len=max_bytes, max_bin_len=max_bytes,
            max_array_len=max_bytes, max_map_len=max_bytes // 2, max_ext_len=0,
        )
    except ZwatchError:
        raise
    except Exception as exc:  # msgpack raises a zoo: ExtraData, FormatError, StackError, ValueError...
        raise InvalidArgument(f"malformed msgpack: {type(exc).__name__}: {exc}") from None


def decode_request(raw: bytes, ops=CLIENT_OPS, list_body_ops=frozenset()):
    """[op, req_id, body] -> (op, req_id, body).  Raises ZwatchError with the req_id attached
    in .details["req_id"] when the id could be read (so the error reply can name it)."""
    msg = unpack(raw)
    if not isinstance(msg, list) or len(msg) != 3:
        raise InvalidArgument("a request is [op, req_id, body]")
    op, req_id, body = msg
    if not isinstance(req_id, int) or isinstance(req_id, bool) or not 0 <= req_id <= MAX_REVISION:
        raise InvalidArgument("req_id must be an integer in [0, 2**63)")
    if not isinstance(op, str):
        raise InvalidArgument("op must be a string", req_id=req_id)
    if op not in ops:
        raise errors.Unimplemented(f"unknown op {op[:64]!r}", req_id=req_id)
    if not isinstance(body, dict) and not (op in list_body_ops and isinstance(body, list)):
        raise InvalidArgument("body must be a map", req_id=req_id)
    return op, req_id, body


def encode_request(op: str, req_id: int, body: dict) -> bytes:
    return pack([op, req_id, body])


def encode_ok(req_id, body) -> bytes:
    return pack(["ok", req_id, body])


def encode_error(req_id, err: ZwatchError) -> bytes:
    body = err.to_wire()
    body.pop("req_id", None)
    return pack(["err", req_id, body])


def error_req_id(err: ZwatchError):
    return err.details.get("req_id")


def control_response(watch_id: int, revision: int, *, created=False, canceled=False,
                     cancel_reason: str = "", compact_revision: int = 0, cancel_code: str = "") -> dict:
    """cancel_code: the error code of a cancellation the client must not resume from (e.g.
    PERMISSION_DENIED); absent from the map when empty, so other responses keep their bytes."""
    d = {"watch_id": watch_id, "created": created, "canceled": canceled,
         "cancel_reason": cancel_reason, "compact_revision": compact_revision,
         "header": {"revision": revision}}
    if cancel_code:
        d["cancel_code"] = cancel_code
    return d


def pack_watch_responses(ids: list, header_rev: int, events: list, fragment: bool,
                         limit: int = MAX_RESPONSE_BYTES) -> list[bytes]:
    """Encode [ids, header_rev, events, fragment] response(s), at most `limit` bytes each when possible.

    A response never splits one revision's events (Atomic): an oversized batch is cut at
    revision boundaries.  A single revision larger than the limit is sent whole, unless the
    watch asked for fragments (etcd's fragment option): then it is cut into pieces marked
    fragment=True except the last, which the client joins.
    """
    return [resp for _, resp in pack_watch_response_parts(ids, header_rev, events, fragment, limit)]


def pack_watch_response_parts(ids: list, header_rev: int, events: list, fragment: bool,
                              limit: int = MAX_RESPONSE_BYTES) -> list[tuple[int, bytes]]:
    """pack_watch_responses, each response with the revision of its first event.

    A server that may drop a response unsent (a stuck session) must know where each one starts:
    the watchers resume from the first revision of the first response they did not get, not
    from the first revision of the whole list (that replayed the parts already sent)."""
    whole = pack([ids, header_rev, events, False])
    # Cut only at revision boundaries (and, with fragment, inside one revision): a list of one
    # revision without fragment goes out whole, without sizing its events one by one (a lease
    # revoke of 100,000 keys is one such revision).
    if len(whole) <= limit or len(events) <= 1 or (not fragment and events[0][1][2] == events[-1][1][2]):
        return [(events[0][1][2] if events else header_rev, whole)]
    head = _response_head(ids, header_rev)
    out, run, size, run_rev = [], [], 0, None
    for ev in events:
        b = pack(ev)                       # each event packed once: sized here, spliced below
        rev = ev[1][2]
        if run and rev != run_rev and size + len(b) > limit:
            out.extend(_pack_revision_run(head, run, fragment, limit))
            run, size = [], 0
        run.append((rev, b))
        size += len(b)
        run_rev = rev
    if run:
        out.extend(_pack_revision_run(head, run, fragment, limit))
    return out


# ---- watch frames (server side): ready-encoded responses spliced into one frame
_W_HEAD = b"\x93\xa1w\x00"       # ["w", 0, ... : array of 3, "w", 0; the array of responses follows
_array_header = msgpack.Packer().pack_array_header


def watch_frame(responses: list) -> bytes:
    """["w", 0, [response, ...]] from responses that are already encoded (never re-encoded)."""
    return _W_HEAD + _array_header(len(responses)) + b"".join(responses)


def pack_progress(ids: list, revision: int, ext: dict | None = None) -> bytes:
    """An event array without events: a progress notification for ids at revision (with ext,
    SPEC.md 7.2's 5th element, for a watch kind that carries more: a verified stream's hash)."""
    return pack([ids, revision, [], False, ext] if ext else [ids, revision, [], False])


def pack_control(watch_id: int, revision: int, **fields) -> bytes:
    """A control response (section 7.1 of SPEC.md), encoded, to go into a watch frame."""
    return pack(control_response(watch_id, revision, **fields))


def _response_head(ids: list, header_rev: int) -> bytes:
    """The bytes of an event array before its events: [ids, header_rev, ... (array of 4)."""
    return b"\x94" + pack(ids) + pack(header_rev)


def _event_array(head: bytes, packed_events: list, fragment: bool) -> bytes:
    """pack([ids, header_rev, events, fragment]) from its head and the events already packed
    (msgpack is compositional: the same bytes as packing the whole)."""
    return head + _array_header(len(packed_events)) + b"".join(packed_events) + (b"\xc3" if fragment else b"\xc2")


def _pack_revision_run(head: bytes, run: list, fragment: bool, limit: int) -> list[tuple[int, bytes]]:
    """run: [(revision, packed event)] of whole revisions -> [(first revision, response)]: one
    response, or, when it is over the limit and the watch asked for fragments, pieces of it."""
    size = len(head) + 6 + sum(len(b) for _, b in run)   # + the events' array header and the flag
    if size <= limit or not fragment or len(run) <= 1:
        return [(run[0][0], _event_array(head, [b for _, b in run], False))]
    pieces, piece, size = [], [], 0
    for rev, b in run:
        if piece and size + len(b) > limit:
            pieces.append(piece)
            piece, size = [], 0
        piece.append((rev, b))
        size += len(b)
    pieces.append(piece)
    return [(p[0][0], _event_array(head, [b for _, b in p], i < len(pieces) - 1)) for i, p in enumerate(pieces)]


# ---- decoding server frames (client side)
# What a client receives from a fan-out: ["ok" | "err" | "w" | "pong", req_id | nil, body].  The
# server is trusted more than a client is (no size limits: a single revision may exceed the
# response limit), but a frame that is not of that shape is refused with InvalidArgument, never
# another exception, so that the client's I/O thread can skip it and live on.
def decode_server_frame(raw: bytes) -> tuple[str, int | None, object]:
    """One frame from a fan-out -> (kind, req_id, body); "w" bodies are lists of watch responses."""
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo: ExtraData, FormatError, StackError, ValueError...
        raise InvalidArgument(f"malformed msgpack from the server: {type(exc).__name__}: {exc}") from None
    if not isinstance(msg, list) or len(msg) != 3:
        raise InvalidArgument("a server frame is [kind, req_id, body]")
    kind, req_id, body = msg
    if not isinstance(kind, str):
        raise InvalidArgument("the kind of a server frame must be a string")
    if req_id is not None and (not isinstance(req_id, int) or isinstance(req_id, bool)):
        raise InvalidArgument("the req_id of a server frame must be an integer or nil")
    if kind == "w" and not isinstance(body, list):
        raise InvalidArgument("the body of a watch frame must be a list of watch responses")
    return kind, req_id, body


# The heads of reply frames as msgpack writes them (fixarray of 3, fixstr kind), by their first
# 4 bytes, and the sizes of msgpack's unsigned ints (0xcc..0xcf): reply_head reads a
# req_id without the Unpacker.
_REPLY_HEADS = {head[:4]: (head, kind) for head, kind in
                ((b"\x93\xa2ok", "ok"), (b"\x93\xa3err", "err"), (b"\x93\xa4pong", "pong"))}
_UINT_SIZES = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}


def reply_head(raw: bytes) -> tuple[str, int | None] | None:
    """(kind, req_id) of a reply frame ["ok" | "err" | "pong", req_id, body] from its first bytes
    only (a range reply may be megabytes): a fan-out's /metrics settles requests by it, ~0.3 us
    (msgpack's Unpacker: ~1.3 us, for any other head).  None when not of that shape."""
    known = _REPLY_HEADS.get(raw[:4])
    if known is not None and len(raw) > len(known[0]) and raw.startswith(known[0]):
        head, kind = known
        i = len(head)
        first = raw[i]
        if first < 0x80:                               # positive fixint
            return kind, first
        if first == 0xc0:                              # nil
            return kind, None
        size = _UINT_SIZES.get(first)
        if size is not None and len(raw) >= i + 1 + size:
            return kind, int.from_bytes(raw[i + 1:i + 1 + size], "big")
    try:
        u = msgpack.Unpacker(raw=False)
        u.feed(raw[:16])               # array header, kind (<= 5 bytes), req_id (<= 9 bytes)
        if u.read_array_header() != 3:
            return None
        kind, req_id = u.unpack(), u.unpack()
    except Exception:                  # msgpack's zoo (OutOfData, FormatError...): not a reply
        return None
    return (kind, req_id) if isinstance(kind, str) else None


def reply_error_code(raw: bytes) -> str:
    """The code of an "err" reply (small frames: decoded whole); INTERNAL if unreadable."""
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=False)[2]
        code = body.get("code")
    except Exception:
        return errors.INTERNAL
    return code if isinstance(code, str) else errors.INTERNAL
