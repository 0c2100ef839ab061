"""The hash of a verified watch stream (SPEC.md section 7.10): one definition for the server,
the client and the operator command, so that all three compute the very same value.

    digest(event) = int.from_bytes(blake2b(canonical(event), digest_size=16).digest(), "big")
    canonical(event) = msgpack (bin type for bytes) of [type, kv] exactly as delivered, without
                       prev_kv (history at or below the compact revision has none)
    H(events)     = sum of digest(e) over the events, mod 2**128, carried as 16 bytes big-endian

Order-independent and additive on purpose: the fan-out keeps one running value per watcher and
adds a response's sum in O(1); a value can be rolled back to any earlier point (a dropped frame);
and the operator command can hash a long interval in bounded pieces and add them up.  The order
of events is checked by the client anyway (revisions only increase); what the sum catches is a
missing event (a gap), an extra one (a duplicate) and a changed one (divergent contents).
"""
from __future__ import annotations

from hashlib import blake2b

from .messages import pack as _packb      # msgpack, bin type for bytes: the wire's own encoding

MOD = 1 << 128
ZERO = bytes(16)


def digest(t: int, kv) -> int:
    """One event's digest (kv as on the wire: [key, create_revision, mod_revision, version,
    value, lease])."""
    return int.from_bytes(blake2b(_packb([t, kv]), digest_size=16).digest(), "big")


def sum_events(events) -> int:
    """The (not yet reduced) digest sum of wire events [type, kv(, prev_kv)]."""
    return sum(digest(e[0], e[1]) for e in events)


def to_bytes(value: int) -> bytes:
    return (value % MOD).to_bytes(16, "big")


def from_bytes(data) -> int:
    """16 bytes big-endian -> int; anything else raises ValueError."""
    if not isinstance(data, (bytes, bytearray)) or len(data) != 16:
        raise ValueError("a stream hash is 16 bytes")
    return int.from_bytes(data, "big")
