"""CURVE + ZAP on every socket (issue #11, transport): real actors, real sockets, keys written by
`zwatch keygen --cluster`.

Who may talk: a client that trusts the fan-outs' key (any client key, or only clients/ keys with
ZWATCH_CURVE_CLIENTS=known); on the internal sockets (writer ROUTER + PUB, syncer ROUTER) only the
keys in internal/.  Everybody else's handshake fails: their requests are never answered, and the
fan-out keeps serving everyone else.  Each refusal test has its control (the same request with the
right key is answered), so that a test that cannot fail would show.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import zmq
import zmq.auth

from support import free_port
from zwatch import Client, messages
from zwatch.actors import security
from zwatch.errors import ZwatchError

SHORT = 1.5          # seconds a refused client waits for an answer that never comes


def _keys(tmp_path, *clients) -> str:
    from zwatch.cli.keygen import keygen_cluster
    d = str(tmp_path / "curve")
    keygen_cluster(d, list(clients) or ["test"])
    return d


def _ask(sock: zmq.Socket, frame: bytes, timeout_ms: int = int(SHORT * 1000)):
    """Send one request; the reply, or None if nothing came back in time (a refused handshake
    may also leave no pipe to queue the request on: that is no answer either)."""
    try:
        sock.send(frame, zmq.NOBLOCK)
    except zmq.Again:
        return None
    if not sock.poll(timeout_ms):
        return None
    return sock.recv_multipart()


def _dealer(endpoint: str, server_public: bytes | None, keypair: tuple[bytes, bytes] | None = None) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if server_public is not None:
        public, secret = keypair or zmq.curve_keypair()
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_public, public, secret
    s.connect(endpoint)
    return s


def test_client_with_the_server_key_puts_gets_and_watches(make_cluster, tmp_path):
    c = make_cluster(env={"ZWATCH_CURVE_DIR": _keys(tmp_path)})
    client = c.client()
    assert client.curve is not None                   # really over CURVE, not a plain fallback
    w = client.watch(b"k/", prefix=True)
    r = client.put(b"k/1", b"secret value")
    assert client.get(b"k/1").kvs[0].value == b"secret value"
    resp = w.get(timeout=5)
    assert [(e.kv.key, e.kv.value) for e in resp.events] == [(b"k/1", b"secret value")]
    assert resp.header.revision == r.header.revision
    # A watch catching up from history goes through the syncer's CURVE connection.
    history = client.watch(b"k/", prefix=True, start_revision=1).get(timeout=5)
    assert [e.kv.key for e in history.events] == [b"k/1"]
    assert c["fanout0"].events("security.curve") and c["writer"].events("security.curve")
    assert not any(a.events("security.insecure_bind") for a in c.actors.values())


def test_client_without_curve_or_with_a_wrong_server_key_is_never_answered(make_cluster, tmp_path):
    c = make_cluster(env={"ZWATCH_CURVE_DIR": _keys(tmp_path)})
    good = c.client()
    plain = Client(c.fanout_eps, timeout=SHORT)
    wrong = Client(c.fanout_eps, timeout=SHORT, curve_server_key=c.public_key("writer"))  # not the fan-out's
    try:
        for refused in (plain, wrong):
            with pytest.raises(ZwatchError) as err:
                refused.put(b"intruder", b"x")
            assert err.value.code == "UNAVAILABLE"
            # ...while the fan-out serves everyone else.
            assert good.put(b"ok", b"1").header.revision > 1
        assert good.get(b"intruder").kvs == []
    finally:
        plain.close()
        wrong.close()


def test_known_clients_only_refuses_unknown_keys(make_cluster, tmp_path):
    keys = _keys(tmp_path, "alice")
    c = make_cluster(env={"ZWATCH_CURVE_DIR": keys, "ZWATCH_CURVE_CLIENTS": "known"})
    alice = c.client(curve_client_key=os.path.join(keys, "client-alice", "alice.key_secret"))
    stranger = Client(c.fanout_eps, timeout=SHORT, curve_server_key=c.fanout_public_key_path)  # fresh keypair
    try:
        assert alice.put(b"a", b"1").header.revision == 2
        with pytest.raises(ZwatchError) as err:
            stranger.get(b"a")
        assert err.value.code == "UNAVAILABLE"
        assert alice.get(b"a").kvs[0].value == b"1"
    finally:
        stranger.close()


def test_a_known_client_key_carries_the_user_id_of_its_file_name(tmp_path):
    """The fan-out's ZAP set-up (security.load("fanout") + start) on a test ROUTER: frames of a
    clients/alice.key connection carry User-Id "alice"; with `any`, the key's z85 text."""
    keys = _keys(tmp_path, "alice")
    alice_public, alice_secret = zmq.auth.load_certificate(os.path.join(keys, "client-alice", "alice.key_secret"))
    for mode, expected in (("known", "alice"), ("any", alice_public.decode())):
        ctx = zmq.Context()
        sec = security.load("fanout", {"ZWATCH_CURVE_DIR": keys, "ZWATCH_CURVE_CLIENTS": mode}).start(ctx)
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        sec.server(router, security.CLIENTS, endpoint)
        router.bind(endpoint)
        dealer = _dealer(endpoint, sec.public, (alice_public, alice_secret))
        try:
            dealer.send(b"hello")
            assert router.poll(5000)
            _routing_id, frame = router.recv_multipart(copy=False)
            assert frame.bytes == b"hello"
            assert frame.get("User-Id") == expected
            assert sec.maps_users is (mode == "known")
        finally:
            dealer.close()
            router.close()
            sec.stop()
            ctx.term()


