"""`/sse` through the compose file's own nginx.conf, with two `ticker serve` behind it."""

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import Ticker, serving, stop, wait_http
from tests.server.test_sse import curl
from tests.test_compose import nginx_conf
from ticker import feed
from ticker.keys import Keys
from ticker.redis_io import free_port

NGINX = Path("/usr/sbin/nginx")


@contextlib.contextmanager
def proxy(tmp: Path, upstreams: list[int]) -> Iterator[str]:
    """nginx with the compose proxy's configuration, its servers on these local ports."""
    port = free_port()
    conf = nginx_conf().replace("worker_processes auto;", "worker_processes 1;")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("access_log /dev/stdout;", f"access_log {tmp}/access.log;")
    for k, up in enumerate(upstreams, 1):
        conf = conf.replace(f"server server-{k}:8080", f"server 127.0.0.1:{up}")
    (tmp / "nginx.conf").write_text(f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n{conf}")
    proc = subprocess.Popen(
        [str(NGINX), "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"]
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(proc)


@pytest.mark.skipif(not NGINX.is_file(), reason="nginx is not installed")
async def test_sse_through_the_compose_proxy_resumes_on_the_server_still_up(
    ticker: Ticker, tmp_path: Path
) -> None:
    """Ticks pass the proxy unbuffered; with one server gone, Last-Event-ID through the
    proxy reaches the server still up: the milestone missed, then a recovered snapshot."""
    keys, r = Keys(ticker.namespace), aioredis.Redis.from_url(ticker.redis_url)

    async def write(fired: list[str], gmv_fen: int) -> str:
        fire = [{"id": f} for f in fired]
        u = {**feed.EMPTY_STATE, "run": "r1", "gmv_fen": gmv_fen, "fired": fire}
        return (await r.xadd(keys.feed, {"u": orjson.dumps(u)})).decode()

    await r.set(keys.epoch, "E1")
    await write([], 1)
    with serving(ticker) as one, serving(ticker) as two:
        ports = [int(s.url.rsplit(":", 1)[1].strip("/")) for s in (one, two)]
        with proxy(tmp_path, ports) as url:
            async with curl(url + "sse") as c:
                await c.until("snapshot")
                second = await write([], 2)
                last_id = (await c.until("tick"))["id"]
            assert last_id == f"E1/{second}"
            stop(one.proc)
            fired = await write(["m1"], 3)
            async with curl(url + "sse", f"Last-Event-ID: {last_id}") as c:
                milestone = await c.until("milestone")
                snap = await c.next()
    await r.aclose()
    assert (milestone["id"], milestone["data"]["milestone"]["id"]) == (f"E1/{fired}", "m1")
    assert (snap["event"], snap["data"]["recovered"]) == ("snapshot", True)
    assert snap["id"] == f"E1/{fired}"
