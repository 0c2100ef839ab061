"""The asyncio client: ``from zwatch.aio import Client`` (zwatch/client/aio.py)."""
from .client.aio import AsyncElection, AsyncLease, AsyncLock, AsyncObservation, AsyncWatch, AsyncWatchQueue, Client

__all__ = ["Client", "AsyncWatch", "AsyncLease", "AsyncWatchQueue", "AsyncLock", "AsyncElection", "AsyncObservation"]
