"""The timeout of an async call: cancelled, counted as a failure, raising TimeoutError;
refused for a sync function, which no timeout can cancel."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peak_resilience import _instances
from peak_resilience.resilience import Retry
from peak_resilience.resilience_helpers import get_all_circuit_breakers, with_resilience
from peak_resilience.testing import ManualClock


def test_an_async_call_past_its_timeout_is_cancelled_and_raises_timeout_error(
    fresh: ManualClock,
) -> None:
    cancelled = asyncio.Event()

    async def hanging() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    guarded = with_resilience("exchange", "fetch", timeout=0.01)(hanging)

    async def scenario() -> bool:
        with pytest.raises(TimeoutError, match=r"within its timeout of 0\.01s"):
            await guarded()
        return cancelled.is_set()

    assert asyncio.run(scenario())
    assert _instances.timeouts["exchange.fetch"] == 1


async def hanging() -> None:
    await asyncio.Event().wait()


def run_into_the_timeout(guarded: Any) -> None:
    """Runs one call of ``guarded`` on a loop of its own; it must raise TimeoutError."""

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await guarded()

    asyncio.run(scenario())


def test_a_timeout_counts_as_a_failure_of_the_breaker(fresh: ManualClock) -> None:
    run_into_the_timeout(with_resilience("exchange", "fetch", timeout=0.01)(hanging))
    breaker = get_all_circuit_breakers()["exchange.fetch"]
    assert breaker.failure_count == 1


def test_a_call_that_finishes_in_time_returns_its_value(fresh: ManualClock) -> None:
    async def quick() -> str:
        await asyncio.sleep(0)
        return "filled"

    guarded = with_resilience("exchange", "fetch", timeout=30.0)(quick)
    assert asyncio.run(guarded()) == "filled"
    assert "exchange.fetch" not in _instances.timeouts


def test_a_timeout_error_the_call_raises_itself_is_not_counted_as_a_timeout(
    fresh: ManualClock,
) -> None:
    async def own_timeout() -> None:
        raise TimeoutError("the exchange's own gateway timeout")

    guarded = with_resilience("exchange", "fetch", timeout=30.0)(own_timeout)
    with pytest.raises(TimeoutError, match="gateway timeout"):
        asyncio.run(guarded())
    assert "exchange.fetch" not in _instances.timeouts


def test_a_timed_out_attempt_is_retried_when_timeout_error_is_declared(
    fresh: ManualClock,
) -> None:
    attempts = 0

    async def slow_then_quick() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.Event().wait()
        return "filled"

    guarded = with_resilience(
        "exchange", "fetch", timeout=0.01, retry=Retry(2, on=TimeoutError, backoff=0.0)
    )(slow_then_quick)
    assert asyncio.run(guarded()) == "filled"
    assert attempts == 2


def test_a_timeout_on_a_sync_function_is_refused_pointing_to_slow_call_duration(
    fresh: ManualClock,
) -> None:
    def submit() -> None:
        return None

    with pytest.raises(ValueError, match="slow_call_duration"):
        with_resilience("exchange", "submit_order", timeout=1.0)(submit)


def test_a_timeout_that_is_not_a_positive_number_is_refused(fresh: ManualClock) -> None:
    async def fetch() -> None:
        return None

    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, got 0"):
        with_resilience("exchange", "fetch", timeout=0)(fetch)


def test_among_many_calls_only_the_one_past_its_deadline_is_cancelled(
    fresh: ManualClock,
) -> None:
    async def call(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    guarded = with_resilience("exchange", "fetch", timeout=0.05)(call)

    async def scenario() -> list[Any]:
        calls = [guarded(0.001 * (i % 5)) for i in range(50)] + [guarded(1.0)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, float) for o in outcomes[:50])
    assert isinstance(outcomes[50], TimeoutError)
    assert _instances.timeouts["exchange.fetch"] == 1


def test_a_cancellation_from_outside_is_not_a_timeout(fresh: ManualClock) -> None:
    guarded = with_resilience("exchange", "fetch", timeout=30.0)(hanging)

    async def scenario() -> None:
        task = asyncio.ensure_future(guarded())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert _instances.timeouts.get("exchange.fetch", 0) == 0


def test_one_function_times_out_on_two_event_loops_in_turn(fresh: ManualClock) -> None:
    guarded = with_resilience("exchange", "fetch", timeout=0.01)(hanging)
    run_into_the_timeout(guarded)
    run_into_the_timeout(guarded)
    assert _instances.timeouts["exchange.fetch"] == 2
