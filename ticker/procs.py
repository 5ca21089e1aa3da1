"""Stopping child processes: ask politely (SIGTERM), then kill what will not go."""

import signal
import subprocess
import time
from typing import Any


def terminate(*procs: "subprocess.Popen[Any]", timeout: float = 10.0) -> None:
    """Send SIGTERM to each process still running, wait up to `timeout` seconds for all of
    them together, then SIGKILL (and reap) those still running. A stopped process
    (SIGSTOP) is continued first, so that it can act on the SIGTERM."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
