"""The with_resilience decorator: breaker, limiter, fallback and fail-safe, sync and async."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peak_resilience import _instances
from peak_resilience.config import ConfigError, configure
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.resilience import CircuitState
from peak_resilience.resilience_helpers import (
    create_module_circuit_breaker,
    create_module_rate_limiter,
    with_resilience,
)
from peak_resilience.testing import ManualClock

WriteConfig = Callable[..., Path]

LIVE = """
    [resilience.live]
    circuit_breaker_threshold = 2
    circuit_breaker_timeout = 120
    rate_limit_requests = 3
    rate_limit_window = 60
"""


class ExchangeDown(Exception):
    pass


def failing(*args: object, **kwargs: object) -> None:
    raise ExchangeDown("exchange unreachable")


def test_the_decorated_function_keeps_its_name_docstring_and_signature(fresh: ManualClock) -> None:
    def submit_order(symbol: str, quantity: float = 1.0) -> str:
        """Sends an order."""
        return f"{symbol} x{quantity}"

    guarded = with_resilience("live", "submit_order", use_rate_limiter=True)(submit_order)

    assert guarded.__name__ == "submit_order"
    assert guarded.__doc__ == "Sends an order."
    assert inspect.signature(guarded) == inspect.signature(submit_order)
    assert guarded("BTC/EUR", quantity=2) == "BTC/EUR x2"


def test_consecutive_failures_open_the_circuit_and_the_function_is_no_longer_run(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))
    calls: list[str] = []

    @with_resilience("live", "submit_order")
    def submit_order(symbol: str) -> None:
        calls.append(symbol)
        raise ExchangeDown(symbol)

    for _ in range(2):
        with pytest.raises(ExchangeDown):
            submit_order("BTC/EUR")
    with pytest.raises(CircuitBreakerError) as refused:
        submit_order("BTC/EUR")

    assert calls == ["BTC/EUR", "BTC/EUR"]
    assert refused.value.name == "live.submit_order"
    assert refused.value.retry_after == pytest.approx(120.0)
    assert "CircuitBreaker" in str(refused.value)


def test_the_circuit_lets_a_trial_through_after_the_modules_timeout(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))
    outcomes = iter([ExchangeDown("down"), ExchangeDown("down"), None])

    @with_resilience("live", "fetch_balance")
    def fetch_balance() -> str:
        error = next(outcomes)
        if error is not None:
            raise error
        return "1.5 BTC"

    for _ in range(2):
        with pytest.raises(ExchangeDown):
            fetch_balance()
    fresh.advance(119)
    with pytest.raises(CircuitBreakerError):
        fetch_balance()
    fresh.advance(1)

    assert fetch_balance() == "1.5 BTC"
    assert create_module_circuit_breaker("live", "fetch_balance").state is CircuitState.CLOSED


def test_a_rate_limit_rejection_carries_the_seconds_to_wait(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))
    quote = with_resilience("live", "quote", use_rate_limiter=True)(lambda: 42)

    assert [quote() for _ in range(3)] == [42, 42, 42]
    with pytest.raises(RateLimitExceeded) as refused:
        quote()

    assert refused.value.limiter == "live"
    assert refused.value.retry_after == pytest.approx(20.0)  # 3 per 60 s: one every 20 s


def test_max_wait_waits_for_a_token_instead_of_raising(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))
    quote = with_resilience("live", "quote", use_rate_limiter=True, max_wait=30)(lambda: 42)
    for _ in range(3):
        quote()
    before = fresh.now()

    assert quote() == 42
    assert fresh.now() - before == pytest.approx(20.0)


def test_max_wait_shorter_than_the_wait_still_raises(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))
    quote = with_resilience("live", "quote", use_rate_limiter=True, max_wait=5)(lambda: 42)
    for _ in range(3):
        quote()

    with pytest.raises(RateLimitExceeded):
        quote()


def test_all_operations_of_a_module_share_its_rate_budget(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))
    ticker = with_resilience("live", "ticker", use_rate_limiter=True)(lambda: "t")
    orders = with_resilience("live", "orders", use_rate_limiter=True)(lambda: "o")
    other = with_resilience("backtest", "orders", use_rate_limiter=True)(lambda: "b")

    assert [ticker(), orders(), ticker()] == ["t", "o", "t"]
    with pytest.raises(RateLimitExceeded):
        orders()
    assert other() == "b"  # another module has its own budget
    assert create_module_rate_limiter("live", "anything").get_stats()["allowed"] == 3


def test_a_fallback_value_replaces_a_refused_call(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))
    quote = with_resilience("live", "quote", use_rate_limiter=True, fallback=None)(lambda: 42)

    assert [quote() for _ in range(4)] == [42, 42, 42, None]


def test_a_callable_fallback_gets_the_calls_arguments(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))
    cached = {"BTC/EUR": 61_000.0}

    @with_resilience("live", "price", fallback=lambda symbol: cached[symbol])
    def price(symbol: str) -> float:
        raise ExchangeDown(symbol)

    for _ in range(2):
        with pytest.raises(ExchangeDown):  # a failure still raises: only refusals fall back
            price("BTC/EUR")

    assert price("BTC/EUR") == 61_000.0


def test_fallback_on_failure_also_replaces_a_failed_call(fresh: ManualClock) -> None:
    price = with_resilience("live", "price", fallback=0.0, fallback_on_failure=True)(failing)

    assert price() == 0.0


def test_fallback_on_failure_without_a_fallback_is_refused(fresh: ManualClock) -> None:
    with pytest.raises(ValueError, match="fallback_on_failure=True needs a fallback"):
        with_resilience("live", "price", fallback_on_failure=True)


def test_in_a_fail_safe_module_a_failed_call_returns_the_fallback(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience.risk]\nfail_safe_defaults = true\n"))

    @with_resilience("risk", "position_limit", fallback=0.0)
    def position_limit(symbol: str) -> float:
        raise ExchangeDown(symbol)

    assert position_limit("BTC/EUR") == 0.0
    stats = _instances.operation("risk.position_limit").snapshot()
    assert stats["failures"] == {"ExchangeDown": 1}  # still counted as a failure


def test_decorating_without_a_fallback_in_a_fail_safe_module_is_a_config_error(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    path = write_config("[resilience.risk]\nfail_safe_defaults = true\n")
    configure(path)

    with pytest.raises(ConfigError) as raised:

        @with_resilience("risk", "position_limit")
        def position_limit() -> float:
            return 1.0

    message = str(raised.value)
    assert message.startswith(f"{path} [resilience.risk] fail_safe_defaults: ")
    assert "position_limit needs a fallback" in message


def test_with_the_breaker_disabled_failures_never_open_the_circuit(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(
        write_config(
            "[resilience.live]\ncircuit_breaker_enabled = false\ncircuit_breaker_threshold = 1\n"
        )
    )
    calls: list[int] = []

    @with_resilience("live", "orders")
    def orders() -> None:
        calls.append(1)
        raise ExchangeDown()

    for _ in range(10):
        with pytest.raises(ExchangeDown):
            orders()

    assert len(calls) == 10
    breaker = create_module_circuit_breaker("live", "orders")
    assert breaker.state is CircuitState.DISABLED  # the gauge reads 4, not a closed lie
    assert breaker.failure_total == 10  # still counted


def test_with_rate_limiting_disabled_calls_beyond_the_budget_pass(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(
        write_config("[resilience.live]\nrate_limit_enabled = false\nrate_limit_requests = 1\n")
    )
    quote = with_resilience("live", "quote", use_rate_limiter=True)(lambda: 42)

    assert [quote() for _ in range(50)] == [42] * 50


def test_use_circuit_breaker_false_leaves_the_breaker_out(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience]\ncircuit_breaker_threshold = 1\n"))
    orders = with_resilience("live", "orders", use_circuit_breaker=False)(failing)

    for _ in range(20):
        with pytest.raises(ExchangeDown):
            orders()


def test_every_call_records_latency_successes_and_failures_by_type(fresh: ManualClock) -> None:
    outcomes = iter([None, ExchangeDown(), KeyError("x"), None, ExchangeDown()])

    @with_resilience("data", "fetch")
    def fetch() -> None:
        error = next(outcomes)
        fresh.advance(0.002)
        if error is not None:
            raise error

    for _ in range(5):
        with contextlib.suppress(ExchangeDown, KeyError):
            fetch()

    stats = _instances.operation("data.fetch").snapshot()
    assert stats["successes"] == 2
    assert stats["failures"] == {"ExchangeDown": 2, "KeyError": 1}
    assert stats["buckets"][-1] == 5  # +Inf: every call timed
    assert stats["sum"] == pytest.approx(0.010)


def test_with_metrics_disabled_nothing_is_recorded(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience.quiet]\nmetrics_enabled = false\n"))
    before = _instances.operation("quiet.op").snapshot()

    with_resilience("quiet", "op")(lambda: None)()

    assert _instances.operation("quiet.op").snapshot() == before


def test_methods_are_guarded_and_the_fallback_gets_self(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))

    class Fetcher:
        def __init__(self) -> None:
            self.cache = "cached"

        @with_resilience("live", "fetch", use_rate_limiter=True, fallback=lambda s: s.cache)
        def fetch(self) -> str:
            """Fetches."""
            return "fresh"

    fetcher = Fetcher()

    assert [fetcher.fetch() for _ in range(4)] == ["fresh", "fresh", "fresh", "cached"]
    assert Fetcher.fetch.__doc__ == "Fetches."


def test_async_functions_are_guarded_by_breaker_and_limiter(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))

    @with_resilience("live", "stream", use_rate_limiter=True)
    async def stream(fail: bool) -> str:
        """Streams."""
        await asyncio.sleep(0)
        if fail:
            raise ExchangeDown()
        return "tick"

    async def scenario() -> None:
        assert await stream(False) == "tick"
        for _ in range(2):
            with pytest.raises(ExchangeDown):
                await stream(True)
        with pytest.raises(CircuitBreakerError):
            await stream(False)

    asyncio.run(scenario())
    assert inspect.iscoroutinefunction(stream)
    assert stream.__doc__ == "Streams."


def test_async_rate_limit_waits_on_the_manual_clock_and_falls_back_when_refused(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(LIVE))

    @with_resilience("live", "ticker", use_rate_limiter=True, max_wait=20)
    async def ticker() -> str:
        return "tick"

    async def cached() -> str:
        return "cached"

    @with_resilience("live", "depth", use_rate_limiter=True, fallback=lambda: cached())
    async def depth() -> str:
        return "depth"

    async def scenario() -> list[str]:
        results = [await ticker() for _ in range(4)]  # the fourth waits 20 s
        results.append(await depth())  # the wait refilled one token, which ticker took
        return results

    before = fresh.now()
    assert asyncio.run(scenario()) == ["tick", "tick", "tick", "tick", "cached"]
    assert fresh.now() - before == pytest.approx(20.0)


def test_async_fail_safe_module_returns_the_fallback_on_failure(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience.risk]\nfail_safe_defaults = true\n"))

    @with_resilience("risk", "exposure", fallback=0.0)
    async def exposure() -> float:
        raise ExchangeDown()

    assert asyncio.run(exposure()) == 0.0


def test_a_module_or_operation_that_is_not_a_name_is_refused(fresh: ManualClock) -> None:
    with pytest.raises(ValueError, match="module must be a non-empty str"):
        with_resilience("", "op")
    with pytest.raises(ValueError, match="operation must be a non-empty str, got None"):
        with_resilience("live", None)  # type: ignore[call-overload]


def test_the_guard_reads_the_function_through_and_keeps_what_is_set_on_it(
    fresh: ManualClock,
) -> None:
    def submit_order(symbol: str, size: float) -> str:
        """Submits one order."""
        return symbol

    submit_order.route = "/orders"  # type: ignore[attr-defined]  # a framework's mark
    guarded: Any = with_resilience("trading", "submit")(submit_order)
    assert guarded.__wrapped__ is submit_order
    assert (guarded.__name__, guarded.__qualname__) == ("submit_order", submit_order.__qualname__)
    assert (guarded.__doc__, guarded.__module__) == ("Submits one order.", __name__)
    assert guarded.__annotations__ == submit_order.__annotations__
    assert guarded.route == "/orders"

    @functools.wraps(submit_order)
    def logged(*args: Any, **kwargs: Any) -> str:
        return submit_order(*args, **kwargs)

    rewrapped: Any = with_resilience("trading", "submit")(logged)
    assert rewrapped.__wrapped__ is logged  # each layer wraps the next
    assert inspect.signature(rewrapped) == inspect.signature(submit_order)
    guarded.__doc__ = "Renamed."
    guarded.__name__ = "submit"
    guarded.__module__ = "venue"
    assert (guarded.__doc__, guarded.__name__, guarded.__module__) == (
        "Renamed.",
        "submit",
        "venue",
    )
    assert (submit_order.__doc__, submit_order.__name__) == ("Submits one order.", "submit_order")
    with pytest.raises(AttributeError, match="'Guard' object has no attribute 'missing'"):
        guarded.missing  # noqa: B018
