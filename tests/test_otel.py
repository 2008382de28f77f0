"""The OpenTelemetry export, read by the SDK's in-memory reader: the same families as
Prometheus, read from the native counters at collection time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import REGISTRY

from peak_resilience._metrics.families import FAMILIES
from peak_resilience.errors import CircuitBreakerError
from peak_resilience.integrations import otel
from peak_resilience.metrics import metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.testing import ManualClock


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.install(provider)
    try:
        yield reader
    finally:
        provider.shutdown()


def collected(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Data points by instrument name, as the reader collects them now."""
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "peak_resilience"
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def value(points: list[Any], **attributes: str) -> float:
    (match,) = [p for p in points if dict(p.attributes) == attributes]
    return float(match.value)


def test_the_reader_sees_the_breaker_state_and_the_rejections(
    reader: InMemoryMetricReader, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(1, 30.0, name="otel-exchange", clock=clock)
    limiter = RateLimiter(2, 60.0, name="otel-orders", clock=clock)
    guarded = breaker.call(lambda: "sent")
    breaker.record_failure()
    with pytest.raises(CircuitBreakerError):
        guarded()
    admitted = [limiter.acquire() for _ in range(5)]
    assert admitted == [True, True, False, False, False]

    points = collected(reader)
    state = points["peak_trade_circuit_breaker_state"]
    assert value(state, name="otel-exchange") == CircuitState.OPEN
    assert value(points["peak_trade_circuit_breaker_failures"], name="otel-exchange") == 1
    opened = {"name": "otel-exchange", "from_state": "closed", "to_state": "open"}
    assert value(points["peak_trade_circuit_breaker_state_changes"], **opened) == 1
    rejections = points["peak_trade_rate_limit_rejections"]
    assert value(rejections, limiter="otel-orders", endpoint="default") == 3
    hits = points["peak_trade_rate_limit_hits"]
    assert value(hits, limiter="otel-orders", endpoint="default") == 5

    # Read at collection time: the next collection sees the breaker half-open.
    clock.advance(30.0)
    later = collected(reader)
    assert value(later["peak_trade_circuit_breaker_state"], name="otel-exchange") == 1


def test_every_prometheus_family_is_an_instrument_with_its_unit(
    reader: InMemoryMetricReader, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(name="otel-state", clock=clock)
    with metrics.track_latency("otel-fetch"):
        pass
    data = reader.get_metrics_data()
    assert data is not None
    instruments = {
        m.name: m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
    }
    expected = set()
    for suffix, kind, _ in FAMILIES:
        name = f"peak_trade_{suffix}"
        parts = ("_bucket", "_count", "_sum") if kind == "histogram" else ("",)
        expected |= {name + part for part in parts}
    # Only families with samples have data points; those must all be ours.
    assert set(instruments) <= expected
    duration = "peak_trade_request_duration_seconds"
    assert instruments[f"{duration}_sum"].unit == "s"
    assert value(instruments[f"{duration}_count"].data.data_points, operation="otel-fetch") == 1
    buckets = instruments[f"{duration}_bucket"].data.data_points
    assert {
        dict(p.attributes)["le"] for p in buckets if p.attributes["operation"] == "otel-fetch"
    } >= {"+Inf"}
    state = instruments["peak_trade_circuit_breaker_state"]
    assert state.unit == "1"
    assert value(state.data.data_points, name=breaker.name) == CircuitState.CLOSED
    health = instruments["peak_trade_health_check_status"].data.data_points
    assert value(health, check="resilience", critical="true") == 1


def test_instead_of_prometheus_takes_the_families_out_of_the_default_registry() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        otel.install(provider, prometheus=False)
        assert REGISTRY.get_sample_value("peak_trade_circuit_breaker_state", {"name": "x"}) is None
        assert not [m for m in REGISTRY.collect() if m.name.startswith("peak_trade_")]
        assert "peak_trade_health_check_status" in collected(reader)
    finally:
        metrics.register_collector()
        provider.shutdown()
