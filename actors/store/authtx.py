"""Auth inside the writer's batch: etcd 3.4's auth store (auth/store.go) and permission checks
(etcdserver/apply_auth.go) applied request by request, in commit order.

``AuthBatch`` follows the auth state through one batch.  It starts from the writer's in-memory
AuthState (or the one in LMDB when the caller has none) and copies it on the first change only,
so the caller's object is never touched: a batch whose commit fails leaves the writer's state as
it was, and a successful one hands back the new state (``state``) with the change records
(``changes``: ``[(after_revision, change), ...]``, security.md's change format) for the publish.

Every check uses the state as of that request: an auth change earlier in the batch applies to
every later request.  One auth revision per change record, and one change record per auth op
that changes something (internal.Publish: "the changes are the last len(changes) auth
revisions"): a role deletion is the one change ``["role", name, None]``, which also removes the
role from every user (AuthState.apply does it on every copy; here the users' records are
rewritten in LMDB in the same txn), as etcd's RoleDelete does in one revision; a permission
granted or revoked is ``["perm_grant", role, perm]`` / ``["perm_revoke", role, key, range_end]``,
never the whole role (a batch of grants to a big role would publish it once per grant), while
LMDB gets the role's whole record (records_of says what each change writes).

Who sent a request (the ``user`` argument): None = an internal peer (the writer's own lease
expiry, tests, tools), never checked; "" = an anonymous client session; else the session's
authenticated user name.  When auth is disabled every check passes (etcd).

Where this differs from etcd 3.4, on purpose (security.md "Checks"):
* compact needs root (etcd 3.4 lets any authenticated user compact);
* a txn's nested txns are checked, both branches, recursively (etcd 3.4 skipped them: a write
  hidden in a nested txn went through), and a put inside a txn is checked like a put outside
  (prev_kv needs READ, its lease's attached keys need WRITE);
* role_grant_permission replaces the type of the permission with that exact (key, range_end)
  wherever it is in the role's list (etcd looks at the first permission with that key only, and
  appends a duplicate when that one has another range_end);
* cursors (SPEC.md 6.2, not in etcd): cursor_put needs READ on the cursor's range, cursor_get
  and cursor_delete READ on the stored cursor's range, cursor_list shows only those the user
  may read: nobody holds back (or releases) history they cannot read;
* auth_enable is a change (one auth revision): fan-outs learn of it from the publish stream.
"""
from __future__ import annotations

from zwatch.errors import (FailedPrecondition, InvalidArgument, PermissionNotGranted, ResourceExhausted,
                           RoleExists, RoleNotFound, RoleNotGranted, Unauthenticated, UserExists, UserNotFound,
                           ZwatchError)
from zwatch.limits import MAX_AUTH_STATE_BYTES, MAX_PERMS_PER_ROLE, MAX_ROLES_PER_USER

from zwatch.actors.auth import passwords
from zwatch.actors.auth.perms import READ, WRITE
from zwatch.actors.auth.state import INVALID_TOKEN, ROOT, USER_EMPTY, AuthState

from . import cursors, layout
from .tx import AuthStateBroken

# etcd's gRPC wording (etcdserver/api/v3rpc/rpctypes/error.go), so the CLI prints what etcdctl does.
ERR_USER_EXISTS = "etcdserver: user name already exists"
ERR_USER_NOT_FOUND = "etcdserver: user name not found"
ERR_ROLE_EXISTS = "etcdserver: role name already exists"
ERR_ROLE_NOT_FOUND = "etcdserver: role name not found"
ERR_ROLE_NOT_GRANTED = "etcdserver: role is not granted to the user"
ERR_PERMISSION_NOT_GRANTED = "etcdserver: permission is not granted to the role"
ERR_ROOT_USER_NOT_EXIST = "etcdserver: root user does not exist"
ERR_ROOT_ROLE_NOT_EXIST = "etcdserver: root user does not have root role"
ERR_INVALID_AUTH_MGMT = "etcdserver: invalid auth management"

