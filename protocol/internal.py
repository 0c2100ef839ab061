"""The internal actor-to-actor messages, each defined once, as code (SPEC.md section 12).

Like the ZeroMQ Guide's kvmsg (Clone pattern): one small class per message, its wire layout in
its docstring, ``encode()`` and ``decode()``.  Decoding validates shape, types and ranges and
raises zwatch.errors.InvalidArgument on anything else (never ``assert``, never another
exception type): a peer actor is trusted more than a client, but a frame that is not what this
module says must be refused, not crash the receiver.

Every message is one ZeroMQ frame holding one msgpack value ``[op, id, body]`` (names as str,
keys and values as bin), the same envelope as the client protocol (messages.py).  The bytes are
those the actors produced before this module existed, so old and new actors interoperate; the
unit tests pin one example of each.

Messages whose list grows with the number of watchers (sync, unsync, ev, synced, compacted) are
cut into several frames of bounded size (``encode_*`` return a list of frames): items are
independent, so a receiver handles each frame on its own (issue #8.3).

msgpack is imported only here, in messages.py (the client wire) and in the store's on-disk
layout.
"""
from __future__ import annotations

from typing import NamedTuple

import msgpack

from .errors import InvalidArgument, ZwatchError
from .limits import (MAX_AUTH_NAME_BYTES, MAX_KEY_BYTES, MAX_PERMS_PER_ROLE, MAX_REVISION,
                     MAX_ROLES_PER_USER)
from .requests import MAX_PASSWORD_HASH_CHARS, PERM_TYPES

_pack = msgpack.Packer(use_bin_type=True).pack

# A from-fan-out message is cut at about this size (the syncer refuses frames above
# MAX_REQUEST_BYTES); a from-syncer message at about MESSAGE_BYTES (one "ev" item alone may be
# bigger: it holds one ready-encoded response of up to a chunk's bytes).
SYNC_MESSAGE_BYTES = 256 * 1024
MESSAGE_BYTES = 1 << 20
# A ZeroMQ routing id (the fan-out's session key) is at most 255 bytes.
MAX_SESSION_BYTES = 255
_MIN_INT64 = -(1 << 63)

PUT, DELETE = 0, 1


# ---------------------------------------------------------------- decoding helpers
def _refuse_ext(code, data):
    raise InvalidArgument(f"msgpack ext type {code} is not part of the protocol")


