"""The Dockerfile's contract with docker-compose.yml and tests/ops/image_install.sh."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
STAGES = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def instructions(stage: str, name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"^{name} (.*)$", stage, flags=re.M)]


def test_two_stages_on_python_311_slim_the_builder_with_a_compiler() -> None:
    """A builder with gcc, a runtime without it; both python:3.11-slim."""
    assert [s.split()[0] for s in STAGES] == ["python:3.11-slim", "python:3.11-slim"]
    builder, runtime = STAGES
    assert "AS builder" in builder.splitlines()[0]
    assert "gcc" in builder and "gcc" not in runtime
    assert "ticker/_fanout" in builder  # the wheel must carry the C extension


def test_the_runtime_installs_only_the_wheels_and_runs_as_a_non_root_user() -> None:
    """No index at install, no source tree copied, USER not root, entrypoint `ticker`."""
    runtime = STAGES[1]
    assert "--no-index" in runtime and "from=builder" in runtime
    copied = [c.split()[0] for c in instructions(runtime, "COPY")]
    assert copied == ["web"]
    (user,) = instructions(runtime, "USER")
    assert user not in ("root", "0") and "useradd" in runtime
    (entrypoint,) = instructions(runtime, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["ticker"]


def test_the_page_is_where_ticker_web_dir_says() -> None:
    """TICKER_WEB_DIR names the folder the page is copied to."""
    runtime = STAGES[1]
    web_dir = re.search(r"TICKER_WEB_DIR=(\S+)", runtime)
    assert web_dir and f"COPY web {web_dir[1]}" in runtime


def test_the_build_context_keeps_what_the_dockerfile_copies() -> None:
    """.dockerignore leaves out neither the sources nor the page, but drops compiled files."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for needed in ("pyproject.toml", "README.md", "ticker", "simulator", "web"):
        assert needed not in ignored
    assert "**/*.so" in ignored and ".git" in ignored
