"""The guide's Circuit Breaker, Rate Limiting and Integration Guide examples, as written
(``src.core.`` read as ``peak_resilience.``), each followed by what its reader expects.

The one addition: a limiter counted to its exact budget gets ``clock=clock`` (a manual
clock), so that a slow run cannot refill a token mid-count."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience.config import configure
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.resilience import CircuitState
from peak_resilience.testing import ManualClock

WriteConfig = Callable[..., Path]

GUIDE_CONFIGURATION_FILE = """
# ============================================================================
# RESILIENCE & STABILITY
# ============================================================================
[resilience]
# Global settings
circuit_breaker_enabled = true
circuit_breaker_threshold = 5
circuit_breaker_timeout = 60
rate_limit_enabled = true
rate_limit_requests = 100
rate_limit_window = 60
metrics_enabled = true

# Module-specific settings override global defaults
[resilience.backtest]
circuit_breaker_threshold = 5
circuit_breaker_timeout = 60

[resilience.portfolio]
circuit_breaker_threshold = 3
circuit_breaker_timeout = 30

[resilience.risk]
circuit_breaker_threshold = 3
fail_safe_defaults = true

[resilience.live]
circuit_breaker_threshold = 2
circuit_breaker_timeout = 120
rate_limit_requests = 30
"""


# ---------------------------------------------------------------------------------------
# Circuit Breaker Pattern


def test_circuit_breaker_method_1_the_decorator(fresh: ManualClock) -> None:
    fetched: list[str] = []

    def fetch_data(symbol: str) -> str:
        fetched.append(symbol)
        return f"candles of {symbol}"

    from peak_resilience.resilience_helpers import with_resilience

    @with_resilience("backtest", "data_load")
    def load_market_data(symbol: str):  # type: ignore[no-untyped-def]
        """Load market data with circuit breaker protection."""
        # Your implementation here
        return fetch_data(symbol)

    assert load_market_data("BTC/EUR") == "candles of BTC/EUR"
    assert load_market_data.__doc__ == "Load market data with circuit breaker protection."
    assert fetched == ["BTC/EUR"]


def test_circuit_breaker_method_2_a_module_breaker(fresh: ManualClock) -> None:
    from peak_resilience.resilience_helpers import create_module_circuit_breaker

    # Create circuit breaker for your module
    breaker = create_module_circuit_breaker("portfolio", "calculation")

    @breaker.call
    def calculate_portfolio_metrics():  # type: ignore[no-untyped-def]
        """Calculate portfolio metrics with circuit breaker."""
        # Your implementation here
        pass

    assert calculate_portfolio_metrics() is None
    assert breaker.name == "portfolio.calculation"
    assert breaker.success_total == 1


def test_circuit_breaker_method_3_a_manual_breaker() -> None:
    from peak_resilience.resilience import CircuitBreaker

    breaker = CircuitBreaker(
        failure_threshold=5,  # Open after 5 failures
        recovery_timeout=60.0,  # Try recovery after 60 seconds
        name="my_operation",
    )

    @breaker.call
    def risky_operation():  # type: ignore[no-untyped-def]
        """Operation protected by circuit breaker."""
        # Your implementation here
        pass

    assert risky_operation() is None
    assert (breaker.failure_threshold, breaker.recovery_timeout) == (5, 60.0)
    assert breaker.state is CircuitState.CLOSED


def test_circuit_breaker_configuration_sets_the_module_breakers(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(
        write_config("""
        [resilience]
        circuit_breaker_enabled = true
        circuit_breaker_threshold = 5
        circuit_breaker_timeout = 60

        [resilience.portfolio]
        circuit_breaker_threshold = 3
        circuit_breaker_timeout = 30
    """)
    )
    from peak_resilience.resilience_helpers import create_module_circuit_breaker

    portfolio = create_module_circuit_breaker("portfolio", "calculation")
    backtest = create_module_circuit_breaker("backtest", "data_load")

    assert (portfolio.failure_threshold, portfolio.recovery_timeout) == (3, 30.0)
    assert (backtest.failure_threshold, backtest.recovery_timeout) == (5, 60.0)

    @portfolio.call
    def calculate() -> None:
        raise ArithmeticError("singular covariance matrix")

    for _ in range(3):
        with pytest.raises(ArithmeticError):
            calculate()
    assert portfolio.state is CircuitState.OPEN
    fresh.advance(30)
    assert portfolio.state.name == "HALF_OPEN"


# ---------------------------------------------------------------------------------------
# Rate Limiting


def test_rate_limiting_basic_usage(clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    logger = logging.getLogger("your_module")

    def make_api_call() -> None:
        calls.append(1)

    from peak_resilience.rate_limiter import RateLimiter

    # Create rate limiter: 100 requests per 60 seconds
    limiter = RateLimiter(max_requests=100, window_seconds=60, clock=clock)

    for _ in range(101):
        # Try to acquire permission for a request
        if limiter.acquire():
            # Request allowed
            make_api_call()
        else:
            # Rate limited
            logger.warning("Rate limit exceeded")

    assert len(calls) == 100
    assert [r.getMessage() for r in caplog.records] == ["Rate limit exceeded"]


def test_rate_limiting_endpoint_specific_limits(clock: ManualClock) -> None:
    fetched: list[str] = []

    def fetch_ohlcv_data() -> None:
        fetched.append("ohlcv")

    from peak_resilience.rate_limiter import RateLimiter

    limiter = RateLimiter(max_requests=100, window_seconds=60, clock=clock)

    # Add endpoint-specific limits
    limiter.add_endpoint("fetch_ohlcv", max_requests=50, window_seconds=60)
    limiter.add_endpoint("fetch_ticker", max_requests=200, window_seconds=60)

    # Use endpoint-specific limits
    for _ in range(60):
        if limiter.acquire("fetch_ohlcv"):
            fetch_ohlcv_data()

    assert len(fetched) == 50
    assert sum(limiter.acquire("fetch_ticker") for _ in range(250)) == 200
    assert sum(limiter.acquire() for _ in range(150)) == 100


def test_rate_limiting_with_resilience_helpers(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(
        write_config("""
        [resilience.data]
        rate_limit_requests = 2
    """)
    )
    from peak_resilience.resilience_helpers import with_resilience

    @with_resilience(
        "data",
        "api_fetch",
        use_rate_limiter=True,
        use_circuit_breaker=True,
    )
    def fetch_data_from_api():  # type: ignore[no-untyped-def]
        """Fetch data with both rate limiting and circuit breaker."""
        # Your implementation here
        pass

    fetch_data_from_api()
    fetch_data_from_api()
    with pytest.raises(RateLimitExceeded):
        fetch_data_from_api()


def test_rate_limiter_configuration_sets_the_module_limiters(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(
        write_config("""
        [resilience]
        rate_limit_enabled = true
        rate_limit_requests = 100
        rate_limit_window = 60

        [resilience.data]
        rate_limit_requests = 200
        rate_limit_window = 60
    """)
    )
    from peak_resilience.resilience_helpers import create_module_rate_limiter

    data = create_module_rate_limiter("data", "api_fetch")
    other = create_module_rate_limiter("backtest", "data_load")

    assert sum(data.acquire() for _ in range(250)) == 200
    assert sum(other.acquire() for _ in range(250)) == 100
    fresh.advance(0.3)  # 200 per 60 s: one token every 0.3 s
    assert data.acquire() is True


# ---------------------------------------------------------------------------------------
# Configuration


def test_the_configuration_file_structure_block_applies(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(GUIDE_CONFIGURATION_FILE, name="config.toml"))
    from peak_resilience.resilience_helpers import (
        create_module_circuit_breaker,
        create_module_rate_limiter,
    )

    live = create_module_circuit_breaker("live", "orders")
    assert (live.failure_threshold, live.recovery_timeout) == (2, 120.0)
    assert create_module_rate_limiter("live", "orders").default_bucket.capacity == 30
    assert create_module_circuit_breaker("risk", "check").failure_threshold == 3


def test_the_environment_overrides_of_the_guide(
    fresh: ManualClock, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEAK_TRADE_CIRCUIT_BREAKER_THRESHOLD", "10")
    monkeypatch.setenv("PEAK_TRADE_RATE_LIMIT_REQUESTS", "200")
    configure(write_config(GUIDE_CONFIGURATION_FILE, name="config.toml"))
    from peak_resilience.resilience_helpers import (
        create_module_circuit_breaker,
        create_module_rate_limiter,
    )

    assert create_module_circuit_breaker("data", "fetch").failure_threshold == 10
    assert create_module_rate_limiter("data", "fetch").default_bucket.capacity == 200


# ---------------------------------------------------------------------------------------
# Integration Guide


def test_integration_step_1_and_2_a_module_configured_from_its_table(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    # 2. Configure Module Settings: add to config.toml
    write_config(
        """
        [resilience.your_module]
        circuit_breaker_enabled = true
        circuit_breaker_threshold = 5
        rate_limit_requests = 100
    """,
        name="config.toml",
    )

    # 1. Add Resilience to Your Module (no configure() call: ./config.toml is found)
    # your_module.py
    import logging

    from peak_resilience.resilience_helpers import with_resilience

    logger = logging.getLogger(__name__)

    @with_resilience("your_module", "operation_name")
    def your_function():  # type: ignore[no-untyped-def]
        """Your function with resilience."""
        # Your implementation
        pass

    assert logger.name == __name__
    assert your_function() is None
    from peak_resilience.resilience_helpers import (
        create_module_rate_limiter,
        get_all_circuit_breakers,
    )

    breaker = get_all_circuit_breakers()["your_module.operation_name"]
    assert breaker.failure_threshold == 5
    assert breaker.success_total == 1
    limiter = create_module_rate_limiter("your_module", "operation_name")
    assert limiter.default_bucket.capacity == 100


def test_integration_step_1_the_breaker_opens_at_the_configured_threshold(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(
        write_config("""
        [resilience.your_module]
        circuit_breaker_enabled = true
        circuit_breaker_threshold = 5
        rate_limit_requests = 100
    """)
    )
    from peak_resilience.resilience_helpers import with_resilience

    @with_resilience("your_module", "operation_name")
    def your_function() -> None:
        raise TimeoutError("dependency timed out")

    for _ in range(5):
        with pytest.raises(TimeoutError):
            your_function()
    with pytest.raises(Exception) as raised:
        your_function()

    assert "CircuitBreaker" in str(raised.value)  # the guide's Best Practices check
    assert isinstance(raised.value, CircuitBreakerError)


def test_integration_step_3_register_health_checks() -> None:
    from peak_resilience.resilience import health_check

    def check_your_module():  # type: ignore[no-untyped-def]
        # Check logic
        return True, "Module is healthy"

    health_check.register("your_module", check_your_module)

    assert health_check.run_all()["your_module"]["healthy"] is True


def test_troubleshooting_a_stuck_breaker_is_reset_by_name(fresh: ManualClock) -> None:
    from peak_resilience.resilience_helpers import (
        create_module_circuit_breaker,
        get_all_circuit_breakers,
    )

    create_module_circuit_breaker("your", "breaker").force_open()

    breakers = get_all_circuit_breakers()
    breakers["your.breaker"].reset()

    assert create_module_circuit_breaker("your", "breaker").state is CircuitState.CLOSED
