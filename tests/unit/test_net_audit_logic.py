"""Audit of issue #13 (helper H4), pure logic and manifests: no sockets, no processes.

Each test is named after a bug it found (strict xfails until the fixes landed)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def k8s_objects(name: str) -> list[dict]:
    return [o for o in yaml.safe_load_all((ROOT / "deploy/k8s/base" / name).read_text()) if o]


def test_fanout_pdb_blocks_node_drains_while_the_store_is_down():
    (pdb,) = [o for o in k8s_objects("fanout.yaml") if o["kind"] == "PodDisruptionBudget"]
    # Kubernetes: with IfHealthyBudget (the default) a running but not ready pod may be evicted
    # only while status.currentHealthy >= status.desiredHealthy; every fan-out unready (the
    # store pod down or restarting for longer than ZWATCH_UPSTREAM_TIMEOUT_S) means
    # currentHealthy 0 < replicas - maxUnavailable.  AlwaysAllow lets unready pods go.
    assert pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow", pdb["spec"]


def test_probe_path_typo_answers_200_for_a_cut_off_fanout():
    from wsgiref.util import setup_testing_defaults

    from prometheus_client import CollectorRegistry, make_wsgi_app

    from zwatch.actors import metrics

    class CutOff:                      # what a cut-off fan-out answers (service.readiness)
        loop_turned_at = 0.0

        def readiness(self):
            return False, "publish stream silent for 5.0 s"

    app = metrics._app(make_wsgi_app(CollectorRegistry()), CutOff())

    def status(path: str) -> int:
        env = {"PATH_INFO": path}
        setup_testing_defaults(env)
        got = []
        b"".join(app(env, lambda s, headers, exc_info=None: got.append(s)))
        return int(got[0].split()[0])

    assert status("/readyz") == 503
    assert status("/metrics") == 200
    # Kubernetes' own endpoints 404 unknown paths; an operator's typo must not read "ready".
    assert [status(p) for p in ("/readyz/", "/ready", "/healthz", "/READYZ")] == [404] * 4
