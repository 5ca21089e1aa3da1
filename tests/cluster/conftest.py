"""A local Redis Cluster (3 primaries, 1 replica each) of private redis-server processes."""

from collections.abc import Iterator

import pytest

from ticker.testing import LocalCluster, local_cluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A cluster of the tests' own on free ports; a test that kills a node restarts it, so
    every test finds 3 primaries with a replica each."""
    with local_cluster(masters=3, replicas=1) as cluster:
        yield cluster