def test_a_key_not_in_internal_cannot_reach_the_writer_the_pub_or_the_syncer(make_cluster, tmp_path):
    keys = _keys(tmp_path)
    c = make_cluster(env={"ZWATCH_CURVE_DIR": keys})
    fanout_pair = zmq.auth.load_certificate(os.path.join(keys, "fanout.key_secret"))   # listed in internal/
    status = messages.encode_request("status", 1, {})
    for name, endpoint in (("writer", c.writer_ep), ("syncer", c.syncer_ep)):
        stranger = _dealer(endpoint, c.public_key(name))               # right server key, unknown own key
        plain = _dealer(endpoint, None)
        admitted = _dealer(endpoint, c.public_key(name), fanout_pair)  # the control
        try:
            assert _ask(stranger, status) is None, name
            assert _ask(plain, status) is None, name
            assert _ask(admitted, status, 5000) is not None, name
        finally:
            for s in (stranger, plain, admitted):
                s.close()
    # The PUB heartbeats every second: a stranger's SUB hears nothing, the admitted one does.
    subs = []
    for keypair in (None, fanout_pair):
        s = zmq.Context.instance().socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        public, secret = keypair or zmq.curve_keypair()
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = c.public_key("writer"), public, secret
        s.connect(c.pub_ep)
        subs.append(s)
    try:
        assert subs[1].poll(5000), "the admitted subscriber got no publish"
        assert not subs[0].poll(2500), "a key not in internal/ received the publish stream"
    finally:
        for s in subs:
            s.close()


