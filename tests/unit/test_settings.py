"""Settings are declared once (protocol/settings.py): the actors' constructor defaults,
`.env.example` and the docs/operations.md "Environment variables" table must say the same, and
every ZWATCH_* variable the code mentions must be declared.  Each failure says what to change."""
from __future__ import annotations

import inspect
import os
import re

import pytest

from zwatch import cli, settings
from zwatch.actors.fanout import Fanout
from zwatch.actors.syncer import Syncer
from zwatch.actors.writer import Writer
from zwatch.tools import gendocs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACTOR_CLASSES = {"writer": Writer, "syncer": Syncer, "fanout": Fanout}
# Variables the code writes but never reads: the environment of `zwatch watch -- CMD`.
WRITTEN_NOT_READ = {"ZWATCH_WATCH_KEY", "ZWATCH_WATCH_VALUE", "ZWATCH_WATCH_REVISION", "ZWATCH_WATCH_EVENT_TYPE"}
REGENERATE = "then run `python -m zwatch.tools.gendocs` (it rewrites .env.example and the table)"


def _read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_every_variable_the_code_mentions_is_declared():
    problems = []
    for folder in ("actors", "protocol", "tools"):
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, folder)):
            for fname in files:
                if not fname.endswith(".py") or fname == "settings.py":
                    continue
                rel = os.path.relpath(os.path.join(dirpath, fname), ROOT)
                for n, line in enumerate(_read(rel).splitlines(), 1):
                    for name in re.findall(r"\bZWATCH_[A-Z][A-Z0-9_]*[A-Z0-9]\b", line):
                        if name not in settings.BY_NAME and name not in WRITTEN_NOT_READ:
                            problems.append(f"{rel}:{n} mentions {name}, which protocol/settings.py does not declare: "
                                            f"add Setting(\"{name}\", <type>, <default>, {{<reader>: <keyword>}}, "
                                            f"\"<meaning>\") to SETTINGS, {REGENERATE}")
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("actor", sorted(ACTOR_CLASSES))
def test_constructor_defaults_equal_the_declared_defaults(actor):
    cls = ACTOR_CLASSES[actor]
    params = inspect.signature(cls).parameters
    problems = []
    for s in settings.for_reader(actor):
        keyword = s.read_by[actor]
        if keyword is None:
            continue
        if keyword not in params:
            problems.append(f"{cls.__name__}.__init__ has no keyword {keyword!r} for {s.name}: add "
                            f"`{keyword}: {s.type.__name__} = {s.default!r}` (or fix read_by in protocol/settings.py)")
            continue
        given = params[keyword].default
        if given is inspect.Parameter.empty:
            continue                                 # required (endpoints, data dir): from_env always passes it
        if given != s.default or type(given) is not type(s.default):
            problems.append(f"{cls.__name__}(..., {keyword}={given!r}) but {s.name} is declared with default "
                            f"{s.default!r}: make them equal (the declaration is what operators read)")
    assert not problems, "\n".join(problems)


def _env_example_entries(text: str) -> dict[str, tuple[str, str]]:
    """NAME -> (value, the comment line right above it)."""
    entries, comment = {}, ""
    for line in text.splitlines():
        if line.startswith("# "):
            comment = line[2:]
        elif "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            entries[name] = (value, comment)
    return entries


def test_env_example_says_what_the_declarations_say():
    committed = _read(".env.example")
    entries = _env_example_entries(committed)
    problems = []
    for s in settings.SETTINGS:
        if not s.env_example:
            if s.name in entries:
                problems.append(f".env.example sets {s.name}, which is declared env_example=False")
            continue
        if s.name not in entries:
            problems.append(f".env.example lacks {s.name}")
            continue
        value, comment = entries.pop(s.name)
        if value != s.render_default():
            problems.append(f".env.example: {s.name}={value}, declared default {s.render_default()}")
        if comment != s.doc:
            problems.append(f".env.example: the comment above {s.name} is {comment!r}, declared doc {s.doc!r}")
    problems += [f".env.example sets {name}, which protocol/settings.py does not declare" for name in entries]
    if not problems and committed != gendocs.render_env_example():
        problems.append(".env.example has the declared values but not in the generated order or layout")
    assert not problems, "\n".join(problems) + "\n" + f"fix protocol/settings.py if it is wrong, {REGENERATE}"