# Auth ops that change nothing (no admin needed for some: see AuthBatch.check_auth_op).
READ_OPS = frozenset({"auth_status", "user_get", "user_list", "role_get", "role_list"})


# ---------------------------------------------------------------------------------------------
# LMDB <-> AuthState

def load_state(store, txn) -> AuthState:
    """The whole auth state as stored in txn's snapshot."""
    users = {layout.unpack_auth_name(k): layout.unpack_auth_record(v)
             for k, v in txn.cursor(db=store._authusers).iternext()}
    roles = {layout.unpack_auth_name(k): layout.unpack_auth_record(v)
             for k, v in txn.cursor(db=store._authroles).iternext()}
    return AuthState.from_wire({
        "enabled": bool(layout.meta_int_or_zero(txn, store._meta, layout.AUTH_ENABLED)),
        "revision": layout.meta_int_or_zero(txn, store._meta, layout.AUTH_REV),
        "users": users, "roles": roles})


def auth_revision(store, txn) -> int:
    """The snapshot's auth revision: one read, so a reader can cache an AuthState per revision."""
    return layout.meta_int_or_zero(txn, store._meta, layout.AUTH_REV)


def records_of(state: AuthState, change: list) -> list:
    """What one change (applied to state) writes: [(kind, name, record | None)], kind "enabled"
    (name None, record the flag), "user" or "role" (None: deleted).  A role deletion rewrites the
    users that had it; perm_grant / perm_revoke rewrite their role's whole record."""
    kind = change[0]
    if kind == "enabled":
        return [("enabled", None, bool(change[1]))]
    if kind == "user":
        return [("user", change[1], change[2])]
    if kind == "role":
        out = [("role", change[1], change[2])]
        if change[2] is None:
            out += [("user", name, rec) for name, rec in _users_without_role(state, change[1])]
        return out
    return [("role", change[1], role_after(state.roles.get(change[1], []), change))]


def role_after(perms: list, change: list) -> list:
    """A role's permissions after a perm_grant / perm_revoke: the permission of the same
    (key, range_end) goes, a granted one joins, sorted by (key, range_end) as AuthState.apply
    keeps them."""
    where = (change[2][1], change[2][2]) if change[0] == "perm_grant" else (change[2], change[3])
    out = [list(p) for p in perms if (p[1], p[2]) != where]
    if change[0] == "perm_grant":
        out.append(list(change[2]))
        out.sort(key=lambda p: (p[1], p[2]))
    return out


def write_records(store, txn, records: list):
    for kind, name, rec in records:
        if kind == "enabled":
            txn.put(layout.AUTH_ENABLED, layout.pack_int(int(rec)), db=store._meta)
            continue
        db = store._authusers if kind == "user" else store._authroles
        key = layout.pack_auth_name(name)
        if rec is None:
            txn.delete(key, db=db)
        else:
            txn.put(key, layout.pack_user(rec) if kind == "user" else layout.pack_role(rec), db=db)


def _users_without_role(state: AuthState, role: str) -> list:
    """[(user, its record without role)] for every user having role."""
    return [(name, [state.users[name][0], [x for x in state.users[name][1] if x != role]])
            for name in state.users_with_role(role)]


def _entry_bytes(name: str, record) -> int:
    """What one user or role adds to the msgpack-encoded state (to_wire), to a few bytes."""
    if record is None:
        return 0
    return len(name.encode("utf-8", "surrogatepass")) + 2 + layout.packed_bytes(record)


def state_bytes(state: AuthState) -> int:
    return layout.packed_bytes(state.to_wire())


def require_user(s: AuthState, user: str | None):
    """Any authenticated user (lease ops, auth_status), with AuthState.check's errors; user
    None (an internal peer) passes."""
    if s.enabled and user is not None:
        if not user:
            raise Unauthenticated(USER_EMPTY)
        if user not in s.users:
            raise Unauthenticated(INVALID_TOKEN)


# ---------------------------------------------------------------------------------------------

