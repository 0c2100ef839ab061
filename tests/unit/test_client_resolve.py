"""Endpoint names expanded into every address (protocol/client/resolve.py) and re-resolved at
each round of the client's session (session.py), without DNS: a fake getaddrinfo / resolver."""
import random
import socket

from zwatch.client import Session
from zwatch.client.resolve import RESOLVE_EVERY_S, expand


def fake_getaddrinfo(table):
    def gai(host, port, type=0):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port)) for a in table[host]]
    return gai


def test_a_name_stands_for_every_address_once_literals_stay():
    gai = fake_getaddrinfo({"fanouts": ["10.0.0.1", "10.0.0.2", "10.0.0.1", "fd00::3"]})
    assert expand(["tcp://fanouts:2379", "tcp://10.0.0.9:2379", "tcp://[::1]:2379", "ipc:///tmp/x"], gai) == [
        "tcp://10.0.0.1:2379", "tcp://10.0.0.2:2379", "tcp://[fd00::3]:2379", "tcp://10.0.0.9:2379",
        "tcp://[::1]:2379", "ipc:///tmp/x"]


def test_a_name_that_does_not_resolve_now_is_kept_for_libzmq():
    assert expand(["tcp://gone:2379"], fake_getaddrinfo({})) == ["tcp://gone:2379"]


def test_localhost_resolves_for_real():
    assert "tcp://127.0.0.1:2379" in expand(["tcp://localhost:2379"])


def test_the_session_resolves_at_each_round_and_sees_pods_come_and_go():
    pods = {"svc": ["10.0.0.1", "10.0.0.2"]}
    s = Session(["tcp://svc:2379"], 1.0, rng=random.Random(1),
                resolver=lambda given: expand(given, fake_getaddrinfo(pods)))
    seen = set()
    for i in range(2):                  # one round: both pods, the name never dialed
        seen.add(s.open(0.0, hello_id=i))
        s.lost(0.0)
    assert seen == {"tcp://10.0.0.1:2379", "tcp://10.0.0.2:2379"}
    pods["svc"] = ["10.0.0.3"]          # a rollout replaced them
    for i in range(2):                  # the next round starts before RESOLVE_EVERY_S: the old list
        assert s.open(1.0, hello_id=10 + i) in seen
        s.lost(1.0)
    assert s.open(RESOLVE_EVERY_S + 1.0, hello_id=20) == "tcp://10.0.0.3:2379"
