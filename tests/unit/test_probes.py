"""/livez and /readyz (actors/probes.py, served by actors/metrics.py): what they say for an
actor's state, and that the HTTP app routes them before prometheus_client's exposition."""
import time
import types

from zwatch.actors import metrics, probes


def actor(turned=None, ready=(True, "ok")):
    return types.SimpleNamespace(loop_turned_at=turned, readiness=lambda: ready)


def test_live_while_the_loop_turns_and_while_starting():
    assert probes.live(actor(None), now=100.0) == (True, "ok: starting")
    assert probes.live(actor(90.0), now=100.0) == (True, "ok")
    ok, text = probes.live(actor(30.0), now=100.0, stale_s=60.0)
    assert not ok and "70.0 s" in text


def test_ready_only_after_the_first_turn_and_as_the_actor_says():
    assert probes.ready(actor(None)) == (False, "starting")
    assert probes.ready(actor(1.0)) == (True, "ok")
    assert probes.ready(actor(1.0, (False, "draining"))) == (False, "draining")


def call(app, path):
    got = {}

    def start_response(status, headers):
        got["status"], got["headers"] = status, headers
    body = b"".join(app({"PATH_INFO": path}, start_response))
    return got["status"], body


def test_the_app_answers_probes_and_passes_the_rest_to_the_exposition():
    def exposition(environ, start_response):
        start_response("200 OK", [])
        return [b"# metrics\n"]
    a = actor(time.monotonic(), (False, "publish stream silent for 4.2 s"))
    app = metrics._app(exposition, a)
    assert call(app, "/readyz") == ("503 Service Unavailable", b"publish stream silent for 4.2 s\n")
    assert call(app, "/livez")[0] == "200 OK"
    assert call(app, "/metrics") == ("200 OK", b"# metrics\n")
