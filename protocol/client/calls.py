"""Every one-request operation of the client, defined once: its wire op, its body, its typed response.

The sync client (core.py) and the asyncio client (aio.py) are thin facades over these: each of
their methods builds a ``Call`` here and hands it to its own way of waiting for the reply
(a thread's event, or an awaited future), so the two can never disagree on what is sent or how
a reply is read.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from .. import streamhash
from .builders import lease_id_of, range_body, to_bytes, value_filter_fields
from .timeref import revision_at_time_response, time_us_of
from .types import (WatchHashResponse, AlarmMember, AlarmResponse, CompactResponse, CursorInfo, CursorResponse, DefragResponse, HashKVResponse, HealthResponse,
                    LeaseGrantResponse, LeaseTimeToLiveResponse, Member, MemberListResponse, StatusResponse,
                    delete_range_response, header_of, put_response, range_response, txn_response)

# A defrag or a snapshot copy takes ~seconds per GB: their default timeout (the client's own
# is sized for ordinary requests).
MAINTENANCE_TIMEOUT_S = 300.0


class Call(NamedTuple):
    op: str
    body: dict
    parse: Callable[[dict, Any], Any]      # (reply body, client) -> the typed response
    timeout: float | None = None           # a default above the client's own (maintenance)


def get(key, range_end=None, *, prefix=False, from_key=False, revision=0, limit=0, keys_only=False,
        count_only=False, sort_order="NONE", sort_target="KEY", min_mod_revision=0, max_mod_revision=0,
        min_create_revision=0, max_create_revision=0) -> Call:
    body = range_body(key, range_end, prefix=prefix, from_key=from_key, revision=revision, limit=limit,
                      keys_only=keys_only, count_only=count_only, sort_order=sort_order,
                      sort_target=sort_target, min_mod_revision=min_mod_revision,
                      max_mod_revision=max_mod_revision, min_create_revision=min_create_revision,
                      max_create_revision=max_create_revision)
    return Call("range", body, lambda b, c: range_response(b))


def put(key, value, *, prev_kv=False, lease=0) -> Call:
    body = {"key": to_bytes(key), "value": to_bytes(value)}
    if prev_kv:
        body["prev_kv"] = True
    if lease:
        body["lease"] = lease_id_of(lease)
    return Call("put", body, lambda b, c: put_response(b))


def delete(key, range_end=None, *, prefix=False, from_key=False, prev_kv=False) -> Call:
    body = range_body(key, range_end, prefix=prefix, from_key=from_key)
    if prev_kv:
        body["prev_kv"] = True
    return Call("delete_range", body, lambda b, c: delete_range_response(b))


def txn(compare=(), success=(), failure=()) -> Call:
    body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
    return Call("txn", body, lambda b, c: txn_response(b))


def compact(revision: int, physical: bool = False) -> Call:
    return Call("compact", {"revision": revision, "physical": physical}, lambda b, c: CompactResponse(header_of(b)))


def _status(b, client) -> StatusResponse:
    return StatusResponse(header_of(b), b.get("version", ""), b.get("protocol_version", 0),
                          b.get("compact_revision", 0), b.get("db_size", 0), client.endpoint or "",
                          b.get("db_size_in_use", 0), b.get("header", {}).get("member_id", 0), b.get("leader", 0),
                          b.get("raft_index", 0), b.get("raft_applied_index", 0), list(b.get("errors", ())),
                          b.get("actor", ""), b.get("instance", ""), b.get("sessions", 0), b.get("watchers", 0))


def status() -> Call:
    return Call("status", {}, _status)


def health() -> Call:
    return Call("health", {}, lambda b, c: HealthResponse(bool(b.get("health")), b.get("reason", ""),
                                                          b.get("took_ms", 0.0), b.get("revision", 0),
                                                          list(b.get("alarms", ()))))


def _member_list(b, client) -> MemberListResponse:
    members = [Member(m["ID"], m.get("name", ""), list(m.get("clientURLs", ())), list(m.get("peerURLs", ())),
                      m.get("started", 0.0), m.get("sessions", 0), m.get("watchers", 0)) for m in b.get("members", ())]
    return MemberListResponse(header_of(b), b.get("header", {}).get("member_id", 0), members)


def member_list() -> Call:
    return Call("member_list", {}, _member_list)


def hash_kv(revision: int = 0) -> Call:
    return Call("hash_kv", {"revision": revision},
                lambda b, c: HashKVResponse(header_of(b), b["hash"], b.get("compact_revision", 0),
                                            b.get("hash_revision", 0)))


def _watch_hash_piece(key, range_end=None, *, prefix=False, from_key=False, filters=(), start_revision: int,
                     revision: int = 0, value_filter=None) -> Call:
    """One watch_hash request; the reply says how far it read ("through"): watch_hash
    asks again from there (the syncer reads a bounded number of records per request)."""
    body = range_body(key, range_end, prefix=prefix, from_key=from_key)
    body.update({"filters": list(filters), "start_revision": start_revision, "revision": revision})
    body.update(value_filter or {})
    return Call("watch_hash", body, lambda b, c: b)


def watch_hash(key, range_end=None, *, prefix=False, from_key=False, filters=(), start_revision: int,
               revision: int = 0, keys_only=False, value_prefix=None, value_equals=None, max_value_bytes=None):
    """A generator of watch_hash Calls (send each, and send its reply back in) that returns the
    WatchHashResponse: the pieces' hashes add up (mod 2**128, SPEC.md 7.10).  keys_only and the
    value predicates: those of the watch whose stream is hashed (SPEC.md 7.8)."""
    total = events = 0
    start, target, header = start_revision, revision, None
    vf = value_filter_fields(keys_only, value_prefix, value_equals, max_value_bytes)
    while True:
        b = yield _watch_hash_piece(key, range_end, prefix=prefix, from_key=from_key, filters=filters,
                                   start_revision=start, revision=target, value_filter=vf)
        header = header or header_of(b)
        total = (total + streamhash.from_bytes(b["hash"])) % streamhash.MOD
        events += b.get("events", 0)
        target = b["revision"]          # the first piece fixes the revision (0: the current one)
        if b["through"] >= target:
            return WatchHashResponse(header, streamhash.to_bytes(total), events, start_revision, target)
        start = b["through"] + 1


def _alarm_response(b, client=None) -> AlarmResponse:
    return AlarmResponse(header_of(b), [AlarmMember(a["memberID"], a["alarm"]) for a in b.get("alarms", ())])


def alarm_list() -> Call:
    return Call("alarm_list", {}, _alarm_response)


def alarm_disarm(alarm: str = "") -> Call:
    return Call("alarm_disarm", {"alarm": alarm} if alarm else {}, _alarm_response)


def defrag() -> Call:
    return Call("defrag", {}, lambda b, c: DefragResponse(header_of(b), b["db_size_before"], b["db_size_after"],
                                                          b["took_ms"]), MAINTENANCE_TIMEOUT_S)


def lease_grant(ttl: int, lease_id: int = 0) -> Call:
    return Call("lease_grant", {"TTL": ttl, "ID": lease_id},
                lambda b, c: LeaseGrantResponse(header_of(b), b["ID"], b["TTL"]))


def lease_revoke(lease) -> Call:
    return Call("lease_revoke", {"ID": lease_id_of(lease)}, lambda b, c: header_of(b))


def lease_keepalive_once(leases) -> Call:
    return Call("lease_keepalive", {"IDs": [lease_id_of(x) for x in leases]},
                lambda b, c: {d["ID"]: d["TTL"] for d in b.get("leases", [])})


def time_to_live(lease, keys: bool = False) -> Call:
    return Call("lease_timetolive", {"ID": lease_id_of(lease), "keys": keys},
                lambda b, c: LeaseTimeToLiveResponse(header_of(b), b.get("ID", 0), b.get("TTL", -1),
                                                     b.get("grantedTTL", 0), list(b.get("keys", [])),
                                                     b.get("keys_truncated", False)))


def leases() -> Call:
    return Call("lease_leases", {}, lambda b, c: [d["ID"] for d in b.get("leases", [])])


def request_progress() -> Call:
    return Call("watch_progress", {}, lambda b, c: header_of(b).revision)


# -- durable named cursors (SPEC.md 6.2) -------------------------------------------------------

def _cursor_response(b, client=None) -> CursorResponse:
    return CursorResponse(header_of(b), CursorInfo.from_wire(b["cursor"]), bool(b.get("created", False)))


def cursor_put(name: str, key, range_end=None, *, ttl: int, revision: int = 0, prefix=False, from_key=False) -> Call:
    """Create, advance or refresh a cursor (revision 0: its own, or the current one when new)."""
    body = range_body(key, range_end, prefix=prefix, from_key=from_key)
    body.update({"name": name, "ttl": ttl, "revision": revision})
    return Call("cursor_put", body, _cursor_response)


def cursor_get(name: str) -> Call:
    return Call("cursor_get", {"name": name}, _cursor_response)


def cursor_list() -> Call:
    return Call("cursor_list", {}, lambda b, c: [CursorInfo.from_wire(d) for d in b.get("cursors", ())])


def cursor_delete(name: str) -> Call:
    return Call("cursor_delete", {"name": name}, _cursor_response)


def revision_at_time(when) -> Call:
    """The first revision committed at or after `when` (a datetime, naive = local, or Unix
    seconds): SPEC.md "revision_at_time"."""
    return _revision_at_us(time_us_of(when))


def _revision_after(when) -> Call:
    """The first revision committed after `when` (get(at=...): read at one below it)."""
    return _revision_at_us(time_us_of(when) + 1)


def _revision_at_us(time_us: int) -> Call:
    return Call("revision_at_time", {"time_us": time_us}, lambda b, c: revision_at_time_response(b))


def watch_progress(watch_id: int) -> Call:
    """One watch's progress (SPEC.md section 7.9): the reply's revision, i.e. the bookmark
    already on the watch's stream when it is live, else its position so far (its bookmark
    follows on its stream once it is live)."""
    return Call("watch_progress", {"watch_id": watch_id}, lambda b, c: b["revision"])
