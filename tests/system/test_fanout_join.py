"""A starting fan-out joins the writer's publish stream at once (internal.Ping.join), not at the
writer's next idle heartbeat: start-up to the first served watch must not cost a heartbeat."""
from __future__ import annotations

import time

# The writer's idle heartbeat is a minute away, and the fan-out tolerates that much silence:
# only the join request can get the fan-out into the stream within the test's patience.
SLOW_HEARTBEAT = {"ZWATCH_HEARTBEAT_S": "60", "ZWATCH_UPSTREAM_TIMEOUT_S": "120"}


def test_fanout_joins_without_waiting_for_a_heartbeat(make_cluster):
    cl = make_cluster(fanouts=2, env=SLOW_HEARTBEAT, start=False)
    started = time.monotonic()
    for actor in cl.actors.values():          # all at once, as the Procfile starts them
        actor.start()
    for name in ("fanout0", "fanout1"):
        cl[name].wait_event("fanout.joined_stream", timeout=20)
    joined_after = time.monotonic() - started
    assert joined_after < 30, joined_after    # a heartbeat would have taken 60 s
    # A fan-out that joined serves watches: a put after the create arrives, on both fan-outs.
    clients = [cl.client([ep]) for ep in cl.fanout_eps]
    watches = [c.watch("join/k") for c in clients]
    clients[0].put("join/k", "v")
    for w in watches:
        (event,) = next(iter(w)).events
        assert event.kv.value == b"v"


def test_fanout_restarted_alone_joins_the_running_stream(make_cluster):
    """The writer is long past its start: a restarted fan-out still joins at once, and a watch
    from an old revision on it gets that history exactly once."""
    cl = make_cluster(env=SLOW_HEARTBEAT)
    client = cl.client()
    first = client.put("join/r", "1").header.revision
    cl.restart("fanout0")
    cl["fanout0"].wait_event("fanout.joined_stream", timeout=20, count=2)
    client.put("join/r", "2")
    w = client.watch("join/r", start_revision=first)
    values = [ev.kv.value for ev in next(iter(w)).events]
    while len(values) < 2:
        values += [ev.kv.value for ev in next(iter(w)).events]
    assert values == [b"1", b"2"]