def _unpack(raw, max_bytes: int | None = None):
    """Bytes -> msgpack value; every malformation becomes InvalidArgument."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"an internal message is bytes, not {type(raw).__name__}")
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidArgument(f"internal message of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=True, ext_hook=_refuse_ext)
    except ZwatchError:
        raise
    except Exception as exc:  # msgpack raises a zoo: ExtraData, FormatError, StackError, ValueError...
        raise InvalidArgument(f"malformed msgpack: {type(exc).__name__}: {exc}") from None


def _int(v, what: str, lo: int = 0, hi: int = MAX_REVISION) -> int:
    if type(v) is not int:          # bool is an int subclass: refused too
        raise InvalidArgument(f"{what} must be an integer, not {type(v).__name__}")
    if not lo <= v <= hi:
        raise InvalidArgument(f"{what} = {v} is outside [{lo}, {hi}]")
    return v


def _bool(v, what: str) -> bool:
    if type(v) is not bool:
        raise InvalidArgument(f"{what} must be a boolean, not {type(v).__name__}")
    return v


def _bytes(v, what: str, max_len: int | None = None) -> bytes:
    if type(v) is not bytes:
        raise InvalidArgument(f"{what} must be bytes (msgpack bin), not {type(v).__name__}")
    if max_len is not None and len(v) > max_len:
        raise InvalidArgument(f"{what} is {len(v)} bytes, above the limit of {max_len}")
    return v


def _list(v, what: str, arity: int | None = None) -> list:
    if type(v) is not list:
        raise InvalidArgument(f"{what} must be a list, not {type(v).__name__}")
    if arity is not None and len(v) != arity:
        raise InvalidArgument(f"{what} has {len(v)} fields, expected {arity}")
    return v


def _envelope(raw, op: str, max_bytes: int | None = None) -> tuple[int, object]:
    """raw -> (id, body) of an [op, id, body] frame whose op must be `op`."""
    msg = _list(_unpack(raw, max_bytes), "an internal message", 3)
    if msg[0] != op or type(msg[0]) is not str:
        raise InvalidArgument(f"expected a {op!r} message, got {str(msg[0])[:32]!r}")
    return _int(msg[1], f"{op} id"), msg[2]


def chunk_by_size(items, size_of, max_bytes: int):
    """Split items into lists whose estimated encoded size stays under max_bytes (at least one
    item each, so an item larger than the bound travels alone)."""
    chunk, size = [], 0
    for item in items:
        n = size_of(item)
        if chunk and size + n > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += n
    if chunk:
        yield chunk


def _frames(op: str, items, size_of, max_bytes: int, mid: int = 0) -> list[bytes]:
    return [_pack([op, mid, chunk]) for chunk in chunk_by_size(items, size_of, max_bytes)]


def _list_body(raw_or_body, op: str) -> list:
    """A list body, from the raw frame or from a body already decoded by messages.decode_request."""
    if isinstance(raw_or_body, (bytes, bytearray, memoryview)):
        _, raw_or_body = _envelope(raw_or_body, op)
    return _list(raw_or_body, f"the body of {op}")


# ---------------------------------------------------------------- writer PUB
def decode_kv(kv, what: str = "kv") -> list:
    """kv = [key: bin, create_revision, mod_revision, version, value: bin, lease]"""
    _list(kv, what, 6)
    _bytes(kv[0], f"{what} key", MAX_KEY_BYTES)
    _int(kv[1], f"{what} create_revision")
    _int(kv[2], f"{what} mod_revision")
    _int(kv[3], f"{what} version")
    _bytes(kv[4], f"{what} value")
    _int(kv[5], f"{what} lease", _MIN_INT64)
    return kv


def _kv_ok(kv) -> bool:
    """decode_kv's conditions as one expression: True exactly when decode_kv would not raise."""
    return (type(kv) is list and len(kv) == 6 and type(kv[0]) is bytes and len(kv[0]) <= MAX_KEY_BYTES
            and type(kv[4]) is bytes and type(kv[1]) is int and 0 <= kv[1] <= MAX_REVISION
            and type(kv[2]) is int and 0 <= kv[2] <= MAX_REVISION and type(kv[3]) is int
            and 0 <= kv[3] <= MAX_REVISION and type(kv[5]) is int and _MIN_INT64 <= kv[5] <= MAX_REVISION)


# ---------------------------------------------------------------- auth changes and state
# One auth change (SPEC.md section 13), as the writer publishes it and AuthState.apply takes it:
#   ["enabled", bool]
#   ["user", name, [password_hash | nil, [role, ...]] | nil]       nil: the user is deleted
#   ["role", name, [[permType, key: bin, range_end: bin], ...] | nil]   nil: the role is deleted
def _name(v, what: str) -> str:
    if type(v) is not str or not v:
        raise InvalidArgument(f"{what} must be a non-empty string")
    if len(v.encode("utf-8", "surrogatepass")) > MAX_AUTH_NAME_BYTES:
        raise InvalidArgument(f"{what} is longer than {MAX_AUTH_NAME_BYTES} bytes")
    return v


def decode_user_record(rec, what: str = "a user") -> list:
    """[password_hash | nil, [role, ...]]"""
    _list(rec, what, 2)
    if rec[0] is not None and (type(rec[0]) is not str or len(rec[0]) > MAX_PASSWORD_HASH_CHARS):
        raise InvalidArgument(f"{what}'s password hash must be nil or a string of at most {MAX_PASSWORD_HASH_CHARS}")
    roles = _list(rec[1], f"{what}'s roles")
    if len(roles) > MAX_ROLES_PER_USER:
        raise InvalidArgument(f"{what} has {len(roles)} roles, the limit is {MAX_ROLES_PER_USER}")
    for r in roles:
        _name(r, f"{what}'s role")
    return rec


