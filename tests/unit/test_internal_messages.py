"""The internal actor-to-actor messages (zwatch.internal, SPEC.md section 12).

The exact bytes of one example of each message are pinned: they are what the actors sent before
the messages were code, so an old actor and a new one still understand each other, and the wire
cannot drift unnoticed.  Hostile input must raise InvalidArgument, never another exception.
"""
import msgpack
import pytest

from zwatch import internal as i
from zwatch import messages
from zwatch.errors import InvalidArgument
from zwatch.limits import MAX_KEY_BYTES

KV = [b"foo", 2, 2, 1, b"bar", 0]
RESP = messages.pack([[1], 2, [[0, KV]], False])          # a ready-encoded watch response
REG = i.Registration(7, 1, b"foo", None, 2, 0, False, 1, False, b"s1")

# (what, encoded, exact bytes): SPEC.md section 12's layouts, msgpack-python 1.x, use_bin_type.
PINNED = [
    ("pub", i.Publish(1, 2, [[2, [[0, KV, None]]]], 0).encode(),
     "95 a3 70 75 62 01 02 91 92 02 91 93 00 96 c4 03 66 6f 6f 02 02 01 c4 03 62 61 72 00 c0 00"),
    ("sync", i.encode_sync([REG])[0],
     "93 a4 73 79 6e 63 00 91 9b 07 01 c4 03 66 6f 6f c0 02 00 c2 01 c2 c4 02 73 31 80"),
    ("unsync", i.encode_unsync([(7, 1)])[0], "93 a6 75 6e 73 79 6e 63 00 91 92 07 01"),
    ("ping", i.Ping(3).encode(), "93 a4 70 69 6e 67 03 80"),
    ("pong (syncer)", i.Pong(3, "syncer-1", 2).encode(),
     "93 a4 70 6f 6e 67 03 82 a8 69 6e 73 74 61 6e 63 65 a8 73 79 6e 63 65 72 2d 31 "
     "a8 72 65 76 69 73 69 6f 6e 02"),
    ("pong (writer)", i.Pong(3, None, 2).encode(), "93 a4 70 6f 6e 67 03 81 a8 72 65 76 69 73 69 6f 6e 02"),
    ("ev", i.encode_events([i.SyncEvent([(7, 1)], 2, 2, b"\x94\x91\x01\x02\x90\xc2")])[0],
     "93 a2 65 76 00 91 95 91 92 07 01 02 02 c4 06 94 91 01 02 90 c2 80"),
    ("synced", i.encode_synced([i.Handoff(7, 1, 2)])[0], "93 a6 73 79 6e 63 65 64 00 91 93 07 01 02"),
    ("compacted", i.encode_compacted([i.CompactedCancel(7, 1, 5)])[0],
     "93 a9 63 6f 6d 70 61 63 74 65 64 00 91 93 07 01 05"),
    ("stats", i.StatsRequest(1).encode(), "93 a5 73 74 61 74 73 01 80"),
    # Auth (issue #11): a publish with its 6th element, frames from a snapshot at auth revision 3.
    ("pub (auth)", i.Publish(2, 2, [], 0, 3, [[2, ["enabled", True]]]).encode(),
     "96 a3 70 75 62 02 02 90 00 92 03 91 92 02 92 a7 65 6e 61 62 6c 65 64 c3"),
    ("ev (auth)", i.encode_events([i.SyncEvent([(7, 1)], 2, 2, b"\x94\x91\x01\x02\x90\xc2")], auth_rev=3)[0],
     "93 a2 65 76 03 91 95 91 92 07 01 02 02 c4 06 94 91 01 02 90 c2 80"),
    ("synced (auth)", i.encode_synced([i.Handoff(7, 1, 2)], auth_rev=3)[0],
     "93 a6 73 79 6e 63 65 64 03 91 93 07 01 02"),
    ("compacted (auth)", i.encode_compacted([i.CompactedCancel(7, 1, 5)], auth_rev=3)[0],
     "93 a9 63 6f 6d 70 61 63 74 65 64 03 91 93 07 01 05"),
    ("auth_state", i.AuthStateRequest(4).encode(), "93 aa 61 75 74 68 5f 73 74 61 74 65 04 80"),
    # Lag (issue #12): the writer's commit time (µs since the epoch) as a 7th element.
    ("pub (commit time)", i.Publish(1, 2, [], 0, 0, [], 1_700_000_000_000_000).encode(),
     "97 a3 70 75 62 01 02 90 00 92 00 90 cf 00 06 0a 24 18 1e 40 00"),
]


