"""zwatch: an etcd v3 style watch service.  ``from zwatch import Client``.

This package is the protocol folder of the repository: the wire contract (SPEC.md,
messages.py, errors.py, limits.py) and the Python client binding (client.py, cli.py).
The actors install as ``zwatch.actors`` and the tools as ``zwatch.tools``.
"""
__version__ = "0.1.0"

from .client import (Client, CreateRevision, Delete, Event, Get, KeyValue, ModRevision, Put, Txn,  # noqa: E402
                     Value, Version, Watch, WatchResponse)
from .errors import ZwatchError  # noqa: E402

__all__ = ["Client", "Watch", "WatchResponse", "Event", "KeyValue", "ZwatchError", "Value", "Version",
           "CreateRevision", "ModRevision", "Get", "Put", "Delete", "Txn", "__version__"]
