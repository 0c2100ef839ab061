"""The automatic compaction policy (actors/compactor.py) on a fake clock: etcd 3.4's timing rules
(v3compactor/periodic.go, revision.go) and etcd's parsing of --auto-compaction-retention."""
from __future__ import annotations

import pytest

from zwatch.actors import compactor
from zwatch.actors.compactor import Periodic, Revision, make_policy, parse_go_duration, parse_retention
from zwatch.settings import SettingError


def run(policy, until: float, revision_at, compact_revision=lambda t: 0, fail_at=()):
    """Tick the policy at each of its next_at up to `until` (a fake clock); revision_at(t) is the
    store's revision then.  Returns [(t, decision)] and reports each decision as done (failed if
    t in fail_at)."""
    out = []
    while policy.next_at <= until + 1e-9:
        t = policy.next_at
        d = policy.tick(t, revision_at(t), compact_revision(t))
        if d is not None:
            out.append((round(t, 6), d))
            policy.done(t, ok=round(t, 6) not in fail_at)
    return out


def test_periodic_hour_first_compaction_after_the_period_then_every_period_to_1_1_periods_ago():
    # The revision is the number of 6-minute steps since 0, plus 1000: a decision names the sample's time.
    p = Periodic(3600, now=0.0)
    assert (p.retry_s, p.compact_interval, p.retentions) == (360.0, 3600.0, 11)
    got = run(p, 4 * 3600, lambda t: 1000 + round(t / 360))
    # First at 1 h: the revision sampled at 0 (1 h ago); then every hour: the sample of 1.1 h ago
    # (etcd checks before it samples, and keeps 11 samples).
    assert got == [(3600.0, 1000), (7200.0, 1009), (10800.0, 1019), (14400.0, 1029)]


def test_periodic_failure_is_retried_at_the_next_sample():
    p = Periodic(3600, now=0.0)
    got = run(p, 7600, lambda t: 1000 + round(t / 360), fail_at={3600.0})
    # etcd: after the failure it samples (11 samples: none dropped yet), so the retry names the
    # same revision; the success at 3960 starts the next hour.
    assert got[:3] == [(3600.0, 1000), (3960.0, 1000), (7560.0, 1010)]


def test_periodic_long_retention_compacts_hourly_to_the_revision_of_the_retention_ago():
    p = Periodic(24 * 3600, now=0.0)
    assert (p.retry_s, p.compact_interval, p.retentions) == (360.0, 3600.0, 241)
    got = run(p, 26 * 3600, lambda t: 1000 + round(t / 360))
    assert got == [(86400.0, 1000), (90000.0, 1009), (93600.0, 1019)]


def test_periodic_short_retention_samples_every_tenth():
    p = Periodic(2.0, now=100.0)
    got = run(p, 106.0, lambda t: 1000 + round((t - 100) * 10))   # 10 revisions a second
    assert got == [(102.0, 1000), (104.0, 1018), (106.0, 1038)]


def test_periodic_target_already_compacted_is_a_success_without_a_decision():
    p = Periodic(10.0, now=0.0)
    # A client compacted past everything the policy would pick: no decision, and the clock of
    # the last success moves on (etcd's ErrCompacted), so the next check is a period later.
    got = run(p, 25.0, lambda t: round(t), compact_revision=lambda t: 10**6 if t < 15 else 0)
    assert got == [(20.0, 9)]


def test_revision_mode_keeps_the_last_n_checking_every_interval():
    revs = {300.0: 50, 600.0: 1000, 900.0: 1000, 1200.0: 1500, 1500.0: 1600}
    r = Revision(100, now=0.0, interval_s=300.0)
    got = run(r, 1500.0, lambda t: revs[round(t, 6)])
    # 300: 50 - 100 <= 0: nothing; 900: same target as before: nothing.
    assert got == [(600.0, 900), (1200.0, 1400), (1500.0, 1500)]


def test_revision_mode_failure_is_retried_and_compacted_target_is_skipped():
    r = Revision(10, now=0.0, interval_s=1.0)
    assert r.tick(1.0, 100, 0) == 90
    r.done(1.0, ok=False)
    assert r.tick(2.0, 100, 0) == 90          # not remembered as done: tried again
    r.done(2.0, ok=True)
    assert r.tick(3.0, 100, 0) is None        # etcd: rev == prev
    assert r.tick(4.0, 105, 200) is None      # a client compacted further: a success, nothing to do
    assert r.prev == 95


@pytest.mark.parametrize("mode,text,expected", [
    ("periodic", "1h", 3600.0), ("periodic", "30m", 1800.0), ("periodic", "90s", 90.0),
    ("periodic", "1h30m", 5400.0), ("periodic", "1.5h", 5400.0), ("periodic", "500ms", 0.5),
    ("periodic", "1", 3600.0),               # etcd: a bare integer is HOURS in periodic mode
    ("periodic", "0", 0), ("revision", "1000", 1000), ("revision", "0", 0),
])
def test_retention_parsing_follows_etcd(mode, text, expected):
    assert parse_retention(mode, text) == expected


@pytest.mark.parametrize("mode,text", [("periodic", "abc"), ("periodic", "1x"), ("periodic", "-5m"),
                                       ("periodic", "h"), ("revision", "1h"), ("revision", "-3"),
                                       ("revision", "1.5")])
def test_malformed_retention_is_one_line_naming_the_variable(mode, text):
    with pytest.raises(SettingError) as e:
        parse_retention(mode, text)
    assert "ZWATCH_AUTO_COMPACTION_RETENTION" in str(e.value) and "\n" not in str(e.value)


def test_go_durations():
    assert parse_go_duration("2h45m30.5s") == 2 * 3600 + 45 * 60 + 30.5
    for bad in ("", "1", "1hh", "m1", "1 h"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


def test_make_policy():
    assert make_policy("periodic", "0", 0.0) is None
    assert isinstance(make_policy("periodic", "1h", 0.0), Periodic)
    r = make_policy("revision", "5", 10.0, interval_s=0.5)
    assert isinstance(r, Revision) and (r.retention, r.next_at) == (5, 10.5)
    assert compactor.REVISION_INTERVAL_S == 300.0
    with pytest.raises(SettingError):
        make_policy("sometimes", "1h", 0.0)