@pytest.mark.parametrize("what,encoded,hex_bytes", PINNED, ids=[p[0] for p in PINNED])
def test_the_bytes_of_each_internal_message_are_pinned(what, encoded, hex_bytes):
    assert encoded == bytes.fromhex(hex_bytes)


def test_the_pinned_bytes_are_the_hand_written_lists_of_spec_section_12():
    """What the actors packed by hand before: the new encoders must equal it byte for byte."""
    old = {
        "pub": ["pub", 1, 2, [(2, [(0, tuple(KV), None)])], 0],
        "sync": ["sync", 0, [[7, 1, b"foo", None, 2, 0, False, 1, False, b"s1", {}]]],
        "unsync": ["unsync", 0, [[7, 1]]],
        "ping": ["ping", 3, {}],
        "pong (syncer)": ["pong", 3, {"instance": "syncer-1", "revision": 2}],
        "pong (writer)": ["pong", 3, {"revision": 2}],
        "ev": ["ev", 0, [[[[7, 1]], 2, 2, b"\x94\x91\x01\x02\x90\xc2", {}]]],
        "synced": ["synced", 0, [[7, 1, 2]]],
        "compacted": ["compacted", 0, [[7, 1, 5]]],
        "stats": ["stats", 1, {}],
        "pub (auth)": ["pub", 2, 2, [], 0, [3, [[2, ["enabled", True]]]]],
        "ev (auth)": ["ev", 3, [[[[7, 1]], 2, 2, b"\x94\x91\x01\x02\x90\xc2", {}]]],
        "synced (auth)": ["synced", 3, [[7, 1, 2]]],
        "compacted (auth)": ["compacted", 3, [[7, 1, 5]]],
        "auth_state": ["auth_state", 4, {}],
        "pub (commit time)": ["pub", 1, 2, [], 0, [0, []], 1_700_000_000_000_000],
    }
    for what, encoded, _ in PINNED:
        assert messages.pack(old[what]) == encoded, what


# ---------------------------------------------------------------- round trips
def test_publish_round_trip():
    p = i.Publish(4, 6, [[5, [[0, KV, None]]], [6, [[1, [b"foo", 0, 6, 0, b"", 0], KV]]]], 1)
    assert i.Publish.decode(p.encode()) == p
    heartbeat = i.Publish(6, 6, [], 1)
    assert i.Publish.decode(heartbeat.encode()) == heartbeat


def test_publish_with_auth_changes_round_trip():
    changes = [[4, ["role", "r", [["READ", b"a", b"b"], ["READWRITE", b"k", b"\x00"]]]],
               [5, ["user", "u", ["scrypt$16384$8$1$c2FsdA==$a2V5", ["r"]]]],
               [5, ["user", "v", None]], [6, ["role", "r", None]], [6, ["enabled", False]]]
    p = i.Publish(4, 6, [[5, [[0, KV, None]]], [6, [[0, KV, None]]]], 1, 9, changes)
    assert i.Publish.decode(p.encode()) == p
    heartbeat = i.Publish(6, 6, [], 1, 9, [])          # carries the auth revision, no change
    assert i.Publish.decode(heartbeat.encode()) == heartbeat


def test_a_publish_carries_the_commit_time_and_an_old_one_reads_as_0():
    p = i.Publish(4, 6, [[5, [[0, KV, None]]]], 1, 0, [], 1_700_000_000_123_456)
    assert i.Publish.decode(p.encode()) == p
    assert i.Publish.decode(i.Publish(6, 6, [], 1, 9, [], 5).encode()).commit_time == 5
    assert i.Publish.decode(messages.pack(["pub", 1, 2, [], 0])).commit_time == 0
    assert i.Publish.decode(messages.pack(["pub", 1, 2, [], 0, [3, []]])).commit_time == 0


def test_a_publish_of_an_old_writer_has_auth_revision_0_and_no_changes():
    p = i.Publish.decode(messages.pack(["pub", 1, 2, [], 0]))
    assert (p.auth_revision, list(p.auth_changes)) == (0, [])


