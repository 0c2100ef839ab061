"""zwatch: an etcd v3 style watch service.  ``from zwatch import Client``.

This package is the protocol folder of the repository: the wire contract (SPEC.md,
messages.py, requests.py, errors.py, limits.py, settings.py) and the Python client binding (client/, cli/).
The actors install as ``zwatch.actors`` and the tools as ``zwatch.tools``.

The client is imported on first use of one of its names (PEP 562): the actors import this
package for the wire contract and must not load the client (tests/unit/test_layering.py).
"""
__version__ = "0.1.0"

from .errors import (ZwatchError, InvalidArgument, Compacted, FutureRevision, ResourceExhausted,  # noqa: E402
                     Unavailable, Internal, Unimplemented, FailedPrecondition, NoSpace, LeaseNotFound,
                     LeaseExists, LeaseTTLTooLarge, Unauthenticated, PermissionDenied, UserExists,
                     UserNotFound, RoleExists, RoleNotFound, RoleNotGranted, PermissionNotGranted,
                     CursorNotFound, StreamDiverged)

# Every error class, so that ``except zwatch.Compacted`` works without knowing the module layout
# (tests/unit/test_exports.py checks that none is missing).
ERROR_CLASSES = ("ZwatchError", "InvalidArgument", "Compacted", "FutureRevision", "ResourceExhausted",
                 "Unavailable", "Internal", "Unimplemented", "FailedPrecondition", "NoSpace", "LeaseNotFound",
                 "LeaseExists", "LeaseTTLTooLarge", "Unauthenticated", "PermissionDenied", "UserExists",
                 "UserNotFound", "RoleExists", "RoleNotFound", "RoleNotGranted", "PermissionNotGranted",
                 "NotLeader", "CursorNotFound", "StreamDiverged")

# Names this package re-exports from zwatch.client, loaded when first asked for.
_CLIENT_NAMES = frozenset({"Client", "Watch", "WatchResponse", "Event", "KeyValue", "Header", "Value", "Version",
                           "CreateRevision", "ModRevision", "Get", "Put", "Delete", "Txn", "Lease", "Lock",
                           "Election", "NotLeader", "WatchQueue", "Cache", "Cursor"})

__all__ = sorted(_CLIENT_NAMES | set(ERROR_CLASSES)) + ["__version__"]


def __getattr__(name: str):
    if name in _CLIENT_NAMES:
        from . import client
        value = getattr(client, name)
        globals()[name] = value          # once loaded, an ordinary attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _CLIENT_NAMES)
