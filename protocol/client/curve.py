"""The client's side of CURVE: which server key to trust and which keypair to present.

    curve = resolve(server_key="keys/fanout.key", client_key="keys/client-alice/alice.key_secret")
    curve.apply(sock)            # before sock.connect(...)

A key is a path of a ``zmq.auth`` key file (``NAME.key`` / ``NAME.key_secret``, as
``zwatch keygen`` writes) or the 40-character z85 text of the key itself (bytes or str).
Unset arguments come from ZWATCH_CURVE_SERVER_KEY / ZWATCH_CURVE_CLIENT_KEY.  No server key:
``resolve`` returns None (a plain connection).  No client key: a fresh keypair for this client
(the fan-out admits it when ZWATCH_CURVE_CLIENTS=any; the user then logs in by password).

Errors are ``CurveKeyError`` (a ValueError) with one line naming the setting and the path; the
secret key never appears in one, nor in ``repr``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import zmq
import zmq.auth
from zmq.utils import z85

from .. import settings


class CurveKeyError(ValueError):
    """A CURVE key argument or file that cannot be used (one line: the setting and the path)."""


@dataclass(frozen=True)
class ClientCurve:
    server_public: bytes                          # z85
    public: bytes                                 # z85
    secret: bytes = field(repr=False)             # z85

    def apply(self, sock: zmq.Socket) -> zmq.Socket:
        """Make sock a CURVE client of the server (call before connect)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public
        return sock


def _is_z85_key(value) -> bool:
    if isinstance(value, str):
        value = value.encode("ascii", "replace")
    if not isinstance(value, bytes) or len(value) != 40:
        return False
    try:
        return len(z85.decode(value)) == 32
    except (ValueError, KeyError, TypeError):
        return False


def _from_file(path, setting: str):
    path = os.fsdecode(path)
    if not os.path.isfile(path):
        raise CurveKeyError(f"{setting}: missing key file: {path}")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, IndexError) as exc:
        raise CurveKeyError(f"{setting}: unreadable or malformed key file ({type(exc).__name__}): {path}") from None
    return public, secret


def server_public_key(value, setting: str = "curve_server_key") -> bytes:
    """The z85 public key of a fan-out: z85 text, or a NAME.key / NAME.key_secret path."""
    if _is_z85_key(value):
        return value.encode() if isinstance(value, str) else value
    public, _ = _from_file(value, setting)
    if not public:
        raise CurveKeyError(f"{setting}: no public-key in the key file: {os.fsdecode(value)}")
    return public


def client_keypair(value, setting: str = "curve_client_key") -> tuple[bytes, bytes]:
    """(public, secret) z85: a (public, secret) pair, a secret key's z85 text, or a NAME.key_secret path."""
    if isinstance(value, tuple):
        public, secret = value
        return (public.encode() if isinstance(public, str) else public,
                secret.encode() if isinstance(secret, str) else secret)
    if _is_z85_key(value):
        secret = value.encode() if isinstance(value, str) else value
        return zmq.curve_public(secret), secret
    public, secret = _from_file(value, setting)
    if not secret:
        raise CurveKeyError(f"{setting}: not a secret key file (the .key_secret file is needed): "
                            f"{os.fsdecode(value)}")
    return public, secret


def resolve(server_key=None, client_key=None, environ=None) -> ClientCurve | None:
    """The CURVE configuration of a client, or None for a plain connection."""
    server_setting = "curve_server_key"
    client_setting = "curve_client_key"
    if server_key is None or server_key == "" or server_key == b"":
        server_key = settings.get("ZWATCH_CURVE_SERVER_KEY", environ)
        server_setting = "ZWATCH_CURVE_SERVER_KEY"
    if client_key is None or client_key == "" or client_key == b"":
        client_key = settings.get("ZWATCH_CURVE_CLIENT_KEY", environ)
        client_setting = "ZWATCH_CURVE_CLIENT_KEY"
    if not server_key:
        if client_key:
            raise CurveKeyError(f"{client_setting} is set but no server key: set ZWATCH_CURVE_SERVER_KEY "
                                f"(or curve_server_key) to the fan-outs' fanout.key")
        return None
    server_public = server_public_key(server_key, server_setting)
    if client_key:
        public, secret = client_keypair(client_key, client_setting)
    else:
        public, secret = zmq.curve_keypair()
    return ClientCurve(server_public, public, secret)
