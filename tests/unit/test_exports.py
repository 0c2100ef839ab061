"""What `import zwatch` gives an application: every error class, the client's names, types."""
from __future__ import annotations

import inspect
import os

import zwatch
from zwatch import errors
from zwatch.client import concurrency


def _error_classes():
    found = {}
    for module in (errors, concurrency):
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, errors.ZwatchError):
                found[name] = obj
    return found


def test_every_error_class_is_exported_from_zwatch():
    classes = _error_classes()
    assert len(classes) >= 22            # the wire codes' classes, ZwatchError and NotLeader
    for name, cls in classes.items():
        assert getattr(zwatch, name) is cls, name
        assert name in zwatch.__all__, name
    assert set(zwatch.ERROR_CLASSES) == set(classes)


def test_every_wire_code_has_an_exported_class():
    for code in errors.ALL_CODES:
        err = errors.ZwatchError.from_wire({"code": code, "message": "m"})
        assert type(err) is not errors.ZwatchError, code
        assert getattr(zwatch, type(err).__name__) is type(err)


def test_all_names_resolve():
    for name in zwatch.__all__:
        assert getattr(zwatch, name) is not None, name


def test_the_package_is_typed():
    """PEP 561: a py.typed marker beside the package's modules (installed as package data)."""
    assert os.path.exists(os.path.join(os.path.dirname(zwatch.__file__), "py.typed"))


CLIENT_ONLY = {"get": ["at"]}


def test_both_clients_offer_every_request_of_calls_py_with_the_same_parameters():
    """calls.py defines each request once; the sync and asyncio clients are facades over it."""
    import zwatch.aio
    from zwatch.client import calls
    names = [n for n, f in vars(calls).items() if inspect.isfunction(f) and not n.startswith("_")
             and f.__module__ == calls.__name__]
    assert len(names) >= 18
    for name in names:
        spec = list(inspect.signature(getattr(calls, name)).parameters)
        for client in (zwatch.Client, zwatch.aio.Client):
            method = getattr(client, name, None)
            assert method is not None, f"{client.__module__}.Client has no {name}"
            params = list(inspect.signature(method).parameters)
            if "kw" in params:                 # get(key, range_end, **kw): the options go through
                continue
            # Client-side options after timeout (get's at: a time resolved by another request first)
            extra = CLIENT_ONLY.get(name, [])
            assert params[1:] == spec + ["timeout"] + extra, (client.__module__, name, params)
        assert inspect.iscoroutinefunction(getattr(zwatch.aio.Client, name)), name
