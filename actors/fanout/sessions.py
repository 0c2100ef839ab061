"""A session's output: frame cutting, the credit window, held frames, stuck sessions.

I/O-free: `SessionOutput.flush` takes the items the core queued for a session and a `send`
callable (the service's ROUTER; a test's list) and returns what happened.  The rules (SPEC.md
section 7.6, design.md section 10):

* consecutive watch responses and control responses are spliced into one ``w`` frame of about
  256 KiB at most (responses are never re-encoded); replies travel as their own frames;
* a watch frame is sent only while unacknowledged bytes stay within the session window, except
  that one frame may always go when every watch frame sent is acknowledged (replies sent since,
  like the pong of the ping that carried the ack, are not waited for);
* what cannot be sent is held, in order, except that replies (``ok``/``err``/``pong``) pass held
  watch frames: they need no credit, and a client that acknowledges only what its application
  consumed (SPEC.md "ack") must still get the reply of the put it is blocked in while its watch
  backlog waits.  Nothing passes a held control response or progress notification (a bookmark
  must never overtake the events before it, nor a created reply the progress before it), and
  nothing passes a frame the pipe refused;
* held for longer than the stall time (no watch frame sent meanwhile), or more than a
  window's worth, the watch frames are dropped and their owners become victims (the caller
  victimizes them); replies and control responses are kept, but a session that has more than
  ``max_held_replies`` of them (or a window's worth) is not reading at all and is closed.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from zwatch import messages

from .model import ControlOut, Owner, ProgressOut, ReplyOut, Session, WatchOut

FRAME_BYTES = 256 * 1024       # watch frames are cut here so that credit moves in small steps
MAX_HELD_REPLIES = 1000

SENT, AGAIN, GONE = "sent", "again", "gone"
CONTROL = "control"             # the tag of a control response's frame (created / canceled)


class Progress(NamedTuple):
    """Tag of a frame that belongs to a requested progress notification (re-asked if dropped,
    for the same watch: watch_id None is the whole session)."""
    req_id: int
    watch_id: int | None = None


class FlushResult(NamedTuple):
    sent: int = 0                       # frames sent
    lost_frames: int = 0                # watch frames dropped (stuck session)
    lost_owners: tuple = ()             # their owners, in queue order: victimize them in this order
    progress_again: tuple = ()          # Progress tags of requested notifications dropped: ask them again
    holding: bool = False               # frames are still held: flush this session again later
    close: str | None = None            # close the session for this reason


def cut_frames(items) -> list[tuple[bytes, object]]:
    """Items -> [(frame, tag)]: tag is a list of owners (a watch frame), None (never dropped) or
    Progress (dropped with the watch frames before it, then asked again)."""
    frames = []
    run: list[bytes] = []
    owners: list = []
    run_bytes = 0

    def close_run():
        nonlocal run, owners, run_bytes
        if run:
            frames.append((messages.watch_frame(run), owners))
            run, owners, run_bytes = [], [], 0

    for item in items:
        if isinstance(item, WatchOut):
            if run and run_bytes + len(item.data) > FRAME_BYTES:
                close_run()
            run.append(item.data)
            owners.append(item.owner)
            run_bytes += len(item.data)
            continue
        close_run()
        if isinstance(item, ReplyOut):
            frames.append((item.frame, None))
        elif isinstance(item, ControlOut):
            frames.append((messages.watch_frame([item.data]), CONTROL))
        elif isinstance(item, ProgressOut):
            tag = Progress(item.req_id, item.watch_id)
            if item.frame is not None:
                frames.append((item.frame, tag))
            frames.append((item.reply, tag))
        else:
            raise TypeError(f"not a session output item: {item!r}")
    close_run()
    return frames


class SessionOutput:
    def __init__(self, window: int, stall_s: float, max_held_replies: int = MAX_HELD_REPLIES):
        self.window = window
        self.stall_s = stall_s
        self.max_held_replies = max_held_replies
        self.max_inflight = 0        # the largest unacknowledged byte count seen (for stats)

    def flush(self, ident: bytes, session: Session | None, items, send: Callable[[bytes, bytes], str],
              now: float) -> FlushResult:
        """Send the session's held frames, then the new items, as far as credit and its pipe allow.

        session None: a reply to a peer without a session (an error): sent as is, never held."""
        frames = cut_frames(items)
        if session is None:
            for frame, _ in frames:
                if send(ident, frame) != SENT:
                    break
            return FlushResult()
        if session.held:
            frames = session.held + frames
        sent = sent_watch = 0
        window = session.window or self.window
        rest: list = []
        only_replies_pass = True     # what is held so far is watch frames only: replies may pass
        for i, (frame, tag) in enumerate(frames):
            if rest and not (tag is None and only_replies_pass):
                rest.append((frame, tag))
                if not isinstance(tag, list):
                    only_replies_pass = False
                continue
            if isinstance(tag, list) and session.watch_sent_end > session.acked_bytes and \
                    session.sent_bytes - session.acked_bytes + len(frame) > window:
                # No credit: held.  One frame may always go once every watch frame sent was
                # acknowledged (a frame larger than the window; replies unacked since then, such
                # as the pong to the ping that carried that ack, do not hold it back).
                rest.append((frame, tag))
                continue
            outcome = send(ident, frame)
            if outcome == AGAIN:
                rest.extend(frames[i:])     # the pipe is full: everything from here waits
                break
            if outcome == GONE:
                return FlushResult(sent=sent, close="unreachable")
            sent += 1
            session.sent_bytes += len(frame)
            if isinstance(tag, list):
                sent_watch += 1
                session.watch_sent_end = session.sent_bytes
            inflight = session.sent_bytes - session.acked_bytes
            if inflight > self.max_inflight:
                self.max_inflight = inflight
        if not rest:
            session.held, session.held_bytes = [], 0
            return FlushResult(sent=sent)
        # The stall clock runs while held watch frames make no progress (replies passing them
        # are no progress for them); a backlog of replies alone progresses with any send.
        if not session.held or sent_watch or (sent and not any(isinstance(t, list) for _, t in rest)):
            session.held_since = now
        session.held = rest
        session.held_bytes = sum(len(f) for f, _ in rest)
        if session.held_bytes <= window and now - session.held_since <= self.stall_s:
            return FlushResult(sent=sent, holding=True)
        # Stuck: the watch frames go (their watchers replay later from history, exactly from
        # the first revision they did not get); replies and control responses stay; a
        # requested progress notification behind dropped frames is asked again.
        keep, lost_owners, progress, lost = [], [], [], 0
        for frame, tag in rest:
            if isinstance(tag, list):
                lost += 1
                lost_owners.extend(o for o in tag if o is not None)
            elif isinstance(tag, Progress):
                if tag not in progress:
                    progress.append(tag)
            else:
                keep.append((frame, tag))
        # The watch frames in front of them are gone and replies need no credit: send what the
        # pipe takes now.  Only a session whose pipe refuses them is not reading (a client that
        # pipelined thousands of creates behind a full window is reading, and must not be closed).
        kept = 0
        for frame, _ in keep:
            outcome = send(ident, frame)
            if outcome == AGAIN:
                break
            if outcome == GONE:
                return FlushResult(sent=sent, lost_frames=lost, lost_owners=tuple(lost_owners), close="unreachable")
            kept += 1
            session.sent_bytes += len(frame)
        sent += kept
        keep = keep[kept:]
        if kept:
            session.held_since = now
        session.held = keep
        session.held_bytes = sum(len(f) for f, _ in keep)
        close = None
        if len(keep) > self.max_held_replies or session.held_bytes > window:
            close = "not_reading"   # it sends requests (pings) but reads nothing
        return FlushResult(sent=sent, lost_frames=lost, lost_owners=tuple(lost_owners),
                           progress_again=tuple(sorted(progress, key=lambda t: t.req_id)), holding=bool(keep), close=close)

    @staticmethod
    def ack(session: Session, acked: int) -> None:
        if acked > session.acked_bytes:
            # Clamp: a client may count a frame or two from before its session existed.
            session.acked_bytes = min(acked, session.sent_bytes)
            session.backoff = 0.0


__all__ = ["SessionOutput", "FlushResult", "Progress", "cut_frames", "Owner", "SENT", "AGAIN", "GONE",
           "FRAME_BYTES", "MAX_HELD_REPLIES"]
