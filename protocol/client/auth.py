"""Authentication on the client's side: the credentials a session logs in with, and etcd's Auth API
(users, roles, key-range permissions; SPEC.md "Authentication and authorization").

    c = Client(user="alice", password="secret")          # or ZWATCH_USER=alice:secret
    root = Client(user="root:rootpw")
    root.role_add("reader")
    root.role_grant_permission("reader", "READ", "/app/", prefix=True)
    root.user_add("alice", "secret"); root.user_grant_role("alice", "reader")
    root.auth_enable()

The session sends the credentials in its hello (again at every failover: the new fan-out
authenticates the same user).  A fan-out that refuses them answers UNAUTHENTICATED; the client
then stops connecting and every request raises ``zwatch.Unauthenticated`` (session.py).  The
password is held in ``Credentials``, whose repr and str never show it; it goes nowhere but the hello.
"""
from __future__ import annotations

from .. import settings
from .builders import to_bytes
from .types import (AuthStatusResponse, Header, Permission, RoleGetResponse, RoleListResponse, UserGetResponse,
                    UserListResponse, header_of)

PERM_TYPES = ("READ", "WRITE", "READWRITE")


class Credentials:
    """A user name and its password (None: a user without password, e.g. one its CURVE key maps to).
    Only the hello sees the password; repr/str show the name alone."""

    __slots__ = ("user", "_password")

    def __init__(self, user: str, password: str | None):
        self.user = user
        self._password = password

    def hello_fields(self) -> dict:
        fields = {"user": self.user}
        if self._password is not None:
            fields["password"] = self._password
        return fields

    @classmethod
    def resolve(cls, user=None, password=None, environ=None) -> "Credentials | None":
        """Client(user=, password=) else ZWATCH_USER / ZWATCH_PASSWORD; `name:password` in user as
        etcdctl's --user: split at the first colon unless a password is given apart (then the
        name is taken whole, as etcdctl does with --password)."""
        if user is None:
            user = settings.get("ZWATCH_USER", environ)
        if not user:
            return None
        if password is None:
            password = settings.get("ZWATCH_PASSWORD", environ) or None
        if password is None and ":" in user:
            user, password = user.split(":", 1)
            if not user:
                raise ValueError("empty user name is not allowed")
        return cls(user, password)

    def __repr__(self):
        return f"Credentials(user={self.user!r}, password={'<hidden>' if self._password is not None else None})"

    __str__ = __repr__

    def __reduce__(self):                   # not pickled with the password either
        raise TypeError("Credentials are not picklable")


def perm_range(key, range_end=None, *, prefix=False, from_key=False) -> tuple[bytes, bytes]:
    """A permission's [key, range_end) from etcdctl's forms: one key (range_end b""), a prefix, from a
    key to the end (range_end b"\\x00"), an explicit range.  An empty key with prefix / from_key is
    every key (key b"\\x00", range_end b"\\x00"), as etcdctl sends it."""
    key = to_bytes(key)
    range_end = to_bytes(range_end) if range_end else b""
    # etcdctl's order of checks (permRange / rangeEndFromPermFlags), so that its messages match.
    if not key:
        if prefix and from_key:
            raise ValueError("--from-key and --prefix flags are mutually exclusive")
        return b"\x00", (b"\x00" if prefix or from_key else b"")
    if not range_end:
        if prefix and from_key:
            raise ValueError("--from-key and --prefix flags are mutually exclusive")
        if prefix:
            return key, prefix_end(key)
        return key, (b"\x00" if from_key else b"")
    if prefix:
        raise ValueError("unexpected endkey argument with --prefix flag")
    if from_key:
        raise ValueError("unexpected endkey argument with --from-key flag")
    return key, range_end


def prefix_end(key: bytes) -> bytes:
    """clientv3.GetPrefixRangeEnd: the first key after every key that starts with `key`."""
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[:i + 1])
    return b"\x00"               # all 0xff: every key from `key` on


def _perm_type(perm_type) -> str:
    name = str(perm_type).upper()
    if name not in PERM_TYPES:
        raise ValueError(f"invalid permission type: {perm_type}")
    return name


