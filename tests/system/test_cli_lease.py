"""`zwatch lease|lock|elect` and `put --lease` print what etcdctl 3.4 prints (issue #10).

Each scenario runs the same commands through a Transcript: every command's stdout, stderr and
exit code, background commands (watch, lock, elect, keep-alive) with what they printed once
stopped.  tests/system/fixtures/etcdctl_lease/<scenario>.txt is that transcript taken from
etcdctl 3.4.23 on a fresh etcd; the tests run the scenario through `python -m zwatch.cli` on a
fresh zwatch cluster and compare after the same normalization (normalize()): lease IDs become
<L1>, <L2>... in order of appearance (hex, decimal, inside base64 keys), the header fields only
etcd has (cluster_id, member_id, raft_term) are dropped, remaining TTLs become <R> (a clock
reading), keys of a lease and lists of leases are sorted (etcd lists them in Go map order),
repeated keep-alive lines are counted once, and clientv3's own log lines on stderr are dropped.
Revisions are compared as they are: both servers start at revision 1.

The fixtures are regenerated (by hand, never by the tests) with etcd installed:
    .venv/bin/python tests/system/test_cli_lease.py capture [scenario...]
"""
from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys

import pytest

if __name__ == "__main__":      # run as a script (capture): support.py is in tests/
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import Transcript, capture_fixtures, read_fixture, run_scenario, zwatch_transcript

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "etcdctl_lease")
LEASE_ENV = {"ZWATCH_LEASE_MIN_TTL": "1"}


def lease_of(r: subprocess.CompletedProcess) -> str:
    m = re.match(r"lease ([0-9a-f]+) granted", r.stdout)
    assert m, (r.stdout, r.stderr)
    return m.group(1)


# ================================================================ the scenarios
def scenario_expiry(t: Transcript):
    """The issue's sequence: grant 5, put with the lease, watch, let it expire, the DELETE."""
    lease = lease_of(t.run("lease", "grant", "5"))
    t.run("put", "k", "v", f"--lease={lease}")
    simple = t.spawn("watch", "k")
    js = t.spawn("watch", "k", "-w", "json")
    prev = t.spawn("watch", "k", "--prev-kv", "-w", "json")   # the expired KV, with its lease
    t.run("get", "k", "-w", "json")
    t.run("lease", "timetolive", lease)
    t.run("lease", "timetolive", lease, "--keys")
    t.run("lease", "timetolive", lease, "-w", "json")
    t.run("lease", "timetolive", lease, "--keys", "-w", "json")
    t.run("lease", "list")
    t.run("lease", "list", "-w", "json")
    simple.wait_until("DELETE", timeout=30)         # the lease expires 5 s after the grant
    js.wait_for(1, timeout=10)
    prev.wait_for(1, timeout=10)
    t.finish(simple)
    t.finish(js)
    t.finish(prev)
    t.run("get", "k")
    t.run("lease", "timetolive", lease)
    t.run("lease", "timetolive", lease, "--keys")
    t.run("lease", "timetolive", lease, "-w", "json")
    t.run("lease", "timetolive", lease, "--keys", "-w", "json")
    t.run("lease", "keep-alive", "--once", lease)
    t.run("lease", "keep-alive", "--once", lease, "-w", "json")
    t.run("lease", "keep-alive", lease)
    t.run("lease", "revoke", lease)
    t.run("lease", "revoke", lease, "-w", "json")
    t.run("put", "k2", "v", f"--lease={lease}")
    t.run("lease", "list")
    t.run("lease", "list", "-w", "json")


def scenario_revoke(t: Transcript):
    """Keys of one lease deleted in one revision by a revoke; keep-alive; list of two leases."""
    lease = lease_of(t.run("lease", "grant", "60"))
    t.run("lease", "grant", "60", "-w", "json")
    other = lease_of(t.run("lease", "grant", "30"))
    t.run("put", "a", "1", f"--lease={lease}")
    t.run("put", "b", "2", f"--lease={lease}")
    t.run("put", "a", "3", f"--lease={lease}", "-w", "json")
    t.run("put", "c", "3", f"--lease={other}")
    t.run("txn", stdin=f'mod("b") > "0"\n\nput b 5 --lease={lease}\n\n\n')      # put --lease in a txn
    simple = t.spawn("watch", "a", "c", "--rev", "2")       # history first: PUT a, PUT b, PUT a, PUT b
    js = t.spawn("watch", "a", "c", "-w", "json")           # from now: only the revoke's DELETEs
    simple.wait_for(4 * 3)
    t.run("lease", "timetolive", lease, "--keys")
    t.run("lease", "timetolive", lease, "--keys", "-w", "json")
    t.run("lease", "keep-alive", "--once", lease)
    t.run("lease", "keep-alive", "--once", lease, "-w", "json")
    t.run("lease", "list")
    t.run("lease", "list", "-w", "json")
    t.note(f"the json watcher printed nothing yet: {js.quiet(1.0)}")
    t.run("lease", "revoke", lease)
    simple.wait_for(4 * 3 + 2 * 3)                  # DELETE a, DELETE b: one revision
    t.finish(simple)
    js.wait_for(1)
    t.note(f"one json response for both DELETEs: {js.quiet(1.0)}")
    t.finish(js)
    t.run("get", "", "--prefix")
    t.run("lease", "revoke", other, "-w", "json")
    t.run("lease", "timetolive", other, "--keys")
    t.run("lease", "list")