def test_registration_round_trip_and_unsync():
    regs = [REG, i.Registration(8, 3, b"a", b"\xff" * (MAX_KEY_BYTES + 1), 9, 3, True, 1 << 62, True, b"\x00k")]
    frames = i.encode_sync(regs)
    assert len(frames) == 1
    assert i.decode_sync(frames[0]) == regs
    # The syncer gets the body already decoded by messages.decode_request.
    op, _, body = messages.decode_request(frames[0], frozenset({"sync"}), frozenset({"sync"}))
    assert i.decode_sync(body) == regs
    assert i.decode_unsync(i.encode_unsync([(1, 2), (3, 4)])[0]) == [(1, 2), (3, 4)]


def test_ping_pong_round_trip():
    assert i.Ping.decode(i.Ping(9).encode()) == i.Ping(9)
    for pong in (i.Pong(9, "syncer-x", 12), i.Pong(9, None, 12)):
        assert i.Pong.decode(pong.encode()) == pong
    writer = i.Pong(9, None, 12, {"compact_revision": 3, "commit_time": 1_700_000_000_000_000})
    assert i.Pong.decode(writer.encode()).info["commit_time"] == 1_700_000_000_000_000   # the writer's (issue #12)


def test_from_syncer_round_trip():
    ev = i.SyncEvent([(7, 1), (8, 2)], 2, 5, RESP)
    assert i.decode_from_syncer(i.encode_events([ev])[0]) == ("ev", [ev], 0)
    assert i.decode_from_syncer(i.encode_events([ev], auth_rev=12)[0]) == ("ev", [ev], 12)
    assert i.decode_from_syncer(i.encode_synced([i.Handoff(7, 1, 9)])[0]) == ("synced", [i.Handoff(7, 1, 9)], 0)
    assert i.decode_from_syncer(i.encode_synced([i.Handoff(7, 1, 9)], auth_rev=2)[0])[2] == 2
    cancel = i.CompactedCancel(7, 1, 4)
    assert i.decode_from_syncer(i.encode_compacted([cancel])[0]) == ("compacted", [cancel], 0)
    assert i.decode_from_syncer(i.encode_compacted([cancel], auth_rev=5)[0]) == ("compacted", [cancel], 5)
    assert i.decode_from_syncer(i.Pong(3, "s", 7).encode()) == ("pong", i.Pong(3, "s", 7), 3)
    err = messages.encode_error(0, InvalidArgument("bad"))
    kind, body, _ = i.decode_from_syncer(err)
    assert kind == "err" and body["code"] == "INVALID_ARGUMENT"
    state = {"enabled": True, "revision": 4, "users": {"root": [None, ["root"]]},
             "roles": {"root": [], "r": [["READ", b"a", b""]]}}
    assert i.decode_from_syncer(i.AuthStateReply(8, state).encode()) == ("auth_state", state, 8)


def test_stats_reply_round_trip():
    assert i.decode_stats_reply(i.encode_stats_reply(1, {"batches": 2, "instance": "s"})) == \
        {"batches": 2, "instance": "s"}


def test_repack_response_keeps_everything_but_the_ids():
    assert i.unpack_response(RESP) == ([1], 2, [[0, KV]], False)
    again = i.repack_response([5, 6], RESP)
    assert again == messages.pack([[5, 6], 2, [[0, KV]], False])


def test_watch_frames_splice_ready_encoded_responses():
    ctl = messages.pack(messages.control_response(3, 7, created=True))
    assert messages.watch_frame([RESP, ctl]) == messages.pack(["w", 0, [msgpack.unpackb(RESP), msgpack.unpackb(ctl)]])
    assert messages.watch_frame([RESP]) == messages.pack(["w", 0, [msgpack.unpackb(RESP)]])
    assert messages.decode_server_frame(messages.watch_frame([])) == ("w", 0, [])