def decode_role_perms(perms, what: str = "a role") -> list:
    """[[permType, key: bin, range_end: bin], ...]"""
    _list(perms, f"{what}'s permissions")
    if len(perms) > MAX_PERMS_PER_ROLE:
        raise InvalidArgument(f"{what} has {len(perms)} permissions, the limit is {MAX_PERMS_PER_ROLE}")
    for perm in perms:
        _list(perm, f"a permission of {what}", 3)
        if type(perm[0]) is not str or perm[0] not in PERM_TYPES:
            raise InvalidArgument(f"a permission type must be one of {', '.join(PERM_TYPES)}, not {perm[0]!r:.32}")
        _bytes(perm[1], "a permission key", MAX_KEY_BYTES)
        _bytes(perm[2], "a permission range_end", MAX_KEY_BYTES + 1)
    return perms


def decode_auth_change(change) -> list:
    """Validate one auth change (the layouts above); returns it."""
    if type(change) is not list or not change:
        raise InvalidArgument("an auth change is a non-empty list")
    kind = change[0]
    if kind == "enabled" and type(kind) is str:
        _list(change, "an 'enabled' auth change", 2)
        _bool(change[1], "auth enabled")
    elif kind == "user" and type(kind) is str:
        _list(change, "a 'user' auth change", 3)
        _name(change[1], "a user name")
        if change[2] is not None:
            decode_user_record(change[2], f"user {change[1][:32]!r}")
    elif kind == "role" and type(kind) is str:
        _list(change, "a 'role' auth change", 3)
        _name(change[1], "a role name")
        if change[2] is not None:
            decode_role_perms(change[2], f"role {change[1][:32]!r}")
    elif kind == "perm_grant" and type(kind) is str:
        _list(change, "a 'perm_grant' auth change", 3)
        _name(change[1], "a role name")
        decode_role_perms([change[2]], f"role {change[1][:32]!r}")
    elif kind == "perm_revoke" and type(kind) is str:
        _list(change, "a 'perm_revoke' auth change", 4)
        _name(change[1], "a role name")
        _bytes(change[2], "a permission key", MAX_KEY_BYTES)
        _bytes(change[3], "a permission range_end", MAX_KEY_BYTES + 1)
    else:
        raise InvalidArgument(f"unknown auth change {str(kind)[:32]!r}")
    return change


def decode_auth_state(body) -> dict:
    """The whole auth state (AuthState.to_wire(), the syncer's auth_state reply)::

        {"enabled": bool, "revision": auth_revision,
         "users": {name: [password_hash | nil, [role, ...]]}, "roles": {name: [[permType, key, range_end], ...]}}

    Validated; returned as is."""
    if type(body) is not dict:
        raise InvalidArgument("an auth state is a map")
    _bool(body.get("enabled"), "auth state enabled")
    _int(body.get("revision"), "auth state revision")
    users, roles = body.get("users"), body.get("roles")
    if type(users) is not dict or type(roles) is not dict:
        raise InvalidArgument("an auth state's users and roles are maps")
    for name, rec in users.items():
        decode_user_record(rec, f"user {_name(name, 'a user name')[:32]!r}")
    for name, perms in roles.items():
        decode_role_perms(perms, f"role {_name(name, 'a role name')[:32]!r}")
    return body


