"""The cluster profile's nginx proxy, run for real: Debian's nginx with the compose file's
nginx.conf in front of two `ticker serve` processes."""

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.typing import Origin

from tests.conftest import UNIT, Server, Ticker, serving, stop
from tests.test_compose import nginx_conf
from ticker.redis_io import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def local_conf(servers: list[Server], port: int, tmp: Path) -> str:
    """The compose nginx.conf, its upstreams and listen address made local ones."""
    conf = nginx_conf()
    upstreams = iter(s.url.removeprefix("http://").rstrip("/") for s in servers)
    conf, count = re.subn(r"server server-\d+:8080", lambda _: f"server {next(upstreams)}", conf)
    assert count == len(servers)
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    temp = "".join(
        f"  {kind}_temp_path {tmp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return conf.replace("http {\n", "http {\n" + temp, 1)


@contextlib.contextmanager
def nginx(servers: list[Server], tmp: Path) -> Iterator[str]:
    """nginx in the foreground on a free port; yield its http:// address."""
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (bash tests/run installs Debian's nginx)")
    port = free_port()
    (tmp / "nginx.conf").write_text(local_conf(servers, port, tmp))
    main = f"daemon off; pid {tmp / 'nginx.pid'}; error_log {tmp / 'error.log'};"
    if os.geteuid() == 0:
        main += " user root;"  # workers may read the test's private temp folders
    with (tmp / "out.log").open("w") as out:
        proc = subprocess.Popen(
            [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", main],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 15 * UNIT
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    errors = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
                    pytest.fail(f"nginx did not come up at {url}: {errors[-2000:]}")
                time.sleep(0.05)
        yield url
    finally:
        stop(proc)


def clients_of(server: Server) -> int:
    with urllib.request.urlopen(server.url + "metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(r"^ticker_clients (\S+)$", text, re.M)
    assert found, text
    return int(float(found[1]))


async def test_the_proxy_spreads_websockets_over_both_servers(
    ticker: Ticker, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(serving(ticker)) for _ in range(2)]
        proxy = stack.enter_context(nginx(servers, tmp_path))
        ws_url = proxy.replace("http://", "ws://") + "ws"
        sockets = []
        try:
            for _ in range(4):
                # A browser of the proxy's own origin: Host reaches the servers with its port.
                ws = await websockets.connect(ws_url, origin=Origin(proxy.rstrip("/")))
                sockets.append(ws)
                hello, snapshot = [json.loads(await ws.recv()) for _ in range(2)]
                assert hello["type"] == "hello" and hello["protocol"] == 1
                assert snapshot["type"] == "snapshot" and "state" in snapshot
            counts: list[int] = []
            for _ in range(100):
                counts = [clients_of(s) for s in servers]
                if sum(counts) == 4:
                    break
                await asyncio.sleep(0.05)
            assert sum(counts) == 4 and min(counts) >= 1, counts  # both servers have some
            with urllib.request.urlopen(proxy + "api/state", timeout=5) as reply:
                assert "gmv_fen" in reply.read().decode()
        finally:
            for ws in sockets:
                await ws.close()