# ---------------------------------------------------------------- chunking
@pytest.mark.parametrize("n", [0, 1, 5000])
def test_chunking_keeps_every_item_and_each_frame_under_the_bound(n):
    bound = 16 * 1024
    regs = [i.Registration(u, 1, b"k%d" % u, None, 1, 0, False, u, False, b"session-%d" % (u % 7)) for u in range(n)]
    pairs = [(u, 2) for u in range(n)]
    events = [i.SyncEvent([(u, 1), (u + 1, 1)], 1, 2, RESP) for u in range(n)]
    handoffs = [i.Handoff(u, 1, 3) for u in range(n)]
    cancels = [i.CompactedCancel(u, 1, 3) for u in range(n)]
    cases = [(i.encode_sync(regs, bound), i.decode_sync, regs),
             (i.encode_unsync(pairs, bound), i.decode_unsync, pairs),
             (i.encode_events(events, bound), lambda f: i.decode_from_syncer(f)[1], events),
             (i.encode_synced(handoffs, bound), lambda f: i.decode_from_syncer(f)[1], handoffs),
             (i.encode_compacted(cancels, bound), lambda f: i.decode_from_syncer(f)[1], cancels)]
    for frames, decode, items in cases:
        assert all(len(f) <= bound for f in frames)
        assert [x for f in frames for x in decode(f)] == items
        assert (len(frames) > 1) if n == 5000 else (len(frames) == n)


def test_an_item_larger_than_the_bound_travels_alone():
    big = i.SyncEvent([(1, 1)], 1, 1, b"x" * 5000)
    small = i.SyncEvent([(2, 1)], 1, 1, b"y")
    frames = i.encode_events([small, big, small], max_bytes=1000)
    assert [len(i.decode_from_syncer(f)[1]) for f in frames] == [1, 1, 1]


# ---------------------------------------------------------------- hostile input
def _pub(*fields):
    return messages.pack(["pub", *fields])


HOSTILE_PUBLISHES = [
    b"", b"\xc1", b"\x93", msgpack.packb(["pub", 1, 2, []]),                  # malformed, wrong arity
    msgpack.packb(["pug", 1, 2, [], 0]), msgpack.packb([b"pub", 1, 2, [], 0]),
    msgpack.packb({"pub": 1}), msgpack.packb(msgpack.ExtType(1, b"x")),
    _pub(True, 2, [], 0), _pub(1, 2.0, [], 0), _pub(1, 2, [], -1), _pub(1, 1 << 63, [], 0),
    _pub(1, 2, {}, 0), _pub(1, 2, [[2]], 0), _pub(1, 2, [[2, [[0, KV]]]], 0),
    _pub(1, 2, [[2, [[2, KV, None]]]], 0), _pub(1, 2, [[2, [[False, KV, None]]]], 0),
    _pub(1, 2, [[2, [[0, KV[:5], None]]]], 0), _pub(1, 2, [[2, [[0, ["foo", 2, 2, 1, b"bar", 0], None]]]], 0),
    _pub(1, 2, [[2, [[0, [b"foo", 2, 2, 1, "bar", 0], None]]]], 0),
    _pub(1, 2, [[2, [[0, [b"k" * (MAX_KEY_BYTES + 1), 2, 2, 1, b"", 0], None]]]], 0),
    _pub(1, 2, [[2, [[0, KV, [b"foo"]]]]], 0), _pub(1, 2, [[True, [[0, KV, None]]]], 0),
]


_CHANGE = [2, ["enabled", True]]
HOSTILE_PUBLISHES += [
    _pub(1, 2, [], 0, [1, [_CHANGE]], 0, 0), _pub(1, 2, [], 0, [1]),
    _pub(1, 2, [], 0, [0, []], -1), _pub(1, 2, [], 0, [0, []], 1.5), _pub(1, 2, [], 0, [0, []], True),
    _pub(1, 2, [], 0, [0, []], None), _pub(1, 2, [], 0, [0, []], 1 << 63),     # bad commit times _pub(1, 2, [], 0, {}),
    _pub(1, 2, [], 0, [-1, []]), _pub(1, 2, [], 0, [True, []]), _pub(1, 2, [], 0, [1, {}]),
    _pub(1, 2, [], 0, [0, [_CHANGE]]),                                     # more changes than revisions
    _pub(1, 2, [], 0, [2, [[0, ["enabled", True]]]]),                      # after_revision below prev
    _pub(1, 2, [], 0, [2, [[3, ["enabled", True]]]]),                      # ... above last
    _pub(1, 2, [], 0, [2, [[2, ["enabled", True]], [1, ["enabled", False]]]]),   # going back
    _pub(1, 2, [], 0, [1, [[2, ["enabled", 1]]]]), _pub(1, 2, [], 0, [1, [[2, ["enabled"]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["nope", 1]]]]), _pub(1, 2, [], 0, [1, [[2, []]]]), _pub(1, 2, [], 0, [1, [[2, "x"]]]),
    _pub(1, 2, [], 0, [1, [[2, ["user", "", None]]]]), _pub(1, 2, [], 0, [1, [[2, ["user", b"u", None]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["user", "u" * 129, None]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["user", "u", [None]]]]]), _pub(1, 2, [], 0, [1, [[2, ["user", "u", [5, []]]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["user", "u", ["h" * 257, []]]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["user", "u", [None, [""]]]]]]), _pub(1, 2, [], 0, [1, [[2, ["user", "u", [None, "r"]]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["user", "u", [None, ["r"] * 1001]]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["role", "r", [["READ", b"a"]]]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["role", "r", [["read", b"a", b""]]]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["role", "r", [["READ", "a", b""]]]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["role", "r", [["READ", b"a" * 512, b""]]]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["role", "r", [["READ", b"a", b"b" * 513]]]]]]),
    _pub(1, 2, [], 0, [1, [[2, ["role", "r", {}]]]]),
]