class AuthBatch:
    """The auth state through one batch (copy-on-write), its checks and its auth ops."""

    def __init__(self, store, state: AuthState | None = None):
        self.store = store
        self.base = state                  # the caller's state: never modified
        self._state = state                # the current one (the base until the first change)
        self.copied = False
        self.changes: list[tuple[int, list]] = []
        self.change_requests: list[int] = []   # (Store._apply) the request index of each change
        self._bytes: int | None = None     # size of the current state, computed at the first change

    def state_in(self, txn) -> AuthState:
        """The state as of the current request (loaded from txn if the caller gave none)."""
        if self._state is None:
            self._state = self.base = load_state(self.store, txn)
        return self._state

    @property
    def state(self) -> AuthState | None:
        return self._state

    # -- who may do what ------------------------------------------------------------------------

    def check(self, tx, op: str, r: dict, user: str):
        """A store op's permissions (r normalized), as etcd's authApplierV3, before it runs."""
        s = self.state_in(tx.lt)
        if not s.enabled or s.is_root(user or None):
            if s.enabled:
                require_user(s, user)
            return
        u = user or None
        if op == "range":
            s.check(u, READ, r["key"], r["range_end"])
        elif op == "put":
            self._check_put(tx, s, u, r)
        elif op == "delete_range":
            self._check_delete(s, u, r)
        elif op == "txn":
            self._check_txn(tx, s, u, r)
        elif op == "compact":
            s.check_admin(u)
        elif op == "lease_grant":
            require_user(s, user)
        elif op == "lease_revoke":
            require_user(s, user)
            self._check_lease_keys(tx, s, u, r["ID"])
        elif op == "cursor_put":
            # Nobody holds back history they cannot read (SPEC.md 6.2).
            s.check(u, READ, r["key"], r["range_end"])
        elif op in ("cursor_get", "cursor_delete"):
            require_user(s, user)
            c = cursors.get(tx.lt, tx.s._cursors, r["name"])
            if c is not None:              # (absent: the op answers CURSOR_NOT_FOUND)
                s.check(u, READ, c.key, c.range_end)
        elif op == "cursor_list":
            require_user(s, user)          # filtered by cursor_visible
        else:                              # a new store op must say who may run it
            raise InvalidArgument(f"op {op} has no permission rule")

    def cursor_visible(self, tx, user: str):
        """cursor_list's filter: None (every cursor) for root or with auth disabled, else a
        predicate keeping the cursors over a range the user may read."""
        s = self.state_in(tx.lt)
        if not s.enabled or s.is_root(user or None):
            return None

        def visible(c) -> bool:
            try:
                s.check(user or None, READ, c.key, c.range_end)
                return True
            except ZwatchError:
                return False
        return visible

    def _check_put(self, tx, s, u, r):
        s.check(u, WRITE, r["key"])
        self._check_lease_keys(tx, s, u, r["lease"])
        if r["prev_kv"]:
            s.check(u, READ, r["key"])

    @staticmethod
    def _check_delete(s, u, r):
        s.check(u, WRITE, r["key"], r["range_end"])
        if r["prev_kv"]:
            s.check(u, READ, r["key"], r["range_end"])

    def _check_txn(self, tx, s, u, t):
        """Every compare, every op of BOTH branches, nested txns recursively: all before any runs."""
        for c in t["compare"]:
            s.check(u, READ, c["key"], c["range_end"])
        for branch in ("success", "failure"):
            for kind, b in t[branch]:
                if kind == "range":
                    s.check(u, READ, b["key"], b["range_end"])
                elif kind == "put":
                    self._check_put(tx, s, u, b)
                elif kind == "delete_range":
                    self._check_delete(s, u, b)
                else:
                    self._check_txn(tx, s, u, b)

    @staticmethod
    def _check_lease_keys(tx, s, u, lease_id: int):
        """etcd's checkLeasePuts: WRITE on every key attached to the lease (a user who could not
        revoke the lease must not attach keys to it, nor revoke it)."""
        if not lease_id:
            return
        cur = tx.lt.cursor(db=tx.s._leasekeys)
        if cur.set_key(layout.pack_lease_id(lease_id)):
            for key in cur.iternext_dup():
                s.check(u, WRITE, key)

    def check_auth_op(self, s: AuthState, op: str, r: dict, user: str | None):
        """etcd's needAdminPermission, plus user_get of yourself, role_get of a role you have,
        auth_status for any authenticated user."""
        if user is None or not s.enabled:
            return
        if op == "auth_status":
            require_user(s, user)
        elif op == "user_get" and user and r["name"] == user:
            require_user(s, user)
        elif op == "role_get" and user and user in s.users and r["role"] in s.users[user][1]:
            pass
        else:
            s.check_admin(user or None)

    # -- the auth ops ---------------------------------------------------------------------------

    def run(self, tx, op: str, r: dict, user: str | None) -> dict:
        """One auth op inside tx (its nested LMDB txn): check, apply, persist.  Nothing changes
        (in memory or in LMDB) unless it succeeds."""
        s = self.state_in(tx.lt)
        self.check_auth_op(s, op, r, user)
        resp, changes = getattr(self, "_" + op)(s, r)
        resp["header"] = {"revision": tx.rev}
        if changes:
            self._apply(tx, s, changes)
        return resp

    def _apply(self, tx, s: AuthState, changes: list):
        if self._bytes is None:
            self._bytes = state_bytes(s)
        size = self._bytes
        records = [rec for change in changes for rec in records_of(s, change)]
        for kind, name, rec in records:
            if kind != "enabled":
                old = (s.users if kind == "user" else s.roles).get(name)
                size += _entry_bytes(name, rec) - _entry_bytes(name, old)
        if size > MAX_AUTH_STATE_BYTES and size > self._bytes:
            raise ResourceExhausted(f"the auth state would be {size} bytes, the limit is {MAX_AUTH_STATE_BYTES}")
        # Persist first: an LMDB error aborts the whole batch, and the copy is only the batch's.
        write_records(self.store, tx.lt, records)
        if not self.copied:
            s = self._state = s.copy()
            self.copied = True
        try:
            for change in changes:
                s.apply(change)
                self.changes.append((tx.rev, change))
        except Exception as e:
            raise AuthStateBroken(f"{type(e).__name__}: {e}") from e
        tx.lt.put(layout.AUTH_REV, layout.pack_int(s.revision), db=self.store._meta)
        self._bytes = size

    @staticmethod
    def _hash(r: dict, where: str) -> str:
        """The fan-out hashes passwords: a plaintext one reaching the writer is refused."""
        if r["password"] is not None:
            raise InvalidArgument(f"{where}: the writer takes hashed_password, never a plaintext password")
        h = r["hashed_password"]
        if h is None:
            raise InvalidArgument(f"{where}: hashed_password is required")
        if not passwords.is_valid_hash(h):
            raise InvalidArgument(f"{where}.hashed_password is not a password hash of this server's format")
        return h

    def _auth_enable(self, s, r):
        if s.enabled:
            return {}, []                  # etcd: already enabled is a success that changes nothing
        root = s.users.get(ROOT)
        if root is None:
            raise FailedPrecondition(ERR_ROOT_USER_NOT_EXIST)
        if ROOT not in root[1]:
            raise FailedPrecondition(ERR_ROOT_ROLE_NOT_EXIST)
        return {}, [["enabled", True]]

    def _auth_disable(self, s, r):
        return {}, ([["enabled", False]] if s.enabled else [])

    def _auth_status(self, s, r):
        return {"enabled": s.enabled, "authRevision": s.revision}, []

    def _user_add(self, s, r):
        no_password = bool(r["options"] and r["options"].get("no_password"))
        if no_password:
            if r["password"] is not None:
                self._hash(r, "user_add")  # still refuse a plaintext password
            h = None
        else:
            h = self._hash(r, "user_add")
        if r["name"] in s.users:
            raise UserExists(ERR_USER_EXISTS)
        return {}, [["user", r["name"], [h, []]]]

    def _user_get(self, s, r):
        u = s.users.get(r["name"])
        if u is None:
            raise UserNotFound(ERR_USER_NOT_FOUND)
        return {"roles": sorted(u[1])}, []

    def _user_list(self, s, r):
        return {"users": sorted(s.users)}, []

    def _user_delete(self, s, r):
        if s.enabled and r["name"] == ROOT:
            raise FailedPrecondition(ERR_INVALID_AUTH_MGMT)
        if r["name"] not in s.users:
            raise UserNotFound(ERR_USER_NOT_FOUND)
        return {}, [["user", r["name"], None]]

    def _user_change_password(self, s, r):
        h = self._hash(r, "user_change_password")
        u = s.users.get(r["name"])
        if u is None:
            raise UserNotFound(ERR_USER_NOT_FOUND)
        return {}, [["user", r["name"], [h, list(u[1])]]]

    def _user_grant_role(self, s, r):
        name, role = r["user"], r["role"]
        u = s.users.get(name)
        if u is None:
            raise UserNotFound(ERR_USER_NOT_FOUND)
        if role != ROOT and role not in s.roles:   # etcd: role root need not exist
            raise RoleNotFound(ERR_ROLE_NOT_FOUND)
        if role in u[1]:
            return {}, []                  # etcd: granted already is a success that changes nothing
        if len(u[1]) >= MAX_ROLES_PER_USER:
            raise ResourceExhausted(f"user {name!r:.64} has {len(u[1])} roles, the limit is {MAX_ROLES_PER_USER}")
        return {}, [["user", name, [u[0], sorted([*u[1], role])]]]

    def _user_revoke_role(self, s, r):
        name, role = r["name"], r["role"]
        if s.enabled and name == ROOT and role == ROOT:
            raise FailedPrecondition(ERR_INVALID_AUTH_MGMT)
        u = s.users.get(name)
        if u is None:
            raise UserNotFound(ERR_USER_NOT_FOUND)
        if role not in u[1]:
            raise RoleNotGranted(ERR_ROLE_NOT_GRANTED)
        return {}, [["user", name, [u[0], [x for x in u[1] if x != role]]]]

    def _role_add(self, s, r):
        if r["name"] in s.roles:
            raise RoleExists(ERR_ROLE_EXISTS)
        return {}, [["role", r["name"], []]]

    def _role_get(self, s, r):
        perms = s.roles.get(r["role"])
        if perms is None:
            raise RoleNotFound(ERR_ROLE_NOT_FOUND)
        return {"perm": [{"permType": t, "key": k, "range_end": e} for t, k, e in perms]}, []

    def _role_list(self, s, r):
        return {"roles": sorted(s.roles)}, []

    def _role_delete(self, s, r):
        role = r["role"]
        if s.enabled and role == ROOT:
            raise FailedPrecondition(ERR_INVALID_AUTH_MGMT)
        if role not in s.roles:
            raise RoleNotFound(ERR_ROLE_NOT_FOUND)
        # One change: applying it removes the role from every user too (etcd, same revision).
        return {}, [["role", role, None]]

    def _role_grant_permission(self, s, r):
        perms = s.roles.get(r["name"])
        if perms is None:
            raise RoleNotFound(ERR_ROLE_NOT_FOUND)
        p = r["perm"]
        new = [p["permType"], p["key"], p["range_end"]]
        # The same range again replaces its type; a new one must fit.
        if len(perms) >= MAX_PERMS_PER_ROLE and not any(x[1] == new[1] and x[2] == new[2] for x in perms):
            raise ResourceExhausted(f"role {r['name']!r:.64} has {len(perms)} permissions, "
                                    f"the limit is {MAX_PERMS_PER_ROLE}")
        # One permission published, not the role: a publish stays small whatever the role's size.
        return {}, [["perm_grant", r["name"], new]]

    def _role_revoke_permission(self, s, r):
        perms = s.roles.get(r["role"])
        if perms is None:
            raise RoleNotFound(ERR_ROLE_NOT_FOUND)
        if not any(x[1] == r["key"] and x[2] == r["range_end"] for x in perms):
            raise PermissionNotGranted(ERR_PERMISSION_NOT_GRANTED)
        return {}, [["perm_revoke", r["role"], r["key"], r["range_end"]]]

