"""The fault tests' fixtures (a restartable AOF redis-server, a volatile one that comes
back empty, killable processes)."""

from tests.faults.conftest import aof_redis, procs
from tests.faults.test_restart import volatile, vprocs

__all__ = ["aof_redis", "procs", "volatile", "vprocs"]
