"""Error codes of the zwatch wire protocol (see SPEC.md, "Errors").

Codes are stable strings, named after gRPC status codes as etcd uses them, so
that a client in any language can switch on them.  Every error reply carries
``{"code": CODE, "message": str}`` and, for COMPACTED, ``compact_revision``;
for FUTURE_REVISION, ``current_revision``.
"""
from __future__ import annotations

INVALID_ARGUMENT = "INVALID_ARGUMENT"     # malformed request, bad types, key >= range_end in a put...
COMPACTED = "COMPACTED"                   # revision below the compact revision
FUTURE_REVISION = "FUTURE_REVISION"       # revision above the current revision
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED" # a configured limit (size, ops, watches, sessions)
UNAVAILABLE = "UNAVAILABLE"               # a peer actor is down or did not answer in time
INTERNAL = "INTERNAL"                     # a bug or a storage fault; the process keeps serving
UNIMPLEMENTED = "UNIMPLEMENTED"           # unknown op
FAILED_PRECONDITION = "FAILED_PRECONDITION"  # e.g. protocol version mismatch, duplicate watch id
NO_SPACE = "NO_SPACE"                     # the disk or the LMDB map cannot grow; nothing was written
LEASE_NOT_FOUND = "LEASE_NOT_FOUND"       # a put, revoke or time-to-live names a lease that does not exist
LEASE_EXISTS = "LEASE_EXISTS"             # lease_grant with an ID that is already granted
LEASE_TTL_TOO_LARGE = "LEASE_TTL_TOO_LARGE"  # lease_grant with a TTL above MAX_LEASE_TTL
CURSOR_NOT_FOUND = "CURSOR_NOT_FOUND"     # cursor_get / cursor_delete naming no cursor (SPEC.md 6.2)
# Authentication and authorization (SPEC.md section 13).  The messages are etcd's gRPC wording
# (etcdserver/api/v3rpc/rpctypes/error.go) so that the CLI prints what etcdctl prints; etcd's
# "root user does not exist" / "root user does not have root role" / "invalid auth management"
# are FAILED_PRECONDITION here, not codes of their own.
UNAUTHENTICATED = "UNAUTHENTICATED"       # no user (auth enabled), wrong password, unknown or deleted user
PERMISSION_DENIED = "PERMISSION_DENIED"   # the user's roles do not cover the request
USER_EXISTS = "USER_EXISTS"               # user_add of an existing name
USER_NOT_FOUND = "USER_NOT_FOUND"         # a user op naming no user
ROLE_EXISTS = "ROLE_EXISTS"               # role_add of an existing name
ROLE_NOT_FOUND = "ROLE_NOT_FOUND"         # a role op (or user_grant_role) naming no role
ROLE_NOT_GRANTED = "ROLE_NOT_GRANTED"     # user_revoke_role of a role the user does not have
PERMISSION_NOT_GRANTED = "PERMISSION_NOT_GRANTED"  # role_revoke_permission of a permission the role lacks
# Raised by a client, never sent by a server: a verified watch's bookmark hash is not the hash of
# the events the client received (SPEC.md 7.10): a gap, a duplicate or divergent contents.
STREAM_DIVERGED = "STREAM_DIVERGED"

ALL_CODES = (
    INVALID_ARGUMENT, COMPACTED, FUTURE_REVISION, RESOURCE_EXHAUSTED, UNAVAILABLE,
    INTERNAL, UNIMPLEMENTED, FAILED_PRECONDITION, NO_SPACE, LEASE_NOT_FOUND, LEASE_EXISTS,
    LEASE_TTL_TOO_LARGE, UNAUTHENTICATED, PERMISSION_DENIED, USER_EXISTS, USER_NOT_FOUND, ROLE_EXISTS,
    ROLE_NOT_FOUND, ROLE_NOT_GRANTED, PERMISSION_NOT_GRANTED, CURSOR_NOT_FOUND, STREAM_DIVERGED,
)


