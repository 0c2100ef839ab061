"""The client's typed responses (etcd's response messages) and their decoding from reply bodies.

Plain dataclasses: what ``Client`` methods return and what a watch delivers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

@dataclass(slots=True)
class Header:
    revision: int = 0


@dataclass(slots=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0

    @classmethod
    def from_wire(cls, d: dict) -> "KeyValue":
        return cls(d["key"], d.get("create_revision", 0), d.get("mod_revision", 0), d.get("version", 0),
                   d.get("value", b""), d.get("lease", 0))

    @classmethod
    def from_list(cls, kv: list) -> "KeyValue":
        return cls(kv[0], kv[1], kv[2], kv[3], kv[4], kv[5])


@dataclass(slots=True)
class RangeResponse:
    header: Header
    kvs: list
    more: bool = False
    count: int = 0


@dataclass(slots=True)
class PutResponse:
    header: Header
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class DeleteRangeResponse:
    header: Header
    deleted: int = 0
    prev_kvs: list = field(default_factory=list)


@dataclass(slots=True)
class TxnResponse:
    header: Header
    succeeded: bool
    responses: list   # RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse


@dataclass(slots=True)
class CompactResponse:
    header: Header


@dataclass(slots=True)
class StatusResponse:
    """A fan-out's `status` (SPEC.md "status"): etcd's Status fields where they have a meaning.
    raft_index is the writer's revision, raft_applied_index the fan-out's (how far it has applied
    the publish stream); leader is the writer's ID; errors name an unreachable writer and alarms."""
    header: Header
    version: str = ""
    protocol_version: int = 0
    compact_revision: int = 0
    db_size: int = 0
    endpoint: str = ""
    db_size_in_use: int = 0
    member_id: int = 0
    leader: int = 0
    raft_index: int = 0
    raft_applied_index: int = 0
    errors: list = field(default_factory=list)
    actor: str = ""
    instance: str = ""
    sessions: int = 0
    watchers: int = 0


@dataclass(slots=True)
class HealthResponse:
    """A fan-out's `health`: it pinged the writer and the syncer behind it (SPEC.md "health")."""
    health: bool
    reason: str = ""
    took_ms: float = 0.0
    revision: int = 0
    alarms: list = field(default_factory=list)


@dataclass(slots=True)
class Member:
    """One fan-out of `member_list` (the fan-outs that ping the syncer)."""
    ID: int
    name: str
    client_urls: list
    peer_urls: list = field(default_factory=list)
    started: float = 0.0
    sessions: int = 0
    watchers: int = 0


@dataclass(slots=True)
class MemberListResponse:
    header: Header
    member_id: int
    members: list


@dataclass(slots=True)
class HashKVResponse:
    header: Header
    hash: int
    compact_revision: int
    hash_revision: int


@dataclass(slots=True)
class WatchHashResponse:
    """watch_hash (SPEC.md 7.10): the stream hash a verified watch of this spec started at
    start_revision carries in a bookmark at `revision`, computed from history."""
    header: Header
    hash: bytes              # 16 bytes: compare with WatchResponse.stream_hash
    events: int              # events hashed
    start_revision: int
    revision: int


@dataclass(slots=True)
class Event:
    type: str            # "PUT" | "DELETE"
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class WatchResponse:
    watch_id: int
    header: Header
    events: list = field(default_factory=list)
    created: bool = False
    canceled: bool = False
    cancel_reason: str = ""
    compact_revision: int = 0
    fragment: bool = False
    # Set on responses delivered to a shared queue (watch(..., queue=q)): every watch of that
    # queue this response is for.  The events are the same for each of them.
    watch_ids: list | None = None
    # Set on a cancellation the client must not resume from: "PERMISSION_DENIED" (the user may no
    # longer read the range) or "UNAUTHENTICATED" (its login is gone); the watch's iterator then
    # ends with that error.
    cancel_code: str = ""
    # The response's ext map (SPEC.md section 7.2), for watches that opted into a new kind:
    # an initial state or a resync (section 7.7) marks its responses {"mark": "reset" | "state" |
    # "state_end"}.  None on every other response.
    ext: dict | None = None
    # A verified watch's bookmark (watch(..., verify=True), SPEC.md 7.10): the server's stream
    # hash (16 bytes), which the client has checked against the events it delivered.
    stream_hash: bytes | None = None
    # ... and the first revision that hash covers (the server-side watch's start revision: the
    # watch's own, or last + 1 after a failover), for `zwatch hash-watch --from`.
    stream_start: int = 0

    @property
    def is_progress_notify(self) -> bool:
        return (not self.events and not self.created and not self.canceled
                and (self.ext is None or self.ext.get("mark") not in ("reset", "state")))

    @property
    def reset(self) -> bool:
        """A resync (or a state read again) starts: drop what you hold of the watch's range;
        the state follows (initial_state responses), then state_complete."""
        return self.ext is not None and self.ext.get("mark") == "reset"

    @property
    def initial_state(self) -> bool:
        """A piece of the range's state at header.revision: its events are PUTs in key order,
        each kv with its own mod_revision (not a change made at header.revision)."""
        return self.ext is not None and self.ext.get("mark") == "state"

    @property
    def state_complete(self) -> bool:
        """The state at header.revision is complete (a bookmark): every later response is a
        change after it.  After a reset, keys not in the state since are gone."""
        return self.ext is not None and self.ext.get("mark") == "state_end"

    @property
    def unchanged_keys(self) -> list:
        """A digest resync's state piece: keys that exist and did not change since the client's
        last revision (their kvs are not resent; keep the ones you hold)."""
        return list(self.ext.get("same", ())) if self.ext is not None and self.initial_state else []


