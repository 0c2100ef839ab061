"""The auth state: users, roles, the enabled flag and the auth revision (etcd v3 auth, issue #11).

One class for the three processes that need it: the writer changes it (and stores it in LMDB),
publishes each change, and the syncer and the fan-outs apply the same changes in the same order,
so every copy at auth revision R is the same state.

Layout (also the wire form, ``to_wire``; zwatch.internal.decode_auth_state validates it)::

    users: {name: [password_hash | None, [role, ...]]}
    roles: {name: [[permType, key, range_end], ...]}        permType READ | WRITE | READWRITE

A change (zwatch.internal.decode_auth_change) is one of::

    ["enabled", bool]
    ["user", name, [password_hash | None, [role, ...]] | None]      None: the user is deleted
    ["role", name, [[permType, key, range_end], ...] | None]        None: the role is deleted
    ["perm_grant", role, [permType, key, range_end]]                 one permission set (replaces
                                                                     the type of the same range)
    ["perm_revoke", role, key, range_end]                            one permission taken away

and each change is exactly one auth revision (``apply`` adds 1).

Role deletion: ``["role", name, None]`` ALSO removes ``name`` from every user's role list, as
etcd's RoleDelete does in the same transaction.  The writer publishes that one change for a
role_delete (the auth revision grows by 1, as etcd's does) and no per-user changes.  (A per-user
change that sets the list without the role would still leave the same state: it is only one
revision more.)  A user may also name a role that does not exist (the store never writes one, but
a copy must not break on it): it grants nothing, as in etcd's getMergedPerms.

The root role grants everything: a user having it gets ``perms.ALLOW_ALL`` and passes
``check_admin``.  Checks are no-ops while auth is disabled.

``perms(user)`` is cached per user; a change invalidates only the users it can affect (the user
itself; every user having the role; everyone on "enabled", though permissions do not depend on it).
"""
from __future__ import annotations

import bisect

from zwatch.errors import PermissionDenied, Unauthenticated

from .perms import ALLOW_ALL, READ, WRITE, RangePerms

ROOT = "root"
USER_EMPTY = "etcdserver: user name is empty"
# A session's user deleted since it logged in: etcd invalidates the user's tokens, and the next
# request gets ErrInvalidAuthToken (codes.Unauthenticated).
INVALID_TOKEN = "etcdserver: invalid auth token"
PERMISSION_DENIED = "etcdserver: permission denied"