class Publish(NamedTuple):
    """The writer's PUB frame: one per group commit, per compaction start, and as a heartbeat::

        ["pub", prev_revision, last_revision, [[revision, [event, ...]], ...], compact_revision,
         [auth_revision, [[after_revision, change], ...]]]
        event = [type, kv, prev_kv | nil]      type 0 = PUT, 1 = DELETE
        kv    = [key, create_revision, mod_revision, version, value, lease]

    prev_revision is the last_revision of the writer's previous publish: a subscriber whose own
    last revision is below it has missed publishes and recovers them from history.  Heartbeats
    carry no revisions and prev_revision == last_revision.

    The 6th element is the auth revision after this publish and the auth changes it commits
    (decode_auth_change), in commit order: [after_revision, change] applies after the events of
    KV revision after_revision and before the next revision's (prev <= after_revision <= last,
    never decreasing).  The changes are the last len(changes) auth revisions, ending at
    auth_revision.  It is left out while the auth revision is 0 (no auth change ever), so those
    frames keep the bytes of writers that predate auth; decode takes 5 elements as auth
    revision 0, no changes.

    The 7th element (issue #12) is the writer's commit time: int microseconds since the Unix
    epoch (writer wall clock), taken after the commit is durable; for a heartbeat, when it is
    sent.  Fan-outs measure their time lag with it.  When it is present the 6th is too
    ([0, []] while the auth revision is 0); decode takes 5 or 6 elements as commit time 0
    (unknown: a writer that predates it).
    """
    prev: int
    last: int
    revisions: list
    compact_revision: int
    auth_revision: int = 0
    auth_changes: list | tuple = ()
    commit_time: int = 0

    def encode(self) -> bytes:
        if self.commit_time:
            return _pack(["pub", self.prev, self.last, self.revisions, self.compact_revision,
                          [self.auth_revision, self.auth_changes], self.commit_time])
        if self.auth_revision == 0 and not self.auth_changes:
            return _pack(["pub", self.prev, self.last, self.revisions, self.compact_revision])
        return _pack(["pub", self.prev, self.last, self.revisions, self.compact_revision,
                      [self.auth_revision, self.auth_changes]])

    @classmethod
    def decode(cls, raw: bytes) -> "Publish":
        msg = _list(_unpack(raw), "a publish")
        if len(msg) not in (5, 6, 7):
            raise InvalidArgument(f"a publish has {len(msg)} fields, expected 5, 6 or 7")
        if msg[0] != "pub" or type(msg[0]) is not str:
            raise InvalidArgument(f"expected a 'pub' message, got {str(msg[0])[:32]!r}")
        prev, last = _int(msg[1], "prev_revision"), _int(msg[2], "last_revision")
        compact = _int(msg[4], "compact_revision")
        auth_rev, changes = (0, ()) if len(msg) == 5 else _publish_auth(msg[5], prev, last)
        commit_time = _int(msg[6], "commit_time", 0, (1 << 63) - 1) if len(msg) == 7 else 0
        for rev_events in _list(msg[3], "the revisions of a publish"):
            _list(rev_events, "a published revision", 2)
            _int(rev_events[0], "a published revision number")
            for ev in _list(rev_events[1], "the events of a revision"):
                # Every fan-out decodes every event: the common case is checked inline (exactly
                # the conditions below, no call per field); the detailed checks only run to say
                # what is wrong with an event that fails it.
                if type(ev) is list and len(ev) == 3 and (ev[0] == PUT or ev[0] == DELETE) and type(ev[0]) is int \
                        and _kv_ok(ev[1]) and (ev[2] is None or _kv_ok(ev[2])):
                    continue
                _list(ev, "a published event", 3)
                if ev[0] != PUT and ev[0] != DELETE or type(ev[0]) is not int:
                    raise InvalidArgument(f"event type must be 0 (PUT) or 1 (DELETE), not {ev[0]!r:.32}")
                decode_kv(ev[1])
                if ev[2] is not None:
                    decode_kv(ev[2], "prev_kv")
        return cls(prev, last, msg[3], compact, auth_rev, changes, commit_time)


def _publish_auth(auth, prev: int, last: int) -> tuple[int, list]:
    """A publish's [auth_revision, [[after_revision, change], ...]] -> (auth_revision, changes)."""
    _list(auth, "a publish's auth [auth_revision, changes]", 2)
    auth_rev = _int(auth[0], "auth_revision")
    changes = _list(auth[1], "a publish's auth changes")
    if len(changes) > auth_rev:
        raise InvalidArgument(f"{len(changes)} auth changes cannot end at auth revision {auth_rev}")
    floor = prev
    for item in changes:
        _list(item, "an auth change [after_revision, change]", 2)
        after = _int(item[0], "an auth change's after_revision")
        if not floor <= after <= last:
            raise InvalidArgument(f"an auth change's after_revision {after} is outside [{floor}, {last}]")
        floor = after
        decode_auth_change(item[1])
    return auth_rev, changes


