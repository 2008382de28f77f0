"""The public API as a user's type checker sees it; checked by `mypy --strict` in
scripts/lint (this file is not run by pytest).

`assert_type` pins each type a user relies on. Each `# type: ignore[...]` marks a misuse
that mypy must reject: under --strict an ignore that is no longer needed is itself an
error, so if a decorator stopped keeping the signature of the function it wraps, the
misuse would be accepted and the check would fail.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

from peak_resilience import (
    CircuitBreaker,
    CircuitBreakerError,
    CircuitState,
    ConfigError,
    RateLimiter,
    RateLimitExceeded,
    ResilienceError,
    configure,
    load_config,
    with_resilience,
)
from peak_resilience.config import Config, Settings
from peak_resilience.events import (
    BackendOutage,
    BreakerTransition,
    CallRefused,
    Event,
    add_listener,
    remove_listener,
)
from peak_resilience.http import HealthServer, start_health_server
from peak_resilience.metrics import metrics
from peak_resilience.rate_limiter import RateLimiter as GuideRateLimiter
from peak_resilience.rate_limiter import Reservation
from peak_resilience.resilience import CircuitBreaker as GuideCircuitBreaker
from peak_resilience.resilience import health_check
from peak_resilience.resilience_helpers import (
    create_module_circuit_breaker,
    create_module_rate_limiter,
    get_all_circuit_breakers,
    get_all_rate_limiters,
)
from peak_resilience.testing import ManualClock

# The guide's import paths name the same classes.
assert_type(GuideRateLimiter(100, 60), RateLimiter)
assert_type(GuideCircuitBreaker(), CircuitBreaker)

clock = ManualClock(start=0.0)

# --- rate limiter ---------------------------------------------------------------------

limiter = RateLimiter(100, 60.0, burst=20, clock=clock, name="binance")
limiter.add_endpoint("fetch_ticker", 200, 60.0)
assert_type(limiter.acquire(), bool)
assert_type(limiter.acquire("fetch_ticker", cost=5), bool)
assert_type(limiter.get_wait_time(), float)
assert_type(limiter.get_stats(), dict[str, Any])
assert_type(limiter.acquire_blocking("fetch_ticker", cost=2, timeout=1.0), bool)
assert_type(limiter.name, str)
limiter.acquire(cost="5")  # type: ignore[arg-type]
RateLimiter("100", 60.0)  # type: ignore[arg-type]

# Issue 8: several windows, reservations, sync, priority lanes, pause.
budget = RateLimiter(limits=["1200/60s", "50/10s"], priority_reserve=5, clock=clock)
assert_type(budget.acquire(cost=2, priority="high"), bool)
reservation = budget.reserve(10)
assert_type(reservation, Reservation | None)
if reservation is not None:
    reservation.settle(7)
budget.sync(100, window="60s")
budget.pause(1.5)
assert_type(budget.paused_for, float)
budget.reserve("10")  # type: ignore[arg-type]
budget.acquire(priority=1)  # type: ignore[arg-type]

# --- circuit breaker --------------------------------------------------------------------

breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=30.0, name="exchange", clock=clock)
assert_type(breaker.state, CircuitState)
assert_type(breaker.failure_count, int)
assert_type(breaker.get_stats(), dict[str, Any])
gauge_value: int = CircuitState.OPEN  # an IntEnum: the state gauge's number
breaker.reset()

# Issue 8: policies, Retry-After, manual states.
policed = CircuitBreaker(
    failure_rate_threshold=0.5,
    minimum_calls=20,
    window_type="time",
    window_size=60.0,
    slow_call_duration=2.0,
    backoff_multiplier=2.0,
    max_recovery_timeout=300.0,
    record_exceptions=(TimeoutError, ConnectionError),
    ignore_exceptions=KeyError,
    failure_result=lambda reply: reply is None,
    metrics_only=True,
    clock=clock,
)
policed.open_for(2.5)
policed.disable()
policed.force_open()
policed.set_metrics_only(False)
assert_type(policed.shadow_state, CircuitState)
assert_type(policed.would_reject_total, int)
assert_type(policed.failure_rate, float)
forced_value: int = CircuitState.FORCED_OPEN
CircuitBreaker(window_type="sliding")  # type: ignore[arg-type]
CircuitBreaker(record_exceptions="TimeoutError")  # type: ignore[arg-type]


@breaker.call
def submit_order(symbol: str, quantity: float, *, limit: float | None = None) -> str:
    return f"{symbol}:{quantity}:{limit}"


@breaker.call
async def fetch_price(symbol: str) -> float:
    return 1.0


class Exchange:
    @breaker.call
    def balance(self, currency: str) -> float:
        return 0.0


# A decorated function keeps its parameters and return type, sync and async alike.
assert_type(submit_order("BTC/USDT", 0.5, limit=42000.0), str)
assert_type(Exchange().balance("USDT"), float)
submit_order(0.5, "BTC/USDT")  # type: ignore[arg-type]
submit_order("BTC/USDT", 0.5, limt=1.0)  # type: ignore[call-arg]
Exchange().balance()  # type: ignore[call-arg]


async def use_async() -> None:
    pending = assert_type(fetch_price("ETH/USDT"), Coroutine[Any, Any, float])
    assert_type(await pending, float)
    assert_type(await limiter.acquire_async("fetch_ticker", timeout=1.0), bool)
    await fetch_price(1)  # type: ignore[arg-type]


# --- errors -----------------------------------------------------------------------------

try:
    submit_order("BTC/USDT", 1.0)
except CircuitBreakerError as refused:
    assert_type(refused.name, str)
    assert_type(refused.retry_after, float)
except RateLimitExceeded as limited:
    assert_type(limited.limiter, str)
    assert_type(limited.endpoint, str | None)
    assert_type(limited.retry_after, float)

error: ResilienceError = CircuitBreakerError("open")
also: ResilienceError = RateLimitExceeded("limited")


# --- configuration and the module helpers ---------------------------------------------

assert_type(load_config("config.toml"), Config)
assert_type(configure(), Config)
assert_type(load_config().module("live"), Settings)
assert_type(load_config().module("live").circuit_breaker_threshold, int)
config_error: ValueError = ConfigError("bad", source="config.toml", table="resilience", key="k")
assert_type(create_module_circuit_breaker("portfolio", "calculation"), CircuitBreaker)
assert_type(create_module_rate_limiter("live", "orders"), RateLimiter)
assert_type(get_all_circuit_breakers(), dict[str, CircuitBreaker])
assert_type(get_all_rate_limiters(), dict[str, RateLimiter])


@with_resilience("live", "submit_order", use_rate_limiter=True)
def submit_live_order(symbol: str, quantity: float) -> str:
    return symbol


@with_resilience("data", "fetch")
async def fetch_candles(symbol: str, limit: int = 100) -> list[float]:
    return []


class Portfolio:
    @with_resilience("portfolio", "value")
    def value(self, currency: str) -> float:
        return 0.0


assert_type(submit_live_order("BTC/EUR", 0.5), str)
assert_type(Portfolio().value("EUR"), float)
submit_live_order(0.5, "BTC/EUR")  # type: ignore[arg-type]
Portfolio().value()  # type: ignore[call-arg]
with_resilience("live", "orders", use_rate_limiter="yes")  # type: ignore[call-overload]


async def use_module_async() -> None:
    assert_type(await fetch_candles("ETH/EUR", limit=5), list[float])
    await fetch_candles(5)  # type: ignore[arg-type]


# --- metrics, health checks, HTTP ---------------------------------------------------------

with metrics.track_latency("data_fetch"):
    pass


@metrics.track_latency("calculation")
def calculate(window: int) -> float:
    return float(window)


@metrics.track_latency("fetch")
async def fetch_ticker(symbol: str) -> float:
    return 1.0


assert_type(calculate(20), float)
calculate("20")  # type: ignore[arg-type]
metrics.record_circuit_breaker_state_change(name="portfolio", from_state="closed", to_state="open")
metrics.record_rate_limit_hit("api", "fetch_ohlcv")
metrics.record_operation_failure("backtest", "ValueError")
assert_type(metrics.get_snapshots(limit=100), list[dict[str, Any]])
assert_type(metrics.get_summary(), dict[str, Any])
metrics.track_latency(42)  # type: ignore[arg-type]


def check_database_connection() -> tuple[bool, str]:
    return True, "Database is healthy"


async def check_exchange() -> bool:
    return True


health_check.register("database", check_database_connection)
health_check.register("exchange", check_exchange, critical=False, timeout=2.0)
health_check.register("broken", lambda: "yes")  # type: ignore[arg-type,return-value]
assert_type(health_check.is_system_healthy(), bool)
assert_type(health_check.run_all()["database"]["healthy"], bool)
assert_type(health_check.run_all()["database"]["duration_ms"], float)

server = assert_type(start_health_server(port=0), HealthServer)
assert_type(server.port, int)
assert_type(server.url, str)
server.stop()

# Events: a listener takes the Event union and narrows it.
seen_events: list[str] = []


def on_event(event: Event) -> None:
    if isinstance(event, BreakerTransition):
        assert_type(event.to_state, CircuitState)
    elif isinstance(event, CallRefused):
        assert_type(event.retry_after, float)
    else:
        assert_type(event, BackendOutage)
        assert_type(event.available, bool)


add_listener(on_event)
remove_listener(on_event)
GuideCircuitBreaker(name="typed").add_listener(on_event)
GuideRateLimiter(5, 1.0).add_listener(seen_events.append)  # type: ignore[arg-type]
add_listener("not callable")  # type: ignore[arg-type]
