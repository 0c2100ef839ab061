"""``python -m zwatch.actors writer|syncer|fanout [--listen EP]``: run one actor in this process.

``zwatch writer|syncer|fanout`` (the client CLI) is an alias of this; the Procfile and deploy/
units use either.  Nothing here imports the client.
"""
from __future__ import annotations

import argparse
import sys

from zwatch import settings

ACTORS = ("writer", "syncer", "fanout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zwatch.actors", description="run one zwatch actor")
    sub = parser.add_subparsers(dest="actor", required=True, metavar="ACTOR")
    sub.add_parser("writer", help="run the writer actor")
    sub.add_parser("syncer", help="run the syncer actor")
    fanout = sub.add_parser("fanout", help="run a fan-out actor")
    fanout.add_argument(
        "--listen", help="client endpoint to bind (default tcp://127.0.0.1:$PORT, else $ZWATCH_FANOUT_ENDPOINT)")
    add_metrics_port(fanout)
    return parser


def add_metrics_port(parser: argparse.ArgumentParser):
    """`--metrics-port N` of `zwatch fanout`: several fan-outs on one host need a port each."""
    parser.add_argument("--metrics-port", type=int, metavar="N",
                        help="serve Prometheus /metrics on port N (default $ZWATCH_FANOUT_METRICS_PORT; unset: off)")


def run(actor: str, listen: str | None = None, metrics_port: int | None = None) -> int:
    # Every variable the actor reads is parsed before anything starts: a malformed one ends the
    # process with one line naming it, not a traceback from deep inside a constructor.
    try:
        settings.check(actor)
        from zwatch.actors import security    # the key files of ZWATCH_CURVE_DIR, same one-line errors
        security.check(actor)
    except settings.SettingError as exc:
        print(f"zwatch {actor}: {exc}", file=sys.stderr)
        return 2
    # Imported here: one actor's process loads only its own module.
    if actor == "writer":
        from zwatch.actors.writer import main as actor_main
        return actor_main() or 0
    if actor == "syncer":
        from zwatch.actors.syncer import main as actor_main
        return actor_main() or 0
    from zwatch.actors.fanout import main as actor_main
    port = settings.get("PORT")                  # honcho's; writer and syncer ignore it
    listen = listen or (f"tcp://127.0.0.1:{port}" if port else None)
    return actor_main(listen, metrics_port) or 0


def main(argv=None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as exc:                    # argparse: --help (0) or bad usage (2)
        return exc.code if isinstance(exc.code, int) else 2
    return run(a.actor, getattr(a, "listen", None), getattr(a, "metrics_port", None))


if __name__ == "__main__":
    sys.exit(main())
