"""Under threads: exact admission, no lost counter update (peers fail this)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.testing import ManualClock

THREADS = 8


@pytest.fixture(params=[None, 1e-6], ids=["default-switch", "switch-every-1us"])
def switch_interval(request: pytest.FixtureRequest) -> Iterator[None]:
    previous = sys.getswitchinterval()
    if request.param is not None:
        sys.setswitchinterval(request.param)
    yield
    sys.setswitchinterval(previous)


def hammer(work: Callable[[], None]) -> None:
    start = threading.Barrier(THREADS)

    def run() -> None:
        start.wait()
        work()

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)


def test_a_budget_of_k_admits_exactly_k_across_eight_threads(switch_interval: None) -> None:
    budget = 5_000
    limiter = RateLimiter(max_requests=budget, window_seconds=3600, clock=ManualClock())
    admitted = [0] * THREADS
    lock = threading.Lock()
    index = iter(range(THREADS))

    def work() -> None:
        with lock:
            me = next(index)
        admitted[me] = sum(limiter.acquire() for _ in range(2_000))

    hammer(work)
    assert sum(admitted) == budget
    stats = limiter.get_stats()
    assert stats["allowed"] == budget
    assert stats["total_requests"] == THREADS * 2_000


def test_breaker_counters_lose_no_update_across_eight_threads(switch_interval: None) -> None:
    breaker = CircuitBreaker(failure_threshold=16_777_215, clock=ManualClock())
    per_thread = 5_000

    @breaker.call
    def sometimes(i: int) -> None:
        if i % 2:
            raise ValueError(i)

    def work() -> None:
        for i in range(per_thread):
            with contextlib.suppress(ValueError):
                sometimes(i)

    hammer(work)
    assert breaker.success_total == THREADS * per_thread // 2
    assert breaker.failure_total == THREADS * per_thread // 2
    assert breaker.state is CircuitState.CLOSED


def test_an_open_breaker_lets_exactly_one_trial_through_under_contention(
    switch_interval: None,
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1, clock=clock)
    breaker.open_for(1)
    clock.advance(1)
    admitted = []

    def work() -> None:
        for _ in range(1_000):
            if breaker.allow():
                admitted.append(1)

    hammer(work)
    assert len(admitted) == 1
    assert breaker.rejection_total == THREADS * 1_000 - 1
