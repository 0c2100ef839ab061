"""The fan-out's view of the auth state, kept in the order of the publish stream.

The writer applies auth changes in commit order and publishes each one at its place among the
revisions (``[after_revision, change]``: after that revision's events, before the next one's).
A fan-out follows them at exactly that place, so a watch whose user may no longer read its
range is canceled after the last event it was allowed and before the first one it is not.

Where the view comes from: the whole state is fetched from the syncer (one LMDB snapshot, the
``auth_state`` message) when the fan-out starts and whenever it may have missed a change (a
publish gap, a change whose auth revision is not the next one); each publish then carries the
changes since.  Until a fetch is answered the view is not `ready`: watch creates wait, logins
that need a password are refused UNAVAILABLE ("retry"), and frames of the syncer made from a
snapshot with a newer auth revision are held (core.FanoutCore).

I/O-free: `apply` takes a change and returns who it touches; the core cancels what must go.
"""
from __future__ import annotations

from zwatch.actors.auth.perms import READ
from zwatch.actors.auth.state import AuthState
from zwatch.errors import PermissionDenied, Unauthenticated, ZwatchError
from zwatch.requests import KEY_INFINITY

ALL = "all"       # a change that touches every session (auth enabled)

PERMISSION_DENIED_REASON = "etcdserver: permission denied"
CREDENTIALS_REVOKED_REASON = "etcdserver: invalid auth token"   # etcd's words once a token is invalidated


def watch_range(key: bytes, end: bytes | None) -> tuple[bytes, bytes]:
    """A watcher's index form (end None: the key; KEY_INFINITY: from the key) -> etcd's
    [key, range_end) wire form, which the permission check takes."""
    if end is None:
        return key, b""
    if end == KEY_INFINITY:
        return key, b"\x00"
    return key, end


class AuthView:
    def __init__(self):
        self.state: AuthState | None = None
        self.need_fetch = True            # a fetch must be (re)sent: nothing loaded, or a change missed
        self.fetch_sent_at = None         # monotonic time of the outstanding fetch
        self.fetches = 0

    @property
    def ready(self) -> bool:
        return self.state is not None and not self.need_fetch

    @property
    def revision(self) -> int:
        return self.state.revision if self.state is not None else -1

    @property
    def enabled(self) -> bool:
        return self.state is not None and self.state.enabled

    # ------------------------------------------------------------------ following the stream
    def loaded(self, state: AuthState) -> bool:
        """A fetched state.  Taken unless it is older than what the stream already gave us."""
        self.fetch_sent_at = None
        if self.state is not None and state.revision < self.state.revision:
            self.need_fetch = False     # the stream is ahead of this snapshot: keep ours
            return False
        self.state = state
        self.need_fetch = False
        return True

    def apply(self, change_rev: int, change: list):
        """One published change with its auth revision.  Returns None (nothing to re-check: not
        loaded, already in our state, or missed changes before it: a fetch is due), ALL, or
        (users whose permissions may have shrunk, users whose credentials are revoked)."""
        st = self.state
        if st is None or change_rev <= st.revision:
            return None
        if change_rev != st.revision + 1:
            self.need_fetch = True      # we missed one: fetch the whole state again
            return None
        kind = change[0]
        if kind == "enabled":
            st.apply(change)
            return ALL if change[1] else None
        if kind == "user":
            name, record = change[1], change[2]
            old = st.users.get(name)
            st.apply(change)
            if record is None or (old is not None and old[0] != record[0]):
                return set(), {name}    # deleted, or its password changed: sessions must log in again
            return {name}, set()
        if kind in ("role", "perm_grant", "perm_revoke"):
            name = change[1]
            touched = set(st.users_with_role(name))
            st.apply(change)
            touched |= set(st.users_with_role(name))
            return touched, set()
        st.apply(change)                # an unknown kind: AuthState decides; re-check everyone
        return ALL

    def missed(self, publish_auth_rev: int):
        """After a publish: our revision must now equal the publish's auth revision."""
        if self.state is not None and publish_auth_rev > self.state.revision:
            self.need_fetch = True

    # ------------------------------------------------------------------ checks
    def watch_error(self, user: str | None, key: bytes, end: bytes | None) -> ZwatchError | None:
        """Why this user may not watch [key, end) (index form), or None."""
        st = self.state
        if st is None or not st.enabled:
            return None
        try:
            st.check(user, READ, *watch_range(key, end))
        except (PermissionDenied, Unauthenticated) as err:
            return err
        return None

    def password_hash(self, user: str) -> tuple[bool, str | None]:
        """(the user exists, its stored hash or None)"""
        rec = self.state.users.get(user) if self.state is not None else None
        return rec is not None, (rec[0] if rec is not None else None)
