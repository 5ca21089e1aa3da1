"""The image's install steps (tests/ops/image_install.sh, as the Dockerfile runs them) give
a `ticker` that works without the source tree: its commands, the C extension, the page."""

import os
import subprocess
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import UNIT, stop, wait_http
from ticker.redis_io import free_port

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The work folder of one run of the install script: venv/, web/ and wheels/."""
    work = tmp_path_factory.mktemp("image")
    script = ROOT / "tests/ops/image_install.sh"
    # Without PYTHONPATH: a source tree on it makes pip think the project is installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        ["bash", str(script), str(ROOT), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600 * UNIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (work / "wheels").glob("festival_ticker-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("ticker/core/") for n in names), "the wheel lacks ticker.core"
    yield work


def run(image: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A program of the image's venv, run from a folder without the source tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(image / "venv/bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        cwd=image,
        env={**env, "TICKER_WEB_DIR": str(image / "web")},
        timeout=60 * UNIT,
        check=False,
    )


def test_the_installed_entrypoint_lists_the_subcommands(image: Path) -> None:
    """`ticker --help` (the image's default command) works from the wheel alone."""
    done = run(image, "ticker", "--help")
    assert done.returncode == 0, done.stderr
    for command in ("replay", "aggregate", "serve"):
        assert command in done.stdout


def test_the_installed_serve_and_aggregate_take_the_compose_options(image: Path) -> None:
    """`ticker serve --help` and `ticker aggregate --help` show what compose passes."""
    serve, aggregate = (
        run(image, "ticker", "serve", "--help"),
        run(image, "ticker", "aggregate", "--help"),
    )
    assert serve.returncode == 0 and "--host" in serve.stdout, serve.stderr
    assert aggregate.returncode == 0 and "--metrics-port" in aggregate.stdout, aggregate.stderr


def test_the_installed_ticker_comes_from_the_venv_with_its_c_extension(image: Path) -> None:
    """`ticker` and `ticker._fanout` import from the venv, not from the source tree."""
    code = "import ticker, ticker._fanout; print(ticker.__file__); print(ticker._fanout.__file__)"
    done = run(image, "python", "-c", code)
    assert done.returncode == 0, done.stderr
    for path in done.stdout.split():
        assert Path(path).is_relative_to(image / "venv"), path


def test_the_installed_server_serves_the_page_from_ticker_web_dir(
    image: Path, redis_url: str
) -> None:
    """`ticker serve` of the venv finds the page where TICKER_WEB_DIR says (the image's web/)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [str(image / "venv/bin/ticker"), "serve", "--port", str(port), "--redis-url", redis_url],
        cwd=image,
        env={**env, "TICKER_WEB_DIR": str(image / "web")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            page = r.read().decode()
    finally:
        stop(proc)
    assert page == (image / "web/index.html").read_text()
