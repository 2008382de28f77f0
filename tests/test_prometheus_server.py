"""A real Prometheus server scrapes /health/prometheus and answers a query with the
breaker's state. Prometheus (Debian package ``prometheus``) is started here on a free
loopback port with its own config and data directory, and stopped by pid. Prometheus
2.42 asks for OpenMetrics first, so this also holds that writer against Prometheus' own
parser."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from peak_resilience.http import HealthServer, start_health_server
from peak_resilience.resilience import CircuitBreaker

QUERY_DEADLINE = 90.0  # seconds: Prometheus start-up plus a few 1 s scrape intervals


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    running = start_health_server(port=0)
    yield running
    running.stop()


@pytest.fixture
def prometheus(health_server: HealthServer, tmp_path: Path) -> Iterator[str]:
    """The base URL of a Prometheus that scrapes ``health_server`` every second."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: peak_resilience\n"
        "    metrics_path: /health/prometheus\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{health_server.port}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


def query(base: str, promql: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        answer = json.load(reply)
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def wait_for_value(base: str, promql: str, expected: str) -> str:
    """Polls until the query's single result reads ``expected`` (or the deadline)."""
    deadline = time.monotonic() + QUERY_DEADLINE
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = query(base, promql)
        except (urllib.error.URLError, ConnectionError):
            result = []  # not listening yet
        if result:
            value = result[0]["value"]
            assert isinstance(value, list)
            last = value[1]
            if last == expected:
                return expected
        time.sleep(0.25)
    raise AssertionError(f"{promql} never read {expected} (last: {last!r})")


def test_prometheus_scrapes_the_breaker_state_and_sees_it_change(prometheus: str) -> None:
    name = "prometheus_scraped_orders"
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=3600, name=name)
    breaker.record_failure()
    state = f'peak_trade_circuit_breaker_state{{name="{name}"}}'
    assert wait_for_value(prometheus, state, "2") == "2"
    breaker.reset()  # the next scrape reads the native state: no stale gauge
    assert wait_for_value(prometheus, state, "0") == "0"
    changes = (
        f'peak_trade_circuit_breaker_state_changes_total{{name="{name}",'
        'from_state="closed",to_state="open"}'
    )
    assert query(prometheus, changes)[0]["value"][1] == "1"  # type: ignore[index]
    assert query(prometheus, 'up{job="peak_resilience"}')[0]["value"][1] == "1"  # type: ignore[index]
