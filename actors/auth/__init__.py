"""Users, roles and key-range permissions (etcd v3 auth, issue #11): the pure model shared by the
writer (which changes it), the syncer and the fan-outs (which check against it).

* perms.py     - RangePerms: a user's merged READ / WRITE intervals, checked in O(log n).
* passwords.py - the salted slow hash (hashlib.scrypt) the writer stores, and its verification.
* state.py     - AuthState: users, roles, the enabled flag and the auth revision; applies the
  changes the writer publishes, answers "may this user do that".

No I/O here: the store keeps the state in LMDB, the publish stream carries its changes.
"""
