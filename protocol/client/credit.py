"""Flow-control credit: the client acknowledges what the application consumed, not what arrived.

The fan-out sends watch frames only while its unacknowledged bytes fit the session window
(SPEC.md "ack"), and a session that stays behind has its watches replayed from history later
(victims).  If the client acked bytes as its I/O thread received them, a slow application would
see responses pile up in the client without limit while the fan-out saw a healthy session.  So
each watch frame stays *held* until the application took every response made from it out of a
``WatchQueue``; the ack is ``received - held``.  A slow consumer then stops the acks, the fan-out
stops sending (client memory is bounded by the window), and if it stays slow its watches become
victims that catch up from history once it consumes again: nothing lost, nothing repeated.

    Ticket      one watch frame: its size, its session (epoch), how many responses still hold it
    WatchQueue  a watch's (or a group of watches') buffer: put by the I/O thread, get by the
                application; getting a response releases its share of the frame
    Credit      per client: held bytes of the current session, thread-safe (the application's
                threads release, the I/O thread holds and acks)

Invariants: ``0 <= held <= received`` of the current session; ``received - held`` never
decreases within a session, so the acks it produces are monotonic; bytes of an earlier session
(a failover restarts the counter, SPEC.md) are never released into a later one.
"""
from __future__ import annotations

import threading
from collections import deque
from queue import Empty


class Credit:
    def __init__(self, wake=None, wake_every: int = 256 * 1024):
        self._lock = threading.Lock()
        self.epoch = 0          # the session the held bytes belong to
        self.held = 0
        self.max_held = 0        # the most bytes ever held at once (a figure: the client's buffer)
        self.wake = wake        # called (any thread) when a release may make an ack due:
        self.wake_every = wake_every   # every this many bytes released, and on catching up
        self._unwoken = 0

    def new_session(self):
        with self._lock:
            self.epoch += 1
            self.held = 0

    def ticket(self, nbytes: int) -> "Ticket":
        """A frame of nbytes just received: held until every response made from it is consumed
        (the ticket starts with one guard reference, dropped by Ticket.done() after delivery)."""
        with self._lock:
            self.held += nbytes
            if self.held > self.max_held:
                self.max_held = self.held
            return Ticket(self, nbytes, self.epoch)

    def _release(self, nbytes: int, epoch: int, wake: bool = True):
        with self._lock:
            if epoch != self.epoch:
                return          # a frame of an earlier session: its counter is gone
            self.held -= nbytes
            self._unwoken += nbytes
            due = self.held == 0 or self._unwoken >= self.wake_every
            if due:
                self._unwoken = 0
        if wake and due and self.wake is not None:
            self.wake()


class Ticket:
    __slots__ = ("credit", "nbytes", "epoch", "refs")

    def __init__(self, credit: Credit, nbytes: int, epoch: int):
        self.credit, self.nbytes, self.epoch, self.refs = credit, nbytes, epoch, 1

    def hold(self):
        """One more response made from this frame waits in a queue (I/O thread, before put)."""
        with self.credit._lock:
            self.refs += 1

    def release(self, wake: bool = True):
        with self.credit._lock:
            self.refs -= 1
            last = self.refs == 0
        if last:
            self.credit._release(self.nbytes, self.epoch, wake)

    def done(self):
        """The I/O thread finished delivering the frame (drops the guard; it acks on its own
        next turn, no wake-up needed)."""
        self.release(wake=False)


class WatchQueue:
    """A watch's response buffer (or one shared by many watches: ``watch(..., queue=WatchQueue())``).

    ``get`` releases the response's share of flow-control credit: taking responses out is what
    lets the fan-out send more.  Any other object with ``put()`` also works as a shared queue, but
    its responses count as consumed on arrival (the client cannot see when they are taken), so
    its owner must bound it."""

    def __init__(self):
        self._items: deque = deque()
        self._cond = threading.Condition(threading.Lock())

    def put(self, item, ticket: Ticket | None = None):
        if ticket is not None:
            ticket.hold()
        with self._cond:
            self._items.append((item, ticket))
            self._cond.notify()

    def get(self, block: bool = True, timeout: float | None = None):
        with self._cond:
            if not block:
                if not self._items:
                    raise Empty
            elif not self._cond.wait_for(lambda: self._items, timeout):
                raise Empty
            item, ticket = self._items.popleft()
        if ticket is not None:
            ticket.release()
        return item

    def get_nowait(self):
        return self.get(block=False)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def release_all(self):
        """Give back the credit of everything buffered (the watch was canceled by the
        application: it will not read them); the items stay readable."""
        with self._cond:
            items = list(self._items)
            self._items = deque((item, None) for item, _ in items)
        for _, ticket in items:
            if ticket is not None:
                ticket.release()
