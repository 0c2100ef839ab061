"""The fan-out actor: client sessions, the synced watchers, live delivery, victims.

Modules (one job each):

| module | job | I/O |
|---|---|---|
| model.py | watchers and their states, groups, slots, sessions, the typed output items | none |
| ring.py | the most recent revisions, bounded by count and bytes | none |
| core.py | FanoutCore: placement, the publish stream (gap, segments), handoffs, victims, progress | none |
| sessions.py | SessionOutput: frame cutting, credit window, held frames, stuck sessions | a `send` callable |
| service.py | Fanout: sockets, poll loop, requests, the syncer link, stats | ZeroMQ |

``python -m zwatch.actors.fanout [ENDPOINT]`` runs one.
"""
from .service import Fanout, main

__all__ = ["Fanout", "main"]
