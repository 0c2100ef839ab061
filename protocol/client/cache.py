"""An informer-style cache: a local map of a key range, consistent at a known revision.

What client-go's reflector + informer give Go users, for a zwatch range::

    cache = zwatch.Cache(client, "config/", prefix=True, on_change=print)
    cache.wait_for(rev)                 # everything up to rev is in
    cache.get(b"config/a")              # KeyValue or None
    revision, items = cache.snapshot()  # a consistent copy: the range exactly as it was at revision

How it stays consistent: a range read at revision R (the "list"; with on_compacted resync or digest,
the default, the watch's own initial state at R, SPEC.md section 7.7), then a watch from R + 1 whose
responses are applied whole, one revision at a time (a revision's events always arrive in one
response, SPEC.md), under the cache's lock.  So ``revision`` only moves to a revision whose
events are all applied, and a snapshot taken under the lock is the range's true state at that
revision.  The client resumes the watch across fan-out failures by itself (from the last
revision + 1, nothing lost or repeated).  If the watch ends anyway (its next revision was
compacted while it was away, or the server canceled it), the cache lists again at a new revision
R' and replaces its map, telling ``on_change`` the differences as synthesized events (a PUT per
new or changed key, a DELETE per key that disappeared), as an informer's re-list does;
``relists`` counts these.

A compacted next revision does not end the watch: it is created with ``on_compacted`` "digest"
(the default; or "resync") and the server resyncs it in place (SPEC.md section 7.7): a reset,
the range's state at a revision R' >= the compact revision (digest: only the kvs changed since
the cache's revision, and the names of the unchanged ones), state_complete.  The cache builds
the new map aside and swaps it in whole at state_complete, telling ``on_change`` the
differences as a re-list would; until then ``revision`` and the map stay at the old revision
(never a mix).  ``resyncs`` counts these.  on_compacted="cancel": re-list instead, as before.

``wait_for(revision)`` asks the fan-out for a progress notification while it waits, so it also
returns for revisions that changed nothing in the range.  ``on_change(event)`` is called on the
cache's thread, after the event's revision is applied, in revision order; ``revision`` then is at
least the event's revision.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from .. import errors
from ..errors import ZwatchError
from .builders import to_bytes
from .types import Event, KeyValue

log = logging.getLogger("zwatch.client")


class Cache:
    def __init__(self, client, key, range_end=None, *, prefix: bool = False, from_key: bool = False,
                 on_change: Callable[[Event], None] | None = None, start: bool = True,
                 on_compacted: str = "digest"):
        self.client = client
        self._range = dict(range_end=range_end, prefix=prefix, from_key=from_key)
        self._key = key
        self._items: dict[bytes, KeyValue] = {}
        self.revision = 0               # the map is the range's state at this revision
        self.relists = 0                # lists after the first (the watch ended: compaction, ...)
        self.resyncs = 0                # states swapped in after a compaction (on_compacted)
        self.on_compacted = on_compacted
        self._staging: dict[bytes, KeyValue] | None = None    # a resync's map, until state_complete
        self.on_change = on_change
        self._cond = threading.Condition()
        self._watch = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None   # what stopped the cache (it then stays at its revision)
        if start:
            self.start()

    # ------------------------------------------------------------------ reading
    def get(self, key) -> KeyValue | None:
        with self._cond:
            return self._items.get(to_bytes(key))

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def items(self) -> list[tuple[bytes, KeyValue]]:
        """The range's (key, KeyValue) pairs in key order, as of ``revision``."""
        return self.snapshot()[1]

    def snapshot(self) -> tuple[int, list[tuple[bytes, KeyValue]]]:
        """(revision, items): one consistent state of the range."""
        with self._cond:
            return self.revision, sorted(self._items.items())

    def wait_for(self, revision: int, timeout: float | None = None) -> bool:
        """True once the cache is at ``revision`` or later; False after timeout seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        asked = 0.0
        while True:
            with self._cond:
                if self.revision >= revision:
                    return True
                if self.error is not None:
                    raise self.error
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.05 if left is None else min(0.05, left))
                if self.revision >= revision:
                    return True
            now = time.monotonic()
            if now - asked >= 0.2:
                # A revision outside the range changes nothing here: a progress notification
                # moves the cache's revision to it.
                asked = now
                try:
                    self.client.request_progress(timeout=2)
                except ZwatchError:
                    pass

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        self._list()
        self._thread = threading.Thread(target=self._run, name="zwatch-cache", daemon=True)
        self._thread.start()
        return self

    def close(self):
        self._closed = True
        w = self._watch
        if w is not None:
            try:
                w.cancel(timeout=2)
            except ZwatchError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ inside
    def _list(self):
        """List the range at the current revision R, replace the map, watch from R + 1.  With
        on_compacted resync / digest the list is the watch's own initial state (one watch, the
        kvs in bounded pieces instead of one range reply of the whole range)."""
        if self.on_compacted != "cancel":
            fresh, rev, watch = self._initial_state()
        else:
            resp = self.client.get(self._key, **self._range)
            fresh = {kv.key: kv for kv in resp.kvs}
            rev = resp.header.revision
            watch = None
        changes = []
        with self._cond:
            if self.revision:      # a re-list: what changed while the watch was gone
                changes = _differences(self._items, fresh, rev)
            self._items = fresh
            self.revision = rev
            self._cond.notify_all()
        self._watch = watch if watch is not None else self.client.watch(
            self._key, start_revision=rev + 1, prev_kv=True, on_compacted=self.on_compacted, **self._range)
        self._staging = None
        for ev in changes:
            self._changed(ev)

    def _initial_state(self, timeout: float = 60.0):
        """A watch with initial_state, read up to its state_complete -> (map, R, the watch)."""
        w = self.client.watch(self._key, prev_kv=True, initial_state=True, on_compacted=self.on_compacted,
                              **self._range)
        fresh: dict[bytes, KeyValue] = {}
        deadline = time.monotonic() + timeout
        while True:
            try:
                resp = w.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                w.cancel()
                raise errors.Unavailable("the cache's initial state did not complete in time") from None
            if resp is None or resp.canceled:
                raise w.error or errors.Unavailable(f"the cache's watch ended during its initial state: "
                                                    f"{w.cancel_reason}")
            if resp.reset:                    # a failover cut the state: it comes again whole
                fresh = {}
            elif resp.initial_state:
                for ev in resp.events:
                    fresh[ev.kv.key] = ev.kv
            elif resp.state_complete:
                return fresh, resp.header.revision, w

    def _run(self):
        while not self._closed:
            w = self._watch
            try:
                resp = w.get(timeout=0.2)
            except queue.Empty:
                continue
            except ZwatchError as e:          # PermissionDenied / Unauthenticated: not re-listed
                self._stop(e)
                return
            if resp is None or resp.canceled:
                if self._closed:
                    return
                log.info("cache.relist key=%r revision=%d reason=%s", self._key, self.revision,
                         w.cancel_reason or "watch ended")
                try:
                    while resp is not None:           # drain to the end of the old watch
                        resp = w.get(timeout=1)
                except (queue.Empty, ZwatchError):
                    pass
                if not self._relist():
                    return
                continue
            self._apply(resp)

    def _relist(self) -> bool:
        while not self._closed:
            try:
                self._list()
                self.relists += 1
                return True
            except (errors.Unavailable, errors.Compacted):
                time.sleep(0.2)               # no fan-out right now / compacted under the list: again
            except ZwatchError as e:
                self._stop(e)
                return False
        return False

    def _apply(self, resp):
        if resp.ext is not None and (resp.reset or resp.initial_state or self._staging is not None):
            self._apply_state(resp)
            return
        events = resp.events
        with self._cond:
            for ev in events:
                if ev.type == "PUT":
                    self._items[ev.kv.key] = ev.kv
                else:
                    self._items.pop(ev.kv.key, None)
            top = events[-1].kv.mod_revision if events else resp.header.revision
            if top > self.revision:
                self.revision = top
            self._cond.notify_all()
        for ev in events:
            self._changed(ev)

    def _apply_state(self, resp):
        """A resync (SPEC.md section 7.7): reset starts a map aside; its pieces fill it (a
        digest's unchanged keys are taken from the current map); state_complete swaps it in at
        its revision and reports the differences."""
        if resp.reset:
            self._staging = {}
            return
        staging = self._staging
        if staging is None:
            return                  # a state without a reset: not one this cache asked for
        if resp.initial_state:
            with self._cond:
                for k in resp.unchanged_keys:
                    kv = self._items.get(k)
                    if kv is not None:
                        staging[k] = kv
            for ev in resp.events:
                staging[ev.kv.key] = ev.kv
            return
        if not resp.state_complete:
            return
        rev = resp.header.revision
        with self._cond:
            changes = _differences(self._items, staging, rev)
            self._items = staging
            if rev > self.revision:
                self.revision = rev
            self.resyncs += 1
            self._cond.notify_all()
        self._staging = None
        log.info("cache.resync key=%r revision=%d changes=%d", self._key, rev, len(changes))
        for ev in changes:
            self._changed(ev)

    def _changed(self, ev):
        if self.on_change is None:
            return
        try:
            self.on_change(ev)
        except Exception:
            log.exception("cache on_change raised: key=%r", ev.kv.key)

    def _stop(self, error: BaseException):
        with self._cond:
            self.error = error
            self._cond.notify_all()


def _differences(old_items: dict, new_items: dict, rev: int) -> list:
    """What on_change is told when a whole new map replaces the old one (a re-list, or a resync's
    state at rev): a PUT for each key new or changed, a DELETE at rev for each key gone."""
    changes = []
    for k, kv in new_items.items():
        old = old_items.get(k)
        if old is None or old.mod_revision != kv.mod_revision:
            changes.append(Event("PUT", kv, old))
    for k, old in old_items.items():
        if k not in new_items:
            changes.append(Event("DELETE", KeyValue(k, 0, rev, 0, b""), old))
    return changes
