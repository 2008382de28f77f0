"""The breaker policies of issue 8 on backend="redis": shared by every host."""

from __future__ import annotations

from typing import Any

import pytest

from peak_resilience._guard import guard
from peak_resilience.errors import CircuitBreakerError
from peak_resilience.resilience import CircuitBreaker, CircuitState


class Timeout(Exception):
    pass


class InsufficientFunds(Exception):
    pass


@pytest.fixture
def on_redis(redis_url: str) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": redis_url}


def fail(breaker: CircuitBreaker) -> None:
    def dependency() -> None:
        raise Timeout()

    with pytest.raises((Timeout, CircuitBreakerError)):
        guard(dependency, breaker=breaker)()


def succeed(breaker: CircuitBreaker) -> str:
    try:
        return str(guard(lambda: "ok", breaker=breaker)())
    except CircuitBreakerError:
        return "refused"


def test_failures_on_two_hosts_fill_one_failure_rate_window(on_redis: dict[str, Any]) -> None:
    policy = {"failure_rate_threshold": 0.5, "minimum_calls": 4, "window_size": 10}
    first = CircuitBreaker(100, 60, "venue", **policy, **on_redis)
    second = CircuitBreaker(100, 60, "venue", **policy, **on_redis)
    fail(first)
    succeed(second)
    succeed(first)
    assert second.window_counts == (3, 1)
    fail(second)
    assert first.state is CircuitState.OPEN, "2 of 4 calls failed across the two hosts"


def test_a_slow_success_on_redis_counts_as_a_failure(on_redis: dict[str, Any]) -> None:
    # Every call lasts at least 0 s: with a tiny slow_call_duration, any success is slow.
    breaker = CircuitBreaker(2, 60, "venue", slow_call_duration=1e-9, **on_redis)
    assert succeed(breaker) == "ok"
    succeed(breaker)
    assert breaker.state is CircuitState.OPEN
    assert breaker.slow_call_total == 2


def test_an_ignored_exception_counts_neither_way_on_redis(on_redis: dict[str, Any]) -> None:
    breaker = CircuitBreaker(1, 60, "venue", ignore_exceptions=InsufficientFunds, **on_redis)

    def order() -> None:
        raise InsufficientFunds()

    with pytest.raises(InsufficientFunds):
        guard(order, breaker=breaker)()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_total == 0


def test_a_flagged_result_counts_as_a_failure_on_redis(on_redis: dict[str, Any]) -> None:
    breaker = CircuitBreaker(1, 60, "venue", failure_result=lambda r: r == "ok", **on_redis)
    assert succeed(breaker) == "ok"
    assert breaker.state is CircuitState.OPEN


def test_open_for_and_back_off_are_shared(on_redis: dict[str, Any]) -> None:
    first = CircuitBreaker(1, 60, "venue", backoff_multiplier=2, **on_redis)
    second = CircuitBreaker(1, 60, "venue", backoff_multiplier=2, **on_redis)
    first.open_for(0.000001)  # a trial is due at once
    assert second.state is CircuitState.HALF_OPEN
    fail(second)  # the trial fails: reopened for 60 * 2 s
    assert 119 < first.retry_after <= 120
    assert first.failed_trials == 1
    first.open_for(5)
    assert 4 < second.retry_after <= 5


def test_forced_open_disabled_and_metrics_only_are_seen_by_every_host(
    on_redis: dict[str, Any],
) -> None:
    first = CircuitBreaker(1, 60, "venue", **on_redis)
    second = CircuitBreaker(1, 60, "venue", **on_redis)
    first.force_open()
    assert second.state is CircuitState.FORCED_OPEN
    assert succeed(second) == "refused"
    first.disable()
    fail(second)
    assert succeed(second) == "ok"
    assert second.state is CircuitState.DISABLED
    first.reset()
    first.set_metrics_only(True)
    fail(second)
    assert second.state is CircuitState.METRICS_ONLY
    assert second.shadow_state is CircuitState.OPEN
    assert succeed(second) == "ok", "the shadow machine would refuse, but does not"
    assert first.would_reject_total == 1
    counts = first.transition_counts()
    assert counts[(CircuitState.CLOSED, CircuitState.FORCED_OPEN)] == 1
    assert counts[(CircuitState.CLOSED, CircuitState.METRICS_ONLY)] == 1