@pytest.mark.parametrize("raw", HOSTILE_PUBLISHES)
def test_hostile_publishes_raise_invalid_argument(raw):
    with pytest.raises(InvalidArgument):
        i.Publish.decode(raw)


GOOD_REG = [7, 1, b"foo", None, 2, 0, False, 1, False, b"s1", {}]


def _reg(**change):
    names = list(i.Registration._fields)
    item = list(GOOD_REG)
    for name, value in change.items():
        item[names.index(name)] = value
    return item


HOSTILE_REGISTRATIONS = [
    GOOD_REG[:10], GOOD_REG + [0], "x", {"uid": 1},
    _reg(opts=[]), _reg(opts={1: 2}), _reg(opts={"a": [1]}), _reg(opts={"a": 1.5}), _reg(opts={"v": b"x" * 5000}),
    _reg(uid=True), _reg(epoch=-1), _reg(next_rev=1.5), _reg(next_rev=1 << 63), _reg(filter_bits=4),
    _reg(watch_id=None), _reg(key="foo"), _reg(key=b"k" * (MAX_KEY_BYTES + 2)), _reg(end=""),
    _reg(prev_kv=0), _reg(fragment=1), _reg(session="s1"), _reg(session=b"s" * 256),
]


@pytest.mark.parametrize("item", HOSTILE_REGISTRATIONS)
def test_hostile_registrations_refuse_the_whole_sync_frame(item):
    with pytest.raises(InvalidArgument):
        i.decode_sync([GOOD_REG, item])
    with pytest.raises(InvalidArgument):
        i.decode_sync(messages.pack(["sync", 0, [item]]))


@pytest.mark.parametrize("body", [{}, [[1]], [[1, 2, 3]], [[1, True]], [["1", 2]], [[1, -2]], "x"])
def test_hostile_unsync_raises_invalid_argument(body):
    with pytest.raises(InvalidArgument):
        i.decode_unsync(body)


