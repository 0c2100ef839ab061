"""What a durable cursor commits for an on_compacted resync's responses (SPEC.md 6.2 and 7.7):
a state piece's kvs keep their own mod_revisions, so committing the largest of them would claim
history the consumer never got (the state's later pieces): a restart would resume from there as
a plain watch and miss every key of those pieces.  Only state_end (the state complete at R) may
be committed; a reset or a state piece commits nothing."""
from __future__ import annotations

from zwatch.client.cursor import revision_consumed
from zwatch.client.types import Event, Header, KeyValue, WatchResponse


def _resp(rev, events=(), mark=None):
    return WatchResponse(1, Header(rev), list(events), ext=None if mark is None else {"mark": mark})


def test_a_state_piece_or_reset_is_not_a_consumed_revision():
    piece = _resp(50, [Event("PUT", KeyValue(b"a", 3, 40, 1, b"x")), Event("PUT", KeyValue(b"b", 4, 12, 1, b"y"))],
                  mark="state")
    assert revision_consumed(piece) is None
    assert revision_consumed(_resp(50, mark="reset")) is None
    assert revision_consumed(_resp(50, mark="state")) is None        # a digest piece of unchanged keys only
    assert revision_consumed(_resp(50, mark="state_end")) == 50      # the state is complete at R


def test_events_and_bookmarks_still_commit():
    assert revision_consumed(_resp(9, [Event("PUT", KeyValue(b"a", 3, 7, 1, b"x"))])) == 7
    assert revision_consumed(_resp(9)) == 9
