"""The verbs of authentication: ``auth enable|disable|status``, ``user add|delete|get|list|passwd|grant-role|
revoke-role``, ``role add|delete|get|list|grant-permission|revoke-permission``, and the login of the
global ``--user NAME[:PASSWORD]`` / ``--password`` flags, as etcdctl 3.4 runs them
(etcdctl/ctlv3/command/{auth,user,role}_command.go, printer_simple.go, global.go): the same argument
checks, prompts, output, error texts and exit codes.  ``auth status`` is etcdctl 3.5's (3.4 has none).

Passwords are read from the terminal without echo, or from stdin when it is not one (as etcdctl's
prompt does); they go nowhere but the request.
"""
from __future__ import annotations

import getpass
import os
import sys

from ..client import Client, Header, WatchResponse
from ..client.auth import perm_range, prefix_end
from ..errors import FailedPrecondition
from .args import EXIT_BAD_ARGS, CommandError
from .format import _b64, j_header, j_watch, json_line, write_line

# etcd's error when the user root lacks the role root: etcdctl then creates the role and grants it.
ROOT_ROLE_MISSING = "etcdserver: root user does not have root role"
PERM_TYPE_CODES = {"READ": 0, "WRITE": 1, "READWRITE": 2}     # authpb.Permission_Type in JSON
EXIT_INTERRUPTED = 5            # etcdctl's exit code when the server cancels a watch
# gRPC's names of our codes in etcdctl's "rpc error: code = ... desc = ..." (etcd's "user name is
# empty" is an InvalidArgument there).
GRPC_CODES = {"PERMISSION_DENIED": "PermissionDenied", "UNAUTHENTICATED": "Unauthenticated"}
USER_EMPTY = "etcdserver: user name is empty"


# ---------------------------------------------------------------- arguments
def go_bool(s: str) -> bool:
    """Go's strconv.ParseBool, for `--interactive=false`."""
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(s)


def add_auth(p, add_globals_to):
    sub = p.add_subparsers(dest="auth_action", required=True, metavar="ACTION")
    for name, help_ in (("enable", "enable authentication (needs the user root)"),
                        ("disable", "disable authentication"),
                        ("status", "whether authentication is enabled, and the auth revision")):
        q = sub.add_parser(name, help=help_)
        add_globals_to(q)
        q.add_argument("args", nargs="*")


def _interactive_flag(q):
    q.add_argument("--interactive", type=go_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="read the password from the terminal (twice); false: one word from stdin")


def add_user(p, add_globals_to):
    sub = p.add_subparsers(dest="user_action", required=True, metavar="ACTION")

    def action(name, help_):
        q = sub.add_parser(name, help=help_)
        add_globals_to(q)
        q.add_argument("args", nargs="*")
        return q

    q = action("add", "add NAME[:PASSWORD]: a new user")
    _interactive_flag(q)
    q.add_argument("--new-user-password", default="", metavar="PASSWORD", help="the password, from the command line")
    q.add_argument("--no-password", action="store_true", help="a user without password (CURVE key login only)")
    action("delete", "delete NAME")
    action("get", "get NAME: the user's roles").add_argument(
        "--detail", action="store_true", help="show the permissions of the user's roles")
    action("list", "every user")
    _interactive_flag(action("passwd", "passwd NAME: change the password"))
    action("grant-role", "grant-role NAME ROLE")
    action("revoke-role", "revoke-role NAME ROLE")


def add_role(p, add_globals_to):
    sub = p.add_subparsers(dest="role_action", required=True, metavar="ACTION")

    def action(name, help_):
        q = sub.add_parser(name, help=help_)
        add_globals_to(q)
        q.add_argument("args", nargs="*")
        return q

    action("add", "add NAME")
    action("delete", "delete NAME")
    action("get", "get NAME: the role's permissions")
    action("list", "every role")
    for name, help_ in (("grant-permission", "grant-permission NAME read|write|readwrite KEY [RANGE_END]"),
                        ("revoke-permission", "revoke-permission NAME KEY [RANGE_END]")):
        q = action(name, help_)
        q.add_argument("--prefix", action="store_true", help="a permission on every key with the prefix KEY")
        q.add_argument("--from-key", action="store_true", help="a permission on every key >= KEY")


def _args(a, count: int, message: str) -> list[str]:
    if len(a.args) != count:
        raise CommandError(message, EXIT_BAD_ARGS)
    return a.args


def _json(a) -> bool:
    return a.write_out == "json"


# ---------------------------------------------------------------- passwords
def ask(prompt: str) -> str:
    """etcdctl's speakeasy.Ask: the prompt on stdout, one line without echo, then a newline.  From a
    terminal through getpass; from a pipe, the line as it comes (etcdctl reads stdin either way)."""
    sys.stdout.flush()
    if sys.stdin.isatty():
        return getpass.getpass(prompt, stream=sys.stdout)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return line.rstrip("\r\n")


