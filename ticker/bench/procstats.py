"""What a server process costs: CPU time and memory of a process tree, bytes on its sockets.

A peer may be one process (`ticker serve`, a `websockets` server) or several (nginx: a
master and its workers), so CPU and memory are summed over the process and its
descendants. Memory is the proportional set size (PSS, /proc/PID/smaps_rollup): pages
shared between the tree's processes (nginx's shared memory zone) count once, not once per
worker as RSS would count them.
"""

import os
import re
import resource
import subprocess

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, in seconds: its own work, and the kernel's."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    return sum(cpu_times(pid))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def pss_bytes(pid: int) -> int:
    """The process's proportional set size (its RSS where smaps_rollup is missing)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss_bytes(pid)


def tree(pid: int) -> list[int]:
    """`pid` and its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) summed over the tree; a process that ended drops out."""
    user = system = 0.0
    for p in tree(pid):
        try:
            u, s = cpu_times(p)
        except OSError:
            continue
        user, system = user + u, system + s
    return user, system


def tree_memory(pid: int) -> int:
    """PSS summed over the tree, in bytes."""
    total = 0
    for p in tree(pid):
        try:
            total += pss_bytes(p)
        except OSError:
            continue
    return total


def sent_bytes(port: int) -> int:
    """TCP payload bytes sent so far on the established connections from `port` (`ss -ti`).

    Connections that closed meanwhile drop out of the sum; the benchmark's do not close.
    """
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    sent = re.findall(r"bytes_sent:(\d+)", out) or re.findall(r"bytes_acked:(\d+)", out)
    return sum(int(x) for x in sent)


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65_536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
