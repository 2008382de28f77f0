"""The guide's Metrics & Monitoring, Health Checks, Debugging and Complete Example
sections, as written (``src.core.`` read as ``peak_resilience.``), each followed by what
its reader expects. Names the guide leaves undefined (``fetch_data``, ``database``) are
stand-ins defined here."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from peak_resilience.http import start_health_server
from peak_resilience.resilience import health_check
from peak_resilience.testing import ManualClock


@pytest.fixture
def guide_checks() -> Iterator[None]:
    """Removes the checks the examples register from the process-wide registry."""
    before = set(health_check.names())
    yield
    for name in set(health_check.names()) - before:
        health_check.unregister(name)


def fetch_data() -> dict[str, float]:
    return {"BTC/EUR": 42_000.0}


# ---------------------------------------------------------------------------------------
# Metrics & Monitoring


def test_using_metrics() -> None:
    from peak_resilience.metrics import metrics

    # Track operation latency
    with metrics.track_latency("data_fetch"):
        fetch_data()

    # Record circuit breaker state change
    metrics.record_circuit_breaker_state_change(
        name="portfolio", from_state="closed", to_state="open"
    )

    # Record rate limit hit
    metrics.record_rate_limit_hit("api", "fetch_ohlcv")

    # Record operation failure
    metrics.record_operation_failure("backtest", "ValueError")

    summary = metrics.get_summary()
    assert summary["operations"]["data_fetch"]["successes"] >= 1
    assert summary["circuit_breakers"]["portfolio"]["state"] == "open"
    assert summary["rate_limiters"]["api"]["fetch_ohlcv"]["requests"] >= 1
    assert summary["operations"]["backtest"]["failures_by_type"]["ValueError"] >= 1


def test_accessing_metrics_in_memory_snapshots() -> None:
    from peak_resilience.metrics import metrics

    metrics.record_operation_failure("backtest", "ValueError")

    # Get recent snapshots
    snapshots = metrics.get_snapshots(limit=100)

    # Get summary
    summary = metrics.get_summary()

    assert snapshots[-1]["event"] == "operation_failure"
    assert len(snapshots) <= 100
    json.dumps(summary)  # the summary is what GET /health/metrics serves


def test_use_labels_effectively() -> None:
    from peak_resilience.metrics import metrics

    metrics.record_operation_failure(operation="backtest.calculate", error_type="ValueError")

    failures = metrics.get_summary()["operations"]["backtest.calculate"]["failures_by_type"]
    assert failures["ValueError"] >= 1


def test_accessing_metrics_over_http(guide_checks: None) -> None:
    server = start_health_server(port=0)
    try:
        # 1. Prometheus Endpoint: GET /health/prometheus
        with urllib.request.urlopen(f"{server.url}/health/prometheus") as reply:
            assert b"peak_trade_circuit_breaker_state" in reply.read()
        # 2. JSON Format: GET /health/metrics
        with urllib.request.urlopen(f"{server.url}/health/metrics") as reply:
            assert "operations" in json.load(reply)
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# Health Checks


class Database:
    def ping(self) -> bool:
        return True


database = Database()


def test_registering_health_checks(guide_checks: None) -> None:
    def check_database_connection():  # type: ignore[no-untyped-def]
        """Check if database is accessible."""
        try:
            # Your check logic
            result = database.ping()  # noqa: F841
            return True, "Database is healthy"
        except Exception as e:
            return False, f"Database check failed: {e}"

    # Register the check
    health_check.register("database", check_database_connection)

    # Run all checks
    results = health_check.run_all()
    is_healthy = health_check.is_system_healthy()

    assert results["database"] == {
        "healthy": True,
        "message": "Database is healthy",
        "duration_ms": results["database"]["duration_ms"],
        "critical": True,
    }
    assert isinstance(is_healthy, bool)


def test_the_built_in_health_checks_of_the_guide_are_registered() -> None:
    # Metrics system, Resilience system, Circuit breakers
    assert {"metrics", "resilience", "circuit_breakers"} <= set(health_check.names())


def test_health_check_api_endpoints(guide_checks: None) -> None:
    server = start_health_server(port=0)
    try:
        for path in ("/health", "/health/detailed", "/health/metrics", "/health/prometheus"):
            try:
                with urllib.request.urlopen(f"{server.url}{path}") as reply:
                    status = reply.status
            except urllib.error.HTTPError as unhealthy:  # /health: 503 if a check fails
                status = unhealthy.code
            assert status in (200, 503), path
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# Debugging


def test_debugging_check_metrics_for_issues(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("peak_resilience.metrics").setLevel(logging.DEBUG)

    from peak_resilience.metrics import metrics

    summary = metrics.get_summary()
    print(summary)

    assert "circuit_breakers" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# Complete Example: Resilient Data Fetcher


def test_complete_example_resilient_data_fetcher(fresh: ManualClock, guide_checks: None) -> None:
    from peak_resilience.metrics import metrics
    from peak_resilience.resilience import health_check
    from peak_resilience.resilience_helpers import (
        create_module_circuit_breaker,
        create_module_rate_limiter,
        with_resilience,
    )

    logger = logging.getLogger(__name__)

    class DataFetcher:
        def __init__(self):  # type: ignore[no-untyped-def]
            self.circuit_breaker = create_module_circuit_breaker("data", "fetch")
            self.rate_limiter = create_module_rate_limiter("data", "api")

            # Register health check
            health_check.register("data_fetcher", self._health_check)

        @with_resilience("data", "fetch", use_rate_limiter=True)
        def fetch_market_data(self, symbol: str):  # type: ignore[no-untyped-def]
            """Fetch market data with full resilience."""
            try:
                # Your fetch logic here
                data = self._fetch_from_api(symbol)
                logger.info(f"Successfully fetched data for {symbol}")
                return data
            except Exception as e:
                logger.error(f"Failed to fetch data for {symbol}: {e}")
                # Try cache as fallback
                return self._get_cached_data(symbol)

        def _health_check(self):  # type: ignore[no-untyped-def]
            """Health check for data fetcher."""
            try:
                # Quick check
                self.fetch_market_data("BTC/EUR")
                return True, "Data fetcher operational"
            except Exception as e:
                return False, f"Data fetcher error: {e}"

        def _fetch_from_api(self, symbol: str):  # type: ignore[no-untyped-def]
            # Actual API call
            return {"symbol": symbol, "price": 42_000.0}

        def _get_cached_data(self, symbol: str):  # type: ignore[no-untyped-def]
            # Fallback to cache
            pass

    fetcher = DataFetcher()
    assert fetcher.fetch_market_data("ETH/EUR") == {"symbol": "ETH/EUR", "price": 42_000.0}
    result: dict[str, Any] = health_check.run_all()["data_fetcher"]
    assert (result["healthy"], result["message"]) == (True, "Data fetcher operational")
    assert metrics.get_summary()["operations"]["data.fetch"]["successes"] >= 2
