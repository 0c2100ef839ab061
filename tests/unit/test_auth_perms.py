"""RangePerms (actors/auth/perms.py): a user's READ / WRITE permissions merged into disjoint
intervals, answering etcd's checks (range_perm_cache.go: Contains for a range, Intersects for a
key) by binary search.  In-process, no store.

The property test compares every answer with a brute-force model: the keys of a small universe
that a query selects must each lie in some permission's interval."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zwatch.actors.auth.perms import ALLOW_ALL, DENY_ALL, READ, READWRITE, WRITE, RangePerms, merge, perm_interval


def perms(*triples) -> RangePerms:
    return RangePerms.build([list(t) for t in triples])


# ---------------------------------------------------------------- examples
def test_a_single_key_permission_allows_that_key_only():
    p = perms([READ, b"foo", b""])
    assert p.can_read(b"foo")
    assert not p.can_read(b"fo") and not p.can_read(b"foo\x00") and not p.can_read(b"fop")
    assert p.can_read(b"foo", b"foo\x00")           # the range holding exactly that key
    assert not p.can_write(b"foo")


@pytest.mark.parametrize("key, range_end", [
    (b"foo", b"\x00"),          # from-key: the GHSA-xg4h-6gfc-h4m8 watch
    (b"foo", b"fop"),           # the prefix foo
    (b"\x00", b"\x00"),         # every key
    (b"foo", b"foo\x00\x00"),   # foo and foo\x00
    (b"fo", b"foo\x00"),        # a range ending after foo, starting before it
])
def test_ghsa_xg4h_6gfc_h4m8_a_wider_query_never_passes_on_a_single_key_permission(key, range_end):
    """etcd's GHSA-xg4h-6gfc-h4m8: a from-key (or prefix) watch of a key was checked as the key
    alone and passed with a permission on that single key."""
    p = perms([READWRITE, b"foo", b""])
    assert p.can_read(b"foo") and p.can_write(b"foo")
    assert not p.can_read(key, range_end) and not p.can_write(key, range_end)


def test_a_prefix_permission_does_not_allow_from_key_or_all_keys():
    p = perms([READ, b"foo", b"fop"])
    assert p.can_read(b"foo", b"fop") and p.can_read(b"foo/bar") and p.can_read(b"foo/a", b"foo/b")
    assert not p.can_read(b"foo", b"\x00") and not p.can_read(b"\x00", b"\x00") and not p.can_read(b"fop")
    assert not p.can_read(b"foo", b"fop\x00")


def test_from_key_permissions_reach_every_key_above():
    p = perms([WRITE, b"m", b"\x00"])
    assert p.can_write(b"m", b"\x00") and p.can_write(b"\xff" * 511) and p.can_write(b"z", b"\x00")
    assert not p.can_write(b"l", b"\x00") and not p.can_write(b"l") and not p.can_read(b"m")


def test_touching_and_overlapping_permissions_cover_together_across_roles():
    # [a, c) + [c, e) + point e + [e\x00, g): one interval [a, g)
    p = perms([READ, b"a", b"c"], [READWRITE, b"c", b"e"], [READ, b"e", b""], [READ, b"e\x00", b"g"])
    assert p.read.intervals() == [(b"a", b"g")]
    assert p.can_read(b"a", b"g") and not p.can_read(b"a", b"g\x00")
    assert p.write.intervals() == [(b"c", b"e")]
    assert p.can_write(b"c", b"e") and not p.can_write(b"c", b"e\x00") and not p.can_write(b"b", b"d")


def test_a_gap_between_permissions_is_not_covered():
    p = perms([READ, b"a", b"c"], [READ, b"d", b"f"])
    assert p.read.intervals() == [(b"a", b"c"), (b"d", b"f")]
    assert p.can_read(b"a", b"c") and p.can_read(b"d", b"f")
    assert not p.can_read(b"a", b"f") and not p.can_read(b"c") and p.can_read(b"c" + b"\xff" * 3) is False


def test_readwrite_grants_both_and_read_and_write_are_separate():
    p = perms([READ, b"a", b"b"], [WRITE, b"b", b"c"], [READWRITE, b"x", b""])
    assert p.can_read(b"a") and not p.can_write(b"a")
    assert p.can_write(b"b") and not p.can_read(b"b")
    assert p.can_read(b"x") and p.can_write(b"x")
    assert p.allows(READ, b"a") and p.allows(WRITE, b"b") and not p.allows(WRITE, b"a")


def test_an_empty_query_range_is_checked_as_its_key():
    """etcd: key >= range_end selects nothing; it must not pass where the key would not."""
    p = perms([READ, b"b", b""])
    assert p.can_read(b"b", b"a") and p.can_read(b"b", b"b")
    assert not p.can_read(b"c", b"a") and not p.can_read(b"a", b"a")


def test_an_inverted_permission_grants_nothing():
    assert perm_interval(b"b", b"a") is None and perm_interval(b"b", b"b") is None
    p = perms([READ, b"b", b"a"])
    assert p.read.intervals() == [] and not p.can_read(b"b") and not p.can_read(b"a")


def test_allow_all_and_deny_all():
    for key, end in [(b"a", b""), (b"\x00", b"\x00"), (b"\xff" * 511, b""), (b"a", b"\x00"), (b"", b"\x00")]:
        assert ALLOW_ALL.can_read(key, end) and ALLOW_ALL.can_write(key, end)
        assert not DENY_ALL.can_read(key, end) and not DENY_ALL.can_write(key, end)


def test_an_unknown_permission_type_is_refused():
    with pytest.raises(ValueError):
        perms(["read", b"a", b""])


def test_merge_joins_overlaps_and_infinite_ends():
    assert merge([(b"a", b"c"), (b"b", None), (b"d", b"e")]) == ((b"a",), (None,))
    assert merge([(b"d", b"e"), (b"a", b"b"), (b"a", b"c")]) == ((b"a", b"d"), (b"c", b"e"))
    assert merge([]) == ((), ())


def test_a_check_costs_log_of_the_permissions(monkeypatch):
    """10,000 disjoint single-key permissions: a check compares O(log n) keys, not n."""
    from zwatch.actors.auth import perms as mod
    p = perms(*[[READ, b"k%05d" % i, b""] for i in range(0, 20000, 2)])
    assert len(p.read) == 10000
    calls = []
    real = mod.bisect_right
    monkeypatch.setattr(mod, "bisect_right", lambda a, x: calls.append(1) or real(a, x))
    assert p.can_read(b"k01234") and not p.can_read(b"k01235") and not p.can_read(b"k00000", b"k00004")
    assert len(calls) == 3            # one binary search per check, nothing per permission


# ---------------------------------------------------------------- the property, against brute force
# Few short keys, so that permissions often touch, overlap and nest, and queries often straddle them.
ALPHABET = [b"\x00", b"a", b"\xff"]
keys = st.lists(st.sampled_from(ALPHABET), min_size=0, max_size=2).map(b"".join)
nonempty_keys = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=2).map(b"".join)
range_ends = st.one_of(st.just(b""), st.just(b"\x00"), keys)
perm_lists = st.lists(st.tuples(st.sampled_from([READ, WRITE, READWRITE]), keys, range_ends), max_size=6)
UNIVERSE = [b"".join(t) for n in range(4) for t in itertools.product(ALPHABET, repeat=n)]


def model_interval(key: bytes, range_end: bytes):
    """The set-of-keys reading of etcd's (key, range_end), for a permission or a query."""
    if range_end == b"":
        return lambda k: k == key
    if range_end == b"\x00":
        return lambda k: k >= key
    return lambda k: key <= k < range_end


