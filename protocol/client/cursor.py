"""Durable named cursors, the client's side (SPEC.md 6.2): ``client.cursor(name, key, ...)``.

A cursor is the server's record of how far a consumer got ("everything at or below revision R
is consumed"); the server keeps the history after R (compaction never passes it) until the
cursor is advanced, deleted, or not heard of for its TTL.  So a consumer that restarts (a new
process, another host) resumes by name, exactly where it committed::

    cur = client.cursor("billing", "orders/", prefix=True, ttl=3600)
    for resp in cur.watch():             # from the cursor's revision + 1 (creates it if new)
        handle(resp.events)
        cur.commit_response(resp)        # durable: a restart resumes after it

Delivery is at least once: events after the last commit are delivered again after a restart,
never lost.  ``commit`` never moves a cursor back (a lower revision leaves it where it is), so
it may be retried freely.  ``Cursor`` (sync) and ``AsyncCursor`` (asyncio) share every request
through calls.py.
"""
from __future__ import annotations

from . import calls
from .types import CursorInfo, WatchResponse


def revision_consumed(resp: WatchResponse) -> int | None:
    """The revision a consumer that handled `resp` may commit: its last event's mod revision,
    or, for a progress notification, its header revision (everything at or below it was
    delivered: Bookmarkable); None for a created / canceled response (nothing consumed), and
    for a reset or a state piece (SPEC.md 7.7): its kvs keep their own mod_revisions, so the
    largest one would claim the history of keys still in later pieces; state_end commits R."""
    if resp.ext is not None and resp.ext.get("mark") in ("reset", "state"):
        return None
    if resp.events:
        return max(ev.kv.mod_revision for ev in resp.events)
    if resp.is_progress_notify:
        return resp.header.revision
    return None


class _CursorBase:
    def __init__(self, client, name: str, key, range_end=None, *, prefix=False, from_key=False, ttl: int = 3600):
        self.client = client
        self.name = name
        self.ttl = ttl
        self._put = lambda revision: calls.cursor_put(name, key, range_end, ttl=ttl, revision=revision,
                                                      prefix=prefix, from_key=from_key)
        body = self._put(0).body
        self.key, self.range_end = body["key"], body.get("range_end", b"")
        self.revision = 0                  # the last revision this handle committed or resumed from

    def _watch_kwargs(self, info: CursorInfo, kw: dict) -> dict:
        if "start_revision" in kw:
            raise TypeError("a cursor's watch starts after the cursor's revision: no start_revision")
        self.revision = info.revision
        return {**kw, "range_end": self.range_end or None, "start_revision": info.revision + 1}


class Cursor(_CursorBase):
    """A durable named cursor of the sync client (client.cursor(...))."""

    def open(self, timeout=None) -> CursorInfo:
        """Create the cursor at the current revision, or refresh it (its revision unchanged)."""
        return self.client._request(self._put(0), timeout).cursor

    def watch(self, timeout=None, **kw):
        """A watch over the cursor's range from its revision + 1 (the cursor created at the
        current revision if it does not exist): resumes exactly after the last commit.
        kw: Client.watch's options (prev_kv, progress_notify, fragment, filters...)."""
        info = self.open(timeout)
        return self.client.watch(self.key, timeout=timeout, **self._watch_kwargs(info, kw))

    def commit(self, revision: int, timeout=None) -> CursorInfo:
        """Everything at or below `revision` is consumed (durable when this returns); also
        refreshes the TTL.  A revision below the cursor's leaves it where it is."""
        info = self.client._request(self._put(revision), timeout).cursor
        self.revision = info.revision
        return info

    def commit_response(self, resp: WatchResponse, timeout=None) -> CursorInfo | None:
        """commit(revision_consumed(resp)); None (nothing sent) for a created response."""
        rev = revision_consumed(resp)
        return None if rev is None else self.commit(rev, timeout)

    def get(self, timeout=None) -> CursorInfo:
        """Its state and lag (CURSOR_NOT_FOUND if it was deleted or expired)."""
        return self.client._request(calls.cursor_get(self.name), timeout).cursor

    def delete(self, timeout=None) -> CursorInfo:
        """Drop it: compaction may pass its revision from now on."""
        return self.client._request(calls.cursor_delete(self.name), timeout).cursor


class AsyncCursor(_CursorBase):
    """The same for the asyncio client: every method is a coroutine."""

    async def open(self, timeout=None) -> CursorInfo:
        return (await self.client._request(self._put(0), timeout)).cursor

    async def watch(self, timeout=None, **kw):
        info = await self.open(timeout)
        return await self.client.watch(self.key, timeout=timeout, **self._watch_kwargs(info, kw))

    async def commit(self, revision: int, timeout=None) -> CursorInfo:
        info = (await self.client._request(self._put(revision), timeout)).cursor
        self.revision = info.revision
        return info

    async def commit_response(self, resp: WatchResponse, timeout=None) -> CursorInfo | None:
        rev = revision_consumed(resp)
        return None if rev is None else await self.commit(rev, timeout)

    async def get(self, timeout=None) -> CursorInfo:
        return (await self.client._request(calls.cursor_get(self.name), timeout)).cursor

    async def delete(self, timeout=None) -> CursorInfo:
        return (await self.client._request(calls.cursor_delete(self.name), timeout)).cursor
