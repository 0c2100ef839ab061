"""CURVE + ZAP on the actors' sockets (issue #11): which keys an actor loads, who may connect.

Everything cryptographic is ZeroMQ's: CURVE encrypts and authenticates each connection, and
pyzmq's ``zmq.auth.ThreadAuthenticator`` answers the ZAP requests of the actor's context (one per
actor process).  The only code of ours in the handshake is ``curve_user_id``: which user name a
client's public key stands for.

``ZWATCH_CURVE_DIR`` (empty: off) is a directory written by ``zwatch keygen --cluster DIR``::

    writer.key  writer.key_secret      the writer's keypair (its ROUTER and PUB)
    syncer.key  syncer.key_secret      the syncer's keypair (its ROUTER)
    fanout.key  fanout.key_secret      the fan-outs' keypair (client ROUTER, and as a client of both)
    internal/*.key                     public keys admitted by the writer and the syncer (ZAP domain
                                       "internal"): fanout.key, plus any admin tool's key
    clients/NAME.key                   client public keys; with ZWATCH_CURVE_CLIENTS=known the only
                                       ones a fan-out admits (ZAP domain "clients"), key -> user NAME

Each actor loads only what it needs (``NEEDS``).  A missing or unreadable file raises
``CurveSettingError`` (a ``SettingError``: one line naming the variable and the path) before the
actor binds anything; ``python -m zwatch.actors`` / ``zwatch writer|syncer|fanout`` call ``check``
before starting.  Secret keys never reach a log line: only public keys (z85) and paths are logged.

The ZAP User-Id a fan-out reads from a client frame (``Frame.get("User-Id")``):
``ZWATCH_CURVE_CLIENTS=known``: the user name the key maps to (``clients/NAME.key`` -> ``NAME``);
``any``: the client's public key in z85 (40 characters, pyzmq's default) — no user, the session
logs in by password.  ``ActorSecurity.maps_users`` says which.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from zwatch import settings
from zwatch.settings import SettingError

INTERNAL = "internal"       # ZAP domain of the writer's ROUTER + PUB and the syncer's ROUTER
CLIENTS = "clients"         # ZAP domain of a fan-out's client ROUTER
ACTORS = ("writer", "syncer", "fanout")
# The key files of the layout, by actor: own keypair, peers' public keys (as a CURVE client).
OWN_KEY = {"writer": "writer", "syncer": "syncer", "fanout": "fanout"}
PEERS = {"writer": (), "syncer": (), "fanout": ("writer", "syncer")}


class CurveSettingError(SettingError):
    """A key file or directory of ZWATCH_CURVE_DIR that cannot be used; one line, names the setting and path."""


def _fail(setting: str, path: str, why: str) -> CurveSettingError:
    return CurveSettingError(f"{setting}: {why}: {path}")


def load_public(path: str, setting: str = "ZWATCH_CURVE_DIR") -> bytes:
    """The z85 public key of a zmq.auth key file (NAME.key or NAME.key_secret)."""
    public, _secret = _load(path, setting)
    if not public:
        raise _fail(setting, path, "no public-key in the key file")
    return public


def load_keypair(path: str, setting: str = "ZWATCH_CURVE_DIR") -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a NAME.key_secret file."""
    public, secret = _load(path, setting)
    if not public or not secret:
        raise _fail(setting, path, "not a secret key file (no secret-key; the .key_secret file is needed)")
    return public, secret


def _load(path: str, setting: str):
    if not os.path.isfile(path):
        raise _fail(setting, path, "missing key file")
    if not os.access(path, os.R_OK):
        raise _fail(setting, path, "key file not readable")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, IndexError) as exc:
        raise _fail(setting, path, f"malformed key file ({type(exc).__name__})") from None
    for key in (public, secret):
        if key is not None and len(key) != 40:
            raise _fail(setting, path, "malformed key file (a key is not 40 z85 characters)")
    return public, secret


def public_keys(directory: str, setting: str = "ZWATCH_CURVE_DIR") -> dict[bytes, str]:
    """z85 public key -> name (the file name without .key) of every NAME.key in directory."""
    if not os.path.isdir(directory):
        raise _fail(setting, directory, "missing key directory")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise _fail(setting, directory, "key directory not readable")
    keys = {}
    for fname in sorted(os.listdir(directory)):
        if fname.endswith(".key"):
            keys[load_public(os.path.join(directory, fname), setting)] = fname[:-len(".key")]
    return keys


def client_user_map(curve_dir: str) -> dict[bytes, str]:
    """z85 public key -> user name, from clients/NAME.key."""
    return public_keys(os.path.join(curve_dir, "clients"))