def scenario_keepalive(t: Transcript):
    """lease keep-alive ID renews until the lease is revoked, then says so and exits 0."""
    lease = lease_of(t.run("lease", "grant", "3"))
    ka = t.spawn("lease", "keep-alive", lease)
    ka.wait_for(2, timeout=10)                      # the first renewal at once, the next TTL/3 later
    t.run("lease", "revoke", lease)
    t.finish(ka, sig=None, dedup=True)
    lease = lease_of(t.run("lease", "grant", "3"))
    kaj = t.spawn("lease", "keep-alive", lease, "-w", "json")
    kaj.wait_for(2, timeout=10)
    t.run("lease", "revoke", lease)
    t.finish(kaj, sig=None, dedup=True)
    lease = lease_of(t.run("lease", "grant", "3"))
    ka = t.spawn("lease", "keep-alive", lease)
    ka.wait_for(1, timeout=10)
    t.finish(ka, sig=signal.SIGINT, dedup=True)
    t.run("lease", "timetolive", lease)             # still alive: keep-alive does not revoke


def _dedup_keepalives(t: Transcript):
    # keep-alive prints one line per renewal: how many depends on the clock.
    out, prev = [], None
    for line in t.text:
        if not (line == prev and "keepalived" in line):
            out.append(line)
        prev = line
    t.text = out


def scenario_errors(t: Transcript):
    """Arguments etcdctl refuses (exit 128) and errors of the server."""
    for args in (("lease", "grant"), ("lease", "grant", "x"), ("lease", "grant", "5", "6"),
                 ("lease", "grant", "9000000001"), ("lease", "revoke"), ("lease", "revoke", "a", "b"),
                 ("lease", "revoke", "zzz"), ("lease", "revoke", "8000000000000000"), ("lease", "revoke", "0x10"),
                 ("lease", "revoke", "1234abcd"), ("lease", "timetolive"), ("lease", "timetolive", "zzz"),
                 ("lease", "timetolive", "1234abcd"), ("lease", "keep-alive"), ("lease", "keep-alive", "--once", "g"),
                 ("lease", "keep-alive", "--once", "1234abcd"), ("lease", "keep-alive", "1234abcd"),
                 ("put", "k", "v", "--lease=zzz"), ("put", "k", "v", "--lease=0x10"),
                 ("put", "k", "v", "--lease=1234abcd"), ("lock",), ("elect",), ("elect", "e"),
                 ("elect", "-l", "e", "p"), ("lease", "list", "extra")):
        t.run(*args)


def scenario_lock(t: Transcript):
    """lock NAME -- CMD runs CMD holding the lock; lock NAME prints the key and holds it."""
    t.run("lock", "mylock", "--", "sh", "-c", 'echo "key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV"')
    t.run("get", "mylock", "--prefix")                                   # released: nothing left
    holder = t.spawn("lock", "mylock")
    holder.wait_for(2)
    waiter = t.spawn("lock", "mylock", "--", "sh", "-c", 'echo "second key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV"')
    t.wait_keys("mylock", 2)
    gives_up = t.spawn("lock", "mylock")
    t.wait_keys("mylock", 3)
    t.note(f"waiters print nothing while the lock is held: {waiter.quiet(1.0) and gives_up.quiet(0.1)}")
    t.run("get", "mylock", "--prefix", "--keys-only", "--sort-by", "CREATE")
    t.finish(gives_up)                                                   # interrupted while waiting
    t.finish(holder)                                                     # releases: the waiter runs
    t.finish(waiter, sig=None)
    js = t.spawn("lock", "mylock", "-w", "json")
    js.wait_for(1)
    t.finish(js, sig=signal.SIGTERM)
    t.run("lock", "mylock", "--", "sh", "-c", "exit 3")
    t.run("lock", "mylock", "echo", "without", "separator")
    t.run("get", "mylock", "--prefix")
    lost = t.spawn("lock", "mylock")
    key = lost.wait_for(1)[0].strip()
    t.run("lease", "revoke", key.rsplit("/", 1)[1])                    # the holder's lease goes away
    t.finish(lost, sig=None, timeout=30)                                 # noticed at its next keep-alive


