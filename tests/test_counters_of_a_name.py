"""Counters of a name never go down: several objects of one name are summed, and what a
dropped one counted stays counted for its name (Prometheus would read a drop as a reset
and count everything after it again)."""

from __future__ import annotations

import gc
import itertools

import pytest

from peak_resilience.metrics import metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitBreakerError
from peak_resilience.testing import ManualClock

_names = itertools.count()


def unique(stem: str) -> str:
    return f"{stem}-{next(_names)}-{id(_names)}"


def breaker_counts(name: str) -> tuple[int, int, int]:
    readings = metrics.read()
    opened = readings.state_changes.get((name, "closed", "open"), 0)
    return (
        readings.breaker_failures.get(name, 0),
        opened,
        readings.breaker_rejections.get(name, 0),
    )


def opened_and_refused(name: str, clock: ManualClock) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=1, name=name, clock=clock)
    breaker.record_failure()
    with pytest.raises(CircuitBreakerError):
        breaker.call(lambda: None)()
    return breaker


def test_dropping_one_of_two_breakers_of_a_name_keeps_the_totals(clock: ManualClock) -> None:
    name = unique("venue.fetch")
    first = opened_and_refused(name, clock)
    second = CircuitBreaker(name=name, clock=clock)
    before = breaker_counts(name)
    assert before == (1, 1, 1)

    del first
    gc.collect()

    assert breaker_counts(name) == before
    assert second.state.name == "CLOSED"


def test_a_breaker_re_created_under_a_dropped_ones_name_counts_on_from_its_totals(
    clock: ManualClock,
) -> None:
    name = unique("venue.orders")
    opened_and_refused(name, clock)  # dropped at once
    gc.collect()

    again = opened_and_refused(name, clock)

    assert breaker_counts(name) == (2, 2, 2)
    del again


def test_dropping_one_of_two_limiters_of_a_name_keeps_requests_and_rejections(
    clock: ManualClock,
) -> None:
    name = unique("venue")
    first = RateLimiter(1, 60, name=name, clock=clock)
    second = RateLimiter(10, 60, name=name, clock=clock)
    for _ in range(3):
        first.acquire()
    second.acquire()

    del first
    gc.collect()
    readings = metrics.read()

    assert readings.requests[(name, "default")] == 4
    assert readings.rejections[(name, "default")] == 2
    del second


def test_an_unnamed_breaker_leaves_nothing_behind_when_dropped(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    breaker.record_failure()
    name = breaker.name

    del breaker
    gc.collect()

    assert name not in metrics.read().breaker_failures
