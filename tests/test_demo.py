"""`ticker demo`: one command brings everything up, and Ctrl-C leaves nothing behind."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.conftest import UNIT, wait_http
from ticker.redis_io import free_port


def children(pid: int) -> set[int]:
    """Every live descendant of a process, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_runs_everything_and_ctrl_c_stops_all_of_it(tmp_path: Path) -> None:
    """With no Redis configured, the demo embeds one, serves a climbing counter, and SIGINT
    stops every process it started."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    with tempfile.TemporaryFile("w+") as log:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ticker",
                "demo",
                "--port",
                str(port),
                "--scale",
                "0.001",
                "--speed",
                "600",
                "--data-dir",
                str(tmp_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url + "healthz", timeout=30)
            deadline = time.monotonic() + 30 * UNIT
            gmv = 0
            while gmv == 0 and time.monotonic() < deadline:
                with urllib.request.urlopen(url + "api/state", timeout=5) as resp:
                    gmv = json.load(resp)["gmv_fen"]
                time.sleep(0.2)
            assert gmv > 0
            started = children(demo.pid)
            assert len(started) >= 4  # redis-server, aggregate, serve, replay
            demo.send_signal(signal.SIGINT)
            assert demo.wait(30 * UNIT) == 0
            deadline = time.monotonic() + 10 * UNIT
            while any(alive(p) for p in started) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not [p for p in started if alive(p)]
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
        log.seek(0)
        output = log.read()
    assert "started an embedded redis-server" in output
    assert f"open http://127.0.0.1:{port}/" in output
    assert "?token=" in output
    banner_reaches_the_demo(output, port, tmp_path)


def banner_reaches_the_demo(output: str, port: int, data: Path) -> None:
    """The banner's commands name the demo's Redis and namespace; logs and the append-only
    file are in the data folder, not on the terminal."""
    redis_url = output.split("embedded redis-server at ", 1)[1].split()[0]
    reach = f"--redis-url {redis_url} --namespace demo"
    assert f"ticker control pause {reach}" in output and f"ticker verify {reach}" in output
    assert f"ticker watch http://127.0.0.1:{port}/" in output
    assert f"Logs of the aggregator and the server: {data / 'demo.log'}" in output
    assert "GET /api/state" in (data / "demo.log").read_text()  # the server's access log
    assert "GET /api/state" not in output
    assert (data / "appendonlydir").is_dir()