class AuthState:
    __slots__ = ("enabled", "revision", "users", "roles", "_perms", "_by_roles")

    def __init__(self, enabled: bool = False, revision: int = 0, users: dict | None = None,
                 roles: dict | None = None):
        self.enabled = enabled
        self.revision = revision
        self.users: dict[str, list] = users if users is not None else {}
        self.roles: dict[str, list] = roles if roles is not None else {}
        self._perms: dict[str, RangePerms] = {}
        # Merged permissions per distinct set of roles: a change of a role shared by 1,000 users
        # rebuilds its sets once, not once per user (audit finding: 10 s of CPU for 1,000 users
        # of a 10,000-permission role).
        self._by_roles: dict[tuple, RangePerms] = {}

    # ------------------------------------------------------------------ reading
    def perms(self, user: str | None) -> RangePerms | None:
        """The user's merged permissions; None when there is no such user."""
        if user is None:
            return None
        cached = self._perms.get(user)
        if cached is not None:
            return cached
        rec = self.users.get(user)
        if rec is None:
            return None
        roles = tuple(sorted(set(rec[1])))
        built = self._by_roles.get(roles)
        if built is None:
            if ROOT in roles:
                built = ALLOW_ALL
            else:
                built = RangePerms.build(perm for role in roles for perm in self.roles.get(role, ()))
            self._by_roles[roles] = built
        self._perms[user] = built
        return built

    def is_root(self, user: str | None) -> bool:
        rec = self.users.get(user) if user is not None else None
        return rec is not None and ROOT in rec[1]

    def users_with_role(self, role: str) -> list[str]:
        return sorted(name for name, rec in self.users.items() if role in rec[1])

    def has_role(self, user: str | None, role: str) -> bool:
        rec = self.users.get(user) if user is not None else None
        return rec is not None and role in rec[1]

    # ------------------------------------------------------------------ checks
    def _user_perms(self, user: str | None) -> RangePerms:
        if user is None:
            raise Unauthenticated(USER_EMPTY)
        perms = self.perms(user)
        if perms is None:              # deleted since the session logged in
            raise Unauthenticated(INVALID_TOKEN)
        return perms

    def check(self, user: str | None, kind: str, key: bytes, range_end: bytes = b"") -> None:
        """May user do `kind` (READ / WRITE) on etcd's (key, range_end)?  Raises Unauthenticated
        (auth enabled and no user: "user name is empty"; a user that no longer exists: "invalid
        auth token") or PermissionDenied; does nothing while auth is disabled."""
        if not self.enabled:
            return
        if not self._user_perms(user).allows(kind, key, range_end):
            raise PermissionDenied(PERMISSION_DENIED)

    def allowed(self, user: str | None, kind: str, key: bytes, range_end: bytes = b"") -> bool:
        """check() as a bool (disabled: True; no user or unknown user: False)."""
        if not self.enabled:
            return True
        perms = self.perms(user)
        return perms is not None and perms.allows(kind, key, range_end)

    def check_admin(self, user: str | None) -> None:
        """Root or raise (no-op while auth is disabled)."""
        if not self.enabled:
            return
        self._user_perms(user)
        if not self.is_root(user):
            raise PermissionDenied(PERMISSION_DENIED)

    # ------------------------------------------------------------------ changing
    def apply(self, change: list) -> None:
        """Apply one change (the module docstring's layouts); the auth revision grows by 1.
        Raises ValueError on a change of unknown kind (the publish decoder refuses those)."""
        kind = change[0]
        if kind == "enabled":
            self.enabled = bool(change[1])
        elif kind == "user":
            name, rec = change[1], change[2]
            if rec is None:
                self.users.pop(name, None)
            else:
                self.users[name] = [rec[0], list(rec[1])]
            self._perms.pop(name, None)
        elif kind == "role":
            name, perms = change[1], change[2]
            affected = self.users_with_role(name)
            if perms is None:
                self.roles.pop(name, None)
                for user in affected:
                    rec = self.users[user]
                    self.users[user] = [rec[0], [r for r in rec[1] if r != name]]
            else:
                self.roles[name] = [list(p) for p in perms]
            for user in affected:
                self._perms.pop(user, None)
            self._by_roles = {k: v for k, v in self._by_roles.items() if name not in k}
        elif kind == "perm_grant" or kind == "perm_revoke":
            # One permission of a role, not the whole role: a batch of grants to a role of
            # thousands of permissions publishes each grant, not the role each time (audit).
            name = change[1]
            perms = self.roles.setdefault(name, [])
            where = (change[2][1], change[2][2]) if kind == "perm_grant" else (change[2], change[3])
            kept = [p for p in perms if (p[1], p[2]) != where]
            if kind == "perm_grant":
                bisect.insort(kept, list(change[2]), key=lambda p: (p[1], p[2]))
            self.roles[name] = kept
            for user in self.users_with_role(name):
                self._perms.pop(user, None)
            self._by_roles = {k: v for k, v in self._by_roles.items() if name not in k}
        else:
            raise ValueError(f"unknown auth change {kind!r}")
        self.revision += 1

    # ------------------------------------------------------------------ copies
    def to_wire(self) -> dict:
        return {"enabled": self.enabled, "revision": self.revision,
                "users": {name: [rec[0], list(rec[1])] for name, rec in self.users.items()},
                "roles": {name: [list(p) for p in perms] for name, perms in self.roles.items()}}

    @classmethod
    def from_wire(cls, d: dict) -> "AuthState":
        """From to_wire's map (validate untrusted input with zwatch.internal.decode_auth_state first)."""
        return cls(bool(d["enabled"]), int(d["revision"]),
                   {name: [rec[0], list(rec[1])] for name, rec in d["users"].items()},
                   {name: [list(p) for p in perms] for name, perms in d["roles"].items()})

    def copy(self) -> "AuthState":
        """An independent copy (the caches are shared: RangePerms are immutable)."""
        c = AuthState.from_wire(self.to_wire())
        c._perms = dict(self._perms)
        c._by_roles = dict(self._by_roles)
        return c

    def __eq__(self, other):
        if not isinstance(other, AuthState):
            return NotImplemented
        return self.to_wire() == other.to_wire()

    def __repr__(self):
        return (f"AuthState(enabled={self.enabled}, revision={self.revision}, users={len(self.users)}, "
                f"roles={len(self.roles)})")


__all__ = ["AuthState", "ROOT", "READ", "WRITE"]