def scenario_elect(t: Transcript):
    """elect NAME PROPOSAL prints the leader key and value once elected; elect -l prints each leader."""
    observer = t.spawn("elect", "-l", "myelection")
    t.note(f"no leader, the observer prints nothing: {observer.quiet(1.0)}")
    first = t.spawn("elect", "myelection", "p1")
    first.wait_for(2)
    observer.wait_for(2)
    second = t.spawn("elect", "myelection", "p2")
    t.wait_keys("myelection", 2)
    t.note(f"the second candidate prints nothing while p1 leads: {second.quiet(1.0)}")
    t.finish(first)                                                      # resigns: p2 leads
    second.wait_for(2)
    observer.wait_for(4)
    js = t.spawn("elect", "-l", "myelection", "-w", "json")
    js.wait_for(1)
    t.finish(js)
    third = t.spawn("elect", "myelection", "p3", "-w", "json")
    t.wait_keys("myelection", 2)
    fourth = t.spawn("elect", "myelection", "p4")
    t.wait_keys("myelection", 3)
    t.finish(fourth)                                                     # interrupted while waiting
    t.wait_keys("myelection", 2)
    t.note(f"the third candidate prints nothing while p2 leads: {third.quiet(1.0)}")
    t.finish(second, sig=signal.SIGTERM)
    third.wait_for(1)
    observer.wait_for(6)
    t.finish(third)
    t.finish(observer)
    t.run("get", "myelection", "--prefix")


def scenario_zero_id(t: Transcript):
    """Lease ID 0 ("no lease"): etcd answers it as a lease that does not exist."""
    t.run("lease", "revoke", "0")
    t.run("lease", "timetolive", "0")
    t.run("lease", "timetolive", "0", "-w", "json")
    t.run("lease", "keep-alive", "--once", "0")
    t.run("put", "k", "v", "--lease=0", "-w", "json")


SCENARIOS = {"expiry": scenario_expiry, "revoke": scenario_revoke, "keepalive": scenario_keepalive,
             "errors": scenario_errors, "lock": scenario_lock, "elect": scenario_elect, "zero_id": scenario_zero_id}


# ================================================================ normalization
# Where the CLIs print lease IDs (the commands only repeat IDs printed before).
_HEX_ID = re.compile(r"\blease ([0-9a-f]{16})\b|^([0-9a-f]{16})$|\b(?:mylock|myelection)/([0-9a-f]{1,16})\b", re.M)
_DEC_ID = re.compile(r'"(?:ID|id|lease)":(\d+)')
_B64_FIELD = re.compile(r'"(key|value)":"([A-Za-z0-9+/=]*)"')
_FIXED_IDS = {0x1234abcd, 0}          # IDs written in the commands of scenario_errors, not granted ones


def _b64_fields(text: str):
    for m in _B64_FIELD.finditer(text):
        yield m, base64.b64decode(m.group(2)).decode("utf-8", "surrogateescape")