@dataclass(slots=True)
class LeaseGrantResponse:
    header: Header
    id: int
    ttl: int


@dataclass(slots=True)
class LeaseTimeToLiveResponse:
    """etcd's LeaseTimeToLiveResponse: ttl is the remaining whole seconds, -1 if the lease does not
    exist (expired or revoked); keys only when asked for (keys_truncated past the reply limit)."""
    header: Header
    id: int
    ttl: int
    granted_ttl: int = 0
    keys: list = field(default_factory=list)
    keys_truncated: bool = False


@dataclass(slots=True)
class CursorInfo:
    """A durable named cursor (SPEC.md 6.2): everything at or below `revision` is consumed.
    lag_revisions: revisions committed after it; lag_seconds: age of the oldest one it has not
    consumed (0 when caught up; None when the time index cannot date it); ttl_remaining: whole
    seconds before it expires unless advanced or refreshed."""
    name: str
    key: bytes
    range_end: bytes
    revision: int
    ttl: int
    ttl_remaining: int = -1
    lag_revisions: int = 0
    lag_seconds: float | None = 0.0
    created_us: int = 0
    updated_us: int = 0

    @classmethod
    def from_wire(cls, d: dict) -> "CursorInfo":
        return cls(d["name"], d["key"], d["range_end"], d["revision"], d["ttl"], d.get("ttl_remaining", -1),
                   d.get("lag_revisions", 0), d.get("lag_seconds"), d.get("created_us", 0), d.get("updated_us", 0))


@dataclass(slots=True)
class CursorResponse:
    header: Header
    cursor: CursorInfo
    created: bool = False


def header_of(body) -> Header:
    return Header(body.get("header", {}).get("revision", 0))


def range_response(b) -> RangeResponse:
    return RangeResponse(header_of(b), [KeyValue.from_wire(kv) for kv in b.get("kvs", [])], b.get("more", False),
                         b.get("count", 0))


def put_response(b) -> PutResponse:
    pkv = b.get("prev_kv")
    return PutResponse(header_of(b), KeyValue.from_wire(pkv) if pkv else None)


def delete_range_response(b) -> DeleteRangeResponse:
    return DeleteRangeResponse(header_of(b), b.get("deleted", 0), [KeyValue.from_wire(kv) for kv in b.get("prev_kvs", [])])


def txn_response(b) -> TxnResponse:
    out = []
    for r in b.get("responses", []):
        (kind, body), = r.items()
        out.append({"response_range": range_response, "response_put": put_response,
                    "response_delete_range": delete_range_response, "response_txn": txn_response}[kind](body))
    return TxnResponse(header_of(b), b.get("succeeded", False), out)


# ---------------------------------------------------------------- auth (etcd's Auth API responses)
@dataclass(slots=True)
class AuthStatusResponse:
    header: Header
    enabled: bool = False
    auth_revision: int = 0


@dataclass(slots=True)
class UserGetResponse:
    header: Header
    roles: list = field(default_factory=list)


@dataclass(slots=True)
class UserListResponse:
    header: Header
    users: list = field(default_factory=list)


@dataclass(slots=True)
class Permission:
    """perm_type READ | WRITE | READWRITE on key alone (range_end b""), [key, range_end), or from key
    on (range_end b"\\x00")."""
    perm_type: str
    key: bytes
    range_end: bytes = b""


@dataclass(slots=True)
class RoleGetResponse:
    header: Header
    perms: list = field(default_factory=list)      # [Permission], sorted by key as etcd sorts them


@dataclass(slots=True)
class RoleListResponse:
    header: Header
    roles: list = field(default_factory=list)


class AlarmMember(NamedTuple):
    member_id: int        # the writer's ID (persisted with the alarm)
    alarm: str            # "NOSPACE"


class AlarmResponse(NamedTuple):
    header: Header
    alarms: list          # [AlarmMember]


class DefragResponse(NamedTuple):
    header: Header
    db_size_before: int   # bytes of the LMDB file before and after
    db_size_after: int
    took_ms: float        # how long writes were held


class SnapshotInfo(NamedTuple):
    header: Header
    revision: int         # the snapshot's revision, exact (the copy and the revision share one read txn)
    size: int             # bytes
    sha256: str           # hex, of the whole file