def read_password_interactive(name: str) -> str:
    first = ask(f"Password of {name}: ")
    if not first:
        raise CommandError("empty password", EXIT_BAD_ARGS)
    second = ask(f"Type password of {name} again for confirmation: ")
    if first != second:
        raise CommandError("given passwords are different", EXIT_BAD_ARGS)
    return first


def scan_word() -> str:
    """Go's fmt.Scanf("%s"): the first word of stdin ("" when there is none)."""
    words = sys.stdin.readline().split()
    return words[0] if words else ""


def login(user: str | None, password: str | None) -> tuple[str | None, str | None]:
    """--user / --password (or ZWATCH_USER / ZWATCH_PASSWORD), etcdctl's authCfgFromCmd: with a
    password apart the name is taken whole; else NAME:PASSWORD, else ask for it ("Password: ")."""
    if not user:
        return None, None
    if password:
        return user, password
    if ":" in user:
        name, password = user.split(":", 1)
        return name, password
    return user, ask("Password: ")


# ---------------------------------------------------------------- auth
def auth_enable(a, c: Client):
    _args(a, 0, "auth enable command does not accept any arguments")
    while True:
        try:
            c.auth_enable()
            break
        except FailedPrecondition as exc:
            # etcdctl: the user root exists without the role root: create it, grant it, try again.
            if exc.message != ROOT_ROLE_MISSING:
                raise
            c.role_add("root")
            c.user_grant_role("root", "root")
    write_line("Authentication Enabled")           # whatever -w says, as etcdctl
    return 0


def auth_disable(a, c: Client):
    _args(a, 0, "auth disable command does not accept any arguments")
    c.auth_disable()
    write_line("Authentication Disabled")
    return 0


def auth_status(a, c: Client):
    _args(a, 0, "auth status command does not accept any arguments")
    r = c.auth_status()
    if _json(a):
        out = {"header": j_header(r.header)}
        if r.enabled:
            out["enabled"] = True
        if r.auth_revision:
            out["authRevision"] = r.auth_revision
        json_line(out)
    else:
        write_line(f"Authentication Status: {'true' if r.enabled else 'false'}")
        write_line(f"AuthRevision: {r.auth_revision}")
    return 0


# ---------------------------------------------------------------- users
def _header_or(a, header, text: str):
    json_line({"header": j_header(header)}) if _json(a) else write_line(text)


def user_add(a, c: Client):
    arg, = _args(a, 1, "user add command requires user name as its argument")
    if a.no_password:
        header = c.user_add(arg, no_password=True)
        name = arg
    else:
        if a.new_user_password:
            name, password = arg, a.new_user_password
        elif ":" in arg:
            name, password = arg.split(":", 1)
            if not name:
                raise CommandError("empty user name is not allowed", EXIT_BAD_ARGS)
        else:
            name = arg
            password = read_password_interactive(arg) if a.interactive else scan_word()
        header = c.user_add(name, password)
    _header_or(a, header, f"User {name} created")
    return 0


def user_delete(a, c: Client):
    name, = _args(a, 1, "user delete command requires user name as its argument")
    _header_or(a, c.user_delete(name), f"User {name} deleted")
    return 0


def user_get(a, c: Client):
    name, = _args(a, 1, "user get command requires user name as its argument")
    r = c.user_get(name)
    if a.detail:
        write_line(f"User: {name}")
        for role in r.roles:
            write_line()
            print_role(a, role, c.role_get(role))
    elif _json(a):
        out = {"header": j_header(r.header)}
        if r.roles:
            out["roles"] = r.roles
        json_line(out)
    else:
        write_line(f"User: {name}")
        write_line("Roles:" + "".join(f" {role}" for role in r.roles))
    return 0


def user_list(a, c: Client):
    _args(a, 0, "user list command requires no arguments")
    r = c.user_list()
    _print_names(a, r.header, "users", r.users)
    return 0


def _print_names(a, header, field: str, names: list):
    if _json(a):
        out = {"header": j_header(header)}
        if names:
            out[field] = names
        json_line(out)
    else:
        for name in names:
            write_line(name)


def user_passwd(a, c: Client):
    name, = _args(a, 1, "user passwd command requires user name as its argument")
    password = read_password_interactive(name) if a.interactive else scan_word()
    _header_or(a, c.user_change_password(name, password), "Password updated")
    return 0


def user_grant_role(a, c: Client):
    user, role = _args(a, 2, "user grant command requires user name and role name as its argument")
    _header_or(a, c.user_grant_role(user, role), f"Role {role} is granted to user {user}")
    return 0


def user_revoke_role(a, c: Client):
    user, role = _args(a, 2, "user revoke-role requires user name and role name as its argument")
    _header_or(a, c.user_revoke_role(user, role), f"Role {role} is revoked from user {user}")
    return 0


# ---------------------------------------------------------------- roles
def role_add(a, c: Client):
    name, = _args(a, 1, "role add command requires role name as its argument")
    _header_or(a, c.role_add(name), f"Role {name} created")
    return 0


def role_delete(a, c: Client):
    name, = _args(a, 1, "role delete command requires role name as its argument")
    _header_or(a, c.role_delete(name), f"Role {name} deleted")
    return 0


