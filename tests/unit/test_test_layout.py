"""The test tree itself: pytest imports test modules by basename (no packages under tests/), so
two test files of the same name in tests/unit and tests/system stop the whole suite at
collection; a run of tests/unit alone would not notice (it happened when branches merged)."""
from __future__ import annotations

import os
from collections import Counter

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_two_test_modules_share_a_basename():
    names = Counter(f for d in ("unit", "system") for f in os.listdir(os.path.join(TESTS, d))
                    if f.startswith("test_") and f.endswith(".py"))
    assert [n for n, c in names.items() if c > 1] == []
