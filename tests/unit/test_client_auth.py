"""The client's side of authentication, without sockets: the credentials and where they go (the hello
only; never a repr, an exception text or a log line), a refused login ends every request and watch
with Unauthenticated instead of cycling the endpoints, watches canceled for permission end with
PermissionDenied and are not resumed, the Auth API's request bodies, and the CLI's etcdctl rules."""
from __future__ import annotations

import io
import logging
import queue
import threading
from collections import deque

import pytest
import zmq

import zwatch
from zwatch import errors, messages
from zwatch.cli import authcmd
from zwatch.cli.format import error_text
from zwatch.client import Credentials, Header, Phase, Session, Watch, WatchRouter
from zwatch.client.auth import AuthMixin, perm_range, prefix_end
from zwatch.client.core import ClientBase, _Pending
from zwatch.client.types import Permission, RoleGetResponse

SECRET = "s3cr3t-Pa55"


class FakeSocket:
    """What the I/O thread reads: the frames given, then zmq.Again."""

    def __init__(self, frames):
        self.frames = deque(frames)
        self.sent = []

    def recv(self, flags=0):
        if not self.frames:
            raise zmq.Again()
        return self.frames.popleft()

    def send(self, frame, flags=0):
        self.sent.append(frame)


class FakeIO(AuthMixin, ClientBase):
    """SessionIO's tables and the Auth API, no thread, no socket: _call records the request."""

    def __init__(self, endpoints=("tcp://a",), user=None, password=None, reply=None):
        self.name = "unit"
        self.credentials = Credentials.resolve(user, password, environ={})
        self._lock = threading.Lock()
        self._pending = {}
        self._outq = deque()
        self._watches = {}
        self._resume_reqs = {}
        self._resume_pending = False
        self._router = WatchRouter(self._watches, self._lock, self.name)
        self._session = Session(list(endpoints), 1.0)
        self._connected = threading.Event()
        self.session_info = {}
        self.login_error = None
        self.calls = []
        self.reply = reply if reply is not None else {"header": {"revision": 7}}

    def _call(self, op, body, timeout=None):
        self.calls.append((op, body))
        return self.reply

    def watch_handle(self, watch_id=1, last_revision=5):
        w = Watch(self, watch_id, {"key": b"k", "watch_id": watch_id})
        w.last_revision = last_revision
        w._live = True
        self._watches[watch_id] = w
        return w

    def pending(self, op="range", req_id=100):
        p = _Pending(op, b"", 1e18, req_id)
        self._pending[req_id] = p
        return p


def hello_body(io_: FakeIO) -> dict:
    op, _, body = messages.decode_request(io_._hello_frame(1))
    assert op == "hello"
    return body


def refuse_hello(io_: FakeIO, message="etcdserver: authentication failed, invalid user ID or password"):
    s = io_._session
    s.open(0.0, hello_id=1)
    frame = messages.encode_error(1, errors.Unauthenticated(message))
    io_._receive(FakeSocket([frame]), s)


# ---------------------------------------------------------------- credentials
def test_credentials_come_from_the_arguments_then_the_environment():
    assert Credentials.resolve(environ={}) is None
    assert Credentials.resolve("", environ={"ZWATCH_USER": "env"}) is None      # "" = anonymous, as asked
    c = Credentials.resolve("alice:pw:with:colons", environ={})
    assert (c.user, c.hello_fields()) == ("alice", {"user": "alice", "password": "pw:with:colons"})
    c = Credentials.resolve(environ={"ZWATCH_USER": "bob:x"})
    assert c.hello_fields() == {"user": "bob", "password": "x"}
    c = Credentials.resolve(environ={"ZWATCH_USER": "bob", "ZWATCH_PASSWORD": "y"})
    assert c.hello_fields() == {"user": "bob", "password": "y"}
    # A password given apart: the name is taken whole (etcdctl's --user with --password).
    assert Credentials.resolve("a:b", "c", environ={}).hello_fields() == {"user": "a:b", "password": "c"}
    assert Credentials.resolve("carol", environ={}).hello_fields() == {"user": "carol"}    # CURVE-mapped login
    with pytest.raises(ValueError, match="empty user name"):
        Credentials.resolve(":pw", environ={})


def test_the_hello_carries_the_credentials_and_only_when_there_are_some():
    assert set(hello_body(FakeIO())) == {"version", "client"}
    body = hello_body(FakeIO(user="alice", password=SECRET))
    assert (body["user"], body["password"]) == ("alice", SECRET)


