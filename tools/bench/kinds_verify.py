"""What verified streams cost (issue #16 item 5, SPEC.md 7.10), zwatch only, measured inside the
bench process on the real code paths (tools/verify_cost.py: no sockets):

* ``verify_cost``: CPU per event of the digest itself; of the fan-out core's delivery to one
  watcher and to a group of `group` watchers of one key, plain and verified; of the client's
  WatchRouter for one watch, plain and verified.  Best of 3 runs of `events` events each.
"""
from __future__ import annotations

import time

from zwatch.tools import verify_cost

DEFAULTS = {"verify_cost": dict(events=20_000, group=100)}
QUICK = {"verify_cost": dict(events=2_000, group=20)}
ONLY_ZWATCH = set(DEFAULTS)
OWN_CLUSTER = set(DEFAULTS)      # in-process: no actors


def verify_cost_workload(ctx, p: dict) -> list[dict]:
    t0 = time.monotonic()
    n, group = p["events"], p["group"]
    figures = {"digest_us_per_event": round(verify_cost.digest_us(n), 3)}
    for watchers, name in ((1, "one"), (group, "group")):
        plain, verified = verify_cost.fanout_us(n, watchers, False), verify_cost.fanout_us(n, watchers, True)
        figures[f"fanout_us_per_event_{name}_plain"] = round(plain, 3)
        figures[f"fanout_us_per_event_{name}_verified"] = round(verified, 3)
    plain, verified = verify_cost.client_us(n, False), verify_cost.client_us(n, True)
    figures["client_us_per_event_plain"] = round(plain, 3)
    figures["client_us_per_event_verified"] = round(verified, 3)
    return [{"workload": "verify_cost", "variant": f"group={group}", "system": ctx.system.kind, "params": p,
             "ok": True, "figures": figures, "wall_s": round(time.monotonic() - t0, 3)}]
