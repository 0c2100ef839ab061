"""Callback-style watches (python-etcd3's ``add_watch_callback`` / ``add_watch_prefix_callback`` /
``cancel_watch``), on one dispatcher thread per client.

Every callback watch of a client delivers into one shared ``WatchQueue``; one thread takes the
responses out and calls each watch's function, in the order the responses arrived (so a
function sees its watch's revisions in order, and never two of its calls at once).  A response
is taken out (and so acknowledged to the fan-out, credit.py) just before its functions run: a
slow callback slows the stream, and a callback that stays slow lets the fan-out make its watches
victims that catch up from history later, as a slow iterator does.

What a callback receives: each ``WatchResponse`` with events or a progress notification; when
the watch ends without being canceled by the application, one last call with the reason as an
exception (``zwatch.Compacted`` with ``compact_revision`` when its start revision was compacted,
``zwatch.PermissionDenied`` / ``zwatch.Unauthenticated``), or the canceled ``WatchResponse``
when the server gave no error code.  An exception raised by a callback is logged on the
"zwatch.client" logger and does not stop the dispatcher.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from .. import errors
from .credit import WatchQueue

log = logging.getLogger("zwatch.client")


class CallbackDispatcher:
    def __init__(self, name: str = ""):
        self.queue = WatchQueue()
        self._callbacks: dict[int, Callable] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self.name = name

    def add(self, watch_id: int, fn: Callable):
        with self._lock:
            self._callbacks[watch_id] = fn
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"zwatch-callbacks-{self.name}", daemon=True)
                self._thread.start()

    def remove(self, watch_id: int):
        with self._lock:
            self._callbacks.pop(watch_id, None)

    def close(self):
        self._closed.set()

    def _run(self):
        while not self._closed.is_set():
            try:
                resp = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if resp is None:
                continue
            for watch_id in resp.watch_ids or [resp.watch_id]:
                with self._lock:
                    fn = self._callbacks.get(watch_id)
                    if resp.canceled:
                        self._callbacks.pop(watch_id, None)
                if fn is None or (resp.canceled and resp.cancel_reason == "canceled by client"):
                    continue
                arg = _end_error(resp) if resp.canceled else resp
                try:
                    fn(arg)
                except Exception:
                    log.exception("watch callback raised: watch_id=%d client=%s", watch_id, self.name)


def _end_error(resp):
    """A canceled response -> the exception the callback gets (or the response itself)."""
    if resp.cancel_code:
        return errors.ZwatchError.from_wire({"code": resp.cancel_code, "message": resp.cancel_reason})
    if resp.compact_revision:
        return errors.Compacted(resp.cancel_reason or "required revision has been compacted",
                                compact_revision=resp.compact_revision)
    return resp