def normalize(text: str) -> str:
    # Lease IDs in order of first appearance, whatever the form.
    found: list[tuple[int, int]] = []
    for m in _HEX_ID.finditer(text):
        found.append((m.start(), int(next(g for g in m.groups() if g), 16)))
    for m in _DEC_ID.finditer(text):
        found.append((m.start(), int(m.group(1))))
    for m, decoded in _b64_fields(text):
        for inner in _HEX_ID.finditer(decoded):
            found.append((m.start(), int(next(g for g in inner.groups() if g), 16)))
    labels: dict[int, str] = {}
    for _, lease_id in sorted(found):
        if lease_id not in _FIXED_IDS and lease_id not in labels:
            labels[lease_id] = f"<L{len(labels) + 1}>"

    def ids(s: str) -> str:
        s = re.sub(r"\b[0-9a-f]{8,16}\b", lambda m: labels.get(int(m.group(0), 16), m.group(0)), s)
        return re.sub(r"\b\d{6,20}\b", lambda m: labels.get(int(m.group(0)), m.group(0)), s)

    # Inside base64 (keys of locks and elections): decode, replace, encode again.
    text = _B64_FIELD.sub(lambda m: f'"{m.group(1)}":"' + base64.b64encode(ids(
        base64.b64decode(m.group(2)).decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape"))
        .decode() + '"', text)
    text = ids(text)
    # Header fields only etcd has (zwatch's header is the revision alone, as in get / put -w json).
    text = re.sub(r'"cluster_id":\d+,"member_id":\d+,', "", text)
    text = re.sub(r',"raft_term":\d+', "", text)
    # Remaining TTLs are clock readings.
    text = re.sub(r"remaining\(\d+s\)", "remaining(<R>s)", text)
    text = re.sub(r'"ttl":\d+', '"ttl":<R>', text)
    # Go map order: the keys of a lease and the list of leases.
    text = re.sub(r"attached keys\(\[([^\]]*)\]\)", lambda m: "attached keys([" + " ".join(
        sorted(m.group(1).split(" "))) + "])", text)
    text = re.sub(r'"keys":\[([^\]]*)\]', lambda m: '"keys":[' + ",".join(
        sorted(m.group(1).split(","), key=lambda x: base64.b64decode(x.strip('"')))) + "]", text)
    text = re.sub(r'"leases":\[([^\]]*)\]', lambda m: '"leases":[' + ",".join(
        sorted(re.findall(r"\{[^}]*\}", m.group(1)))) + "]", text)
    text = re.sub(r"(found \d+ leases\n)((?:<L\d+>\n)*)", lambda m: m.group(1) + "".join(
        sorted(m.group(2).splitlines(keepends=True))), text)
    return text


def transcript_text(t: Transcript) -> str:
    _dedup_keepalives(t)
    return normalize("\n".join(t.text) + "\n")


# ================================================================ the tests
@pytest.mark.parametrize("name", ["expiry", "revoke", "keepalive", "errors", "zero_id", "lock", "elect"])
def test_lease_lock_and_elect_commands_print_what_etcdctl_prints(make_cluster, name):
    t = run_scenario(zwatch_transcript(make_cluster(env=LEASE_ENV)), SCENARIOS[name])
    assert transcript_text(t) == read_fixture(FIXTURES, name)


def test_normalize_maps_every_form_of_an_id_to_one_label():
    text = ('$ lease revoke 694d7ee5a1a1e40b\nlease 694d7ee5a1a1e40b revoked\n'
            '{"cluster_id":1,"member_id":2,"revision":3,"raft_term":4,"ID":%d,"TTL":5}\n' % 0x694d7ee5a1a1e40b
            + '{"key":"%s"}\n' % base64.b64encode(b"mylock/694d7ee5a1a1e40b").decode()
            + "lease 0000000000000001 granted with TTL(5s), remaining(4s), attached keys([b a])\n")
    assert normalize(text) == ('$ lease revoke <L1>\nlease <L1> revoked\n{"revision":3,"ID":<L1>,"TTL":5}\n'
                               '{"key":"%s"}\n' % base64.b64encode(b"mylock/<L1>").decode()
                               + "lease <L2> granted with TTL(5s), remaining(<R>s), attached keys([a b])\n")


def test_lease_ids_print_as_etcdctl_016x_and_parse_as_go_parseint():
    from zwatch.cli.args import CommandError, lease_id_arg, put_lease_arg
    from zwatch.cli.format import lease_hex
    assert lease_hex(0x2a) == "000000000000002a" and lease_hex(-5) == "-000000000000005"
    assert lease_id_arg("694d7ee5a1a1e40b") == 0x694d7ee5a1a1e40b and lease_id_arg("-5") == -5
    assert lease_id_arg("7fffffffffffffff") == (1 << 63) - 1
    for bad, why in (("0x10", "invalid syntax"), ("", "invalid syntax"), ("1_0", "invalid syntax"),
                     ("8000000000000000", "value out of range")):
        with pytest.raises(CommandError, match=why) as info:
            lease_id_arg(bad)
        assert info.value.exit_code == 128
    with pytest.raises(CommandError, match=r'^bad lease ID \(strconv.ParseInt: parsing "g": invalid syntax\), '
                                           r"expecting ID in Hex$"):
        put_lease_arg("g")


# ================================================================ capturing the fixtures from etcd
if __name__ == "__main__":
    if sys.argv[1:2] != ["capture"]:
        sys.exit("usage: test_cli_lease.py capture [scenario...]")
    capture_fixtures(FIXTURES, SCENARIOS, sys.argv[2:] or list(SCENARIOS), transcript_text)
