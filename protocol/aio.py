"""The asyncio client: ``from zwatch.aio import Client`` (zwatch/client/aio.py)."""
from .client.aio import AsyncLease, AsyncWatch, AsyncWatchQueue, Client

__all__ = ["Client", "AsyncWatch", "AsyncLease", "AsyncWatchQueue"]
