"""A Prometheus scrape of a large process: 1,000 breakers, 1,000 rate limiters (a default
bucket and one endpoint each) and 100 operations with latency histograms.

The issue's bound: one scrape in at most 20 ms. Beside ours, the same families written
by prometheus-client's ``generate_latest`` through our collector (the usual way a custom
collector is served), and the read of the native counters alone (the floor).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from peak_resilience import _instances
from peak_resilience.metrics import metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker

BREAKERS = 1_000
LIMITERS = 1_000
OPERATIONS = 100


@pytest.fixture(scope="module")
def large_process() -> Iterator[None]:
    breakers = [
        CircuitBreaker(failure_threshold=1, name=f"bench-breaker-{i}") for i in range(BREAKERS)
    ]
    for breaker in breakers[::2]:
        breaker.record_failure()  # half of them opened once: transition counters move
    limiters = []
    for i in range(LIMITERS):
        limiter = RateLimiter(100, 60, name=f"bench-limiter-{i}")
        limiter.add_endpoint("fetch_ohlcv", 50, 60)
        limiter.acquire()
        limiter.acquire("fetch_ohlcv")
        limiters.append(limiter)
    for i in range(OPERATIONS):
        stats = _instances.operation(f"bench-operation-{i}")
        for seconds in (0.0002, 0.003, 0.04):
            stats.record_latency(seconds)
            stats.record_success()
        stats.record_failure("TimeoutError")
    yield
    del breakers, limiters


@pytest.mark.benchmark(group="scrape")
def test_ours_scrape_text(benchmark: Any, large_process: None) -> None:
    body, _ = benchmark(metrics.exposition)
    assert body.count(b"peak_trade_circuit_breaker_state{") >= BREAKERS


@pytest.mark.benchmark(group="scrape")
def test_ours_scrape_openmetrics(benchmark: Any, large_process: None) -> None:
    accept = "application/openmetrics-text;version=1.0.0"
    body, _ = benchmark(metrics.exposition, accept)
    assert body.endswith(b"# EOF\n")


@pytest.mark.benchmark(group="scrape")
def test_floor_read_native_counters(benchmark: Any, large_process: None) -> None:
    readings = benchmark(metrics.read)
    assert len(readings.breaker_states) >= BREAKERS


@pytest.mark.benchmark(group="scrape")
def test_prometheus_client_generate_latest(benchmark: Any, large_process: None) -> None:
    registry = CollectorRegistry()
    metrics.register_collector(registry)
    try:
        body = benchmark(generate_latest, registry)
    finally:
        metrics.unregister_collector(registry)
    assert body.count(b"peak_trade_circuit_breaker_state{") >= BREAKERS