def test_a_missing_key_file_stops_the_actor_with_one_line(tmp_path):
    keys = _keys(tmp_path)
    os.remove(os.path.join(keys, "syncer.key_secret"))
    env = {**os.environ, "ZWATCH_CURVE_DIR": keys, "ZWATCH_DATA_DIR": str(tmp_path / "data")}
    p = subprocess.run([sys.executable, "-m", "zwatch.actors", "syncer"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"zwatch syncer: ZWATCH_CURVE_DIR: missing key file: {keys}/syncer.key_secret"]


def _zwatch(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "zwatch.cli", *args], capture_output=True, text=True, timeout=30,
                          cwd=cwd)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keygen_writes_the_cluster_layout_with_private_secrets(tmp_path):
    d = tmp_path / "keys"
    p = _zwatch("keygen", "--cluster", str(d), "--client", "alice", "--client", "bob")
    assert p.returncode == 0, p.stderr
    for name in ("writer", "syncer", "fanout"):
        public, secret = zmq.auth.load_certificate(str(d / f"{name}.key_secret"))
        assert zmq.auth.load_certificate(str(d / f"{name}.key"))[0] == public and secret
        assert _mode(d / f"{name}.key_secret") == 0o600 and _mode(d / f"{name}.key") == 0o644
    assert sorted(os.listdir(d / "internal")) == ["fanout.key"]
    assert sorted(os.listdir(d / "clients")) == ["alice.key", "bob.key"]
    for name in ("alice", "bob"):
        own = d / f"client-{name}"
        assert _mode(own) == 0o700 and _mode(own / f"{name}.key_secret") == 0o600
        assert sorted(os.listdir(own)) == sorted(["fanout.key", f"{name}.key", f"{name}.key_secret"])
        assert (zmq.auth.load_certificate(str(own / f"{name}.key_secret"))[0]
                == zmq.auth.load_certificate(str(d / "clients" / f"{name}.key"))[0])
    # Every actor finds what it needs there.
    for actor in ("writer", "syncer", "fanout"):
        assert security.load(actor, {"ZWATCH_CURVE_DIR": str(d), "ZWATCH_CURVE_CLIENTS": "known"}).on
    # Only public keys are printed.
    secrets = [zmq.auth.load_certificate(str(f))[1] for f in d.rglob("*.key_secret")]
    assert all(s.decode() not in p.stdout + p.stderr for s in secrets)

    before = (d / "writer.key_secret").read_bytes()
    again = _zwatch("keygen", "--cluster", str(d))
    assert again.returncode == 1 and again.stderr.startswith("Error: ") and "--force" in again.stderr
    assert (d / "writer.key_secret").read_bytes() == before
    added = _zwatch("keygen", "--cluster", str(d), "--client", "carol", "--clients-only")
    assert added.returncode == 0 and (d / "clients" / "carol.key").exists()
    assert (d / "writer.key_secret").read_bytes() == before
    forced = _zwatch("keygen", "--cluster", str(d), "--force")
    assert forced.returncode == 0 and (d / "writer.key_secret").read_bytes() != before


def test_keygen_one_keypair(tmp_path):
    p = _zwatch("keygen", str(tmp_path / "k"), "tool")
    assert p.returncode == 0, p.stderr
    public, secret = zmq.auth.load_certificate(str(tmp_path / "k" / "tool.key_secret"))
    assert p.stdout.split() == [str(tmp_path / "k" / "tool.key"), public.decode()]
    assert _mode(tmp_path / "k" / "tool.key_secret") == 0o600
    assert _zwatch("keygen", str(tmp_path / "k"), "tool").returncode == 1
    assert _zwatch("keygen", str(tmp_path / "k"), "../escape").returncode == 1


@pytest.mark.parametrize("curve", [False, True])
def test_insecure_bind_warning_only_without_curve(make_cluster, tmp_path, curve):
    c = make_cluster(env={"ZWATCH_CURVE_DIR": _keys(tmp_path)} if curve else {}, start=False)
    port = c.fanout_eps[0].rsplit(":", 1)[1]
    c["fanout0"].argv[-1] = f"tcp://0.0.0.0:{port}"       # every interface; clients still use 127.0.0.1
    c.start()
    assert c.client().put(b"k", b"v").header.revision == 2
    warnings = c["fanout0"].events("security.insecure_bind")
    if curve:
        assert warnings == []
    else:
        assert [(w["endpoint"], w["level"]) for w in warnings] == [(f"tcp://0.0.0.0:{port}", "warning")]
    # The loopback endpoints of the writer and syncer never warn.
    assert not c["writer"].events("security.insecure_bind") and not c["syncer"].events("security.insecure_bind")


def test_no_secret_key_in_any_log_line(make_cluster, tmp_path):
    keys = _keys(tmp_path)
    c = make_cluster(env={"ZWATCH_CURVE_DIR": keys, "ZWATCH_LOG_LEVEL": "debug"})
    c.client().put(b"k", b"v")
    secrets = [zmq.auth.load_certificate(os.path.join(keys, f"{n}.key_secret"))[1].decode()
               for n in ("writer", "syncer", "fanout")]
    logs = "".join(line for a in c.actors.values() for line in a.raw)
    assert "security.curve" in logs
    assert not [s for s in secrets if s in logs]


