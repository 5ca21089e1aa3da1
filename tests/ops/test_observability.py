"""The compose profile `observability`: Prometheus scrapes every ticker process, Grafana
shows a dashboard whose every series is one the processes really export."""

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Ticker, serving
from tests.ops.test_aggregator_metrics import aggregating, wait_for
from tests.ops.test_replay_metrics import replaying
from tests.test_compose import SERVICES, ticker_command, ticker_services
from ticker.cli import build_parser

OPS = Path(__file__).parent.parent.parent / "ops"
DASHBOARD = json.loads((OPS / "grafana/dashboards/ticker.json").read_text())
PROMETHEUS = yaml.safe_load((OPS / "prometheus/prometheus.yml").read_text())

# Series that no ticker process exports, and who does:
OTHERS = {
    # Prometheus itself, for every target it scrapes.
    "up",
    # redis_exporter (the `redis-exporter` service, oliver006/redis_exporter): used memory,
    # maxmemory (0 when unset) and whether it reached the Redis it was asked about.
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_up",
}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", expr)
    names = {w[0] for w in words if not expr[w.end() :].lstrip().startswith("(")}
    return names - PROMQL_WORDS


def dashboard_series() -> set[str]:
    exprs = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    return set().union(*(metric_names(e) for e in exprs))


def exported(url: str) -> set[str]:
    """Every sample name a /metrics page declares (a summary's _sum and _count too)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names |= {name + s for s in ("_sum", "_count")} if kind == "summary" else {name}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_metric_names_are_read_from_promql() -> None:
    """The parser finds metric names, not functions, labels, durations or keywords."""
    expr = 'sum by (reason) (rate(a_total{job=~"x.*"}[5m])) / on (i) b_count > 0 + time()'
    assert metric_names(expr) == {"a_total", "b_count"}


def test_every_dashboard_series_is_one_the_processes_export(ticker: Ticker) -> None:
    """Each metric the dashboard queries is on a real server's, aggregator's or replay's
    /metrics (or is Prometheus's `up` or a redis_exporter series, named above)."""
    with aggregating(ticker) as agg_url, serving(ticker) as server:
        with replaying(ticker, "--speed", "60") as replay_url:
            names = exported(replay_url)
        wait_for(agg_url, lambda s: s["ticker_aggregator_commits_total"] > 0)
        names |= exported(agg_url) | exported(server.url + "metrics")
    queried = dashboard_series()
    assert {"ticker_clients", "ticker_aggregator_applied_orders_total"} <= queried
    assert {"ticker_replay_orders_written_total", "ticker_live_producer_batches_total"} <= queried
    assert queried - names - OTHERS == set()


def test_every_dashboard_panel_queries_the_provisioned_prometheus() -> None:
    """Panels name the datasource Grafana is provisioned with, by its uid."""
    sources = yaml.safe_load((OPS / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    panels = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
    assert len(panels) >= 9
    for p in panels:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == source["uid"], p["title"]


def scrape_targets(job: str) -> set[str]:
    (config,) = [c for c in PROMETHEUS["scrape_configs"] if c["job_name"] == job]
    return {t for group in config["static_configs"] for t in group["targets"]}


def test_prometheus_scrapes_every_ticker_process() -> None:
    """Every serve, aggregate and replay service is a target, at its /metrics port."""
    parser = build_parser()
    for name in ticker_services():
        args = parser.parse_args(ticker_command(name))
        if args.command == "serve":
            assert f"{name}:{args.port}" in scrape_targets("ticker-server"), name
        if args.command in ("aggregate", "replay"):
            assert args.metrics_host == "0.0.0.0", name
            job = f"ticker-{'aggregator' if args.command == 'aggregate' else 'replay'}"
            assert f"{name}:{args.metrics_port}" in scrape_targets(job), name


def test_prometheus_reaches_every_redis_through_the_exporter() -> None:
    """The single Redis and every cluster node are scraped via redis-exporter's /scrape."""
    redis = {n for n, s in SERVICES.items() if str(s.get("image", "")).startswith("redis:")}
    redis -= {"cluster-init"}
    assert scrape_targets("redis") == {f"redis://{n}:6379" for n in redis}
    (config,) = [c for c in PROMETHEUS["scrape_configs"] if c["job_name"] == "redis"]
    assert config["metrics_path"] == "/scrape"
    assert {"target_label": "__address__", "replacement": "redis-exporter:9121"} in (
        config["relabel_configs"]
    )


def test_observability_profile_runs_prometheus_and_a_provisioned_grafana() -> None:
    """Prometheus gets ops/prometheus; Grafana its provisioning and the dashboards folder."""
    profile = {n for n, s in SERVICES.items() if "observability" in s.get("profiles", [])}
    assert profile == {"prometheus", "grafana", "redis-exporter"}
    assert (
        "./ops/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in (SERVICES["prometheus"]["volumes"])
    )
    mounts: dict[str, Any] = dict(v.rsplit(":", 2)[:2] for v in SERVICES["grafana"]["volumes"])
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((OPS / "grafana/provisioning/dashboards/ticker.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts["./ops/grafana/dashboards"] == path
