"""A session's output: frame cutting, the credit window, held frames, stuck sessions (no socket:
`send` is a list that can refuse, as a full ZeroMQ pipe does)."""
from __future__ import annotations

import msgpack

from zwatch.actors.fanout.model import ControlOut, Owner, ProgressOut, ReplyOut, Session, WatchOut
from zwatch.actors.fanout.sessions import AGAIN, FRAME_BYTES, GONE, SENT, Progress, SessionOutput, cut_frames


class Pipe:
    """What the ROUTER would do: accept `room` frames, then say AGAIN (or GONE)."""

    def __init__(self, room: int = 10 ** 9, gone: bool = False):
        self.room, self.gone, self.frames = room, gone, []

    def __call__(self, ident, frame):
        if self.gone:
            return GONE
        if len(self.frames) >= self.room:
            return AGAIN
        self.frames.append(frame)
        return SENT


def msgpack_watch_frame(data: bytes) -> bytes:
    from zwatch import messages
    return messages.watch_frame([data])


def resp(rev: int, size: int = 100) -> bytes:
    return msgpack.packb([[1], rev, [[0, [b"k", 2, rev, 1, b"x" * size, 0]]], False])


def w_item(rev, size=100, owner_rev=None):
    return WatchOut(resp(rev, size), Owner(("w",), owner_rev or rev))


