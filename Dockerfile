# syntax=docker/dockerfile:1
# The ticker as one image for every service of docker-compose.yml:
#   docker build -t festival-ticker .
#   docker run --rm festival-ticker --help
# Builder: a compiler, so the wheel carries the C fan-out writer (ticker/_fanout.c), and the
# wheels of every dependency. Runtime: python:3.11-slim with those wheels only (no compiler,
# no source tree, nothing fetched at start), run as a non-root user.
# tests/test_image.py runs the same install steps in a fresh virtualenv.

FROM python:3.11-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ticker ticker
COPY simulator simulator
# The extension is optional in pyproject.toml (a source install without a compiler goes on
# without it); here its absence is an error.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -c "import sys, zipfile, glob; \
names = zipfile.ZipFile(glob.glob('/wheels/festival_ticker-*.whl')[0]).namelist(); \
sys.exit(0 if any(n.startswith('ticker/_fanout') and n.endswith('.so') for n in names) \
else 'the wheel lacks the C extension ticker._fanout')" \
    && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/festival_ticker-*.whl

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TICKER_WEB_DIR=/opt/ticker/web
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels festival-ticker \
    && ticker --help > /dev/null \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ticker
COPY web /opt/ticker/web
USER ticker
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["ticker"]
CMD ["--help"]