class ZwatchError(Exception):
    """An error with a stable wire code.  Raised by the store, the actors and the client."""

    code = INTERNAL

    def __init__(self, message: str = "", code: str | None = None, **details):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details

    def to_wire(self) -> dict:
        body = {"code": self.code, "message": self.message}
        body.update(self.details)
        return body

    @classmethod
    def from_wire(cls, body) -> "ZwatchError":
        if not isinstance(body, dict):
            return ZwatchError(f"malformed error body: {body!r}", INTERNAL)
        code = body.get("code", INTERNAL)
        details = {k: v for k, v in body.items() if k not in ("code", "message")}
        klass = _BY_CODE.get(code, ZwatchError)
        err = klass(str(body.get("message", "")), code, **details)
        return err

    def __repr__(self):
        return f"{type(self).__name__}({self.code}: {self.message})"

    def __str__(self):
        return f"{self.code}: {self.message}"


class InvalidArgument(ZwatchError):
    code = INVALID_ARGUMENT


class Compacted(ZwatchError):
    code = COMPACTED

    @property
    def compact_revision(self) -> int:
        return self.details.get("compact_revision", 0)


class FutureRevision(ZwatchError):
    code = FUTURE_REVISION


class ResourceExhausted(ZwatchError):
    code = RESOURCE_EXHAUSTED


class Unavailable(ZwatchError):
    code = UNAVAILABLE


class Internal(ZwatchError):
    code = INTERNAL


class Unimplemented(ZwatchError):
    code = UNIMPLEMENTED


class FailedPrecondition(ZwatchError):
    code = FAILED_PRECONDITION


class NoSpace(ZwatchError):
    code = NO_SPACE


class LeaseNotFound(ZwatchError):
    code = LEASE_NOT_FOUND


class LeaseExists(ZwatchError):
    code = LEASE_EXISTS


class LeaseTTLTooLarge(ZwatchError):
    code = LEASE_TTL_TOO_LARGE


class CursorNotFound(ZwatchError):
    code = CURSOR_NOT_FOUND


class Unauthenticated(ZwatchError):
    code = UNAUTHENTICATED


class PermissionDenied(ZwatchError):
    code = PERMISSION_DENIED


class UserExists(ZwatchError):
    code = USER_EXISTS


class UserNotFound(ZwatchError):
    code = USER_NOT_FOUND


class RoleExists(ZwatchError):
    code = ROLE_EXISTS


class RoleNotFound(ZwatchError):
    code = ROLE_NOT_FOUND


class RoleNotGranted(ZwatchError):
    code = ROLE_NOT_GRANTED


class PermissionNotGranted(ZwatchError):
    code = PERMISSION_NOT_GRANTED


class StreamDiverged(ZwatchError):
    """A verified watch's stream is not what the server says it sent (SPEC.md 7.10); details:
    watch_id, revision, server_hash and client_hash (hex)."""
    code = STREAM_DIVERGED


_BY_CODE = {
    INVALID_ARGUMENT: InvalidArgument, COMPACTED: Compacted, FUTURE_REVISION: FutureRevision,
    RESOURCE_EXHAUSTED: ResourceExhausted, UNAVAILABLE: Unavailable, INTERNAL: Internal,
    UNIMPLEMENTED: Unimplemented, FAILED_PRECONDITION: FailedPrecondition, NO_SPACE: NoSpace,
    LEASE_NOT_FOUND: LeaseNotFound, LEASE_EXISTS: LeaseExists, LEASE_TTL_TOO_LARGE: LeaseTTLTooLarge,
    CURSOR_NOT_FOUND: CursorNotFound,
    UNAUTHENTICATED: Unauthenticated, PERMISSION_DENIED: PermissionDenied, USER_EXISTS: UserExists,
    USER_NOT_FOUND: UserNotFound, ROLE_EXISTS: RoleExists, ROLE_NOT_FOUND: RoleNotFound,
    ROLE_NOT_GRANTED: RoleNotGranted, PERMISSION_NOT_GRANTED: PermissionNotGranted,
    STREAM_DIVERGED: StreamDiverged,
}