HOSTILE_FROM_SYNCER = [
    b"\xff", msgpack.packb(["ev", 0]), msgpack.packb([1, 0, []]), msgpack.packb(["nope", 0, []]),
    messages.pack(["ev", 0, {}]), messages.pack(["ev", True, []]),
    messages.pack(["ev", 0, [[[[7, 1]], 2, 2]]]), messages.pack(["ev", 0, [[[[7, 1]], 2, 2, "resp"]]]),
    messages.pack(["ev", 0, [[[[7]], 2, 2, RESP]]]), messages.pack(["ev", 0, [[[[7, 1.0]], 2, 2, RESP]]]),
    messages.pack(["ev", 0, [[[7, 1], 2, 2, RESP]]]), messages.pack(["ev", 0, [[[[7, 1]], False, 2, RESP]]]),
    messages.pack(["synced", 0, [[7, 1]]]), messages.pack(["synced", 0, [[7, 1, -1]]]),
    messages.pack(["synced", 0, [[7, 1, 1 << 63]]]), messages.pack(["compacted", 0, [[7, 1, "5"]]]),
    messages.pack(["compacted", 0, [7, 1, 5]]),
    messages.pack(["pong", 1, {"instance": 5, "revision": 2}]), messages.pack(["pong", 1, {"instance": "s"}]),
    messages.pack(["pong", 1, {"revision": True}]), messages.pack(["pong", 1, []]),
    messages.pack(["pong", None, {"revision": 2}]),
    messages.pack(["err", 0, "boom"]), messages.pack(["err", 0, {"message": "no code"}]),
    messages.pack(["err", "0", {"code": "INTERNAL"}]),
    messages.pack(["ev", -1, []]), messages.pack(["ok", 1, []]), messages.pack(["ok", None, {}]),
    messages.pack(["ok", 1, {"enabled": True, "revision": 1, "users": {}}]),
    messages.pack(["ok", 1, {"enabled": 1, "revision": 1, "users": {}, "roles": {}}]),
    messages.pack(["ok", 1, {"enabled": True, "revision": -1, "users": {}, "roles": {}}]),
    messages.pack(["ok", 1, {"enabled": True, "revision": 1, "users": {"u": [None]}, "roles": {}}]),
    messages.pack(["ok", 1, {"enabled": True, "revision": 1, "users": {"": [None, []]}, "roles": {}}]),
    messages.pack(["ok", 1, {"enabled": True, "revision": 1, "users": {}, "roles": {"r": [["X", b"", b""]]}}]),
]


@pytest.mark.parametrize("raw", HOSTILE_FROM_SYNCER)
def test_hostile_syncer_messages_raise_invalid_argument(raw):
    with pytest.raises(InvalidArgument):
        i.decode_from_syncer(raw)


@pytest.mark.parametrize("raw", [messages.pack(["ping", 1, {"x": 1}]), messages.pack(["ping", -1, {}]),
                                 messages.pack(["pong", 1, {}]), messages.pack(["ping", 1, []]), b"\x00"])
def test_hostile_ping_pong_raise_invalid_argument(raw):
    with pytest.raises(InvalidArgument):
        (i.Ping.decode if b"ping" in raw else i.Pong.decode)(raw)


def test_oversized_frames_and_hostile_responses_raise_invalid_argument():
    with pytest.raises(InvalidArgument):
        i._unpack(i.Ping(1).encode(), max_bytes=4)
    with pytest.raises(InvalidArgument):
        i._unpack("not bytes")
    for resp in (b"\x93", messages.pack([[1], 2, []]), messages.pack([[True], 2, [], False]),
                 messages.pack([[1], 2, [], 0]), messages.pack([[1], "2", [], False])):
        with pytest.raises(InvalidArgument):
            i.repack_response([1], resp)


@pytest.mark.parametrize("kv", [
    [b"k", 2, 3, 1, b"v", 0], [b"k", 2, 3, 1, b"v", -5], [b"k" * 511, 0, 0, 0, b"", 0],
    [b"k" * 512, 2, 3, 1, b"v", 0], [b"", 2, 3, 1, b"v", 0], ["k", 2, 3, 1, b"v", 0], [b"k", 2, 3, 1, "v", 0],
    [b"k", True, 3, 1, b"v", 0], [b"k", 2, -1, 1, b"v", 0], [b"k", 2, 3, 1 << 63, b"v", 0],
    [b"k", 2, 3, 1, b"v", -(1 << 63) - 1], [b"k", 2, 3, 1, b"v", 1 << 63], [b"k", 2, 3, 1, b"v"],
    (b"k", 2, 3, 1, b"v", 0), [b"k", 2, 3, 1, b"v", 0.5], None])
def test_the_publish_fast_path_accepts_exactly_what_decode_kv_accepts(kv):
    """Publish.decode checks events inline for speed; it must never accept more than decode_kv."""
    try:
        i.decode_kv(kv)
        accepted = True
    except InvalidArgument:
        accepted = False
    assert i._kv_ok(kv) is accepted
    if type(kv) is not list or not all(type(f) is not int or -(1 << 63) <= f < (1 << 64) for f in kv):
        return                        # msgpack cannot carry it: nothing to decode
    raw = i.Publish(1, 2, [[2, [[0, kv, None]]]], 0).encode()
    if accepted:
        i.Publish.decode(raw)
    else:
        with pytest.raises(InvalidArgument):
            i.Publish.decode(raw)
