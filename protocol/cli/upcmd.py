"""``zwatch up [-c fanout=N] [-p BASEPORT]``: writer, syncer and N fan-outs under a small
supervisor that restarts a child that dies (zwatch.actors.supervise; honcho stops everything
instead; a child that exits 2, a configuration error, is not restarted).  Fan-out k (from 0)
listens on 127.0.0.1:BASEPORT+k and, with ZWATCH_FANOUT_METRICS_PORT set, serves metrics on that
port + k."""
from __future__ import annotations

import argparse


def _concurrency(text: str) -> int:
    name, sep, n = text.partition("=")
    if name.strip() != "fanout" or not sep or not n.strip().isdigit() or not 1 <= int(n) <= 64:
        raise argparse.ArgumentTypeError("expected fanout=N (1..64)")
    return int(n)


def add_up(p: argparse.ArgumentParser):
    p.add_argument("-c", "--concurrency", type=_concurrency, default=1, metavar="fanout=N",
                   help="how many fan-outs (default fanout=1)")
    p.add_argument("-p", "--port", type=int, default=2379, metavar="BASEPORT",
                   help="fan-out k listens on 127.0.0.1:BASEPORT+k (default 2379); its metrics port, "
                        "if ZWATCH_FANOUT_METRICS_PORT is set, is that + k")


def cmd_up(a) -> int:
    from zwatch.actors import supervise        # the actors' side: only this verb loads it
    return supervise.main(a.concurrency, a.port)