def test_the_password_is_in_no_repr_str_or_pickle():
    c = Credentials("alice", SECRET)
    for text in (repr(c), str(c), f"{c}", repr([c]), repr(FakeIO(user="alice", password=SECRET).credentials)):
        assert SECRET not in text and "alice" in text
    import pickle
    with pytest.raises(TypeError):
        pickle.dumps(c)


# ---------------------------------------------------------------- a refused login
def test_a_refused_login_ends_every_request_and_watch_with_unauthenticated(caplog):
    caplog.set_level(logging.DEBUG)
    io_ = FakeIO(user="alice", password=SECRET)
    p = io_.pending()
    w = io_.watch_handle()
    refuse_hello(io_)
    assert io_._session.phase is Phase.REFUSED
    assert isinstance(io_.login_error, zwatch.Unauthenticated)
    assert p.event.is_set() and isinstance(p.error, zwatch.Unauthenticated)
    assert "invalid user ID or password" in str(p.error) and SECRET not in str(p.error) + repr(p.error)
    resp = w.get(timeout=1)
    assert resp.canceled and resp.cancel_code == errors.UNAUTHENTICATED
    with pytest.raises(zwatch.Unauthenticated):
        w.get(timeout=1)
    with pytest.raises(zwatch.Unauthenticated):          # the iterator too, and again
        next(iter(w))
    assert not io_._watches and not io_._pending
    assert SECRET not in caplog.text


def test_credentials_refused_by_every_endpoint_in_turn_is_final():
    """Not an endless cycle: one round of refusals (a fan-out may not know a new user yet)."""
    s = Session(["tcp://a", "tcp://b", "tcp://c"], 1.0)
    for ep in ("tcp://a", "tcp://b"):
        assert s.open(0.0, hello_id=1) == ep
        s.hello_answered(False, credentials_refused=True)
        assert s.phase is Phase.CONNECT
    s.open(0.0, hello_id=2)
    s.hello_answered(False, credentials_refused=True)
    assert s.refused and s.phase is Phase.REFUSED
    assert not s.went_silent(1e9) and s.lost() is False and not s.hello_due(1e9)
    s.no_session()
    assert s.refused


def test_an_accepted_login_resets_the_count_of_refusals():
    s = Session(["tcp://a", "tcp://b"], 1.0)
    s.open(0.0, hello_id=1)
    s.hello_answered(False, credentials_refused=True)
    s.open(0.0, hello_id=2)
    s.hello_answered(True)
    s.lost()
    s.open(0.0, hello_id=3)
    s.hello_answered(False, credentials_refused=True)
    assert s.phase is Phase.CONNECT                      # one refusal since the last login, of two endpoints


def test_other_hello_refusals_still_move_on_forever():
    io_ = FakeIO(endpoints=("tcp://a",))
    for i in range(5):
        s = io_._session
        s.open(0.0, hello_id=i)
        io_._receive(FakeSocket([messages.encode_error(i, errors.FailedPrecondition("protocol version"))]), s)
        assert s.phase is Phase.CONNECT and io_.login_error is None


def test_requests_after_a_refused_login_fail_at_once():
    from zwatch.client.core import Client
    io_ = FakeIO(user="alice", password=SECRET)
    refuse_hello(io_)
    with pytest.raises(zwatch.Unauthenticated) as info:
        Client._call_once(io_, "range", {"key": b"k"}, 1e18)
    assert info.value is not io_.login_error            # a fresh exception each time (no shared traceback)


# ---------------------------------------------------------------- watches canceled for permission
@pytest.mark.parametrize("code, klass", [(errors.PERMISSION_DENIED, zwatch.PermissionDenied),
                                         (errors.UNAUTHENTICATED, zwatch.Unauthenticated)])
def test_a_watch_canceled_for_permission_ends_with_that_error_and_is_not_resumed(code, klass):
    io_ = FakeIO(user="alice", password="pw")
    w = io_.watch_handle(last_revision=5)
    io_._router.on_watch_responses([messages.control_response(
        1, 9, canceled=True, cancel_reason="etcdserver: permission denied", cancel_code=code)])
    resp = w.get(timeout=1)
    assert resp.canceled and resp.cancel_code == code and resp.header.revision == 9
    with pytest.raises(klass, match="permission denied"):
        for _ in w:
            pass
    assert w.cancel_code == code and 1 not in io_._watches     # gone: a failover does not resume it
    io_._lost_connection()
    sock = FakeSocket([])
    io_._resume_watches(sock)
    assert sock.sent == []


def test_a_watch_canceled_otherwise_still_ends_quietly():
    io_ = FakeIO()
    w = io_.watch_handle()
    io_._router.on_watch_responses([messages.control_response(1, 9, canceled=True, cancel_reason="compacted",
                                                              compact_revision=4)])
    assert w.get(timeout=1).compact_revision == 4
    assert list(w) == [] and w.error is None


