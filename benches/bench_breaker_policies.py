"""What the issue-8 breaker policies cost when they are used, beside the plain guarded call.

Ratios (ours vs ours): a guarded call with a failure-rate window (count and time), with a
slow-call duration (the call is timed), with outcome rules (record/ignore exceptions and a
result predicate) and in METRICS_ONLY mode, each against `test_ours_breaker_call_plain`.
"""

from __future__ import annotations

from typing import Any

import pytest

from peak_resilience.resilience import CircuitBreaker


def noop() -> None:
    return None


@pytest.mark.benchmark(group="breaker-policies")
def test_ours_breaker_call_plain(benchmark: Any) -> None:
    benchmark(CircuitBreaker(name="bench-plain").call(noop))


@pytest.mark.benchmark(group="breaker-policies")
def test_ours_breaker_call_with_count_window(benchmark: Any) -> None:
    breaker = CircuitBreaker(name="bench-count", failure_rate_threshold=0.5, window_size=100)
    benchmark(breaker.call(noop))


@pytest.mark.benchmark(group="breaker-policies")
def test_ours_breaker_call_with_time_window(benchmark: Any) -> None:
    breaker = CircuitBreaker(
        name="bench-time", failure_rate_threshold=0.5, window_type="time", window_size=60
    )
    benchmark(breaker.call(noop))


@pytest.mark.benchmark(group="breaker-policies")
def test_ours_breaker_call_with_slow_call_duration(benchmark: Any) -> None:
    benchmark(CircuitBreaker(name="bench-slow", slow_call_duration=5.0).call(noop))


@pytest.mark.benchmark(group="breaker-policies")
def test_ours_breaker_call_with_result_predicate(benchmark: Any) -> None:
    breaker = CircuitBreaker(name="bench-result", failure_result=lambda value: value is False)
    benchmark(breaker.call(noop))


@pytest.mark.benchmark(group="breaker-policies")
def test_ours_breaker_call_metrics_only_while_open(benchmark: Any) -> None:
    breaker = CircuitBreaker(name="bench-shadow", metrics_only=True)
    breaker.open_for(1e6)
    benchmark(breaker.call(noop))
    assert breaker.would_reject_total > 0
