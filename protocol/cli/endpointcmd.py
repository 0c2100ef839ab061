"""`zwatch endpoint health|status|hashkv` and `zwatch member list`, with etcdctl 3.4's output
(etcdctl/ctlv3/command/ep_command.go, member_command.go, printer_*.go).

Each endpoint is asked on its own, in parallel (a dead one costs one dial timeout, not one
each), and answers from itself: a fan-out pings the writer and the syncer behind it for
`health` (an unreachable one makes it unhealthy within about a second), and serves `status` and
`member list` from what its pings learnt.  What etcd's fields mean here (SPEC.md "status"):
ID = the fan-out's member ID (from its advertised endpoint), IS LEADER = false (the writer leads;
its ID is `leader`), RAFT TERM = 0 (no raft), RAFT INDEX = the writer's revision, RAFT APPLIED
INDEX = how far this fan-out has applied the publish stream, ERRORS = an unreachable writer and
active alarms.
"""
from __future__ import annotations

import sys
import threading
import time

from ..client import Client
from ..errors import ZwatchError
from .args import CommandError
from .format import error_text, humanize_bytes, json_line, write_line
from .snapshotcmd import table


def add_endpoint(p):
    p.add_argument("action", choices=("health", "status", "hashkv"))
    p.add_argument("--rev", type=int, default=0, help="hashkv: the revision to hash up to (default: the current one)")
    p.add_argument("--cluster", action="store_true",
                   help="use every fan-out of the member list as the endpoints (etcdctl's --cluster)")


def add_member(p):
    p.add_argument("action", choices=("list",))


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String(): 589µs, 1.513712ms, 1.078368s."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    for unit, scale in (("s", 10 ** 9), ("ms", 10 ** 6), ("µs", 10 ** 3)):
        if ns >= scale:
            whole, frac = divmod(ns, scale)
            digits = len(str(scale)) - 1
            text = f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".") if frac else str(whole)
            return text + unit
    return f"{ns}ns"


