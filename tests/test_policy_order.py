"""The guard's one order, outermost first: fallback, retry, breaker, limiter, bulkhead,
timeout, the call. Each test pins one boundary of it on the manual clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peak_resilience._guard import guard
from peak_resilience.config import configure
from peak_resilience.errors import BulkheadFull, CircuitBreakerError
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import Bulkhead, CircuitBreaker, Retry
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import ManualClock


def test_an_open_breaker_refuses_before_the_limiter_or_the_bulkhead_is_asked(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(1, 60.0, clock=clock)
    breaker.force_open()
    limiter = RateLimiter(1, 3600.0, clock=clock)
    bulkhead = Bulkhead(1)
    guarded = guard(lambda: "ran", breaker=breaker, limiter=limiter, bulkhead=bulkhead)
    with pytest.raises(CircuitBreakerError):
        guarded()
    assert limiter.acquire()
    assert bulkhead.rejections == 0


def test_a_full_bulkhead_refuses_after_the_tokens_are_taken(clock: ManualClock) -> None:
    limiter = RateLimiter(2, 3600.0, clock=clock)
    bulkhead = Bulkhead(1)
    guarded = guard(lambda: "ran", limiter=limiter, bulkhead=bulkhead)
    with bulkhead, pytest.raises(BulkheadFull):
        guarded()
    assert limiter.acquire()
    assert not limiter.acquire()


def test_a_bulkhead_refusal_gives_a_half_open_trial_back(clock: ManualClock) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.open_for(10.0)
    clock.advance(10.0)
    bulkhead = Bulkhead(1)
    guarded = guard(lambda: "ran", breaker=breaker, bulkhead=bulkhead)
    with bulkhead, pytest.raises(BulkheadFull):
        guarded()
    assert guarded() == "ran"


def test_the_timeout_is_inside_the_bulkhead_so_a_timed_out_call_frees_its_slot(
    clock: ManualClock,
) -> None:
    bulkhead = Bulkhead(1)

    async def hanging() -> None:
        await asyncio.Event().wait()

    guarded = guard(hanging, bulkhead=bulkhead, timeout=0.01)
    with pytest.raises(TimeoutError):
        asyncio.run(guarded())
    assert bulkhead.in_flight == 0


def test_the_fallback_is_outside_the_retries_of_a_refusal(fresh: ManualClock) -> None:
    # The hook asks for no wait: otherwise the retry would wait the breaker's retry_after
    # out and its trial call would run.
    breaker_refusals = Retry(3, on=CircuitBreakerError, backoff=0.0, retry_after=lambda _: 0.0)
    calls = 0

    def always_failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    fetch = with_resilience("exchange", "fetch", retry=breaker_refusals, fallback="cached")(
        always_failing
    )
    for _ in range(5):
        with pytest.raises(ConnectionError):
            fetch()
    # The breaker (threshold 5) is open now: its refusals are retried, then the fallback.
    assert fetch() == "cached"
    assert calls == 5


def test_an_async_call_waits_for_a_bulkhead_slot_on_the_manual_clock(
    fresh: ManualClock, write_config: Any
) -> None:
    configure(write_config("[resilience.exchange]\nbulkhead_max_wait = 5.0\n"))
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "done"

    guarded = with_resilience("exchange", "fetch", max_concurrent=1)(held)
    start = fresh.now()

    async def scenario() -> str:
        first = asyncio.ensure_future(guarded())
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        loop.call_soon(release.set)
        second = await guarded()
        return f"{await first} {second}"

    assert asyncio.run(scenario()) == "done done"
    assert 0 < fresh.now() - start <= 5.0


def test_functions_decorated_as_one_operation_share_its_retry_budget(
    fresh: ManualClock,
) -> None:
    retry = Retry(2, on=ConnectionError, backoff=0.0, min_retries_per_second=0, budget=0.5)

    def failing() -> None:
        raise ConnectionError("down")

    first = with_resilience("exchange", "fetch", retry=retry, use_circuit_breaker=False)(failing)
    second = with_resilience("exchange", "fetch", retry=retry, use_circuit_breaker=False)(failing)
    for guarded in (first, second):
        with pytest.raises(ConnectionError):
            guarded()
    # Two calls earned one retry between them (half a retry each): only one was made.
    assert first.retry.retries == 1  # type: ignore[attr-defined]