@dataclass
class ActorSecurity:
    """What one actor loaded from ZWATCH_CURVE_DIR, and its authenticator once started.

    Off (``curve_dir`` None): every method is a no-op except the insecure-bind warning."""
    actor: str
    curve_dir: str | None = None
    public: bytes | None = None                         # own keypair (z85)
    secret: bytes | None = field(default=None, repr=False)
    peers: dict[str, bytes] = field(default_factory=dict)   # "writer"/"syncer" -> their public key
    internal: dict[bytes, str] = field(default_factory=dict)
    clients_mode: str = "any"
    clients: dict[bytes, str] = field(default_factory=dict)
    authenticator: ThreadAuthenticator | None = field(default=None, repr=False)

    @property
    def on(self) -> bool:
        return self.curve_dir is not None

    @property
    def maps_users(self) -> bool:
        """True: a client's ZAP User-Id is a user name (ZWATCH_CURVE_CLIENTS=known)."""
        return self.on and self.actor == "fanout" and self.clients_mode == "known"

    def start(self, ctx: zmq.Context, log=None) -> "ActorSecurity":
        """Start the ZAP authenticator of this actor's context (before any server socket binds)."""
        if not self.on or self.authenticator is not None:
            return self
        auth = UserMappingAuthenticator(ctx, self.clients if self.maps_users else {})
        auth.start()
        if self.actor in ("writer", "syncer"):
            auth.configure_curve_callback(INTERNAL, _KeySet(self.internal))
        elif self.clients_mode == "known":
            auth.configure_curve_callback(CLIENTS, _KeySet(self.clients))
        else:
            auth.configure_curve(CLIENTS, zmq.auth.CURVE_ALLOW_ANY)
        self.authenticator = auth
        if log is not None:
            peers = ({"clients": self.clients_mode, "client_keys": len(self.clients) if self.maps_users else None}
                     if self.actor == "fanout" else {"internal_keys": len(self.internal)})
            log.info("security.curve", curve_dir=os.path.abspath(self.curve_dir), public_key=self.public.decode(),
                     **peers)
        return self

    def server(self, sock: zmq.Socket, domain: str, endpoint: str, log=None) -> zmq.Socket:
        """Make sock (about to bind endpoint) a CURVE server in ZAP domain `domain`; without
        CURVE, warn if the endpoint is reachable from other hosts."""
        if self.on:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_server = True
            sock.zap_domain = domain.encode()
            # Without ZAP_ENFORCE_DOMAIN a handshake is still checked (libzmq >= 4.3 asks ZAP
            # whenever a handler exists); enforcing it also refuses everyone if none answers.
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        elif log is not None and not is_loopback_endpoint(endpoint):
            log.warning("security.insecure_bind", endpoint=endpoint,
                        hint="set ZWATCH_CURVE_DIR (zwatch keygen --cluster DIR): this endpoint is reachable "
                             "from other hosts without encryption or authentication")
        return sock

    def client(self, sock: zmq.Socket, peer: str) -> zmq.Socket:
        """Make sock (about to connect to `peer`: "writer" or "syncer") a CURVE client of it."""
        if self.on:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_serverkey = self.peers[peer]
        return sock

    def stop(self):
        """Stop the authenticator: before ctx.term(), which waits for its sockets."""
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


class _KeySet:
    """pyzmq's credentials provider: admits exactly the keys loaded at start.  (zmq.auth's own
    `configure_curve(domain, directory)` logs and admits nobody when the directory is bad; we
    have already checked it, with a clear error.)"""

    def __init__(self, keys: dict[bytes, str]):
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


class UserMappingAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP authenticator; the only change: a client key listed in clients/ has the User-Id
    of its file name (the user it logs in as), any other admitted key its z85 text."""

    def __init__(self, context: zmq.Context, user_map: dict[bytes, str]):
        super().__init__(context)
        self.user_map = user_map

    def curve_user_id(self, client_public_key: bytes) -> str:
        z85_key = z85.encode(client_public_key)
        return self.user_map.get(z85_key) or z85_key.decode("ascii")


def load(actor: str, environ=None) -> ActorSecurity:
    """What `actor` needs from ZWATCH_CURVE_DIR (off when unset); CurveSettingError if unusable."""
    if actor not in ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    curve_dir = settings.get("ZWATCH_CURVE_DIR", environ)
    clients_mode = settings.get("ZWATCH_CURVE_CLIENTS", environ)
    if not curve_dir:
        return ActorSecurity(actor, clients_mode=clients_mode)
    if not os.path.isdir(curve_dir):
        raise _fail("ZWATCH_CURVE_DIR", curve_dir, "missing key directory (create it with `zwatch keygen --cluster`)")
    public, secret = load_keypair(os.path.join(curve_dir, OWN_KEY[actor] + ".key_secret"))
    sec = ActorSecurity(actor, curve_dir, public, secret, clients_mode=clients_mode)
    for peer in PEERS[actor]:
        sec.peers[peer] = load_public(os.path.join(curve_dir, peer + ".key"))
    if actor in ("writer", "syncer"):
        sec.internal = public_keys(os.path.join(curve_dir, "internal"))
    elif clients_mode == "known":
        sec.clients = public_keys(os.path.join(curve_dir, "clients"))
    return sec


def check(actor: str, environ=None) -> None:
    """Load and forget: a startup check (CurveSettingError, one line) before the actor runs."""
    load(actor, environ)


def for_actor(actor: str, ctx: zmq.Context, log=None) -> ActorSecurity:
    """load + start: what an actor's run() calls right after creating its context."""
    return load(actor).start(ctx, log)


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for endpoints only this host can reach: ipc://, inproc://, tcp on 127.0.0.0/8, ::1 or
    `localhost`.  `*`, 0.0.0.0, ::, another address or a host name: reachable from elsewhere."""
    parts = urlsplit(endpoint)
    if parts.scheme in ("ipc", "inproc"):
        return True
    host = parts.netloc.rsplit(":", 1)[0] if parts.netloc else ""
    host = host.strip("[]")
    if ";" in host:                              # tcp://source;dest form (connect only)
        host = host.split(";")[-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                             # `*`, an interface name, a host name
