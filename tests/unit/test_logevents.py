"""Log event names are declared once (actors/logevents.py): the actors' source and the tables of
docs/operations.md ("Log events") must say the same.  Each failure says what to add where."""
from __future__ import annotations

import ast
import os
import re

from zwatch.actors import logevents

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACTORS_DIR = os.path.join(ROOT, "actors")
OPERATIONS = os.path.join(ROOT, "docs", "operations.md")
EVENT_NAME = re.compile(r"^[a-z_]+\.[a-z_]+$")
METHOD_LEVEL = {"debug": "debug", "info": "info", "warning": "warning", "error": "error", "exception": "error"}
DECLARED_IN = {"writer": "WRITER", "syncer": "SYNCER", "fanout": "FANOUT"}


def _literal(node) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and EVENT_NAME.match(node.value):
        return node.value
    return None


def _callee_name(func) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _actor_sources() -> list[str]:
    """actors/*.py and the actor packages' modules (actors/fanout/core.py...), relative to actors/."""
    out = []
    for dirpath, _dirs, files in os.walk(ACTORS_DIR):
        for fname in files:
            if fname.endswith(".py") and fname != "logevents.py":
                out.append(os.path.relpath(os.path.join(dirpath, fname), ACTORS_DIR))
    return sorted(out)


def _actor_of(path: str) -> str:
    """actors/fanout/core.py and actors/fanout.py both belong to the fan-out."""
    return path.split("/")[1].removesuffix(".py")


def logged_events() -> list[tuple[str, int, str, str | None, list[str]]]:
    """(file, line, event, level or None when chosen at run time, field names) of every log
    call with a literal event name in actors/*.py.  Recognised shapes:
    ``x.info("ev", ...)``, ``log("ev", ...)`` (a logger method picked at run time) and
    ``self.log_limited(self.log.warning, "ev", ...)`` (a wrapper given the method)."""
    found = []
    for fname in _actor_sources():
        path = os.path.join(ACTORS_DIR, fname)
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = _callee_name(node.func)
            fields = [k.arg for k in node.keywords if k.arg and k.arg != "key"]
            event, level = None, None
            if name in METHOD_LEVEL and _literal(node.args[0]):
                event, level = _literal(node.args[0]), METHOD_LEVEL[name]
            elif "log" in name.lower():
                first = node.args[0]
                if _literal(first):
                    event = _literal(first)
                elif (len(node.args) > 1 and isinstance(first, ast.Attribute) and first.attr in METHOD_LEVEL
                      and _literal(node.args[1])):
                    event, level = _literal(node.args[1]), METHOD_LEVEL[first.attr]
            if event:
                found.append((f"actors/{fname}", node.lineno, event, level, fields))
    return found


def doc_tables() -> dict[str, list[tuple[str, str]]]:
    """actor -> [(event, level column)] from the tables under each actor's heading."""
    with open(OPERATIONS, encoding="utf-8") as f:
        text = f.read()
    log_section = text[text.index("## Log events"):]
    log_section = log_section[:log_section.index("\n## ", 1)] if "\n## " in log_section[1:] else log_section
    tables = {}
    for actor, heading in logevents.DOC_SECTIONS.items():
        assert heading in log_section, f"docs/operations.md 'Log events' has no '{heading}' table"
        body = log_section[log_section.index(heading) + len(heading):]
        body = body[:body.index("\n### ")] if "\n### " in body else body
        rows = re.findall(r"^\| `([^`]+)` \| ([^|]*) \|", body, re.M)
        tables[actor] = [(name, level.strip()) for name, level in rows]
    return tables


def _add_declaration(actor: str, event: str, level: str) -> str:
    return (f"add to {DECLARED_IN.get(actor, 'WRITER / SYNCER / FANOUT')} in actors/logevents.py:\n"
            f"        LogEvent(\"{event}\", \"{level}\", \"<when it is logged, one line>\"),")


def _add_row(actor: str, event: str, level: str, fields=()) -> str:
    shown = ", ".join(f"`{f}`" for f in fields) or "<fields>"
    return (f"add a row to the '{logevents.DOC_SECTIONS.get(actor, '### <actor>')}' table of docs/operations.md "
            f"(Log events):\n        | `{event}` | {level} | <when> | {shown} |")


def test_every_event_the_actors_log_is_declared_at_its_level():
    problems = []
    for path, line, event, level, fields in logged_events():
        actor = _actor_of(path)
        declared = logevents.BY_NAME.get(event)
        if declared is None:
            problems.append(f"{path}:{line} logs '{event}' ({level or 'level chosen at run time'}), which "
                            f"actors/logevents.py does not declare.\n    {_add_declaration(actor, event, level or 'info')}"
                            f"\n    and {_add_row(actor, event, level or 'info', fields)}")
        elif level is not None and level != declared.level:
            problems.append(f"{path}:{line} logs '{event}' at {level}, actors/logevents.py declares it at "
                            f"{declared.level}: change one of them (and the Level column in docs/operations.md)")
    assert not problems, "\n".join(problems)


def test_every_declared_event_is_logged_somewhere():
    logged = {event for _, _, event, _, _ in logged_events()}
    stale = [f"'{e.name}' is declared in actors/logevents.py but no actor logs it: remove it there and its row "
             f"in docs/operations.md" for e in logevents.BY_NAME.values() if e.name not in logged]
    assert not stale, "\n".join(stale)


def test_docs_log_event_tables_list_exactly_the_declared_events():
    problems = []
    tables = doc_tables()
    for actor, events in logevents.EVENTS.items():
        rows = dict(tables[actor])
        heading = logevents.DOC_SECTIONS[actor]
        for e in events:
            if e.name not in rows:
                problems.append(f"docs/operations.md '{heading}' table lacks '{e.name}' (declared in "
                                f"actors/logevents.py):\n    {_add_row(actor, e.name, e.level)}")
            elif not rows[e.name].startswith(e.level):
                problems.append(f"docs/operations.md '{heading}' says '{e.name}' is logged at '{rows[e.name]}', "
                                f"actors/logevents.py declares {e.level}: make them agree")
        for name, _level in tables[actor]:
            if name not in {e.name for e in events}:
                elsewhere = next((a for a, evs in logevents.EVENTS.items() if name in {e.name for e in evs}), None)
                hint = (f"it is declared under {DECLARED_IN[elsewhere]}: move the row to "
                        f"'{logevents.DOC_SECTIONS[elsewhere]}'" if elsewhere else
                        f"{_add_declaration(actor, name, _level.split()[0] if _level else 'info')}\n    "
                        f"(or remove the row if no actor logs it any more)")
                problems.append(f"docs/operations.md '{heading}' lists '{name}', which actors/logevents.py does not "
                                f"declare for {actor}: {hint}")
    assert not problems, "\n".join(problems)


def test_the_source_scan_finds_every_call_shape():
    """The scan must see the three shapes the actors use, or the first test would pass vacuously."""
    seen = {(event, level) for _, _, event, level, _ in logged_events()}
    assert ("writer.start", "info") in seen                       # self.log.info("...")
    assert ("writer.commit", None) in seen                        # log = ... ; log("...")
    assert ("syncer.request_failed", "error") in seen             # self.log.exception("...")