def _each(a, call):
    """call(client) for every endpoint at once -> {endpoint: (result | ZwatchError, seconds)}."""
    results = {}

    def ask(ep):
        t0 = time.monotonic()
        c = Client([ep], timeout=a.command_timeout)
        try:
            if not c.wait_connected(a.dial_timeout):
                raise ZwatchError("context deadline exceeded", "UNAVAILABLE")
            t0 = time.monotonic()
            results[ep] = (call(c), time.monotonic() - t0)
        except ZwatchError as exc:
            results[ep] = (exc, time.monotonic() - t0)
        finally:
            c.close()

    threads = [threading.Thread(target=ask, args=(ep,), daemon=True) for ep in a.endpoint_names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {ep: results.get(ep, (ZwatchError("no answer", "UNAVAILABLE"), 0.0)) for ep in a.endpoint_names}


def _cluster_endpoints(a):
    """--cluster: the fan-outs of the member list (etcdctl's endpointsFromCluster)."""
    c = Client(a.endpoint_names, timeout=a.command_timeout)
    try:
        members = c.member_list().members
    except ZwatchError as exc:
        raise CommandError(error_text(exc))
    finally:
        c.close()
    a.endpoint_names = [u for m in members for u in m.client_urls]


def _fields_header(header_revision: int, member_id: int):
    print('"ClusterID" : 0')
    print(f'"MemberID" : {member_id}')
    print(f'"Revision" : {header_revision}')
    print('"RaftTerm" : 0')


def _health(a) -> int:
    rows = []
    for ep, (r, took) in _each(a, lambda c: c.health()).items():
        if isinstance(r, ZwatchError):
            rows.append({"endpoint": ep, "health": False, "took": go_duration(took), "error": error_text(r)})
        else:
            rows.append({"endpoint": ep, "health": r.health, "took": go_duration(r.took_ms / 1000),
                         **({} if r.health else {"error": r.reason})})
    if a.write_out == "json":
        json_line(rows)
    elif a.write_out == "table":
        for line in table(["endpoint", "health", "took", "error"],
                          [[h["endpoint"], str(h["health"]).lower(), h["took"], h.get("error", "")] for h in rows],
                          right=True):
            write_line(line)
    elif a.write_out == "fields":
        for h in rows:
            print(f'"Endpoint" : "{h["endpoint"]}"')
            print(f'"Health" : {str(h["health"]).lower()}')
            print(f'"Took" : {h["took"]}')
            print(f'"Error" : {h.get("error", "")}')
            print()
    else:                                         # etcdctl prints these on stderr
        for h in rows:
            if "error" not in h:
                print(f'{h["endpoint"]} is healthy: successfully committed proposal: took = {h["took"]}',
                      file=sys.stderr)
            else:
                print(f'{h["endpoint"]} is unhealthy: failed to commit proposal: {h["error"]}', file=sys.stderr)
    if any("error" in h for h in rows):
        raise CommandError("unhealthy cluster")
    return 0


def _answered(a, call, what: str) -> tuple[list, bool]:
    """call(client) on every endpoint: the (endpoint, reply) of those that answered, and whether
    one failed (each failure reported as etcdctl does: `Failed to get the WHAT of endpoint EP (...)`)."""
    rows, failed = [], False
    for ep, (r, _) in _each(a, call).items():
        if isinstance(r, ZwatchError):
            print(f"Failed to get the {what} of endpoint {ep} ({error_text(r)})", file=sys.stderr)
            failed = True
        else:
            rows.append((ep, r))
    return rows, failed


def _status(a) -> int:
    rows, failed = _answered(a, lambda c: c.status(), "status")
    if a.write_out == "json":
        out = []
        for ep, s in rows:
            st = {"header": {"member_id": s.member_id, "revision": s.header.revision}, "version": s.version,
                  "dbSize": s.db_size, "leader": s.leader, "raftIndex": s.raft_index,
                  "raftAppliedIndex": s.raft_applied_index, "errors": s.errors, "dbSizeInUse": s.db_size_in_use}
            out.append({"Endpoint": ep, "Status": {k: v for k, v in st.items() if v}})   # omitempty
        json_line(out)
    elif a.write_out == "fields":
        for ep, s in rows:
            _fields_header(s.header.revision, s.member_id)
            print(f'"Version" : "{s.version}"')
            print(f'"DBSize" : {s.db_size}')
            print(f'"Leader" : {s.leader}')
            print('"IsLearner" : false')
            print(f'"RaftIndex" : {s.raft_index}')
            print('"RaftTerm" : 0')
            print(f'"RaftAppliedIndex" : {s.raft_applied_index}')
            print(f'"Errors" : [{" ".join(s.errors)}]')
            print(f'"Endpoint" : "{ep}"')
            print()
    else:
        cells = [[ep, f"{s.member_id:x}", s.version, humanize_bytes(s.db_size), str(s.leader == s.member_id).lower(),
                  "false", "0", str(s.raft_index), str(s.raft_applied_index), ", ".join(s.errors)] for ep, s in rows]
        if a.write_out == "table":
            for line in table(["endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term",
                               "raft index", "raft applied index", "errors"], cells, right=True):
                write_line(line)
        else:
            for c in cells:
                write_line(", ".join(c))
    return 1 if failed else 0


def _hashkv(a) -> int:
    rows, failed = _answered(a, lambda c: c.hash_kv(a.rev), "hash")
    if a.write_out == "json":
        json_line([{"Endpoint": ep, "HashKV": {"header": {"revision": r.header.revision}, "hash": r.hash,
                                               "compact_revision": r.compact_revision or -1}} for ep, r in rows])
    elif a.write_out == "fields":
        for ep, r in rows:
            _fields_header(r.header.revision, 0)
            print(f'"Endpoint" : "{ep}"')
            print(f'"Hash" : {r.hash}')
            print()
    elif a.write_out == "table":
        for line in table(["endpoint", "hash"], [[ep, str(r.hash)] for ep, r in rows], right=True):
            write_line(line)
    else:
        for ep, r in rows:
            write_line(f"{ep}, {r.hash}")
    return 1 if failed else 0


def cmd_endpoint(a, _client) -> int:
    if a.cluster:
        _cluster_endpoints(a)
    return {"health": _health, "status": _status, "hashkv": _hashkv}[a.action](a)


def cmd_member(a, c: Client) -> int:
    r = c.member_list()
    rows = [[f"{m.ID:x}", "started", m.name, ",".join(m.peer_urls), ",".join(m.client_urls), "false"]
            for m in r.members]
    if a.write_out == "json":
        json_line({"header": {"member_id": r.member_id},
                   "members": [{k: v for k, v in (("ID", m.ID), ("name", m.name), ("peerURLs", m.peer_urls),
                                                  ("clientURLs", m.client_urls)) if v} for m in r.members]})
    elif a.write_out == "fields":
        _fields_header(0, r.member_id)
        for m in r.members:
            print(f'"ID" : {m.ID}')
            print(f'"Name" : "{m.name}"')
            for u in m.peer_urls:
                print(f'"PeerURL" : "{u}"')
            for u in m.client_urls:
                print(f'"ClientURL" : "{u}"')
            print('"IsLearner" : false')
            print()
    elif a.write_out == "table":
        for line in table(["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"], rows, right=True):
            write_line(line)
    else:
        for row in rows:
            write_line(", ".join(row))
    return 0
