"""``zwatch keygen``: CURVE keypairs in the files pyzmq's ``zmq.auth.create_certificates`` writes.

    zwatch keygen DIR NAME                           DIR/NAME.key (public), DIR/NAME.key_secret (0600)
    zwatch keygen --cluster DIR [--client NAME ...]  the layout ZWATCH_CURVE_DIR expects (below)
    zwatch keygen --cluster DIR --client bob --clients-only    add a client to an existing layout

The cluster layout (actors/security.py reads it)::

    DIR/writer.key   DIR/writer.key_secret        the writer's keypair
    DIR/syncer.key   DIR/syncer.key_secret        the syncer's keypair
    DIR/fanout.key   DIR/fanout.key_secret        the fan-outs' keypair (all fan-outs share it)
    DIR/internal/fanout.key                       admitted by the writer and the syncer
    DIR/clients/NAME.key                          a client's public key (user NAME when
                                                  ZWATCH_CURVE_CLIENTS=known)
    DIR/client-NAME/NAME.key_secret, NAME.key, fanout.key
                                                  what to hand to client NAME: its keypair and the
                                                  fan-outs' public key (ZWATCH_CURVE_CLIENT_KEY,
                                                  ZWATCH_CURVE_SERVER_KEY); the actors never read it

Secret files are created 0600 (umask 077 while writing), directories holding secrets 0700.  An
existing secret is never replaced unless --force.  Only public keys are printed.
"""
from __future__ import annotations

import os
import shutil
import sys

SERVER_KEYS = ("writer", "syncer", "fanout")


class KeygenError(Exception):
    """One line for `Error: ...`."""


def add_keygen(p):
    p.add_argument("dir", help="directory to write the key files into (created if missing)")
    p.add_argument("name", nargs="?", help="keypair name: writes DIR/NAME.key and DIR/NAME.key_secret")
    p.add_argument("--cluster", action="store_true",
                   help="write the whole layout ZWATCH_CURVE_DIR expects (writer, syncer, fanout, internal/, clients/)")
    p.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="with --cluster: also a client keypair NAME (clients/NAME.key, client-NAME/); repeatable")
    p.add_argument("--clients-only", action="store_true",
                   help="with --cluster: write only the --client keypairs into an existing layout")
    p.add_argument("--force", action="store_true", help="replace existing secret key files")


def _check_name(name: str) -> str:
    if not name or name.startswith(".") or os.sep in name or (os.altsep and os.altsep in name) or "\x00" in name:
        raise KeygenError(f"invalid key name {name!r} (a file name: no '/', not starting with '.')")
    return name


def _mkdir(path: str, mode: int):
    os.makedirs(path, mode=mode, exist_ok=True)
    os.chmod(path, mode)


def create_keypair(directory: str, name: str) -> tuple[str, str, bytes]:
    """(public path, secret path, public z85) of a new keypair; the secret file is 0600 from birth."""
    import zmq.auth
    old = os.umask(0o077)
    try:
        public_path, secret_path = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old)
    os.chmod(secret_path, 0o600)
    os.chmod(public_path, 0o644)
    public, _ = zmq.auth.load_certificate(public_path)
    return public_path, secret_path, public


def _copy_public(src: str, dst: str):
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)


def _refuse_existing(paths: list[str], force: bool):
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not force:
        raise KeygenError(f"{existing[0]} already exists ({len(existing)} key file(s) would be replaced): "
                          f"pass --force to replace them")


def keygen_pair(directory: str, name: str, force: bool = False) -> list[tuple[str, bytes]]:
    _check_name(name)
    _refuse_existing([os.path.join(directory, name + ".key_secret"), os.path.join(directory, name + ".key")], force)
    os.makedirs(directory, exist_ok=True)
    public_path, _secret, public = create_keypair(directory, name)
    return [(public_path, public)]


def keygen_cluster(directory: str, clients: list[str], force: bool = False,
                   clients_only: bool = False) -> list[tuple[str, bytes]]:
    """Write the layout (see the module doc); returns [(public key path, z85)] of what was written."""
    for name in clients:
        _check_name(name)
    if len(set(clients)) != len(clients):
        raise KeygenError("a --client name is given twice")
    fanout_public = os.path.join(directory, "fanout.key")
    if clients_only and not os.path.isfile(fanout_public):
        raise KeygenError(f"{fanout_public} is missing: run `zwatch keygen --cluster {directory}` first")
    targets = [] if clients_only else [os.path.join(directory, n + ext) for n in SERVER_KEYS
                                       for ext in (".key_secret", ".key")]
    for name in clients:
        targets += [os.path.join(directory, f"client-{name}", name + ".key_secret"),
                    os.path.join(directory, "clients", name + ".key")]
    _refuse_existing(targets, force)
    if not os.path.isdir(directory):
        _mkdir(directory, 0o755)
    written = []
    if not clients_only:
        for name in SERVER_KEYS:
            public_path, _secret, public = create_keypair(directory, name)
            written.append((public_path, public))
        _mkdir(os.path.join(directory, "internal"), 0o755)
        _copy_public(fanout_public, os.path.join(directory, "internal", "fanout.key"))
    _mkdir(os.path.join(directory, "clients"), 0o755)
    for name in clients:
        own = os.path.join(directory, f"client-{name}")
        _mkdir(own, 0o700)
        public_path, _secret, public = create_keypair(own, name)
        _copy_public(public_path, os.path.join(directory, "clients", name + ".key"))
        _copy_public(fanout_public, os.path.join(own, "fanout.key"))
        written.append((public_path, public))
    return written


def cmd_keygen(a) -> int:
    if a.cluster and a.name:
        raise KeygenError("--cluster takes only DIR (client keypairs: --client NAME)")
    if not a.cluster and (a.client or a.clients_only):
        raise KeygenError("--client and --clients-only go with --cluster")
    if not a.cluster and not a.name:
        raise KeygenError("give DIR NAME, or --cluster DIR")
    try:
        if a.cluster:
            written = keygen_cluster(a.dir, a.client, force=a.force, clients_only=a.clients_only)
        else:
            written = keygen_pair(a.dir, a.name, force=a.force)
    except OSError as exc:
        raise KeygenError(f"cannot write keys: {exc.strerror}: {exc.filename}") from None
    for path, public in written:
        print(f"{path} {public.decode()}")
    if a.cluster and not a.clients_only:
        print(f"actors: ZWATCH_CURVE_DIR={os.path.abspath(a.dir)}", file=sys.stderr)
    for name in a.client:
        own = os.path.abspath(os.path.join(a.dir, f"client-{name}"))
        print(f"client {name}: ZWATCH_CURVE_SERVER_KEY={own}/fanout.key "
              f"ZWATCH_CURVE_CLIENT_KEY={own}/{name}.key_secret", file=sys.stderr)
    return 0
