"""The syncer actor (docs/design.md section 9): serves reads, replays history to unsynced watchers.

    batch.py     the batch without I/O: pending queue, start policy, one scan per batch
    service.py   the Syncer: socket, poll loop, reads, outbox
    __main__.py  ``python -m zwatch.actors.syncer``
"""
from .service import Syncer, main

__all__ = ["Syncer", "main"]