# ---------------------------------------------------------------- fan-out -> syncer
class Registration(NamedTuple):
    """One watcher handed to the syncer for catch-up (an item of "sync")::

        [uid, epoch, key: bin, end: bin | nil, next_rev, filter_bits, prev_kv: bool, watch_id,
         fragment: bool, session: bin, opts: map]

    end nil = the single key (the from-key end is 512 x 0xff); filter_bits: bit 1 = no PUT,
    bit 2 = no DELETE; session is the fan-out's opaque session key (a routing id).  (uid, epoch)
    names this registration: messages about an older epoch are ignored by the fan-out.
    opts: the watch kinds' options the syncer needs (issue #16), str keys -> scalar values
    (int, bool, bin, str): watchers whose opts differ never share a group.  {} for a plain watch.
    """
    uid: int
    epoch: int
    key: bytes
    end: bytes | None
    next_rev: int
    filter_bits: int
    prev_kv: bool
    watch_id: int
    fragment: bool
    session: bytes
    opts: dict = {}      # never mutated: each registration that has options builds its own

    def size(self) -> int:
        """Upper bound of its msgpack size (key, end and session dominate)."""
        return _registration_size(self)

    @classmethod
    def decode(cls, item) -> "Registration":
        _list(item, "a sync registration (uid, epoch, key, end, next_rev, filter_bits, prev_kv, "
                    "watch_id, fragment, session, opts)", 11)
        uid, epoch, key, end, next_rev, bits, prev_kv, watch_id, fragment, session, opts = item
        _int(uid, "registration uid")
        _int(epoch, "registration epoch")
        _bytes(key, "registration key", MAX_KEY_BYTES + 1)
        if end is not None:
            _bytes(end, "registration end", MAX_KEY_BYTES + 1)
        _int(next_rev, "registration next_rev")
        _int(bits, "registration filter_bits", 0, 3)
        _bool(prev_kv, "registration prev_kv")
        _int(watch_id, "registration watch_id")
        _bool(fragment, "registration fragment")
        _bytes(session, "registration session", MAX_SESSION_BYTES)
        _registration_opts(opts)
        return cls(uid, epoch, key, end, next_rev, bits, prev_kv, watch_id, fragment, session, opts)


# A state read's registration opts "state" (SPEC.md 7.7; the fan-out sets it, syncer/state.py reads it).
STATE_FULL = 1       # every kv of the range
STATE_DIGEST = 2     # only kvs with mod_revision > opts["state_since"]; the others by key

MAX_REGISTRATION_OPTS_BYTES = 4096


def _registration_opts(opts) -> dict:
    """opts: a map of str -> int | bool | bin | str | nil, bounded (a value predicate is a bin)."""
    if type(opts) is not dict:
        raise InvalidArgument(f"registration opts must be a map, not {type(opts).__name__}")
    size = 0
    for k, v in opts.items():
        if type(k) is not str:
            raise InvalidArgument("registration opts keys must be strings")
        if v is not None and type(v) not in (int, bool, bytes, str):
            raise InvalidArgument(f"registration opts {k[:32]!r} must be a scalar, not {type(v).__name__}")
        size += len(k) + (len(v) if isinstance(v, (bytes, str)) else 9)
    if size > MAX_REGISTRATION_OPTS_BYTES:
        raise InvalidArgument(f"registration opts exceed {MAX_REGISTRATION_OPTS_BYTES} bytes")
    return opts


def opts_key(opts: dict) -> tuple:
    """A registration's opts as a hashable, order-free value (part of a group's identity)."""
    return tuple(sorted(opts.items())) if opts else ()


def _registration_size(r) -> int:
    return 64 + len(r[2]) + len(r[3] or b"") + len(r[9]) + sum(
        len(k) + (len(v) if isinstance(v, (bytes, str)) else 9) for k, v in r[10].items())


def encode_sync(registrations: list[Registration], max_bytes: int = SYNC_MESSAGE_BYTES) -> list[bytes]:
    """["sync", 0, [registration, ...]] frames of about max_bytes at most each."""
    return _frames("sync", registrations, _registration_size, max_bytes)


def decode_sync(body) -> list[Registration]:
    """The registrations of a "sync" frame (raw bytes, or the body decode_request returned).
    All are checked before any is returned: a bad item refuses the whole frame."""
    return [Registration.decode(item) for item in _list_body(body, "sync")]


def encode_unsync(pairs: list[tuple[int, int]], max_bytes: int = SYNC_MESSAGE_BYTES) -> list[bytes]:
    """["unsync", 0, [[uid, epoch], ...]]: forget these registrations (if still that epoch)."""
    return _frames("unsync", [[uid, epoch] for uid, epoch in pairs], lambda item: 24, max_bytes)


def decode_unsync(body) -> list[tuple[int, int]]:
    out = []
    for item in _list_body(body, "unsync"):
        _list(item, "an unsync item [uid, epoch]", 2)
        out.append((_int(item[0], "unsync uid"), _int(item[1], "unsync epoch")))
    return out


