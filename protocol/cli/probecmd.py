"""``zwatch probe live|ready --port PORT [--host HOST] [--timeout S]``: an actor's /livez or
/readyz (actors/probes.py) on its metrics port, for a container's HEALTHCHECK or an exec probe
where an HTTP probe cannot be used.  Prints the answer's line; exit 0 when the actor says ok,
1 when it says not ok or cannot be reached (a probe has no third answer)."""
from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

PATHS = {"live": "/livez", "ready": "/readyz"}


def add_probe(p: argparse.ArgumentParser):
    p.add_argument("probe_kind", choices=tuple(PATHS), metavar="live|ready",
                   help="live: the actor's loop turns; ready: it should get traffic (a fan-out: joined the "
                        "writer's publish stream, not cut off from it, not draining)")
    p.add_argument("--port", type=int, required=True, metavar="N",
                   help="the actor's metrics port (ZWATCH_{WRITER,SYNCER,FANOUT}_METRICS_PORT)")
    p.add_argument("--host", default="127.0.0.1", help="the metrics host (default 127.0.0.1)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="seconds to wait (default 2)")


def cmd_probe(a) -> int:
    host = f"[{a.host}]" if ":" in a.host else a.host
    url = f"http://{host}:{a.port}{PATHS[a.probe_kind]}"
    try:
        with urllib.request.urlopen(url, timeout=a.timeout) as r:
            print(r.read().decode(errors="replace").strip())
            return 0
    except urllib.error.HTTPError as exc:        # 503: the actor answered "not ok" and why
        print(exc.read().decode(errors="replace").strip() or f"HTTP {exc.code}")
        return 1
    except (OSError, ValueError) as exc:         # refused, timed out, a bad host
        reason = getattr(exc, "reason", exc)
        print(f"Error: {url}: {reason}", file=sys.stderr)
        return 1
