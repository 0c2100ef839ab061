"""SPEC.md pinned by the code (issue #9 item 5): the text cannot drift from zwatch.messages and
zwatch.limits again.

* Section 11's worked examples are read out of protocol/SPEC.md itself (the message as written,
  its declared size, its hex line) and reproduced byte for byte with zwatch.messages' encoders,
  then decoded back with its decoders.
* Section 1's frame-size table and section 10's limits table are read the same way and compared
  with zwatch.limits.

Each check is a function of the SPEC text, so the tests at the end can show that it fails on an
edited copy of the text (never on the file).
"""
from __future__ import annotations

import ast
import os
import re

import msgpack
import pytest

from zwatch import errors, limits, messages, requests
from zwatch.limits import MAX_REQUEST_BYTES, SOCKET_MAX_MSG_BYTES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_PATH = os.path.join(ROOT, "protocol", "SPEC.md")

# The worked examples section 11 must show, by the first element of the message.
EXAMPLE_KINDS = {"hello", "put", "ok", "w", "ack"}
CLIENT_REQUESTS = {"hello", "put", "ack"}


def spec_text() -> str:
    with open(SPEC_PATH, encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------- reading the SPEC text
def section(text: str, number: int) -> str:
    """The body of "## <number>. ..." up to the next "## " heading."""
    m = re.search(rf"^## {number}\. .*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"SPEC.md has no section {number}"
    return m.group(1)


def subsection(text: str, title: str) -> str:
    m = re.search(rf"^### {re.escape(title)}\s*$(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert m, f"no subsection {title!r}"
    return m.group(1)


def table_rows(text: str) -> list[list[str]]:
    """Cells of a Markdown table's body rows (header and separator left out)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.lstrip().startswith("|")]
    return [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]


def numbers(cell: str) -> list[int]:
    """The numbers written in a cell, thousands separators allowed: "1,572,865 .. 6,291,456"."""
    return [int(n.replace(",", "")) for n in re.findall(r"\d(?:[\d,]*\d)?", cell)]


_LITERAL_LINE = re.compile(r"^\s+(?:\w+:)?\s*(\[.*\])\s+(\d+) bytes\s*$")
_HEX_LINE = re.compile(r"^\s+([0-9a-f]{2}(?: [0-9a-f]{2})*)\s*$")


def worked_examples(text: str) -> dict[str, tuple[list, int, bytes]]:
    """Section 11 -> {kind: (message, declared size, bytes of its hex line)}.

    A message line is the message in Python/msgpack notation (b"..." for bin, false/true/nil)
    followed by "<N> bytes"; the next line is its hex dump."""
    lines = section(text, 11).splitlines()
    found = {}
    for i, line in enumerate(lines):
        m = _LITERAL_LINE.match(line)
        if not m:
            continue
        literal = re.sub(r"\b(false|true|nil)\b",
                         lambda w: {"false": "False", "true": "True", "nil": "None"}[w.group(1)], m.group(1))
        message = ast.literal_eval(literal)
        hex_line = _HEX_LINE.match(lines[i + 1]) if i + 1 < len(lines) else None
        assert hex_line, f"the example {m.group(1)} is not followed by its hex line"
        assert message[0] not in found, f"two worked examples of {message[0]!r}"
        found[message[0]] = (message, int(m.group(2)), bytes.fromhex(hex_line.group(1)))
    return found


# ---------------------------------------------------------------- the checks
def encode_with_messages(message: list) -> bytes:
    """The example as the code that sends it would encode it (never msgpack directly)."""
    kind, req_id, body = message
    if kind in CLIENT_REQUESTS:
        return messages.encode_request(kind, req_id, body)
    if kind == "ok":
        return messages.encode_ok(req_id, body)
    if kind == "w":       # the fan-out splices ready-encoded responses into one frame
        return messages.watch_frame([part for ids, header_rev, events, fragment in body
                                     for part in messages.pack_watch_responses(ids, header_rev, events, fragment)])
    raise AssertionError(f"no encoder for a worked example of {kind!r}")


def decode_with_messages(kind: str, raw: bytes) -> list:
    if kind in CLIENT_REQUESTS:
        return list(messages.decode_request(raw))
    return list(messages.decode_server_frame(raw))


def check_worked_examples(text: str) -> None:
    examples = worked_examples(text)
    assert set(examples) == EXAMPLE_KINDS, f"section 11 shows {sorted(examples)}, expected {sorted(EXAMPLE_KINDS)}"
    for kind, (message, declared, spec_bytes) in examples.items():
        assert len(spec_bytes) == declared, f"{kind}: the text says {declared} bytes, its hex line has {len(spec_bytes)}"
        encoded = encode_with_messages(message)
        assert encoded == spec_bytes, f"{kind}: zwatch.messages encodes {encoded.hex(' ')}, SPEC.md shows {spec_bytes.hex(' ')}"
        assert decode_with_messages(kind, spec_bytes) == message, f"{kind}: the SPEC's bytes do not decode to {message}"


def check_frame_size_table(text: str) -> None:
    """Section 1, "Frame size": served up to MAX_REQUEST_BYTES, RESOURCE_EXHAUSTED up to the
    socket limit, connection dropped above it."""
    assert (MAX_REQUEST_BYTES, SOCKET_MAX_MSG_BYTES) == (1_572_864, 6_291_456)
    rows = table_rows(subsection(section(text, 1), "Frame size"))
    assert len(rows) == 3, f"the frame-size table has {len(rows)} rows, expected 3: {rows}"
    (served, served_what), (refused, refused_what), (dropped, dropped_what) = rows
    where = "section 1, frame-size table"
    assert numbers(served) == [MAX_REQUEST_BYTES] and "`MAX_REQUEST_BYTES`" in served, \
        f"{where}: {served!r}, but MAX_REQUEST_BYTES = {MAX_REQUEST_BYTES:,}"
    assert numbers(refused) == [MAX_REQUEST_BYTES + 1, SOCKET_MAX_MSG_BYTES], \
        f"{where}: {refused!r}, but refused sizes are {MAX_REQUEST_BYTES + 1:,} .. {SOCKET_MAX_MSG_BYTES:,}"
    assert "RESOURCE_EXHAUSTED" in refused_what and "nil" in refused_what, f"{where}: {refused_what!r}"
    # "above 6,291,456 (`SOCKET_MAX_MSG_BYTES` = 4 x `MAX_REQUEST_BYTES`, ...)"
    assert SOCKET_MAX_MSG_BYTES % MAX_REQUEST_BYTES == 0 and "`SOCKET_MAX_MSG_BYTES`" in dropped
    assert numbers(dropped) == [SOCKET_MAX_MSG_BYTES, SOCKET_MAX_MSG_BYTES // MAX_REQUEST_BYTES], \
        f"{where}: {dropped!r}, but SOCKET_MAX_MSG_BYTES = {SOCKET_MAX_MSG_BYTES:,} = " \
        f"{SOCKET_MAX_MSG_BYTES // MAX_REQUEST_BYTES} x MAX_REQUEST_BYTES"
    assert "drops the connection" in dropped_what, f"{where}: {dropped_what!r}"


def _limit_value(cell: str) -> int:
    power = re.match(r"2\^(\d+)-1\b", cell)
    return (1 << int(power.group(1))) - 1 if power else numbers(cell)[0]


def check_limits_table(text: str) -> None:
    """Section 10: every row named after a zwatch.limits constant shows its value, and every
    "`NAME` (N)" written in the table is that constant's value."""
    rows = table_rows(section(text, 10))
    named = {row[0].strip("`"): row for row in rows if row[0].strip("`") in vars(limits)}
    assert {"MAX_REQUEST_BYTES", "MAX_RESPONSE_BYTES", "MAX_KEY_BYTES"} <= set(named), sorted(named)
    for name, row in named.items():
        assert _limit_value(row[1]) == getattr(limits, name), f"section 10: {name} is {row[1]!r}, zwatch.limits says {getattr(limits, name)}"
    for row in rows:
        for name, value in re.findall(r"`(\w+)` \((\d[\d,]*)\)", " | ".join(row)):
            assert numbers(value) == [getattr(limits, name)], f"section 10: `{name}` ({value}) but zwatch.limits says {getattr(limits, name)}"


def check_error_codes_table(text: str) -> None:
    """Section 8's table lists every code of zwatch.errors, and no other."""
    codes = {row[0].strip("`") for row in table_rows(section(text, 8))}
    assert codes == set(errors.ALL_CODES), \
        f"section 8 lists {sorted(codes - set(errors.ALL_CODES))} too many, {sorted(set(errors.ALL_CODES) - codes)} missing"


def check_auth_ops_table(text: str) -> None:
    """Section 13.2's table has one row per op of messages.AUTH_OPS, and its body names exactly
    the fields requests.py accepts (the fan-out's `password` in place of the writer's hashed one)."""
    rows = table_rows(subsection(section(text, 13), "13.2 Ops"))
    ops = [row[0].strip("`") for row in rows]
    assert sorted(ops) == sorted(messages.AUTH_OPS), f"section 13.2 lists {sorted(ops)}, AUTH_OPS is {sorted(messages.AUTH_OPS)}"
    for op, body in ((row[0].strip("`"), row[1]) for row in rows):
        written = set(re.findall(r'"(\w+)"', body)) - {"no_password"}
        accepted = set(requests.normalize(op, _SAMPLE_AUTH_BODIES.get(op, {}))) - {"hashed_password"}
        accepted |= set(requests.normalize(op, _SAMPLE_AUTH_BODIES.get(op, {})).get("perm") or {})
        assert written == accepted, f"section 13.2: {op} shows fields {sorted(written)}, requests.py takes {sorted(accepted)}"


_SAMPLE_AUTH_BODIES = {
    "user_add": {"name": "u"}, "user_get": {"name": "u"}, "user_delete": {"name": "u"},
    "user_change_password": {"name": "u"}, "user_grant_role": {"user": "u", "role": "r"},
    "user_revoke_role": {"name": "u", "role": "r"}, "role_add": {"name": "r"}, "role_get": {"role": "r"},
    "role_delete": {"role": "r"}, "role_grant_permission": {"name": "r", "perm": {"permType": "READ"}},
    "role_revoke_permission": {"role": "r"},
}


def check_hello_fields(text: str) -> None:
    """Section 3's hello request table names every field requests.normalize("hello") reads."""
    fields = {row[0].strip("`") for row in table_rows(subsection(section(text, 3), "hello").split("Reply body")[0])}
    assert fields == set(requests.normalize("hello", {})), f"section 3 hello fields {sorted(fields)}"


# ---------------------------------------------------------------- the SPEC file
def test_worked_examples_are_what_zwatch_messages_encodes():
    check_worked_examples(spec_text())


def test_frame_size_table_matches_zwatch_limits():
    check_frame_size_table(spec_text())


def test_limits_table_matches_zwatch_limits():
    check_limits_table(spec_text())


def test_error_codes_table_lists_every_code():
    check_error_codes_table(spec_text())


def test_auth_ops_table_matches_messages_and_requests():
    check_auth_ops_table(spec_text())


def test_hello_table_names_every_field():
    check_hello_fields(spec_text())


# ---------------------------------------------------------------- each check fails on drift
# (check, text in SPEC.md, what it is edited into, what the failure must say)
DRIFTS = [
    (check_worked_examples, "01 82 a7 76 65 72", "01 82 a7 76 66 72", "hello: zwatch.messages encodes"),
    (check_worked_examples, '"client": "demo"}]    30 bytes', '"client": "demo"}]    31 bytes',
     "hello: the text says 31 bytes"),
    (check_worked_examples, '{"key": b"foo", "value": b"bar"}', '{"key": "foo", "value": b"bar"}',
     "put: zwatch.messages encodes"),                                   # a str key where bin is due
    (check_worked_examples, '"header": {"revision": 2}', '"header": {"revision": 3}', "ok: zwatch.messages"),
    (check_worked_examples, 'b"bar", 0]]], false]', 'b"bar", 0]]], true]', "w: the SPEC's bytes do not decode"),
    (check_worked_examples, '["ack", 0, {"bytes": 300}]', '["ack", 0, {"bytes": 301}]', "ack: zwatch.messages"),
    (check_worked_examples, '    ack:    ["ack"', '    ack:    ["nack"', "section 11 shows"),   # an example gone
    (check_frame_size_table, "| up to 1,572,864 (", "| up to 1,572,863 (", "MAX_REQUEST_BYTES = 1,572,864"),
    (check_frame_size_table, "| 1,572,865 .. 6,291,456 |", "| 1,572,864 .. 6,291,456 |", "refused sizes"),
    (check_frame_size_table, "| 1,572,865 .. 6,291,456 |", "| 1,572,865 .. 6,291,455 |", "refused sizes"),
    (check_frame_size_table, "| above 6,291,456 (", "| above 3,145,728 (", "SOCKET_MAX_MSG_BYTES = 6,291,456"),
    (check_frame_size_table, "= 4 x `MAX_REQUEST_BYTES`", "= 2 x `MAX_REQUEST_BYTES`", "= 4 x MAX_REQUEST_BYTES"),
    (check_limits_table, "| `MAX_KEY_BYTES` | 511 ", "| `MAX_KEY_BYTES` | 512 ", "MAX_KEY_BYTES is"),
    (check_limits_table, "`SOCKET_MAX_MSG_BYTES` (6,291,456)", "`SOCKET_MAX_MSG_BYTES` (3,145,728)",
     r"`SOCKET_MAX_MSG_BYTES` \(3,145,728\)"),
    (check_limits_table, "| `MAX_REVISION` | 2^63-1 ", "| `MAX_REVISION` | 2^64-1 ", "MAX_REVISION is"),
    (check_limits_table, "| `MAX_PASSWORD_BYTES` | 1,024 ", "| `MAX_PASSWORD_BYTES` | 1,023 ", "MAX_PASSWORD_BYTES is"),
    (check_error_codes_table, "| `ROLE_NOT_GRANTED` |", "| `ROLE_NOT_GIVEN` |", r"\['ROLE_NOT_GIVEN'\] too many"),
    (check_auth_ops_table, "| `role_list` | `{}` |", "| `roles_list` | `{}` |", "section 13.2 lists"),
    (check_auth_ops_table, '| `user_revoke_role` | `{"name", "role"}`', '| `user_revoke_role` | `{"user", "role"}`',
     "user_revoke_role shows fields"),
    (check_hello_fields, "| `password` | str | absent |", "| `passwd` | str | absent |", "section 3 hello fields"),
]


@pytest.mark.parametrize("check,old,new,says", DRIFTS, ids=[f"{d[0].__name__}-{i}" for i, d in enumerate(DRIFTS)])
def test_each_check_fails_on_an_edited_copy_of_the_spec(check, old, new, says):
    text = spec_text()
    assert text.count(old) == 1, f"{old!r} is not in SPEC.md once: update this test's edit"
    with pytest.raises(AssertionError, match=says):
        check(text.replace(old, new))


def test_worked_examples_check_fails_when_the_encoder_drifts(monkeypatch):
    """Keys and values as str instead of bin (msgpack's old default): the put example breaks."""
    monkeypatch.setattr(messages, "pack", lambda obj: msgpack.packb(obj, use_bin_type=False))
    with pytest.raises(AssertionError, match="put: zwatch.messages encodes"):
        check_worked_examples(spec_text())