def test_a_resume_refused_for_permission_ends_the_watch_with_permission_denied():
    io_ = FakeIO(user="alice", password="pw")
    w = io_.watch_handle(last_revision=5)
    io_._resumed(w, "err", {"code": errors.PERMISSION_DENIED, "message": "etcdserver: permission denied"})
    resp = w.get(timeout=1)
    assert resp.canceled and resp.cancel_code == errors.PERMISSION_DENIED and resp.header.revision == 5
    with pytest.raises(zwatch.PermissionDenied):
        w.get(timeout=1)


def test_a_shared_queue_gets_the_cancel_code():
    io_ = FakeIO()
    q = queue.SimpleQueue()
    w = Watch(io_, 3, {"key": b"k", "watch_id": 3}, q)
    io_._watches[3] = w
    io_._router.on_watch_responses([messages.control_response(3, 9, canceled=True, cancel_reason="x",
                                                              cancel_code=errors.PERMISSION_DENIED)])
    resp = q.get(timeout=1)
    assert resp.watch_ids == [3] and resp.cancel_code == errors.PERMISSION_DENIED and q.empty()


# ---------------------------------------------------------------- the Auth API's bodies
def test_auth_api_request_bodies_use_etcds_field_names():
    io_ = FakeIO()
    io_.auth_enable(); io_.auth_disable(); io_.auth_status()
    io_.user_add("alice", SECRET); io_.user_add("carol", no_password=True); io_.user_get("alice"); io_.user_list()
    io_.user_delete("alice"); io_.user_change_password("alice", "n"); io_.user_grant_role("alice", "r")
    io_.user_revoke_role("alice", "r"); io_.role_add("r"); io_.role_get("r"); io_.role_list(); io_.role_delete("r")
    io_.role_grant_permission("r", "readwrite", "/p/", prefix=True)
    io_.role_grant_permission("r", "READ", "/a", "/b")
    io_.role_revoke_permission("r", "/z", from_key=True)
    io_.role_revoke_permission("r", "", prefix=True)
    assert io_.calls == [
        ("auth_enable", {}), ("auth_disable", {}), ("auth_status", {}),
        ("user_add", {"name": "alice", "password": SECRET, "options": {"no_password": False}}),
        ("user_add", {"name": "carol", "options": {"no_password": True}}),
        ("user_get", {"name": "alice"}), ("user_list", {}), ("user_delete", {"name": "alice"}),
        ("user_change_password", {"name": "alice", "password": "n"}),
        ("user_grant_role", {"user": "alice", "role": "r"}), ("user_revoke_role", {"name": "alice", "role": "r"}),
        ("role_add", {"name": "r"}), ("role_get", {"role": "r"}), ("role_list", {}), ("role_delete", {"role": "r"}),
        ("role_grant_permission", {"name": "r", "perm": {"permType": "READWRITE", "key": b"/p/", "range_end": b"/p0"}}),
        ("role_grant_permission", {"name": "r", "perm": {"permType": "READ", "key": b"/a", "range_end": b"/b"}}),
        ("role_revoke_permission", {"role": "r", "key": b"/z", "range_end": b"\x00"}),
        ("role_revoke_permission", {"role": "r", "key": b"\x00", "range_end": b"\x00"}),
    ]
    # Every one goes through the protocol's own normalizers unchanged (the fan-out's first check).
    from zwatch import requests
    for op, body in io_.calls:
        assert requests.normalize(op, body) is not None


def test_auth_api_responses():
    io_ = FakeIO(reply={"header": {"revision": 3}, "enabled": True, "authRevision": 4, "roles": ["a", "b"],
                        "users": ["u"], "perm": [{"permType": "WRITE", "key": b"k", "range_end": b"l"}]})
    s = io_.auth_status()
    assert (s.header.revision, s.enabled, s.auth_revision) == (3, True, 4)
    assert io_.user_get("u").roles == ["a", "b"] and io_.user_list().users == ["u"]
    assert io_.role_get("a").perms == [Permission("WRITE", b"k", b"l")] and io_.role_list().roles == ["a", "b"]
    assert io_.role_add("x") == Header(3)
    with pytest.raises(ValueError, match="invalid permission type: bad"):
        io_.role_grant_permission("r", "bad", "k")


