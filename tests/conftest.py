import pytest

from zwatch.tools.cluster import Cluster


@pytest.fixture
def cluster(tmp_path):
    """A running writer, syncer and one fan-out on random loopback ports."""
    c = Cluster(str(tmp_path / "data"))
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture
def make_cluster(tmp_path):
    """Factory for clusters with several fan-outs or extra environment."""
    made = []

    def make(fanouts=1, env=None, start=True):
        c = Cluster(str(tmp_path / f"data{len(made)}"), fanouts=fanouts, env=env)
        made.append(c)
        return c.start() if start else c

    try:
        yield make
    finally:
        for c in made:
            c.stop()