def role_get(a, c: Client):
    name, = _args(a, 1, "role get command requires role name as its argument")
    print_role(a, name, c.role_get(name))
    return 0


def role_list(a, c: Client):
    _args(a, 0, "role list command requires no arguments")
    r = c.role_list()
    _print_names(a, r.header, "roles", r.roles)
    return 0


def _perm_range_args(a, args: list[str]) -> tuple[bytes, bytes]:
    key = os.fsencode(args[0])
    range_end = os.fsencode(args[1]) if len(args) > 1 else b""
    try:
        return perm_range(key, range_end, prefix=a.prefix, from_key=a.from_key)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_BAD_ARGS) from None


def role_grant_permission(a, c: Client):
    if len(a.args) < 3:
        raise CommandError("role grant command requires role name, permission type, and key [endkey] as its "
                           "argument", EXIT_BAD_ARGS)
    role, perm_type = a.args[0], a.args[1]
    if perm_type.upper() not in PERM_TYPE_CODES:
        raise CommandError(f"invalid permission type: {perm_type}", EXIT_BAD_ARGS)
    key, range_end = _perm_range_args(a, a.args[2:])
    _header_or(a, c.role_grant_permission(role, perm_type, key, range_end), f"Role {role} updated")
    return 0


def role_revoke_permission(a, c: Client):
    if len(a.args) < 2:
        raise CommandError("role revoke-permission command requires role name and key [endkey] as its argument",
                           EXIT_BAD_ARGS)
    role = a.args[0]
    key, range_end = _perm_range_args(a, a.args[1:])
    header = c.role_revoke_permission(role, key, range_end)
    if _json(a):
        json_line({"header": j_header(header)})
        return 0
    given = os.fsencode(a.args[1])             # etcdctl prints the key as given, the computed end
    if not range_end:
        line = b"Permission of key " + given + b" is revoked from role " + role.encode()
    elif range_end != b"\x00":
        line = b"Permission of range [" + given + b", " + range_end + b") is revoked from role " + role.encode()
    else:
        line = b"Permission of range [" + given + b", <open ended> is revoked from role " + role.encode()
    write_line(line)
    return 0


def print_role(a, name: str, r):
    """etcdctl's RoleGet: simple (KV Read: / KV Write: sections) or the response in JSON."""
    if _json(a):
        out = {"header": j_header(r.header)}
        if r.perms:
            out["perm"] = [_j_perm(p) for p in r.perms]
        json_line(out)
        return
    write_line(f"Role {name}")
    for title, types in (("KV Read:", ("READ", "READWRITE")), ("KV Write:", ("WRITE", "READWRITE"))):
        write_line(title)
        for p in r.perms:
            if p.perm_type in types:
                write_line(_perm_line(p))


def _perm_line(p) -> bytes:
    if not p.range_end:
        return b"\t" + p.key
    if p.range_end != b"\x00":
        line = b"\t[" + p.key + b", " + p.range_end + b")"
    else:
        line = b"\t[" + p.key + b", <open ended>"
    if prefix_end(p.key) == p.range_end:
        line += b" (prefix " + p.key + b")"
    return line


def _j_perm(p) -> dict:
    # Go's JSON of authpb.Permission: zero values omitted (READ is 0), bytes in base64.
    out = {}
    if PERM_TYPE_CODES[p.perm_type]:
        out["permType"] = PERM_TYPE_CODES[p.perm_type]
    if p.key:
        out["key"] = _b64(p.key)
    if p.range_end:
        out["range_end"] = _b64(p.range_end)
    return out


def watch_refused(a, code: str, message: str, resp: WatchResponse | None = None):
    """etcdctl's end of a watch the server refused (or canceled) for authorization: the canceled
    response in JSON, the gRPC error on stderr, then ``Error: watch is canceled by the server``, exit 5."""
    if a.write_out == "json" and not a.exec:
        json_line(j_watch(resp or WatchResponse(0, Header(0), canceled=True)))
        sys.stdout.flush()
    grpc = "InvalidArgument" if message == USER_EMPTY else GRPC_CODES.get(code, code)
    print(f"watch was canceled (rpc error: code = {grpc} desc = {message})", file=sys.stderr)
    raise CommandError("watch is canceled by the server", EXIT_INTERRUPTED)


AUTH_COMMANDS = {"enable": auth_enable, "disable": auth_disable, "status": auth_status}
USER_COMMANDS = {"add": user_add, "delete": user_delete, "get": user_get, "list": user_list, "passwd": user_passwd,
                 "grant-role": user_grant_role, "revoke-role": user_revoke_role}
ROLE_COMMANDS = {"add": role_add, "delete": role_delete, "get": role_get, "list": role_list,
                 "grant-permission": role_grant_permission, "revoke-permission": role_revoke_permission}


def cmd_auth(a, c: Client):
    return AUTH_COMMANDS[a.auth_action](a, c)


def cmd_user(a, c: Client):
    return USER_COMMANDS[a.user_action](a, c)


def cmd_role(a, c: Client):
    return ROLE_COMMANDS[a.role_action](a, c)
