import pytest

from zwatch.tools.cluster import Cluster


@pytest.fixture
def cluster_env() -> dict:
    """Environment every cluster of a test starts with; a module overrides it (test_watch runs
    each scenario under several ring sizes) and a test's own `env` still wins."""
    return {}


@pytest.fixture
def make_cluster(tmp_path, cluster_env):
    """Factory for clusters with several fan-outs or extra environment."""
    made = []

    def make(fanouts=1, env=None, start=True):
        c = Cluster(str(tmp_path / f"data{len(made)}"), fanouts=fanouts, env={**cluster_env, **(env or {})})
        made.append(c)
        return c.start() if start else c

    try:
        yield make
    finally:
        for c in made:
            c.stop()


@pytest.fixture
def cluster(make_cluster):
    """A running writer, syncer and one fan-out on random loopback ports."""
    return make_cluster()
