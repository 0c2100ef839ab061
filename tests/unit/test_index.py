"""The watch key index against a brute-force scan of the same specs."""
from hypothesis import given, settings, strategies as st

from zwatch.actors.index import KeyIndex
from zwatch.messages import KEY_INFINITY

keys = st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 4 for x in b))
spec = st.tuples(keys, st.one_of(st.none(), keys, st.just(KEY_INFINITY)))


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(spec, max_size=40), removed=st.sets(st.integers(0, 39)), queries=st.lists(keys, max_size=20))
def test_match_equals_brute_force(specs, removed, queries):
    idx = KeyIndex()
    for i, (k, e) in enumerate(specs):
        idx.add(k, e, i)
    live = []
    for i, (k, e) in enumerate(specs):
        if i in removed:
            idx.remove(k, e, i)
        else:
            live.append((k, e, i))
    for q in queries + [k for k, _, _ in live]:
        got = sorted(x for items in idx.match(q) for x in items)
        want = sorted(i for k, e, i in live if (k == q if e is None else k <= q < e))
        assert got == want