def model_allows(perm_list, kind: str, key: bytes, range_end: bytes) -> bool:
    granted = [model_interval(k, e) for t, k, e in perm_list if t == kind or t == READWRITE]
    in_union = lambda k: any(g(k) for g in granted)      # noqa: E731
    if range_end == b"" or (range_end != b"\x00" and range_end <= key):
        return in_union(key)
    selects = model_interval(key, range_end)
    # Every left end of a gap is an endpoint (the query's key, a permission's end or key+\x00):
    # with those in the universe, checking the universe's keys is exact.
    extra = {key, range_end} | {k for _, k, _ in perm_list} | {e for _, _, e in perm_list} | \
        {k + b"\x00" for _, k, _ in perm_list}
    return all(in_union(k) for k in set(UNIVERSE) | extra if selects(k))


def check_against_model(perm_list, key, range_end):
    p = RangePerms.build(perm_list)
    assert p.can_read(key, range_end) == model_allows(perm_list, READ, key, range_end)
    assert p.can_write(key, range_end) == model_allows(perm_list, WRITE, key, range_end)


@settings(max_examples=500, deadline=None)
@given(perm_list=perm_lists, data=st.data())
def test_range_perms_answer_as_the_brute_force_model(perm_list, data):
    # Queries are as often made of the permissions' own ends (where the edge cases are: a query
    # spanning two touching permissions, ending exactly at one's end...) as of random keys.
    ends = sorted({k for _, k, _ in perm_list if k} | {e for _, _, e in perm_list if e not in (b"", b"\x00")} |
                  {k + b"\x00" for _, k, _ in perm_list})
    own = [st.sampled_from(ends)] if ends else []
    key = data.draw(st.one_of(nonempty_keys, *own), "key")
    range_end = data.draw(st.one_of(range_ends, *own), "range_end")
    check_against_model(perm_list, key, range_end)


@pytest.mark.parametrize("perm_list, key, range_end", [
    ([(READ, b"\x00", b"a"), (READ, b"a", b"\xff")], b"\x00", b"\xff"),          # touching ranges
    ([(READ, b"a", b""), (READWRITE, b"a\x00", b"")], b"a", b"a\x00\x00"),         # touching points
    ([(READ, b"a", b""), (READ, b"a\x00", b"\x00")], b"a", b"\x00"),              # a point then from-key
    ([(READ, b"a", b"")], b"a", b"\x00"), ([(READ, b"a", b"")], b"a", b"b"),        # GHSA-xg4h-6gfc-h4m8
    ([(READ, b"a", b"b"), (WRITE, b"b", b"c")], b"a", b"c"),                       # READ and WRITE do not add up
    ([(READ, b"", b"\x00")], b"\x00", b"\x00"),                                   # etcd's "all keys"
])
def test_edge_cases_answer_as_the_brute_force_model(perm_list, key, range_end):
    check_against_model(perm_list, key, range_end)


@settings(max_examples=200, deadline=None)
@given(perm_list=perm_lists)
def test_merged_intervals_are_disjoint_sorted_and_not_touching(perm_list):
    for union in (RangePerms.build(perm_list).read, RangePerms.build(perm_list).write):
        ivs = union.intervals()
        for (s1, e1), (s2, e2) in zip(ivs, ivs[1:]):
            assert e1 is not None and s1 < e1 < s2