def test_the_secure_deploy_example_runs_from_a_fresh_directory(tmp_path):
    """deploy/secure/run.sh: keys, .env and client.env written, the three actors up under honcho
    with CURVE on; a client configured by client.env works, a plain one gets no answer."""
    pytest.importorskip("honcho")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    work, port = tmp_path / "secure", free_port()
    env = {**os.environ, "PYTHON": sys.executable, "ZWATCH_WRITER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
           "ZWATCH_PUB_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
           "ZWATCH_SYNCER_ENDPOINT": f"tcp://127.0.0.1:{free_port()}"}
    proc = subprocess.Popen([os.path.join(root, "deploy", "secure", "run.sh"), str(work), str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client_env = {}
        deadline = time.monotonic() + 30
        while not (work / "client.env").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for line in (work / "client.env").read_text().splitlines():
            name, value = line.removeprefix("export ").split("=", 1)
            client_env[name] = value
        assert client_env["ZWATCH_ENDPOINTS"] == f"127.0.0.1:{port}"
        c = Client([f"tcp://127.0.0.1:{port}"], timeout=20, curve_server_key=client_env["ZWATCH_CURVE_SERVER_KEY"],
                   curve_client_key=client_env["ZWATCH_CURVE_CLIENT_KEY"])
        plain = Client([f"tcp://127.0.0.1:{port}"], timeout=SHORT)
        try:
            # honcho starts the three together: the fan-out may answer before it reaches the writer.
            deadline = time.monotonic() + 30
            while True:
                try:
                    r = c.put(b"foo", b"bar")
                    break
                except ZwatchError as exc:
                    if exc.code != "UNAVAILABLE" or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert r.header.revision == 2
            assert c.get(b"foo").kvs[0].value == b"bar"
            with pytest.raises(ZwatchError):
                plain.get(b"foo")
        finally:
            c.close()
            plain.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    text = out.decode(errors="replace")
    assert "security.curve" in text and "security.insecure_bind" not in text
    assert (work / "curve" / "client-root" / "root.key_secret").exists()


def test_bench_runs_its_workloads_with_curve():
    """`python -m zwatch.tools.bench --curve`: the same workloads against a CURVE cluster (its
    clients, in their own processes, and its syncer stats query all get through)."""
    import json
    proc = subprocess.run([sys.executable, "-m", "zwatch.tools.bench", "put_seq", "fanout", "catchup", "--curve",
                           "--quick", "--no-progress"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert "--curve" in recs[0]["argv"]
    runs = {r["workload"]: r for r in recs if r.get("system") == "zwatch" and "workload" in r}
    assert set(runs) == {"put_seq", "fanout", "catchup"} and all(r["ok"] for r in runs.values())
    assert runs["fanout"]["figures"]["delivered"] == runs["fanout"]["figures"]["expected"]
    assert all(r["figures"].get("syncer_records_scanned") is not None for r in recs
               if r.get("workload") == "catchup" and r.get("system") == "zwatch")


def test_a_known_client_key_is_its_user_once_auth_is_enabled(make_cluster, tmp_path):
    """ZWATCH_CURVE_CLIENTS=known: the session of clients/root.key is user root without a
    password (the fan-out reads the ZAP User-Id); a session of another known key is that user."""
    keys = _keys(tmp_path, "root", "alice")
    c = make_cluster(env={"ZWATCH_CURVE_DIR": keys, "ZWATCH_CURVE_CLIENTS": "known"})
    root = c.client(curve_client_key=os.path.join(keys, "client-root", "root.key_secret"))
    root.user_add("root", "root-password")
    root.role_add("root")
    root.user_grant_role("root", "root")
    root.user_add("alice", no_password=True)
    root.auth_enable()
    reconnected = c.client(curve_client_key=os.path.join(keys, "client-root", "root.key_secret"))
    assert reconnected.put(b"k", b"v").header.revision == 2            # root, by key alone
    alice = c.client(curve_client_key=os.path.join(keys, "client-alice", "alice.key_secret"))
    with pytest.raises(ZwatchError) as err:
        alice.get(b"k")                                                 # alice has no role
    assert err.value.code == "PERMISSION_DENIED"
