"""Password hashing (actors/auth/passwords.py): hashlib.scrypt with a random salt, the stored
form requests.py checks, and a verification that never raises and never lets a forged stored
hash ask for unbounded work."""
from __future__ import annotations

import hashlib

import pytest

from zwatch import requests
from zwatch.actors.auth import passwords
from zwatch.actors.auth.passwords import hash_password, is_valid_hash, parse, verify_password


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("correct horse")


def test_a_hash_verifies_its_password_only(stored):
    assert verify_password("correct horse", stored)
    assert verify_password(b"correct horse", stored)          # str is its UTF-8 bytes
    assert not verify_password("correct horse ", stored)
    assert not verify_password("", stored)


def test_the_stored_form_and_its_parameters(stored):
    scheme, n, r, p, salt, key = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    n_, r_, p_, salt_, key_ = parse(stored)
    assert (n_, r_, p_, len(salt_), len(key_)) == (2 ** 14, 8, 1, 16, 32)
    assert requests._HASH_SHAPE.fullmatch(stored)               # what the writer accepts
    assert requests.normalize("user_add", {"name": "u", "hashed_password": stored})["hashed_password"] == stored
    assert "correct horse" not in stored


def test_each_hash_has_its_own_salt():
    a, b = hash_password("pw"), hash_password("pw")
    assert a != b and a.split("$")[4] != b.split("$")[4]
    assert verify_password("pw", a) and verify_password("pw", b)


def test_unicode_and_empty_passwords():
    h = hash_password("pässwörd ✓")
    assert verify_password("pässwörd ✓", h) and not verify_password("passwort", h)
    e = hash_password("")
    assert verify_password("", e) and not verify_password(" ", e)


def test_a_hash_with_other_parameters_still_verifies():
    """Parameters come from the stored string: a later change of the defaults keeps old hashes."""
    salt = b"s" * 16
    key = hashlib.scrypt(b"pw", salt=salt, n=2 ** 13, r=8, p=4, dklen=24, maxmem=64 << 20)
    stored = f"scrypt$8192$8$4${passwords._b64(salt)}${passwords._b64(key)}"
    assert verify_password("pw", stored) and not verify_password("pW", stored)


def test_a_hash_below_the_default_work_never_verifies():
    """Audit finding: a client-planted hash of N=2 is no slow hash; the store refuses it and a
    login against it fails (the work must be at least the default's)."""
    salt = b"s" * 16
    key = hashlib.scrypt(b"weak", salt=salt, n=2, r=1, p=1, dklen=32)
    stored = f"scrypt$2$1$1${passwords._b64(salt)}${passwords._b64(key)}"
    assert not passwords.is_valid_hash(stored) and not verify_password("weak", stored)


def _with(stored: str, i: int, value: str) -> str:
    fields = stored.split("$")
    fields[i] = value
    return "$".join(fields)


def malformed(stored: str) -> list:
    return [
        None, 0, b"scrypt$16384$8$1$AAAA$AAAA", "", "scrypt", stored + "$", stored.replace("$", "$$", 1),
        _with(stored, 0, "bcrypt"), _with(stored, 0, "SCRYPT"),
        _with(stored, 1, "16385"), _with(stored, 1, "0"), _with(stored, 1, "1"), _with(stored, 1, "-16384"),
        _with(stored, 1, "2097152"),                 # 2**21: above MAX_N
        _with(stored, 1, "1048576"),                 # 2**20 with r=8: 1 GiB, above the memory bound
        _with(stored, 1, "１６３８４"),              # Unicode digits
        _with(stored, 2, "0"), _with(stored, 2, "33"), _with(stored, 2, "x"), _with(stored, 2, ""),
        _with(stored, 3, "0"), _with(stored, 3, "17"), _with(stored, 3, "5"),   # p=5: above 4x the default work
        _with(stored, 3, "1" + "0" * 30),
        _with(stored, 4, "!!!!"), _with(stored, 4, "QUJD"),            # 3-byte salt: too short
        _with(stored, 4, ""), _with(stored, 5, "QUJD"), _with(stored, 5, "not base64"),
        _with(stored, 5, passwords._b64(b"k" * 65)),
        stored + "A" * 600,
    ]


def test_a_malformed_stored_hash_is_false_never_an_exception(stored, monkeypatch):
    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(k) or real(*a, **k))
    for bad in malformed(stored):
        assert parse(bad) is None, bad
        assert verify_password("correct horse", bad) is False, bad
        assert not is_valid_hash(bad)
    assert calls == []                                # refused before any hashing


def test_bounds_of_a_forged_hash_keep_verification_cheap(stored):
    """Every parameter set parse accepts costs at most 4x the default work and 64 MiB."""
    for n_exp in range(1, 22):
        for r in (1, 8, 32, 33):
            for p in (1, 4, 16, 17):
                got = parse(_with(_with(_with(stored, 1, str(2 ** n_exp)), 2, str(r)), 3, str(p)))
                if got is not None:
                    n = 2 ** n_exp
                    assert n * r * p <= 4 * 2 ** 14 * 8 and 128 * n * r <= 32 * 1024 * 1024


def test_verify_uses_a_constant_time_comparison(stored, monkeypatch):
    import hmac
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert verify_password("correct horse", stored) and not verify_password("x", stored)
    assert len(calls) == 2


def test_an_unknown_user_costs_a_verification_and_fails(monkeypatch):
    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(k["n"]) or real(*a, **k))
    assert passwords.verify_unknown_user("anything") is False
    assert calls[-1] == 2 ** 14