class Ping(NamedTuple):
    """A liveness probe, every second from a fan-out to the syncer, every 0.5 s to the writer::

        ["ping", seq, {}]
        ["ping", seq, {"join": true}]            to the writer, from a fan-out not in the stream yet
        ["ping", seq, {"name": str, "endpoint": str, "started": float, "sessions": int, "watchers": int}]

    ``join``: the writer publishes a heartbeat right after answering, so a starting fan-out
    joins the stream at once instead of at the next idle heartbeat (up to ZWATCH_HEARTBEAT_S
    later).  It repeats the join every 10 ms until a publish arrives: a heartbeat published
    before its subscription reached the writer's PUB is not delivered to it (ZeroMQ's slow
    joiner), and nothing else is lost by that: it joins at whatever publish comes first.

    The second form is a fan-out's ping to the syncer: it says who the fan-out is (its instance
    name, the client endpoint it advertises, its start time in Unix seconds, its load), which
    the syncer hands back to every fan-out as the member list (Pong.info["members"]).
    """
    seq: int
    member: dict | None = None
    join: bool = False

    def encode(self) -> bytes:
        return _pack(["ping", self.seq, {"join": True} if self.join else self.member or {}])

    @classmethod
    def decode(cls, raw: bytes) -> "Ping":
        seq, body = _envelope(raw, "ping")
        return cls(seq, decode_member(body))


MEMBER_FIELDS = (("name", str), ("endpoint", str), ("started", (int, float)), ("sessions", int), ("watchers", int))
MAX_MEMBERS = 1000          # fan-outs listed in a pong at most (a pong stays small)


def decode_member(body) -> dict | None:
    """A fan-out's self-description in its ping body ({} = none)."""
    if type(body) is not dict:
        raise InvalidArgument("the body of a ping is a map")
    if not body:
        return None
    member = {}
    for name, kind in MEMBER_FIELDS:
        v = body.get(name)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise InvalidArgument(f"a ping's {name} must be {getattr(kind, '__name__', 'a number')}")
        if isinstance(v, str) and len(v) > 512:
            raise InvalidArgument(f"a ping's {name} is longer than 512 characters")
        member[name] = v
    return member


class Pong(NamedTuple):
    """The answer to a ping::

        ["pong", seq, {"instance": str, "revision": R, "members": [member, ...]}]      the syncer's
        ["pong", seq, {"revision": R, "compact_revision": int, "db_size": int,
                       "db_size_in_use": int, "alarms": [str], "leases": int,
                       "instance": str, "direct": bool}]                           the writer's
        member = [name, endpoint, started, sessions, watchers]    (the fan-outs that ping the syncer)

    A fan-out that sees a new syncer instance registers its catching-up watchers again.  The
    fields beyond instance and revision are `info` (absent in pongs of older peers: info None);
    a fan-out serves `status`, `health` and `member_list` from them without asking again.
    """
    seq: int
    instance: str | None
    revision: int
    info: dict | None = None

    def encode(self) -> bytes:
        body = {"revision": self.revision} if self.instance is None else \
            {"instance": self.instance, "revision": self.revision}
        if self.info:
            body.update(self.info)
        return _pack(["pong", self.seq, body])

    @classmethod
    def decode(cls, raw: bytes) -> "Pong":
        seq, body = _envelope(raw, "pong")
        return cls._from_body(seq, body)

    @classmethod
    def _from_body(cls, seq, body) -> "Pong":
        if type(body) is not dict:      # more fields are allowed: a newer peer may add some
            raise InvalidArgument("the body of a pong is a map {instance?, revision}")
        instance = body.get("instance")
        if instance is not None and type(instance) is not str:
            raise InvalidArgument("pong instance must be a string")
        info = {}
        for name in ("compact_revision", "db_size", "db_size_in_use", "leases", "commit_time"):
            if name in body:
                info[name] = _int(body[name], f"pong {name}", hi=2**63 - 1)
        if "alarms" in body:
            info["alarms"] = [a for a in _list(body["alarms"], "pong alarms") if type(a) is str][:16]
        if body.get("direct") is True:     # the writer serves clients' direct writes
            info["direct"] = True
        if "members" in body:
            members = []
            for m in _list(body["members"], "pong members")[:MAX_MEMBERS]:
                _list(m, "a pong member", 5)
                members.append(list(decode_member(dict(zip((f for f, _ in MEMBER_FIELDS), m))).values()))
            info["members"] = members
        return cls(seq, instance, _int(body.get("revision"), "pong revision"), info or None)