def test_consecutive_responses_share_a_frame_up_to_the_frame_size_and_replies_stand_alone():
    items = [w_item(2), w_item(3), ReplyOut(b"reply"), ControlOut(msgpack.packb({"watch_id": 1})), w_item(4)]
    frames = cut_frames(items)
    kinds = [msgpack.unpackb(f, raw=False)[0] if f != b"reply" else "r" for f, _ in frames]
    assert kinds == ["w", "r", "w", "w"]
    assert len(msgpack.unpackb(frames[0][0], raw=False)[2]) == 2
    big = cut_frames([w_item(r, FRAME_BYTES // 3) for r in range(2, 8)])
    assert len(big) == 3 and all(len(f) <= FRAME_BYTES + 1024 for f, _ in big)


def test_watch_frames_wait_for_credit_but_one_frame_may_always_go():
    out = SessionOutput(window=1000, stall_s=2.0)
    s = Session(b"s", "s")
    pipe = Pipe()
    r = out.flush(b"s", s, [w_item(2, 5000)], pipe, now=0.0)     # bigger than the window, nothing unacked
    assert r.sent == 1 and not r.holding
    r = out.flush(b"s", s, [w_item(3, 10), w_item(4, 10)], pipe, now=0.1)
    assert r.sent == 0 and r.holding and len(s.held) == 1       # no credit: held
    out.ack(s, s.sent_bytes)
    r = out.flush(b"s", s, [], pipe, now=0.2)
    assert r.sent == 1 and not s.held


def test_replies_pass_held_watch_frames_but_not_a_held_control_or_progress_frame():
    """Regression (issue #14, a client that acks only what its application consumed): a put's
    reply waited behind the watch frames of the client's own unread watch, so an application
    blocked in put() never got its reply, the session fell silent and failed over.  Replies need
    no credit and pass held watch frames; a bookmark (progress) or a created/canceled response
    never overtakes what was queued before it, so nothing passes those."""
    out = SessionOutput(window=1000, stall_s=2.0)
    s = Session(b"s", "s")
    pipe = Pipe()
    out.flush(b"s", s, [w_item(2, 2000)], pipe, now=0.0)            # fills the window, never acked
    r = out.flush(b"s", s, [w_item(3, 10), ReplyOut(b"put-reply"), ReplyOut(b"pong")], pipe, now=0.1)
    assert pipe.frames[-2:] == [b"put-reply", b"pong"] and r.sent == 2 and len(s.held) == 1
    items = [ProgressOut(b"pframe", b"preply", 7), ReplyOut(b"after-progress"), ControlOut(b"c"), ReplyOut(b"after")]
    r = out.flush(b"s", s, items, pipe, now=0.2)
    assert r.sent == 0 and [f for f, _ in s.held][1:] == [b"pframe", b"preply", b"after-progress",
                                                        msgpack_watch_frame(b"c"), b"after"]
    out.ack(s, s.sent_bytes)
    r = out.flush(b"s", s, [], pipe, now=0.3)                       # credit: all of it, in order
    assert not s.held and pipe.frames[-3:] == [b"after-progress", msgpack_watch_frame(b"c"), b"after"]
    assert out.stall_s == 2.0


def test_replies_passing_held_watch_frames_do_not_reset_the_stall_clock():
    out = SessionOutput(window=1000, stall_s=1.0)
    s = Session(b"s", "s")
    pipe = Pipe()
    out.flush(b"s", s, [w_item(2, 2000)], pipe, now=0.0)
    out.flush(b"s", s, [w_item(3, 10)], pipe, now=0.1)
    for t in (0.5, 0.9, 1.05):
        r = out.flush(b"s", s, [ReplyOut(b"pong")], pipe, now=t)
        assert not r.lost_owners
    r = out.flush(b"s", s, [ReplyOut(b"pong")], pipe, now=1.2)     # held 1.1 s > stall: a victim
    assert [o.first_rev for o in r.lost_owners] == [3]


def test_a_stuck_session_loses_its_watch_frames_in_order_and_keeps_its_replies():
    out = SessionOutput(window=10_000, stall_s=1.0)
    s = Session(b"s", "s")
    pipe = Pipe(room=0)                                          # its pipe is full
    items = [w_item(5), ReplyOut(b"reply"), w_item(6), ProgressOut(b"pframe", b"preply", 42), w_item(7)]
    r = out.flush(b"s", s, items, pipe, now=0.0)
    assert r.holding and not r.lost_owners
    r = out.flush(b"s", s, [], pipe, now=2.0)                   # past the stall time
    assert [o.first_rev for o in r.lost_owners] == [5, 6, 7]    # queue order: the first names the resume point
    assert r.lost_frames == 3 and r.progress_again == (Progress(42),)
    assert [f for f, _ in s.held] == [b"reply"] and r.holding and r.close is None


def test_a_dropped_per_watch_progress_request_is_asked_again_for_the_same_watch():
    """Issue #16.3: the re-ask of a dropped watch_progress {"watch_id": 3} must be for watch 3,
    not the whole session (whose reply has another shape)."""
    out = SessionOutput(window=10_000, stall_s=1.0)
    s = Session(b"s", "s")
    pipe = Pipe(room=0)
    items = [w_item(5), ProgressOut(b"pframe", b"preply", 42, 3), ProgressOut(None, b"preply2", 43, 4),
             ProgressOut(b"all", b"preply3", 44)]
    out.flush(b"s", s, items, pipe, now=0.0)
    r = out.flush(b"s", s, [], pipe, now=2.0)
    assert r.progress_again == (Progress(42, 3), Progress(43, 4), Progress(44, None))


def test_a_session_that_never_reads_its_replies_is_closed():
    """Issue #8.2: pongs queued behind a full pipe for ever."""
    out = SessionOutput(window=10_000, stall_s=1.0, max_held_replies=10)
    s = Session(b"s", "s")
    pipe = Pipe(room=0)
    out.flush(b"s", s, [ReplyOut(b"pong")] * 11, pipe, now=0.0)
    r = out.flush(b"s", s, [], pipe, now=2.0)
    assert r.close == "not_reading"


def test_a_gone_peer_closes_the_session_and_a_peer_without_session_is_never_held():
    out = SessionOutput(window=10_000, stall_s=1.0)
    assert out.flush(b"s", Session(b"s", "s"), [ReplyOut(b"x")], Pipe(gone=True), now=0.0).close == "unreachable"
    r = out.flush(b"n", None, [ReplyOut(b"err")], Pipe(room=0), now=0.0)
    assert not r.holding


def test_acks_are_clamped_and_reset_the_victim_backoff():
    s = Session(b"s", "s")
    s.sent_bytes, s.backoff = 100, 1.6
    SessionOutput.ack(s, 10 ** 12)
    assert s.acked_bytes == 100 and s.backoff == 0.0


def test_a_reading_session_is_not_closed_when_replies_were_held_behind_a_full_window():
    """Found by the overload runs: a client that pipelined 3,000 creates behind a full credit
    window had ~1,200 replies held; after its watch frames were dropped the replies were counted
    against the bound without being tried, and a reading client was closed as not_reading."""
    out = SessionOutput(window=1000, stall_s=1.0, max_held_replies=10)
    s = Session(b"s", "s")
    pipe = Pipe()
    out.flush(b"s", s, [w_item(2, 2000)], pipe, now=0.0)            # fills the window, never acked
    # (Replies pass held watch frames now; control responses still wait behind them.)
    items = [w_item(3, 10)] + [ControlOut(b"created")] * 50
    r = out.flush(b"s", s, items, pipe, now=0.0)
    assert r.holding and len(s.held) == 51
    r = out.flush(b"s", s, [], pipe, now=2.0)                       # stuck: the watch frame goes...
    assert r.close is None and not s.held                           # ...and the responses are delivered
    assert pipe.frames.count(msgpack_watch_frame(b"created")) == 50


def test_a_session_window_asked_in_the_hello_is_the_one_used():
    out = SessionOutput(window=1_000_000, stall_s=2.0)
    s = Session(b"s", "s")
    s.window = 3000                                              # the client's hello asked for less
    pipe = Pipe()
    out.flush(b"s", s, [w_item(2, 2000)], pipe, now=0.0)
    r = out.flush(b"s", s, [ReplyOut(b"r"), w_item(3, 2000)], pipe, now=0.1)
    assert r.sent == 1 and len(s.held) == 1                      # 2000 + 2000 > 3000: held
    out.ack(s, s.sent_bytes)
    assert out.flush(b"s", s, [], pipe, now=0.2).sent == 1


def test_one_watch_frame_may_go_once_every_watch_frame_was_acknowledged_whatever_replies_follow():
    """Regression: a pong sent after the client's ack (the ack rides with each ping) stayed
    unacknowledged, so 'everything acknowledged' never held again and a frame larger than the
    window was dropped every stall period forever (a victim loop)."""
    out = SessionOutput(window=1000, stall_s=0.5)
    s = Session(b"s", "s")
    pipe = Pipe()
    out.flush(b"s", s, [w_item(2, 5000)], pipe, now=0.0)        # larger than the window: may go alone
    out.ack(s, s.sent_bytes)
    out.flush(b"s", s, [ReplyOut(b"pong")], pipe, now=0.1)       # unacknowledged reply after the ack
    r = out.flush(b"s", s, [w_item(3, 5000)], pipe, now=0.2)
    assert r.sent == 1 and not s.held
