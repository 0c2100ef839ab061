"""The Python client binding: ``from zwatch import Client`` (or ``from zwatch.client import ...``).

    types.py     the typed responses (RangeResponse, WatchResponse, Event, ...)
    builders.py  what is sent: endpoints, txn comparisons and ops (Value, Put, Txn, ...)
    core.py      Client and Watch, the application's side
    lease.py     Lease and the client's one keep-alive thread
    cursor.py    Cursor / AsyncCursor: durable named cursors (resume by name, hold compaction)
    concurrency.py  Lock and Election on leases (etcd's clientv3/concurrency)
    auth.py      the login credentials and etcd's Auth API (users, roles, permissions)
    curve.py     CURVE keys of the connection
    session.py   the I/O thread: connection state machine, heartbeats, acks, failover, resume
    delivery.py  watch responses -> the watches' queues (fragments, shared queues, duplicates)
    cache.py     Cache: a local map of a range, consistent at a known revision (an informer)
    callbacks.py add_watch_callback's dispatcher thread
    calls.py     every request once: wire op, body, typed response (both clients use it)
    aio.py       the asyncio client (zwatch.aio.Client)
    credit.py    flow-control credit: what the application consumed is what gets acknowledged
    timeref.py   wall-clock times -> revisions (watch(start_time=...), get(at=...))
"""
from .auth import Credentials
from .builders import (DEFAULT_ENDPOINT, CreateRevision, Delete, Get, ModRevision, Put, Txn, Value, Version,
                       endpoints_from_env)
from .concurrency import Election, Lock, NotLeader
from .cache import Cache
from .core import Client, Watch
from .credit import WatchQueue
from .lease import Lease
from .cursor import AsyncCursor, Cursor
from .types import CursorInfo, CursorResponse
from .delivery import WatchRouter
from .session import Phase, Session
from .timeref import RevisionAtTime
from .types import (AuthStatusResponse, CompactResponse, DeleteRangeResponse, Event, Header, KeyValue, Permission,
                    PutResponse, RangeResponse, RoleGetResponse, RoleListResponse, StatusResponse, TxnResponse,
                    UserGetResponse, UserListResponse, WatchResponse, HealthResponse, MemberListResponse, Member,
                    HashKVResponse, WatchHashResponse)

__all__ = ["Client", "Watch", "Cursor", "AsyncCursor", "CursorInfo", "CursorResponse", "WatchQueue", "Cache", "Lease", "Lock", "Election", "NotLeader", "WatchRouter", "Session", "Phase",
           "DEFAULT_ENDPOINT", "endpoints_from_env",
           "Value", "Version", "CreateRevision", "ModRevision", "Get", "Put", "Delete", "Txn",
           "Header", "KeyValue", "RangeResponse", "PutResponse", "DeleteRangeResponse", "TxnResponse",
           "CompactResponse", "StatusResponse", "HealthResponse", "MemberListResponse", "Member", "HashKVResponse", "WatchHashResponse", "Event", "WatchResponse", "Credentials", "AuthStatusResponse",
           "UserGetResponse", "UserListResponse", "Permission", "RoleGetResponse", "RoleListResponse",
           "RevisionAtTime"]