class StatsRequest(NamedTuple):
    """A direct peer's request for the syncer's counters (tests, operators)::

        ["stats", id, {}]   ->   ["ok", id, {counter: int, ..., "instance": str}]
    """
    req_id: int

    def encode(self) -> bytes:
        return _pack(["stats", self.req_id, {}])


def encode_stats_reply(req_id: int, counters: dict) -> bytes:
    return _pack(["ok", req_id, counters])


def decode_stats_reply(raw: bytes) -> dict:
    _, body = _envelope(raw, "ok")
    if type(body) is not dict:
        raise InvalidArgument("the body of a stats reply is a map")
    return body


# ---------------------------------------------------------------- syncer -> fan-out
class SyncEvent(NamedTuple):
    """Events replayed for one group of identical watchers (an item of "ev")::

        [[[uid, epoch], ...], first_rev, last_rev, response: bin, extra: map]

    response is a ready-encoded watch response (messages.py: [watch_ids, header_revision,
    events, fragment]) naming every member's watch id, which the fan-out splices into the
    client's "w" frame; first_rev is its first event's revision, last_rev the last revision the
    syncer has read for the group.  extra: what a watch kind (issue #16) tells the fan-out about
    this item beyond the response (str keys, scalar values, as a registration's opts); {} for
    a plain watch.
    """
    members: list
    first_rev: int
    last_rev: int
    response: bytes
    extra: dict = {}     # never mutated: an item that has extras builds its own

    def size(self) -> int:
        return 16 + 12 * len(self.members) + len(self.response) + 16 * len(self.extra)

    @classmethod
    def decode(cls, item) -> "SyncEvent":
        _list(item, "an ev item [members, first_rev, last_rev, response, extra]", 5)
        members = []
        for m in _list(item[0], "ev members"):
            _list(m, "an ev member [uid, epoch]", 2)
            members.append((_int(m[0], "ev member uid"), _int(m[1], "ev member epoch")))
        return cls(members, _int(item[1], "ev first_rev"), _int(item[2], "ev last_rev"),
                   _bytes(item[3], "ev response"), _registration_opts(item[4]))


class Handoff(NamedTuple):
    """Catch-up done (an item of "synced")::

        [uid, epoch, R]

    every event <= R has been sent; the fan-out takes the watcher over from R + 1.
    """
    uid: int
    epoch: int
    revision: int

    @classmethod
    def decode(cls, item) -> "Handoff":
        return _watcher_item(cls, item, "synced", "revision")


class CompactedCancel(NamedTuple):
    """The watcher wants revisions below the compact revision (an item of "compacted")::

        [uid, epoch, compact_revision]

    the fan-out cancels it with compact_revision (etcd #17529: before anything else about it).
    """
    uid: int
    epoch: int
    compact_revision: int

    @classmethod
    def decode(cls, item) -> "CompactedCancel":
        return _watcher_item(cls, item, "compacted", "compact_revision")


def _watcher_item(cls, item, op: str, third: str):
    """[uid, epoch, <third>]: the items of "synced" and "compacted"."""
    _list(item, f"a {op} item [uid, epoch, {third}]", 3)
    return cls(_int(item[0], f"{op} uid"), _int(item[1], f"{op} epoch"), _int(item[2], f"{op} {third}"))


# The id slot of ev / synced / compacted is the auth revision of the LMDB snapshot the syncer read
# them from (0 until the first auth change: the bytes of syncers that predate auth): a fan-out
# whose auth view is older holds them, in order, until the publish stream brought it there.
def encode_events(items: list[SyncEvent], max_bytes: int = MESSAGE_BYTES, *, auth_rev: int = 0) -> list[bytes]:
    """["ev", auth_rev, [item, ...]] frames of about max_bytes at most each (an item alone may exceed it)."""
    return _frames("ev", items, SyncEvent.size, max_bytes, auth_rev)


def encode_synced(items: list[Handoff], max_bytes: int = MESSAGE_BYTES, *, auth_rev: int = 0) -> list[bytes]:
    """["synced", auth_rev, [[uid, epoch, R], ...]] frames."""
    return _frames("synced", items, lambda item: 32, max_bytes, auth_rev)


