"""Writes straight from clients to the writer (ZWATCH_WRITER_CLIENT_ENDPOINT): what the writer
admits on that socket.  No I/O here.

A put through a fan-out crosses three processes (client -> fan-out -> writer -> fan-out ->
client); on the direct socket it crosses two, and the fan-out spends nothing on it.  The fan-out
stays the door for everything else (watches, reads, leases, auth), and for every client while
the direct path is off:

* off unless ZWATCH_WRITER_CLIENT_ENDPOINT is set, and off with CURVE (the writer's ZAP domain
  admits only the cluster's own keys; clients stay behind the fan-outs);
* only `put`, `delete_range` and `txn` (DIRECT_OPS), plus `ping`, whose pong names the writer's
  instance: a client checks it against what its fan-out's hello named before it sends a write,
  so a loopback address that reaches some other writer is never used;
* refused with UNAVAILABLE reason DIRECT_OFF while auth is enabled (a client then sends that
  write, and the following ones, through its fan-out, where it is logged in: a refusal is
  definite, nothing was applied, so the resend is safe).  Requests are applied as the anonymous
  user, so were auth enabled by an earlier request of the same group commit, the store refuses
  them rather than applying them unchecked.

Wire: a DEALER sends ``[op, req_id, body]`` frames (SPEC.md §3) and gets ``["ok"|"err", req_id,
body]`` back, or a pong ``["pong", req_id, {"revision": R, "instance": str}]`` for a ping.  The
requests are bounded like the fan-out's (MAXMSGSIZE, MAX_REQUEST_BYTES) and queue in the
ROUTER per connection up to RCVHWM: a client that floods it is slowed by TCP, not served first.
"""
from __future__ import annotations

from typing import Callable

from zwatch import messages
from zwatch.errors import Unavailable, Unimplemented, ZwatchError

DIRECT = object()             # envelope[0] of a direct request: its reply goes out on the direct socket
DIRECT_OPS = frozenset({"put", "delete_range", "txn"})
RCVHWM = 10_000               # messages queued per client connection before TCP pushes back
SNDHWM = 10_000
DIRECT_OFF = "DIRECT_OFF"     # UNAVAILABLE's reason: send it through a fan-out instead


def admit(raw: bytes, auth_enabled: bool, pong: Callable[[int], bytes]):
    """-> ((op, req_id, body), None) for a write to apply, or (None, ("ok"|"err", reply frame))."""
    try:
        op, req_id, body = messages.decode_request(raw)
    except ZwatchError as err:
        return None, ("err", messages.encode_error(messages.error_req_id(err), err))
    if op == "ping":
        return None, ("ok", pong(req_id))
    if op not in DIRECT_OPS:
        return None, ("err", messages.encode_error(req_id, Unimplemented(
            f"op {op} is not served on the writer's client endpoint; send it to a fan-out")))
    if auth_enabled:
        return None, ("err", messages.encode_error(req_id, Unavailable(
            "auth is enabled: writes go through a fan-out", reason=DIRECT_OFF)))
    return (op, req_id, body), None
