"""Endpoint names expanded into every address they resolve to (no socket is opened here).

A Kubernetes headless Service (`zwatch-fanout-headless:2379`), a DNS round-robin name or an
/etc/hosts entry stands for several fan-outs.  libzmq would resolve such a name itself, but to
one address per connect: the client would only ever know one fan-out behind it and could not
fail over to the others.  So the client expands each `tcp://NAME:PORT` into `tcp://ADDR:PORT`
for every address NAME has (in the resolver's order, duplicates dropped), and does it again at
the start of each round over its endpoints (at most every RESOLVE_EVERY_S), so pods that came
or went since are seen.  An address literal is kept as it is; a name that does not resolve now
is kept as the name (libzmq tries again at each connect), so a DNS outage never empties the list.
"""
from __future__ import annotations

import ipaddress
import socket

RESOLVE_EVERY_S = 5.0


def _split(endpoint: str) -> tuple[str, str, str] | None:
    """tcp://HOST:PORT -> (scheme, host, port); None for anything else (ipc://, inproc://, ...)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme != "tcp":
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return scheme, host.strip("[]"), port


def _is_literal(host: str) -> bool:
    if host in ("*", ""):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _fmt(host: str, port: str) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def expand(endpoints: list[str], getaddrinfo=socket.getaddrinfo) -> list[str]:
    """Every address of every name, in order, each once."""
    out: list[str] = []
    for ep in endpoints:
        parts = _split(ep)
        if parts is None or _is_literal(parts[1]):
            out.append(ep)
            continue
        _, host, port = parts
        try:
            infos = getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            out.append(ep)                  # not now: libzmq resolves it at each connect
            continue
        addrs = [_fmt(info[4][0], port) for info in infos]
        out.extend(addrs or [ep])
    seen: set[str] = set()
    return [e for e in out if not (e in seen or seen.add(e))]
