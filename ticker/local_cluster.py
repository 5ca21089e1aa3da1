"""Kept for the benchmarks' imports: the local cluster now lives in `ticker.testing`."""

from ticker.testing import LocalCluster, LocalNode, local_cluster

__all__ = ["LocalCluster", "LocalNode", "local_cluster"]
