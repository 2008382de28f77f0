"""The native core beside its peers and the floors, one benchmark group per question.

Each benchmark calls a zero-argument callable, as user code would, so the cost of the call
itself is in every number alike. `benches/ratios.py` turns the groups into the issue's ratios.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from peak_resilience.errors import CircuitBreakerError
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker

HUGE = 10**12  # a budget no benchmark run can exhaust: every acquire is admitted


def noop() -> None:
    return None


class PlainError(Exception):
    pass


def raise_plain() -> None:
    raise PlainError


def python_decorator(func: Callable[..., Any]) -> Callable[..., Any]:
    """The trivial decorator the issue compares against."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


# --- acquire admitted ---------------------------------------------------------------------


@pytest.mark.benchmark(group="acquire")
def test_floor_builtin_next(benchmark: Any) -> None:
    benchmark(itertools.count().__next__)


@pytest.mark.benchmark(group="acquire")
def test_ours_acquire(benchmark: Any) -> None:
    limiter = RateLimiter(10**9, 1.0, burst=HUGE)
    assert benchmark(limiter.acquire) is True


@pytest.mark.benchmark(group="acquire")
def test_ours_acquire_endpoint(benchmark: Any) -> None:
    limiter = RateLimiter(10**9, 1.0, burst=HUGE)
    limiter.add_endpoint("fetch_ticker", 10**9, 1.0, burst=HUGE)
    assert benchmark(limiter.acquire, "fetch_ticker") is True


@pytest.mark.benchmark(group="acquire")
def test_limits_fixed_window_hit(benchmark: Any) -> None:
    from limits import RateLimitItemPerSecond
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter

    limiter = FixedWindowRateLimiter(MemoryStorage())
    item = RateLimitItemPerSecond(HUGE)
    assert benchmark(limiter.hit, item, "key") is True


@pytest.mark.benchmark(group="acquire")
def test_token_bucket_consume(benchmark: Any) -> None:
    import token_bucket

    limiter = token_bucket.Limiter(HUGE, HUGE, token_bucket.MemoryStorage())
    assert benchmark(limiter.consume, b"key") is True


@pytest.mark.benchmark(group="acquire")
def test_pyrate_limiter_try_acquire(benchmark: Any) -> None:
    from pyrate_limiter import Duration, Limiter, Rate

    limiter = Limiter(Rate(HUGE, Duration.SECOND))
    try:
        assert benchmark(limiter.try_acquire, "key", 1, False) is True
    finally:
        limiter.dispose(limiter.buckets()[0])


# --- a guarded no-op call -------------------------------------------------------------------


@pytest.mark.benchmark(group="guarded-call")
def test_floor_python_decorator(benchmark: Any) -> None:
    benchmark(python_decorator(noop))


@pytest.mark.benchmark(group="guarded-call")
def test_ours_breaker_call(benchmark: Any) -> None:
    benchmark(CircuitBreaker(name="bench").call(noop))


@pytest.mark.benchmark(group="guarded-call")
def test_pybreaker_call(benchmark: Any) -> None:
    import pybreaker

    benchmark(pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)(noop))


@pytest.mark.benchmark(group="guarded-call")
def test_circuitbreaker_call(benchmark: Any) -> None:
    from circuitbreaker import CircuitBreaker as PeerBreaker

    benchmark(PeerBreaker(failure_threshold=5, recovery_timeout=60)(noop))


@pytest.mark.benchmark(group="guarded-call")
def test_ratelimit_decorator_call(benchmark: Any) -> None:
    from ratelimit import limits

    benchmark(limits(calls=HUGE, period=1)(noop))


# --- a call refused by an open circuit --------------------------------------------------------


def catching(call: Callable[[], Any], error: type[BaseException]) -> Callable[[], None]:
    def run() -> None:
        with contextlib.suppress(error):
            call()

    return run


@pytest.mark.benchmark(group="rejected")
def test_floor_raise_and_catch(benchmark: Any) -> None:
    benchmark(catching(raise_plain, PlainError))


@pytest.mark.benchmark(group="rejected")
def test_ours_open_circuit_rejects(benchmark: Any) -> None:
    breaker = CircuitBreaker(recovery_timeout=1e6, name="bench-open")
    breaker.open_for(1e6)
    benchmark(catching(breaker.call(noop), CircuitBreakerError))
    assert breaker.rejection_total > 0


@pytest.mark.benchmark(group="rejected")
def test_ours_allow_when_open(benchmark: Any) -> None:
    breaker = CircuitBreaker(recovery_timeout=1e6, name="bench-open-allow")
    breaker.open_for(1e6)
    assert benchmark(breaker.allow) is False


@pytest.mark.benchmark(group="rejected")
def test_pybreaker_open_rejects(benchmark: Any) -> None:
    import pybreaker

    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=1e6)
    breaker.open()
    benchmark(catching(breaker(noop), pybreaker.CircuitBreakerError))


@pytest.mark.benchmark(group="rejected")
def test_circuitbreaker_open_rejects(benchmark: Any) -> None:
    from circuitbreaker import CircuitBreaker as PeerBreaker
    from circuitbreaker import CircuitBreakerError as PeerError

    breaker = PeerBreaker(failure_threshold=1, recovery_timeout=10**6)
    guarded = breaker(raise_plain)
    with contextlib.suppress(PlainError):
        guarded()
    benchmark(catching(guarded, PeerError))


# --- allow() on a closed circuit --------------------------------------------------------------


@pytest.mark.benchmark(group="allow")
def test_ours_allow_when_closed(benchmark: Any) -> None:
    assert benchmark(CircuitBreaker(name="bench-allow").allow) is True
