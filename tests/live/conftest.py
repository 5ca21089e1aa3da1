"""The fault tests' fixtures (a restartable AOF redis-server, killable processes)."""

from tests.faults.conftest import aof_redis, procs

__all__ = ["aof_redis", "procs"]