def encode_compacted(items: list[CompactedCancel], max_bytes: int = MESSAGE_BYTES, *,
                     auth_rev: int = 0) -> list[bytes]:
    """["compacted", auth_rev, [[uid, epoch, compact_revision], ...]] frames."""
    return _frames("compacted", items, lambda item: 32, max_bytes, auth_rev)


class AuthStateRequest(NamedTuple):
    """A fan-out asks the syncer for the whole auth state of one LMDB snapshot::

        ["auth_state", id, {}]   ->   ["ok", id, auth state (decode_auth_state)]
    """
    req_id: int

    def encode(self) -> bytes:
        return _pack(["auth_state", self.req_id, {}])


class AuthStateReply(NamedTuple):
    """The syncer's answer to AuthStateRequest: ``["ok", id, AuthState.to_wire()]``."""
    req_id: int
    state: dict

    def encode(self) -> bytes:
        return _pack(["ok", self.req_id, self.state])


_ITEM_DECODERS = {"ev": SyncEvent.decode, "synced": Handoff.decode, "compacted": CompactedCancel.decode}


def decode_from_syncer(raw: bytes):
    """A frame from the syncer to a fan-out (not a forwarded read's reply) -> (op, body, n), one of
    ("ev", [SyncEvent], auth_rev), ("synced", [Handoff], auth_rev), ("compacted", [CompactedCancel],
    auth_rev) with the auth revision of the syncer's snapshot; ("pong", Pong, seq);
    ("auth_state", auth state map (decode_auth_state), req_id) for the "ok" reply to
    AuthStateRequest; ("err", {"code", "message", ...}, req_id or 0) for an error reply."""
    msg = _list(_unpack(raw), "a syncer message", 3)
    op, mid, body = msg
    if type(op) is not str:
        raise InvalidArgument("the op of a syncer message must be a string")
    decode_item = _ITEM_DECODERS.get(op)
    if decode_item is not None:
        auth_rev = _int(mid, f"{op} id")
        return op, [decode_item(item) for item in _list(body, f"the body of {op}")], auth_rev
    if op == "pong":
        seq = _int(mid, "pong id")
        return op, Pong._from_body(seq, body), seq
    if op == "ok":        # a fan-out asks the syncer nothing else that is answered "ok"
        return "auth_state", decode_auth_state(body), _int(mid, "auth_state id")
    if op == "err":
        if mid is not None:
            _int(mid, "err id")
        if type(body) is not dict or type(body.get("code")) is not str:
            raise InvalidArgument("an error reply's body is a map with a code")
        return op, body, mid or 0
    raise InvalidArgument(f"unknown syncer message {op[:32]!r}")


# ---------------------------------------------------------------- ready-encoded responses
def unpack_response(resp: bytes) -> tuple[list, int, list, bool]:
    """A ready-encoded watch response [watch_ids, header_revision, events, fragment(, ext)] ->
    its first four fields (ext: unpack_response_ext)."""
    return unpack_response_ext(resp)[:4]


def unpack_response_ext(resp: bytes) -> tuple[list, int, list, bool, dict | None]:
    """As unpack_response, with the response's ext map (SPEC.md section 7.2; None without one)."""
    msg = _list(_unpack(resp), "a watch response")
    if len(msg) not in (4, 5):
        raise InvalidArgument(f"a watch response has {len(msg)} fields, expected 4 or 5")
    ids, rev, events, fragment = msg[:4]
    ext = msg[4] if len(msg) == 5 else None
    if ext is not None and type(ext) is not dict:
        raise InvalidArgument("a watch response's ext must be a map")
    for i in _list(ids, "watch ids"):
        _int(i, "a watch id", -1)
    return ids, _int(rev, "header revision"), _list(events, "events"), _bool(fragment, "fragment"), ext


def repack_response(ids: list[int], resp: bytes) -> bytes:
    """The same response for fewer (or other) watch ids: the fan-out's re-encoding when some
    members of a syncer group were canceled or re-registered meanwhile."""
    _, rev, events, fragment, ext = unpack_response_ext(resp)
    # The ext map (an initial state's mark, a stream's hash) stays: it describes the events.
    return _pack([list(ids), rev, events, fragment] + ([ext] if ext is not None else []))
