"""Password hashing: a salted slow hash from the standard library (hashlib.scrypt), issue #11.

Stored form (what the writer keeps in LMDB and publishes; requests.py checks its shape)::

    scrypt$<N>$<r>$<p>$<salt, base64>$<derived key, base64>

hash_password uses N = 2**14, r = 8, p = 1 (16 MiB, ~80 ms on this machine), a 16-byte salt
from os.urandom and a 32-byte key.  verify_password reads the parameters from the stored string
so that a later change of the defaults keeps old hashes valid, but bounds them: a stored string
is data from the store, and a forged one asking for N = 2**30 must not make a login take minutes
or gigabytes.  hashlib.scrypt runs in OpenSSL with the GIL released, so a worker thread can
hash while the fan-out's loop goes on.

The plaintext is never kept, logged or returned; verification compares with hmac.compare_digest.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

SCHEME = "scrypt"
N, R, P = 2 ** 14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
MAXMEM = 64 * 1024 * 1024           # hashlib.scrypt's memory ceiling (N=2**14, r=8 needs 16 MiB)
# Bounds on a stored hash's parameters: at most 4 times the default work, within MAXMEM.
MAX_N = 2 ** 20
MAX_R = 32
MAX_P = 16
MAX_WORK = 4 * N * R * P             # N * r * p: scrypt's time is proportional to it
# ...and at least the default work: a hash anyone can brute-force (N=2) is not a slow hash, and a
# stored one would only come from a client planting it (audit finding).
MIN_WORK = N * R * P
SALT_RANGE = (8, 64)
KEY_RANGE = (16, 64)


def _bytes(password: bytes | str) -> bytes:
    return password.encode("utf-8") if isinstance(password, str) else bytes(password)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: bytes | str) -> str:
    """A new salted hash of password, in the stored form."""
    salt = os.urandom(SALT_BYTES)
    key = hashlib.scrypt(_bytes(password), salt=salt, n=N, r=R, p=P, maxmem=MAXMEM, dklen=KEY_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(key)}"


def parse(stored) -> tuple[int, int, int, bytes, bytes] | None:
    """The stored form -> (n, r, p, salt, key), or None when it is malformed or out of bounds."""
    if not isinstance(stored, str) or len(stored) > 512:
        return None
    fields = stored.split("$")
    if len(fields) != 6 or fields[0] != SCHEME:
        return None
    try:
        if not all(f.isascii() and f.isdigit() and len(f) <= 10 for f in fields[1:4]):
            return None
        n, r, p = int(fields[1]), int(fields[2]), int(fields[3])
        salt = base64.b64decode(fields[4], validate=True)
        key = base64.b64decode(fields[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    if not (2 <= n <= MAX_N and n & (n - 1) == 0 and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        return None
    if not MIN_WORK <= n * r * p <= MAX_WORK or 128 * n * r * 2 > MAXMEM:
        return None
    if not (SALT_RANGE[0] <= len(salt) <= SALT_RANGE[1] and KEY_RANGE[0] <= len(key) <= KEY_RANGE[1]):
        return None
    return n, r, p, salt, key


def is_valid_hash(stored) -> bool:
    """True when stored is a hash verify_password can check (the writer refuses others)."""
    return parse(stored) is not None


def verify_password(password: bytes | str, stored) -> bool:
    """True iff password hashes to stored.  False, never an exception, on a malformed stored
    value (None included: a user without a password never logs in by password)."""
    parsed = parse(stored)
    if parsed is None:
        return False
    n, r, p, salt, key = parsed
    try:
        got = hashlib.scrypt(_bytes(password), salt=salt, n=n, r=r, p=p, maxmem=MAXMEM, dklen=len(key))
    except (ValueError, MemoryError, TypeError):
        return False
    return hmac.compare_digest(got, key)


# A hash no password matches in practice, for verifying against when the user does not exist: a
# failed login costs the same time whether or not the name exists (no user enumeration by timing).
_DUMMY = None


def verify_unknown_user(password: bytes | str) -> bool:
    """Spend a verification's time for a user that does not exist; always False."""
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password(os.urandom(16))
    verify_password(password, _DUMMY)
    return False
