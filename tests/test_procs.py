"""Stopping child processes: SIGTERM first, SIGKILL for those that will not go."""

import signal
import subprocess
import sys

from ticker.procs import terminate

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def spawn(
    code: str = "import time; print('ready', flush=True); time.sleep(60)",
) -> "subprocess.Popen[bytes]":
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline() == b"ready\n"  # its signal handlers are in place
    return proc


def test_processes_that_obey_sigterm_end_by_it() -> None:
    """Two running processes both get SIGTERM and are reaped."""
    procs = [spawn(), spawn()]
    terminate(*procs)
    assert [p.returncode for p in procs] == [-signal.SIGTERM, -signal.SIGTERM]


def test_a_process_ignoring_sigterm_is_killed_after_the_timeout() -> None:
    """One that ignores SIGTERM is killed once the wait is over."""
    proc = spawn(IGNORES_SIGTERM)
    terminate(proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_a_stopped_process_is_continued_so_it_can_end() -> None:
    """A process left stopped (SIGSTOP) still ends by SIGTERM, not by a kill."""
    proc = spawn()
    proc.send_signal(signal.SIGSTOP)
    terminate(proc)
    assert proc.returncode == -signal.SIGTERM


def test_processes_already_gone_are_left_alone() -> None:
    """A process that has exited keeps its exit code."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    terminate(proc)
    assert proc.returncode == 0
