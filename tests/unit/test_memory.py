"""actors/memory.py: malloc_trim really gives freed heap back, is a no-op without glibc, and the
trim policy fires once per burst, never more often than its interval (issue #8, defect 7)."""
import ctypes

import pytest

from zwatch.actors import memory
from zwatch.actors.memory import TrimPolicy

MB = 1 << 20


@pytest.mark.skipif(not memory.TRIM_AVAILABLE, reason="malloc_trim is glibc's")
def test_trim_heap_gives_back_freed_chunks_that_glibc_keeps():
    """What libzmq's per-peer buffers do to the fan-out, in miniature: small blocks (below the
    mmap threshold) freed among blocks still in use stay resident until malloc_trim."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block, count = 32 * 1024, 2048                       # 64 MB, like ~2,300 ROUTER peers
    memory.trim_heap()
    before = memory.rss_bytes()
    blocks = [libc.malloc(block) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, block)
    in_use = set(blocks[::8])                            # 1 in 8 stays: a fragmented arena
    for b in blocks:
        if b not in in_use:
            libc.free(b)
    retained = memory.rss_bytes()
    released = memory.trim_heap()
    after = memory.rss_bytes()
    for b in in_use:
        libc.free(b)
    assert retained - before > 48 * MB, "glibc gave the freed blocks back by itself"
    assert released
    assert retained - after > 40 * MB


def test_trim_heap_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", None)
    assert memory.trim_heap() is False
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory._load_malloc_trim() is None


def test_no_malloc_trim_when_the_c_library_is_not_glibc(monkeypatch):
    def not_glibc(name):
        raise ValueError("unrecognized configuration name")
    monkeypatch.setattr(memory.os, "confstr", not_glibc)
    assert memory._load_malloc_trim() is None


def test_rss_is_read_from_proc():
    rss = memory.rss_bytes()
    assert rss is None or rss > MB


def test_departures_trigger_once_the_burst_is_quiet():
    p = TrimPolicy(closed_threshold=100, quiet_s=1.0, min_interval_s=10.0, growth_bytes=64 * MB)
    rss = 30 * MB
    assert p.due(0.0, rss) is None
    p.note_closed(0.5, 99)
    assert p.due(5.0, rss) is None                       # below the threshold
    p.note_closed(5.0, 1)
    assert p.due(5.5, rss) is None                       # the burst is still going
    assert p.due(6.0, rss) == "departures"
    p.done(6.0, rss, rss)
    assert p.closed == 0
    p.note_closed(6.1, 500)
    assert p.due(10.0, rss) is None                      # at most once every min_interval_s
    assert p.due(16.0, rss) == "departures"


def test_growth_triggers_against_the_floor_and_backs_off_while_nothing_is_released():
    p = TrimPolicy(closed_threshold=10**9, min_interval_s=2.0, growth_bytes=64 * MB, max_interval_s=16.0)
    assert p.due(0.0, 30 * MB) is None                   # the first figure is the floor
    assert p.due(1.0, 90 * MB) is None                   # 60 MB above: not yet
    assert p.due(2.0, 300 * MB) == "growth"
    waits = []
    t = 2.0
    for _ in range(5):                                   # peers still connected: nothing comes back
        assert p.done(t, 300 * MB, 300 * MB) == 0
        waits.append(p.growth_interval_s)
        t_next = t + p.growth_interval_s
        assert p.due(t_next - 0.01, 300 * MB) is None
        assert p.due(t_next, 300 * MB) == "growth"
        t = t_next
    assert waits == [4.0, 8.0, 16.0, 16.0, 16.0]         # doubling, capped at max_interval_s
    assert p.done(t, 300 * MB, 32 * MB) == 268 * MB      # the peers left: a real release
    assert p.growth_interval_s == 2.0
    assert p.floor == 30 * MB                            # the floor only goes down
    assert p.due(t + 2.0, 40 * MB) is None


def test_a_burst_still_arriving_keeps_the_short_interval():
    p = TrimPolicy(closed_threshold=10**9, min_interval_s=2.0, growth_bytes=64 * MB, max_interval_s=60.0)
    p.due(0.0, 30 * MB)
    assert p.due(2.0, 140 * MB) == "growth"
    p.done(2.0, 140 * MB, 140 * MB)                      # futile: the peers are still arriving
    assert p.growth_interval_s == 4.0
    assert p.due(4.0, 300 * MB) == "growth"             # RSS rose since: min_interval_s, not 4 s
    p.done(4.0, 300 * MB, 300 * MB)
    assert p.due(6.0, 305 * MB) is None                  # flat: the memory is held, back off
    assert p.due(12.0, 305 * MB) == "growth"


def test_floor_follows_a_lower_post_trim_rss():
    p = TrimPolicy(min_interval_s=1.0, growth_bytes=10 * MB)
    p.due(0.0, 50 * MB)
    p.done(1.0, 50 * MB, 20 * MB)
    assert p.floor == 20 * MB
    assert p.due(2.0, 31 * MB) == "growth"


def test_trim_if_due_reports_the_figures(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "TRIM_AVAILABLE", True)
    monkeypatch.setattr(memory, "trim_heap", lambda: calls.append(1) or True)
    figures = iter([300 * MB, 40 * MB])
    monkeypatch.setattr(memory, "rss_bytes", lambda: next(figures))
    p = TrimPolicy(min_interval_s=1.0, growth_bytes=64 * MB)
    p.floor = 30 * MB
    got = memory.trim_if_due(p, 5.0)
    assert calls == [1]
    assert got["reason"] == "growth" and got["released_bytes"] == 260 * MB
    assert got["rss_before"] == 300 * MB and got["rss_after"] == 40 * MB
    monkeypatch.setattr(memory, "rss_bytes", lambda: 40 * MB)
    assert memory.trim_if_due(p, 5.5) is None            # within min_interval_s
    assert calls == [1]
