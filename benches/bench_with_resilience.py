"""with_resilience beside a trivial decorator and the peers, one group per question.

Ours guards a no-op with the module's breaker and limiter and records the call's latency
and outcome (metrics on), as configured from a TOML file. Each benchmark calls the
decorated callable with no arguments, so the cost of the call itself is in every number
alike; the async group drives each coroutine to completion by hand (``send(None)``), so
that the event loop's own cost is not in the numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from peak_resilience import _instances
from peak_resilience.config import configure
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import fresh_resilience

HUGE = 10**9  # requests per second no benchmark run can exhaust: every call is admitted


@pytest.fixture(autouse=True)
def configured(tmp_path: Path) -> Iterator[None]:
    """A fresh registry on the real clock, with a budget that never runs out."""
    path = tmp_path / "config.toml"
    path.write_text(
        "[resilience.bench]\n"
        f"rate_limit_requests = {HUGE}\n"
        "rate_limit_window = 1\n"
        "metrics_enabled = true\n"
    )
    with fresh_resilience():
        configure(path, environ={})
        yield


def noop() -> None:
    return None


async def async_noop() -> None:
    return None


def python_decorator(func: Callable[..., Any]) -> Callable[..., Any]:
    """The trivial decorator the issue compares against."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def python_async_decorator(func: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """The trivial async wrapper the issue compares against."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await func(*args, **kwargs)

    return wrapper


def driven(async_func: Callable[[], Coroutine[Any, Any, Any]]) -> Callable[[], Any]:
    """Runs one call of ``async_func`` to completion without an event loop."""

    def run() -> Any:
        coroutine = async_func()
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("the benchmarked coroutine suspended")

    return run


# --- a guarded no-op, sync ----------------------------------------------------------------


@pytest.mark.benchmark(group="with-resilience")
def test_floor_python_decorator_with_resilience(benchmark: Any) -> None:
    benchmark(python_decorator(noop))


@pytest.mark.benchmark(group="with-resilience")
def test_ours_with_resilience(benchmark: Any) -> None:
    guarded = with_resilience("bench", "noop", use_rate_limiter=True, use_circuit_breaker=True)(
        noop
    )

    benchmark(guarded)

    stats = _instances.operation("bench.noop").snapshot()
    assert stats["successes"] > 0 and stats["buckets"][-1] == stats["successes"]


@pytest.mark.benchmark(group="with-resilience")
def test_pybreaker_on_limits_hit(benchmark: Any) -> None:
    import pybreaker
    from limits import RateLimitItemPerSecond
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter

    limiter = FixedWindowRateLimiter(MemoryStorage())
    item = RateLimitItemPerSecond(HUGE)

    def limited(*args: Any, **kwargs: Any) -> Any:
        if not limiter.hit(item, "bench"):
            raise RuntimeError("rate limited")
        return noop(*args, **kwargs)

    benchmark(pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)(limited))


# --- a guarded no-op, async ---------------------------------------------------------------


@pytest.mark.benchmark(group="with-resilience-async")
def test_floor_python_async_wrapper(benchmark: Any) -> None:
    benchmark(driven(python_async_decorator(async_noop)))


@pytest.mark.benchmark(group="with-resilience-async")
def test_ours_with_resilience_async(benchmark: Any) -> None:
    guarded = with_resilience("bench", "async_noop", use_rate_limiter=True)(async_noop)

    benchmark(driven(guarded))

    assert _instances.operation("bench.async_noop").snapshot()["successes"] > 0


# --- retry, bulkhead and timeout configured but not triggered (issue 16) -------------------


def policies() -> dict[str, Any]:
    """Retries for a class the call never raises, a cap it never reaches."""
    from peak_resilience.resilience import Retry

    return {"retry": Retry(3, on=ConnectionError), "max_concurrent": 1000}


@pytest.mark.benchmark(group="with-resilience-policies")
def test_ours_with_resilience_without_policies(benchmark: Any) -> None:
    benchmark(with_resilience("bench", "plain", use_rate_limiter=True)(noop))


@pytest.mark.benchmark(group="with-resilience-policies")
def test_ours_with_resilience_policies_not_triggered(benchmark: Any) -> None:
    guarded = with_resilience("bench", "policies", use_rate_limiter=True, **policies())(noop)

    benchmark(guarded)

    assert guarded.retry.retries == 0  # type: ignore[attr-defined]


#: Calls awaited per run of the event loop in the looped benchmarks.
BATCH = 100


def looped(async_func: Callable[[], Coroutine[Any, Any, Any]]) -> Callable[[], Any]:
    """Awaits ``BATCH`` calls of ``async_func`` in one task on a running loop (a timeout
    needs one), then lets the loop run once: per-call ratios, the loop's turn shared."""
    import asyncio

    loop = asyncio.new_event_loop()

    async def batch() -> None:
        for _ in range(BATCH):
            await async_func()

    def run() -> Any:
        return loop.run_until_complete(batch())

    return run


@pytest.mark.benchmark(group="with-resilience-policies-async")
def test_ours_async_without_policies_in_a_loop(benchmark: Any) -> None:
    benchmark(looped(with_resilience("bench", "async_plain", use_rate_limiter=True)(async_noop)))


@pytest.mark.benchmark(group="with-resilience-policies-async")
def test_ours_async_policies_not_triggered_in_a_loop(benchmark: Any) -> None:
    guarded = with_resilience(
        "bench", "async_policies", use_rate_limiter=True, timeout=60.0, **policies()
    )(async_noop)

    benchmark(looped(guarded))

    assert _instances.operation("bench.async_policies").snapshot()["failures"] == {}
