"""KeyIndex holds an exact key's only item bare (no container: 48 bytes less per watched key);
every method still answers as with containers, through 1 -> 2 -> 1 -> 0 items."""
from zwatch.actors.index import KeyIndex


class Item:
    pass


def test_an_exact_keys_only_item_is_held_bare_and_answered_in_a_container():
    idx = KeyIndex()
    a, b = Item(), Item()
    idx.add(b"k", None, a)
    assert idx.exact[b"k"] is a
    assert list(idx.items(b"k", None)) == [a] and idx.match(b"k") == [(a,)]
    assert len(idx) == 1 and list(idx.all_items()) == [a]
    idx.add(b"k", None, b)
    assert idx.items(b"k", None) == [a, b] and idx.match(b"k") == [[a, b]] and len(idx) == 2
    idx.remove(b"k", None, a)
    assert idx.exact[b"k"] is b, "alone again: bare"
    assert list(idx.items(b"k", None)) == [b] and list(idx.all_items()) == [b]
    idx.remove(b"k", None, a)                   # not there: nothing changes
    assert len(idx) == 1
    idx.remove(b"k", None, b)
    assert idx.exact == {} and idx.match(b"k") == [] and idx.items(b"k", None) == [] and len(idx) == 0


def test_falsy_items_are_items():
    idx = KeyIndex()
    idx.add(b"k", None, 0)
    assert idx.match(b"k") == [(0,)] and len(idx) == 1
    idx.remove(b"k", None, 0)
    assert len(idx) == 0
