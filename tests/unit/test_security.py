"""actors/security.py and protocol/client/curve.py without sockets: which endpoints warn, which
key files load, the one-line errors, the user a client key maps to, no secret in any message."""
from __future__ import annotations

import os

import pytest
import zmq
import zmq.auth

from zwatch.actors import security
from zwatch.cli.keygen import keygen_cluster
from zwatch.client import curve
from zwatch.settings import SettingError


@pytest.fixture
def keys(tmp_path) -> str:
    d = str(tmp_path / "curve")
    keygen_cluster(d, ["alice"])
    return d


@pytest.mark.parametrize("endpoint, loopback", [
    ("tcp://127.0.0.1:2379", True), ("tcp://127.3.4.5:1", True), ("tcp://localhost:2379", True),
    ("tcp://[::1]:2379", True), ("ipc:///run/zwatch.sock", True), ("inproc://x", True),
    ("tcp://0.0.0.0:2379", False), ("tcp://*:2379", False), ("tcp://10.0.0.7:2379", False),
    ("tcp://[::]:2379", False), ("tcp://eth0:2379", False), ("tcp://zwatch.example:2379", False),
    ("tcp://192.168.1.2:2379", False),
])
def test_which_endpoints_are_loopback(endpoint, loopback):
    assert security.is_loopback_endpoint(endpoint) is loopback


def test_off_when_the_directory_is_unset():
    sec = security.load("writer", {})
    assert not sec.on and not sec.maps_users


def test_each_actor_loads_only_what_it_needs(keys):
    writer = security.load("writer", {"ZWATCH_CURVE_DIR": keys})
    fanout_public = zmq.auth.load_certificate(os.path.join(keys, "fanout.key"))[0]
    assert writer.internal == {fanout_public: "fanout"} and writer.peers == {} and writer.clients == {}
    fanout = security.load("fanout", {"ZWATCH_CURVE_DIR": keys})
    assert set(fanout.peers) == {"writer", "syncer"} and fanout.clients == {} and not fanout.maps_users
    known = security.load("fanout", {"ZWATCH_CURVE_DIR": keys, "ZWATCH_CURVE_CLIENTS": "known"})
    alice = zmq.auth.load_certificate(os.path.join(keys, "clients", "alice.key"))[0]
    assert known.clients == {alice: "alice"} and known.maps_users


@pytest.mark.parametrize("actor, remove, message", [
    ("writer", "writer.key_secret", "ZWATCH_CURVE_DIR: missing key file: {d}/writer.key_secret"),
    ("syncer", "internal", "ZWATCH_CURVE_DIR: missing key directory: {d}/internal"),
    ("fanout", "syncer.key", "ZWATCH_CURVE_DIR: missing key file: {d}/syncer.key"),
    ("fanout", "clients", "ZWATCH_CURVE_DIR: missing key directory: {d}/clients"),
])
def test_a_missing_key_is_one_line_naming_the_setting_and_path(keys, actor, remove, message):
    import shutil
    path = os.path.join(keys, remove)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with pytest.raises(SettingError) as err:
        security.check(actor, {"ZWATCH_CURVE_DIR": keys, "ZWATCH_CURVE_CLIENTS": "known"})
    assert str(err.value) == message.format(d=keys)


def test_a_public_key_where_the_secret_is_needed_and_a_malformed_file(keys):
    os.replace(os.path.join(keys, "writer.key"), os.path.join(keys, "writer.key_secret"))
    with pytest.raises(SettingError, match=r"^ZWATCH_CURVE_DIR: not a secret key file .*writer\.key_secret$"):
        security.check("writer", {"ZWATCH_CURVE_DIR": keys})
    with open(os.path.join(keys, "internal", "junk.key"), "w") as f:
        f.write("public-key = \"short\"\n")
    with pytest.raises(SettingError, match=r"malformed key file.*junk\.key$"):
        security.public_keys(os.path.join(keys, "internal"))


def test_no_secret_in_a_repr_or_an_error(keys):
    sec = security.load("fanout", {"ZWATCH_CURVE_DIR": keys})
    assert sec.secret and sec.secret.decode() not in repr(sec)
    c = curve.resolve(os.path.join(keys, "fanout.key"), os.path.join(keys, "client-alice", "alice.key_secret"))
    assert c.secret.decode() not in repr(c)


def test_the_user_id_of_a_client_key():
    public, _ = zmq.curve_keypair()
    auth = security.UserMappingAuthenticator(zmq.Context.instance(), {public: "alice"})   # not started
    other, _ = zmq.curve_keypair()
    assert auth.curve_user_id(zmq.utils.z85.decode(public)) == "alice"
    assert auth.curve_user_id(zmq.utils.z85.decode(other)) == other.decode()


def test_client_keys_from_files_z85_text_or_the_environment(keys, tmp_path):
    server = os.path.join(keys, "fanout.key")
    server_public = zmq.auth.load_certificate(server)[0]
    alice_public, alice_secret = zmq.auth.load_certificate(os.path.join(keys, "client-alice", "alice.key_secret"))
    assert curve.resolve(environ={}) is None                          # plain
    fresh = curve.resolve(server, environ={})
    assert fresh.server_public == server_public and len(fresh.public) == 40 and fresh.public != alice_public
    by_file = curve.resolve(server, os.path.join(keys, "client-alice", "alice.key_secret"), environ={})
    by_text = curve.resolve(server_public, alice_secret.decode(), environ={})
    by_env = curve.resolve(environ={"ZWATCH_CURVE_SERVER_KEY": server,
                                    "ZWATCH_CURVE_CLIENT_KEY": os.path.join(keys, "client-alice", "alice.key_secret")})
    assert by_file == by_text == by_env == curve.ClientCurve(server_public, alice_public, alice_secret)


@pytest.mark.parametrize("server, client, message", [
    ("{d}/nope.key", None, "curve_server_key: missing key file: {d}/nope.key"),
    ("{d}/fanout.key", "{d}/client-alice/alice.key", "curve_client_key: not a secret key file"),
    (None, "{d}/client-alice/alice.key_secret", "curve_client_key is set but no server key"),
])
def test_client_key_errors_are_one_line(keys, server, client, message):
    with pytest.raises(curve.CurveKeyError) as err:
        curve.resolve(server and server.format(d=keys), client and client.format(d=keys), environ={})
    text = str(err.value)
    assert text.startswith(message.format(d=keys)) and "\n" not in text
