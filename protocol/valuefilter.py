"""Keys-only and value-predicate watches (issue #16, SPEC.md section 7.8): one shared object per
distinct filter.

A watch_create may ask for ``keys_only`` (events without values) and a small predicate on a
PUT's value (``value_prefix``, ``value_equals``, ``max_value_bytes``).  Everything a server
needs of those options is a ``ValueFilter``: whether an event passes, the event as the watch
sees it, and the options the syncer is given (internal.Registration.opts).

Invariants:

* Interned: ``value_filter(...)`` returns the very same object for the same options, so a group
  of identical watches is found by identity (``is``) and an event's verdict is computed once per
  distinct filter (the callers cache it per event), however many watchers or groups share it.
* A plain watch has no ValueFilter at all (None): it pays nothing, not even a field.
* Stateless: whether an event passes depends on the event alone (never on a previous value), so
  the live stream, the fan-out's ring, the syncer and a resumed watch all decide identically.

Semantics (why: SPEC.md 7.8): predicates apply to PUTs only, on the PUT's own value, and all
given ones must hold; a DELETE always passes (it has no value; a consumer keeping state must see
every removal).  keys_only replaces the value of kv and of prev_kv by b"" (the metadata stays).
"""
from __future__ import annotations

import weakref

from .errors import InvalidArgument

# The bounds of a value predicate: both fit in a registration's opts (at most 4 KiB) with room
# for the other watch kinds' options.
MAX_VALUE_PREDICATE_BYTES = 1024
MAX_VALUE_BYTES_LIMIT = 1 << 31

# The watch_create fields of this feature (and the registration opts keys: the same names).
OPT_KEYS = ("keys_only", "value_prefix", "value_equals", "max_value_bytes")

PUT = 0


class ValueFilter:
    """A watch's keys_only flag and value predicate.  Never mutated (it is shared)."""
    __slots__ = ("keys_only", "value_prefix", "value_equals", "max_value_bytes", "has_predicate", "opts",
                 "evaluations", "__weakref__")

    def __init__(self, keys_only: bool, value_prefix: bytes, value_equals: bytes | None,
                 max_value_bytes: int | None):
        self.keys_only = keys_only
        self.value_prefix = value_prefix
        self.value_equals = value_equals
        self.max_value_bytes = max_value_bytes
        self.has_predicate = bool(value_prefix) or value_equals is not None or max_value_bytes is not None
        opts = {}
        if keys_only:
            opts["keys_only"] = True
        if value_prefix:
            opts["value_prefix"] = value_prefix
        if value_equals is not None:
            opts["value_equals"] = value_equals
        if max_value_bytes is not None:
            opts["max_value_bytes"] = max_value_bytes
        self.opts = opts            # what the syncer is told (internal.Registration.opts)
        self.evaluations = 0        # predicate evaluations (tests count them: once per event per filter)

    def passes(self, t: int, kv) -> bool:
        """Whether an event of type t with kv reaches the watch (its type filters aside)."""
        if t != PUT or not self.has_predicate:
            return True
        self.evaluations += 1
        value = kv[4]
        if self.max_value_bytes is not None and len(value) > self.max_value_bytes:
            return False
        if self.value_equals is not None and value != self.value_equals:
            return False
        return value.startswith(self.value_prefix)

    def __repr__(self):
        return f"ValueFilter({self.opts!r})"


def strip_event(ev: list) -> list:
    """The keys-only form of an event [type, kv] / [type, kv, prev_kv]: values replaced by b""."""
    kv = ev[1]
    out = [ev[0], [kv[0], kv[1], kv[2], kv[3], b"", kv[5]]]
    if len(ev) > 2:
        p = ev[2]
        out.append([p[0], p[1], p[2], p[3], b"", p[5]])
    return out


class Judged:
    """One event as the value filters that meet it see it: each filter's verdict and the
    keys-only forms of the event, computed once per event whatever the number of filters,
    groups and watchers (the fan-out's delivery and the syncer's scan share this)."""
    __slots__ = ("t", "kv", "verdicts", "forms")

    def __init__(self, t: int, kv):
        self.t, self.kv = t, kv
        self.verdicts = None        # filter -> its verdict (filters are interned: hashable by identity)
        self.forms = None           # len(event) -> its keys-only form ([t, kv] and [t, kv, prev_kv])

    def passes(self, vf: ValueFilter) -> bool:
        if not vf.has_predicate or self.t != PUT:
            return True
        verdicts = self.verdicts
        if verdicts is None:
            verdicts = self.verdicts = {}
        ok = verdicts.get(vf)
        if ok is None:
            ok = verdicts[vf] = vf.passes(self.t, self.kv)
        return ok

    def as_delivered(self, vf: ValueFilter, ev: list) -> list:
        """ev ([t, kv] or [t, kv, prev_kv] of this event) as a watch with vf gets it."""
        if not vf.keys_only:
            return ev
        forms = self.forms
        if forms is None:
            forms = self.forms = {}
        out = forms.get(len(ev))
        if out is None:
            out = forms[len(ev)] = strip_event(ev)
        return out


# Weak: an entry lives as long as some watcher, group or registration holds its filter, so a
# client creating ever-new predicates leaves nothing behind once its watches are gone (and the
# live ones are bounded by the watch limits).
_interned: "weakref.WeakValueDictionary[tuple, ValueFilter]" = weakref.WeakValueDictionary()


def value_filter(keys_only: bool = False, value_prefix: bytes = b"", value_equals: bytes | None = None,
                 max_value_bytes: int | None = None) -> ValueFilter | None:
    """The shared ValueFilter of these options; None when none is set (a plain watch)."""
    if not keys_only and not value_prefix and value_equals is None and max_value_bytes is None:
        return None
    k = (bool(keys_only), bytes(value_prefix), value_equals, max_value_bytes)
    f = _interned.get(k)
    if f is None:
        f = _interned[k] = ValueFilter(*k)
    return f


def from_body(body: dict) -> ValueFilter | None:
    """The filter a watch_create body asks for; InvalidArgument on a bad field (SPEC.md 7.8)."""
    keys_only = body.get("keys_only", False)
    if not isinstance(keys_only, bool):
        raise InvalidArgument("keys_only must be a boolean")
    prefix = body.get("value_prefix", b"")
    if prefix is None:
        prefix = b""
    equals = body.get("value_equals")
    max_bytes = body.get("max_value_bytes")
    for name, v in (("value_prefix", prefix), ("value_equals", equals)):
        if v is None:
            continue
        if not isinstance(v, (bytes, bytearray)):
            raise InvalidArgument(f"{name} must be bytes (msgpack bin)")
        if len(v) > MAX_VALUE_PREDICATE_BYTES:
            raise InvalidArgument(f"{name} is {len(v)} bytes, above the limit of {MAX_VALUE_PREDICATE_BYTES}")
    if max_bytes is not None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
            raise InvalidArgument("max_value_bytes must be an integer")
        if not 0 <= max_bytes <= MAX_VALUE_BYTES_LIMIT:
            raise InvalidArgument(f"max_value_bytes = {max_bytes} is outside [0, {MAX_VALUE_BYTES_LIMIT}]")
    return value_filter(keys_only, bytes(prefix), None if equals is None else bytes(equals), max_bytes)


def from_opts(opts: dict) -> ValueFilter | None:
    """The filter a syncer registration's opts name (the fan-out validated them)."""
    if not opts:
        return None
    return from_body(opts)