class AuthMixin:
    """etcd's Auth API on ``Client`` (every call is one request to the fan-out, which forwards it to
    the writer).  Admin calls need the root role once auth is enabled; user_get of yourself, role_get of
    one of your roles and auth_status need only a login.  None is retried after a failover (writes)."""

    # -------------------------------------------------------------- auth
    def auth_enable(self, timeout=None) -> Header:
        """Needs the user root with the role root (else FailedPrecondition, etcd's words)."""
        return header_of(self._call("auth_enable", {}, timeout))

    def auth_disable(self, timeout=None) -> Header:
        return header_of(self._call("auth_disable", {}, timeout))

    def auth_status(self, timeout=None) -> AuthStatusResponse:
        b = self._call("auth_status", {}, timeout)
        return AuthStatusResponse(header_of(b), bool(b.get("enabled", False)), b.get("authRevision", 0))

    # -------------------------------------------------------------- users
    def user_add(self, name: str, password: str | None = None, no_password: bool = False, timeout=None) -> Header:
        """A user with a password (hashed by the fan-out, stored as a salted scrypt hash) or, with
        no_password, none (it can log in only through a CURVE key mapped to it)."""
        body = {"name": name, "options": {"no_password": bool(no_password)}}
        if not no_password:
            body["password"] = "" if password is None else password
        return header_of(self._call("user_add", body, timeout))

    def user_get(self, name: str, timeout=None) -> UserGetResponse:
        b = self._call("user_get", {"name": name}, timeout)
        return UserGetResponse(header_of(b), list(b.get("roles") or []))

    def user_list(self, timeout=None) -> UserListResponse:
        b = self._call("user_list", {}, timeout)
        return UserListResponse(header_of(b), list(b.get("users") or []))

    def user_delete(self, name: str, timeout=None) -> Header:
        return header_of(self._call("user_delete", {"name": name}, timeout))

    def user_change_password(self, name: str, password: str, timeout=None) -> Header:
        """Sessions logged in as `name` lose their watches (UNAUTHENTICATED) and must log in again."""
        return header_of(self._call("user_change_password", {"name": name, "password": password}, timeout))

    def user_grant_role(self, user: str, role: str, timeout=None) -> Header:
        return header_of(self._call("user_grant_role", {"user": user, "role": role}, timeout))

    def user_revoke_role(self, name: str, role: str, timeout=None) -> Header:
        return header_of(self._call("user_revoke_role", {"name": name, "role": role}, timeout))

    # -------------------------------------------------------------- roles
    def role_add(self, name: str, timeout=None) -> Header:
        return header_of(self._call("role_add", {"name": name}, timeout))

    def role_get(self, role: str, timeout=None) -> RoleGetResponse:
        b = self._call("role_get", {"role": role}, timeout)
        perms = [Permission(p.get("permType", "READ"), p.get("key", b""), p.get("range_end", b""))
                 for p in b.get("perm") or []]
        return RoleGetResponse(header_of(b), perms)

    def role_list(self, timeout=None) -> RoleListResponse:
        b = self._call("role_list", {}, timeout)
        return RoleListResponse(header_of(b), list(b.get("roles") or []))

    def role_delete(self, role: str, timeout=None) -> Header:
        """Also removes the role from every user that has it (etcd)."""
        return header_of(self._call("role_delete", {"role": role}, timeout))

    def role_grant_permission(self, role: str, perm_type: str, key, range_end=b"", prefix: bool = False,
                              from_key: bool = False, timeout=None) -> Header:
        """perm_type READ | WRITE | READWRITE (any case) on one key, [key, range_end), a prefix or
        from a key on (see perm_range)."""
        key, range_end = perm_range(key, range_end, prefix=prefix, from_key=from_key)
        perm = {"permType": _perm_type(perm_type), "key": key, "range_end": range_end}
        return header_of(self._call("role_grant_permission", {"name": role, "perm": perm}, timeout))

    def role_revoke_permission(self, role: str, key, range_end=b"", prefix: bool = False, from_key: bool = False,
                               timeout=None) -> Header:
        key, range_end = perm_range(key, range_end, prefix=prefix, from_key=from_key)
        return header_of(self._call("role_revoke_permission", {"role": role, "key": key, "range_end": range_end},
                                    timeout))