def _docs_table_rows(text: str) -> dict[str, tuple[str, str, str]]:
    start, end = gendocs.table_span(text)
    rows = {}
    for line in text[start:end].splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, f"docs/operations.md table row without 4 columns: {line}"
        rows[cells[0].strip("`")] = tuple(cells[1:])
    return rows


def test_operations_table_says_what_the_declarations_say():
    committed = _read("docs/operations.md")
    rows = _docs_table_rows(committed)
    problems = []
    for s in settings.SETTINGS:
        if s.name not in rows:
            problems.append(f"docs/operations.md 'Environment variables' lacks {s.name}")
            continue
        default, read_by, meaning = rows.pop(s.name)
        want_default = "unset" if s.default is None else f"`{s.render_default()}`"
        for column, got, want in (("Default", default, want_default), ("Read by", read_by, s.render_read_by()),
                                  ("Meaning", meaning, s.doc)):
            if got != want:
                problems.append(f"docs/operations.md {s.name} {column}: {got!r}, declared {want!r}")
    problems += [f"docs/operations.md lists {name}, which protocol/settings.py does not declare" for name in rows]
    if not problems and committed != gendocs.render_operations(committed):
        problems.append("docs/operations.md has the declared rows but not in the generated order")
    assert not problems, "\n".join(problems) + "\n" + f"fix protocol/settings.py if it is wrong, {REGENERATE}"


def test_get_is_typed_and_empty_means_the_default():
    assert settings.get("ZWATCH_RING_REVISIONS", {}) == 20_000
    assert settings.get("ZWATCH_RING_REVISIONS", {"ZWATCH_RING_REVISIONS": ""}) == 20_000
    assert settings.get("ZWATCH_RING_REVISIONS", {"ZWATCH_RING_REVISIONS": " 5 "}) == 5
    assert settings.get("ZWATCH_STALL_S", {"ZWATCH_STALL_S": "0.5"}) == 0.5
    assert settings.get("ZWATCH_STATS_S", {"ZWATCH_STATS_S": "1"}) == 1.0
    assert settings.get("ZWATCH_ENDPOINTS", {}) == ["tcp://127.0.0.1:2379"]
    assert settings.get("ZWATCH_ENDPOINTS", {"ZWATCH_ENDPOINTS": "a:1, b:2,"}) == ["a:1", "b:2"]
    assert settings.get("PORT", {}) is None
    assert settings.get("ZWATCH_LOG_LEVEL", {"ZWATCH_LOG_LEVEL": "DEBUG"}) == "debug"


@pytest.mark.parametrize("name, raw, says", [
    ("ZWATCH_RING_REVISIONS", "20k", "is not an integer"),
    ("ZWATCH_STALL_S", "2s", "is not a number"),
    ("ZWATCH_SYNC_BATCH", "0", "is below its minimum 1"),
    ("PORT", "70000", "is above its maximum 65535"),
    ("ZWATCH_LOG_FORMAT", "xml", "is not one of auto, json"),
])
def test_a_malformed_value_is_one_line_naming_the_variable(name, raw, says):
    with pytest.raises(settings.SettingError) as err:
        settings.get(name, {name: raw})
    message = str(err.value)
    assert message.startswith(f"{name}={raw!r} {says}") and "\n" not in message


def test_an_actor_with_a_malformed_variable_exits_at_start_with_one_line(monkeypatch, capsys):
    """`zwatch syncer` checks every variable it reads before starting: exit 2, one line on stderr."""
    monkeypatch.setenv("ZWATCH_SYNC_CHUNK_BYTES", "1MiB")
    assert cli.main(["syncer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zwatch syncer: ZWATCH_SYNC_CHUNK_BYTES='1MiB' is not an integer") and err.count("\n") == 1


def test_actor_kwargs_come_from_the_environment_and_overrides_win():
    env = {"ZWATCH_WRITER_ENDPOINT": "tcp://10.0.0.1:1", "ZWATCH_RING_REVISIONS": "7"}
    kwargs = settings.actor_kwargs("fanout", Fanout, env, endpoint="tcp://127.0.0.1:9")
    assert kwargs["writer_endpoint"] == "tcp://10.0.0.1:1" and kwargs["ring_revisions"] == 7
    assert kwargs["endpoint"] == "tcp://127.0.0.1:9"
    assert settings.actor_kwargs("fanout", Fanout, {}, endpoint=None)["endpoint"] == "tcp://127.0.0.1:2379"
    assert set(settings.actor_kwargs("writer", Writer, {})) <= set(inspect.signature(Writer).parameters)