def test_permission_ranges_follow_etcdctl():
    assert perm_range("k") == (b"k", b"")
    assert perm_range("k", "m") == (b"k", b"m")
    assert perm_range("k", prefix=True) == (b"k", b"l")
    assert perm_range("k", from_key=True) == (b"k", b"\x00")
    assert perm_range("", prefix=True) == perm_range("", from_key=True) == (b"\x00", b"\x00")
    assert perm_range("") == (b"\x00", b"")
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"\xff\xff") == b"\x00"
    for kw, message in (({"prefix": True, "from_key": True}, "mutually exclusive"),
                        ({"range_end": "z", "prefix": True}, "with --prefix flag"),
                        ({"range_end": "z", "from_key": True}, "with --from-key flag"),
                        ({"range_end": "z", "prefix": True, "from_key": True}, "with --prefix flag")):
        with pytest.raises(ValueError, match=message):
            perm_range("k", **kw)


def test_the_error_classes_are_exported():
    for name in ("Unauthenticated", "PermissionDenied", "UserExists", "UserNotFound", "RoleExists", "RoleNotFound",
                 "RoleNotGranted", "PermissionNotGranted"):
        assert getattr(zwatch, name) is getattr(errors, name) and name in zwatch.__all__
    err = errors.ZwatchError.from_wire({"code": "PERMISSION_DENIED", "message": "etcdserver: permission denied"})
    assert isinstance(err, zwatch.PermissionDenied)


# ---------------------------------------------------------------- the CLI's rules
def test_cli_login_and_prompt(monkeypatch, capsys):
    assert authcmd.login(None, None) == (None, None) and authcmd.login("", "x") == (None, None)
    assert authcmd.login("root:pw", None) == ("root", "pw")
    assert authcmd.login("a:b", "c") == ("a:b", "c")
    monkeypatch.setattr("sys.stdin", io.StringIO("typed\n"))
    assert authcmd.login("root", None) == ("root", "typed")
    assert capsys.readouterr().out == "Password: \n"       # etcdctl's prompt; the answer is not echoed


def test_cli_error_text_is_etcds_for_auth_errors():
    assert error_text(errors.PermissionDenied("etcdserver: permission denied")) == "etcdserver: permission denied"
    assert error_text(errors.FailedPrecondition("etcdserver: root user does not exist")) == \
        "etcdserver: root user does not exist"
    assert error_text(errors.InvalidArgument("bad")) == "INVALID_ARGUMENT: bad"


def test_cli_role_get_prints_what_etcdctl_prints(capsysbinary):
    class A:
        write_out = "simple"
    perms = [Permission("READ", b"\x00", b"\x00"), Permission("READ", b"/a"), Permission("READ", b"/p/", b"/p0"),
             Permission("WRITE", b"/r", b"/s"), Permission("READWRITE", b"/z", b"\x00")]
    authcmd.print_role(A, "reader", RoleGetResponse(Header(1), perms))
    assert capsysbinary.readouterr().out == (b"Role reader\nKV Read:\n\t[\x00, <open ended>\n\t/a\n"
                                             b"\t[/p/, /p0) (prefix /p/)\n\t[/z, <open ended>\nKV Write:\n"
                                             b"\t[/r, /s) (prefix /r)\n\t[/z, <open ended>\n")
    A.write_out = "json"
    authcmd.print_role(A, "reader", RoleGetResponse(Header(1), perms))
    assert capsysbinary.readouterr().out == (
        b'{"header":{"revision":1},"perm":[{"key":"AA==","range_end":"AA=="},{"key":"L2E="},'
        b'{"key":"L3Av","range_end":"L3Aw"},{"permType":1,"key":"L3I=","range_end":"L3M="},'
        b'{"permType":2,"key":"L3o=","range_end":"AA=="}]}\n')


def test_a_login_back_off_sends_the_hello_again_later_to_the_same_fan_out():
    """The fan-out's "too many failed authentication attempts; retry in X s" (retry_after_s) is no
    verdict on the credentials: the same hello goes again after X, without counting a refusal."""
    io_ = FakeIO(endpoints=("tcp://a", "tcp://b"), user="alice", password="pw")
    s = io_._session
    s.open(0.0, hello_id=1)
    s.hello_sent(0.0)
    backoff = messages.encode_error(1, errors.Unauthenticated(
        "etcdserver: too many failed authentication attempts; retry in 2.5 s", retry_after_s=2.5))
    import time as time_
    now = time_.monotonic()
    io_._receive(FakeSocket([backoff]), s)
    assert s.phase is Phase.HELLO and s.endpoint == "tcp://a" and s.credentials_refused == 0
    assert not s.hello_due(now + 2.4) and s.hello_due(now + 2.6)
    assert not s.went_silent(now + 2.5 + 2.9)                  # silence counts from the retry
    assert io_.login_error is None
    io_._receive(FakeSocket([messages.encode_error(1, errors.Unauthenticated("etcdserver: authentication failed"))]), s)
    assert s.phase is Phase.CONNECT and s.credentials_refused == 1
